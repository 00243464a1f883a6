//! Self-upgrade's handover: what one image of the primary passes to the
//! next (state by value, sockets and pipes by fd), and the exec itself.
//! The supervisor's half (snapshot, check, adoption) is
//! `supervisor/upgrade.rs`.
//!
//! Self-upgrade re-executes the primary in place from its binary on disk,
//! keeping its pid, its sockets and its running workers.
//!
//! The pid must stay: systemd's `MAINPID` and every worker's parent (and
//! parent-death signal) hang on it, so fork-and-exec schemes are out. The
//! handover is checked before the old image lets go:
//! 1. `NEW upgrade-check` runs first (the file opened once, run as
//!    `/proc/self/fd/N`) with the state on its stdin: the new
//!    binary must start, parse the state and agree on [`STATE_FORMAT`],
//!    within [`CHECK_TIMEOUT`]. Any failure ends the upgrade there; nothing
//!    changed. Its answer declares what its side of the handover can do
//!    ([`CheckAnswer`], [`HANDOVER_LEVEL`]); the old image relies on
//!    nothing more ([`capabilities`]).
//! 2. The state (settings, workers, generations, restart counters, last
//!    reload, adopted orphans of workers, the guardian's groups) is written
//!    to a memfd; close-on-exec is cleared on exactly the
//!    listeners, the control socket, the `--metrics` socket, the guardian's
//!    pipe, every worker's IPC
//!    end and output pipes, the memfd, the waiting client's connection, the
//!    `hotswap events` clients' connections, the runtime directory's lock
//!    and a handle on the old executable; then `fexecve` in place of the
//!    new binary's file as opened for the check (never its path looked up
//!    again: a deploy that swaps the path in between changes nothing).
//!    The check also parses the primary's command line (the argv the exec
//!    will pass) with the new binary's parser: a release that dropped or
//!    renamed an option in use is refused here.
//! 2. The signals whose default action is to terminate (SIGHUP, SIGTERM,
//!    SIGINT, SIGUSR2) are blocked right before the exec and unblocked by
//!    the new image once its handlers are installed
//!    ([`crate::sys::signal_mask`]): one sent meanwhile waits, then is
//!    acted on by the new image. If the exec fails, the mask is restored.
//! 3. The new image adopts all of it by pid (it is still every worker's
//!    parent) and answers the client. Any failure before it serves (its
//!    command line, reading the state, an fd that is not what the state
//!    says, the control socket, a worker) re-executes the old executable
//!    from that handle with the same state (a rollback), and the old
//!    version answers that the upgrade failed. To make that possible the
//!    handover is all or nothing: the new image first duplicates every fd
//!    it was handed ([`Handback`]) and gives those copies back, so an fd
//!    closed part-way through is not lost; and it takes charge of the Unix
//!    socket files (listeners, control socket) only once it serves, so a
//!    failure part-way through removes none of them.
//!
//! Only a running reload or stop refuses an upgrade (try again after it).
//! Every pending deadline (crash-restart backoff, `--ready delay:`, ready
//! and shutdown deadlines) is carried over with the time it has left.
//! What is lost: an IPC message partly read when the image changes. Worker
//! output is not: what the output readers hold goes over in the state, and
//! the writer's queue is written out before the exec (for at most
//! [`FLUSH_BEFORE_EXEC`]: a stderr that nobody reads must not hold the
//! upgrade).

