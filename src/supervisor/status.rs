//! What `hotswap status` and systemd's `STATUS=` show of the supervisor,
//! with what each worker uses (read when asked, off the event loop, by
//! [`crate::io::usage`]).

use std::time::Instant;

use super::Supervisor;
use crate::io::usage::{Ask, Sampled, Want};
use crate::types::wire::{AdoptedStatus, Backoff, Reply, ReplyTx, Status, WorkerStatus};
use crate::types::{unix_now, WorkerId};

/// The primary's life so far: when it started, how often it upgraded,
/// the worker ids handed out, whether any worker was ever ready and systemd
/// told so. What `hotswap status` shows of the primary itself; carried
/// across self-upgrades. Its fields are private: it changes only through
/// its methods here, each named for what happened.
pub(super) struct Life {
    /// When this image started.
    started: Instant,
    /// When the primary first started (Unix seconds), across upgrades.
    started_at: u64,
    /// When this binary image started.
    image_started_at: u64,
    upgrades: u32,
    /// The id the next worker (or app primary) gets: never reused.
    next_id: WorkerId,
    /// Whether any worker has ever been ready: before that, a failing worker
    /// means the command cannot start at all, and the primary gives up.
    ever_ready: bool,
    /// Whether `READY=1` went to systemd for the first generation.
    systemd_told_ready: bool,
}

impl Life {
    pub(super) fn new() -> Life {
        Life {
            started: Instant::now(),
            started_at: unix_now(),
            image_started_at: unix_now(),
            upgrades: 0,
            next_id: 1,
            ever_ready: false,
            systemd_told_ready: false,
        }
    }

    /// A new image: the previous one's life goes on (`upgraded`: one more
    /// upgrade; not after a rollback).
    pub(super) fn restore(&mut self, state: &crate::handover::State, upgraded: bool) {
        self.started_at = state.started_at;
        self.upgrades = state.upgrades + u32::from(upgraded);
        self.next_id = state.next_id;
        self.ever_ready = state.ever_ready;
        self.systemd_told_ready = state.systemd_told_ready;
    }

    /// What the next image gets: started at, upgrades, next id, ever ready,
    /// systemd told ready.
    pub(super) fn handed_over(&self) -> (u64, u32, WorkerId, bool, bool) {
        (self.started_at, self.upgrades, self.next_id, self.ever_ready, self.systemd_told_ready)
    }

    /// The id the next worker gets, if it starts ([`Life::id_used`]).
    pub(super) fn next_id(&self) -> WorkerId {
        self.next_id
    }

    /// A worker started with [`Life::next_id`].
    pub(super) fn id_used(&mut self) {
        self.next_id += 1;
    }

    pub(super) fn ever_ready(&self) -> bool {
        self.ever_ready
    }

    /// A worker was ready.
    pub(super) fn a_worker_was_ready(&mut self) {
        self.ever_ready = true;
    }

    pub(super) fn systemd_told_ready(&self) -> bool {
        self.systemd_told_ready
    }

    /// `READY=1` went to systemd.
    pub(super) fn systemd_was_told_ready(&mut self) {
        self.systemd_told_ready = true;
    }
}

impl Supervisor {
    /// What `systemctl status` shows.
    pub(super) fn status_line(&self) -> String {
        let mut s = format!(
            "generation {}, {}/{} workers ready",
            self.reloads.serving_generation,
            self.ready_count(),
            self.settings.workers
        );
        if let Some(r) = &self.reloads.running {
            s += &format!("; reloading to generation {}", r.generation);
        } else if let Some(r) = &self.reloads.last {
            s += &format!("; last reload {}", if r.ok { "ok" } else { "FAILED" });
        }
        s
    }

    pub(super) fn notify_status(&self) {
        if self.io.systemd.enabled() {
            self.io.systemd.status(&self.status_line());
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
        if let Err(e) = self.metrics.sampler.send(ask) {
            // The sampler is gone (it never is): answer without figures.
            if let Want::Status { status, reply } = e.0.want {
                let _ = reply.send(Reply::Status(status));
            }
        }
    }

    /// What hotswap chose for the server its command runs, if it knows it.
    pub(super) fn server_choice(&self) -> Option<String> {
        let addrs: Vec<_> = self.sockets.listeners.iter().map(|l| l.addr.clone()).collect();
        self.settings.server_choice(&addrs)
    }

    /// The status; each worker's figures are filled in by the sampler.
    pub(super) fn status(&self) -> Status {
        let now = std::time::Instant::now();
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.life.started.elapsed().as_secs_f64()
                + self.life.image_started_at.saturating_sub(self.life.started_at) as f64,
            started_at: self.life.started_at,
            image_started_at: self.life.image_started_at,
            upgrades: self.life.upgrades,
            generation: self.reloads.serving_generation,
            listeners: self
                .sockets
                .listeners
                .iter()
                .map(|l| l.addr.to_string())
                .chain(
                    self.sockets
                        .on_demand
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
            reloading: self.reloads.running.is_some() && !self.replacing_for_memory(),
            reload_queued: self.reloads.queued.is_queued(),
            last_reload: self.reloads.last.clone(),
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
            metrics: self.metrics.server.as_ref().map(|m| m.addr.to_string()),
            balance: self.settings.balance.to_string(),
            server: self.server_choice(),
        }
    }
}
