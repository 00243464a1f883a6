//! What travels over the control socket, for the server (the primary) and
//! the client (`hotswap reload`, `status`, ...) alike.
//!
//! Protocol: the client sends one JSON [`Request`] line
//! (`{"command":"reload"}`); the primary answers with JSON [`Reply`] lines
//! (`progress` while it works, then `done` or `error`; `status` with a
//! [`Status`]; `events` with a [`LifecycleEvent`] per line, then `done` when
//! the primary stops, or `error` when it drops a client that fell too far
//! behind). `stop` ends with the connection closing when the primary exits.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::surge::Surge;
use super::{WorkerId, WorkerState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Status,
    Reload {
        /// Skip the `--build` command.
        #[serde(default)]
        no_build: bool,
        /// This reload's surge instead of the primary's `--surge`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        surge: Option<Surge>,
        /// A canary reload: one new worker serves beside the old
        /// generation for this many milliseconds before the roll goes on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary_ms: Option<u64>,
    },
    Stop,
    /// Stream lifecycle events until the client leaves.
    Events,
    /// Re-execute the primary from its binary on disk, keeping everything.
    Upgrade,
    /// The last `lines` lines the primary wrote (its log and its workers'),
    /// then, with `follow`, every line as it is written.
    /// Change the pool's size live (`hotswap scale`).
    Scale {
        to: ScaleTo,
    },
    /// Open `--out-file` and `--error-file` again by path, as SIGUSR1 does
    /// (`hotswap logs --reopen`, for logrotate's `postrotate`).
    Reopen,
    Logs {
        #[serde(default = "default_lines")]
        lines: usize,
        #[serde(default)]
        follow: bool,
    },
}

fn default_lines() -> usize {
    50
}

/// `hotswap scale`'s target: `N`, `+N` or `-N` workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleTo {
    Set(u32),
    Add(u32),
    Remove(u32),
}

impl ScaleTo {
    /// The new pool size from `old`: 1 to 4096.
    pub fn apply(self, old: u32) -> Result<u32, String> {
        let n = match self {
            ScaleTo::Set(n) => n as i64,
            ScaleTo::Add(n) => old as i64 + n as i64,
            ScaleTo::Remove(n) => old as i64 - n as i64,
        };
        match n {
            1..=4096 => Ok(n as u32),
            _ => Err(format!("cannot scale {old} workers to {n}: from 1 to 4096")),
        }
    }
}

