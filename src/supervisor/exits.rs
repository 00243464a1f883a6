//! What happens when a child exits: reaping by pid, then routing the exit
//! to the reload, the stop or the crash restart (with the backoff of
//! [`super::backoff`]).

use std::time::Instant;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::reload::policy::Gone;
use super::Supervisor;
use crate::sys::reap;
use crate::types::wire::Reply;
use crate::types::{Exit, Timer, WorkerState};

impl Supervisor {
    /// Collects exited children, in one place and by pid: the workers, the
    /// build and the guardian by their known pids, then orphans handed to us
    /// as subreaper (zombies among our children that we did not start),
    /// then adopts the orphans that still run ([`super::adopted`]).
    /// Never "any child": a child that a library waits for itself (the
    /// upgrade check, run by tokio) keeps its status.
    pub(super) fn reap(&mut self) {
        let mut known: Vec<Pid> = self.workers.values().map(|w| w.pid()).collect();
        known.extend(self.build.as_ref().map(|b| b.pid));
        known.push(self.guardian.pid());
        known.extend(self.app_primary_pid());
        known.extend_from_slice(self.guardian.retired_pids());
        for (pid, how) in reap::exited(&known) {
            self.on_exit(pid, how);
        }
        let reaped = reap::orphans(&known, &self.foreign);
        self.orphans_reaped(&reaped);
        self.scan_orphans();
        if !reaped.is_empty() {
            self.finish_stop_if_done();
        }
    }

    /// A stop is done once every worker and every adopted process is gone:
    /// the `hotswap stop` clients hear how it went and the loop ends.
    /// Adopted processes left when the last worker is gone get the stop
    /// signal now (SIGKILL at `--shutdown-timeout`).
    pub(super) fn finish_stop_if_done(&mut self) {
        if self.stop.is_none() || !self.workers.is_empty() || self.exit.is_some() {
            return;
        }
        // The app's primary goes once its workers have: it hears every exit.
        if self.stop_app_primary() {
            return;
        }
        self.scan_orphans();
        if !self.adopted.is_empty() {
            return;
        }
        let Some(stop) = &mut self.stop else { return };
        let kills = stop.kills();
        // Not a clean stop when something had to be killed: `hotswap run`
        // says so as `hotswap stop` does.
        let code = if stop.forced || kills.is_some() { 1 } else { 0 };
        let message = match &kills {
            None => "stopped".to_string(),
            Some(k) => format!("stopped, but {k}"),
        };
        // The `hotswap stop` clients hear how it went.
        for w in stop.waiters.drain(..) {
            let reply = if kills.is_none() && !stop.forced {
                Reply::Done { message: message.clone() }
            } else {
                Reply::Error { error: message.clone() }
            };
            let _ = w.send(reply);
        }
        self.exit = Some((code, message));
    }

    fn on_exit(&mut self, pid: Pid, how: Exit) {
        if self.build.as_ref().is_some_and(|b| b.pid == pid) {
            // What the build left running in its group goes with it.
            let _ = killpg(pid, Signal::SIGKILL);
            self.guardian.release(pid);
            return self.reload_on_build_exit(how);
        }
        if self.app_primary_exited(pid, how) {
            return;
        }
        let Some(id) = self.workers.values().find(|w| w.pid() == pid).map(|w| w.id()) else {
            if pid == self.guardian.pid() {
                tracing::error!("the guardian process {pid} {how}; replacing it");
                self.guardian.gone();
                self.restart_guardian();
            } else if self.guardian.retired(pid) {
                tracing::debug!("reaped the replaced guardian {pid} ({how})");
            } else {
                tracing::debug!("reaped orphan {pid} ({how})");
            }
            return;
        };
        let Some(mut worker) = self.workers.remove(&id) else { return };
        worker.disarm();
        self.on_demand.forget(id, None);
        // Anything the worker left in its process group goes with it.
        let _ = killpg(worker.pid(), Signal::SIGKILL);
        self.guardian.release(worker.pid());
        // Its channel, if still open, closes with it: `disconnect` comes
        // first, as in Node's cluster (once per worker).
        if worker.disconnect_news(true) {
            self.subscribers.worker_event("disconnect", &worker);
            self.tell_primary(crate::node::primary::to_primary::disconnect(id));
        }
        self.subscribers.exit_event(&worker, how);
        self.primary_worker_exited(id, how, worker.state() == WorkerState::Stopping);
        self.rescue_exited(id, how, worker.killed(), worker.settings().stop_signal);
        let lived = worker.age();
        let (pid_raw, generation) = (pid.as_raw(), worker.generation());
        if worker.state() == WorkerState::Stopping {
            if let Some(slot) = self.slots.get_mut(worker.slot()) {
                slot.retired();
            }
            tracing::info!(
                worker = id,
                pid = pid_raw,
                generation,
                "{} {how} after {} ms",
                worker.label(),
                lived.as_millis()
            );
        } else {
            tracing::warn!(
                worker = id,
                pid = pid_raw,
                generation,
                "{} {how} unexpectedly (state {}, up {} ms)",
                worker.label(),
                worker.state(),
                lived.as_millis()
            );
        }

        // What it left behind, re-parented to us at its exit, goes too.
        self.scan_orphans();
        if self.stop.is_some() {
            self.finish_stop_if_done();
            return;
        }
        self.notify_status();
        let label = worker.label();
        let hint = (worker.state() == WorkerState::Starting).then(|| worker.diagnosis());
        let gone = Gone { label: &label, how, killed: worker.killed(), hint: hint.as_deref() };
        if self.reload_on_exit(id, &gone) || !worker.respawn() {
            return;
        }
        if !self.ever_ready {
            let why = match worker.not_ready() {
                Some(not_ready) => format!("the first generation cannot start: {not_ready}"),
                None => format!(
                    "the first generation cannot start: {label} {how} before it was ready{}",
                    hint.map(|h| format!(": {h}")).unwrap_or_default()
                ),
            };
            tracing::error!("{why}");
            self.kill_all();
            self.exit = Some((1, why));
            return;
        }
        let slot = worker.slot();
        let delay = self.slots[slot].crashed(lived, Instant::now());
        if !delay.is_zero() {
            tracing::warn!(
                "slot {slot} crashed {} times in a row; restarting in {} ms",
                self.slots[slot].streak(),
                delay.as_millis()
            );
        }
        let _ = self.after(delay, Timer::Respawn(slot));
    }
}