use std::ffi::{CString, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::node::cluster::Target;
use crate::options::Settings;
use crate::sys::listeners::Listener;
use crate::types::wire::{ReloadOutcome, Reply};
use crate::types::{ReadyVia, Timer, WorkerId, WorkerState};

/// Version of [`State`]; an image refuses a state of another version.
pub const STATE_FORMAT: u32 = 1;
/// The fd of the memfd holding the state, for the next image.
pub const STATE_ENV: &str = "HOTSWAP_UPGRADE_STATE";
/// Set when a new image gave the state back: why.
pub const ROLLBACK_ENV: &str = "HOTSWAP_UPGRADE_ROLLBACK";
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// What this binary's side of the handover can do, as a level that only
/// grows (each level includes the ones below), answered by `upgrade-check`
/// in its [`CheckAnswer`] line. The old image reads it from the new binary
/// with [`capabilities`] and relies on nothing the new one did not declare.
/// - 1: unblocks the signals held across the exec once its handlers are
///   installed ([`HOLDS_SIGNALS_SINCE`]).
pub const HANDOVER_LEVEL: u32 = 1;
/// The level from which a new image unblocks held signals: the old image
/// holds them only for such a binary, as an older one would never unblock
/// them.
pub const HOLDS_SIGNALS_SINCE: u32 = 1;
/// How images before the [`CheckAnswer`] line said level 1, in their one
/// human line. Still said by this one, for those older images upgrading to
/// it (they search for it), and searched for, as a fallback, in the answer
/// of a binary that has no [`CheckAnswer`] line.
pub const HOLDS_SIGNALS: &str = "unblocks held signals";
/// How long the output writer may take to write out its queue before exec.
pub const FLUSH_BEFORE_EXEC: Duration = Duration::from_secs(2);
/// Testing aid: when set, a new image refuses the handover (and the old one
/// takes it back), so the rollback path can be exercised for real.
pub const FAIL_TAKEOVER_ENV: &str = "HOTSWAP_TEST_FAIL_TAKEOVER";

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
    fn renumber(&mut self, map: impl Fn(RawFd) -> RawFd) {
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
    unsafe fn take_fds(&self) -> Result<Inherited> {
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

pub fn set_cloexec(fd: RawFd, on: bool) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if on { FdFlag::FD_CLOEXEC } else { FdFlag::empty() };
    if fd < 0 {
        return Err(nix::errno::Errno::EBADF); // what fcntl says; borrow_raw must not see -1
    }
    // SAFETY: the fd is borrowed only for this one fcntl call and is not
    // closed meanwhile; callers pass fds this process holds (its own, or ones
    // the previous image handed over). Were one not open, fcntl fails with
    // EBADF, which callers report or ignore as before.
    fcntl(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, FcntlArg::F_SETFD(flags)).map(|_| ())
}

/// Answers the `hotswap upgrade` client on the connection handed over.
pub fn answer(conn: OwnedFd, reply: &Reply) {
    let mut stream = std::os::unix::net::UnixStream::from(conn);
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if let Ok(mut line) = serde_json::to_string(reply) {
        line.push('\n');
        let _ = stream.write_all(line.as_bytes());
    }
}

pub fn write_memfd(bytes: &[u8]) -> Result<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create("hotswap-state", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| anyhow!("memfd_create: {}", std::io::Error::from(e)))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(bytes)?;
        f.rewind()?;
        Ok(f.into())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bytes;
        bail!("self-upgrade needs Linux")
    }
}

/// `fexecve(exe, argv, env + STATE_ENV)`: the executable by its open file
/// (`exe.1` names it in errors), never its path looked up again. With
/// `rollback` (why), it is the old executable, and the next image is told
/// why. With `hold`, the signals of [`crate::sys::signal_mask`] stay
/// blocked across the exec, for the next image to unblock. Returns only on
/// failure.
pub fn exec(
    exe: (RawFd, &std::path::Path),
    argv: &[OsString],
    state_fd: RawFd,
    rollback: Option<&str>,
    hold: bool,
) -> anyhow::Error {
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| anyhow!("a NUL byte in an argument or variable"));
    let build = || -> Result<(Vec<CString>, Vec<CString>)> {
        let argv: Vec<CString> = argv.iter().map(|a| cstr(a.as_bytes())).collect::<Result<_>>()?;
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != STATE_ENV && k != ROLLBACK_ENV)
            .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<_>>()?;
        env.push(cstr(format!("{STATE_ENV}={state_fd}").as_bytes())?);
        if let Some(why) = rollback {
            env.push(cstr(format!("{ROLLBACK_ENV}={why}").as_bytes())?);
        }
        Ok((argv, env))
    };
    let (argv, env) = match build() {
        Ok(x) => x,
        Err(e) => return e,
    };
    // From here until the next image has its handlers, a signal waits. An
    // image that would not unblock them must not get them blocked (it would
    // keep them so for good): for it they are unblocked, and a signal during
    // the exec may end the primary, as it always did.
    let mask = if hold { crate::sys::signal_mask::block() } else { crate::sys::signal_mask::current() };
    if !hold {
        crate::sys::signal_mask::unblock();
    }
    let err = if exe.0 < 0 {
        nix::errno::Errno::EBADF // what fexecve says
    } else {
        // SAFETY: borrowed only for the fexecve call, which replaces this
        // process or fails; the caller holds the fd open (the checked new
        // binary, or the old executable's handle kept for a rollback).
        nix::unistd::fexecve(unsafe { std::os::fd::BorrowedFd::borrow_raw(exe.0) }, &argv, &env).unwrap_err()
    };
    crate::sys::signal_mask::restore(&mask);
    anyhow!("exec {}: {err}", exe.1.display())
}

