//! Reaping children by pid, never "any child": a child that a library
//! waits for itself (tokio's) must keep its exit status. As a child
//! subreaper the primary also collects the orphans handed to it: zombies
//! among its children that it did not start.

use std::collections::HashSet;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::types::Exit;

/// Which of `known` have exited, and how.
pub fn exited(known: &[Pid]) -> Vec<(Pid, Exit)> {
    let mut out = Vec::new();
    for pid in known {
        loop {
            match waitpid(*pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => out.push((pid, Exit::Code(code))),
                Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid, Exit::Signal(sig))),
                Err(Errno::EINTR) => continue,
                _ => {}
            }
            break;
        }
    }
    out
}

/// Reaps zombie children that are neither `known` nor `foreign`; returns
/// the pids reaped.
pub fn orphans(known: &[Pid], foreign: &HashSet<i32>) -> Vec<i32> {
    let mut reaped = Vec::new();
    for pid in children().into_iter().filter(|p| !known.iter().any(|k| k.as_raw() == *p) && !foreign.contains(p)) {
        if !inspect(pid).is_some_and(|p| p.zombie) {
            continue;
        }
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => tracing::debug!("reaped orphan {pid} (exit code {code})"),
            Ok(WaitStatus::Signaled(_, sig, _)) => tracing::debug!("reaped orphan {pid} ({sig})"),
            _ => continue,
        }
        reaped.push(pid);
    }
    reaped
}

/// Makes the primary a child subreaper: a process that a worker leaves
/// behind (a daemon that forked, called `setsid` and forked again, whose
/// parent exited) becomes the primary's child instead of init's, so the
/// primary can find it, end it with its worker and reap it.
pub fn become_subreaper() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The primary's children, from every thread's `children` list in /proc
/// (Linux 3.5+ with CONFIG_PROC_CHILDREN; empty elsewhere).
pub fn children() -> Vec<i32> {
    let me = std::process::id();
    let mut children: Vec<i32> = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) {
        for t in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
                children.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    children.sort_unstable();
    children.dedup();
    children
}

/// What /proc says of a process: enough to adopt an orphan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub zombie: bool,
    pub pgid: i32,
    /// `HOTSWAP_WORKER_ID` in the environment it was started with: the
    /// worker whose tree it comes from (an environment is inherited through
    /// fork, `setsid` and exec unless the program clears it).
    pub worker: Option<u64>,
}

/// Reads `/proc/PID/stat` (state, process group) and `/proc/PID/environ`.
pub fn inspect(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, ppid, pgrp, ...
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?;
    let pgid = rest.nth(1)?.parse().ok()?;
    let zombie = state.starts_with('Z') || state.starts_with('X');
    let worker = if zombie { None } else { worker_of(pid) };
    Some(ProcInfo { zombie, pgid, worker })
}

fn worker_of(pid: i32) -> Option<u64> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"HOTSWAP_WORKER_ID="))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}
