//! `--max-memory`: a worker whose process group stays above the limit is
//! replaced, the way a reload replaces it (a new worker in its slot, ready
//! before the old one is told to drain), never killed.
//!
//! Every [`super::core::memory::CHECK_EVERY`] the primary has every worker's resident memory
//! read (one pass over `/proc`, off the event loop, by
//! [`crate::io::usage`]); [`super::core::memory`] decides which worker to
//! replace (above the limit on [`CHECKS_ABOVE`] checks in a row, the
//! biggest first, never while a reload runs), and the replacement is a
//! reload restricted to its slot ([`Supervisor::start_replacement`]).

use std::collections::HashMap;

use super::core::memory::{Reading, Replacing, CHECKS_ABOVE};
use super::Supervisor;
use crate::io::usage::{Ask, Want};
use crate::types::wire::{fmt_bytes, LifecycleEvent};
use crate::types::{Timer, WorkerId};

impl Supervisor {
    /// Starts the periodic check if `--max-memory` is set and it is not
    /// running (at start, and after a reload that set it in the config).
    pub(super) fn arm_memory_check(&mut self) {
        if self.memory.arm(self.settings.max_memory.is_some(), self.stop.is_some()) {
            let next = self.memory.next_check();
            self.after(next, Timer::MemoryCheck);
        }
    }

    pub(super) fn on_memory_check(&mut self) {
        if !self.memory.fired(self.settings.max_memory.is_some(), self.stop.is_some()) {
            return;
        }
        self.arm_memory_check();
        // Read off the event loop; the answer is an Event::MemorySampled.
        let _ = self.metrics.sampler.send(Ask { workers: self.sampled(), want: Want::MemoryCheck });
    }

    /// The check's reading arrived: count, and replace the biggest worker
    /// above the limit for long enough.
    pub(super) fn on_memory_sampled(&mut self, rss: HashMap<WorkerId, u64>) {
        let Some(limit) = self.settings.max_memory else { return };
        if self.stop.is_some() {
            return;
        }
        let readings: Vec<Reading> = self
            .workers
            .values()
            .map(|w| Reading { id: w.id(), state: w.state(), rss: rss.get(&w.id()).copied() })
            .collect();
        let busy = self.reloads.running.is_some() || self.upgrade.in_flight.is_some();
        let replace = self.memory.sampled(&readings, limit, busy);
        for r in &readings {
            let n = self.memory.above(r.id);
            if let (Some(rss), true) = (r.rss, n > 0) {
                tracing::debug!(worker = r.id, "w{} uses {}, above --max-memory ({n})", r.id, fmt_bytes(rss));
            }
        }
        let Some((id, rss)) = replace else { return };
        let w = &self.workers[&id];
        let why = format!("{} used {}, above --max-memory {}", w.label(), fmt_bytes(rss), fmt_bytes(limit));
        tracing::warn!(worker = id, "{why} on {CHECKS_ABOVE} checks in a row; replacing it");
        let mut ev = LifecycleEvent::new("max-memory");
        ev.worker = Some(id);
        ev.pid = Some(w.pid().as_raw());
        ev.generation = Some(w.generation());
        ev.message = Some(format!("{why}; replacing it"));
        self.io.subscribers.emit(ev);
        self.memory.replacing = Some(Replacing { old: id, slot: w.slot(), why });
        self.start_replacement(id);
    }

    /// The replacement's reload ended (`ok`: the new worker serves and the
    /// old one is gone).
    pub(super) fn replaced_for_memory(&mut self, r: Replacing, ok: bool, message: &str) {
        let mut ev = LifecycleEvent::new(if ok { "max-memory-replaced" } else { "max-memory-failed" });
        ev.worker = Some(r.old);
        ev.message = Some(format!("{}: {message}", r.why));
        self.io.subscribers.emit(ev);
        self.memory.replaced(&r, ok);
        if ok {
            self.metrics.counters.restarts_max_memory += 1;
            tracing::info!(worker = r.old, "replaced for memory (slot {}): {}", r.slot, r.why);
        } else {
            tracing::error!(worker = r.old, "replacing it for memory failed ({}): {message}", r.why);
        }
        self.notify_status();
    }

    /// Whether the running reload is a memory replacement.
    pub(super) fn replacing_for_memory(&self) -> bool {
        self.memory.replacing.is_some()
    }
}
