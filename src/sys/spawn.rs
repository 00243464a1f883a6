//! Starting a worker process: fork and exec by hand.
//!
//! `std::process::Command` cannot do what a worker needs:
//! - `LISTEN_PID` must be the worker's own pid, unknown until after the fork,
//!   while `Command` fixes the environment before it. We build argv and envp
//!   before the fork with a fixed-width `LISTEN_PID=` slot and write the pid
//!   digits into it in the child, which then calls `execve` itself.
//! - The fds must land at exactly 0..=2 (stdio), 3.. (listeners) and the IPC
//!   end after them, with close-on-exec cleared on those and set on all else.
//!
//! Between `fork` and `execve` the child may only make async-signal-safe
//! calls: no allocation, no locks. Everything is prepared in `Prepared`.
//!
//! The child also puts itself in its own process group (so a stop or kill
//! reaches its whole tree) and asks for SIGKILL when its parent dies. That
//! signal fires when the *thread* that forked exits, so workers must be
//! spawned from the primary's main thread, which lives as long as the primary
//! (hotswap runs a current-thread runtime for this reason).

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::unistd::Pid;

/// The fds a worker is given, in the primary's numbering.
pub struct Fds<'a> {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// Placed at 3, 4, ... in this order.
    pub listeners: &'a [RawFd],
    /// Placed right after the listeners.
    pub ipc: RawFd,
    /// The nice value the worker starts at (`--warmup-nice`), if any.
    pub nice: Option<i32>,
    /// The worker's working directory (`cwd`), if not the primary's.
    pub cwd: Option<&'a Path>,
    /// The bind filter to install before exec ([`super::bind_intercept`]).
    #[cfg(target_os = "linux")]
    pub intercept: Option<&'a super::bind_intercept::Filter>,
}

/// A worker just started.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    /// Its exec had not returned within [`EXEC_WAIT`] (a slow or hung
    /// filesystem): the primary went on without its outcome, and a failed
    /// exec will show as the worker's exit (code 127, or SIGPIPE as no one
    /// reads its errno any more).
    pub exec_pending: bool,
    /// Its bind filter, when one was asked for.
    #[cfg(target_os = "linux")]
    pub intercept: super::bind_intercept::Installed,
}

/// How long [`spawn`] waits for the child's exec, on the primary's one
/// thread: an exec is a few milliseconds, but one from a hung network or
/// FUSE filesystem never returns, and the event loop must not wait with it.
pub const EXEC_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Width reserved for the pid digits; pid_max is at most 2^22 on Linux.
const PID_SLOT: usize = 20;

/// argv and envp as C arrays, built before the fork.
struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<Vec<u8>>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// Where the pid digits go: inside one of the `_env` buffers.
    pid_slot: *mut u8,
    /// The soft `RLIMIT_NOFILE` the worker gets (hotswap's own was raised).
    nofile: u64,
    /// The directory to change to (`cwd`), if not the primary's.
    cwd: Option<CString>,
}

