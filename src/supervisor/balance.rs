//! `--balance slots|sticky`: which slots are live, told to the kernel.
//!
//! A slot is live while it has a ready worker. After every event the
//! supervisor recomputes the live set and, when it changed, rebuilds the
//! reuseport groups' BPF program ([`crate::sys::slots`]): new connections
//! go only to slots whose worker accepts. So a crashed worker's clients are
//! served by the other slots while it backs off (connections already queued
//! on its socket wait for its replacement), and a slot that a smaller pool
//! gives up is left out before its worker is told to go: the worker accepts
//! what is already queued on the slot's socket first ([`DRAIN_MAX`]).

use std::time::{Duration, Instant};

use super::Supervisor;
use crate::types::{Timer, WorkerId, WorkerState};

/// How often a slot being given up is looked at.
const DRAIN_TICK: Duration = Duration::from_millis(20);
/// How long a slot given up stays out of the program before its worker is
/// told to go, at least: a handshake under way when it was left out still
/// lands on its socket.
const DRAIN_MIN: Duration = Duration::from_millis(60);
/// The longest a worker waits for its slot's queue to empty before it is
/// told to go anyway.
pub const DRAIN_MAX: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Tells the kernel which slots are live, if that changed.
    pub(super) fn rebalance(&mut self) {
        if !self.slot_sockets.per_slot() {
            return;
        }
        // The slots hashed over: the serving generation's count, or more
        // once a growing pool's new slots have a ready worker (not before:
        // a client moves when the count changes, so it changes once).
        let ready = self.workers.values().filter(|w| w.state() == WorkerState::Ready);
        let top = ready.map(|w| w.slot() + 1).max().unwrap_or(0);
        let n = (self.settings.workers as usize).max(top).min(self.crash_history.len()).max(1);
        let mut live = vec![false; n];
        for w in self.workers.values() {
            if w.state() == WorkerState::Ready && w.slot() < n {
                live[w.slot()] = true;
            }
        }
        if let Err(e) = self.slot_sockets.apply(n, &live) {
            tracing::error!("{e:#}");
        }
    }

    /// A worker about to be told to go is the last ready one of its slot
    /// (the pool shrinks): its slot is left out of the program first, and it
    /// is told once its queue is empty. True when that is so (the caller
    /// does not tell it now).
    pub(super) fn defer_shutdown(&mut self, id: WorkerId) -> bool {
        if !self.slot_sockets.per_slot() || self.stop.is_some() {
            return false;
        }
        let Some(w) = self.workers.get(&id) else { return false };
        let slot = w.slot();
        let alone = !self.workers.values().any(|o| o.id() != id && o.slot() == slot && o.state() == WorkerState::Ready);
        if w.state() != WorkerState::Ready || !alone {
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
        self.leaving.insert(id, Instant::now());
        self.rebalance();
        self.worker_timer(id, DRAIN_TICK, Timer::SlotDrain(id));
        true
    }

    /// A worker whose slot was left out: told to go once its queue is empty.
    pub(super) fn on_slot_drain(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else {
            self.leaving.remove(&id);
            return;
        };
        let since = *self.leaving.entry(id).or_insert_with(Instant::now);
        let queued = self.slot_sockets.queued(w.slot());
        let waited = since.elapsed();
        if self.stop.is_none() && waited < DRAIN_MAX && (queued > 0 || waited < DRAIN_MIN) {
            self.worker_timer(id, DRAIN_TICK, Timer::SlotDrain(id));
            return;
        }
        if queued > 0 {
            tracing::warn!(
                worker = id,
                "{}: {queued} connections still queued on slot {} after {} ms; stopping it anyway",
                w.label(),
                w.slot(),
                waited.as_millis()
            );
        }
        self.leaving.remove(&id);
        self.send_shutdown(id);
    }
}
