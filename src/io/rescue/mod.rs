//! Rescue: requests that a retiring worker's graceful stop would lose on its
//! idle keep-alive connections are answered by the serving generation.
//!
//! A graceful stop closes idle keep-alive connections at once; a client
//! that wrote its next request in that instant gets a closed connection
//! and no answer (a POST is not retried). Just before a retiring worker is
//! told to stop, this task copies its accepted connections
//! ([`crate::sys::rescue`]) and keeps looking every [`TICK`] for those it
//! accepts later, until it exits. A connection it still holds is its own:
//! the copy is never read, only peeked at (to let go of one the client
//! closed). Once the worker has let go of one (its processes hold no fd of
//! it any more), the primary holds its only copy:
//!
//! * the client closes it: closed;
//! * the client sends a request (an HTTP/1.x request line from the first
//!   byte): the request head goes to the serving generation on a fresh
//!   connection to the listener with `Connection: close`, the body and the
//!   answer are streamed through, and the connection is closed;
//! * anything else (TLS, HTTP/2, `Upgrade`, bytes that start no request),
//!   or nothing within [`GRACE`]: closed, as the worker would have.
//!
//! A worker that is killed (`--shutdown-timeout`, SIGKILL) or dies by a
//! signal other than its stop signal (a crash) may have been mid-answer on
//! the connections it still held: those are closed at once, never passed
//! on. Connections it closed itself while alive, or still held when it
//! exited or its stop signal ended it (many servers stop that way), are
//! rescued. A connection whose worker read a request and closed it without
//! answering ([`socks::Turn`]) has nothing to pass on: it is closed at once.
//!
//! Bounded: at most [`MAX_HELD`] connections held (fewer if the fd limit is
//! low), a request head of at most [`http::MAX_HEAD`] buffered, the body and
//! the answer streamed through fixed buffers. All the `/proc` reading and
//! copying runs on the blocking pool; the event loop only hears
//! [`RescueNote`]s.

pub mod http;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::sys::rescue::{self as socks, Peek};
use crate::types::event::RescueNote;
use crate::types::{Event, WorkerId};

/// How often a retiring worker's connections are looked at.
pub const TICK: Duration = Duration::from_millis(50);
/// How long a connection the worker let go of is kept open for the
/// client's next request: about the keep-alive idle time of common servers
/// and clients (Node 5 s, uvicorn 5 s, Apache 5 s; nginx 75 s). A client
/// that waits longer sees the connection close, as an idle close.
pub const GRACE: Duration = Duration::from_secs(10);
/// The grace of a connection whose worker may have read a request it did
/// not answer ([`socks::Turn::Unsure`]): short, as its client may be
/// waiting for an answer that never comes.
const UNSURE_GRACE: Duration = Duration::from_secs(1);
/// How long a client may take to send the rest of a request it started.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one rescued exchange may take, body and answer included.
const EXCHANGE_MAX: Duration = Duration::from_secs(300);
/// How long a self-upgrade lets held connections wait for their client's
/// next request before the rest are closed for the exec.
const EXEC_WAIT: Duration = Duration::from_millis(1500);
/// The longest a reload's answer waits for the rescue to count.
const SETTLE_MAX: Duration = Duration::from_millis(500);
/// The most connections held at once.
pub const MAX_HELD: usize = 4096;
/// The first look at a worker is waited for at most this long before it is
/// told to stop anyway (the look goes on).
const FIRST_LOOK_MAX: Duration = Duration::from_secs(1);

/// The handle the supervisor keeps.
pub struct Rescue {
    tx: mpsc::UnboundedSender<Ask>,
}

enum Ask {
    /// A worker is about to be told to stop: look, answer `Looked`, and
    /// keep looking until it exits.
    Watch { worker: WorkerId, pgid: i32, label: String },
    /// The worker exited; `died` when by a signal.
    Exited { worker: WorkerId, died: bool },
    /// The primary stops or re-executes: hold nothing more, close what
    /// waits for a request; answer once the exchanges under way are done.
    Close { done: Option<oneshot::Sender<()>> },
    /// Hold again (a self-upgrade failed before its exec).
    Reopen,
    /// Answer once the requests waiting on connections let go of so far
    /// have been passed on or refused (at most [`SETTLE_MAX`]).
    Settle { done: oneshot::Sender<()> },
}

