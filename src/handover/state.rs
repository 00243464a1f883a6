//! What one image of the primary hands to the next: the [`State`] (by
//! value, with the fds it names by number) and, on the new image's side,
//! those fds owned again ([`Inherited`]). Kept apart from the exec and the
//! rollback so that what crosses the exec is read in one place.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::exec::set_cloexec;
use crate::node::cluster::Target;
use crate::options::Settings;
use crate::sys::listeners::Listener;
use crate::types::wire::ReloadOutcome;
use crate::types::{ReadyVia, Timer, WorkerId, WorkerState};

/// Everything the next image needs, by value or by fd number.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub from_version: String,
    pub started_at: u64,
    pub upgrades: u32,
    pub settings: Settings,
    pub listeners: Vec<ListenerSnapshot>,
    /// `--balance slots|sticky`: for each listener (in the order of
    /// `listeners`), the sockets of slots 1, 2, ... in slot order (slot 0 is
    /// the listener); empty for a shared one.
    #[serde(default)]
    pub slot_fds: Vec<Vec<RawFd>>,
    pub control_fd: RawFd,
    pub guardian_pid: i32,
    pub guardian_fd: RawFd,
    /// The process groups the guardian protects (for a restart of it).
    #[serde(default)]
    pub guardian_groups: Vec<i32>,
    /// Lines the guardian had not read yet.
    #[serde(default)]
    pub guardian_backlog: Vec<String>,
    /// Orphans of workers the primary adopted as subreaper.
    #[serde(default)]
    pub adopted: Vec<AdoptedSnapshot>,
    pub workers: Vec<WorkerSnapshot>,
    /// `(restarts, crash streak)` of each slot. (`slots` in the state, as
    /// images before the rename wrote it.)
    #[serde(rename = "slots")]
    pub crash_history: Vec<(u32, u32)>,
    pub next_id: WorkerId,
    pub newest_generation: u64,
    pub serving_generation: u64,
    pub last_reload: Option<ReloadOutcome>,
    pub ever_ready: bool,
    /// `READY=1` went to systemd for the first generation. (`announced` in
    /// the state, as images before the rename wrote it.)
    #[serde(rename = "announced")]
    pub systemd_told_ready: bool,
    /// The commands whose workers announced their readiness, and how
    /// (`--ready auto`): without it, the first worker of such a command
    /// after an upgrade would be taken by its accepts again.
    #[serde(default)]
    pub announcers: Vec<(Vec<String>, ReadyVia)>,
    /// The `--metrics` socket.
    #[serde(default)]
    pub metrics_fd: Option<RawFd>,
    /// The soft `RLIMIT_NOFILE` the first image was started with, which
    /// workers get (every image runs with the raised one).
    #[serde(default)]
    pub worker_nofile: Option<u64>,
    /// What `/metrics` counts, so that counters do not reset.
    #[serde(default)]
    pub counters: crate::types::counters::Counters,
    /// `--max-memory` replacements per slot.
    #[serde(default)]
    pub memory_replacements: std::collections::BTreeMap<usize, u32>,
    /// The `hotswap upgrade` client's connection, answered by the next image.
    pub reply_fd: Option<RawFd>,
    /// `hotswap events` clients, which go on streaming from the next image.
    #[serde(default, alias = "watcher_fds")]
    pub subscriber_fds: Vec<RawFd>,
    /// The primary's runtime directory (workers' notify sockets point into
    /// it); absent from images that used `TMPDIR/hotswap-PID`.
    #[serde(default)]
    pub runtime_dir: Option<PathBuf>,
    /// The runtime directory's lock, held (`flock`) for the primary's life;
    /// absent from images that did not lock it.
    #[serde(default)]
    pub runtime_lock_fd: Option<RawFd>,
    /// The old image's executable, to go back to.
    pub exe_fd: RawFd,
    /// The new image's own file, when it is a script: left open for its
    /// interpreter, closed by the new image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_exe_fd: Option<RawFd>,
    /// Per stream (stdout, stderr): the previous image's output may end
    /// inside a line (written in part to a reader that stalled), which the
    /// next image ends before writing anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_cut: Vec<bool>,
    pub exe: PathBuf,
    pub argv: Vec<OsString>,
    /// The image that wrote this state unblocks held signals once its
    /// handlers are installed, so a rollback to it may hold them.
    #[serde(default)]
    pub holds_signals: bool,
    /// Pending deadlines with the time each has left. None from an image
    /// that did not carry them over: the new one re-arms a starting
    /// worker's ready deadline and a stopping worker's kill in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timers: Option<Vec<TimerSnapshot>>,
}

