//! What the supervisor counts for `/metrics`, and the snapshot a scrape is
//! rendered from (by [`crate::io::metrics_endpoint`], outside the event loop; the
//! figures of each worker are added by [`crate::io::usage`]).

use super::Supervisor;
use tokio::sync::oneshot;

use crate::io::usage::{Ask, Want};
use crate::types::counters::Snapshot;

impl Supervisor {
    /// A reload ended (memory replacements are counted apart).
    pub(super) fn count_reload(&mut self, ok: bool, duration_ms: u64) {
        if ok {
            self.counters.reloads_ok += 1;
        } else {
            self.counters.reloads_failed += 1;
        }
        self.counters.reload_seconds.observe(duration_ms as f64 / 1000.0);
    }

    /// A scrape: the sampler adds what workers use and answers it.
    pub(super) fn on_metrics(&mut self, reply: oneshot::Sender<Box<Snapshot>>) {
        let want = Want::Metrics { status: Box::new(self.status()), counters: self.counters.clone(), reply };
        let _ = self.sampler.send(Ask { workers: self.sampled(), want });
    }
}
