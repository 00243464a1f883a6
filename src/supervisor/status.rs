//! What `hotswap status` and systemd's `STATUS=` show of the supervisor,
//! with what each worker uses (sampled when asked, see [`super::usage`]).

use std::collections::HashMap;

use super::usage::{Figures, Sampled};
use super::Supervisor;
use crate::types::wire::{Backoff, Status, WorkerStatus};
use crate::types::WorkerId;

impl Supervisor {
    /// What `systemctl status` shows.
    pub(super) fn status_line(&self) -> String {
        let mut s = format!(
            "generation {}, {}/{} workers ready",
            self.serving_generation,
            self.ready_count(),
            self.settings.workers
        );
        if let Some(r) = &self.reload {
            s += &format!("; reloading to generation {}", r.generation);
        } else if let Some(r) = &self.last_reload {
            s += &format!("; last reload {}", if r.ok { "ok" } else { "FAILED" });
        }
        s
    }

    pub(super) fn notify_status(&self) {
        if self.systemd.enabled() {
            self.systemd.status(&self.status_line());
        }
    }

    /// What each worker's process group uses now (one pass over `/proc`).
    pub(super) fn sample_usage(&mut self) -> HashMap<WorkerId, Figures> {
        let workers: Vec<Sampled> =
            self.workers.values().map(|w| Sampled { id: w.id(), pid: w.pid().as_raw(), age: w.age() }).collect();
        let t = std::time::Instant::now();
        let figures = self.usage.sample(&workers);
        tracing::debug!("sampled {} workers' process groups in {} µs", workers.len(), t.elapsed().as_micros());
        figures
    }

    pub(super) fn status(&mut self) -> Status {
        let usage = self.sample_usage();
        let now = std::time::Instant::now();
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs_f64()
                + self.image_started_at.saturating_sub(self.started_at) as f64,
            started_at: self.started_at,
            image_started_at: self.image_started_at,
            upgrades: self.upgrades,
            generation: self.serving_generation,
            listeners: self
                .listeners
                .iter()
                .map(|l| l.addr.to_string())
                .chain(
                    self.on_demand
                        .sockets
                        .iter()
                        .map(|(t, l)| format!("{} (bound on demand for a listen on {t})", l.addr)),
                )
                .collect(),
            target_workers: self.settings.workers,
            workers: self
                .workers
                .values()
                .map(|w| {
                    let f = usage.get(&w.id()).copied().unwrap_or_default();
                    WorkerStatus {
                        id: w.id(),
                        slot: w.slot(),
                        pid: w.pid().as_raw(),
                        generation: w.generation(),
                        state: w.state(),
                        uptime_secs: w.age().as_secs_f64(),
                        restarts: self.slots.get(w.slot()).map_or(0, |s| s.restarts()),
                        memory_replacements: self.memory.per_slot.get(&w.slot()).copied().unwrap_or(0),
                        rss_bytes: f.group.rss_bytes,
                        cpu_percent: f.cpu_percent,
                        cpu_seconds: f.group.cpu_seconds,
                        processes: f.group.processes,
                    }
                })
                .collect(),
            // A memory replacement is not a reload.
            reloading: self.reload.is_some() && !self.replacing_for_memory(),
            reload_queued: self.queued.is_queued(),
            last_reload: self.last_reload.clone(),
            stopping: self.stop.is_some(),
            backoff: self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(slot, s)| {
                    let due = s.waiting(now)?;
                    Some(Backoff { slot, crashes_in_a_row: s.streak(), restart_in_ms: due.as_millis() as u64 })
                })
                .collect(),
            max_memory: self.settings.max_memory,
            metrics: self.metrics.as_ref().map(|m| m.addr.to_string()),
        }
    }
}
