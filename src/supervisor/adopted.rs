//! Processes that outlive their worker: daemons and other orphans the
//! primary adopts as a child subreaper, and ends with their worker.
//!
//! A worker that daemonizes (fork, `setsid`, fork; the grandchild serves)
//! leaves a process in a session and group of its own, out of reach of the
//! kill of the worker's group. Because the primary is a child subreaper
//! ([`crate::sys::reap::become_subreaper`]), such a process is re-parented
//! to the primary, not to init, when its parent exits. The primary looks for
//! these children (when a child exits, when a worker exits, at stop, and
//! every second) and attributes each to the worker it came from by the
//! `HOTSWAP_WORKER_ID` of its environment. Then:
//! - its process group is registered with the guardian at once, so a SIGKILL
//!   of the primary ends it too;
//! - when its worker is gone (exited, crashed, retired by a reload), it gets
//!   `--stop-signal` (to its process group) and SIGKILL `--shutdown-timeout`
//!   later if still alive;
//! - one of unknown origin (no `HOTSWAP_WORKER_ID`: a `--build` leftover, a
//!   program that cleared its environment) belongs to the primary and ends
//!   at stop the same way;
//! - a stop waits for every adopted process, as for the workers;
//! - each is reaped when it exits.
//!
//! Why not a cgroup per worker: it needs a delegated cgroup subtree (systemd
//! `Delegate=yes`, or root), which a primary started from a shell usually
//! does not have; the subreaper works for every user on Linux 3.4+. What the
//! subreaper cannot see: a process that leaves the primary's tree (re-parented
//! elsewhere by a nested subreaper of its own, or by a ptrace), and a daemon
//! of a worker that is still alive and still its parent (that one dies with
//! the worker's own tree only if it stayed in the worker's group). A process
//! re-parented less than a second before a SIGKILL of the primary can escape
//! the guardian (it is registered on the next look).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::Supervisor;
use crate::handover::AdoptedSnapshot;
use crate::sys::reap;
use crate::types::WorkerId;

/// How often the primary looks for orphans, enforces their deadlines and
/// checks the guardian.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One adopted process.
#[derive(Debug, Clone)]
pub(super) struct Orphan {
    pgid: i32,
    /// The worker it came from; `None`: unknown, the primary's own.
    worker: Option<WorkerId>,
    /// Set once it got the stop signal: when it gets SIGKILL.
    kill_at: Option<Instant>,
    killed: bool,
}

#[derive(Debug, Default)]
pub(super) struct Adopted {
    procs: BTreeMap<i32, Orphan>,
}

impl Adopted {
    pub(super) fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// `(pid, worker, ending)` of each, for `hotswap status`.
    pub(super) fn list(&self) -> Vec<(i32, Option<WorkerId>, bool)> {
        self.procs.iter().map(|(pid, o)| (*pid, o.worker, o.kill_at.is_some())).collect()
    }

    pub(super) fn snapshot(&self) -> Vec<AdoptedSnapshot> {
        let now = Instant::now();
        self.procs
            .iter()
            .map(|(pid, o)| AdoptedSnapshot {
                pid: *pid,
                pgid: o.pgid,
                worker: o.worker,
                kill_in_ms: o.kill_at.map(|t| t.saturating_duration_since(now).as_millis() as u64),
            })
            .collect()
    }

    pub(super) fn restore(snap: &[AdoptedSnapshot]) -> Adopted {
        let now = Instant::now();
        Adopted {
            procs: snap
                .iter()
                .map(|a| {
                    let kill_at = a.kill_in_ms.map(|ms| now + Duration::from_millis(ms));
                    (a.pid, Orphan { pgid: a.pgid, worker: a.worker, kill_at, killed: false })
                })
                .collect(),
        }
    }
}

impl Supervisor {
    /// Children the supervisor knows by pid (not orphans).
    fn known_children(&self) -> Vec<i32> {
        let mut known: Vec<i32> = self.workers.values().map(|w| w.pid().as_raw()).collect();
        known.extend(self.reloads.build.as_ref().map(|b| b.pid.as_raw()));
        known.push(self.io.guardian.pid().as_raw());
        known.extend(self.io.guardian.retired_pids().iter().map(|p| p.as_raw()));
        known.extend(self.upgrade.foreign.iter().copied());
        known.extend(self.app_primary_pid().map(|p| p.as_raw()));
        known
    }

    /// Where a signal for an adopted process goes: its group, unless that
    /// group is the primary's own or a live worker's (handled with the
    /// worker), then the process alone.
    fn orphan_target(&self, pgid: i32) -> Option<Pid> {
        let own = nix::unistd::getpgrp().as_raw();
        if pgid <= 1 || pgid == own || self.workers.values().any(|w| w.pid().as_raw() == pgid) {
            return None;
        }
        Some(Pid::from_raw(pgid))
    }

