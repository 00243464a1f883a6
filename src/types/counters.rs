//! What the primary counts over its life, for `/metrics`: reloads and
//! their durations, worker restarts by reason, worker start-up times.
//!
//! Counters only go up; they are carried over a self-upgrade in the
//! handover state, so a scrape after `hotswap upgrade` sees no reset (they
//! do start from zero when the primary itself restarts, which Prometheus
//! takes as a counter reset).

use serde::{Deserialize, Serialize};

use super::wire::Status;

/// Everything counted, as carried in the handover state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// How long each reload took, successful or not (request to outcome).
    pub reload_seconds: Histogram,
    /// Workers restarted after a crash.
    pub restarts_crash: u64,
    /// Worker starts that failed (the command could not run).
    pub start_failures: u64,
    /// Workers replaced for staying above `--max-memory`.
    pub restarts_max_memory: u64,
    /// How long each worker took from its start to ready.
    pub startup_seconds: Histogram,
    /// Requests caught on connections a retiring worker closed, passed to
    /// the serving generation (rescue).
    pub rescued_requests: u64,
    /// Connections the rescue closed unrescued for a limit.
    pub rescue_given_up: u64,
    /// Connections of retiring workers the primary holds now (a gauge; an
    /// image starts with none).
    #[serde(skip)]
    pub rescue_held: u64,
}

/// The upper bounds of the histograms' buckets, in seconds (`+Inf` is
/// implied): from a fast worker's start-up to a long rolling reload.
pub const BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A Prometheus histogram with the fixed [`BUCKETS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), one per bound.
    pub counts: Vec<u64>,
    /// Above the last bound.
    pub over: u64,
    pub sum: f64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram { counts: vec![0; BUCKETS.len()], over: 0, sum: 0.0 }
    }
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        self.counts.resize(BUCKETS.len(), 0);
        match BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
        self.sum += secs;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.over
    }

    /// `(le, cumulative count)` for each bound, then `+Inf`.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut acc = 0;
        let mut out: Vec<(String, u64)> = BUCKETS
            .iter()
            .enumerate()
            .map(|(i, b)| {
                acc += self.counts.get(i).copied().unwrap_or(0);
                (b.to_string(), acc)
            })
            .collect();
        out.push(("+Inf".into(), self.count()));
        out
    }
}

/// What a `/metrics` scrape is rendered from: the status (workers with
/// their memory and CPU), the counters and the primary's own use.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub status: Status,
    pub counters: Counters,
    /// The primary process itself (`process_*`), when `/proc` could tell.
    pub primary: Option<ProcessUsage>,
}

/// What one process uses, as Prometheus client libraries export it for
/// the process they run in (`process_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessUsage {
    pub rss_bytes: u64,
    /// User and system time of the process itself (not of the children it
    /// reaped: those are the workers, counted apart).
    pub cpu_seconds: f64,
    pub open_fds: u64,
    /// Its limit on open fds (`RLIMIT_NOFILE`, soft).
    pub max_fds: u64,
    /// When it started, Unix seconds (a self-upgrade keeps the process).
    pub start_time_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_into_cumulative_buckets() {
        let mut h = Histogram::default();
        for s in [0.01, 0.3, 0.3, 7.0, 1000.0] {
            h.observe(s);
        }
        assert_eq!(h.count(), 5);
        let c = h.cumulative();
        assert_eq!(c[0], ("0.05".into(), 1));
        assert_eq!(c[3], ("0.5".into(), 3));
        assert_eq!(c[7], ("10".into(), 4));
        assert_eq!(c.last().unwrap(), &("+Inf".into(), 5));
        assert!((h.sum - 1007.61).abs() < 1e-9);
    }

    #[test]
    fn counters_of_an_older_state_read_as_zero() {
        let c: Counters = serde_json::from_str("{\"reloads_ok\":3}").unwrap();
        assert_eq!(c.reloads_ok, 3);
        assert_eq!(c.reload_seconds.count(), 0);
    }
}
