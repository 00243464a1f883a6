//! `--balance slots|sticky`: which slots are live, told to the kernel.
//!
//! After every event the supervisor recomputes the live set
//! ([`super::core::balance`] decides it: a slot is live while it has a
//! ready worker) and, when it changed, rebuilds the reuseport groups' BPF
//! program ([`crate::sys::slots`]): new connections go only to slots whose
//! worker accepts. So a crashed worker's clients are served by the other
//! slots while it backs off (connections already queued on its socket wait
//! for its replacement), and a slot that a smaller pool gives up is left
//! out before its worker is told to go: the worker accepts what is already
//! queued on the slot's socket first
//! ([`DRAIN_MAX`](super::core::balance::DRAIN_MAX)).

use std::time::Instant;

use super::core::balance::{self, Drain};
use super::Supervisor;
use crate::types::{Timer, WorkerId, WorkerState};

impl Supervisor {
    /// Tells the kernel which slots are live, if that changed.
    pub(super) fn rebalance(&mut self) {
        if !self.sockets.slot_sockets.per_slot() {
            return;
        }
        let ready = self.workers.values().filter(|w| w.state() == WorkerState::Ready).map(|w| w.slot());
        let (n, live) = balance::live_slots(ready, self.settings.workers as usize, self.crash_history.len());
        if let Err(e) = self.sockets.slot_sockets.apply(n, &live) {
            tracing::error!("{e:#}");
        }
    }

    /// A worker about to be told to go is the last ready one of its slot
    /// (the pool shrinks): its slot is left out of the program first, and it
    /// is told once its queue is empty. True when that is so (the caller
    /// does not tell it now).
    pub(super) fn defer_shutdown(&mut self, id: WorkerId) -> bool {
        let Some(w) = self.workers.get(&id) else { return false };
        let slot = w.slot();
        let last = !self.workers.values().any(|o| o.id() != id && o.slot() == slot && o.state() == WorkerState::Ready);
        let ready = w.state() == WorkerState::Ready;
        if !balance::leaves_first(self.sockets.slot_sockets.per_slot(), self.stop.is_some(), ready, last) {
            return false;
        }
        tracing::info!(
            worker = id,
            "{}: slot {slot} is left out of the balance; it stops once it has accepted what is queued there",
            w.label()
        );
        if let Some(w) = self.workers.get_mut(&id) {
            w.leave();
        }
        let look = self.leaving.begin(id, Instant::now());
        self.rebalance();
        self.worker_timer(id, look, Timer::SlotDrain(id));
        true
    }

    /// A worker whose slot was left out: told to go once its queue is empty.
    pub(super) fn on_slot_drain(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else {
            self.leaving.gone(id);
            return;
        };
        let queued = self.sockets.slot_sockets.queued(w.slot());
        match self.leaving.look(id, queued, self.stop.is_some(), Instant::now()) {
            Drain::Again(after) => self.worker_timer(id, after, Timer::SlotDrain(id)),
            Drain::Go { queued, waited } => {
                if queued > 0 {
                    tracing::warn!(
                        worker = id,
                        "{}: {queued} connections still queued on slot {} after {} ms; stopping it anyway",
                        w.label(),
                        w.slot(),
                        waited.as_millis()
                    );
                }
                self.send_shutdown(id);
            }
        }
    }
}
