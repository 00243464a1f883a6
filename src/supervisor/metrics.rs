//! What the supervisor counts for `/metrics`, and the snapshot a scrape is
//! rendered from (by [`crate::io::metrics`], outside the event loop).

use super::Supervisor;
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

    pub(super) fn metrics_snapshot(&mut self) -> Snapshot {
        Snapshot { status: self.status(), counters: self.counters.clone() }
    }
}
