//! Example hotswap worker in Rust: `cargo build --example http-worker`, then
//! `hotswap --listen 127.0.0.1:8080 -- target/debug/examples/http-worker`.
//!
//! It shows everything a worker needs (see docs/protocol.md), with tokio and a
//! hand-written minimal HTTP/1.1 server:
//!
//! * the listening socket comes from `sd_notify::listen_fds()` (fd 3, checked
//!   against `LISTEN_PID`), exactly as under systemd socket activation; it is a
//!   TCP (`--listen 127.0.0.1:8080`) or a Unix stream (`--listen unix:/path`)
//!   socket, told apart with getsockname(), and both are served by the same
//!   connection code;
//! * the IPC channel is the Unix socket in `HOTSWAP_IPC_FD`, one JSON value per
//!   line: it sends `{"type":"listening"}` once ready and drains on
//!   `{"type":"shutdown"}` or when the primary closes the channel;
//! * draining: drop (close) our copy of the listener, never `shutdown()` it (the
//!   socket is shared with the other workers); each open connection answers one
//!   more request with `Connection: close` and is closed; a connection idle for
//!   1 s after the drain began is closed; exit 0 once no connection is left.
//!
//! Env: `HOTSWAP_GENERATION`, `HOTSWAP_WORKER_ID`, `HOTSWAP_WORKER_SLOT`, `EXAMPLE_STARTUP_MS` (delay
//! before listening and reporting ready), `EXAMPLE_HANG_AFTER_DRAIN` (never
//! exit after draining: for testing the shutdown timeout),
//! `EXAMPLE_RESPONSE_DELAY_MS` (delay per
//! response). Endpoints: any request answers `generation=G worker=ID pid=PID slot=S`;
//! `/broadcast?data=X` and `/send?to=ID&data=X` send IPC messages, `/inbox`
//! lists the IPC messages received so far.

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, Instant};

const DRAIN_IDLE: Duration = Duration::from_secs(1);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 64 * 1024;
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

struct App {
    generation: String,
    worker_id: String,
    /// `HOTSWAP_WORKER_SLOT`: which of the N places it fills.
    slot: String,
    response_delay: Duration,
    /// Messages to the primary, written by one task.
    ipc_tx: mpsc::UnboundedSender<Value>,
    /// IPC messages received (except shutdown), for `/inbox`.
    inbox: Mutex<Vec<Value>>,
    /// `Some(when)` once the drain has begun.
    drain: watch::Sender<Option<Instant>>,
}

impl App {
    fn log(&self, msg: &str) {
        let (g, w) = (&self.generation, &self.worker_id);
        println!("[rust worker {w} gen {g} pid {}] {msg}", std::process::id());
    }

    fn send(&self, msg: Value) {
        let _ = self.ipc_tx.send(msg); // fails only once the writer task is gone
    }

    fn start_drain(&self, reason: &str) {
        // Only the first call starts the drain. Log before publishing it: once
        // it is published, the main task may exit before this thread prints.
        self.drain.send_if_modified(|d| {
            if d.is_some() {
                return false;
            }
            self.log(&format!("draining ({reason})"));
            *d = Some(Instant::now());
            true
        });
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("http-worker: {msg}; run me under hotswap");
    std::process::exit(1)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_ms(name: &str) -> Duration {
    Duration::from_millis(env_or(name, "0").parse().unwrap_or_else(|_| fail(&format!("bad {name}"))))
}

fn main() {
    // Before any other thread exists: listen_fds() unsets LISTEN_PID/LISTEN_FDS.
    let what = format!(
        "LISTEN_PID={:?} (own pid {}), LISTEN_FDS={:?}",
        std::env::var("LISTEN_PID").ok(),
        std::process::id(),
        std::env::var("LISTEN_FDS").ok()
    );
    let fds: Vec<RawFd> = match sd_notify::listen_fds() {
        Ok(fds) => fds.collect(),
        Err(e) => fail(&format!("cannot use the passed sockets ({e}): {what}")),
    };
    if fds.is_empty() {
        fail(&format!("no listening socket passed: {what}"))
    }
    let ipc_fd: RawFd = std::env::var("HOTSWAP_IPC_FD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fail("HOTSWAP_IPC_FD is not set"));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run(fds, ipc_fd))
}

/// The inherited listening socket: TCP (IPv4 or IPv6) or Unix stream.
enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    /// Takes ownership of `fd`, after finding its address family with
    /// getsockname() (and checking that it is a stream socket).
    ///
    /// # Safety
    /// `fd` must be an open fd that nothing else owns.
    unsafe fn from_raw_fd(fd: RawFd) -> Result<Listener, String> {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(fd, std::ptr::addr_of_mut!(addr).cast(), &mut len) != 0 {
            let e = io::Error::last_os_error();
            return Err(format!("fd {fd} is not a socket: {e}"));
        }
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let r = libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, std::ptr::addr_of_mut!(ty).cast(), &mut len);
        if r != 0 || ty != libc::SOCK_STREAM {
            return Err(format!("fd {fd} is not a stream socket"));
        }
        match libc::c_int::from(addr.ss_family) {
            libc::AF_INET | libc::AF_INET6 => Ok(Listener::Tcp(FromRawFd::from_raw_fd(fd))),
            libc::AF_UNIX => Ok(Listener::Unix(FromRawFd::from_raw_fd(fd))),
            family => Err(format!("fd {fd} has unsupported address family {family}")),
        }
    }

    fn describe(&self) -> String {
        let addr = match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()),
            Listener::Unix(l) => l.local_addr().map(|a| match a.as_pathname() {
                Some(p) => format!("unix:{}", p.display()),
                None => "unix:(unnamed)".to_string(),
            }),
        };
        addr.unwrap_or_else(|e| format!("? ({e})"))
    }

    /// Registers the socket with tokio; it must be called within the runtime.
    fn into_tokio(self) -> io::Result<AsyncListener> {
        Ok(match self {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                AsyncListener::Tcp(TcpListener::from_std(l)?)
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                AsyncListener::Unix(UnixListener::from_std(l)?)
            }
        })
    }
}