impl Rescue {
    /// Starts the task for connections accepted from `listeners` (TCP).
    pub fn start(listeners: Vec<SocketAddr>, events: mpsc::Sender<Event>) -> Rescue {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(listeners, events, rx));
        Rescue { tx }
    }

    /// Looks at `worker`'s connections before it is told to stop; the
    /// answer is [`RescueNote::Looked`].
    pub fn watch(&self, worker: WorkerId, pgid: i32, label: String) {
        let _ = self.tx.send(Ask::Watch { worker, pgid, label });
    }

    /// The worker exited (`died`: by a signal).
    pub fn exited(&self, worker: WorkerId, died: bool) {
        let _ = self.tx.send(Ask::Exited { worker, died });
    }

    /// `done` is answered once the requests already waiting on connections
    /// let go of have been passed on (or refused): what a reload's answer
    /// counts.
    pub fn settle(&self, done: oneshot::Sender<()>) {
        let _ = self.tx.send(Ask::Settle { done });
    }

    /// Holds again after [`close`](Self::close).
    pub fn reopen(&self) {
        let _ = self.tx.send(Ask::Reopen);
    }

    /// Holds nothing more; `done` is answered when the exchanges under way
    /// have ended.
    pub fn close(&self, done: Option<oneshot::Sender<()>>) {
        let _ = self.tx.send(Ask::Close { done });
    }
}

/// One retiring worker.
struct Watched {
    worker: WorkerId,
    pgid: i32,
    label: String,
    /// Copies of its connections, by inode, while it may still hold them.
    held: HashMap<u64, OwnedFd>,
    /// Its sockets that are no connection of ours.
    other: HashSet<u64>,
    /// Copies were refused: it is not looked at again.
    denied: bool,
}

/// What the connection tasks share with the loop.
struct Shared {
    events: mpsc::Sender<Event>,
    /// Connections let go of by their worker, being served or waited on.
    serving: AtomicUsize,
    /// Of those, the ones that had bytes waiting when let go of and are not
    /// passed on or refused yet.
    deciding: AtomicUsize,
    /// Set when the primary stops or re-executes.
    closing: watch::Sender<bool>,
    /// Each "rescue cannot work here" reason is logged once.
    said: [AtomicBool; 6],
}

impl Shared {
    /// Logs `what` once per `reason` for the life of this image.
    fn once(&self, reason: usize, what: impl FnOnce() -> String) {
        if !self.said[reason].swap(true, Ordering::Relaxed) {
            tracing::warn!("rescue: {}", what());
        }
    }

    async fn note(&self, n: RescueNote) {
        let _ = self.events.send(Event::Rescue(n)).await;
    }
}

const SAID_DENIED: usize = 0;
const SAID_CAP: usize = 1;

fn said_index(r: http::Refusal) -> usize {
    match r {
        http::Refusal::Tls => 2,
        http::Refusal::Http2 => 3,
        http::Refusal::Upgrade => 4,
        http::Refusal::NotHttp | http::Refusal::TooLarge => 5,
    }
}

/// The most connections to hold: [`MAX_HELD`], or a quarter of the fd
/// limit if that is lower (the primary needs fds for workers and clients).
fn cap() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
    // SAFETY: getrlimit fills the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (limit.rlim_cur as usize / 4).min(MAX_HELD)
}