/// A handover taken: the state, its fds, what to give back if the new
/// image cannot serve, and (after a rollback) why the upgrade failed.
pub struct TakeOver {
    pub state: State,
    pub inherited: Inherited,
    pub handback: Handback,
    pub rollback: Option<String>,
}

/// A handover that could not be taken: what to give back, and why.
pub struct Refused {
    pub handback: Option<Handback>,
    pub why: String,
}

/// What a new image keeps until it serves, to give everything back to the
/// old one: the state as it came, and a copy of every fd it names (the
/// originals may be closed by a failure part-way through the adoption).
/// Dropped (closing the copies) once the new image serves.
pub struct Handback {
    text: String,
    /// Original fd number -> its copy. Empty: the originals are untouched.
    copies: Vec<(RawFd, OwnedFd)>,
    /// This image is itself a rollback: it gives up instead of going back
    /// and forth.
    is_rollback: bool,
}

impl Handback {
    /// Copies every fd of `state` (close-on-exec) before any is taken.
    fn copy_fds(&mut self, state: &State) -> Result<()> {
        use nix::fcntl::{fcntl, FcntlArg};
        let mut fds = state.fds();
        fds.retain(|fd| *fd != state.exe_fd);
        for fd in fds {
            if fd < 0 {
                anyhow::bail!("the state names fd {fd}");
            }
            // SAFETY: borrowed for this one fcntl; an fd that is not open
            // makes it fail with EBADF, reported as such.
            let copy = fcntl(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, FcntlArg::F_DUPFD_CLOEXEC(3))
                .with_context(|| format!("handed-over fd {fd}"))?;
            // SAFETY: F_DUPFD_CLOEXEC just returned this new fd, owned by nobody else.
            self.copies.push((fd, unsafe { OwnedFd::from_raw_fd(copy) }));
        }
        Ok(())
    }

    /// Re-executes the previous image's executable with the same state,
    /// the fds renumbered to the copies. Returns only on failure.
    pub fn rollback(&self, why: &str) -> anyhow::Error {
        if self.is_rollback {
            // Not back and forth: a rolled-back image that fails gives up.
            return anyhow!("cannot take over from the previous image: {why}");
        }
        let mut state: State = match serde_json::from_str(&self.text) {
            Ok(s) => s,
            Err(e) => return anyhow!("cannot take over from the previous image: {why} (and its state: {e})"),
        };
        let copies: std::collections::HashMap<RawFd, RawFd> =
            self.copies.iter().map(|(fd, copy)| (*fd, std::os::fd::AsRawFd::as_raw_fd(copy))).collect();
        state.renumber(|fd| copies.get(&fd).copied().unwrap_or(fd));
        // Closed by this image already; nothing for the old one to close.
        state.new_exe_fd = None;
        let memfd = match serde_json::to_vec(&state).map_err(anyhow::Error::from).and_then(|b| write_memfd(&b)) {
            Ok(m) => m,
            Err(e) => return e.context(format!("rolling back after: {why}")),
        };
        let mut pass = state.fds();
        pass.retain(|fd| *fd != state.exe_fd);
        pass.push(std::os::fd::AsRawFd::as_raw_fd(&memfd));
        for fd in &pass {
            let _ = set_cloexec(*fd, false);
        }
        let memfd_raw = std::os::fd::AsRawFd::as_raw_fd(&memfd);
        let err = exec((state.exe_fd, &state.exe), &state.argv, memfd_raw, Some(why), state.holds_signals);
        for fd in &pass {
            let _ = set_cloexec(*fd, true);
        }
        err.context(format!("rolling back after: {why}"))
    }
}