/// A pending deadline and how long it had left at the handover.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimerSnapshot {
    pub timer: Timer,
    pub remaining_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListenerSnapshot {
    pub fd: RawFd,
    pub name: String,
    pub owned_path: Option<PathBuf>,
    /// Set for a socket bound on demand for a Node worker's listen: the
    /// listen it serves (it is no `--listen` socket, and no worker's fd 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_for: Option<Target>,
    /// For a socket bound on demand for `listen(0)`: the listen's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_index: Option<u64>,
    /// For a socket bound on demand: the workers holding it, with the key
    /// of each one's listen (`None` from an image that did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<(WorkerId, String)>>,
}

/// A socket bound on demand for Node workers, as handed over.
#[derive(Debug)]
pub struct OnDemandSocket {
    pub target: Target,
    pub index: Option<u64>,
    /// `None`: the previous image did not say (every Node worker holds it).
    pub users: Option<Vec<(WorkerId, String)>>,
    pub listener: Listener,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    pub id: WorkerId,
    pub slot: usize,
    pub pid: i32,
    pub generation: u64,
    pub state: WorkerState,
    pub ready_via: Option<ReadyVia>,
    pub age_ms: u64,
    pub respawn: bool,
    pub killed: bool,
    /// Why SIGKILL went out (the `exit` event's `killed`); None from an
    /// image that did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_for: Option<crate::types::Killed>,
    pub ipc_fd: Option<RawFd>,
    pub stdout_fd: RawFd,
    pub stderr_fd: RawFd,
    /// Output read from its pipes and not yet written (a partial line, or
    /// lines waiting for the writer): the next image writes it first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stdout_pending: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stderr_pending: Vec<u8>,
    /// A Node.js cluster worker's state.
    #[serde(default)]
    pub node: Option<crate::types::NodeState>,
    /// Whether it said anything on its IPC channel; None from an image that
    /// did not say (taken as yes, as that image did).
    #[serde(default)]
    pub spoke: Option<bool>,
    /// Whether it sent anything on its `NOTIFY_SOCKET`.
    #[serde(default)]
    pub notified: bool,
    /// A starting worker under `--ready auto` that sent `READY=1` and waits
    /// to be seen accepting.
    #[serde(default)]
    pub said_ready: bool,
    /// How long it took to get ready, in milliseconds.
    #[serde(default)]
    pub ready_ms: Option<u64>,
    /// What the preload told it patched.
    #[serde(default)]
    pub preload: Vec<crate::types::wire::PreloadPatch>,
    /// Its bind filter's listener (`--bind-intercept`): the new image
    /// answers its binds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_notify_fd: Option<RawFd>,
}

/// A process a worker left behind, adopted by the primary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdoptedSnapshot {
    pub pid: i32,
    pub pgid: i32,
    /// The worker it came from, if known.
    pub worker: Option<WorkerId>,
    /// Set once it got the stop signal: how long until SIGKILL.
    pub kill_in_ms: Option<u64>,
}

/// A worker's fds, owned again by the new image.
pub struct WorkerFds {
    pub ipc: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub bind_notify: Option<OwnedFd>,
}

/// The fds of a [`State`], owned (and close-on-exec again).
pub struct Inherited {
    /// Listeners, not yet in charge of their Unix socket files (see
    /// [`Inherited::owned_paths`]).
    pub listeners: Vec<Listener>,
    /// Sockets bound on demand for Node workers, with the listen each serves.
    pub on_demand: Vec<OnDemandSocket>,
    /// The slot sockets of each listener after slot 0 (`--balance`).
    pub slot_sockets: Vec<Vec<OwnedFd>>,
    pub control: OwnedFd,
    pub metrics: Option<OwnedFd>,
    pub guardian: OwnedFd,
    pub workers: Vec<WorkerFds>,
    pub reply: Option<OwnedFd>,
    pub subscribers: Vec<OwnedFd>,
    /// The runtime directory's lock.
    pub runtime_lock: Option<OwnedFd>,
    /// The Unix socket files of listeners (by fd) that the new image removes
    /// at exit, once it serves: a rollback before that must find them.
    pub owned_paths: Vec<(RawFd, PathBuf)>,
}