async fn run(listeners: Vec<SocketAddr>, events: mpsc::Sender<Event>, mut rx: mpsc::UnboundedReceiver<Ask>) {
    let shared = Arc::new(Shared {
        events,
        serving: AtomicUsize::new(0),
        deciding: AtomicUsize::new(0),
        closing: watch::Sender::new(false),
        said: Default::default(),
    });
    let listeners = Arc::new(listeners);
    let cap = cap();
    let mut watched: Vec<Watched> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_held = 0;
    let mut next_look = std::time::Instant::now();
    loop {
        tokio::select! {
            ask = rx.recv() => match ask {
                None => return,
                Some(Ask::Watch { worker, pgid, label }) => {
                    let mut w = Watched { worker, pgid, label, held: HashMap::new(), other: HashSet::new(), denied: false };
                    if !*shared.closing.borrow() {
                        // A long look (thousands of connections) does not
                        // hold the stop back for long: the worker is told
                        // after FIRST_LOOK_MAX, and the look goes on.
                        let early = tokio::spawn({
                            let shared = shared.clone();
                            async move {
                                tokio::time::sleep(FIRST_LOOK_MAX).await;
                                shared.note(RescueNote::Looked(worker)).await;
                            }
                        });
                        let room = cap.saturating_sub(held(&watched, &shared));
                        look(&mut w, &listeners, room, &shared).await;
                        early.abort();
                    }
                    shared.note(RescueNote::Looked(worker)).await;
                    if !*shared.closing.borrow() {
                        watched.push(w);
                    }
                }
                Some(Ask::Exited { worker, died }) => {
                    if let Some(i) = watched.iter().position(|w| w.worker == worker) {
                        let w = watched.swap_remove(i);
                        if died {
                            if !w.held.is_empty() {
                                tracing::info!("rescue: {} died by a signal: its {} connections are closed, not passed on", w.label, w.held.len());
                            }
                        } else {
                            for fd in w.held.into_values() {
                                release(fd, &shared);
                            }
                        }
                    }
                }
                Some(Ask::Settle { done }) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(SETTLE_MAX, async {
                            while shared.deciding.load(Ordering::Relaxed) > 0 {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        })
                        .await;
                        let _ = done.send(());
                    });
                }
                Some(Ask::Reopen) => {
                    shared.closing.send_replace(false);
                }
                Some(Ask::Close { done: None }) => {
                    shared.closing.send_replace(true);
                    watched.clear();
                }
                Some(Ask::Close { done: Some(done) }) => {
                    // A self-upgrade: connections waiting for their
                    // client's next request get a moment to receive it
                    // (a client that paces its requests sends it within
                    // milliseconds), then the rest are closed.
                    watched.clear();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let empty = || async {
                            while shared.serving.load(Ordering::Relaxed) > 0 {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        };
                        let _ = tokio::time::timeout(EXEC_WAIT, empty()).await;
                        shared.closing.send_replace(true);
                        empty().await;
                        let _ = done.send(());
                    });
                }
            },
            // Also while connections let go of are served: the held count
            // goes down as they end.
            _ = tick.tick(), if !watched.is_empty() || last_held > 0 => {
                if !watched.is_empty() && std::time::Instant::now() >= next_look {
                    let began = std::time::Instant::now();
                    for i in 0..watched.len() {
                        let room = cap.saturating_sub(held(&watched, &shared));
                        look(&mut watched[i], &listeners, room, &shared).await;
                    }
                    // A worker with thousands of connections takes long to
                    // look at: the looks then take at most a quarter of the time.
                    next_look = began + began.elapsed() * 4;
                }
            }
        }
        let now = held(&watched, &shared);
        if now != last_held {
            last_held = now;
            shared.note(RescueNote::Held(now)).await;
        }
    }
}

/// Connections held now: copies of those the workers may still hold, and
/// those let go of that are being served.
fn held(watched: &[Watched], shared: &Shared) -> usize {
    watched.iter().map(|w| w.held.len()).sum::<usize>() + shared.serving.load(Ordering::Relaxed)
}

/// One look at a worker, on the blocking pool: copies of its new
/// connections (at most `room`), copies dropped whose client closed, and
/// those it let go of passed to [`serve`].
async fn look(w: &mut Watched, listeners: &Arc<Vec<SocketAddr>>, room: usize, shared: &Arc<Shared>) {
    if w.denied {
        return;
    }
    let (pgid, listeners2) = (w.pgid, listeners.clone());
    let mut held = std::mem::take(&mut w.held);
    let other = std::mem::take(&mut w.other);
    let job = tokio::task::spawn_blocking(move || {
        // The client closed it or it failed: the worker sees that too.
        held.retain(|_, fd| !matches!(socks::peek(&*fd, 1), Peek::Eof | Peek::Failed));
        let known = |i: u64| held.contains_key(&i) || other.contains(&i);
        let look = socks::look(pgid, &listeners2, &known, room);
        (held, other, look)
    });
    let Ok((held, other, look)) = job.await else {
        w.denied = true;
        return;
    };
    w.held = held;
    w.other = other;
    let look = match look {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!("rescue: looking at {}: {e}", w.label);
            return;
        }
    };
    if let Some(e) = &look.denied {
        let label = w.label.clone();
        shared.once(SAID_DENIED, || {
            format!(
                "off for {label}: copying its connections was refused ({e}: the primary lacks the ptrace right \
                 over it, e.g. another user, Yama ptrace_scope 2+, a seccomp profile); its requests caught in \
                 the instant of its stop are lost, as without rescue"
            )
        });
        w.denied = true;
        shared.note(RescueNote::Denied).await;
    }
    w.other.extend(look.other);
    for c in look.caught {
        w.held.insert(c.inode, c.socket);
    }
    if look.over > 0 {
        shared.once(SAID_CAP, || {
            format!("holding the most connections it may ({}): more are left to their worker's own close", cap())
        });
        for _ in 0..look.over {
            shared.note(RescueNote::GaveUp).await;
        }
    }
    if look.processes > 0 {
        let gone: Vec<u64> = w.held.keys().copied().filter(|i| !look.inodes.contains(i)).collect();
        for inode in gone {
            if let Some(fd) = w.held.remove(&inode) {
                release(fd, shared);
            }
        }
    }
}

