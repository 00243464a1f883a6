//! The control socket: how `hotswap reload`, `status` and `stop` talk to a
//! running primary.
//!
//! Protocol: the client sends one JSON request line (`{"command":"reload"}`);
//! the primary answers with JSON lines (`progress` while it works, then
//! `done` or `error`). `stop` ends with the connection closing when the
//! primary exits. The socket is mode 0600 and a peer of another user (root
//! excepted) is refused by its credentials.
//!
//! Each connection is its own task: a client that connects and says nothing
//! blocks neither other clients nor the supervisor, and times out.
//!
//! A request's replies are written by its connection's task, in the order
//! the supervisor sends them. When the primary exits, every such task
//! writes what is queued and ends, and the exit waits for them, at most a
//! bound ([`Server::replies_written`]): `hotswap stop` hears how the stop
//! went, not a closed connection.
//!
//! An `events` client gets a bounded queue ([`SUBSCRIBER_QUEUE`] events); its
//! task watches the connection for end of file, so a client that leaves is
//! forgotten at once (its two fds closed), not at the next event. A client
//! that falls further behind is dropped by the supervisor; the task then
//! finishes the line it was writing and adds a last `error` line saying
//! why, if the client takes it within a second.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Notify};

use super::lines::{Frame, Lines, Long};
use crate::types::wire::{Reply, Request, Subscription, SUBSCRIBER_QUEUE};
use crate::types::Event;

/// Largest request accepted, in bytes.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The primary's side: the bound socket and the task that accepts on it.
pub struct Server {
    path: PathBuf,
    /// A copy of the listening socket, handed over on self-upgrade.
    fd: std::os::fd::OwnedFd,
    /// Whether the socket file is removed with the server: not for one
    /// adopted in a self-upgrade until the new image serves (see
    /// [`Server::own_path`]), so a rollback finds the file.
    owns_path: bool,
    writers: Arc<Writers>,
}

/// The connection tasks writing a request's replies, counted, and told
/// when the primary exits.
#[derive(Default)]
struct Writers {
    /// Set at exit: write what is queued, then end.
    closing: watch::Sender<bool>,
    live: AtomicUsize,
    /// A writer ended.
    ended: Notify,
}

/// One live writer, counted until it is dropped.
struct Writing(Arc<Writers>);

impl Writers {
    fn enter(self: &Arc<Self>) -> Writing {
        self.live.fetch_add(1, Ordering::SeqCst);
        Writing(self.clone())
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_waiters();
    }
}

impl Server {
    /// Binds `path` (mode 0600), refusing when another primary answers there
    /// or when the directory is not private (see [`crate::sys::private_dir`]).
    pub fn bind(path: &Path, events: mpsc::Sender<Event>) -> Result<Server> {
        // Whoever can write the directory can replace the socket.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        use crate::sys::private_dir;
        private_dir::ensure(dir, "control socket directory", private_dir::CONTROL_REMEDY)?;
        crate::sys::listeners::remove_stale_unix_socket(path).map_err(|e| {
            if format!("{e}").contains("in use") {
                anyhow::anyhow!(
                    "another hotswap primary answers on control socket {} (give this one --control PATH)",
                    path.display()
                )
            } else {
                e
            }
        })?;
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
        let fd = dup_cloexec(&listener)?;
        let writers = Arc::new(Writers::default());
        tokio::spawn(accept_loop(listener, events, writers.clone()));
        Ok(Server { path: path.to_path_buf(), fd, owns_path: true, writers })
    }

    /// Takes over a control socket handed over by the previous image.
    pub fn adopt(fd: std::os::fd::OwnedFd, path: &Path, events: mpsc::Sender<Event>) -> Result<Server> {
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        std_listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std_listener).context("adopting the control socket")?;
        let fd = dup_cloexec(&listener)?;
        let writers = Arc::new(Writers::default());
        tokio::spawn(accept_loop(listener, events, writers.clone()));
        Ok(Server { path: path.to_path_buf(), fd, owns_path: false, writers })
    }

    /// The adopted socket's file is this image's to remove at exit.
    pub fn own_path(&mut self) {
        self.owns_path = true;
    }

    /// At exit: every connection writes the replies queued for it and
    /// closes (a reply the supervisor has sent is queued already); waits at
    /// most `bound` for them. False if some were still writing then (a
    /// client that does not read).
    pub async fn replies_written(&self, bound: Duration) -> bool {
        self.writers.closing.send_replace(true);
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let ended = self.writers.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.writers.live.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return false;
            }
        }
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }
}

