//! The supervisor's half of a self-upgrade: refusing it when it cannot be
//! done, checking the new binary, taking the snapshot and handing over
//! ([`crate::handover`]), and, in the new image, adopting what came over.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context, Result};

use super::backoff::CrashHistory;
use super::Supervisor;
use crate::handover::{self, ListenerSnapshot, State, WorkerFds, CHECK_TIMEOUT, STATE_FORMAT};
use crate::types::wire::{Reply, ReplyTx};
use crate::types::{Event, Timer, WorkerState};

/// An upgrade under way: who asked, and the new binary (checked, then
/// executed).
#[derive(Debug)]
pub(super) struct InFlight {
    reply: Option<ReplyTx>,
    conn: Option<OwnedFd>,
    /// The new binary, opened once: the file checked is the file executed,
    /// whatever happens to its path in between.
    exe: std::fs::File,
}

/// A self-upgrade under way, here alone: waiting for the check of the new
/// binary, then checked and waiting for a quiet loop to exec. The reaper
/// reads `foreign` (the check's pid, which tokio waits for).
#[derive(Debug, Default)]
pub(super) struct Upgrading {
    /// A self-upgrade waiting for its check of the new binary.
    pub(super) in_flight: Option<InFlight>,
    /// A checked self-upgrade, to exec once the event loop is quiet.
    pub(super) handing_over: Option<HandOver>,
    /// Children whose exit someone else waits for (tokio's), never reaped
    /// by the supervisor: the check's.
    pub(super) foreign: std::collections::HashSet<i32>,
}

/// A checked self-upgrade: the loop handles what is already queued, then
/// execs ([`Supervisor::hand_over`]).
#[derive(Debug)]
pub(super) struct HandOver {
    pending: InFlight,
    /// Whether the new binary unblocks held signals: then they are blocked
    /// from the check's answer to the exec.
    hold: bool,
    /// The signal mask before, restored if the exec fails.
    mask: nix::sys::signal::SigSet,
    /// Stop, reload and upgrade signals caught meanwhile, sent again before
    /// the exec.
    again: Vec<i32>,
    /// Whether the signal task had its turns to pass on what it caught.
    settled: bool,
}

impl Supervisor {
    fn snapshot(&self, reply_fd: Option<RawFd>, exe_fd: RawFd) -> State {
        let (started_at, upgrades, next_id, ever_ready, systemd_told_ready) = self.life.handed_over();
        State {
            format: STATE_FORMAT,
            from_version: env!("CARGO_PKG_VERSION").into(),
            started_at,
            upgrades,
            settings: (*self.settings).clone(),
            listeners: self
                .sockets
                .listeners
                .iter()
                .map(|l| (l, None))
                .chain(self.sockets.on_demand.sockets.iter().map(|b| (&b.listener, Some(b))))
                .map(|(l, bound)| ListenerSnapshot {
                    fd: l.raw_fd(),
                    name: l.name.clone(),
                    owned_path: l.owned_path.clone(),
                    bound_for: bound.map(|b| b.target.clone()),
                    bound_index: bound.and_then(|b| b.index),
                    users: bound.map(|b| b.users.clone()),
                })
                .collect(),
            slot_fds: self.sockets.slot_sockets.handover_fds(),
            control_fd: self.io.control.raw_fd(),
            guardian_pid: self.io.guardian.pid().as_raw(),
            guardian_fd: self.io.guardian.raw_fd(),
            guardian_groups: self.io.guardian.snapshot().0,
            guardian_backlog: self.io.guardian.snapshot().1,
            adopted: self.adopted.snapshot(),
            workers: self.workers.values().map(|w| w.snapshot()).collect(),
            crash_history: self.crash_history.iter().map(|s| (s.restarts(), s.streak())).collect(),
            next_id,
            newest_generation: self.reloads.newest_generation,
            serving_generation: self.reloads.serving_generation,
            last_reload: self.reloads.last.clone(),
            ever_ready,
            systemd_told_ready,
            announcers: self.looks.announcers.snapshot(),
            metrics_fd: self.metrics.server.as_ref().map(|m| m.raw_fd()),
            worker_nofile: Some(crate::sys::fd_limit::worker_soft()).filter(|n| *n > 0),
            counters: self.metrics.counters.clone(),
            memory_replacements: self.memory.per_slot.clone(),
            reply_fd,
            subscriber_fds: self.io.subscribers.fds(),
            runtime_dir: Some(self.given.runtime.path().to_path_buf()),
            runtime_lock_fd: Some(self.given.runtime.lock_fd()),
            new_exe_fd: None,
            output_cut: Vec::new(),
            exe_fd,
            exe: self.given.origin.exe.clone(),
            argv: self.given.origin.argv.clone(),
            timers: Some(self.timers.snapshot(std::time::Instant::now())),
            holds_signals: true,
        }
    }