/// Reads the handed-over state (started with [`STATE_ENV`]), owning the
/// memfd; None when this is no handover.
fn incoming() -> Option<Result<(String, Option<String>), String>> {
    let fd: RawFd = std::env::var(STATE_ENV).ok()?.parse().ok()?;
    let why_rollback = std::env::var(ROLLBACK_ENV).ok();
    // Single-threaded still: the environment may be edited.
    std::env::remove_var(STATE_ENV);
    std::env::remove_var(ROLLBACK_ENV);
    let mut text = String::new();
    // SAFETY: STATE_ENV names the memfd the previous image opened for this
    // one and handed over; nothing else in this process owns that fd.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    Some(match f.read_to_string(&mut text) {
        Ok(_) => Ok((text, why_rollback)),
        Err(e) => Err(format!("reading the handed-over state: {e}")),
    })
}

/// What `main` does when started with [`STATE_ENV`]: read the state and
/// own its fds. On failure the caller rolls back with [`rollback`].
pub fn take_over() -> Option<Result<TakeOver, Refused>> {
    let (text, why_rollback) = match incoming()? {
        Ok(x) => x,
        Err(why) => return Some(Err(Refused { handback: None, why })),
    };
    let mut handback = Handback { text, copies: Vec::new(), is_rollback: why_rollback.is_some() };
    let state: State = match check_state(&handback.text) {
        Ok(s) => s,
        Err(why) => return Some(Err(Refused { handback: Some(handback), why })),
    };
    // Fault injection for the rollback test: a new image that refuses.
    if std::env::var_os(FAIL_TAKEOVER_ENV).is_some_and(|v| v != "adopt") && why_rollback.is_none() {
        let why = format!("{FAIL_TAKEOVER_ENV} is set");
        return Some(Err(Refused { handback: Some(handback), why }));
    }
    if let Err(e) = handback.copy_fds(&state) {
        // Nothing taken: the originals go back as they are.
        handback.copies.clear();
        return Some(Err(Refused { handback: Some(handback), why: format!("{e:#}") }));
    }
    // SAFETY: the state was read from the memfd the previous image wrote,
    // so its fds are the ones it handed over, owned by nobody here yet.
    match unsafe { state.take_fds() } {
        Ok(inherited) => Some(Ok(TakeOver { state, inherited, handback, rollback: why_rollback })),
        Err(e) => Some(Err(Refused { handback: Some(handback), why: format!("{e:#}") })),
    }
}

/// A new image that fails before it could even read its command line
/// (a release that rejects an option the primary runs with): if this is a
/// handover, give everything back to the previous image. None when it is
/// not a handover; else the error of a rollback that could not be done.
pub fn give_back_early(why: &str) -> Option<anyhow::Error> {
    let handback = match incoming()? {
        Ok((text, why_rollback)) => Handback { text, copies: Vec::new(), is_rollback: why_rollback.is_some() },
        Err(e) => return Some(anyhow!("{why}; and {e}")),
    };
    Some(handback.rollback(why))
}

/// The new image could not take over: give everything back to the old one.
pub fn rollback(r: Refused) -> anyhow::Error {
    match r.handback {
        Some(h) => h.rollback(&r.why),
        None => anyhow!("cannot take over from the previous image: {}", r.why),
    }
}

/// The last line of `upgrade-check`'s answer: what the new binary is and
/// can do, for the old image to read (the first line is for people).
/// Fields may be added; an image ignores those it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// The package version.
    pub hotswap: String,
    /// Its [`STATE_FORMAT`].
    pub state_format: u32,
    /// Its [`HANDOVER_LEVEL`].
    pub handover: u32,
}

impl CheckAnswer {
    /// This binary's answer.
    pub fn this() -> Self {
        CheckAnswer {
            hotswap: env!("CARGO_PKG_VERSION").to_string(),
            state_format: STATE_FORMAT,
            handover: HANDOVER_LEVEL,
        }
    }
}

