//! What each worker uses (memory, CPU), sampled off the event loop and only
//! when someone asks: `hotswap status`, a `/metrics` scrape, or the
//! `--max-memory` check.
//!
//! The supervisor hands this task what it knows (the status without
//! figures, the workers' pids) and goes on; the task reads `/proc` on the
//! blocking pool ([`proc_stats::scan`]: one pass over every process, which
//! takes milliseconds, more on a loaded machine), fills in the figures and
//! answers the client itself. Requests that arrive while a pass runs share
//! the next one, so a flood of status requests costs one pass at a time.
//!
//! Memory is read as it is now. CPU use is a rate, so it needs two
//! readings: each sample is kept, per worker, and the percent is taken over
//! the window since the newest earlier sample that is at least
//! [`MIN_WINDOW`] old (a scrape every 15 s gives 15 s windows; `watch
//! hotswap status` 2 s ones). With no earlier sample, it is the average
//! over the worker's life.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::sys::proc_stats::{self, GroupUsage};
use crate::types::counters::{Counters, ProcessUsage, Snapshot};
use crate::types::wire::{Reply, ReplyTx, Status};
use crate::types::{Event, WorkerId};

/// The shortest window a CPU percent is measured over, when an older
/// sample exists (ticks are 10 ms: shorter windows are too coarse).
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Samples kept per worker (requests more often than this per
/// [`MIN_WINDOW`] thin out the middle ones).
pub const KEEP: usize = 16;

/// A worker as the sampler needs it.
#[derive(Debug, Clone, Copy)]
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

/// Who asked, and where the answer goes.
pub enum Want {
    /// `hotswap status`: the status, figures filled in, to the client.
    Status { status: Box<Status>, reply: ReplyTx },
    /// A scrape: the snapshot, figures filled in.
    Metrics { status: Box<Status>, counters: Counters, reply: oneshot::Sender<Box<Snapshot>> },
    /// The `--max-memory` check: [`Event::MemorySampled`] to the supervisor.
    MemoryCheck,
}

pub struct Ask {
    pub workers: Vec<Sampled>,
    pub want: Want,
}

/// Starts the sampler; requests go to the returned sender.
pub fn start(events: mpsc::Sender<Event>) -> mpsc::UnboundedSender<Ask> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Ask>();
    tokio::spawn(async move {
        let mut history = History::default();
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let mut workers: Vec<Sampled> = Vec::new();
            for w in batch.iter().flat_map(|a| a.workers.iter()) {
                if !workers.iter().any(|x| x.id == w.id) {
                    workers.push(*w);
                }
            }
            let pgids: Vec<i32> = workers.iter().map(|w| w.pid).collect();
            let started = Instant::now();
            let own = batch.iter().any(|a| matches!(a.want, Want::Metrics { .. }));
            let (groups, primary) = tokio::task::spawn_blocking(move || {
                (proc_stats::scan(&pgids), if own { proc_stats::own_usage() } else { None })
            })
            .await
            .unwrap_or_default();
            tracing::debug!("read /proc for {} workers in {} µs", workers.len(), started.elapsed().as_micros());
            let figures = history.figures(&workers, &groups, Instant::now());
            for ask in batch {
                answer(ask.want, &figures, primary, &events).await;
            }
        }
    });
    tx
}

async fn answer(
    want: Want,
    figures: &HashMap<WorkerId, Figures>,
    primary: Option<ProcessUsage>,
    events: &mpsc::Sender<Event>,
) {
    match want {
        Want::Status { mut status, reply } => {
            fill(&mut status, figures);
            let _ = reply.send(Reply::Status(status));
        }
        Want::Metrics { mut status, counters, reply } => {
            fill(&mut status, figures);
            let _ = reply.send(Box::new(Snapshot { status: *status, counters, primary }));
        }
        Want::MemoryCheck => {
            let rss = figures.iter().map(|(id, f)| (*id, f.group.rss_bytes)).collect();
            let _ = events.send(Event::MemorySampled { rss }).await;
        }
    }
}

fn fill(status: &mut Status, figures: &HashMap<WorkerId, Figures>) {
    for w in &mut status.workers {
        let f = figures.get(&w.id).copied().unwrap_or_default();
        w.rss_bytes = f.group.rss_bytes;
        w.cpu_percent = f.cpu_percent;
        w.cpu_seconds = f.group.cpu_seconds;
        w.processes = f.group.processes;
    }
}

/// Earlier CPU readings of each worker.
#[derive(Debug, Default)]
pub struct History {
    /// `(when, CPU seconds)` per worker, oldest first.
    samples: HashMap<WorkerId, VecDeque<(Instant, f64)>>,
}

impl History {
    /// The figures of `workers` from one reading of their groups, taken
    /// `now`; remembers it, and forgets workers not given.
    pub fn figures(
        &mut self,
        workers: &[Sampled],
        groups: &HashMap<i32, GroupUsage>,
        now: Instant,
    ) -> HashMap<WorkerId, Figures> {
        self.samples.retain(|id, _| workers.iter().any(|w| w.id == *id));
        workers
            .iter()
            .map(|w| {
                let group = groups.get(&w.pid).copied().unwrap_or_default();
                let h = self.samples.entry(w.id).or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpu: f64) -> HashMap<i32, GroupUsage> {
        [(100, GroupUsage { rss_bytes: 1, cpu_seconds: cpu, processes: 1 })].into()
    }

    #[test]
    fn cpu_percent_is_over_the_window_since_a_sample_at_least_a_second_old() {
        let w = [Sampled { id: 1, pid: 100, age: Duration::from_secs(10) }];
        let t0 = Instant::now();
        let mut h = History::default();
        // First sample: the average over its 10 s of life.
        assert_eq!(h.figures(&w, &reading(5.0), t0)[&1].cpu_percent, 50.0);
        // 2 s later, one more CPU second: 50 %.
        assert_eq!(h.figures(&w, &reading(6.0), t0 + Duration::from_secs(2)).cpu_percent(1), 50.0);
        // 0.5 s later the t0+2 s sample is too young: the window is from t0.
        assert_eq!(h.figures(&w, &reading(6.5), t0 + Duration::from_millis(2500)).cpu_percent(1), 60.0);
        // At t0+3.5 s the newest sample at least 1 s old is t0+2.5 s.
        assert_eq!(h.figures(&w, &reading(7.0), t0 + Duration::from_millis(3500)).cpu_percent(1), 50.0);
    }

    #[test]
    fn gone_workers_are_forgotten_and_samples_are_bounded() {
        let t0 = Instant::now();
        let mut h = History::default();
        let w = [Sampled { id: 1, pid: 100, age: Duration::from_secs(1) }];
        for i in 0..100 {
            h.figures(&w, &reading(1.0), t0 + Duration::from_millis(i));
        }
        assert!(h.samples[&1].len() <= KEEP);
        h.figures(&[], &HashMap::new(), t0);
        assert!(h.samples.is_empty());
    }

    trait Percent {
        fn cpu_percent(&self, id: WorkerId) -> f64;
    }
    impl Percent for HashMap<WorkerId, Figures> {
        fn cpu_percent(&self, id: WorkerId) -> f64 {
            self[&id].cpu_percent
        }
    }
}
