//! The guardian: makes sure no worker's process tree outlives the primary,
//! even when the primary is killed with SIGKILL.
//!
//! A worker gets SIGKILL from the kernel when the primary dies (its
//! parent-death signal), but that reaches only the worker itself, not the
//! children it started (`npm start`, a shell wrapper, a pre-fork server).
//! So the primary starts one tiny helper process, `hotswap guardian`, and
//! tells it over a pipe which process groups are alive. The helper blocks on
//! that pipe; when it reads end of file without having been dismissed, the
//! primary is gone, and it kills every group it was told about.
//!
//! The write end is close-on-exec, so only the primary holds it: its death,
//! however it happens, is the end of file.
//!
//! The guardian is the primary's child: if it exits (killed by someone),
//! the primary reaps it and starts a new one told the whole set of groups;
//! one that is stopped (SIGSTOP) or stops reading is replaced the same way,
//! within a second (the primary's tick). The primary never waits on the
//! pipe: writes are non-blocking, with a bounded backlog.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Lines kept for a guardian that does not read its pipe. Past this the
/// guardian counts as stalled: it is replaced (the new one is told the
/// whole set of groups), so dropping lines loses nothing.
pub const MAX_BACKLOG: usize = 4096;

/// The primary's handle on its guardian: the current set of groups, and a
/// non-blocking pipe with a bounded backlog, so that a guardian that stops
/// reading (SIGSTOP, a debugger) never blocks the event loop.
pub struct Guardian {
    pipe: std::fs::File,
    pid: Pid,
    /// Every process group the guardian must kill if the primary dies.
    groups: BTreeSet<i32>,
    /// Lines the pipe did not take yet.
    backlog: VecDeque<String>,
    /// The backlog overflowed: replace this guardian.
    overflowed: bool,
    /// Guardians replaced and killed, not reaped yet.
    retired: Vec<Pid>,
    /// The current guardian exited and was reaped (a restart failed).
    gone: bool,
}

impl Guardian {
    /// Starts the guardian process from the primary's own binary.
    pub fn start() -> Result<Guardian> {
        let (pipe, pid) = spawn()?;
        Ok(Guardian {
            pipe,
            pid,
            groups: BTreeSet::new(),
            backlog: VecDeque::new(),
            overflowed: false,
            retired: Vec::new(),
            gone: false,
        })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Guardians replaced and not reaped yet.
    pub fn retired_pids(&self) -> &[Pid] {
        &self.retired
    }

    /// Whether `pid` is a guardian this primary replaced (reaped quietly).
    pub fn retired(&mut self, pid: Pid) -> bool {
        let was = self.retired.contains(&pid);
        self.retired.retain(|p| *p != pid);
        was
    }

    /// The pipe's write end, handed over on self-upgrade.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.pipe)
    }

    /// The groups and the lines not yet written, handed over on self-upgrade.
    pub fn snapshot(&self) -> (Vec<i32>, Vec<String>) {
        (self.groups.iter().copied().collect(), self.backlog.iter().cloned().collect())
    }

    /// Takes over the guardian of the previous image (self-upgrade), with
    /// the groups it protects and the lines it has not read yet.
    pub fn adopt(pid: i32, pipe: OwnedFd, groups: Vec<i32>, backlog: Vec<String>) -> Guardian {
        let pipe = std::fs::File::from(pipe);
        let _ = set_nonblocking(&pipe);
        let mut g = Guardian {
            pipe,
            pid: Pid::from_raw(pid),
            groups: groups.into_iter().collect(),
            backlog: backlog.into(),
            overflowed: false,
            retired: Vec::new(),
            gone: false,
        };
        g.flush();
        g
    }

    /// A new process group (a worker's, the build's, an adopted orphan's),
    /// to kill if the primary dies.
    pub fn protect(&mut self, pgid: Pid) {
        if self.groups.insert(pgid.as_raw()) {
            self.send(format!("+{pgid}\n"));
        }
    }

    /// The group is gone (its leader was reaped); its id may be reused.
    pub fn release(&mut self, pgid: Pid) {
        if self.groups.remove(&pgid.as_raw()) {
            self.send(format!("-{pgid}\n"));
        }
    }

    /// The primary exits in order: the guardian leaves without killing.
    /// (Best effort: a guardian that cannot be told kills groups that are
    /// already gone.)
    pub fn dismiss(&mut self) {
        self.send("exit\n".into());
    }

