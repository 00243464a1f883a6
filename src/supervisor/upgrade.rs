//! The supervisor's half of a self-upgrade: refusing it when it cannot be
//! done, checking the new binary, taking the snapshot and handing over
//! ([`crate::handover`]), and, in the new image, adopting what came over.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context, Result};

use super::backoff::Slot;
use super::Supervisor;
use crate::handover::{self, ListenerSnapshot, State, WorkerFds, CHECK_TIMEOUT, STATE_FORMAT};
use crate::types::wire::{Reply, ReplyTx};
use crate::types::{Event, Timer, WorkerState};

/// An upgrade waiting for the check of the new binary.
#[derive(Debug)]
pub(super) struct Pending {
    reply: Option<ReplyTx>,
    conn: Option<OwnedFd>,
}

impl Supervisor {
    fn snapshot(&self, reply_fd: Option<RawFd>, exe_fd: RawFd) -> State {
        State {
            format: STATE_FORMAT,
            from_version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            upgrades: self.upgrades,
            settings: (*self.settings).clone(),
            listeners: self
                .listeners
                .iter()
                .map(|l| (l, None))
                .chain(self.on_demand.sockets.iter().map(|(t, l)| (l, Some(t.clone()))))
                .map(|(l, bound_for)| ListenerSnapshot {
                    fd: l.raw_fd(),
                    name: l.name.clone(),
                    owned_path: l.owned_path.clone(),
                    bound_for,
                })
                .collect(),
            control_fd: self.control.raw_fd(),
            guardian_pid: self.guardian.pid().as_raw(),
            guardian_fd: self.guardian.raw_fd(),
            workers: self.workers.values().map(|w| w.snapshot()).collect(),
            slots: self.slots.iter().map(|s| (s.restarts(), s.streak())).collect(),
            next_id: self.next_id,
            newest_generation: self.newest_generation,
            serving_generation: self.serving_generation,
            last_reload: self.last_reload.clone(),
            ever_ready: self.ever_ready,
            announced: self.announced,
            reply_fd,
            subscriber_fds: self.subscribers.fds(),
            exe_fd,
            exe: self.origin.exe.clone(),
            argv: self.origin.argv.clone(),
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
        if self.reload.is_some() {
            return refuse("a reload is running; try again when it has finished".into());
        }
        if self.upgrade.is_some() {
            return refuse("an upgrade is already running".into());
        }
        let exe = self.origin.exe.clone();
        let state = match serde_json::to_vec(&self.snapshot(None, -1)) {
            Ok(s) => s,
            Err(e) => return refuse(format!("serializing the state: {e}")),
        };
        if let Some(r) = &reply {
            let _ = r.send(Reply::Progress { message: format!("checking {}", exe.display()) });
        }
        tracing::info!("upgrade: checking {}", exe.display());
        let mut cmd = tokio::process::Command::new(&exe);
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
        self.foreign.insert(pid);
        self.upgrade = Some(Pending { reply, conn });
        let events = self.events.clone();
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
        self.foreign.remove(&pid);
        let Some(pending) = self.upgrade.take() else { return };
        let fail = |why: String| {
            tracing::error!("upgrade failed: {why}; still running {}", env!("CARGO_PKG_VERSION"));
            if let Some(r) = &pending.reply {
                let _ = r.send(Reply::Error {
                    error: format!("upgrade failed: {why}; still running hotswap {}", env!("CARGO_PKG_VERSION")),
                });
            }
        };
        let new_version = match result {
            Ok(v) => v,
            Err(why) => return fail(why),
        };
        if self.reload.is_some() || self.stop.is_some() {
            return fail("a reload or stop began during the check".into());
        }
        tracing::info!("upgrade: {} answered: {new_version}; handing over", self.origin.exe.display());
        if let Err(e) = self.exec_upgrade(pending.conn.as_ref().map(|c| c.as_raw_fd())) {
            fail(format!("{e:#}"));
        }
    }

    /// Writes the state and execs; returns only on failure.
    fn exec_upgrade(&mut self, reply_fd: Option<RawFd>) -> Result<()> {
        let exe_fd = OwnedFd::from(std::fs::File::open("/proc/self/exe").context("opening /proc/self/exe")?);
        let state = self.snapshot(reply_fd, exe_fd.as_raw_fd());
        let memfd = handover::write_memfd(&serde_json::to_vec(&state)?)?;
        let mut pass = state.fds();
        pass.push(memfd.as_raw_fd());
        let cleared: Vec<RawFd> = pass.iter().copied().filter(|fd| handover::set_cloexec(*fd, false).is_ok()).collect();
        if cleared.len() != pass.len() {
            for fd in &cleared {
                let _ = handover::set_cloexec(*fd, true);
            }
            bail!("could not prepare the fds to hand over");
        }
        self.systemd.reloading("upgrading hotswap in place");
        let err = handover::exec(&state.exe, &state.argv, memfd.as_raw_fd(), None);
        // Still here: the exec failed; nothing was handed over.
        for fd in pass {
            let _ = handover::set_cloexec(fd, true);
        }
        self.systemd.ready(&self.status_line());
        Err(err)
    }

    /// The new image: take over the workers of the state.
    pub(super) fn adopt(&mut self, state: &State, workers: Vec<WorkerFds>, upgraded: bool) -> Result<()> {
        self.started_at = state.started_at;
        self.upgrades = state.upgrades + u32::from(upgraded);
        self.slots = state.slots.iter().map(|(restarts, streak)| Slot::restore(*restarts, *streak)).collect();
        self.next_id = state.next_id;
        self.newest_generation = state.newest_generation;
        self.serving_generation = state.serving_generation;
        self.last_reload = state.last_reload.clone();
        self.ever_ready = state.ever_ready;
        self.announced = state.announced;
        for (w, fds) in state.workers.iter().zip(workers) {
            let settings = self.settings.clone();
            let worker = self.launcher(&settings).adopt(w, fds).with_context(|| format!("adopting worker {}", w.id))?;
            self.guardian.protect(worker.pid());
            let (id, state, settings) = (worker.id(), worker.state(), worker.settings().clone());
            self.workers.insert(id, worker);
            match state {
                WorkerState::Starting => {
                    self.worker_timer(id, settings.ready_timeout, Timer::Ready(id));
                    self.watch_accepts(id);
                }
                WorkerState::Stopping => self.worker_timer(id, settings.shutdown_timeout, Timer::Shutdown(id)),
                WorkerState::Ready => {}
            }
        }
        // Exits that happened during the exec.
        self.reap();
        tracing::info!(
            "upgraded from hotswap {} to {}: pid {} kept, {} workers adopted",
            state.from_version,
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.workers.len()
        );
        if self.announced {
            self.systemd.ready(&self.status_line());
        }
        Ok(())
    }
}