impl std::str::FromStr for ScaleTo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let number = |d: &str| d.parse::<u32>().map_err(|_| format!("invalid worker count {s:?} (N, +N or -N)"));
        if let Some(d) = t.strip_prefix('+') {
            Ok(ScaleTo::Add(number(d)?))
        } else if let Some(d) = t.strip_prefix('-') {
            Ok(ScaleTo::Remove(number(d)?))
        } else {
            Ok(ScaleTo::Set(number(t)?))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply {
    Status(Box<Status>),
    Event(LifecycleEvent),
    Progress {
        message: String,
    },
    /// One line of the primary's output (`logs`), without its newline.
    Log {
        line: String,
    },
    Done {
        message: String,
    },
    Error {
        error: String,
    },
}

/// Where the supervisor sends replies for one request.
pub type ReplyTx = mpsc::UnboundedSender<Reply>;

/// Lifecycle events queued for one `hotswap events` client, at most this
/// many; a client that falls further behind is dropped.
pub const SUBSCRIBER_QUEUE: usize = 256;

/// The supervisor's handle on one `hotswap events` client, whose connection
/// a task of its own writes.
#[derive(Debug)]
pub struct Subscription {
    /// Bounded ([`SUBSCRIBER_QUEUE`]): a client that does not read cannot
    /// grow the primary.
    pub tx: mpsc::Sender<Reply>,
    /// Tells the task to give up on the client (it fell too far behind).
    pub kill: std::sync::Arc<tokio::sync::Notify>,
    /// Resolves when the task has written everything queued and ended.
    pub done: tokio::sync::oneshot::Receiver<()>,
}

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
    /// `--max-memory`, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,
    /// A worker being replaced for `--max-memory`, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<String>,
    /// Where `/metrics` is served (`--metrics`), as bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// `--balance`: `shared`, `slots` or `sticky`.
    #[serde(default = "shared")]
    pub balance: String,
    /// The server hotswap recognised in the command, what it chose for it
    /// and why (`nginx recognised: stop signal SIGQUIT (...), socket via
    /// NGINX=3; (...)`); none for a command it does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Processes that workers left behind (daemons), adopted by the primary
    /// and ended with their worker.
    #[serde(default)]
    pub adopted: Vec<AdoptedStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdoptedStatus {
    pub pid: i32,
    /// The worker it came from; none when unknown (it ends at stop).
    pub worker: Option<WorkerId>,
    /// It got the stop signal and is on its way out.
    pub ending: bool,
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
    /// Which of the N places it fills (`HOTSWAP_WORKER_SLOT`,
    /// `NODE_APP_INSTANCE`); a replacement takes it over.
    #[serde(default)]
    pub slot: usize,
    pub pid: i32,
    pub generation: u64,
    pub state: WorkerState,
    pub uptime_secs: f64,
    /// How often this worker's slot was restarted after a crash.
    pub restarts: u32,
    /// How often this worker's slot was replaced for staying above
    /// `--max-memory`.
    #[serde(default)]
    pub memory_replacements: u32,
    /// Resident memory of its whole process group, in bytes.
    #[serde(default)]
    pub rss_bytes: u64,
    /// CPU use of its process group, in percent of one core, over the time
    /// since the previous sample at least 1 s old (samples are taken when
    /// status or metrics is asked, and by the `--max-memory` check); over
    /// its whole life when there is none.
    #[serde(default)]
    pub cpu_percent: f64,
    /// CPU time its process group used so far, in seconds.
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Live processes in its process group.
    #[serde(default)]
    pub processes: u32,
    /// How it became ready: `ipc`, `cluster`, `notify`, `accepting` or
    /// `assumed`; absent while it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_via: Option<String>,
    /// What proved it takes connections, when its accepts counted
    /// (`accepting`, or `notify` under `--ready auto`): `probe` (it took
    /// the primary's probe connection), `accept` (a thread blocked in
    /// accept), `connection` (it held a client connection it accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_proof: Option<String>,
    /// How long it took from its start to ready, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<u64>,
    /// What hotswap's preloads patched in it, failed to (a server version
    /// whose code it does not know) or skipped (rescue covers it), as the
    /// preload told it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preload: Vec<PreloadPatch>,
}

/// One patch of a preload in a worker: `uvicorn.protocols.http.h11_impl.H11Protocol`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreloadPatch {
    pub patch: String,
    pub ok: bool,
    /// Why it did not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it was left out on purpose (`rescue covers this worker`): not a
    /// failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReloadOutcome {
    pub generation: u64,
    pub ok: bool,
    /// What happened: `generation 3 serves (2 workers replaced)` or the
    /// reason it failed.
    pub message: String,
    pub duration_ms: u64,
    /// Old workers that had to be killed instead of draining.
    #[serde(default)]
    pub killed: u32,
    /// Seconds since the Unix epoch.
    pub finished_at: u64,
}

