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
//!
//! A worker that nears the limit, or grows fast enough to cross it before
//! the next check, is checked every [`CHECK_FAST`] instead ([`MemoryWatch::next_check`]),
//! so that a fast grower is caught within about `2 × CHECK_FAST` of
//! crossing the limit rather than `2 × CHECK_EVERY`. It still grows while
//! its replacement starts (it is not killed): the overshoot is its growth
//! rate times (`2 × CHECK_FAST` + the replacement's start-up).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::types::{WorkerId, WorkerState};

/// How often memory is checked when `--max-memory` is set.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often while a worker is near the limit or growing toward it.
pub const CHECK_FAST: Duration = Duration::from_millis(250);
/// "Near": this share of the limit, in percent.
pub const NEAR_PERCENT: u64 = 75;
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
    /// Each ready worker's last reading, to see how fast it grows.
    last: HashMap<WorkerId, u64>,
    /// The interval the last reading was taken after.
    interval: Option<Duration>,
    /// Whether some worker is near the limit or growing toward it.
    fast: bool,
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
        let interval = self.interval.unwrap_or(CHECK_EVERY);
        self.fast = false;
        for w in workers.iter().filter(|w| w.state == WorkerState::Ready) {
            let Some(rss) = w.rss else { continue };
            // Near the limit, or growing at a rate that crosses it within
            // one slow interval: check fast.
            // A worker read for the first time grows at a rate not known
            // yet (a new worker warming up): once more, fast.
            let Some(before) = self.last.insert(w.id, rss) else {
                self.fast = true;
                continue_counting(&mut self.above, &mut over, w.id, rss, limit);
                continue;
            };
            let grew = rss.saturating_sub(before);
            let per_slow = (grew as u128 * CHECK_EVERY.as_millis() / interval.as_millis().max(1)) as u64;
            if rss.saturating_mul(100) >= limit.saturating_mul(NEAR_PERCENT) || rss.saturating_add(per_slow) > limit {
                self.fast = true;
            }
            continue_counting(&mut self.above, &mut over, w.id, rss, limit);
        }
        let ready = |id: &WorkerId| workers.iter().any(|w| w.id == *id && w.state == WorkerState::Ready);
        self.above.retain(|id, _| ready(id));
        self.last.retain(|id, _| ready(id));
        if busy {
            return None; // The check after it takes over.
        }
        // The biggest first; one at a time.
        let (id, rss) = over.into_iter().max_by_key(|(_, rss)| *rss)?;
        self.above.remove(&id);
        Some((id, rss))
    }

    /// When to check next, and so the interval the next reading follows:
    /// [`CHECK_FAST`] before the first reading, after a worker's first
    /// reading and while a worker nears the limit or grows toward it,
    /// [`CHECK_EVERY`] otherwise.
    pub fn next_check(&mut self) -> Duration {
        let next = if self.fast || self.interval.is_none() { CHECK_FAST } else { CHECK_EVERY };
        self.interval = Some(next);
        next
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

/// One more check in a row above `limit` for `id` (a worker due for
/// replacement goes into `over`), or the count starts again below it.
fn continue_counting(
    above: &mut HashMap<WorkerId, u32>,
    over: &mut Vec<(WorkerId, u64)>,
    id: WorkerId,
    rss: u64,
    limit: u64,
) {
    if rss > limit {
        let n = above.entry(id).or_default();
        *n += 1;
        if *n >= CHECKS_ABOVE {
            over.push((id, rss));
        }
    } else {
        above.remove(&id);
    }
}

#[cfg(test)]
mod tests;
