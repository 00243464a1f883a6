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

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

pub struct Guardian {
    pipe: std::fs::File,
    pid: Pid,
}

impl Guardian {
    /// Starts the guardian process from the primary's own binary.
    pub fn start() -> Result<Guardian> {
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
        Ok(Guardian { pipe: write.into(), pid: Pid::from_raw(child.id() as i32) })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The pipe's write end, handed over on self-upgrade.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.pipe)
    }

    /// Takes over the guardian of the previous image (self-upgrade).
    pub fn adopt(pid: i32, pipe: OwnedFd) -> Guardian {
        Guardian { pipe: pipe.into(), pid: Pid::from_raw(pid) }
    }

    /// A new worker's process group, to kill if the primary dies.
    pub fn protect(&mut self, pgid: Pid) {
        let _ = writeln!(self.pipe, "+{pgid}");
    }

    /// A worker was reaped; its group id may be reused.
    pub fn release(&mut self, pgid: Pid) {
        let _ = writeln!(self.pipe, "-{pgid}");
    }

    /// The primary exits in order: the guardian leaves without killing.
    pub fn dismiss(&mut self) {
        let _ = writeln!(self.pipe, "exit");
    }
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
