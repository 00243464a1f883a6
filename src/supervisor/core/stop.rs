//! Stopping, decided without a process: what a stop request does, how a
//! worker is asked to go and when it is killed, and how the stop went.
//!
//! A worker is asked to drain the way it understands: a Node.js cluster
//! worker by Node's own `disconnect` (then `--stop-signal` halfway to its
//! `--shutdown-timeout`, if its channel never closes), a worker that speaks
//! the IPC protocol by `shutdown`, any other by `--stop-signal` to its main
//! process, as systemd would. At `--shutdown-timeout` it is killed
//! (SIGKILL to its process group), once. A stop ends when every worker and
//! every process they left behind has exited: cleanly (exit code 0) only if
//! nothing had to be killed and it was not forced by a second request.

use std::time::Duration;

use crate::options::ReadyMode;
use crate::types::wire::{Reply, ReplyTx};
use crate::types::{plural, ReadyVia, Timer, WorkerId, WorkerState};

/// What a stop may take beyond the workers' `--shutdown-timeout`, asked of
/// systemd with `STOPPING=1` (adopted processes get `--stop-signal` then
/// SIGKILL within the same deadline; the rest is the primary's own exit).
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// A stop in progress.
#[derive(Debug, Default)]
pub struct Stop {
    /// The `hotswap stop` clients waiting for how it went.
    pub waiters: Vec<ReplyTx>,
    /// A second request forced it: every worker was killed.
    pub forced: bool,
    /// Workers killed at `--shutdown-timeout` while stopping (a worker that
    /// was still starting is not counted: nothing of it was drained).
    pub killed: u32,
    /// Adopted processes (workers' daemons) killed at their deadline while
    /// stopping: they ignored `--stop-signal` as such a worker ignores
    /// `shutdown`, and the operator hears of both.
    pub adopted_killed: u32,
}

/// What a stop request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The first: every worker is told to drain.
    Begin,
    /// A client asks while the primary stops: it waits for the same end.
    Join,
    /// A signal while the primary stops: every worker is killed now.
    Force,
}

/// What a stop request (`client`: from `hotswap stop`, else a signal) does
/// while `stopping` or not.
pub fn request(stopping: bool, client: bool) -> Request {
    match (stopping, client) {
        (false, _) => Request::Begin,
        (true, true) => Request::Join,
        (true, false) => Request::Force,
    }
}

/// `stopping 3 workers`.
pub fn announce(workers: usize) -> String {
    format!("stopping {workers} {}", plural(workers, "worker"))
}

/// How long systemd is told the stop may take: every worker drains at
/// once, so the longest `--shutdown-timeout` among them (or the serving
/// one's), plus [`STOP_MARGIN`].
pub fn budget(workers: impl IntoIterator<Item = Duration>, serving: Duration) -> Duration {
    workers.into_iter().max().unwrap_or_default().max(serving) + STOP_MARGIN
}

/// How a worker is asked to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Node's cluster `disconnect` (and `shutdown` too if it announced its
    /// readiness itself); its channel stays open on the primary's side.
    Node { shutdown: bool },
    /// `shutdown` on its IPC channel, which is then closed.
    Ipc,
    /// `--stop-signal` to its main process.
    Signal,
}

impl Way {
    /// How to ask a worker to drain: `node` (a cluster worker), with its
    /// IPC channel `open` or not, ready `via` something (or still starting,
    /// under readiness `mode`, having `spoke` on its channel or not).
    pub fn of(node: bool, open: bool, via: Option<ReadyVia>, mode: ReadyMode, spoke: bool) -> Way {
        if node && open {
            return Way::Node { shutdown: via == Some(ReadyVia::Ipc) };
        }
        if open && speaks_ipc(via, mode, spoke) {
            Way::Ipc
        } else {
            Way::Signal
        }
    }
}

/// Whether a worker listens to `shutdown`: one ready by its own IPC
/// message; one still starting if its readiness mode uses IPC (under
/// `auto`, only if it said something there: a starting worker that never
/// spoke IPC is not taken for one that listens to it).
fn speaks_ipc(via: Option<ReadyVia>, mode: ReadyMode, spoke: bool) -> bool {
    match via {
        Some(via) => via == ReadyVia::Ipc,
        None if mode == ReadyMode::Auto => spoke,
        None => mode.uses_ipc(),
    }
}

/// The deadlines of a worker told to drain: killed at its
/// `--shutdown-timeout`; a Node cluster worker, whose channel may never
/// close (a connection that never ends), gets `--stop-signal` halfway.
pub fn deadlines(id: WorkerId, timeout: Duration, node: bool) -> Vec<(Duration, Timer)> {
    let mut d = vec![(timeout, Timer::Shutdown(id))];
    if node {
        d.push((timeout / 2, Timer::StopSignal(id)));
    }
    d
}

/// Whether a worker whose `--shutdown-timeout` passed is killed: one that
/// is still stopping and was not killed already.
pub fn kill_at_deadline(state: WorkerState, killed: bool) -> bool {
    state == WorkerState::Stopping && !killed
}

fn processes(n: usize) -> &'static str {
    if n == 1 {
        "process"
    } else {
        "processes"
    }
}

impl Stop {
    pub fn new(waiter: Option<ReplyTx>) -> Stop {
        Stop { waiters: waiter.into_iter().collect(), ..Stop::default() }
    }

    /// How the stop went, for `hotswap stop` and the log; `None` when
    /// nothing had to be killed.
    pub fn kills(&self) -> Option<String> {
        let (w, a) = (self.killed as usize, self.adopted_killed as usize);
        Some(match (w, a) {
            (0, 0) => return None,
            (w, 0) => format!("{w} {} had to be killed instead of exiting by itself", plural(w, "worker")),
            (0, a) => format!(
                "{a} adopted {} (left by workers) had to be killed instead of exiting on --stop-signal",
                processes(a)
            ),
            (w, a) => format!(
                "{} processes had to be killed instead of exiting by themselves: {w} {} (at --shutdown-timeout) \
                 and {a} adopted {} (left by workers)",
                w + a,
                plural(w, "worker"),
                processes(a)
            ),
        })
    }

    /// The primary's exit code and message once everything is gone: 0 and
    /// `stopped` for a clean stop; 1 when something had to be killed (as
    /// `hotswap stop` says) or the stop was forced.
    pub fn outcome(&self) -> (i32, String) {
        let kills = self.kills();
        let code = if self.forced || kills.is_some() { 1 } else { 0 };
        let message = match &kills {
            None => "stopped".to_string(),
            Some(k) => format!("stopped, but {k}"),
        };
        (code, message)
    }

    /// What each `hotswap stop` client hears at the end.
    pub fn reply(&self) -> Reply {
        match self.outcome() {
            (0, message) => Reply::Done { message },
            (_, error) => Reply::Error { error },
        }
    }
}

#[cfg(test)]
mod tests;