    /// `hotswap upgrade` or SIGUSR2: check the new binary first.
    pub(super) fn begin_upgrade(&mut self, reply: Option<ReplyTx>, conn: Option<OwnedFd>) {
        let refuse = |why: String| {
            tracing::warn!("upgrade refused: {why}");
            if let Some(r) = &reply {
                let _ = r.send(Reply::Error { error: format!("upgrade refused: {why}") });
            }
        };
        if !cfg!(target_os = "linux") {
            return refuse("self-upgrade needs Linux (memfd, /proc/self/exe)".into());
        }
        if self.stop.is_some() {
            return refuse("the primary is stopping".into());
        }
        if self.reloads.running.is_some() {
            return refuse("a reload is running; try again when it has finished".into());
        }
        if self.upgrade.in_flight.is_some() || self.upgrade.handing_over.is_some() {
            return refuse("an upgrade is already running".into());
        }
        let exe = self.given.origin.exe.clone();
        let state = match serde_json::to_vec(&self.snapshot(None, -1)) {
            Ok(s) => s,
            Err(e) => return refuse(format!("serializing the state: {e}")),
        };
        if let Some(r) = &reply {
            let _ = r.send(Reply::Progress { message: format!("checking {}", exe.display()) });
        }
        tracing::info!("upgrade: checking {}", exe.display());
        self.io.subscribers.say("upgrade-started", format!("checking {}", exe.display()));
        let file = match std::fs::File::open(&exe) {
            Ok(f) => f,
            Err(e) => return refuse(format!("cannot open {}: {e}", exe.display())),
        };
        // The check runs the very file opened: `/proc/self/fd/N`, resolved
        // by the kernel to the open file (a script's interpreter opens it
        // again by that name, so it must stay open across that exec).
        let fd = file.as_raw_fd();
        let mut cmd = tokio::process::Command::new(format!("/proc/self/fd/{fd}"));
        cmd.arg0(&exe);
        // SAFETY: one async-signal-safe fcntl on an fd this process holds.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.arg("upgrade-check")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return refuse(format!("cannot run {}: {e}", exe.display())),
        };
        let pid = child.id().unwrap_or(0) as i32;
        // tokio waits for this child itself; the reaper leaves it alone.
        self.upgrade.foreign.insert(pid);
        self.upgrade.in_flight = Some(InFlight { reply, conn, exe: file });
        let events = self.io.events.clone();
        tokio::spawn(async move {
            let run = async {
                if let Some(mut stdin) = child.stdin.take() {
                    use tokio::io::AsyncWriteExt;
                    let _ = stdin.write_all(&state).await;
                }
                child.wait_with_output().await
            };
            let result = match tokio::time::timeout(CHECK_TIMEOUT, run).await {
                Err(_) => Err(format!("{} did not answer the check within {CHECK_TIMEOUT:?}", exe.display())),
                Ok(Err(e)) => Err(format!("running {}: {e}", exe.display())),
                Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
                Ok(Ok(out)) => Err(format!(
                    "{} failed the check ({}): {}",
                    exe.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            };
            let _ = events.send(Event::UpgradeChecked { pid, result }).await;
        });
    }

    pub(super) fn on_upgrade_checked(&mut self, pid: i32, result: std::result::Result<String, String>) {
        self.upgrade.foreign.remove(&pid);
        let Some(pending) = self.upgrade.in_flight.take() else { return };
        let new_version = match result {
            Ok(_) if self.reloads.running.is_some() || self.stop.is_some() => {
                Err("a reload or stop began during the check".to_string())
            }
            other => other,
        };
        let new_version = match new_version {
            Ok(v) => v,
            Err(why) => {
                let still = format!("still running hotswap {}", env!("CARGO_PKG_VERSION"));
                tracing::error!("upgrade failed: {why}; {still}");
                self.io.subscribers.say("upgrade-failed", format!("{why}; {still}"));
                if let Some(r) = &pending.reply {
                    let _ = r.send(Reply::Error { error: format!("upgrade failed: {why}; {still}") });
                }
                return;
            }
        };
        tracing::info!(
            "upgrade: {} answered: {}; handing over",
            self.given.origin.exe.display(),
            handover::answer_summary(&new_version)
        );
        // The event loop execs once nothing is left in flight.
        let hold = handover::capabilities(&new_version).holds_signals;
        if !hold {
            tracing::warn!(
                "upgrade: the new binary does not declare that it unblocks held signals (handover level {}); \
                 signals sent during the exec may end the primary",
                handover::HOLDS_SIGNALS_SINCE
            );
        }
        let mask = if hold { crate::sys::signal_mask::block() } else { crate::sys::signal_mask::current() };
        self.upgrade.handing_over = Some(HandOver { pending, hold, mask, again: Vec::new(), settled: false });
    }

    /// During a hand-over: an event already queued, handled as always
    /// (so the state handed over has it: a timer that fired, an exit to
    /// reap) except that, with `hold`, the stop, reload and upgrade signals
    /// that this image caught but has not acted on yet are kept, to be sent
    /// again to this process so they wait for the next image too. None: it
    /// was dealt with here.
    pub(super) fn while_handing_over(&mut self, event: Event) -> Option<Event> {
        use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};
        let Some(h) = self.upgrade.handing_over.as_mut() else { return Some(event) };
        match event {
            Event::Signal(sig) if h.hold && [SIGHUP, SIGINT, SIGTERM, SIGUSR2].contains(&sig) => {
                if !h.again.contains(&sig) {
                    h.again.push(sig);
                }
            }
            Event::Signal(SIGCHLD) => self.reap(),
            other => return Some(other),
        }
        None
    }

