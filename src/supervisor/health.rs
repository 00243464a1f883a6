//! `--health-check`: a starting worker that says it is ready counts as
//! ready only once `GET PATH`, sent to it, answers 2xx or 3xx
//! ([`crate::io::health`] runs the check off the event loop). A failure is
//! handled as a missed ready deadline: the worker is killed, and a reload
//! waiting for it fails with the answer as its reason.

use super::worker::Health;
use super::Supervisor;
use crate::io::health::{self, Check, Target};
use crate::sys::listeners::ListenAddr;
use crate::types::{Killed, ReadyVia, WorkerId, WorkerState};

impl Supervisor {
    /// Whether `id`, which just said it is ready (`via`), must pass its
    /// health check first: then the check runs (or already does) and the
    /// worker stays starting until [`Supervisor::on_health_checked`].
    pub(super) fn check_health_first(&mut self, id: WorkerId, via: ReadyVia) -> bool {
        let Some(w) = self.workers.get(&id) else { return false };
        let Some(path) = w.settings().health_check.clone() else { return false };
        if w.state() != WorkerState::Starting {
            return false;
        }
        match w.health() {
            Health::Passed => return false,
            Health::Checking(_) => return true,
            Health::Unchecked => {}
        }
        let Some(listener) = self.sockets.listeners.first() else { return false };
        let target = match &listener.addr {
            ListenAddr::Tcp(a) => Target::tcp(*a),
            ListenAddr::Unix(p) => Target::Unix(p.clone()),
        };
        if self.sockets.slot_sockets.per_slot() && matches!(target, Target::Tcp(_)) {
            // Under --balance a slot's socket gets connections only while
            // the slot has a ready worker: a first worker of its slot
            // cannot be reached before it is ready.
            let slot = w.slot();
            let live = self.workers.values().any(|o| o.slot() == slot && o.state() == WorkerState::Ready);
            if !live {
                tracing::info!(
                    worker = id,
                    "{} health check skipped: slot {slot} has no ready worker, so no connection can reach it \
                     (--balance {})",
                    w.label(),
                    self.sockets.slot_sockets.balance()
                );
                return false;
            }
        }
        let check = Check {
            worker: id,
            name: format!("w{id}"),
            pgid: w.pid().as_raw(),
            target,
            path: path.to_string(),
            timeout: w.settings().health_timeout,
            vary_source: self.sockets.slot_sockets.balance() == crate::options::Balance::Sticky,
        };
        tracing::info!(worker = id, "{} says it is ready ({via}); health check: GET {path}", w.label());
        let handle = health::start(check, self.io.events.clone());
        let Some(w) = self.workers.get_mut(&id) else { return false };
        w.set_health(Health::Checking(via));
        self.timers.add_task(id, std::time::Instant::now(), handle);
        true
    }

    /// A worker's health check ended.
    pub(super) fn on_health_checked(&mut self, id: WorkerId, result: Result<String, String>) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        let Health::Checking(via) = w.health() else { return };
        if w.state() != WorkerState::Starting {
            return;
        }
        match result {
            Ok(answer) => {
                tracing::info!(worker = id, "{} health check passed: {answer}", w.label());
                w.set_health(Health::Passed);
                self.mark_ready(id, via);
            }
            Err(why) => {
                w.set_health(Health::Unchecked);
                // It may already serve (it shares the listening socket):
                // a reload's new worker is drained, not killed, and its old
                // worker serves on. Any other (a first or restarted worker)
                // is killed and restarted after a backoff, as when it
                // misses its ready deadline.
                if self.reloads.running.as_ref().is_some_and(|r| r.is_starting(id)) {
                    tracing::error!(worker = id, "{} failed its health check: {why}; stopping it", w.label());
                    w.set_not_ready(why.clone());
                    self.send_shutdown(id);
                } else {
                    tracing::error!(worker = id, "{} failed its health check: {why}; killing it", w.label());
                    w.kill_not_ready(why.clone(), Killed::HealthCheck);
                }
                self.reload_on_not_ready(id, why);
            }
        }
    }
}
