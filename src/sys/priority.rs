//! CPU priority (nice values) for `--warmup-nice`: a new worker starts at
//! a lower priority, so that its warm-up (loading code, filling caches,
//! JIT) takes CPU from the workers serving only when they leave some; once
//! it is ready, it gets the primary's priority back.
//!
//! A nice value is per thread on Linux: the child sets its own before
//! `exec` (in [`super::spawn`]), and every process and thread it creates
//! inherits it. Giving it back means setting every thread of every process
//! of the worker's group, one by one ([`restore_group`]); a thread whose
//! nice is no longer the warm-up value changed it itself and keeps it.
//!
//! Lowering a nice value (raising the priority) needs `CAP_SYS_NICE` or an
//! `RLIMIT_NICE` that allows it ([`can_restore`]): without either, workers
//! are not started lower, since they could never get back.

use std::io;

/// The calling thread's nice value.
pub fn current() -> i32 {
    // SAFETY: getpriority has no memory arguments. -1 is also a valid
    // value; errno tells them apart, and for the caller itself it cannot fail.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Whether this process may set a thread's nice value back down to
/// `original`.
pub fn can_restore(original: i32) -> bool {
    if has_cap_sys_nice() {
        return true;
    }
    rlimit_allows(original)
}

/// RLIMIT_NICE's ceiling is 20 - rlim_cur.
#[cfg(target_os = "linux")]
fn rlimit_allows(original: i32) -> bool {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut lim) } != 0 {
        return false;
    }
    (20 - original) as libc::rlim_t <= lim.rlim_cur
}

#[cfg(not(target_os = "linux"))]
fn rlimit_allows(_: i32) -> bool {
    false
}

#[cfg(target_os = "linux")]
fn has_cap_sys_nice() -> bool {
    // linux/capability.h; libc has no capability numbers.
    const CAP_SYS_NICE: u32 = 23;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

#[cfg(not(target_os = "linux"))]
fn has_cap_sys_nice() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Sets every thread of process group `pgid` whose nice value is `warm`
/// back to `original`; returns how many were set.
#[cfg(target_os = "linux")]
pub fn restore_group(pgid: i32, warm: i32, original: i32) -> io::Result<usize> {
    let mut done = 0;
    for pid in super::acceptors::group::group_members(pgid)? {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue }; // gone
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::id_t>().ok()) else { continue };
            if restore(tid, warm, original)? {
                done += 1;
            }
        }
    }
    Ok(done)
}

/// The same for the worker's main process only, where threads cannot be
/// listed.
#[cfg(not(target_os = "linux"))]
pub fn restore_group(pgid: i32, warm: i32, original: i32) -> io::Result<usize> {
    restore(pgid as libc::id_t, warm, original).map(usize::from)
}

/// One thread (or process): back to `original` if it is at `warm`.
fn restore(id: libc::id_t, warm: i32, original: i32) -> io::Result<bool> {
    nix::errno::Errno::clear();
    // SAFETY: getpriority and setpriority take no pointers.
    let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, id) };
    if now == -1 && nix::errno::Errno::last_raw() != 0 {
        return Ok(false); // gone
    }
    if now != warm {
        return Ok(false); // changed by the worker itself
    }
    // SAFETY: as above.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, id, original) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread started at a lower priority gets this one back; one that
    /// chose its own keeps it.
    #[test]
    fn threads_at_the_warm_up_value_are_restored_and_others_kept() {
        let original = current();
        if original > 15 || !can_restore(original) {
            return; // cannot raise priority back here
        }
        let warm = original + 3;
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: plain syscalls on the calling thread.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
            unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, warm) };
            tx.send(tid).unwrap();
            done_rx.recv().unwrap();
            unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
        });
        let tid = rx.recv().unwrap();
        assert!(!restore(tid, warm + 1, original).unwrap(), "not at the warm-up value: kept");
        assert!(restore(tid, warm, original).unwrap());
        done_tx.send(()).unwrap();
        assert_eq!(t.join().unwrap(), original);
    }
}
