//! What the supervisor counts for `/metrics`, and the snapshot a scrape is
//! rendered from (by [`crate::io::metrics_endpoint`], outside the event loop; the
//! figures of each worker are added by [`crate::io::usage`]).

use super::Supervisor;
use tokio::sync::oneshot;

use crate::io::usage::{Ask, Want};
use crate::types::counters::Snapshot;

/// `/metrics`: the socket it is served on, what the supervisor counts, and
/// the sampler that reads what workers use (off the event loop) to answer
/// a scrape or `hotswap status`. The counters only ever go up, each where
/// what it counts happens (a reload here, a crash restart in `workers`, a
/// rescued request in `rescue`, a memory replacement in `memory`): no
/// decision reads them; they are carried over a self-upgrade.
pub(super) struct Metrics {
    /// `--metrics`: the socket `/metrics` is served on.
    pub(super) server: Option<crate::io::metrics_endpoint::Server>,
    pub(super) counters: crate::types::counters::Counters,
    /// Reads what workers use (off the event loop) and answers with it.
    pub(super) sampler: tokio::sync::mpsc::UnboundedSender<Ask>,
}

impl Metrics {
    /// The sampler answers with events on `events`; the server is bound
    /// (or taken over) by the caller.
    pub(super) fn new(events: tokio::sync::mpsc::Sender<crate::types::Event>) -> Metrics {
        Metrics { server: None, counters: Default::default(), sampler: crate::io::usage::start(events) }
    }
}

impl Supervisor {
    /// A reload ended (memory replacements are counted apart).
    pub(super) fn count_reload(&mut self, ok: bool, duration_ms: u64) {
        if ok {
            self.metrics.counters.reloads_ok += 1;
        } else {
            self.metrics.counters.reloads_failed += 1;
        }
        self.metrics.counters.reload_seconds.observe(duration_ms as f64 / 1000.0);
    }

    /// A scrape: the sampler adds what workers use and answers it.
    pub(super) fn on_metrics(&mut self, reply: oneshot::Sender<Box<Snapshot>>) {
        let want = Want::Metrics { status: Box::new(self.status()), counters: self.metrics.counters.clone(), reply };
        let _ = self.metrics.sampler.send(Ask { workers: self.sampled(), want });
    }
}