fn shared() -> String {
    "shared".into()
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
                    ", upgraded {n} {}, this binary since {} s ago",
                    if n == 1 { "time" } else { "times" },
                    super::unix_now().saturating_sub(self.image_started_at)
                ),
            },
            if self.stopping { ", stopping" } else { "" }
        );
        let _ = writeln!(s, "listeners:  {}", self.listeners.join(", "));
        let balance = match self.balance.as_str() {
            "slots" => "slots (a socket per slot; the kernel's hash picks the slot)",
            "sticky" => "sticky (a socket per slot; each client address reaches one slot)",
            _ => "shared (one socket for every worker)",
        };
        let _ = writeln!(s, "balance:    {balance}");
        if let Some(server) = &self.server {
            let _ = writeln!(s, "server:     {server}");
        }
        if let Some(m) = &self.metrics {
            let _ = writeln!(s, "metrics:    http://{m}/metrics");
        }
        let _ = writeln!(s, "generation: {}", self.generation);
        let _ = writeln!(s, "workers:    {ready} ready of {}", self.target_workers);
        let reload = match (&self.last_reload, self.reloading) {
            (_, true) => format!("in progress{}", if self.reload_queued { ", another queued" } else { "" }),
            (Some(r), false) => {
                let outcome = match (r.ok, r.killed) {
                    (false, _) => "FAILED",
                    (true, 0) => "ok",
                    (true, _) => "ok, NOT CLEAN",
                };
                format!("{outcome} ({}, {} ms)", r.message, r.duration_ms)
            }
            (None, false) => "none yet".into(),
        };
        let _ = writeln!(s, "reload:     {reload}");
        if let Some(why) = &self.replacing {
            let _ = writeln!(s, "replacing:  {why}");
        }
        for b in &self.backoff {
            let _ = writeln!(
                s,
                "crash loop: slot {} crashed {} times in a row; next start in {:.1} s",
                b.slot,
                b.crashes_in_a_row,
                b.restart_in_ms as f64 / 1000.0
            );
        }
        if let Some(max) = self.max_memory {
            let mut by_slot = std::collections::BTreeMap::new();
            for w in &self.workers {
                by_slot.insert(w.slot, w.memory_replacements);
            }
            let n: u32 = by_slot.values().sum();
            let _ = writeln!(s, "max memory: {} per worker; {n} replaced for it so far", fmt_bytes(max));
        }
        let _ = writeln!(
            s,
            "\n{:>6} {:>4} {:>8} {:>5} {:<9} {:>9} {:>8} {:>8} {:>6} {:>8}  READY VIA",
            "ID", "SLOT", "PID", "GEN", "STATE", "UPTIME", "RSS", "CPU%", "PROCS", "RESTARTS"
        );
        for w in &self.workers {
            let restarts = match w.memory_replacements {
                0 => w.restarts.to_string(),
                m => format!("{}+{m}mem", w.restarts),
            };
            let _ = writeln!(
                s,
                "{:>6} {:>4} {:>8} {:>5} {:<9} {:>9} {:>8} {:>8.1} {:>6} {:>8}  {}",
                w.id,
                w.slot,
                w.pid,
                w.generation,
                w.state.to_string(),
                fmt_secs(w.uptime_secs),
                fmt_bytes(w.rss_bytes),
                w.cpu_percent,
                w.processes,
                restarts,
                ready_text(w)
            );
        }
        let patched: Vec<&WorkerStatus> = self.workers.iter().filter(|w| !w.preload.is_empty()).collect();
        if !patched.is_empty() {
            let _ = writeln!(s, "\npreload patches:");
            for w in patched {
                let list: Vec<String> = w
                    .preload
                    .iter()
                    .map(|p| match (&p.ok, &p.skipped, &p.error) {
                        (true, _, _) => p.patch.clone(),
                        (false, Some(why), _) => format!("{} skipped: {why}", p.patch),
                        (false, None, e) => format!("NOT {} ({})", p.patch, e.as_deref().unwrap_or("did not apply")),
                    })
                    .collect();
                let _ = writeln!(s, "{:>6}  {}", w.id, list.join(", "));
            }
        }
        if !self.adopted.is_empty() {
            let list: Vec<String> = self
                .adopted
                .iter()
                .map(|a| {
                    let from = a.worker.map_or("unknown origin".to_string(), |w| format!("worker {w}"));
                    format!("{} ({from}{})", a.pid, if a.ending { ", ending" } else { "" })
                })
                .collect();
            let _ = writeln!(s, "\nadopted:    {}", list.join(", "));
        }
        s
    }
}

/// `accepting (probe) in 2,104 ms`, `ipc in 83 ms`, `-`.
fn ready_text(w: &WorkerStatus) -> String {
    let Some(via) = &w.ready_via else { return "-".into() };
    let mut s = via.clone();
    if let Some(p) = &w.ready_proof {
        s += &format!(" ({p})");
    }
    if let Some(ms) = w.ready_ms {
        s += &format!(" in {ms} ms");
    }
    s
}