    /// During a hand-over, the next event already queued: none once the
    /// loop is quiet, time to exec ([`Self::hand_over`]). The signal task
    /// first gets a few turns to pass on what it caught before the signals
    /// were blocked.
    pub(super) async fn queued_during_hand_over(
        &mut self,
        rx: &mut tokio::sync::mpsc::Receiver<Event>,
    ) -> Option<Event> {
        let h = self.upgrade.handing_over.as_mut()?;
        if !std::mem::replace(&mut h.settled, true) {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        rx.try_recv().ok()
    }

    /// Execs the new image from a quiet loop (every event queued since the
    /// check answered was handled). With `hold` (a new binary that unblocks
    /// them), signals were blocked when the check answered: they wait for
    /// the next image, see [`crate::sys::signal_mask`]; those this image
    /// caught meanwhile are sent again, so they wait too.
    pub(super) async fn hand_over(&mut self) {
        let Some(HandOver { pending, hold, mask, again, .. }) = self.upgrade.handing_over.take() else { return };
        for sig in again {
            tracing::info!("upgrade: signal {sig} arrived during the handover; the next image acts on it");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::try_from(sig).ok());
        }
        let result = if self.reloads.running.is_some() || self.stop.is_some() || self.phase.ending() {
            Err(anyhow::anyhow!("a reload or stop began during the handover"))
        } else {
            self.rescue_close_for_exec().await;
            self.thaw_before_exec();
            let r = self.exec_upgrade(&pending.exe, pending.conn.as_ref().map(|c| c.as_raw_fd()), hold);
            self.rescue_reopen();
            r
        };
        // Still here: the upgrade failed; held signals are delivered now.
        crate::sys::signal_mask::restore(&mask);
        if let Err(e) = result {
            let why = format!("{e:#}");
            tracing::error!("upgrade failed: {why}; still running {}", env!("CARGO_PKG_VERSION"));
            self.io
                .subscribers
                .say("upgrade-failed", format!("{why}; still running hotswap {}", env!("CARGO_PKG_VERSION")));
            if let Some(r) = &pending.reply {
                let _ = r.send(Reply::Error {
                    error: format!("upgrade failed: {why}; still running hotswap {}", env!("CARGO_PKG_VERSION")),
                });
            }
        }
    }

    /// Writes the state and execs `new` (the file that passed the check);
    /// returns only on failure.
    fn exec_upgrade(&mut self, new: &std::fs::File, reply_fd: Option<RawFd>, hold: bool) -> Result<()> {
        // First: everything queued for stdout and stderr is written (what
        // the pipe readers hold goes in the state). Nothing runs on this
        // thread from here to the exec, so no reader takes more from a pipe.
        if !self.io.output.flush(handover::FLUSH_BEFORE_EXEC) {
            tracing::warn!(
                "upgrade: output was not written out within {} s (stdout or stderr is not read); queued lines may be lost",
                handover::FLUSH_BEFORE_EXEC.as_secs()
            );
        }
        let cut = self.io.output.freeze();
        let result = self.exec_frozen(new, reply_fd, hold, cut);
        self.io.output.thaw();
        result
    }

