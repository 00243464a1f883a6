//! What the supervisor hears: one [`Event`] type for everything that can
//! happen, sent over one channel by the parts that watch the outside world
//! (signals, the control socket, worker IPC and notify sockets, the file
//! watcher, timers). The supervisor is the only receiver.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire::{ReplyTx, Request, Subscription};
use super::WorkerId;

#[derive(Debug)]
pub enum Event {
    Signal(i32),
    Control {
        request: Request,
        reply: ReplyTx,
        /// A copy of the client's connection, for requests whose answers
        /// outlive a self-upgrade (`upgrade`, `events`).
        conn: Option<OwnedFd>,
    },
    /// A `hotswap events` client (its connection's copy is handed over on
    /// self-upgrade).
    Subscribe {
        sub: Subscription,
        conn: OwnedFd,
    },
    /// A `hotswap events` client left (its task ended).
    SubscriberLeft,
    Ipc {
        worker: WorkerId,
        msg: FromWorker,
    },
    IpcClosed {
        worker: WorkerId,
    },
    /// A handle a Node process passed (`process.send(msg, socket)`): its
    /// `NODE_HANDLE` message and the fd, already acknowledged.
    IpcHandle {
        worker: WorkerId,
        msg: Value,
        fd: OwnedFd,
    },
    Notify {
        worker: WorkerId,
        note: Notification,
    },
    /// Watched files changed (one debounced burst).
    FilesChanged {
        paths: Vec<PathBuf>,
    },
    /// The new binary answered `upgrade-check` (its version) or failed.
    UpgradeChecked {
        pid: i32,
        result: Result<String, String>,
    },
    Timer(Timer),
    /// The `--max-memory` check's reading: resident bytes per worker.
    MemorySampled {
        rss: std::collections::HashMap<WorkerId, u64>,
    },
    /// A worker's `--health-check` ended: what it answered, or why it failed.
    HealthChecked {
        worker: WorkerId,
        result: Result<String, String>,
    },
    /// What a look at a starting worker's accepts found (or why it could
    /// not look), and what it cost.
    Looked {
        worker: WorkerId,
        report: Box<Result<super::accepts::Report, String>>,
        cost: std::time::Duration,
    },
    /// What a look at a quiescing worker's connections saw (made off the
    /// event loop: it copies every socket of the worker's group).
    Quiesced {
        worker: WorkerId,
        seen: super::quiesce::Seen,
    },
    /// A `/metrics` scrape asks for a snapshot.
    Metrics {
        reply: tokio::sync::oneshot::Sender<Box<super::counters::Snapshot>>,
    },
    /// What the rescue of retiring workers' connections did.
    Rescue(RescueNote),
}

/// What the rescue task tells the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescueNote {
    /// It has taken its first look at this worker's connections: the worker
    /// may be told to stop.
    Looked(WorkerId),
    /// A request caught on a connection the worker closed went to the
    /// serving generation.
    Rescued,
    /// A connection it held was closed unrescued for a limit (the cap,
    /// bytes that are no HTTP/1 request, TLS, HTTP/2, `Upgrade`, a request
    /// too large, no answer from the serving generation).
    GaveUp,
    /// How many connections it holds now.
    Held(usize),
    /// The requests waiting when the last worker exited are counted: the
    /// reload may answer.
    Settled,
    /// Copies of a worker's connections were refused: workers started from
    /// now on are told rescue does not cover them (`HOTSWAP_RESCUE=off`),
    /// so that the preloads' drain patches apply.
    Denied,
}

/// Deadlines; each checks on arrival whether it still applies. Serialized
/// so that a self-upgrade hands the pending ones over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timer {
    /// A starting worker must be ready by now.
    Ready(WorkerId),
    /// `--ready delay:DUR` has passed for this worker.
    AssumeReady(WorkerId),
    /// Time to look whether a starting worker accepts yet.
    AcceptCheck(WorkerId),
    /// A worker proven to accept has said nothing for `--ready auto`'s
    /// settling time: it is ready by its accepts.
    AcceptSettled(WorkerId),
    /// A stopping worker must have exited by now.
    Shutdown(WorkerId),
    /// A stopping worker that is still alive gets the stop signal.
    StopSignal(WorkerId),
    /// A Node cluster worker of an app with its own primary has been
    /// online this long: if it asked for no socket, its primary serves
    /// for it, and it is ready.
    NoListenReady(WorkerId),
    /// A starting worker has waited long: say what it is waiting for.
    ReadyHint(WorkerId),
    /// A new worker of a reload has been ready for its `--min-ready`
    /// window (or its canary trial).
    Proven(WorkerId),
    /// Start a worker in this slot again after a crash.
    Respawn(usize),
    /// A worker whose slot was left out of `--balance`: is its queue empty?
    SlotDrain(WorkerId),
    /// A retiring worker that does not drain: does it answer anything now?
    Quiesce(WorkerId),
    /// Time for `WATCHDOG=1`.
    Watchdog,
    /// Every second: look for orphans to adopt, end those past their
    /// deadline, check that the guardian is alive and reading. (`tick` in
    /// a handed-over state, as images before the rename wrote it.)
    #[serde(rename = "tick")]
    OrphanAndGuardianCheck,
    /// Time to check the workers' memory against `--max-memory`.
    MemoryCheck,
    /// Start the app's own cluster primary again (it exited, or
    /// `hotswap reload --primary` replaces it).
    AppPrimary,
    /// The app's cluster primary, told to stop, must be gone by now.
    AppPrimaryKill,
}

/// A message from a worker's IPC channel, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    /// `{"type":"listening"}` or the bare string `"ready"`.
    Listening,
    /// `{"type":"broadcast","data":...}`: to every other worker.
    Broadcast { data: Value },
    /// `{"type":"send","to":ID,"data":...}`: to one worker.
    Send { to: WorkerId, data: Value },
    /// Node.js passing a handle (the whole `NODE_HANDLE` message); the
    /// channel pairs it with its fd and acknowledges it
    /// ([`Event::IpcHandle`]).
    NodeHandle(Value),
    /// Node.js acknowledging (or not) a handle the primary sent.
    HandleAck { ok: bool },
    /// A message of Node's cluster protocol (`{"cmd":"NODE_CLUSTER",...}`).
    Cluster(Value),
    /// hotswap's own preload telling what it patched:
    /// `{"type":"hotswap:preload","patch":NAME,"ok":BOOL,"error":TEXT}`. Not
    /// the app speaking: it does not count as the worker having spoken.
    Preload(crate::types::wire::PreloadPatch),
    /// Valid JSON that means nothing to hotswap.
    Other(Value),
}

/// What a worker said on its own `NOTIFY_SOCKET` that the supervisor acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    Ready,
    Status(String),
    Stopping,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renamed timers keep the name a handed-over state gives them, so
    /// that older and newer images read each other's deadlines.
    #[test]
    fn renamed_timers_keep_their_handover_names() {
        assert_eq!(serde_json::to_string(&Timer::OrphanAndGuardianCheck).unwrap(), "\"tick\"");
        assert_eq!(serde_json::from_str::<Timer>("\"tick\"").unwrap(), Timer::OrphanAndGuardianCheck);
    }
}
