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
//! 1. `NEW upgrade-check` runs first with the state on its stdin: the new
//!    binary must start, parse the state and agree on [`STATE_FORMAT`],
//!    within [`CHECK_TIMEOUT`]. Any failure ends the upgrade there; nothing
//!    changed.
//! 2. The state (settings, workers, generations, restart counters, last
//!    reload) is written to a memfd; close-on-exec is cleared on exactly the
//!    listeners, the control socket, the `--metrics` socket, the guardian's pipe, every worker's IPC
//!    end and output pipes, the memfd, the waiting client's connection, the
//!    `hotswap events` clients' connections and a handle on the old
//!    executable; then `execve` in place.
//! 3. The new image adopts all of it by pid (it is still every worker's
//!    parent) and answers the client. If it cannot, it re-executes the old
//!    executable from that handle with the same state (a rollback), and the
//!    old version answers that the upgrade failed.
//!
//! Only a running reload or stop refuses an upgrade (try again after it).
//! What is lost: a worker's partial line of output or IPC not yet read when
//! the image changes, and pending timers (re-armed in full on adoption).

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
use crate::types::{ReadyVia, WorkerId, WorkerState};

/// Version of [`State`]; an image refuses a state of another version.
pub const STATE_FORMAT: u32 = 1;
/// The fd of the memfd holding the state, for the next image.
pub const STATE_ENV: &str = "HOTSWAP_UPGRADE_STATE";
/// Set when a new image gave the state back: why.
pub const ROLLBACK_ENV: &str = "HOTSWAP_UPGRADE_ROLLBACK";
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
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
    pub control_fd: RawFd,
    pub guardian_pid: i32,
    pub guardian_fd: RawFd,
    pub workers: Vec<WorkerSnapshot>,
    /// `(restarts, crash streak)` of each slot.
    pub slots: Vec<(u32, u32)>,
    pub next_id: WorkerId,
    pub newest_generation: u64,
    pub serving_generation: u64,
    pub last_reload: Option<ReloadOutcome>,
    pub ever_ready: bool,
    pub announced: bool,
    /// The `--metrics` socket.
    #[serde(default)]
    pub metrics_fd: Option<RawFd>,
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
    /// The old image's executable, to go back to.
    pub exe_fd: RawFd,
    pub exe: PathBuf,
    pub argv: Vec<OsString>,
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
    pub ipc_fd: Option<RawFd>,
    pub stdout_fd: RawFd,
    pub stderr_fd: RawFd,
    /// A Node.js cluster worker's state.
    #[serde(default)]
    pub node: Option<crate::types::NodeState>,
}

/// A worker's fds, owned again by the new image.
pub struct WorkerFds {
    pub ipc: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The fds of a [`State`], owned (and close-on-exec again).
pub struct Inherited {
    pub listeners: Vec<Listener>,
    /// Sockets bound on demand for Node workers, with the listen each serves.
    pub on_demand: Vec<(Target, Listener)>,
    pub control: OwnedFd,
    pub metrics: Option<OwnedFd>,
    pub guardian: OwnedFd,
    pub workers: Vec<WorkerFds>,
    pub reply: Option<OwnedFd>,
    pub subscribers: Vec<OwnedFd>,
}

impl State {
    /// Every fd the state names.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.listeners.iter().map(|l| l.fd).collect();
        v.extend([self.control_fd, self.guardian_fd, self.exe_fd]);
        v.extend(self.metrics_fd);
        for w in &self.workers {
            v.extend(w.ipc_fd);
            v.extend([w.stdout_fd, w.stderr_fd]);
        }
        v.extend(self.reply_fd);
        v.extend(&self.subscriber_fds);
        v
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
        let (mut listeners, mut on_demand) = (Vec::new(), Vec::new());
        for l in &self.listeners {
            let listener = Listener::adopt(own(l.fd)?, l.name.clone(), l.owned_path.clone())?;
            match &l.bound_for {
                Some(target) => on_demand.push((target.clone(), listener)),
                None => listeners.push(listener),
            }
        }
        let mut workers = Vec::new();
        for w in &self.workers {
            workers.push(WorkerFds {
                ipc: w.ipc_fd.map(own).transpose()?,
                stdout: own(w.stdout_fd)?,
                stderr: own(w.stderr_fd)?,
            });
        }
        // The old executable's handle is only for a rollback.
        let _ = set_cloexec(self.exe_fd, true);
        Ok(Inherited {
            listeners,
            on_demand,
            control: own(self.control_fd)?,
            metrics: self.metrics_fd.map(own).transpose()?,
            guardian: own(self.guardian_fd)?,
            workers,
            reply: self.reply_fd.map(own).transpose()?,
            subscribers: self.subscriber_fds.iter().map(|fd| own(*fd)).collect::<Result<_>>()?,
        })
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

/// `execve(exe, argv, env + STATE_ENV)`; with `rollback`, execs the old
/// executable by its fd instead. Returns only on failure.
pub fn exec(
    exe: &std::path::Path,
    argv: &[OsString],
    state_fd: RawFd,
    rollback: Option<(RawFd, &str)>,
) -> anyhow::Error {
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| anyhow!("a NUL byte in an argument or variable"));
    let build = || -> Result<(Vec<CString>, Vec<CString>)> {
        let argv: Vec<CString> = argv.iter().map(|a| cstr(a.as_bytes())).collect::<Result<_>>()?;
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != STATE_ENV && k != ROLLBACK_ENV)
            .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<_>>()?;
        env.push(cstr(format!("{STATE_ENV}={state_fd}").as_bytes())?);
        if let Some((_, why)) = rollback {
            env.push(cstr(format!("{ROLLBACK_ENV}={why}").as_bytes())?);
        }
        Ok((argv, env))
    };
    let (argv, env) = match build() {
        Ok(x) => x,
        Err(e) => return e,
    };
    let err = match rollback {
        Some((exe_fd, _)) if exe_fd < 0 => nix::errno::Errno::EBADF, // what fexecve says
        // SAFETY: borrowed only for the fexecve call, which replaces this
        // process or fails; exe_fd is the old executable's handle, which the
        // previous image handed over and this one keeps open for a rollback.
        Some((exe_fd, _)) => {
            nix::unistd::fexecve(unsafe { std::os::fd::BorrowedFd::borrow_raw(exe_fd) }, &argv, &env).unwrap_err()
        }
        None => match cstr(exe.as_os_str().as_bytes()) {
            Ok(path) => nix::unistd::execve(&path, &argv, &env).unwrap_err(),
            Err(e) => return e,
        },
    };
    anyhow!("exec {}: {err}", exe.display())
}

