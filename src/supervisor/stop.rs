//! Stopping the primary: every worker is told to shut down, and the event
//! loop ends when the last one, and every process the workers left behind
//! ([`super::adopted`]), has exited. A second request forces it.

use super::Supervisor;
use crate::types::wire::{LifecycleEvent, Reply, ReplyTx};

/// What a stop may take beyond the workers' `--shutdown-timeout`, asked of
/// systemd with `STOPPING=1` (adopted processes get `--stop-signal` then
/// SIGKILL within the same deadline; the rest is the primary's own exit).
pub(super) const STOP_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// A stop in progress.
pub(super) struct Stop {
    pub(super) waiters: Vec<ReplyTx>,
    pub(super) forced: bool,
    /// Workers killed at `--shutdown-timeout` while stopping (a worker that
    /// was still starting is not counted: nothing of it was drained).
    pub(super) killed: u32,
    /// Adopted processes (workers' daemons) killed at their deadline while
    /// stopping: they ignored `--stop-signal` as such a worker ignores
    /// `shutdown`, and the operator hears of both.
    pub(super) adopted_killed: u32,
}

fn processes(n: usize) -> &'static str {
    if n == 1 {
        "process"
    } else {
        "processes"
    }
}

impl Stop {
    /// How the stop went, for `hotswap stop` and the log; `None` when
    /// nothing had to be killed.
    pub(super) fn kills(&self) -> Option<String> {
        use crate::types::plural;
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
}

impl Supervisor {
    /// Graceful stop: every worker gets `shutdown`; the loop ends when the
    /// last one has exited. A second request while stopping forces it.
    pub(super) fn begin_stop(&mut self, why: &str, waiter: Option<ReplyTx>) {
        if let Some(stop) = &mut self.stop {
            if let Some(w) = waiter {
                let _ = w.send(Reply::Progress { message: "already stopping".into() });
                stop.waiters.push(w);
                return;
            }
            tracing::warn!("{why} again: killing every worker");
            stop.forced = true;
            self.kill_all();
            return;
        }
        let n = self.workers.len();
        let what = format!("stopping {n} {}", crate::types::plural(n, "worker"));
        tracing::info!("{why}: {what}");
        // Every worker drains at once; SIGKILL at its --shutdown-timeout.
        let drain = self.workers.values().map(|w| w.settings().shutdown_timeout).max().unwrap_or_default();
        self.systemd.stopping(&what, drain.max(self.settings.shutdown_timeout) + STOP_MARGIN);
        let mut ev = LifecycleEvent::new("stopping");
        ev.message = Some(why.to_string());
        self.subscribers.emit(ev);
        self.cancel_reloads("the primary is stopping");
        self.rescue_stop();
        let mut waiters = Vec::new();
        if let Some(w) = waiter {
            let _ = w.send(Reply::Progress { message: what });
            waiters.push(w);
        }
        self.stop = Some(Stop { waiters, forced: false, killed: 0, adopted_killed: 0 });
        let ids: Vec<_> = self.workers.keys().copied().collect();
        for id in ids {
            self.shut_down(id);
        }
        self.finish_stop_if_done();
    }
}