/// The worker let go of this connection: the primary's copy is the only one.
fn release(fd: OwnedFd, shared: &Arc<Shared>) {
    if *shared.closing.borrow() {
        return;
    }
    let std = std::net::TcpStream::from(fd);
    if std.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(stream) = TcpStream::from_std(std) else { return };
    shared.serving.fetch_add(1, Ordering::Relaxed);
    let waiting = matches!(socks::peek(&stream, 1), Peek::Bytes(_));
    if waiting {
        shared.deciding.fetch_add(1, Ordering::Relaxed);
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let decided = Decided(waiting.then_some(&shared.deciding));
        serve(stream, &shared, decided).await;
        shared.serving.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Counts a connection out of [`Shared::deciding`] once it is decided (or
/// dropped).
struct Decided<'a>(Option<&'a AtomicUsize>);

impl Decided<'_> {
    fn now(&mut self) {
        if let Some(n) = self.0.take() {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Decided<'_> {
    fn drop(&mut self) {
        self.now();
    }
}

/// Waits for the client's next request and passes it on, or closes.
async fn serve(mut client: TcpStream, shared: &Arc<Shared>, mut decided: Decided<'_>) {
    let grace = match socks::turn(&client) {
        socks::Turn::Open => GRACE,
        socks::Turn::Unsure => UNSURE_GRACE,
        socks::Turn::ShutDown => {
            // Its client has its end of file: a request it wrote after is
            // one it saw fail (and may send again), never passed on. An
            // idle one is closed as its worker meant.
            if matches!(socks::peek(&client, 1), Peek::Bytes(_)) {
                tracing::debug!(
                    "rescue: its worker shut a connection down (shutdown(SHUT_WR)) before it let go, and its client \
                     wrote a request after that end of file: closed, not passed on"
                );
                shared.note(RescueNote::GaveUp).await;
            }
            return;
        }
        socks::Turn::Unanswered => {
            // The worker read a request and dropped it: the client would
            // wait the whole grace for nothing. Closed now, as the worker did.
            tracing::debug!("rescue: its worker took a request on a connection and closed it unanswered: closed");
            shared.note(RescueNote::GaveUp).await;
            return;
        }
    };
    let mut closing = shared.closing.subscribe();
    // Its first byte, or its close, within the grace.
    let first = tokio::select! {
        r = tokio::time::timeout(grace, client.readable()) => r,
        _ = closing.wait_for(|c| *c) => return,
    };
    if !matches!(first, Ok(Ok(()))) {
        if grace == UNSURE_GRACE {
            tracing::debug!(
                "rescue: closed after {} ms: its worker may have read a request it did not answer",
                grace.as_millis()
            );
        }
        return; // idle until the grace ended: closed, as an idle close
    }
    let mut buf = Vec::with_capacity(4096);
    let head = loop {
        match http::parse(&buf) {
            http::Head::Incomplete => {}
            http::Head::Request { head, len } => break (head, len),
            http::Head::Refused(r) => {
                shared.once(said_index(r), || format!("a connection whose worker closed it sent {r}: closed, not passed on (as the worker would have)"));
                shared.note(RescueNote::GaveUp).await;
                return;
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(HEAD_TIMEOUT, client.read(&mut chunk)).await {
            Ok(Ok(0)) => {
                if !buf.is_empty() {
                    shared.note(RescueNote::GaveUp).await;
                }
                return; // the client closed
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            _ => {
                shared.note(RescueNote::GaveUp).await;
                return;
            }
        }
    };
    let (head, len) = head;
    let Ok(local) = client.local_addr() else { return };
    let mut upstream = match TcpStream::connect(local).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("rescue: connecting to {local} for a caught request: {e}; the request is lost");
            shared.note(RescueNote::GaveUp).await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if upstream.write_all(&head).await.is_err() || upstream.write_all(&buf[len..]).await.is_err() {
        shared.note(RescueNote::GaveUp).await;
        return;
    }
    drop(buf);
    let peer = client.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::debug!("rescue: passed on a request from {peer} caught on a connection its worker closed");
    shared.note(RescueNote::Rescued).await;
    decided.now();
    let _ = tokio::time::timeout(EXCHANGE_MAX, relay(client, upstream)).await;
}

/// The rest of the request body up, the answer down; ends when the answer
/// has ended (the serving generation closes after it: `Connection: close`).
async fn relay(client: TcpStream, upstream: TcpStream) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
        std::future::pending::<()>().await
    };
    let down = async {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