/// Forks and execs `argv` with exactly `env` (plus `LISTEN_PID`) and `fds`.
/// Returns once the child has exec'ed, or the reason it could not.
pub fn spawn(argv: &[String], env: &[(OsString, OsString)], fds: &Fds<'_>) -> Result<Spawned> {
    let program = argv.first().ok_or_else(|| anyhow!("empty command"))?;
    // A relative path (`./server`) is the worker's: from its directory.
    let path = match fds.cwd {
        Some(dir) if program.contains('/') && !program.starts_with('/') => {
            resolve_program(&dir.join(program).to_string_lossy(), env)?
        }
        _ => resolve_program(program, env)?,
    };
    let cwd = fds.cwd.map(|d| CString::new(d.as_os_str().as_bytes()).context("cwd contains a NUL byte")).transpose()?;
    let mut prep = prepare(&path, argv, env)?;
    prep.cwd = cwd;

    // Targets: 0,1,2, then listeners, then IPC. Sources are first moved above
    // every target so that no dup2 clobbers a source not yet placed.
    let mut sources: Vec<RawFd> = vec![fds.stdin, fds.stdout, fds.stderr];
    sources.extend_from_slice(fds.listeners);
    sources.push(fds.ipc);
    let above = sources.len() as RawFd; // first fd past the targets
    let mut scratch: Vec<RawFd> = vec![-1; sources.len()];

    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating exec-status pipe")?;
    let parent = std::process::id() as libc::pid_t;
    // The bind filter's listener comes back over this (SCM_RIGHTS).
    #[cfg(target_os = "linux")]
    let filter_pair = match fds.intercept {
        Some(_) => Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::SeqPacket,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .context("creating the bind filter's socketpair")?,
        ),
        None => None,
    };
    #[cfg(target_os = "linux")]
    let filter = fds.intercept.zip(filter_pair.as_ref().map(|p| std::os::fd::AsRawFd::as_raw_fd(&p.1)));
    #[cfg(not(target_os = "linux"))]
    let filter = None;

    // SAFETY: the child branch below only makes async-signal-safe calls on
    // memory prepared before the fork, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork failed: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child of the fork above; `child` only makes
        // async-signal-safe calls and never returns.
        unsafe {
            child(
                &mut prep,
                &sources,
                &mut scratch,
                above,
                (parent, fds.nice),
                std::os::fd::AsRawFd::as_raw_fd(&err_write),
                filter,
            )
        }
    }

    // The filter's outcome comes first: the child sends it just before its
    // exec (or dies, which closes its end).
    #[cfg(target_os = "linux")]
    let intercept = match filter_pair {
        Some((ours, theirs)) => {
            drop(theirs);
            super::bind_intercept::receive(std::os::fd::AsFd::as_fd(&ours))
        }
        None => super::bind_intercept::Installed::No,
    };

    // Parent. Also set the group here: whichever of the two runs first wins.
    // SAFETY: a plain syscall on the child's pid (the child does the same;
    // whichever runs first wins, so no signal reaches the wrong group).
    unsafe { libc::setpgid(pid, pid) };
    drop(err_write);
    // Until the exec (the pipe closes on it) or its failure (errno), at
    // most EXEC_WAIT.
    let exec_pending = !exec_returned(&err_read, EXEC_WAIT);
    let mut errno = [0u8; 4];
    let n = if exec_pending { 0 } else { nix::unistd::read(&err_read, &mut errno).unwrap_or(0) };
    if n == 4 {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        let err = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        if let (Some(dir), Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES)) = (fds.cwd, err.raw_os_error()) {
            if !dir.is_dir() {
                bail!("cannot change to the worker's directory (cwd) {}: {err}", dir.display());
            }
        }
        bail!("cannot execute {}: {err}", path.display());
    }
    Ok(Spawned {
        pid: Pid::from_raw(pid),
        exec_pending,
        #[cfg(target_os = "linux")]
        intercept,
    })
}

/// The `LISTEN_PID` process `pid` was started with (`/proc/PID/environ`),
/// if any: a process that holds a socket of its own while `LISTEN_PID`
/// names another was told of hotswap's sockets by its environment but, by
/// systemd's protocol, not given them (a wrapper forked it).
#[cfg(target_os = "linux")]
pub fn listen_pid_of(pid: i32) -> Option<i32> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let value = environ.split(|b| *b == 0).find_map(|kv| kv.strip_prefix(b"LISTEN_PID="))?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

#[cfg(not(target_os = "linux"))]
pub fn listen_pid_of(_pid: i32) -> Option<i32> {
    None
}

/// Whether the exec-status pipe has something to say (the child's errno,
/// or its end closed by the exec) within `wait`.
fn exec_returned(pipe: &std::os::fd::OwnedFd, wait: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            // (A timeout in whole milliseconds can end a little early.)
            Ok(0) if std::time::Instant::now() >= deadline => return false,
            Ok(0) => continue,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) if !left.is_zero() => continue,
            // poll itself failed: read as before, which blocks until the exec.
            Err(_) => return true,
        }
    }
}

/// What the child needs to install the bind filter: the filter and its
/// end of the socketpair the listener goes back over.
#[cfg(target_os = "linux")]
type ChildFilter<'a> = Option<(&'a super::bind_intercept::Filter, RawFd)>;
#[cfg(not(target_os = "linux"))]
type ChildFilter<'a> = Option<(&'a (), RawFd)>;

