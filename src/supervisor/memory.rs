//! `--max-memory`: a worker whose process group stays above the limit is
//! replaced, the way a reload replaces it (a new worker in its slot, ready
//! before the old one is told to drain), never killed.
//!
//! Every [`CHECK_EVERY`] the primary has every worker's resident memory
//! read (one pass over `/proc`, off the event loop, by [`crate::io::usage`]); a ready worker
//! above the limit on [`CHECKS_ABOVE`] checks in a row is replaced by a
//! reload restricted to its slot ([`Supervisor::start_replacement`]), one
//! worker at a time, never while a reload (or another replacement) runs:
//! the check after it ends takes over. A replacement whose new worker fails
//! leaves the old one serving; it is tried again after another
//! [`CHECKS_ABOVE`] checks.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::Supervisor;
use crate::io::usage::{Ask, Want};
use crate::types::wire::{fmt_bytes, LifecycleEvent};
use crate::types::{Timer, WorkerId, WorkerState};

/// How often memory is checked when `--max-memory` is set.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Checks in a row a worker must be above the limit to be replaced.
pub const CHECKS_ABOVE: u32 = 2;

#[derive(Debug, Default)]
pub(super) struct MemoryWatch {
    /// Whether a check is due (its timer runs).
    armed: bool,
    /// Checks in a row each worker was above the limit.
    above: HashMap<WorkerId, u32>,
    /// Replacements for memory, per slot (shown in status).
    pub per_slot: BTreeMap<usize, u32>,
    /// The running reload is the replacement of this worker (shown in
    /// status).
    pub replacing: Option<Replacing>,
}

#[derive(Debug, Clone)]
pub(super) struct Replacing {
    pub old: WorkerId,
    pub slot: usize,
    /// `[w3 g1 4242] used 300.0M, above --max-memory 256.0M`.
    pub why: String,
}

impl Supervisor {
    /// Starts the periodic check if `--max-memory` is set and it is not
    /// running (at start, and after a reload that set it in the config).
    pub(super) fn arm_memory_check(&mut self) {
        if self.settings.max_memory.is_some() && !self.memory.armed && self.stop.is_none() {
            self.memory.armed = true;
            self.after(CHECK_EVERY, Timer::MemoryCheck);
        }
    }

    pub(super) fn on_memory_check(&mut self) {
        self.memory.armed = false;
        if self.settings.max_memory.is_none() || self.stop.is_some() {
            return;
        }
        self.arm_memory_check();
        // Read off the event loop; the answer is an Event::MemorySampled.
        let _ = self.sampler.send(Ask { workers: self.sampled(), want: Want::MemoryCheck });
    }

    /// The check's reading arrived: count, and replace the biggest worker
    /// above the limit for long enough.
    pub(super) fn on_memory_sampled(&mut self, rss: HashMap<WorkerId, u64>) {
        let Some(limit) = self.settings.max_memory else { return };
        if self.stop.is_some() {
            return;
        }
        let mut over: Vec<(WorkerId, u64)> = Vec::new();
        for w in self.workers.values().filter(|w| w.state() == WorkerState::Ready) {
            let Some(&rss) = rss.get(&w.id()) else { continue };
            if rss > limit {
                let n = self.memory.above.entry(w.id()).or_default();
                *n += 1;
                tracing::debug!(worker = w.id(), "{} uses {}, above --max-memory ({n})", w.label(), fmt_bytes(rss));
                if *n >= CHECKS_ABOVE {
                    over.push((w.id(), rss));
                }
            } else {
                self.memory.above.remove(&w.id());
            }
        }
        let workers = &self.workers;
        self.memory.above.retain(|id, _| workers.get(id).is_some_and(|w| w.state() == WorkerState::Ready));
        if self.reload.is_some() || self.upgrade.is_some() {
            return; // The check after it takes over.
        }
        // The biggest first; one at a time.
        let Some((id, rss)) = over.into_iter().max_by_key(|(_, rss)| *rss) else { return };
        let w = &self.workers[&id];
        let why = format!("{} used {}, above --max-memory {}", w.label(), fmt_bytes(rss), fmt_bytes(limit));
        tracing::warn!(worker = id, "{why} on {CHECKS_ABOVE} checks in a row; replacing it");
        let mut ev = LifecycleEvent::new("max-memory");
        ev.worker = Some(id);
        ev.pid = Some(w.pid().as_raw());
        ev.generation = Some(w.generation());
        ev.message = Some(format!("{why}; replacing it"));
        self.subscribers.emit(ev);
        self.memory.above.remove(&id);
        self.memory.replacing = Some(Replacing { old: id, slot: w.slot(), why });
        self.start_replacement(id);
    }

    /// The replacement's reload ended (`ok`: the new worker serves and the
    /// old one is gone).
    pub(super) fn replaced_for_memory(&mut self, r: Replacing, ok: bool, message: &str) {
        let mut ev = LifecycleEvent::new(if ok { "max-memory-replaced" } else { "max-memory-failed" });
        ev.worker = Some(r.old);
        ev.message = Some(format!("{}: {message}", r.why));
        self.subscribers.emit(ev);
        if ok {
            *self.memory.per_slot.entry(r.slot).or_default() += 1;
            self.counters.restarts_max_memory += 1;
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
