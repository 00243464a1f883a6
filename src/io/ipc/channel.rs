//! The supervisor's handle on a worker's channel ([`Channel`]) and the task
//! that writes to the worker: a bounded queue, our answers to the peer's
//! handles written ahead of it, and sockets sent one at a time, each
//! waiting for its acknowledgement.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::Value;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::reader::read_loop;
use super::MAX_QUEUED_HANDLES;
use crate::io::warnings::thousands;
use crate::types::{Event, WorkerId};

enum Outgoing {
    Message(Value),
    /// A message carrying a socket (`SCM_RIGHTS`): Node's `NODE_HANDLE`.
    Handle(Value, OwnedFd),
    Disconnect,
}

/// How long a worker may take to acknowledge a handle before the channel
/// moves on (Node answers at once; a worker that does not is not Node).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Node retransmits a handle it did not get; so do we, this often.
const HANDLE_TRIES: u32 = 3;

/// The supervisor's handle on a worker's channel. Dropping it disconnects,
/// and says how many messages were dropped because the worker did not read
/// (on the event loop, so before the primary can exit).
#[derive(Debug)]
pub struct Channel {
    tx: mpsc::Sender<Outgoing>,
    /// Messages dropped because the worker did not read (the first is
    /// logged; the count when the channel closes).
    dropped: Arc<AtomicU64>,
    /// How many messages may wait.
    capacity: usize,
    /// Handles queued and not yet sent and acknowledged.
    handles: Arc<std::sync::atomic::AtomicUsize>,
    label: Arc<str>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outgoing::Message(v) => write!(f, "Message({v})"),
            Outgoing::Handle(v, fd) => write!(f, "Handle({v}, {fd:?})"),
            Outgoing::Disconnect => write!(f, "Disconnect"),
        }
    }
}

impl Channel {
    /// Starts the task that owns `stream`, the primary's end; `node`: the
    /// worker runs as a Node.js cluster worker (its cluster messages are
    /// passed on; anyone else's are warned about, rate-limited, and dropped).
    pub fn start(
        stream: UnixStream,
        worker: WorkerId,
        label: String,
        node: bool,
        events: mpsc::Sender<Event>,
        capacity: usize,
    ) -> Channel {
        let (tx, rx) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let handles = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(run(stream, worker, label.clone(), node, events, rx, dropped.clone(), handles.clone(), capacity));
        Channel { tx, dropped, capacity, handles, label: label.into() }
    }

