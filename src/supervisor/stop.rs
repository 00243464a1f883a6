//! Stopping the primary: every worker is told to shut down, and the event
//! loop ends when the last one, and every process the workers left behind
//! ([`super::adopted`]), has exited. A second request forces it. What each
//! request does and how the stop went is decided in [`super::core::stop`].

use super::core::stop::{self, Request, Stop};
use super::Supervisor;
use crate::types::wire::{LifecycleEvent, Reply, ReplyTx};
use crate::types::Killed;

impl Supervisor {
    /// Graceful stop: every worker gets `shutdown`; the loop ends when the
    /// last one has exited. A second request while stopping forces it.
    pub(super) fn begin_stop(&mut self, why: &str, waiter: Option<ReplyTx>) {
        match stop::request(self.stop.is_some(), waiter.is_some()) {
            Request::Join => {
                if let (Some(stop), Some(w)) = (&mut self.stop, waiter) {
                    let _ = w.send(Reply::Progress { message: "already stopping".into() });
                    stop.waiters.push(w);
                }
                return;
            }
            Request::Force => {
                tracing::warn!("{why} again: killing every worker");
                if let Some(stop) = &mut self.stop {
                    stop.forced = true;
                }
                self.kill_all(Killed::ForcedStop);
                return;
            }
            Request::Begin => {}
        }
        let what = stop::announce(self.workers.len());
        tracing::info!("{why}: {what}");
        // Every worker drains at once; SIGKILL at its --shutdown-timeout.
        let budget =
            stop::budget(self.workers.values().map(|w| w.settings().shutdown_timeout), self.settings.shutdown_timeout);
        self.io.systemd.stopping(&what, budget);
        let mut ev = LifecycleEvent::new("stopping");
        ev.message = Some(why.to_string());
        self.io.subscribers.emit(ev);
        self.cancel_reloads("the primary is stopping");
        self.rescue_stop();
        if let Some(w) = &waiter {
            let _ = w.send(Reply::Progress { message: what });
        }
        self.stop = Some(Stop::new(waiter));
        let ids: Vec<_> = self.workers.keys().copied().collect();
        for id in ids {
            self.shut_down(id);
        }
        self.finish_stop_if_done();
    }
}
