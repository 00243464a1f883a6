//! Copies of another process's file descriptors: `pidfd_open(2)` and
//! `pidfd_getfd(2)` (Linux 5.6).
//!
//! Why: the primary looks at the connections a worker accepted (`--ready
//! accepting`, [`super::acceptors`]) and holds copies of a retiring
//! worker's connections ([`super::rescue`]). A copy is another fd for the
//! same open socket: the socket stays open until every copy is closed.
//! Permission is that of `ptrace` (`PTRACE_MODE_ATTACH_REALCREDS`): a
//! worker's parent of the same user has it unless a security policy
//! (Yama, seccomp, a setuid worker) says otherwise; then `EPERM`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A pidfd for `pid`.
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A copy of the process's fd `fd` (close-on-exec, as pidfd_getfd makes it).
pub fn copy_fd(process: &OwnedFd, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags and returns
    // a new fd or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, process.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

/// Whether this process may take copies at all: a copy of one of its own
/// fds. Refused (`ENOSYS`: a kernel before 5.6 or a seccomp profile that
/// does not know the call; `EPERM`) means rescue cannot work for any
/// worker, known before the first one stops. (A worker of another user is
/// refused only when its own copies are asked for.)
pub fn probe() -> io::Result<()> {
    let me = open(std::process::id() as i32)?;
    copy_fd(&me, me.as_raw_fd()).map(drop)
}