fn dup_cloexec(fd: &impl std::os::fd::AsFd) -> Result<std::os::fd::OwnedFd> {
    fd.as_fd().try_clone_to_owned().context("duplicating a socket")
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.owns_path {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn accept_loop(listener: UnixListener, events: mpsc::Sender<Event>, writers: Arc<Writers>) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let events = events.clone();
        let writers = writers.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, me, events, writers).await {
                tracing::debug!("control connection: {e:#}");
            }
        });
    }
}

async fn serve(mut stream: UnixStream, me: u32, events: mpsc::Sender<Event>, writers: Arc<Writers>) -> Result<()> {
    let peer = stream.peer_cred().context("reading peer credentials")?;
    if peer.uid() != me && peer.uid() != 0 {
        tracing::warn!("control socket: refused a client of uid {} (pid {:?})", peer.uid(), peer.pid());
        let error = format!("permission denied: uid {} is not the primary's", peer.uid());
        return refuse(stream, error).await;
    }
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Err("no request within 10s".to_string()),
        Ok(r) => r,
    };
    let request = match request {
        Ok(r) => r,
        // A connection closed without a byte: a liveness check (`hotswap
        // stop` waits so for the primary to exit; `start` and `run` check a
        // name so), not a bad request.
        Err(error) if error == EMPTY_REQUEST => {
            tracing::debug!("control socket: a client connected and closed without a request");
            return Ok(());
        }
        Err(error) => {
            tracing::warn!("control socket: bad request: {error}");
            return refuse(stream, error).await;
        }
    };
    if request == Request::Events {
        // It outlives a self-upgrade: the supervisor keeps a copy to hand over.
        let conn = dup_cloexec(&stream)?;
        let (sub, task) = subscription();
        if events.send(Event::Subscribe { sub, conn }).await.is_ok() {
            task.run(stream, events).await;
        }
        return Ok(());
    }
    if let Request::Logs { lines, follow } = request {
        return serve_logs(stream, lines, follow).await;
    }
    if request == Request::Reopen {
        // The output writer's business, as SIGUSR1 is: the event loop never
        // hears of it.
        let (ok, said) = super::output::Output::global().reopen_told("hotswap logs --reopen").await;
        let message = said.join("; ");
        let reply = if ok { Reply::Done { message } } else { Reply::Error { error: message } };
        return send(&mut stream, &reply).await;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    // An upgrade's answer comes from the next image: the supervisor keeps a
    // copy of the socket to hand over.
    let conn = match request {
        Request::Upgrade => Some(dup_cloexec(&stream)?),
        _ => None,
    };
    // Counted before the supervisor hears of it: its replies are waited for.
    let _writing = writers.enter();
    let mut closing = writers.closing.subscribe();
    let event = Event::Control { request, reply: tx, conn };
    if events.send(event).await.is_err() {
        return Ok(());
    }
    write_replies(&mut stream, &mut rx, &mut closing).await
}

/// Once the primary exits ([`Server::replies_written`]).
async fn exit_begun(closing: &mut watch::Receiver<bool>) {
    loop {
        if *closing.borrow_and_update() {
            return;
        }
        if closing.changed().await.is_err() {
            return;
        }
    }
}

/// Writes a request's replies as they come, until the supervisor is done
/// with it or, at exit, what is queued then.
async fn write_replies(
    stream: &mut UnixStream,
    rx: &mut mpsc::UnboundedReceiver<Reply>,
    closing: &mut watch::Receiver<bool>,
) -> Result<()> {
    loop {
        tokio::select! {
            reply = rx.recv() => match reply {
                Some(reply) => send(stream, &reply).await?,
                None => return Ok(()),
            },
            () = exit_begun(closing) => {
                while let Ok(reply) = rx.try_recv() {
                    send(stream, &reply).await?;
                }
                return Ok(());
            }
        }
    }
}