enum AsyncListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AsyncListener {
    /// Accepts one connection and serves it in a new task (with the same code
    /// whatever the socket family). Cancel-safe, like the accept() it wraps.
    async fn accept_and_serve(&self, app: &Arc<App>, alive: &mpsc::Sender<()>) -> io::Result<()> {
        match self {
            AsyncListener::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                tokio::spawn(serve(stream, app.clone(), alive.clone()));
            }
            AsyncListener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                tokio::spawn(serve(stream, app.clone(), alive.clone()));
            }
        }
        Ok(())
    }
}

async fn run(listen_fds: Vec<RawFd>, ipc_fd: RawFd) -> ! {
    // SAFETY: both fds were given to us by the primary and nothing else owns them.
    let (std_listeners, std_ipc) = unsafe {
        (
            listen_fds
                .iter()
                .map(|fd| (*fd, Listener::from_raw_fd(*fd).unwrap_or_else(|e| fail(&e))))
                .collect::<Vec<_>>(),
            std::os::unix::net::UnixStream::from_raw_fd(ipc_fd),
        )
    };
    std_ipc.set_nonblocking(true).expect("IPC fd");
    let (ipc_read, mut ipc_write) = UnixStream::from_std(std_ipc).expect("IPC fd").into_split();

    let (ipc_tx, mut ipc_rx) = mpsc::unbounded_channel::<Value>();
    let app = Arc::new(App {
        generation: env_or("HOTSWAP_GENERATION", "0"),
        worker_id: env_or("HOTSWAP_WORKER_ID", "0"),
        slot: env_or("HOTSWAP_WORKER_SLOT", "0"),
        response_delay: env_ms("EXAMPLE_RESPONSE_DELAY_MS"),
        ipc_tx,
        inbox: Mutex::new(Vec::new()),
        drain: watch::channel(None).0,
    });

    // IPC writer: one JSON value per line.
    tokio::spawn(async move {
        while let Some(msg) = ipc_rx.recv().await {
            let line = format!("{msg}\n");
            if ipc_write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    // IPC reader: shutdown or EOF starts the drain; bad lines are ignored.
    let a = app.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(ipc_read);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return a.start_drain("IPC channel closed"),
                Ok(_) => match serde_json::from_slice::<Value>(&line) {
                    Ok(msg) if msg["type"] == "shutdown" => a.start_drain("shutdown received"),
                    Ok(msg) => a.inbox.lock().unwrap().push(msg),
                    Err(e) => a.log(&format!("ignoring bad IPC line: {e}")),
                },
            }
        }
    });
    let a = app.clone();
    tokio::spawn(async move {
        signal(SignalKind::terminate()).unwrap().recv().await;
        a.start_drain("SIGTERM");
    });

    let mut drain = app.drain.subscribe();
    // Simulated start-up work: the listener is not touched until it is done.
    tokio::select! {
        _ = sleep(env_ms("EXAMPLE_STARTUP_MS")) => {}
        _ = drain.wait_for(Option::is_some) => {}
    }
    // Each connection task holds a clone of `alive`; recv() on `all_closed`
    // returns None once every clone is dropped.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    if drain.borrow().is_none() {
        // One accept loop per inherited listener (fd 3, 4, ...), all serving
        // the same app; each ends, closing its copy, when the drain starts.
        let mut accepting = Vec::new();
        for (fd, std_listener) in std_listeners {
            let what = std_listener.describe();
            let listener = std_listener.into_tokio().expect("listener fd");
            app.log(&format!("listening on fd {fd}, {what} (generation {}, worker {})", app.generation, app.worker_id));
            let (app, alive, mut drain) = (app.clone(), alive.clone(), app.drain.subscribe());
            accepting.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = listener.accept_and_serve(&app, &alive) => {
                            if let Err(e) = r {
                                app.log(&format!("accept: {e}"));
                                sleep(Duration::from_millis(50)).await;
                            }
                        }
                        // (the watch guard must not live across the await)
                        _ = async { drop(drain.wait_for(Option::is_some).await) } => break,
                    }
                }
                // Dropping the listener close()s our copy; the other workers keep theirs.
            }));
        }
        app.send(json!({"type": "listening"}));
        for task in accepting {
            let _ = task.await;
        }
    }
    drop(alive);
    all_closed.recv().await;
    if std::env::var_os("EXAMPLE_HANG_AFTER_DRAIN").is_some() {
        // For hotswap's tests: a worker that never exits after shutdown.
        app.log("drained; hanging instead of exiting (EXAMPLE_HANG_AFTER_DRAIN)");
        std::future::pending::<()>().await;
    }
    app.log("drained, exiting");
    std::process::exit(0)
}