    /// Whether this guardian must be replaced: it stopped reading (its
    /// backlog overflowed) or it is stopped (`T` in /proc: SIGSTOP,
    /// a debugger), so it could not act if the primary died now.
    pub fn stalled(&mut self) -> Option<&'static str> {
        self.flush();
        if self.gone {
            return Some("is gone");
        }
        if self.overflowed {
            return Some("stopped reading its pipe");
        }
        use procfs_core::FromRead;
        let stat = procfs_core::process::Stat::from_file(format!("/proc/{}/stat", self.pid)).ok()?;
        matches!(stat.state, 'T' | 't').then_some("is stopped")
    }

    /// The guardian process was reaped: its pid may be someone else's now.
    pub fn gone(&mut self) {
        self.gone = true;
    }

    /// Replaces the guardian by a new one told the whole current set of
    /// groups. The old one, unless gone already, is killed and reaped later.
    pub fn restart(&mut self) -> Result<()> {
        let (pipe, pid) = spawn()?;
        let old = std::mem::replace(&mut self.pid, pid);
        // Killed before its pipe closes: a live old guardian would read end
        // of file and kill every group.
        if !std::mem::take(&mut self.gone) && kill(old, Signal::SIGKILL).is_ok() {
            self.retired.push(old);
        }
        self.pipe = pipe;
        self.backlog.clear();
        self.overflowed = false;
        let lines: Vec<String> = self.groups.iter().map(|g| format!("+{g}\n")).collect();
        for l in lines {
            self.send(l);
        }
        Ok(())
    }

    fn send(&mut self, line: String) {
        if self.backlog.len() >= MAX_BACKLOG {
            // Not read for thousands of lines: replaced on the next check,
            // and the replacement learns the whole set.
            self.overflowed = true;
            return;
        }
        self.backlog.push_back(line);
        self.flush();
    }

    /// Writes what the pipe takes now; never waits. Lines are shorter than
    /// PIPE_BUF, so each is written whole or not at all.
    fn flush(&mut self) {
        while let Some(line) = self.backlog.front() {
            match self.pipe.write(line.as_bytes()) {
                Ok(n) if n == line.len() => {
                    self.backlog.pop_front();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Full (WouldBlock), or the guardian is gone (EPIPE: its exit
                // is reaped and it is restarted with the whole set).
                _ => break,
            }
        }
    }
}

fn set_nonblocking(f: &std::fs::File) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
    fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

/// Starts a guardian process; returns the pipe's write end (non-blocking,
/// close-on-exec) and its pid.
fn spawn() -> Result<(std::fs::File, Pid)> {
    let (read, write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the guardian pipe")?;
    // /proc/self/exe works even when a deploy replaced the binary on disk.
    let exe = if cfg!(target_os = "linux") { "/proc/self/exe".into() } else { std::env::current_exe()? };
    let child = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .arg("guardian")
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            // Not in the terminal's foreground group: Ctrl-C is for the primary.
            .process_group(0)
            .spawn()
            .context("starting the guardian process")?
    };
    let pipe = std::fs::File::from(write);
    set_nonblocking(&pipe).context("the guardian pipe")?;
    Ok((pipe, Pid::from_raw(child.id() as i32)))
}

/// The guardian process itself (`hotswap guardian`): reads its stdin until
/// dismissed or until end of file, then kills what it was told is alive.
pub fn run() -> ! {
    // Signals meant for the primary's terminal or unit are not for us.
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        // SAFETY: ignoring a signal installs no handler code, so nothing
        // can run at an unsafe moment.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
    }
    let mut groups = BTreeSet::new();
    use std::io::BufRead;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.split_at_checked(1) {
            Some(("+", pid)) => {
                if let Ok(p) = pid.parse::<i32>() {
                    groups.insert(p);
                }
            }
            Some(("-", pid)) => {
                if let Ok(p) = pid.parse::<i32>() {
                    groups.remove(&p);
                }
            }
            _ if line == "exit" => std::process::exit(0),
            _ => {}
        }
    }
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guardian_that_does_not_read_never_blocks_the_primary() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // Our own pid stands in for the guardian: running, never reading.
        let mut g = Guardian::adopt(std::process::id() as i32, write, vec![], vec![]);
        let started = std::time::Instant::now();
        // Far more than a pipe holds (64 KiB; about 8 bytes a line).
        for pgid in 2..100_000 {
            g.protect(Pid::from_raw(pgid));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(g.backlog.len() <= MAX_BACKLOG);
        assert_eq!(g.stalled(), Some("stopped reading its pipe"));
        // The whole set is kept for the replacement.
        assert_eq!(g.snapshot().0.len(), 99_998);
        drop(read);
    }
}
