//! What `hotswap status` and systemd's `STATUS=` show of the supervisor,
//! with what each worker uses (read when asked, off the event loop, by
//! [`crate::io::usage`]).

use super::Supervisor;
use crate::io::usage::{Ask, Sampled, Want};
use crate::types::wire::{AdoptedStatus, Backoff, Reply, ReplyTx, Status, WorkerStatus};

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

    /// The workers, as the sampler reads their process groups.
    pub(super) fn sampled(&self) -> Vec<Sampled> {
        self.workers.values().map(|w| Sampled { id: w.id(), pid: w.pid().as_raw(), age: w.age() }).collect()
    }

    /// Answers `hotswap status`: the sampler adds what each worker uses
    /// and replies (the event loop does not wait for `/proc`).
    pub(super) fn status_with_usage(&mut self, reply: ReplyTx) {
        let ask = Ask { workers: self.sampled(), want: Want::Status { status: Box::new(self.status()), reply } };
        if let Err(e) = self.sampler.send(ask) {
            // The sampler is gone (it never is): answer without figures.
            if let Want::Status { status, reply } = e.0.want {
                let _ = reply.send(Reply::Status(status));
            }
        }
    }

    /// What hotswap chose for the server its command runs, if it knows it.
    pub(super) fn server_choice(&self) -> Option<String> {
        let addrs: Vec<_> = self.listeners.iter().map(|l| l.addr.clone()).collect();
        self.settings.server_choice(&addrs)
    }

    /// The status; each worker's figures are filled in by the sampler.
    pub(super) fn status(&self) -> Status {
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
                        .map(|b| format!("{} (bound on demand for a listen on {})", b.listener.addr, b.target)),
                )
                .collect(),
            target_workers: self.settings.workers,
            workers: self
                .workers
                .values()
                .map(|w| WorkerStatus {
                    id: w.id(),
                    slot: w.slot(),
                    pid: w.pid().as_raw(),
                    generation: w.generation(),
                    state: w.state(),
                    uptime_secs: w.age().as_secs_f64(),
                    restarts: self.crash_history.get(w.slot()).map_or(0, |s| s.restarts()),
                    memory_replacements: self.memory.per_slot.get(&w.slot()).copied().unwrap_or(0),
                    rss_bytes: 0,
                    cpu_percent: 0.0,
                    cpu_seconds: 0.0,
                    processes: 0,
                    ready_via: w.ready_via().map(|v| v.name().to_string()),
                    ready_proof: w.ready_proof().map(str::to_string),
                    ready_ms: w.ready_in().map(|d| d.as_millis() as u64),
                    preload: w.preload().to_vec(),
                })
                .collect(),
            // A memory replacement is not a reload.
            reloading: self.reload.is_some() && !self.replacing_for_memory(),
            reload_queued: self.queued.is_queued(),
            last_reload: self.last_reload.clone(),
            stopping: self.stop.is_some(),
            backoff: self
                .crash_history
                .iter()
                .enumerate()
                .filter_map(|(slot, s)| {
                    let due = s.waiting(now)?;
                    Some(Backoff { slot, crashes_in_a_row: s.streak(), restart_in_ms: due.as_millis() as u64 })
                })
                .collect(),
            adopted: self
                .adopted
                .list()
                .into_iter()
                .map(|(pid, worker, ending)| AdoptedStatus { pid, worker, ending })
                .collect(),
            max_memory: self.settings.max_memory,
            replacing: self.memory.replacing.as_ref().map(|r| r.why.clone()),
            metrics: self.metrics.as_ref().map(|m| m.addr.to_string()),
            balance: self.settings.balance.to_string(),
            server: self.server_choice(),
        }
    }
}