impl State {
    /// Every fd the state names.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.listeners.iter().map(|l| l.fd).collect();
        v.extend(self.slot_fds.iter().flatten());
        v.extend([self.control_fd, self.guardian_fd, self.exe_fd]);
        v.extend(self.metrics_fd);
        v.extend(self.runtime_lock_fd);
        for w in &self.workers {
            v.extend(w.ipc_fd);
            v.extend([w.stdout_fd, w.stderr_fd]);
            v.extend(w.bind_notify_fd);
        }
        v.extend(self.reply_fd);
        v.extend(&self.subscriber_fds);
        v
    }

    /// Renumbers every fd the state names except the executable's handle
    /// (a rollback hands over copies).
    pub(super) fn renumber(&mut self, map: impl Fn(RawFd) -> RawFd) {
        for l in &mut self.listeners {
            l.fd = map(l.fd);
        }
        for fd in self.slot_fds.iter_mut().flatten() {
            *fd = map(*fd);
        }
        self.control_fd = map(self.control_fd);
        self.guardian_fd = map(self.guardian_fd);
        self.metrics_fd = self.metrics_fd.map(&map);
        self.runtime_lock_fd = self.runtime_lock_fd.map(&map);
        for w in &mut self.workers {
            w.ipc_fd = w.ipc_fd.map(&map);
            w.stdout_fd = map(w.stdout_fd);
            w.stderr_fd = map(w.stderr_fd);
            w.bind_notify_fd = w.bind_notify_fd.map(&map);
        }
        self.reply_fd = self.reply_fd.map(&map);
        for fd in &mut self.subscriber_fds {
            *fd = map(*fd);
        }
    }

    /// Takes ownership of the fds, marking them close-on-exec again.
    ///
    /// # Safety
    /// The fds must be the ones the previous image handed over.
    pub(super) unsafe fn take_fds(&self) -> Result<Inherited> {
        // SAFETY (of each `from_raw_fd` below): the caller guarantees these
        // fds were handed over and are owned by nothing else in this image.
        let own = |fd: RawFd| -> Result<OwnedFd> {
            set_cloexec(fd, true).with_context(|| format!("handed-over fd {fd}"))?;
            Ok(OwnedFd::from_raw_fd(fd))
        };
        let (mut listeners, mut on_demand, mut owned_paths) = (Vec::new(), Vec::new(), Vec::new());
        for l in &self.listeners {
            // Not in charge of its file yet: dropped on an error below, it
            // must not remove what a rollback needs.
            let listener = Listener::adopt(own(l.fd)?, l.name.clone(), None)?;
            owned_paths.extend(l.owned_path.clone().map(|p| (l.fd, p)));
            match &l.bound_for {
                Some(target) => on_demand.push(OnDemandSocket {
                    target: target.clone(),
                    index: l.bound_index,
                    users: l.users.clone(),
                    listener,
                }),
                None => listeners.push(listener),
            }
        }
        let mut slot_sockets = Vec::new();
        for group in &self.slot_fds {
            slot_sockets.push(group.iter().map(|fd| own(*fd)).collect::<Result<Vec<_>>>()?);
        }
        let mut workers = Vec::new();
        for w in &self.workers {
            workers.push(WorkerFds {
                ipc: w.ipc_fd.map(own).transpose()?,
                stdout: own(w.stdout_fd)?,
                stderr: own(w.stderr_fd)?,
                bind_notify: w.bind_notify_fd.map(own).transpose()?,
            });
        }
        // The old executable's handle is only for a rollback.
        let _ = set_cloexec(self.exe_fd, true);
        // This image's own script, left open for its interpreter, and the
        // interpreter's own handle on it if it let that through (dash does,
        // above fd 9).
        if let Some(fd) = self.new_exe_fd.filter(|fd| *fd > 2 && !self.fds().contains(fd)) {
            close_copies_of(fd, &self.fds());
        }
        Ok(Inherited {
            listeners,
            on_demand,
            slot_sockets,
            control: own(self.control_fd)?,
            metrics: self.metrics_fd.map(own).transpose()?,
            guardian: own(self.guardian_fd)?,
            workers,
            reply: self.reply_fd.map(own).transpose()?,
            subscribers: self.subscriber_fds.iter().map(|fd| own(*fd)).collect::<Result<_>>()?,
            runtime_lock: self.runtime_lock_fd.map(own).transpose()?,
            owned_paths,
        })
    }
}

/// Closes `fd` and every other fd of this process open on the same file,
/// except those in `keep`.
fn close_copies_of(fd: RawFd, keep: &[RawFd]) {
    let id = |fd: RawFd| {
        std::fs::metadata(format!("/proc/self/fd/{fd}")).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
    };
    let Some(file) = id(fd) else { return };
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    for other in open {
        if other > 2 && !keep.contains(&other) && id(other) == Some(file) {
            let _ = nix::unistd::close(other);
        }
    }
}