/// A handover taken: the state, its fds, and (after a rollback) why the
/// upgrade failed.
pub struct TakeOver {
    pub state: State,
    pub inherited: Inherited,
    pub rollback: Option<String>,
}

/// A handover that could not be taken: what to give back, and why.
pub struct Refused {
    pub state: Option<State>,
    pub state_fd: RawFd,
    pub why: String,
}

/// What `main` does when started with [`STATE_ENV`]: read the state and
/// own its fds. On failure the caller rolls back with [`rollback`].
pub fn take_over() -> Option<Result<TakeOver, Refused>> {
    let fd: RawFd = std::env::var(STATE_ENV).ok()?.parse().ok()?;
    let why_rollback = std::env::var(ROLLBACK_ENV).ok();
    // Single-threaded still: the environment may be edited.
    std::env::remove_var(STATE_ENV);
    std::env::remove_var(ROLLBACK_ENV);
    let mut text = String::new();
    // SAFETY: STATE_ENV names the memfd the previous image opened for this
    // one and handed over; nothing else in this process owns that fd.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    if let Err(e) = f.read_to_string(&mut text) {
        return Some(Err(Refused { state: None, state_fd: fd, why: format!("reading the handed-over state: {e}") }));
    }
    let _ = f.rewind();
    // Keep the memfd open (and inheritable) in case of a rollback.
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    let state: State = match check_state(&text) {
        Ok(s) => s,
        Err(why) => return Some(Err(Refused { state: serde_json::from_str(&text).ok(), state_fd: fd, why })),
    };
    // Fault injection for the rollback test: a new image that refuses.
    if std::env::var_os(FAIL_TAKEOVER_ENV).is_some() && why_rollback.is_none() {
        let why = format!("{FAIL_TAKEOVER_ENV} is set");
        return Some(Err(Refused { state: Some(state), state_fd: fd, why }));
    }
    // SAFETY: the state was read from the memfd the previous image wrote,
    // so its fds are the ones it handed over, owned by nobody here yet.
    match unsafe { state.take_fds() } {
        Ok(inherited) => {
            let _ = set_cloexec(fd, true);
            // SAFETY: the memfd was turned back into a raw fd above and is
            // no longer needed (no rollback): this closes it, once.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Some(Ok(TakeOver { state, inherited, rollback: why_rollback }))
        }
        Err(e) => Some(Err(Refused { state: Some(state), state_fd: fd, why: format!("{e:#}") })),
    }
}

/// The new image could not take over: give everything back to the old one.
pub fn rollback(r: Refused) -> anyhow::Error {
    match (r.state, std::env::var_os(ROLLBACK_ENV)) {
        // Not back and forth: a rolled-back image that fails gives up.
        (Some(s), None) => exec(&s.exe, &s.argv, r.state_fd, Some((s.exe_fd, &r.why))),
        _ => anyhow!("cannot take over from the previous image: {}", r.why),
    }
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

/// `hotswap upgrade-check`: run by the old image on the new binary.
pub fn check_main() -> std::process::ExitCode {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("reading the state: {e}");
        return std::process::ExitCode::FAILURE;
    }
    match check_state(&text) {
        Ok(_) => {
            println!("hotswap {} (state format {STATE_FORMAT})", env!("CARGO_PKG_VERSION"));
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
    fn other_state_formats_are_refused() {
        assert!(check_state("{\"format\":99}").unwrap_err().contains("format 99"));
        assert!(check_state("garbage").unwrap_err().contains("unreadable"));
    }
}