/// What a new image's side of the handover can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// It unblocks the signals held across the exec.
    pub holds_signals: bool,
}

/// Reads a new binary's `upgrade-check` answer: its [`CheckAnswer`] line's
/// level, or, from an image that has none, the [`HOLDS_SIGNALS`] phrase
/// (level 1) or nothing (level 0).
pub fn capabilities(answer: &str) -> Capabilities {
    let declared = answer.lines().rev().find_map(|l| serde_json::from_str::<CheckAnswer>(l.trim()).ok());
    let level = match declared {
        Some(a) => a.handover,
        None if answer.contains(HOLDS_SIGNALS) => 1,
        None => 0,
    };
    Capabilities { holds_signals: level >= HOLDS_SIGNALS_SINCE }
}

/// The human line of an `upgrade-check` answer, for the log.
pub fn answer_summary(answer: &str) -> &str {
    answer.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('{')).unwrap_or(answer.trim())
}

/// Parses a state, refusing another format version.
pub fn check_state(text: &str) -> std::result::Result<State, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("unreadable state: {e}"))?;
    let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if format != u64::from(STATE_FORMAT) {
        return Err(format!("state format {format} is not this binary's ({STATE_FORMAT})"));
    }
    serde_json::from_value(v).map_err(|e| format!("unreadable state: {e}"))
}

/// `hotswap upgrade-check`: run by the old image on the new binary, with
/// the state on stdin. `parse_argv` is the new binary's own command-line
/// parser: the primary's argv must parse as it will after the exec.
pub fn check_main(parse_argv: impl Fn(&[OsString]) -> std::result::Result<(), String>) -> std::process::ExitCode {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("reading the state: {e}");
        return std::process::ExitCode::FAILURE;
    }
    match check_state(&text).and_then(|state| parse_argv(&state.argv)) {
        Ok(()) => {
            println!("hotswap {} (state format {STATE_FORMAT}, {HOLDS_SIGNALS})", env!("CARGO_PKG_VERSION"));
            match serde_json::to_string(&CheckAnswer::this()) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("writing the answer: {e}"),
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_binarys_answer_declares_that_it_holds_signals() {
        let line = serde_json::to_string(&CheckAnswer::this()).unwrap();
        let answer = format!("hotswap 9.9.9 (state format 1, {HOLDS_SIGNALS})\n{line}\n");
        assert_eq!(capabilities(&answer), Capabilities { holds_signals: true });
        assert_eq!(answer_summary(&answer), "hotswap 9.9.9 (state format 1, unblocks held signals)");
    }

    #[test]
    fn the_declared_level_decides_not_the_phrase() {
        // A future image that says the phrase in passing but declares level 0.
        let answer = format!("{HOLDS_SIGNALS}?\n{{\"hotswap\":\"2.0.0\",\"state_format\":1,\"handover\":0}}");
        assert!(!capabilities(&answer).holds_signals);
        // A later level, with fields this image does not know.
        let answer = "hotswap 3.0.0\n{\"hotswap\":\"3.0.0\",\"state_format\":1,\"handover\":7,\"new\":true}";
        assert!(capabilities(answer).holds_signals);
        // The declaration alone, without any human line.
        let answer = serde_json::to_string(&CheckAnswer::this()).unwrap();
        assert!(capabilities(&answer).holds_signals);
    }

    #[test]
    fn older_images_are_read_by_their_phrase() {
        // Images before the CheckAnswer line: level 1 by the phrase ...
        assert!(capabilities("hotswap 0.1.0 (state format 1, unblocks held signals)").holds_signals);
        // ... and level 0 without it.
        assert!(!capabilities("hotswap 0.1.0 (state format 1)").holds_signals);
        assert!(!capabilities("").holds_signals);
        assert_eq!(answer_summary("hotswap 0.1.0 (state format 1)\n"), "hotswap 0.1.0 (state format 1)");
    }

    #[test]
    fn other_state_formats_are_refused() {
        assert!(check_state("{\"format\":99}").unwrap_err().contains("format 99"));
        assert!(check_state("garbage").unwrap_err().contains("unreadable"));
    }
}