/// `hotswap logs`: the last `lines` lines, then (`follow`) each new one
/// until the client leaves or the primary exits. Served here, off the
/// event loop: the supervisor never hears of it.
async fn serve_logs(stream: UnixStream, lines: usize, follow: bool) -> Result<()> {
    use tokio::sync::broadcast::error::RecvError;
    let (past, mut feed) = super::output::History::global().follow(lines);
    let (mut read_half, mut write_half) = stream.into_split();
    let line = |bytes: &[u8]| Reply::Log { line: String::from_utf8_lossy(bytes).trim_end_matches('\n').to_string() };
    for l in &past {
        send_half(&mut write_half, &line(l)).await?;
    }
    if !follow {
        return send_half(&mut write_half, &Reply::Done { message: String::new() }).await;
    }
    let mut scratch = [0u8; 512];
    loop {
        tokio::select! {
            r = read_half.read(&mut scratch) => if matches!(r, Ok(0) | Err(_)) { return Ok(()) },
            got = feed.recv() => match got {
                Ok(l) => send_half(&mut write_half, &line(&l)).await?,
                Err(RecvError::Lagged(n)) => {
                    let note = format!("hotswap logs: {n} lines skipped (this client did not keep up)");
                    send_half(&mut write_half, &Reply::Log { line: note }).await?
                }
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}

async fn send_half(w: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> Result<()> {
    let mut line = serde_json::to_string(reply)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    Ok(())
}

/// Answers with an error, then reads and drops what the client still sends
/// (for a moment), so that it sees the answer rather than a reset.
async fn refuse(mut stream: UnixStream, error: String) -> Result<()> {
    send(&mut stream, &Reply::Error { error }).await?;
    stream.shutdown().await?;
    let mut sink = tokio::io::sink();
    let mut rest = (&mut stream).take(4 * MAX_REQUEST);
    let _ = tokio::time::timeout(Duration::from_secs(1), tokio::io::copy(&mut rest, &mut sink)).await;
    Ok(())
}

/// What [`read_request`] says of a connection closed before its first byte.
const EMPTY_REQUEST: &str = "empty request";

async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut lines = Lines::new(MAX_REQUEST as usize, Long::Refuse);
    loop {
        let n = stream.read_buf(lines.buffer()).await.map_err(|e| format!("unreadable request: {e}"))?;
        match lines.next_frame(false) {
            Some(Frame::Line(line)) => {
                return parse_request(std::str::from_utf8(&line).map_err(|_| "request is not UTF-8".to_string())?)
            }
            Some(Frame::TooLong) => return Err(format!("request too long (limit {MAX_REQUEST} bytes)")),
            None if n == 0 && lines.buffered() == 0 => return Err(EMPTY_REQUEST.into()),
            None if n == 0 => return Err("request unterminated (it must end with a newline)".into()),
            None => {}
        }
    }
}

/// Parses a request line, naming what is wrong with a bad one.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
    match value.get("command").and_then(|c| c.as_str()) {
        Some("status" | "reload" | "stop" | "events" | "upgrade" | "logs" | "scale" | "reopen") => {
            serde_json::from_value(value).map_err(|e| format!("malformed request: {e}"))
        }
        Some(other) => Err(format!(
            "unknown command {other:?} (expected status, reload, stop, events, upgrade, logs, scale or reopen)"
        )),
        None => Err("malformed request: no \"command\" field".into()),
    }
}

/// Takes over a `hotswap events` client of the previous image: events sent
/// on the returned subscription go to it.
pub fn adopt_subscriber(fd: std::os::fd::OwnedFd, events: mpsc::Sender<Event>) -> Result<Subscription> {
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true)?;
    let stream = UnixStream::from_std(std_stream).context("adopting an events client")?;
    let (sub, task) = subscription();
    tokio::spawn(task.run(stream, events));
    Ok(sub)
}

/// How long a dropped events client has to take its last line.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// The task's side of a [`Subscription`].
struct SubscriberTask {
    rx: mpsc::Receiver<Reply>,
    kill: std::sync::Arc<tokio::sync::Notify>,
    done: tokio::sync::oneshot::Sender<()>,
}

fn subscription() -> (Subscription, SubscriberTask) {
    let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
    let kill = std::sync::Arc::new(tokio::sync::Notify::new());
    let (done_tx, done) = tokio::sync::oneshot::channel();
    (Subscription { tx, kill: kill.clone(), done }, SubscriberTask { rx, kill, done: done_tx })
}

impl SubscriberTask {
    /// Writes each queued reply to the client until the supervisor lets go
    /// (everything queued is written first), the client leaves (end of file
    /// on its side), or the supervisor drops it.
    async fn run(mut self, stream: UnixStream, events: mpsc::Sender<Event>) {
        let (mut read_half, mut write_half) = stream.into_split();
        let mut line: Vec<u8> = Vec::new();
        let mut written = 0;
        let mut scratch = [0u8; 512];
        let mut killed = false;
        loop {
            if written < line.len() {
                tokio::select! {
                    biased;
                    _ = self.kill.notified() => { killed = true; break }
                    r = read_half.read(&mut scratch) => if matches!(r, Ok(0) | Err(_)) { break },
                    w = write_half.write(&line[written..]) => match w {
                        Ok(n) if n > 0 => written += n,
                        _ => break,
                    },
                }
            } else {
                tokio::select! {
                    biased;
                    _ = self.kill.notified() => { killed = true; break }
                    r = read_half.read(&mut scratch) => if matches!(r, Ok(0) | Err(_)) { break },
                    reply = self.rx.recv() => match reply {
                        Some(reply) => {
                            line = serde_json::to_vec(&reply).unwrap_or_default();
                            line.push(b'\n');
                            written = 0;
                        }
                        None => break,
                    },
                }
            }
        }
        if killed {
            let error = format!(
                "dropped: this client fell more than {SUBSCRIBER_QUEUE} events behind (it does not read fast enough)"
            );
            let mut last = serde_json::to_vec(&Reply::Error { error }).unwrap_or_default();
            last.push(b'\n');
            let _ = tokio::time::timeout(LAST_WORDS, async {
                write_half.write_all(&line[written..]).await?;
                write_half.write_all(&last).await
            })
            .await;
        }
        // Closed before the supervisor hears of it: it forgets closed ones.
        drop(self.rx);
        drop((read_half, write_half));
        let _ = self.done.send(());
        let _ = events.send(Event::SubscriberLeft).await;
    }
}

async fn send(stream: &mut UnixStream, reply: &Reply) -> Result<()> {
    let mut line = serde_json::to_string(reply)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever a client sends, the parser answers; it never panics.
        #[test]
        fn parse_request_is_total(s in "\\PC{0,300}") {
            let _ = parse_request(&s);
        }

        #[test]
        fn parse_request_is_total_on_json_shapes(cmd in "[a-z]{0,8}", extra in "[a-z_]{0,8}", v in proptest::num::i64::ANY) {
            let line = format!("{{\"command\":\"{cmd}\",\"{extra}\":{v}}}");
            let _ = parse_request(&line);
        }
    }

    /// At exit, a connection writes every reply queued for it and closes,
    /// even while the supervisor still holds its reply channel (as it holds
    /// a running upgrade's), and the exit hears that it did.
    #[tokio::test]
    async fn at_exit_the_queued_replies_are_written_and_the_connection_closes() {
        let dir = std::env::temp_dir().join(format!("hotswap-control-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.join("control.sock");
        let (tx, mut events) = mpsc::channel(8);
        let server = Server::bind(&path, tx).unwrap();
        let mut client = UnixStream::connect(&path).await.unwrap();
        client.write_all(b"{\"command\":\"status\"}\n").await.unwrap();
        let Some(Event::Control { reply, .. }) = events.recv().await else { panic!("no control event") };
        reply.send(Reply::Progress { message: "first".into() }).unwrap();
        reply.send(Reply::Done { message: "last".into() }).unwrap();
        assert!(server.replies_written(Duration::from_secs(30)).await, "the writer did not end");
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        assert!(text.contains("first") && text.contains("last"), "{text}");
        drop((reply, server));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn requests() {
        assert_eq!(
            parse_request(r#"{"command":"reload"}"#).unwrap(),
            Request::Reload { no_build: false, surge: None, canary_ms: None }
        );
        assert_eq!(
            parse_request(r#"{"command":"reload","no_build":true}"#).unwrap(),
            Request::Reload { no_build: true, surge: None, canary_ms: None }
        );
        assert_eq!(
            parse_request(r#"{"command":"reload","surge":"50%"}"#).unwrap(),
            Request::Reload { no_build: false, surge: Some(crate::types::surge::Surge::Percent(50)), canary_ms: None }
        );
        let zero = parse_request(r#"{"command":"reload","surge":0}"#).unwrap_err();
        assert!(zero.contains("at least 1"), "{zero}");
        assert_eq!(parse_request("{\"command\":\"status\"}\n").unwrap(), Request::Status);
        use crate::types::wire::ScaleTo;
        assert_eq!(
            parse_request(r#"{"command":"scale","to":{"add":2}}"#).unwrap(),
            Request::Scale { to: ScaleTo::Add(2) }
        );
        assert_eq!(parse_request(r#"{"command":"logs"}"#).unwrap(), Request::Logs { lines: 50, follow: false });
        assert_eq!("+2".parse::<ScaleTo>().unwrap().apply(3), Ok(5));
        assert_eq!("-2".parse::<ScaleTo>().unwrap().apply(3), Ok(1));
        assert!("-3".parse::<ScaleTo>().unwrap().apply(3).is_err());
        assert_eq!("7".parse::<ScaleTo>().unwrap().apply(3), Ok(7));
        assert!("+x".parse::<ScaleTo>().is_err() && "0".parse::<ScaleTo>().unwrap().apply(3).is_err());
        assert!(parse_request(r#"{"command":"explode"}"#).unwrap_err().contains("unknown command"));
        assert!(parse_request("garbage").unwrap_err().contains("malformed"));
        assert!(parse_request("{}").unwrap_err().contains("no \"command\""));
    }
}
