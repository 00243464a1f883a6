//! `--max-memory`, decided without `/proc`: which worker to replace, and
//! when. Every [`CHECK_EVERY`] the shell has every worker's resident memory
//! read (off the event loop) and hands the reading here. A ready worker
//! above the limit on [`CHECKS_ABOVE`] checks in a row is replaced, the
//! biggest first, one at a time, never while a reload (or another
//! replacement, or a self-upgrade) runs: the check after it takes over. A
//! worker below the limit starts counting again; one no longer ready is
//! forgotten; one whose reading is missing keeps its count. A replacement
//! that fails leaves the old worker serving, and it is tried again only
//! after another [`CHECKS_ABOVE`] checks.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::types::{WorkerId, WorkerState};

/// How often memory is checked when `--max-memory` is set.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Checks in a row a worker must be above the limit to be replaced.
pub const CHECKS_ABOVE: u32 = 2;

#[derive(Debug, Default)]
pub struct MemoryWatch {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacing {
    pub old: WorkerId,
    pub slot: usize,
    /// `[w3 g1 4242] used 300.0M, above --max-memory 256.0M`.
    pub why: String,
}

/// One worker in a reading: its state, and its memory if it was read.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub id: WorkerId,
    pub state: WorkerState,
    pub rss: Option<u64>,
}

impl MemoryWatch {
    /// Whether to arm the check's timer now: `--max-memory` is set, the
    /// primary is not stopping, and it is not armed already. It is then.
    pub fn arm(&mut self, enabled: bool, stopping: bool) -> bool {
        if !enabled || self.armed || stopping {
            return false;
        }
        self.armed = true;
        true
    }

    /// The check's timer fired: whether to read memory now (the caller
    /// arms the next check with [`MemoryWatch::arm`]).
    pub fn fired(&mut self, enabled: bool, stopping: bool) -> bool {
        self.armed = false;
        enabled && !stopping
    }

    /// A reading of every worker arrived: counts each ready worker above
    /// `limit`, and says which to replace, with what it used (none while
    /// `busy`: a reload or a self-upgrade runs).
    pub fn sampled(&mut self, workers: &[Reading], limit: u64, busy: bool) -> Option<(WorkerId, u64)> {
        let mut over: Vec<(WorkerId, u64)> = Vec::new();
        for w in workers.iter().filter(|w| w.state == WorkerState::Ready) {
            let Some(rss) = w.rss else { continue };
            if rss > limit {
                let n = self.above.entry(w.id).or_default();
                *n += 1;
                if *n >= CHECKS_ABOVE {
                    over.push((w.id, rss));
                }
            } else {
                self.above.remove(&w.id);
            }
        }
        self.above.retain(|id, _| workers.iter().any(|w| w.id == *id && w.state == WorkerState::Ready));
        if busy {
            return None; // The check after it takes over.
        }
        // The biggest first; one at a time.
        let (id, rss) = over.into_iter().max_by_key(|(_, rss)| *rss)?;
        self.above.remove(&id);
        Some((id, rss))
    }

    /// How many checks in a row `id` has been above the limit.
    pub fn above(&self, id: WorkerId) -> u32 {
        self.above.get(&id).copied().unwrap_or(0)
    }

    /// The replacement's reload ended (`ok`: the new worker serves): the
    /// slot's count grows.
    pub fn replaced(&mut self, r: &Replacing, ok: bool) {
        if ok {
            *self.per_slot.entry(r.slot).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests;
