//! `--balance slots|sticky`, decided without a socket: which slots are live,
//! whether a worker's slot is left out before it is told to go, and when a
//! worker whose slot was left out is told.
//!
//! A slot is live while it has a ready worker. The slots hashed over are
//! the serving generation's count, or more once a growing pool's new slots
//! have a ready worker (not before: a client moves when the count changes,
//! so it changes once). A worker about to be told to go that is the last
//! ready one of its slot (the pool shrinks) leaves first: its slot is left
//! out, and it is told once the slot's queue is empty (after [`DRAIN_MIN`]
//! at least, [`DRAIN_MAX`] at most), or at once when the primary stops.
//! A leaving worker that exits on its own is forgotten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::types::WorkerId;

/// How often a slot being given up is looked at.
pub const DRAIN_TICK: Duration = Duration::from_millis(20);
/// How long a slot given up stays out of the program before its worker is
/// told to go, at least: a handshake under way when it was left out still
/// lands on its socket.
pub const DRAIN_MIN: Duration = Duration::from_millis(60);
/// The longest a worker waits for its slot's queue to empty before it is
/// told to go anyway.
pub const DRAIN_MAX: Duration = Duration::from_secs(2);

/// The slots hashed over and which of them are live, from the slots of the
/// ready workers, the serving generation's worker count and how many slots
/// there are.
pub fn live_slots(ready: impl IntoIterator<Item = usize>, workers: usize, slots: usize) -> (usize, Vec<bool>) {
    let ready: Vec<usize> = ready.into_iter().collect();
    let top = ready.iter().map(|s| s + 1).max().unwrap_or(0);
    let n = workers.max(top).min(slots).max(1);
    let mut live = vec![false; n];
    for s in ready.into_iter().filter(|&s| s < n) {
        live[s] = true;
    }
    (n, live)
}

/// Whether a worker about to be told to go leaves its slot first: under
/// `--balance slots|sticky` (`per_slot`), not while stopping, for a ready
/// worker that is the `last` ready one of its slot.
pub fn leaves_first(per_slot: bool, stopping: bool, ready: bool, last: bool) -> bool {
    per_slot && !stopping && ready && last
}

/// What to do about a leaving worker, looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Look again after this long.
    Again(Duration),
    /// Tell it to go: its slot's queue holds `queued` connections (none,
    /// unless it waited [`DRAIN_MAX`] or the primary stops), after `waited`.
    Go { queued: u32, waited: Duration },
}

/// The workers whose slot was left out, waiting for its queue to empty
/// before they are told to go (since when).
#[derive(Debug, Default)]
pub struct Leaving {
    since: HashMap<WorkerId, Instant>,
}

impl Leaving {
    /// `id`'s slot was left out at `now`; look at it after [`DRAIN_TICK`].
    pub fn begin(&mut self, id: WorkerId, now: Instant) -> Duration {
        self.since.insert(id, now);
        DRAIN_TICK
    }

    /// A look at a leaving worker whose slot's queue holds `queued`.
    pub fn look(&mut self, id: WorkerId, queued: u32, stopping: bool, now: Instant) -> Drain {
        let since = *self.since.entry(id).or_insert(now);
        let waited = now.saturating_duration_since(since);
        if !stopping && waited < DRAIN_MAX && (queued > 0 || waited < DRAIN_MIN) {
            return Drain::Again(DRAIN_TICK);
        }
        self.since.remove(&id);
        Drain::Go { queued, waited }
    }

    /// The worker exited (on its own, or it was killed): forgotten, since
    /// its looks were cancelled with it.
    pub fn gone(&mut self, id: WorkerId) {
        self.since.remove(&id);
    }

    /// How many workers are leaving.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.since.len()
    }
}

#[cfg(test)]
mod tests;