struct Request {
    method: String,
    target: String,
    keep_alive: bool,
    head_len: usize,
    body_len: usize,
}

/// Parses a request head if `buf` holds a whole one. `Err` means a bad request.
fn parse_head(buf: &[u8]) -> Result<Option<Request>, ()> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD { Err(()) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| ())?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(());
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut body_len = 0;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(())?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().map_err(|_| ())?;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let (method, target) = (method.to_string(), target.to_string());
    Ok(Some(Request { method, target, keep_alive, head_len: end + 4, body_len }))
}

/// Serves one connection, TCP or Unix, until it closes (keep-alive, drain rules
/// as above).
async fn serve<S>(mut stream: S, app: Arc<App>, _alive: mpsc::Sender<()>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut drain = app.drain.subscribe();
    let mut buf = Vec::with_capacity(4096);
    let mut idle_since = Instant::now();
    loop {
        let req = loop {
            match parse_head(&buf) {
                Ok(Some(req)) => break req,
                Ok(None) => {}
                Err(()) => {
                    let _ = stream.write_all(BAD_REQUEST).await;
                    return;
                }
            }
            let draining_since = *drain.borrow_and_update();
            let deadline = match draining_since {
                Some(t) => idle_since.max(t) + DRAIN_IDLE,
                None => idle_since + KEEPALIVE_IDLE,
            };
            tokio::select! {
                r = stream.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => idle_since = Instant::now(),
                },
                _ = sleep_until(deadline) => return, // idle too long
                _ = drain.changed(), if draining_since.is_none() => {} // recompute the deadline
            }
        };
        // Read and discard the body, if any.
        let mut to_skip = req.head_len + req.body_len;
        loop {
            let n = to_skip.min(buf.len());
            buf.drain(..n);
            to_skip -= n;
            if to_skip == 0 {
                break;
            }
            if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
        }

        if !app.response_delay.is_zero() {
            sleep(app.response_delay).await; // even a zero sleep waits for the next 1 ms timer tick
        }
        let (content_type, body) = route(&app, &req.target);
        // After the drain began, this is the connection's last answer.
        let close = !req.keep_alive || drain.borrow().is_some();
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             X-Hotswap-Generation: {}\r\nX-Hotswap-Worker: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            app.generation,
            app.worker_id,
            if close { "close" } else { "keep-alive" },
        );
        if req.method != "HEAD" {
            out.push_str(&body);
        }
        if stream.write_all(out.as_bytes()).await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
        idle_since = Instant::now();
    }
}

/// Answers every method like GET; the path matters only for the IPC endpoints.
fn route(app: &App, target: &str) -> (&'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| percent_decode(v))
    };
    match path {
        "/broadcast" => {
            app.send(json!({"type": "broadcast", "data": param("data")}));
            ("text/plain", "ok\n".into())
        }
        "/send" => {
            let to = param("to").and_then(|v| v.parse::<u64>().ok());
            app.send(json!({"type": "send", "to": to, "data": param("data")}));
            ("text/plain", "ok\n".into())
        }
        "/inbox" => ("application/json", Value::from(app.inbox.lock().unwrap().clone()).to_string()),
        _ => {
            let (g, w) = (&app.generation, &app.worker_id);
            ("text/plain", format!("generation={g} worker={w} pid={} slot={}\n", std::process::id(), app.slot))
        }
    }
}

/// Decodes `+` and `%XX` in a query-string value.
fn percent_decode(s: &str) -> String {
    let (bytes, mut out, mut i) = (s.as_bytes(), Vec::new(), 0);
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