    fn exec_frozen(&mut self, new: &std::fs::File, reply_fd: Option<RawFd>, hold: bool, cut: [bool; 2]) -> Result<()> {
        let exe_fd = OwnedFd::from(std::fs::File::open("/proc/self/exe").context("opening /proc/self/exe")?);
        let mut state = self.snapshot(reply_fd, exe_fd.as_raw_fd());
        state.output_cut = cut.to_vec();
        // A script (`#!`) is executed by its interpreter, which opens it
        // again as /dev/fd/N: that fd must stay open across the exec. The
        // next image closes it (it is in the state).
        let mut head = [0u8; 2];
        let script = std::os::unix::fs::FileExt::read_exact_at(new, &mut head, 0).is_ok() && &head == b"#!";
        if script {
            state.new_exe_fd = Some(new.as_raw_fd());
        }
        let memfd = handover::write_memfd(&serde_json::to_vec(&state)?)?;
        let mut pass = state.fds();
        pass.extend(state.new_exe_fd);
        pass.push(memfd.as_raw_fd());
        let cleared: Vec<RawFd> = pass.iter().copied().filter(|fd| handover::set_cloexec(*fd, false).is_ok()).collect();
        if cleared.len() != pass.len() {
            for fd in &cleared {
                let _ = handover::set_cloexec(*fd, true);
            }
            bail!("could not prepare the fds to hand over");
        }
        self.io.systemd.reloading("upgrading hotswap in place");
        let err = handover::exec((new.as_raw_fd(), &state.exe), &state.argv, memfd.as_raw_fd(), None, hold);
        // Still here: the exec failed; nothing was handed over.
        for fd in pass {
            let _ = handover::set_cloexec(fd, true);
        }
        self.io.systemd.ready(&self.status_line());
        Err(err)
    }

    /// The new image: take over the workers of the state.
    pub(super) fn adopt(&mut self, state: &State, workers: Vec<WorkerFds>, upgraded: bool) -> Result<()> {
        let state_timers = &state.timers;
        self.life.restore(state, upgraded);
        self.crash_history =
            state.crash_history.iter().map(|(restarts, streak)| CrashHistory::restore(*restarts, *streak)).collect();
        self.reloads.restore(state.newest_generation, state.serving_generation, state.last_reload.clone());
        self.looks.announcers = super::accepting::Announcers::restore(&state.announcers);
        self.adopted = super::adopted::Adopted::restore(&state.adopted);
        self.metrics.counters = state.counters.clone();
        self.memory.per_slot = state.memory_replacements.clone();
        for (w, fds) in state.workers.iter().zip(workers) {
            let settings = self.settings.clone();
            let worker = self
                .launcher(&settings)
                .adopt(w, fds)
                .with_context(|| format!("adopting worker {} (pid {})", w.id, w.pid))?;
            self.io.guardian.protect(worker.pid());
            let (id, state, settings) = (worker.id(), worker.state(), worker.settings().clone());
            self.workers.insert(id, worker);
            if state == WorkerState::Starting {
                self.watch_accepts(id);
            }
            if state_timers.is_none() {
                // From an image that did not hand its deadlines over.
                match state {
                    WorkerState::Starting => self.worker_timer(id, settings.ready_timeout, Timer::Ready(id)),
                    WorkerState::Stopping => self.worker_timer(id, settings.shutdown_timeout, Timer::Shutdown(id)),
                    WorkerState::Ready => {}
                }
            }
        }
        // Every deadline of the previous image, with the time it had left.
        let now = std::time::Instant::now();
        for t in state_timers.iter().flatten() {
            let left = t.remaining();
            match t.timer {
                Timer::Ready(id)
                | Timer::AssumeReady(id)
                | Timer::Shutdown(id)
                | Timer::StopSignal(id)
                | Timer::NoListenReady(id)
                | Timer::ReadyHint(id)
                | Timer::SlotDrain(id)
                | Timer::Quiesce(id) => self.worker_timer(id, left, t.timer),
                Timer::Respawn(slot) => {
                    if let Some(s) = self.crash_history.get_mut(slot) {
                        s.waits_until(now + left);
                    }
                    self.after(left, t.timer);
                }
                // Re-armed by the event loop itself when it starts.
                Timer::Watchdog | Timer::OrphanAndGuardianCheck | Timer::MemoryCheck => {}
                // The app's primary is started anew below.
                Timer::AppPrimary | Timer::AppPrimaryKill => {}
                // Re-armed above for every worker that is still starting.
                Timer::AcceptCheck(_) | Timer::AcceptSettled(_) => {}
                // Only while a reload runs, and no upgrade starts then.
                Timer::Proven(_) => {}
            }
        }
        // Exits that happened during the exec. What happened (upgraded, or
        // rolled back) is logged by the caller once this image serves.
        self.reap();
        // The app's cluster primary did not come over (its channel closed
        // with the exec, and it exits): a new one takes the workers.
        let settings = self.settings.clone();
        self.app_primary.enabled =
            super::app_primary::wanted(&settings, super::runs_node(&settings, &self.given.base_env));
        self.start_app_primary();
        if self.life.systemd_told_ready() {
            self.io.systemd.ready(&self.status_line());
        }
        Ok(())
    }
}