/// The child, between fork and exec. Never returns.
///
/// # Safety
/// Only in the child of a fork: it uses async-signal-safe calls on memory
/// prepared before the fork, and execs or `_exit`s.
unsafe fn child(
    prep: &mut Prepared,
    sources: &[RawFd],
    scratch: &mut [RawFd],
    above: RawFd,
    (parent, nice): (libc::pid_t, Option<i32>),
    err_write: RawFd,
    filter: ChildFilter<'_>,
) -> ! {
    let fail = |err_fd: RawFd| -> ! {
        // Reading errno allocates nothing.
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let bytes = e.to_ne_bytes();
        libc::write(err_fd, bytes.as_ptr().cast(), 4);
        libc::_exit(127)
    };

    libc::setpgid(0, 0);
    if let Some(n) = nice {
        // This thread only, which becomes the program's first: all it
        // starts inherits it. A failure leaves it at the primary's.
        libc::setpriority(libc::PRIO_PROCESS, 0, n);
    }
    #[cfg(target_os = "linux")]
    {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The primary may have died between fork and prctl.
        if libc::getppid() != parent {
            libc::_exit(127);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;

    // Signal handlers are reset by exec, but ignored signals and the mask are
    // inherited: Rust ignores SIGPIPE, which most programs do not expect.
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    for sig in 1..65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    // glibc's signal() refuses its own internal signals (32 and 33), and
    // glibc's posix_spawn leaves them ignored in the programs it starts (a
    // primary started by a Rust program gets signal 32 ignored); an ignored
    // signal survives exec. The system call itself resets them. All zeros is
    // a kernel sigaction of SIG_DFL, no flags and an empty mask.
    #[cfg(target_os = "linux")]
    {
        let dfl = [0u64; 4];
        for sig in 32..libc::SIGRTMIN() {
            libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), std::ptr::null_mut::<u64>(), 8usize);
        }
    }

    // Keep the status pipe out of the target range too.
    let err_write = if err_write < above { libc::fcntl(err_write, libc::F_DUPFD_CLOEXEC, above) } else { err_write };
    if err_write < 0 {
        libc::_exit(127);
    }
    let filter = match filter {
        Some((f, sock)) if sock < above => Some((f, libc::fcntl(sock, libc::F_DUPFD_CLOEXEC, above))),
        other => other,
    };
    for (i, &src) in sources.iter().enumerate() {
        scratch[i] = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above);
        if scratch[i] < 0 {
            fail(err_write);
        }
    }
    for (target, &tmp) in scratch.iter().enumerate() {
        // dup2 onto a different fd leaves close-on-exec clear on the target.
        if libc::dup2(tmp, target as RawFd) < 0 {
            fail(err_write);
        }
    }
    // Whatever else is open (fds the primary inherited without
    // close-on-exec) must not reach the worker.
    #[cfg(target_os = "linux")]
    libc::syscall(libc::SYS_close_range, above as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC);

    if let Some(dir) = prep.cwd.as_deref() {
        if libc::chdir(dir.as_ptr()) < 0 {
            fail(err_write);
        }
    }
    super::fd_limit::restore_in_child(prep.nofile);
    write_pid(prep.pid_slot, libc::getpid() as u32);
    // Last before exec: from here on this process's binds wait for the
    // primary, which is blocked reading this answer until the exec.
    #[cfg(target_os = "linux")]
    if let Some((f, sock)) = filter {
        let outcome = f.install();
        super::bind_intercept::send_in_child(sock, outcome);
        if let Ok(fd) = outcome {
            libc::close(fd);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = filter;
    libc::execve(prep.path.as_ptr(), prep.argv_ptrs.as_ptr(), prep.envp_ptrs.as_ptr());
    fail(err_write)
}

/// Writes the decimal digits of `pid` and a NUL into the slot.
///
/// # Safety
/// `slot` must point at [`PID_SLOT`] + 1 writable bytes.
unsafe fn write_pid(slot: *mut u8, mut pid: u32) {
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    for i in 0..n {
        *slot.add(i) = digits[n - 1 - i];
    }
    *slot.add(n) = 0;
}

fn prepare(path: &Path, argv: &[String], env: &[(OsString, OsString)]) -> Result<Prepared> {
    let path = CString::new(path.as_os_str().as_bytes()).context("command path contains a NUL byte")?;
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).with_context(|| format!("argument {a:?} contains a NUL byte")))
        .collect::<Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());

    let mut envs: Vec<Vec<u8>> = Vec::with_capacity(env.len() + 1);
    for (k, v) in env {
        if k.as_bytes().contains(&0) || v.as_bytes().contains(&0) || k.as_bytes().contains(&b'=') {
            bail!("environment variable {k:?} cannot be passed to a process");
        }
        let mut e = Vec::with_capacity(k.len() + v.len() + 2);
        e.extend_from_slice(k.as_bytes());
        e.push(b'=');
        e.extend_from_slice(v.as_bytes());
        e.push(0);
        envs.push(e);
    }
    let mut slot = b"LISTEN_PID=".to_vec();
    slot.resize(slot.len() + PID_SLOT + 1, 0);
    envs.push(slot);
    let last = envs.len() - 1;
    // SAFETY: the entry was sized as "LISTEN_PID=" plus PID_SLOT + 1 bytes
    // just above; the pointer stays inside it, and `envs` outlives its use.
    let pid_slot = unsafe { envs[last].as_mut_ptr().add("LISTEN_PID=".len()) };
    let mut envp_ptrs: Vec<*const libc::c_char> = envs.iter().map(|e| e.as_ptr().cast()).collect();
    envp_ptrs.push(std::ptr::null());
    let nofile = super::fd_limit::worker_soft();
    Ok(Prepared { path, _argv: argv, argv_ptrs, _env: envs, envp_ptrs, pid_slot, nofile, cwd: None })
}

