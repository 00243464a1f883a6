//! The IPC channel between the primary and one worker.
//!
//! Framing is one JSON value per line, both ways: what Node.js speaks on
//! `NODE_CHANNEL_FD` with `NODE_CHANNEL_SERIALIZATION_MODE=json`. [`Channel`]
//! owns the primary's end of the socketpair in one task: it turns bytes into
//! whole, validated [`FromWorker`] messages (enforcing [`MAX_LINE`] in one
//! place) and writes what the supervisor queues for the worker. A bad line is
//! logged with the worker's id and dropped, never fatal; those warnings are
//! rate-limited per worker ([`super::warnings`]).
//!
//! A worker that does not read its channel never stops the primary from
//! reading it: reading and writing are separate tasks, what is queued for the
//! worker is bounded ([`OUTGOING_QUEUE`]; past it messages are dropped, said
//! once, counted when the channel closes), and the reader reads until the
//! socket is drained. (tokio takes a short read as "drained", but on a Unix
//! socket a message that carries fds (`SCM_RIGHTS`, Node's `NODE_HANDLE`)
//! ends a read early with more data still queued; waiting for the next
//! readiness then wedged the channel once the worker's send buffer filled.)
//!
//! Handles come the other way too: the app's own cluster primary passes
//! a connection to a worker (`worker.send(msg, socket)`, what
//! `@socket.io/sticky` does). The reader takes fds with `recvmsg`, pairs
//! each with its `NODE_HANDLE` line (the fd comes with the line's first
//! byte, so in order), acknowledges it at once (`NODE_HANDLE_ACK`, ahead
//! of anything queued: Node sends nothing else on the channel until then)
//! and hands both to the supervisor ([`Event::IpcHandle`]).

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::lines::{Frame, Lines, Long};
use super::warnings::{thousands, Warnings};
use crate::types::event::FromWorker;
use crate::types::{Event, WorkerId};

/// The longest line accepted from a worker, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// Parses one line from a worker. `Err` says why it was refused.
pub fn parse(line: &str) -> Result<FromWorker, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    if value.as_str() == Some("ready") {
        return Ok(FromWorker::Listening);
    }
    match value.get("cmd").and_then(Value::as_str) {
        Some("NODE_HANDLE") => return Ok(FromWorker::NodeHandle(value)),
        Some("NODE_HANDLE_ACK") => return Ok(FromWorker::HandleAck { ok: true }),
        Some("NODE_HANDLE_NACK") => return Ok(FromWorker::HandleAck { ok: false }),
        Some("NODE_CLUSTER") => return Ok(FromWorker::Cluster(value)),
        _ => {}
    }
    let kind = value.get("type").and_then(Value::as_str);
    Ok(match kind {
        Some("listening") => FromWorker::Listening,
        Some("broadcast") => FromWorker::Broadcast { data: value.get("data").cloned().unwrap_or(Value::Null) },
        Some("send") => {
            let to = value
                .get("to")
                .and_then(Value::as_u64)
                .ok_or_else(|| "a \"send\" message needs a numeric \"to\"".to_string())?;
            FromWorker::Send { to, data: value.get("data").cloned().unwrap_or(Value::Null) }
        }
        Some("hotswap:preload") => FromWorker::Preload(crate::types::wire::PreloadPatch {
            patch: value.get("patch").and_then(Value::as_str).unwrap_or("?").chars().take(200).collect(),
            ok: value.get("ok").and_then(Value::as_bool).unwrap_or(false),
            error: value.get("error").and_then(Value::as_str).map(|e| e.chars().take(300).collect()),
            skipped: value.get("skipped").and_then(Value::as_str).map(|e| e.chars().take(300).collect()),
        }),
        _ => FromWorker::Other(value),
    })
}

/// Messages from the primary to a worker.
pub mod to_worker {
    use super::*;

    pub fn shutdown() -> Value {
        json!({"type": "shutdown"})
    }
    pub fn broadcast(from: WorkerId, data: Value) -> Value {
        json!({"type": "broadcast", "from": from, "data": data})
    }
    pub fn send(from: WorkerId, data: Value) -> Value {
        json!({"type": "send", "from": from, "data": data})
    }
    pub fn error(message: &str) -> Value {
        json!({"type": "error", "error": message})
    }
    pub fn node_handle_ack() -> Value {
        json!({"cmd": "NODE_HANDLE_ACK"})
    }
    /// A `NODE_HANDLE` line came without its fd: Node sends it again.
    pub fn node_handle_nack() -> Value {
        json!({"cmd": "NODE_HANDLE_NACK"})
    }
    /// PM2's convention for "stop" (`shutdown_with_message`).
    pub fn pm2_shutdown() -> Value {
        json!("shutdown")
    }
}

