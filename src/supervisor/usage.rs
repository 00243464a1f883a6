//! What each worker uses (memory, CPU), sampled only when someone asks:
//! `hotswap status`, a `/metrics` scrape, or the `--max-memory` check.
//!
//! Memory is read as it is now. CPU use is a rate, so it needs two
//! readings: each sample is kept, per worker, and the percent is taken over
//! the window since the newest earlier sample that is at least
//! [`MIN_WINDOW`] old (a scrape every 15 s gives 15 s windows; `watch
//! hotswap status` 2 s ones). With no earlier sample, it is the average
//! over the worker's life. Nothing is read, and nothing runs, between
//! requests.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::sys::proc_stats::{self, GroupUsage};
use crate::types::WorkerId;

/// The shortest window a CPU percent is measured over, when an older
/// sample exists (ticks are 10 ms: shorter windows are too coarse).
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Samples kept per worker (requests more often than this per
/// [`MIN_WINDOW`] thin out the middle ones).
const KEEP: usize = 16;

/// A worker as the sampler needs it.
pub struct Sampled {
    pub id: WorkerId,
    /// Its pid, which is its process group's id.
    pub pid: i32,
    pub age: Duration,
}

/// One worker's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub group: GroupUsage,
    pub cpu_percent: f64,
}

#[derive(Debug, Default)]
pub struct Usage {
    /// `(when, CPU seconds)` per worker, oldest first.
    history: HashMap<WorkerId, VecDeque<(Instant, f64)>>,
}

impl Usage {
    /// Reads `/proc` once for every worker given; forgets workers not given.
    pub fn sample(&mut self, workers: &[Sampled]) -> HashMap<WorkerId, Figures> {
        let pgids: Vec<i32> = workers.iter().map(|w| w.pid).collect();
        let groups = proc_stats::scan(&pgids);
        let now = Instant::now();
        self.history.retain(|id, _| workers.iter().any(|w| w.id == *id));
        workers
            .iter()
            .map(|w| {
                let group = groups.get(&w.pid).copied().unwrap_or_default();
                let h = self.history.entry(w.id).or_default();
                // The reference: the newest earlier sample at least
                // MIN_WINDOW old, else the oldest, else the worker's start.
                while h.len() >= 2 && now.duration_since(h[1].0) >= MIN_WINDOW {
                    h.pop_front();
                }
                let start = now.checked_sub(w.age).unwrap_or(now);
                let (since, before) = h.front().copied().unwrap_or((start, 0.0));
                let cpu_percent = proc_stats::cpu_percent(before, group.cpu_seconds, (now - since).as_secs_f64());
                h.push_back((now, group.cpu_seconds));
                if h.len() > KEEP {
                    h.remove(1);
                }
                (w.id, Figures { group, cpu_percent })
            })
            .collect()
    }
}
