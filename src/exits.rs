//! What happens when a child exits: reaping by pid, routing the exit to
//! the reload, the stop or the crash-restart logic, and the backoff that
//! keeps a crash loop from burning a core.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::supervisor::{worker_event, Exit, Supervisor, Timer};
use crate::worker::WorkerState;

/// A crash within this long of the start counts towards the backoff streak.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Supervisor {
    /// Collects exited children, in one place and by pid: the workers, the
    /// build and the guardian by their known pids, then orphans handed to us
    /// as subreaper (zombies among our children that we did not start).
    /// Never "any child": a child that a library waits for itself (the
    /// upgrade check, run by tokio) keeps its status.
    pub(crate) fn reap(&mut self) {
        let mut known: Vec<Pid> = self.workers.values().map(|w| w.pid).collect();
        known.extend(self.reload.as_ref().and_then(|r| r.build.as_ref()).map(|b| b.pid));
        known.push(self.guardian.pid());
        for pid in &known {
            loop {
                match waitpid(*pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid, Exit::Code(code)),
                    Ok(WaitStatus::Signaled(pid, sig, _)) => self.on_exit(pid, Exit::Signal(sig)),
                    Err(Errno::EINTR) => continue,
                    _ => {}
                }
                break;
            }
        }
        for pid in orphan_zombies(&known, &self.foreign) {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => tracing::debug!("reaped orphan {pid} (exit code {code})"),
                Ok(WaitStatus::Signaled(_, sig, _)) => tracing::debug!("reaped orphan {pid} ({sig})"),
                _ => {}
            }
        }
    }

    pub(crate) fn on_exit(&mut self, pid: Pid, how: Exit) {
        if self.reload.as_ref().and_then(|r| r.build.as_ref()).is_some_and(|b| b.pid == pid) {
            return self.reload_on_build_exit(how);
        }
        let Some(id) = self.workers.values().find(|w| w.pid == pid).map(|w| w.id) else {
            if pid == self.guardian.pid() {
                tracing::error!(
                    "the guardian process {how}; worker trees are no longer protected if the primary is killed"
                );
            } else {
                tracing::debug!("reaped orphan {pid} ({how})");
            }
            return;
        };
        let worker = self.workers.remove(&id).expect("found above");
        worker.timers.iter().for_each(|t| t.abort());
        // Anything the worker left in its process group goes with it.
        let _ = nix::sys::signal::killpg(worker.pid, nix::sys::signal::Signal::SIGKILL);
        self.guardian.forget(worker.pid);
        let mut ev = worker_event("exit", &worker);
        match how {
            Exit::Code(c) => ev.code = Some(c),
            Exit::Signal(s) => ev.signal = Some(s.to_string()),
        }
        self.watchers.emit(ev);
        let lived = worker.started.elapsed();
        if worker.state == WorkerState::Stopping {
            tracing::info!("{} {how} after {} ms", worker.label(), lived.as_millis());
        } else {
            tracing::warn!(
                "{} {how} unexpectedly (state {}, up {} ms)",
                worker.label(),
                worker.state,
                lived.as_millis()
            );
        }

        if let Some(stop) = &self.stop {
            if self.workers.is_empty() {
                let code = if stop.forced { 1 } else { 0 };
                self.exit = Some((code, "stopped".into()));
            }
            return;
        }
        self.notify_status();
        if self.reload_on_exit(&worker, how) || !worker.respawn {
            return;
        }
        if !self.ever_ready {
            let why = format!("the first generation cannot start: {} {how} before it was ready", worker.label());
            tracing::error!("{why}");
            self.kill_all();
            self.exit = Some((1, why));
            return;
        }
        let slot = &mut self.slots[worker.slot];
        if lived >= STABLE_AFTER {
            slot.streak = 0;
        }
        slot.streak += 1;
        self.schedule_respawn(worker.slot);
    }

    pub(crate) fn schedule_respawn(&mut self, slot: usize) {
        let streak = self.slots[slot].streak.max(1);
        let delay = if streak <= 1 {
            Duration::ZERO
        } else {
            (Duration::from_millis(100) * 2u32.saturating_pow(streak.min(20) - 2)).min(BACKOFF_MAX)
        };
        self.slots[slot].retry_at = Some(std::time::Instant::now() + delay);
        if delay > Duration::ZERO {
            tracing::warn!("slot {slot} crashed {streak} times in a row; restarting in {} ms", delay.as_millis());
        }
        let _ = self.after(delay, Timer::Respawn(slot));
    }
}

/// Zombies among our children that are not in `known` nor `foreign`.
fn orphan_zombies(known: &[Pid], foreign: &std::collections::HashSet<i32>) -> Vec<Pid> {
    let me = std::process::id();
    let mut children: Vec<i32> = Vec::new();
    // Each thread's children (Linux 3.5+ with CONFIG_PROC_CHILDREN) ...
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) {
        for t in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
                children.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    children
        .into_iter()
        .filter(|p| !known.iter().any(|k| k.as_raw() == *p) && !foreign.contains(p))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')))
                .unwrap_or(false)
        })
        .map(Pid::from_raw)
        .collect()
}
