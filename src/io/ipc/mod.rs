//! The IPC channel between the primary and one worker.
//!
//! Framing is one JSON value per line, both ways: what Node.js speaks on
//! `NODE_CHANNEL_FD` with `NODE_CHANNEL_SERIALIZATION_MODE=json`. [`Channel`]
//! owns the primary's end of the socketpair in one task: it turns bytes into
//! whole, validated [`FromWorker`](crate::types::event::FromWorker) messages (enforcing [`MAX_LINE`] in one
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
//! and hands both to the supervisor ([`Event::IpcHandle`](crate::types::Event::IpcHandle)).
//!
//! In parts: [`framing`] (bytes into messages, and their parsing),
//! [`to_worker`] (what the primary says), [`channel`] (the supervisor's
//! handle and the writer task) and `reader` (the reader task, with the fds
//! that come with `NODE_HANDLE`).

pub mod channel;
pub mod framing;
mod reader;
pub mod to_worker;

pub use channel::Channel;
pub use framing::{parse, Framer};

/// The longest line accepted from a worker, in bytes.
pub const MAX_LINE: usize = 1 << 20;

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
