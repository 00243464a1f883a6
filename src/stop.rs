//! Stopping the primary: every worker is told to shut down, and the event
//! loop ends when the last one has exited. A second request forces it.

use crate::control::{Reply, ReplyTx};
use crate::events::LifecycleEvent;
use crate::supervisor::Supervisor;

/// A stop in progress.
pub(crate) struct Stop {
    pub(crate) waiters: Vec<ReplyTx>,
    pub(crate) forced: bool,
}

impl Supervisor {
    /// Graceful stop: every worker gets `shutdown`; the loop ends when the
    /// last one has exited. A second request while stopping forces it.
    pub(crate) fn begin_stop(&mut self, why: &str, waiter: Option<ReplyTx>) {
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
        tracing::info!("{why}: stopping {} workers", self.workers.len());
        self.notifier.stopping(&format!("stopping {} workers", self.workers.len()));
        let mut ev = LifecycleEvent::new("stopping");
        ev.message = Some(why.to_string());
        self.watchers.emit(ev);
        self.cancel_reloads("the primary is stopping");
        let mut waiters = Vec::new();
        if let Some(w) = waiter {
            let _ = w.send(Reply::Progress { message: format!("stopping {} workers", self.workers.len()) });
            waiters.push(w);
        }
        self.stop = Some(Stop { waiters, forced: false });
        let ids: Vec<_> = self.workers.keys().copied().collect();
        for id in ids {
            self.shut_down(id);
        }
        if self.workers.is_empty() {
            self.exit = Some((0, "stopped".into()));
        }
    }

    pub(crate) fn kill_all(&mut self) {
        for w in self.workers.values_mut() {
            w.kill();
        }
    }
}
