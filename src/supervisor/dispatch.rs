//! Where each event goes: the phase of the loop first (the first build,
//! the hand-over of an upgrade), then the file that owns its concern
//! (signals, control requests, changed files, timers, workers' messages);
//! and how a timer is armed (every one in [`super::core::timers`], so that
//! it is cancelled with its worker and handed over on self-upgrade).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::phase::Phase;
use super::{reload, Supervisor};
use crate::io::file_watch;
use crate::types::wire::{Reply, ReplyTx, Request};
use crate::types::{Event, Timer, WorkerId};

impl Supervisor {
    /// One event, as the phase has it: during the first build, most are
    /// answered by [`Supervisor::while_building`]; during the hand-over of
    /// an upgrade, signals wait for the next image
    /// ([`Supervisor::while_handing_over`]).
    pub(super) fn handle(&mut self, event: Event) {
        let event = match self.phase {
            Phase::Building(_) => match self.while_building(event) {
                Some(event) => event,
                None => return,
            },
            Phase::Serving | Phase::Ending(_) => event,
        };
        let Some(event) = self.while_handing_over(event) else { return };
        self.dispatch(event);
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Signal(sig) => self.on_signal(sig),
            Event::Control { request, reply, conn } => self.on_control(request, reply, conn),
            Event::Subscribe { sub, conn } => self.io.subscribers.add(sub, conn),
            Event::SubscriberLeft => self.io.subscribers.prune(),
            Event::Ipc { worker, msg } if self.is_app_primary(worker) => self.on_primary_ipc(msg),
            Event::IpcClosed { worker } if self.is_app_primary(worker) => {}
            Event::Ipc { worker, msg } => self.on_ipc(worker, msg),
            Event::IpcClosed { worker } => self.on_ipc_closed(worker),
            Event::IpcHandle { worker, msg, fd } => self.on_ipc_handle(worker, msg, fd),
            Event::Notify { worker, note } => self.on_notify(worker, note),
            Event::FilesChanged { paths } => self.on_files_changed(paths),
            Event::UpgradeChecked { pid, result } => self.on_upgrade_checked(pid, result),
            Event::Timer(t) => self.on_timer(t),
            Event::Quiesced { worker, seen } => self.on_quiesced(worker, seen),
            Event::Metrics { reply } => self.on_metrics(reply),
            Event::MemorySampled { rss } => self.on_memory_sampled(rss),
            Event::HealthChecked { worker, result } => self.on_health_checked(worker, result),
            Event::Looked { worker, report, cost } => self.on_looked(worker, *report, cost),
            Event::Rescue(note) => self.on_rescue(note),
        }
        self.rebalance();
        self.release_unused_sockets();
    }

    fn on_signal(&mut self, sig: i32) {
        use signal_hook::consts::*;
        match sig {
            SIGCHLD => self.reap(),
            SIGHUP if self.stop.is_some() => tracing::warn!("SIGHUP ignored: the primary is stopping"),
            SIGHUP => {
                tracing::info!("SIGHUP: reload requested");
                self.request_reload(None, false, reload::Ask::default());
            }
            SIGUSR2 => {
                tracing::info!("SIGUSR2: self-upgrade requested");
                self.begin_upgrade(None, None);
            }
            SIGTERM | SIGINT => {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                self.begin_stop(name, None);
            }
            _ => {}
        }
    }

    fn on_control(&mut self, request: Request, reply: ReplyTx, conn: Option<OwnedFd>) {
        match request {
            Request::Status => self.status_with_usage(reply),
            Request::Reload { no_build, surge, canary_ms } => {
                if self.stop.is_some() {
                    let _ = reply.send(Reply::Error { error: "refused: the primary is stopping".into() });
                } else {
                    let canary = canary_ms.map(Duration::from_millis);
                    self.request_reload(Some(reply), no_build, reload::Ask { surge, canary });
                }
            }
            Request::Stop => self.begin_stop("stop requested", Some(reply)),
            // Served by `Event::Subscribe`, and by the control task.
            Request::Events | Request::Logs { .. } | Request::Reopen => drop((reply, conn)),
            Request::Upgrade => self.begin_upgrade(Some(reply), conn),
            Request::Scale { to } => self.scale(to, reply),
        }
    }

    fn on_files_changed(&mut self, paths: Vec<PathBuf>) {
        if self.stop.is_some() {
            return;
        }
        let what = file_watch::describe(&paths);
        if self.reload_build_again() {
            tracing::info!("changed during the build: {what}; building again when it ends");
            return;
        }
        tracing::info!("changed: {what}");
        self.request_reload(None, false, reload::Ask::default());
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Ready(id) => self.on_ready_deadline(id),
            Timer::AssumeReady(id) => self.mark_ready(id, crate::types::ReadyVia::Assumed),
            Timer::AcceptCheck(id) => self.on_accept_check(id),
            Timer::AcceptSettled(id) => self.on_accept_settled(id),
            Timer::Shutdown(id) => self.on_shutdown_deadline(id),
            Timer::StopSignal(id) => self.on_stop_signal_deadline(id),
            Timer::NoListenReady(id) => self.on_no_listen_deadline(id),
            Timer::ReadyHint(id) => self.on_ready_hint(id),
            Timer::Proven(id) => self.reload_on_proven(id),
            Timer::Respawn(slot) => self.respawn(slot),
            Timer::SlotDrain(id) => self.on_slot_drain(id),
            Timer::Quiesce(id) => self.on_quiesce(id),
            Timer::OrphanAndGuardianCheck => self.check_orphans_and_guardian(),
            Timer::MemoryCheck => self.on_memory_check(),
            Timer::AppPrimary => self.start_app_primary(),
            Timer::AppPrimaryKill => self.on_app_primary_kill_deadline(),
            Timer::Watchdog => {
                self.io.systemd.watchdog();
                if let Some(every) = self.io.systemd.watchdog_interval() {
                    self.after(every, Timer::Watchdog);
                }
            }
        }
    }

    /// Sends `timer` after `delay`.
    pub(super) fn after(&mut self, delay: Duration, timer: Timer) {
        self.arm(delay, timer, None);
    }

    /// A deadline about one worker: cancelled when the worker goes, so that
    /// thousands of reloads leave no sleeping timers behind. None for a
    /// worker that is already gone.
    pub(super) fn worker_timer(&mut self, id: WorkerId, delay: Duration, timer: Timer) {
        if self.workers.contains_key(&id) {
            self.arm(delay, timer, Some(id));
        }
    }

    /// Sends `timer` after `delay`, recorded in the one place that knows
    /// every pending deadline ([`super::core::timers`]).
    pub(super) fn arm(&mut self, delay: Duration, timer: Timer, owner: Option<WorkerId>) {
        let events = self.io.events.clone();
        let handle = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Timer(timer)).await;
        })
        .abort_handle();
        self.timers.add(timer, owner, Instant::now() + delay, handle);
    }
}
