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

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::lines::{Frame, Lines, Long};
use crate::types::wire::{Reply, ReplyTx, Request};
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
}

impl Server {
    /// Binds `path` (mode 0600), refusing when another primary answers there.
    pub fn bind(path: &Path, events: mpsc::Sender<Event>) -> Result<Server> {
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
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
        tokio::spawn(accept_loop(listener, events));
        Ok(Server { path: path.to_path_buf(), fd })
    }

    /// Takes over a control socket handed over by the previous image.
    pub fn adopt(fd: std::os::fd::OwnedFd, path: &Path, events: mpsc::Sender<Event>) -> Result<Server> {
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        std_listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std_listener).context("adopting the control socket")?;
        let fd = dup_cloexec(&listener)?;
        tokio::spawn(accept_loop(listener, events));
        Ok(Server { path: path.to_path_buf(), fd })
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
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, events: mpsc::Sender<Event>) {
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
        tokio::spawn(async move {
            if let Err(e) = serve(stream, me, events).await {
                tracing::debug!("control connection: {e:#}");
            }
        });
    }
}

async fn serve(mut stream: UnixStream, me: u32, events: mpsc::Sender<Event>) -> Result<()> {
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
        Err(error) => {
            tracing::warn!("control socket: bad request: {error}");
            return refuse(stream, error).await;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    // These connections outlive a self-upgrade: the next image answers on
    // them, so the supervisor keeps a copy of the socket.
    let conn = match request {
        Request::Upgrade | Request::Events => Some(dup_cloexec(&stream)?),
        _ => None,
    };
    let event = Event::Control { request, reply: tx, conn };
    if events.send(event).await.is_err() {
        return Ok(());
    }
    while let Some(reply) = rx.recv().await {
        send(&mut stream, &reply).await?;
    }
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

async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut lines = Lines::new(MAX_REQUEST as usize, Long::Refuse);
    loop {
        let n = stream.read_buf(lines.buffer()).await.map_err(|e| format!("unreadable request: {e}"))?;
        match lines.next_frame(false) {
            Some(Frame::Line(line)) => {
                return parse_request(std::str::from_utf8(&line).map_err(|_| "request is not UTF-8".to_string())?)
            }
            Some(Frame::TooLong) => return Err(format!("request too long (limit {MAX_REQUEST} bytes)")),
            None if n == 0 && lines.buffered() == 0 => return Err("empty request".into()),
            None if n == 0 => return Err("request unterminated (it must end with a newline)".into()),
            None => {}
        }
    }
}

/// Parses a request line, naming what is wrong with a bad one.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
    match value.get("command").and_then(|c| c.as_str()) {
        Some("status" | "reload" | "stop" | "events" | "upgrade") => {
            serde_json::from_value(value).map_err(|e| format!("malformed request: {e}"))
        }
        Some(other) => Err(format!("unknown command {other:?} (expected status, reload, stop, events or upgrade)")),
        None => Err("malformed request: no \"command\" field".into()),
    }
}

/// Takes over a `hotswap events` client of the previous image: replies sent
/// on the returned channel go to it.
pub fn adopt_subscriber(fd: std::os::fd::OwnedFd) -> Result<ReplyTx> {
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true)?;
    let mut stream = UnixStream::from_std(std_stream).context("adopting an events client")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            if send(&mut stream, &reply).await.is_err() {
                break;
            }
        }
    });
    Ok(tx)
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

    #[test]
    fn requests() {
        assert_eq!(parse_request(r#"{"command":"reload"}"#).unwrap(), Request::Reload { no_build: false, surge: None });
        assert_eq!(
            parse_request(r#"{"command":"reload","no_build":true}"#).unwrap(),
            Request::Reload { no_build: true, surge: None }
        );
        assert_eq!(
            parse_request(r#"{"command":"reload","surge":"50%"}"#).unwrap(),
            Request::Reload { no_build: false, surge: Some(crate::types::surge::Surge::Percent(50)) }
        );
        let zero = parse_request(r#"{"command":"reload","surge":0}"#).unwrap_err();
        assert!(zero.contains("at least 1"), "{zero}");
        assert_eq!(parse_request("{\"command\":\"status\"}\n").unwrap(), Request::Status);
        assert!(parse_request(r#"{"command":"explode"}"#).unwrap_err().contains("unknown command"));
        assert!(parse_request("garbage").unwrap_err().contains("malformed"));
        assert!(parse_request("{}").unwrap_err().contains("no \"command\""));
    }
}
