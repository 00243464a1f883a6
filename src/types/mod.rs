//! Leaf types: the vocabulary every other part speaks, depending on no
//! other part of the crate.
//!
//! - [`WorkerId`], [`WorkerState`], [`ReadyVia`], [`Exit`]: what a worker is
//!   and how it ended.
//! - [`event`]: the [`Event`]s that the outside world sends
//!   the supervisor, and its [`Timer`]s.
//! - [`wire`]: what goes over the control socket (requests, replies,
//!   status, lifecycle events), shared by the server and the client.
//! - [`listen`]: a `--listen` address as written.
//! - [`surge`]: how many extra workers a reload may start at once.
//! - [`counters`]: what the primary counts over its life, for `/metrics`.
//! - [`accepts`]: what a look at a starting worker's accepts found.

pub mod accepts;
pub mod balance;
pub mod counters;
pub mod event;
pub mod listen;
pub mod quiesce;
pub mod surge;
pub mod wire;

use serde::{Deserialize, Serialize};

pub use event::{Event, Timer};

/// The most worker slots `--balance slots|sticky` handles: its BPF program
/// has two instructions per slot, and the kernel takes at most 4096.
pub const MAX_SLOTS: usize = 1024;

/// Unique for the primary's lifetime, never reused (like Node's
/// `cluster.worker.id`).
pub type WorkerId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Started, not yet ready.
    Starting,
    /// Reported ready: serving.
    Ready,
    /// Told to shut down (or killed); waiting for it to exit.
    Stopping,
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Stopping => "stopping",
        })
    }
}

/// How a worker became ready; it decides how the worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadyVia {
    Ipc,
    /// Node's cluster `listening` message.
    Cluster,
    Notify,
    /// A process of its group was seen accepting on its listening sockets
    /// (`--ready accepting` or `auto`).
    Accepting,
    /// `--ready delay:DUR` or `none`.
    Assumed,
}

impl ReadyVia {
    /// Its short name in `hotswap status` and `hotswap events`.
    pub fn name(self) -> &'static str {
        match self {
            ReadyVia::Ipc => "ipc",
            ReadyVia::Cluster => "cluster",
            ReadyVia::Notify => "notify",
            ReadyVia::Accepting => "accepting",
            ReadyVia::Assumed => "assumed",
        }
    }
}

impl std::fmt::Display for ReadyVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadyVia::Ipc => "said so over IPC",
            ReadyVia::Cluster => "its server listens",
            ReadyVia::Notify => "sent READY=1",
            ReadyVia::Accepting => "it accepts",
            ReadyVia::Assumed => "assumed",
        })
    }
}

/// What the supervisor tracks of a Node.js cluster worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// `queryServer`s answered with a socket.
    pub served: u32,
    /// `listening` messages: servers up.
    pub listening: u32,
    /// Sequence number of the primary's own cluster messages.
    pub seq: u64,
    /// Whether the stop signal went out (it is sent once).
    pub signalled: bool,
    /// Every server listens, but that does not make it ready: it waits
    /// for its own `"ready"`/`listening` (PM2's `wait_ready`, `--ready ipc`).
    #[serde(default)]
    pub awaiting_own: bool,
}

/// Why hotswap sent a worker SIGKILL: the `exit` event's `killed` field
/// (`hotswap events --json`), so that a script (or a test) tells a worker
/// killed at a deadline from one that exited on its own without reading
/// the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Killed {
    /// It was not ready within `--ready-timeout`.
    ReadyTimeout,
    /// It failed its `--health-check` before it was ready.
    HealthCheck,
    /// It was told to go and had not exited within `--shutdown-timeout`.
    ShutdownTimeout,
    /// It was still starting when its reload (or `--max-memory`
    /// replacement) failed.
    Abandoned,
    /// The stop was forced (a second SIGTERM or SIGINT).
    ForcedStop,
    /// The primary gave up (its first generation cannot start) and took
    /// every worker along.
    PrimaryGaveUp,
}

impl Killed {
    /// The name the `exit` event gives it.
    pub fn name(self) -> &'static str {
        match self {
            Killed::ReadyTimeout => "ready-timeout",
            Killed::HealthCheck => "health-check",
            Killed::ShutdownTimeout => "shutdown-timeout",
            Killed::Abandoned => "abandoned",
            Killed::ForcedStop => "forced-stop",
            Killed::PrimaryGaveUp => "primary-gave-up",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(nix::sys::signal::Signal),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => write!(f, "was killed by {s}"),
        }
    }
}

/// `[w3 g2 1234]`: how a worker is named in every log line.
pub fn label(id: WorkerId, generation: u64, pid: i32) -> String {
    format!("[w{id} g{generation} {pid}]")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `1 worker`, `2 workers`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
