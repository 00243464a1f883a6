//! Reaping children by pid, never "any child": a child that a library
//! waits for itself (tokio's) must keep its exit status. As a child
//! subreaper the primary also collects the orphans handed to it: zombies
//! among its children that it did not start.

use std::collections::HashSet;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::types::Exit;

/// Makes this process the parent of every orphan among its descendants
/// (a worker's child whose own parent exited), so that it reaps them, as
/// PID 1 of a container does for its whole namespace anyway. Without it
/// they would go to the machine's init, with nobody to vouch that it reaps.
/// The attribute survives the in-place exec of a self-upgrade; setting it
/// again there is harmless.
pub fn become_subreaper() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        tracing::warn!(
            "cannot become a child subreaper: {}; orphans of workers go to init",
            std::io::Error::last_os_error()
        );
    }
}

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

/// Reaps zombie children that are neither `known` nor `foreign`.
pub fn orphans(known: &[Pid], foreign: &HashSet<i32>) {
    for pid in orphan_zombies(known, foreign) {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => tracing::debug!("reaped orphan {pid} (exit code {code})"),
            Ok(WaitStatus::Signaled(_, sig, _)) => tracing::debug!("reaped orphan {pid} ({sig})"),
            _ => {}
        }
    }
}

/// Zombies among our children that are not in `known` nor `foreign`.
fn orphan_zombies(known: &[Pid], foreign: &HashSet<i32>) -> Vec<Pid> {
    let me = std::process::id();
    let mut children: Vec<i32> = Vec::new();
    // Each thread's children (Linux 3.5+ with CONFIG_PROC_CHILDREN) ...
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) {
        for t in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
                children.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    children
        .into_iter()
        .filter(|p| !known.iter().any(|k| k.as_raw() == *p) && !foreign.contains(p))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')))
                .unwrap_or(false)
        })
        .map(Pid::from_raw)
        .collect()
}