/// Finds `program` the way a shell would: as a path if it has a `/`, else on
/// the `PATH` the worker will see. Done before the fork, for a clear error.
pub fn resolve_program(program: &str, env: &[(OsString, OsString)]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if program.contains('/') {
        let p = PathBuf::from(program);
        if !p.exists() {
            bail!("command not found: {program}");
        }
        return Ok(p);
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == OsStr::new("PATH"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(program);
        if is_exec(&candidate) {
            return Ok(candidate);
        }
    }
    bail!("command not found: {program} (searched PATH)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_for_an_exec_is_bounded() {
        let wait = std::time::Duration::from_millis(50);
        // A child that never execs nor fails: its end stays open.
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let started = std::time::Instant::now();
        assert!(!exec_returned(&r, wait), "nothing said: not returned");
        assert!(started.elapsed() >= wait);
        // An exec closes its end; a failure writes its errno first.
        drop(w);
        assert!(exec_returned(&r, wait));
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        nix::unistd::write(&w, &2i32.to_ne_bytes()).unwrap();
        assert!(exec_returned(&r, wait));
    }

    #[test]
    fn a_worker_that_execs_is_not_pending() {
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&devnull);
        let fds = Fds {
            stdin: fd,
            stdout: fd,
            stderr: fd,
            listeners: &[],
            ipc: fd,
            nice: None,
            cwd: None,
            #[cfg(target_os = "linux")]
            intercept: None,
        };
        let path: OsString = std::env::var_os("PATH").unwrap_or_default();
        let spawned = spawn(&["true".to_string()], &[("PATH".into(), path)], &fds).unwrap();
        assert!(!spawned.exec_pending);
        let _ = nix::sys::wait::waitpid(spawned.pid, None);
    }

    #[test]
    fn pid_digits() {
        let mut buf = [0xffu8; 12];
        // SAFETY: `buf` has 12 bytes, more than PID_SLOT + 1.
        unsafe { write_pid(buf.as_mut_ptr(), 4194304) };
        assert_eq!(&buf[..8], b"4194304\0");
        // SAFETY: as above.
        unsafe { write_pid(buf.as_mut_ptr(), 7) };
        assert_eq!(&buf[..2], b"7\0");
    }

    #[test]
    fn resolves_programs() {
        let env = vec![(OsString::from("PATH"), OsString::from("/usr/bin:/bin"))];
        assert!(resolve_program("sh", &env).unwrap().ends_with("sh"));
        assert!(format!("{:#}", resolve_program("no-such-program-xyz", &env).unwrap_err()).contains("not found"));
        assert!(resolve_program("/nonexistent/x", &env).is_err());
    }
}
