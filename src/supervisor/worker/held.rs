//! What a self-upgrade carries of a worker: the primary's ends of it,
//! held as copies until then, and what the new image is told of it (its
//! [`WorkerSnapshot`], whose format stays as it was: its life is written
//! to the snapshot's own fields by [`Life::record`]), out and back in.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::unistd::Pid;

use super::{Launcher, Life, Watch, Worker};
use crate::handover::{WorkerFds, WorkerSnapshot};
use crate::io::ipc;
use crate::io::last_lines::LastLines;
use crate::io::output::Unforwarded;
use crate::supervisor::core::life::Record;
use crate::types::label;

/// The primary's ends of a worker that a self-upgrade hands over: copies
/// of its IPC channel and output pipes (close-on-exec until then), what
/// its output readers hold, its bind filter's listener.
#[derive(Debug)]
pub(super) struct HeldEnds {
    /// None once the channel is closed.
    pub ipc: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// What the output readers hold, carried with the pipes.
    pub pending: [Unforwarded; 2],
    /// Its bind filter's listener (`--bind-intercept`), answered by a task
    /// of this image and by the next one's after an upgrade.
    pub bind_notify: Option<OwnedFd>,
    /// Its last lines of output, as the readers read them.
    pub last: LastLines,
}

impl Worker {
    /// What a self-upgrade hands over of it.
    pub fn snapshot(&self) -> WorkerSnapshot {
        let life = self.life.record(Watch::said_ready);
        WorkerSnapshot {
            id: self.id,
            slot: self.slot,
            pid: self.pid.as_raw(),
            generation: self.generation,
            state: life.state,
            ready_via: life.ready_via,
            age_ms: self.started.elapsed().as_millis() as u64,
            respawn: life.respawn,
            killed: life.killed,
            killed_for: life.killed_for,
            ipc_fd: self.held.ipc.as_ref().map(|f| f.as_raw_fd()),
            stdout_fd: self.held.stdout.as_raw_fd(),
            stderr_fd: self.held.stderr.as_raw_fd(),
            stdout_pending: self.held.pending[0].bytes(),
            stderr_pending: self.held.pending[1].bytes(),
            bind_notify_fd: self.held.bind_notify.as_ref().map(|f| f.as_raw_fd()),
            node: self.node,
            spoke: Some(self.spoke),
            preload: self.preload.clone(),
            notified: life.notified,
            said_ready: life.said_ready,
            ready_ms: life.ready_ms,
        }
    }
}

/// The life a snapshot says.
fn record(w: &WorkerSnapshot) -> Record {
    Record {
        state: w.state,
        ready_via: w.ready_via,
        ready_ms: w.ready_ms,
        respawn: w.respawn,
        killed: w.killed,
        killed_for: w.killed_for,
        notified: w.notified,
        said_ready: w.said_ready,
    }
}

impl Launcher<'_> {
    /// Takes over a worker the previous image started (self-upgrade).
    pub fn adopt(&self, w: &WorkerSnapshot, fds: WorkerFds) -> Result<Worker> {
        let pid = Pid::from_raw(w.pid);
        let carried = [&w.stdout_pending[..], &w.stderr_pending[..]];
        let (ipc, mut held) =
            self.attach((w.id, w.generation, pid), fds.ipc, fds.stdout, fds.stderr, carried, ipc::OUTGOING_QUEUE)?;
        #[cfg(target_os = "linux")]
        if let Some(fd) = fds.bind_notify {
            let notifier = crate::io::bind_intercept::Notifier::adopt(fd);
            held.bind_notify = Some(notifier.try_clone().context("duplicating a bind filter's fd")?);
            let targets = self.bind_targets(w.slot)?;
            crate::io::bind_intercept::serve(notifier, targets, w.id, label(w.id, w.generation, w.pid))
                .context("answering a bind filter")?;
        }
        // A channel closed before the upgrade was said closed then.
        let disconnect_told = ipc.is_none();
        Ok(Worker {
            id: w.id,
            slot: w.slot,
            pid,
            generation: w.generation,
            life: Life::from_record(&record(w), Watch::resumed),
            started: Instant::now().checked_sub(Duration::from_millis(w.age_ms)).unwrap_or_else(Instant::now),
            ipc,
            _notify: self.notify_socket(w.id, w.generation)?,
            settings: self.settings.clone(),
            held,
            node: w.node,
            spoke: w.spoke.unwrap_or(true),
            preload: w.preload.clone(),
            disconnect_told,
        })
    }
}