/// Consecutive refused lines after which a worker's channel is closed.
pub const ABUSE_LIMIT: u32 = 100;
/// Messages queued for a worker that does not read; more are dropped.
pub const OUTGOING_QUEUE: usize = 1024;
/// Messages queued for the app's own cluster primary
/// ([`crate::node::primary`]), which hears every message of every worker:
/// a burst of them (a log line per request, under load and while a reload
/// keeps the event loop busy) overflowed [`OUTGOING_QUEUE`] within a second.
pub const PRIMARY_QUEUE: usize = 1 << 18;
/// Sockets queued for a worker (each an open fd in the primary until the
/// worker acknowledges the one before); more are refused, so a worker that
/// asks again and again without reading cannot fill the primary's fd table.
/// Node asks for all its servers' sockets at once: room for every one a
/// worker may hold (`MAX_PER_WORKER` on-demand ones, and `--listen` ones).
pub const MAX_QUEUED_HANDLES: usize = 64;

/// Turns the bytes a worker writes into messages: one JSON value per line,
/// at most [`MAX_LINE`] bytes each (the bound is [`Lines`]'s to enforce).
pub struct Framer {
    lines: Lines,
    /// Refused lines since the last good one.
    pub refused_in_a_row: u32,
}

impl Default for Framer {
    fn default() -> Self {
        Framer { lines: Lines::new(MAX_LINE, Long::Refuse), refused_in_a_row: 0 }
    }
}

impl Framer {
    /// Where to read the next bytes into.
    pub fn buffer(&mut self) -> &mut bytes::BytesMut {
        self.lines.buffer()
    }

    /// Bytes held (a partial line).
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }

    /// The next complete line as a message, or why it was refused; `None`
    /// when more bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<FromWorker, String>> {
        loop {
            let item = match self.lines.next_frame(false)? {
                Frame::Line(line) if line.trim_ascii().is_empty() => continue,
                Frame::Line(line) => match std::str::from_utf8(&line) {
                    Ok(text) => parse(text),
                    Err(_) => Err("not valid UTF-8".into()),
                },
                Frame::TooLong => Err(format!("longer than {MAX_LINE} bytes")),
            };
            match item {
                Ok(_) => self.refused_in_a_row = 0,
                Err(_) => self.refused_in_a_row += 1,
            }
            return Some(item);
        }
    }
}

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
    /// not read the last [`OUTGOING_QUEUE`] messages (then it is dropped).
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
struct Urgent {
    tx: mpsc::Sender<Value>,
    dropped: Arc<AtomicU64>,
    label: String,
    capacity: usize,
}

