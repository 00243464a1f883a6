//! The primary's file-descriptor budget.
//!
//! The primary holds about six fds per worker (its IPC end, two output
//! pipes, and the copies kept for a self-upgrade), plus the listeners, the
//! sockets bound on demand for Node workers and the control connections:
//! under the common soft `RLIMIT_NOFILE` of 1024, `-w 200` would fail at
//! worker 166. So at start the soft limit is raised to the hard one
//! ([`raise`]); workers get back the soft limit hotswap was given
//! ([`worker_soft`], restored in the child before `execve`), as they would
//! without hotswap. And every new fd a worker or a Node listen would cost
//! is checked against a reserve ([`room`]): when fds run low, a new worker
//! or on-demand socket is refused with a clear error, never the control
//! socket (`hotswap stop`) or the log.

// `rlim_t` is `u64` on Linux but not on every Unix: the casts stay.
#![allow(clippy::unnecessary_cast)]

use std::sync::atomic::{AtomicU64, Ordering};

/// Fds kept free for the control socket (a `hotswap stop` must always get
/// through), `/metrics`, the log, and reading `/proc`.
pub const RESERVE: u64 = 64;

/// The soft limit hotswap was started with, for its workers (0: unknown,
/// leave the limit as it is).
static WORKER_SOFT: AtomicU64 = AtomicU64::new(0);

/// What [`raise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit hotswap was given (what workers get).
    pub was: u64,
    /// The soft limit now.
    pub now: u64,
}

fn get() -> std::io::Result<libc::rlimit> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, and remembers the
/// soft limit it was for the workers. A limit that cannot be raised (some
/// systems refuse `RLIM_INFINITY`) stays as it was.
pub fn raise() -> std::io::Result<Raised> {
    let lim = get()?;
    WORKER_SOFT.store(lim.rlim_cur as u64, Ordering::Relaxed);
    if lim.rlim_cur >= lim.rlim_max {
        return Ok(Raised { was: lim.rlim_cur as u64, now: lim.rlim_cur as u64 });
    }
    let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Ok(Raised { was: lim.rlim_cur as u64, now: lim.rlim_cur as u64 });
    }
    Ok(Raised { was: lim.rlim_cur as u64, now: lim.rlim_max as u64 })
}

/// The soft limit workers get: what hotswap was given (0 if unknown).
pub fn worker_soft() -> u64 {
    WORKER_SOFT.load(Ordering::Relaxed)
}

/// Sets the soft limit workers get: a new image after a self-upgrade was
/// started with the raised limit, and learns the original from the old one.
pub fn set_worker_soft(soft: u64) {
    WORKER_SOFT.store(soft, Ordering::Relaxed);
}

/// In the child between fork and exec: gives the worker back the soft limit
/// hotswap was started with. Only async-signal-safe calls.
///
/// # Safety
/// Call only in a forked child before `execve` (or anywhere: it only makes
/// two system calls on a stack struct).
pub unsafe fn restore_in_child(soft: u64) {
    if soft == 0 {
        return;
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && (lim.rlim_cur as u64) != soft {
        lim.rlim_cur = (soft as libc::rlim_t).min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// How many fds the primary has open (Linux: the entries of
/// `/proc/self/fd`; elsewhere unknown, `None`).
pub fn in_use() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // The directory's own fd is counted too: one over, on the safe side.
        std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Whether `need` more fds leave [`RESERVE`] free under the soft limit;
/// `Err` says how many are open, of how many.
pub fn room(need: u64) -> Result<(), String> {
    let (Some(open), Ok(lim)) = (in_use(), get()) else { return Ok(()) };
    check(open, need, lim.rlim_cur as u64)
}

/// The decision of [`room`].
pub fn check(open: u64, need: u64, limit: u64) -> Result<(), String> {
    if open.saturating_add(need).saturating_add(RESERVE) <= limit {
        return Ok(());
    }
    Err(format!(
        "too few file descriptors left: {open} of {limit} open (RLIMIT_NOFILE), {need} more wanted \
         and {RESERVE} kept for the control socket and the log; raise the limit (`ulimit -n`, \
         LimitNOFILE= under systemd)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept() {
        assert!(check(100, 10, 1024).is_ok());
        assert!(check(1024 - RESERVE - 10, 10, 1024).is_ok());
        let e = check(1024 - RESERVE - 9, 10, 1024).unwrap_err();
        assert!(e.contains("of 1024 open") && e.contains("control socket"), "{e}");
        assert!(check(5000, 1, u64::MAX).is_ok(), "no limit (RLIM_INFINITY)");
    }

    #[test]
    fn the_limit_is_raised_and_the_original_kept_for_workers() {
        let before = get().unwrap();
        let r = raise().unwrap();
        assert_eq!(r.was, before.rlim_cur as u64);
        assert_eq!(worker_soft(), r.was);
        assert_eq!(get().unwrap().rlim_cur as u64, r.now);
        assert!(in_use().is_none_or(|n| n >= 3));
    }
}
