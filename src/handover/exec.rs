//! The exec itself and the fd work around it: the state's memfd, the
//! close-on-exec flag cleared on exactly what is handed over, and
//! `fexecve` with the held signals. Used by both directions: the old image
//! executing the new one, and a new image rolling back to the old one.

use std::ffi::{CString, OsString};
use std::io::{Seek, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use anyhow::{anyhow, Result};

use super::{ROLLBACK_ENV, STATE_ENV};

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
        anyhow::bail!("self-upgrade needs Linux")
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