impl Urgent {
    fn send(&self, v: Value) {
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

/// Reads what is there, with the fds that came with it (`Ok(0)`: EOF).
fn recv_with_fds(fd: i32, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> std::io::Result<usize> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT)
        .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: received with SCM_RIGHTS: new fds nobody else owns.
            fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    Ok(msg.bytes)
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

async fn read_loop(
    stream: tokio::net::unix::OwnedReadHalf,
    worker: WorkerId,
    label: String,
    node: bool,
    events: mpsc::Sender<Event>,
    acks: mpsc::UnboundedSender<bool>,
    urgent: Urgent,
) {
    let mut framer = Framer::default();
    let mut warnings = Warnings::new(label.clone());
    // Fds received and not yet paired with their NODE_HANDLE line.
    let mut fds: VecDeque<OwnedFd> = VecDeque::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Read until the socket says it is drained (see the module's doc).
        let raw = stream.as_ref().as_raw_fd();
        let read = match stream.as_ref().try_io(Interest::READABLE, || recv_with_fds(raw, &mut buf, &mut fds)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match stream.readable().await {
                Ok(()) => continue,
                Err(e) => Err(e),
            },
            r => {
                // `try_read` spends none of tokio's cooperative budget: a
                // worker that writes without pause must not keep the event
                // loop's thread to itself.
                tokio::task::coop::consume_budget().await;
                r
            }
        };
        match read {
            Ok(0) | Err(_) => {
                if framer.buffered() > 0 {
                    tracing::warn!("{label} IPC: dropped {} bytes without a final newline", framer.buffered());
                }
                break;
            }
            Ok(n) => framer.buffer().extend_from_slice(&buf[..n]),
        }
        if fds.len() > crate::io::ipc::MAX_QUEUED_HANDLES {
            tracing::error!("{label} IPC: closing the channel: {} fds sent without their messages", fds.len());
            break;
        }
        while let Some(item) = framer.next_message() {
            match item {
                Ok(FromWorker::HandleAck { ok }) => {
                    let _ = acks.send(ok);
                }
                // Checked here, where the rate limit is: a worker sending
                // bad or unknown cluster messages in a loop must not flood
                // the log (unknown ones are only for the debug log).
                Ok(FromWorker::Cluster(v)) => {
                    use crate::node::cluster::{parse, FromNode};
                    let refused = match parse(&v) {
                        _ if !node => Some((
                            tracing::Level::WARN,
                            "spoke Node's cluster protocol but is not run as a cluster worker (--node off?); ignored"
                                .to_string(),
                        )),
                        Err(why) => {
                            Some((tracing::Level::WARN, format!("sent a cluster message hotswap cannot use: {why}")))
                        }
                        Ok(FromNode::Other(act)) => {
                            Some((tracing::Level::DEBUG, format!("cluster message {act:?} ignored")))
                        }
                        Ok(_) => None,
                    };
                    match refused {
                        Some((level, why)) => {
                            if warnings.allow() {
                                if level == tracing::Level::WARN {
                                    tracing::warn!("{label} {why}");
                                } else {
                                    tracing::debug!("{label} {why}");
                                }
                            }
                        }
                        None => {
                            if events.send(Event::Ipc { worker, msg: FromWorker::Cluster(v) }).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Ok(FromWorker::NodeHandle(msg)) => {
                    let Some(fd) = fds.pop_front() else {
                        urgent.send(to_worker::node_handle_nack());
                        continue;
                    };
                    urgent.send(to_worker::node_handle_ack());
                    if events.send(Event::IpcHandle { worker, msg, fd }).await.is_err() {
                        return;
                    }
                }
                Ok(msg) => {
                    if events.send(Event::Ipc { worker, msg }).await.is_err() {
                        return;
                    }
                }
                Err(why) => {
                    if warnings.allow() {
                        tracing::warn!("{label} IPC: refused a message: {why}");
                    }
                }
            }
        }
        warnings.tick();
        if framer.refused_in_a_row >= ABUSE_LIMIT {
            tracing::error!("{label} IPC: closing the channel after {ABUSE_LIMIT} refused messages in a row");
            break;
        }
    }
    warnings.finish();
    // The supervisor drops its handle, which ends the writer and closes the socket.
    let _ = events.send(Event::IpcClosed { worker }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_splits_refuses_and_recovers() {
        let mut f = Framer::default();
        f.buffer().extend_from_slice(b"{\"type\":\"listening\"}\n\n{bad\n\xff\n\"ready\"\npartial");
        assert_eq!(f.next_message(), Some(Ok(FromWorker::Listening)));
        assert!(f.next_message().unwrap().unwrap_err().contains("invalid JSON"));
        assert_eq!(f.next_message(), Some(Err("not valid UTF-8".into())));
        assert_eq!(f.refused_in_a_row, 2);
        assert_eq!(f.next_message(), Some(Ok(FromWorker::Listening)));
        assert_eq!(f.refused_in_a_row, 0);
        assert_eq!(f.next_message(), None);
        assert_eq!(f.buffered(), 7);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Arbitrary bytes, in arbitrary chunks: no panic, and the buffer
        /// never holds more than one line's bound plus one chunk.
        #[test]
        fn framer_is_total_and_bounded(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..150_000), 0..12)) {
            let mut f = Framer::default();
            for c in &chunks {
                f.buffer().extend_from_slice(c);
                while f.next_message().is_some() {}
                proptest::prop_assert!(f.buffered() <= MAX_LINE + c.len() + 1);
            }
        }

        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }
    }

    #[test]
    fn an_endless_line_stays_bounded() {
        let mut f = Framer::default();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            f.buffer().extend_from_slice(&chunk);
            while f.next_message().is_some() {}
            assert!(f.buffered() <= MAX_LINE + chunk.len());
        }
        f.buffer().extend_from_slice(b"\n{\"type\":\"listening\"}\n");
        let mut got = Vec::new();
        while let Some(m) = f.next_message() {
            got.push(m);
        }
        assert_eq!(got.last(), Some(&Ok(FromWorker::Listening)), "the channel recovers after the long line");
    }

    #[test]
    fn parses_every_message_kind() {
        assert_eq!(parse(r#"{"type":"listening"}"#).unwrap(), FromWorker::Listening);
        assert_eq!(parse(r#""ready""#).unwrap(), FromWorker::Listening);
        assert_eq!(
            parse(r#"{"type":"broadcast","data":{"a":1}}"#).unwrap(),
            FromWorker::Broadcast { data: json!({"a":1}) }
        );
        assert_eq!(
            parse(r#"{"type":"send","to":3,"data":"x"}"#).unwrap(),
            FromWorker::Send { to: 3, data: json!("x") }
        );
        assert!(parse(r#"{"type":"send","data":"x"}"#).is_err());
        assert!(matches!(
            parse(r#"{"cmd":"NODE_HANDLE","type":"net.Socket"}"#).unwrap(),
            FromWorker::NodeHandle(v) if v["type"] == "net.Socket"
        ));
        assert!(matches!(parse(r#"{"hello":1}"#).unwrap(), FromWorker::Other(_)));
        assert_eq!(
            parse(r#"{"type":"hotswap:preload","patch":"m.C","ok":false,"error":"no shutdown"}"#).unwrap(),
            FromWorker::Preload(crate::types::wire::PreloadPatch {
                patch: "m.C".into(),
                ok: false,
                error: Some("no shutdown".into()),
                skipped: None,
            })
        );
        assert_eq!(
            parse(r#"{"type":"hotswap:preload","patch":"m.C","ok":false,"skipped":"rescue covers this worker"}"#)
                .unwrap(),
            FromWorker::Preload(crate::types::wire::PreloadPatch {
                patch: "m.C".into(),
                ok: false,
                error: None,
                skipped: Some("rescue covers this worker".into()),
            })
        );
        assert!(parse("{not json").is_err());
    }
}
