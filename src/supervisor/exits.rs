//! What happens when a child exits: reaping by pid, then carrying out what
//! the exit means, as [`super::core::exits`] decides it (the reload's
//! business, the end of a stop, a crash restart after the backoff of
//! [`super::backoff`], a first generation that cannot start).

use std::time::Instant;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::core::exits::{self, Around, Exited, Then};
use super::phase::Ending;
use super::reload::policy::Gone;
use super::Supervisor;
use crate::sys::reap;
use crate::types::{Exit, Killed, Timer, WorkerState};

impl Supervisor {
    /// Collects exited children, in one place and by pid: the workers, the
    /// build and the guardian by their known pids, then orphans handed to us
    /// as subreaper (zombies among our children that we did not start),
    /// then adopts the orphans that still run ([`super::adopted`]).
    /// Never "any child": a child that a library waits for itself (the
    /// upgrade check, run by tokio) keeps its status.
    pub(super) fn reap(&mut self) {
        let mut known: Vec<Pid> = self.workers.values().map(|w| w.pid()).collect();
        known.extend(self.reloads.build.as_ref().map(|b| b.pid));
        known.push(self.io.guardian.pid());
        known.extend(self.app_primary_pid());
        known.extend_from_slice(self.io.guardian.retired_pids());
        for (pid, how) in reap::exited(&known) {
            self.on_exit(pid, how);
        }
        let reaped = reap::orphans(&known, &self.upgrade.foreign);
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
        if self.stop.is_none() || !self.workers.is_empty() || self.phase.ending() {
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
        // Not a clean stop when something had to be killed: `hotswap run`
        // says so as `hotswap stop` does.
        let (code, message) = stop.outcome();
        // The `hotswap stop` clients hear how it went.
        let reply = stop.reply();
        for w in stop.waiters.drain(..) {
            let _ = w.send(reply.clone());
        }
        self.end_with(Ending::Exit { code, message, quote: None });
    }

    fn on_exit(&mut self, pid: Pid, how: Exit) {
        if self.reloads.build.as_ref().is_some_and(|b| b.pid == pid) {
            // What the build left running in its group goes with it.
            let _ = killpg(pid, Signal::SIGKILL);
            self.io.guardian.release(pid);
            return self.reload_on_build_exit(how);
        }
        if self.app_primary_exited(pid, how) {
            return;
        }
        let Some(id) = self.workers.values().find(|w| w.pid() == pid).map(|w| w.id()) else {
            if pid == self.io.guardian.pid() {
                tracing::error!("the guardian process {pid} {how}; replacing it");
                self.io.guardian.gone();
                self.restart_guardian();
            } else if self.io.guardian.retired(pid) {
                tracing::debug!("reaped the replaced guardian {pid} ({how})");
            } else {
                tracing::debug!("reaped orphan {pid} ({how})");
            }
            return;
        };
        let Some(mut worker) = self.workers.remove(&id) else { return };
        self.timers.cancel_worker(id);
        // A worker whose slot was left out may die before it is told to go.
        self.leaving.gone(id);
        self.quiescing.gone(id);
        self.sockets.on_demand.forget(id, None);
        // Anything the worker left in its process group goes with it.
        let _ = killpg(worker.pid(), Signal::SIGKILL);
        self.io.guardian.release(worker.pid());
        // Its channel, if still open, closes with it: `disconnect` comes
        // first, as in Node's cluster (once per worker).
        if worker.disconnect_news(true) {
            self.io.subscribers.worker_event("disconnect", &worker);
            self.tell_primary(crate::node::primary::to_primary::disconnect(id));
        }
        self.io.subscribers.exit_event(&worker, how);
        self.primary_worker_exited(id, how, worker.state() == WorkerState::Stopping);
        self.rescue_exited(id, how, worker.killed(), worker.settings().stop_signal);
        let lived = worker.age();
        let (pid_raw, generation) = (pid.as_raw(), worker.generation());
        if worker.state() == WorkerState::Stopping {
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
        if self.stop.is_none() {
            self.notify_status();
        }
        let label = worker.label();
        // Its last lines as read so far (a first generation's are read to
        // the end before the primary exits, and quoted again then).
        let said = worker.last_lines().quote();
        let hint = (worker.state() == WorkerState::Starting).then(|| format!("{}{said}", worker.exit_diagnosis()));
        let exited = Exited {
            id,
            slot: worker.slot(),
            state: worker.state(),
            respawn: worker.respawn(),
            lived,
            not_ready: worker.not_ready(),
            gone: Gone { label: &label, how, killed: worker.killed(), hint: hint.as_deref() },
        };
        let pool = self.members();
        let around = Around {
            stopping: self.stop.is_some(),
            ever_ready: self.life.ever_ready(),
            slots: &mut self.crash_history,
            reload: self.reloads.running.as_mut(),
            pool: &pool,
        };
        match exits::on_exit(&exited, around, Instant::now()) {
            Then::StopMayBeDone => self.finish_stop_if_done(),
            Then::Reload(order) => self.obey(order),
            Then::Nothing => {}
            Then::GiveUp(why) => {
                tracing::error!("{why}");
                self.kill_all(Killed::PrimaryGaveUp);
                let quote = Some((said, worker.last_lines().clone()));
                self.end_with(Ending::Exit { code: 1, message: why, quote });
            }
            Then::Respawn { slot, delay, streak } => {
                if !delay.is_zero() {
                    tracing::warn!(
                        "slot {slot} crashed {streak} times in a row; restarting in {} ms",
                        delay.as_millis()
                    );
                }
                self.after(delay, Timer::Respawn(slot));
            }
        }
    }
}