/// `812K`, `212.4M`, `1.5G`: binary units (K = 1024 bytes), as `ps` and
/// `top` show memory.
pub fn fmt_bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if f < K * K {
        format!("{:.0}K", f / K)
    } else if f < K * K * K {
        format!("{:.1}M", f / (K * K))
    } else {
        format!("{:.2}G", f / (K * K * K))
    }
}

pub fn fmt_secs(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{secs:.1}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A lifecycle event, streamed to `hotswap events` clients as it happens:
/// the events Node's `cluster` module emits (`fork`, `online`, `listening`,
/// `disconnect`, `exit`) plus the reload's own (`reload-started`,
/// `reload-finished`, `reload-failed`), `stopping`, and a `--max-memory`
/// replacement's (`max-memory`, `max-memory-replaced`, `max-memory-failed`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LifecycleEvent {
    /// `fork`, `online`, `listening`, `disconnect`, `exit`,
    /// `reload-started`, `reload-finished`, `reload-failed`, `stopping`,
    /// `max-memory`, `max-memory-replaced`, `max-memory-failed`,
    /// `start-failed` (a slot's restart could not start its worker),
    /// `upgrade-started`, `upgrade-finished`, `upgrade-failed`.
    pub event: String,
    /// Seconds since the Unix epoch, with fractions.
    pub time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// `exit`: the exit code, when it exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// `exit`: the signal's name, when it was killed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// `exit`: why hotswap sent it SIGKILL ([`super::Killed::name`]);
    /// absent when hotswap did not (it exited, or something else killed
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `listening`: how the worker became ready (as in status' `ready_via`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// `listening`: what proved it takes connections (as in status'
    /// `ready_proof`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// `listening`: milliseconds from its start to ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<u64>,
}

impl LifecycleEvent {
    pub fn new(event: &str) -> LifecycleEvent {
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        LifecycleEvent { event: event.into(), time, ..Default::default() }
    }

    /// One line for people.
    pub fn render(&self) -> String {
        let mut s = format!("{:<16}", self.event);
        if let Some(w) = self.worker {
            s += &format!(" worker={w}");
        }
        if let Some(p) = self.pid {
            s += &format!(" pid={p}");
        }
        if let Some(g) = self.generation {
            s += &format!(" generation={g}");
        }
        if let Some(c) = self.code {
            s += &format!(" code={c}");
        }
        if let Some(sig) = &self.signal {
            s += &format!(" signal={sig}");
        }
        if let Some(k) = &self.killed {
            s += &format!(" killed={k}");
        }
        if let Some(v) = &self.via {
            s += &format!(" via={v}");
        }
        if let Some(p) = &self.proof {
            s += &format!(" proof={p}");
        }
        if let Some(ms) = self.ready_ms {
            s += &format!(" ready_ms={ms}");
        }
        if let Some(m) = &self.message {
            s += &format!(" {m}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Killed;

    /// `killed` is new in `exit` events: absent unless hotswap killed the
    /// worker, so that the lines clients already parse are unchanged, and
    /// named as docs/events.md says.
    #[test]
    fn an_exit_event_says_killed_only_when_hotswap_killed_the_worker() {
        let mut ev = LifecycleEvent::new("exit");
        ev.worker = Some(1);
        ev.code = Some(0);
        let json = serde_json::to_value(&ev).unwrap();
        assert!(json.get("killed").is_none(), "{json}");
        ev.code = None;
        ev.signal = Some("SIGKILL".into());
        ev.killed = Some(Killed::ShutdownTimeout.name().into());
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["killed"], "shutdown-timeout", "{json}");
        assert!(ev.render().contains("killed=shutdown-timeout"), "{}", ev.render());
        let names = [
            Killed::ReadyTimeout,
            Killed::HealthCheck,
            Killed::ShutdownTimeout,
            Killed::Abandoned,
            Killed::ForcedStop,
            Killed::PrimaryGaveUp,
        ]
        .map(|k| (k.name(), serde_json::to_value(k).unwrap()));
        for (name, serde) in names {
            assert_eq!(serde, name, "the handover's name is the event's");
        }
    }
}