    fn signal_orphan(&self, pid: i32, pgid: i32, sig: Signal) {
        match self.orphan_target(pgid) {
            Some(group) => {
                let _ = killpg(group, sig);
            }
            None => {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }

    /// Adopts new orphans among the primary's children, then asks those
    /// whose worker is gone (or all, when stopping) to stop.
    pub(super) fn scan_orphans(&mut self) {
        let known = self.known_children();
        for pid in reap::children() {
            if known.contains(&pid) || self.adopted.procs.contains_key(&pid) {
                continue;
            }
            let Some(info) = reap::inspect(pid) else { continue };
            if info.zombie {
                continue; // reaped as an orphan, never adopted
            }
            let from = match info.worker.and_then(|id| self.workers.get(&id).map(|w| w.label())) {
                Some(label) => format!("left by {label}"),
                None => match info.worker {
                    Some(id) => format!("left by worker {id}, which is gone"),
                    None => "of unknown origin (ends at stop)".to_string(),
                },
            };
            tracing::info!(pid, pgid = info.pgid, "adopted process {pid} {from}");
            if self.orphan_target(info.pgid).is_some() {
                self.io.guardian.protect(Pid::from_raw(info.pgid));
            }
            self.adopted
                .procs
                .insert(pid, Orphan { pgid: info.pgid, worker: info.worker, kill_at: None, killed: false });
        }
        let stopping = self.stop.is_some();
        let (sig, grace) = (self.settings.stop_signal, self.settings.shutdown_timeout);
        let due: Vec<(i32, i32)> = self
            .adopted
            .procs
            .iter()
            .filter(|(_, o)| o.kill_at.is_none())
            .filter(|(_, o)| stopping || o.worker.is_some_and(|id| !self.workers.contains_key(&id)))
            .map(|(pid, o)| (*pid, o.pgid))
            .collect();
        let why = if stopping { "the primary is stopping" } else { "its worker is gone" };
        for (pid, pgid) in due {
            tracing::info!(pid, "adopted process {pid}: {why}; sending {sig}");
            self.signal_orphan(pid, pgid, sig);
            if let Some(o) = self.adopted.procs.get_mut(&pid) {
                o.kill_at = Some(Instant::now() + grace);
            }
        }
    }

    /// SIGKILL to adopted processes past their deadline (all of them with
    /// `all`); how many were sent it.
    pub(super) fn kill_orphans(&mut self, all: bool) -> u32 {
        let now = Instant::now();
        let due: Vec<(i32, i32)> = self
            .adopted
            .procs
            .iter()
            .filter(|(_, o)| !o.killed && (all || o.kill_at.is_some_and(|t| t <= now)))
            .map(|(pid, o)| (*pid, o.pgid))
            .collect();
        for &(pid, pgid) in &due {
            if !all {
                tracing::warn!(pid, "adopted process {pid} did not exit after the stop signal; killing it");
            }
            self.signal_orphan(pid, pgid, Signal::SIGKILL);
            if let Some(o) = self.adopted.procs.get_mut(&pid) {
                o.killed = true;
            }
        }
        due.len() as u32
    }

    /// Orphans were reaped: forget them, and their group once empty.
    pub(super) fn orphans_reaped(&mut self, pids: &[i32]) {
        for pid in pids {
            let Some(o) = self.adopted.procs.remove(pid) else { continue };
            tracing::debug!(pid, "adopted process {pid} exited");
            let group_left = self.adopted.procs.values().any(|x| x.pgid == o.pgid);
            if !group_left && self.orphan_target(o.pgid).is_some() {
                self.io.guardian.release(Pid::from_raw(o.pgid));
            }
        }
    }

    /// The once-a-second look: new orphans, their deadlines, the guardian.
    pub(super) fn check_orphans_and_guardian(&mut self) {
        self.scan_orphans();
        let killed = self.kill_orphans(false);
        if let Some(stop) = self.stop.as_mut() {
            stop.adopted_killed += killed;
        }
        if let Some(why) = self.io.guardian.stalled() {
            tracing::error!("the guardian process {} {why}; replacing it", self.io.guardian.pid());
            self.restart_guardian();
        }
        self.after(CHECK_EVERY, crate::types::Timer::OrphanAndGuardianCheck);
    }

    /// Starts a new guardian with every group the primary protects (the old
    /// one killed, if it still runs).
    pub(super) fn restart_guardian(&mut self) {
        let old = self.io.guardian.pid();
        match self.io.guardian.restart() {
            Ok(()) => tracing::warn!("started a new guardian process {} (was {old})", self.io.guardian.pid()),
            Err(e) => tracing::error!("restarting the guardian process: {e:#}; trying again in a second"),
        }
    }

    /// At exit: nothing adopted may outlive the primary. SIGKILL what is
    /// left and reap it (within a second).
    pub(super) fn end_orphans(&mut self) {
        self.scan_orphans();
        if self.adopted.is_empty() {
            return;
        }
        self.kill_orphans(true);
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.adopted.is_empty() && Instant::now() < deadline {
            let reaped = reap::orphans(&[], &self.upgrade.foreign);
            self.orphans_reaped(&reaped);
            if !self.adopted.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
