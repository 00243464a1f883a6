//! What `hotswap status` reports: a snapshot of the supervisor, serializable
//! as JSON (the `--json` output and the control protocol's reply) and
//! printable as a table for people.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::supervisor::Supervisor;
use crate::worker::{WorkerId, WorkerState};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The primary's pid.
    pub pid: u32,
    pub version: String,
    pub uptime_secs: f64,
    /// When the primary first started (Unix seconds), across self-upgrades.
    pub started_at: u64,
    /// When the running binary image took over (Unix seconds).
    pub image_started_at: u64,
    /// Self-upgrades since the primary started.
    pub upgrades: u32,
    /// The newest generation started (1 at start, +1 per reload).
    pub generation: u64,
    /// Bound addresses: `127.0.0.1:8080`, `unix:/run/app.sock`.
    pub listeners: Vec<String>,
    /// How many workers the primary keeps.
    pub target_workers: u32,
    pub workers: Vec<WorkerStatus>,
    /// True while a rolling reload runs.
    pub reloading: bool,
    /// Reloads asked for while one ran, waiting their turn (0 or 1).
    pub reload_queued: bool,
    pub last_reload: Option<ReloadOutcome>,
    pub stopping: bool,
    /// Slots whose worker keeps crashing, waiting out their backoff.
    pub backoff: Vec<Backoff>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backoff {
    pub slot: usize,
    pub crashes_in_a_row: u32,
    /// Until the next start.
    pub restart_in_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: WorkerId,
    pub pid: i32,
    pub generation: u64,
    pub state: WorkerState,
    pub uptime_secs: f64,
    /// How often this worker's slot was restarted after a crash.
    pub restarts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReloadOutcome {
    pub generation: u64,
    pub ok: bool,
    /// What happened: `generation 3 serves (2 workers replaced)` or the
    /// reason it failed.
    pub message: String,
    pub duration_ms: u64,
    /// Seconds since the Unix epoch.
    pub finished_at: u64,
}

impl Status {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let ready = self.workers.iter().filter(|w| w.state == WorkerState::Ready).count();
        let _ = writeln!(
            s,
            "hotswap {} (pid {}), up {}{}{}",
            self.version,
            self.pid,
            fmt_secs(self.uptime_secs),
            match self.upgrades {
                0 => String::new(),
                n => format!(
                    ", upgraded {n} times, this binary since {} s ago",
                    crate::supervisor::unix_now().saturating_sub(self.image_started_at)
                ),
            },
            if self.stopping { ", stopping" } else { "" }
        );
        let _ = writeln!(s, "listeners:  {}", self.listeners.join(", "));
        let _ = writeln!(s, "generation: {}", self.generation);
        let _ = writeln!(s, "workers:    {ready} ready of {}", self.target_workers);
        let reload = match (&self.last_reload, self.reloading) {
            (_, true) => format!("in progress{}", if self.reload_queued { ", another queued" } else { "" }),
            (Some(r), false) => format!("{} ({}, {} ms)", if r.ok { "ok" } else { "FAILED" }, r.message, r.duration_ms),
            (None, false) => "none yet".into(),
        };
        let _ = writeln!(s, "reload:     {reload}");
        for b in &self.backoff {
            let _ = writeln!(
                s,
                "crash loop: slot {} crashed {} times in a row; next start in {:.1} s",
                b.slot,
                b.crashes_in_a_row,
                b.restart_in_ms as f64 / 1000.0
            );
        }
        let _ = writeln!(s, "\n{:>6} {:>8} {:>5} {:<9} {:>9} {:>8}", "ID", "PID", "GEN", "STATE", "UPTIME", "RESTARTS");
        for w in &self.workers {
            let _ = writeln!(
                s,
                "{:>6} {:>8} {:>5} {:<9} {:>9} {:>8}",
                w.id,
                w.pid,
                w.generation,
                w.state.to_string(),
                fmt_secs(w.uptime_secs),
                w.restarts
            );
        }
        s
    }
}

fn fmt_secs(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{secs:.1}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Supervisor {
    pub(crate) fn ready_count(&self) -> usize {
        self.workers.values().filter(|w| w.state == WorkerState::Ready).count()
    }

    /// What `systemctl status` shows.
    pub(crate) fn status_line(&self) -> String {
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

    pub(crate) fn notify_status(&self) {
        if self.notifier.enabled() {
            self.notifier.status(&self.status_line());
        }
    }

    pub fn status(&self) -> Status {
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs_f64()
                + self.image_started_at.saturating_sub(self.started_at) as f64,
            started_at: self.started_at,
            image_started_at: self.image_started_at,
            upgrades: self.upgrades,
            generation: self.serving_generation,
            listeners: self.listeners.iter().map(|l| l.addr.to_string()).collect(),
            target_workers: self.settings.workers,
            workers: self
                .workers
                .values()
                .map(|w| WorkerStatus {
                    id: w.id,
                    pid: w.pid.as_raw(),
                    generation: w.generation,
                    state: w.state,
                    uptime_secs: w.started.elapsed().as_secs_f64(),
                    restarts: self.slots.get(w.slot).map_or(0, |s| s.restarts),
                })
                .collect(),
            reloading: self.reload.is_some(),
            reload_queued: self.queued.is_some(),
            last_reload: self.last_reload.clone(),
            stopping: self.stop.is_some(),
            backoff: self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(slot, s)| {
                    let due = s.retry_at?.checked_duration_since(std::time::Instant::now())?;
                    Some(Backoff { slot, crashes_in_a_row: s.streak, restart_in_ms: due.as_millis() as u64 })
                })
                .filter(|b| b.restart_in_ms > 0)
                .collect(),
        }
    }
}
