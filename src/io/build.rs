//! The `--build` command: run through the shell before a reload starts
//! workers, its output shown behind a `[build]` prefix.
//!
//! It runs in its own process group (a stop kills its whole tree, and the
//! supervisor registers the group with the guardian, so a SIGKILL of the
//! primary does too) with the primary's environment, and is reaped by the
//! supervisor like every child: its exit arrives by pid. What it leaves
//! running in its group when it exits is killed then.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use nix::unistd::Pid;

use super::log_format::LineLabel;
use super::output::{Output, Stream};

#[derive(Debug)]
pub struct Build {
    pub pid: Pid,
    pub started: Instant,
    /// Files changed while it ran: build again before reloading.
    pub again: bool,
}

impl Build {
    pub fn start(command: &str, output: &Output) -> Result<Build> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(command).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        // A primary that is itself some hotswap's worker: what the build
        // leaves behind must not pass for one of this primary's workers'.
        cmd.env_remove("HOTSWAP_WORKER_ID");
        #[cfg(target_os = "linux")]
        // SAFETY: the pre_exec closure makes one async-signal-safe syscall
        // (prctl) and allocates nothing.
        unsafe {
            // Spawned from the primary's main thread, like the workers.
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting the build `{command}`"))?;
        let pid = Pid::from_raw(child.id() as i32);
        if let Some(out) = child.stdout.take() {
            output.forward(OwnedFd::from(out), Stream::Stdout, LineLabel::build(), &[], None);
        }
        if let Some(err) = child.stderr.take() {
            output.forward(OwnedFd::from(err), Stream::Stderr, LineLabel::build(), &[], None);
        }
        // The supervisor reaps it by pid; the handle is not needed.
        drop(child);
        Ok(Build { pid, started: Instant::now(), again: false })
    }

    /// Stops the build and everything it started in its group, and reaps
    /// it if it is gone within 50 ms (else it is reaped as an orphan).
    pub fn kill(&self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let _ = nix::sys::signal::killpg(self.pid, nix::sys::signal::Signal::SIGKILL);
        let deadline = Instant::now() + std::time::Duration::from_millis(50);
        while Instant::now() < deadline {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                _ => return,
            }
        }
    }
}