    /// Queues a message; false if the channel is closed or the worker has
    /// not read the last [`OUTGOING_QUEUE`](super::OUTGOING_QUEUE) messages (then it is dropped).
    pub fn send(&self, message: Value) -> bool {
        match self.tx.try_send(Outgoing::Message(message)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                not_read(&self.dropped, &self.label, self.capacity);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a message that carries `fd` (sent as `SCM_RIGHTS`). Nothing
    /// else is written until the worker acknowledges it (`NODE_HANDLE_ACK`),
    /// as Node requires: one handle at a time. False (and `fd` closed)
    /// when [`MAX_QUEUED_HANDLES`] already wait, or the channel is closed.
    pub fn send_handle(&self, message: Value, fd: OwnedFd) -> bool {
        if self.handles_queued() >= MAX_QUEUED_HANDLES {
            return false;
        }
        self.handles.fetch_add(1, Ordering::Relaxed);
        let queued = self.tx.try_send(Outgoing::Handle(message, fd)).is_ok();
        if !queued {
            self.handles.fetch_sub(1, Ordering::Relaxed);
        }
        queued
    }

    /// Handles queued for the worker, not yet acknowledged.
    pub fn handles_queued(&self) -> usize {
        self.handles.load(Ordering::Relaxed)
    }

    /// Flushes what is queued, then closes the primary's end.
    pub fn disconnect(&self) {
        let tx = self.tx.clone();
        // Behind whatever is queued; never blocks the supervisor.
        if let Err(mpsc::error::TrySendError::Full(m)) = tx.try_send(Outgoing::Disconnect) {
            tokio::spawn(async move { tx.send(m).await });
        }
    }
}

/// The count of [`not_read`]'s drops, said once (whoever comes first).
fn say_dropped(dropped: &AtomicU64, label: &str) {
    let n = dropped.swap(0, Ordering::Relaxed);
    if n > 0 {
        tracing::warn!(
            "{label} IPC: {} {} to the worker dropped: it did not read its channel",
            thousands(n),
            crate::types::plural(n as usize, "message")
        );
    }
}

/// Counts a message dropped because the worker does not read, and says so
/// the first time.
fn not_read(dropped: &AtomicU64, label: &str, capacity: usize) {
    if dropped.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(
            "{label} IPC: the worker does not read its channel ({capacity} messages wait); messages to it are \
             dropped (said once; counted when the channel closes)"
        );
    }
}

/// Our answers to the peer's handles (`NODE_HANDLE_ACK`/`NACK`), written
/// ahead of anything queued, bounded like the queue: a peer that sends
/// handles and never reads gets its answers dropped and counted, never an
/// unbounded backlog.
pub(super) struct Urgent {
    tx: mpsc::Sender<Value>,
    dropped: Arc<AtomicU64>,
    label: String,
    capacity: usize,
}

impl Urgent {
    pub(super) fn send(&self, v: Value) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(v) {
            not_read(&self.dropped, &self.label, self.capacity);
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        say_dropped(&self.dropped, &self.label);
    }
}

/// Reading and writing are separate tasks, so that a worker that does not
/// read (its socket buffer full) never stops the primary from reading what
/// it writes, and the reverse.
#[allow(clippy::too_many_arguments)]
async fn run(
    stream: UnixStream,
    worker: WorkerId,
    label: String,
    node: bool,
    events: mpsc::Sender<Event>,
    mut rx: mpsc::Receiver<Outgoing>,
    dropped: Arc<AtomicU64>,
    handles: Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
) {
    let (read_half, mut write_half) = stream.into_split();
    let (ack_tx, mut acks) = mpsc::unbounded_channel();
    // Our answers to the peer's handles, written before anything queued.
    let (tx, mut urgent) = mpsc::channel::<Value>(capacity.max(1));
    let urgent_tx = Urgent { tx, dropped: dropped.clone(), label: label.clone(), capacity };
    let reader = tokio::spawn(read_loop(read_half, worker, label.clone(), node, events, ack_tx, urgent_tx));
    // Once a write fails the worker is gone: what is queued is dropped
    // unwritten (and unlogged), while the reader reads what it left.
    let mut broken = false;
    let mut disconnected = false;
    loop {
        let out = tokio::select! {
            biased;
            Some(v) = urgent.recv() => {
                if !broken && write_line(&mut write_half, &v).await.is_err() {
                    broken = true;
                }
                continue;
            }
            out = rx.recv() => match out {
                Some(out) => out,
                None => break,
            },
        };
        // Counted down once taken off the queue (sent or dropped below).
        let _taken = matches!(out, Outgoing::Handle(..)).then(|| HandleTaken(&handles));
        match out {
            Outgoing::Message(_) | Outgoing::Handle(..) if broken => {}
            Outgoing::Message(v) => {
                let mut line = v.to_string();
                line.push('\n');
                if let Err(e) = write_half.write_all(line.as_bytes()).await {
                    tracing::debug!("{label} IPC: write failed: {e}; the rest queued for it is dropped");
                    broken = true;
                }
            }
            Outgoing::Handle(v, fd) => {
                let mut line = v.to_string();
                line.push('\n');
                for attempt in 1..=HANDLE_TRIES {
                    if let Err(e) = send_with_fd(&mut write_half, line.as_bytes(), &fd).await {
                        tracing::warn!("{label} IPC: sending a socket failed: {e}");
                        break;
                    }
                    let ack = loop {
                        // The peer may pass a handle meanwhile: it waits for our ACK.
                        tokio::select! {
                            biased;
                            Some(v) = urgent.recv() => {
                                let _ = write_line(&mut write_half, &v).await;
                            }
                            ack = tokio::time::timeout(ACK_TIMEOUT, acks.recv()) => break ack,
                        }
                    };
                    match ack {
                        Ok(Some(true)) => break,
                        Ok(Some(false)) if attempt < HANDLE_TRIES => continue,
                        Ok(Some(false)) => tracing::warn!("{label} IPC: the worker did not get its socket"),
                        Ok(None) => break,
                        Err(_) => {
                            tracing::warn!("{label} IPC: no acknowledgement of a socket within {ACK_TIMEOUT:?}");
                            break;
                        }
                    }
                }
            }
            Outgoing::Disconnect => {
                disconnected = true;
                break;
            }
        }
    }
    // Disconnect, or the supervisor dropped the channel: close our end.
    say_dropped(&dropped, &label);
    // Dropped (the worker exited): the reader reads what it left to the
    // end, as its messages still count (the app's own cluster primary
    // hears them); it stops at the EOF that comes with the exit.
    if disconnected {
        reader.abort();
    }
    let _ = write_half.shutdown().await;
}

/// Counts a queued handle down when it has been dealt with.
struct HandleTaken<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for HandleTaken<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn write_line(write_half: &mut OwnedWriteHalf, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    write_half.write_all(line.as_bytes()).await
}

/// Writes `bytes` with `fd` attached to the first of them.
async fn send_with_fd(write_half: &mut OwnedWriteHalf, bytes: &[u8], fd: &OwnedFd) -> std::io::Result<()> {
    let stream: &UnixStream = write_half.as_ref();
    let raw = [fd.as_raw_fd()];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(bytes)];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None).map_err(std::io::Error::from)
        })
        .await?;
    // The fd went with the first byte; the rest of a long line follows.
    write_half.write_all(&bytes[sent..]).await
}
