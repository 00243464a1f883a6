//! Is a worker accepting? What `--ready accepting` (and `auto`) look at:
//! which processes the kernel shows accepting on a socket (the acceptors).
//! This is the kernel's side only: the rule that judges a worker by it is
//! `supervisor::accepting`, and the looks run on `io::accepts`'s thread.
//!
//! Many programs cannot say "I am listening" (no IPC, no `sd_notify`), but
//! the kernel shows who waits for connections on a given socket, in
//! `/proc`. Every worker shares the primary's *kernel* sockets, so a socket
//! is identified by its inode ([`socket_inode`] of the primary's fd),
//! whatever fd number a worker keeps it under (uvicorn dups fd 3 to 7, Go to
//! whatever `dup` returns).
//!
//! Which processes: those of the worker's process group ([`group`]; hotswap
//! starts each worker in its own group and stops it by group, so the group
//! is exactly what the worker is). Old workers accept on the same sockets:
//! looking only at the new worker's group keeps them from making it look
//! ready.
//!
//! How a process is seen accepting, cheapest first:
//!
//! 1. **epoll** (`epoll`): event loops (Node/libuv, Go, tokio/mio, Python
//!    asyncio and uvicorn, Java NIO, nginx) register the socket for
//!    `EPOLLIN`.
//! 2. **a blocked thread** (`syscalls`): in `accept`/`accept4` on it, or in
//!    `poll`/`select` waiting for it to be readable.
//! 3. **a connection accepted from it** (`accepted`): a busy accept loop,
//!    never caught waiting, holds the connection it serves.
//!
//! Not visible, so not for `--ready accepting` (use `ipc`, `notify` or
//! `delay:DUR` there):
//! * `io_uring` accepts: the ring's fdinfo does not say on which file;
//! * a process of another uid, or a non-dumpable one (setuid/setgid or
//!   file-capability binaries, `prctl(PR_SET_DUMPABLE, 0)`): nothing, or
//!   only its epoll sets, can be read; [`Report::denied`] says so;
//! * a thread *running* (not blocked) when sampled, holding no accepted
//!   connection: seen at a later look (the caller polls again anyway);
//! * a listener only in a nested epoll set whose own fd is closed;
//! * servers that bind their own sockets (`SO_REUSEPORT`) instead of using
//!   the handed-over ones (correctly: they do not serve hotswap's sockets);
//! * 32-bit (ia32) workers under a 64-bit primary, and architectures other
//!   than x86_64, aarch64, riscv64 and loongarch64: only epoll sets.
//!
//! What "seen" means: in epoll, "the event loop owns the listener", not "the
//! accept loop has run". Go and tokio register when the listener object is
//! created, maybe long before the app is done starting; Node/libuv on the
//! loop iteration after `listen()`'s callback; asyncio inside
//! `start_server()`. So a sighting in epoll, `poll` or `select` is a *wait*;
//! only a thread blocked in `accept`, or a connection the process holds that
//! it accepted (a client's, or the primary's probe: [`probe`]), *proves*
//! that it takes connections ([`How::proves`]). The supervisor decides what
//! to do with either.
//!
//! Cost: per member, a readdir of `/proc/PID/fd` and a `readlink` per fd
//! (about 5 µs each), the fdinfo of its epoll fds, and only for a member
//! holding one of the sockets and not yet proven, one `syscall` file per
//! thread and a `pidfd_getfd` per socket it holds: 0.1 to 0.3 ms for a
//! typical worker. A worker with tens of thousands of fds would make that
//! a third of a second, so a look is bounded ([`Limits`]) and runs on a
//! thread of its own (`crate::io::accepts`). Meant to be polled every few
//! tens of milliseconds while a worker starts, not forever.

mod accepted;
mod epoll;
pub mod group;
pub mod own;
pub mod probe;
mod procfs;
mod syscalls;

use std::fs;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use procfs::{context, errno, is_denied, parse_int, read_file, vanished};

pub use crate::types::accepts::{Blind, Denied, How, Report, Sighting, MAX_OTHERS};

/// The inode of the socket `fd`: how workers' copies of it are recognised.
/// An `InvalidInput` error if `fd` is not a socket.
pub fn socket_inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let st =
        nix::sys::stat::fstat(fd).map_err(|e| context(e.into(), format_args!("fstat of fd {}", fd.as_raw_fd())))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("fd {} is not a socket", fd.as_raw_fd())));
    }
    Ok(st.st_ino as u64)
}

/// How much one look may read: a worker with tens of thousands of fds
/// (connections, files) must not make a look cost more than a few
/// milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries of one process's fd table read per look. The kernel lists
    /// them by number, lowest first, and listeners and event loops' epoll
    /// fds are among the first a program opens.
    pub fds: usize,
    /// Sockets of one process copied (`pidfd_getfd`) to find a connection
    /// it accepted, per look.
    pub copies: usize,
    /// How long one process's fd table may be read, past its first
    /// [`ALWAYS_READ`] entries; the look goes on with what it read, and
    /// says so. (Everything else a look does is bounded by the counts
    /// above: a deadline on all of it would, on a loaded machine, stop
    /// every look before the thread blocked in `accept`.)
    pub time: Duration,
}

/// Entries of an fd table every look reads, whatever the time.
pub const ALWAYS_READ: usize = 256;

impl Default for Limits {
    fn default() -> Limits {
        Limits { fds: 4096, copies: 256, time: Duration::from_millis(20) }
    }
}

/// Which of `inodes` some process of process group `pgid` accepts on, and
/// how; `probes` are the local addresses of the primary's probe
/// connections to them, recognised as the peer of a connection a process
/// holds.
///
/// Processes that vanish during the look are skipped. An error means `/proc`
/// itself could not be read or a `/proc` file failed in an unexpected way;
/// lacking permission on a process is not an error (see [`Report::denied`]).
/// `processes == 0` in the report: the group is gone.
///
/// Blocking: 0.1-0.3 ms for a typical worker, bounded by `limits` for one
/// with very many fds. Run off the event loop (`crate::io::accepts`).
pub fn accepting(pgid: i32, inodes: &[u64], probes: &[socket2::SockAddr], limits: Limits) -> io::Result<Report> {
    if pgid <= 0 {
        // 0 would be every kernel thread's group.
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid process group {pgid}")));
    }
    let mut report = Report::default();
    if inodes.is_empty() {
        return Ok(report);
    }
    let members = group::group_members(pgid)?;
    report.processes = members.len();
    let mut buf = Vec::with_capacity(4096);
    let look = Look { inodes, probes, limits };
    for pid in members {
        inspect(pid, &look, &mut report, &mut buf)?;
        if report.all_proven(inodes) {
            break;
        }
    }
    Ok(report)
}

/// Whether a process of group `pgid` has accepted the caller's connection
/// `client` (a TCP or Unix stream socket connected to a listener the group
/// shares): how a health check sent to one worker through a shared
/// listener knows which worker it reached. Needs `pidfd_getfd` (Linux 5.6;
/// `ENOSYS` before).
pub fn accepted_by(pgid: i32, client: BorrowedFd<'_>) -> io::Result<bool> {
    if pgid <= 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid process group {pgid}")));
    }
    let look = Look { inodes: &[], probes: &[], limits: Limits::default() };
    for pid in group::group_members(pgid)? {
        let fds = match read_fds(pid, &[], &look) {
            Ok(fds) => fds,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        match accepted::holds_peer_of(pid, &fds.others, client) {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) if vanished(&e) || e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(e) => return Err(context(e, format_args!("the sockets of pid {pid}"))),
        }
    }
    Ok(false)
}

/// What one look asks, and its bounds.
struct Look<'a> {
    inodes: &'a [u64],
    probes: &'a [socket2::SockAddr],
    limits: Limits,
}

/// What one process's fd table says about the sockets asked about.
#[derive(Default)]
struct Fds {
    /// Its epoll fds.
    epolls: Vec<i32>,
    /// Its fds that are one of the sockets asked about, with the inode.
    sockets: Vec<(i32, u64)>,
    /// Its other sockets (connections it may have accepted), with the inode.
    others: Vec<(i32, u64)>,
    /// It has more fds than the look read.
    truncated: bool,
}

/// Looks at one process; adds what it finds to `report`.
fn inspect(pid: i32, look: &Look<'_>, report: &mut Report, buf: &mut Vec<u8>) -> io::Result<()> {
    let inodes = look.inodes;
    let denied = |report: &mut Report, what, e: &io::Error| {
        report.denied.push(Denied { pid, what, errno: errno(e).unwrap_or(0) });
    };
    let fds = match read_fds(pid, inodes, look) {
        Ok(fds) => fds,
        Err(e) if vanished(&e) => return Ok(()),
        Err(e) if is_denied(&e) => {
            return {
                let _: () = denied(report, Blind::Fds, &e);
                Ok(())
            }
        }
        Err(e) => return Err(e),
    };
    if fds.truncated {
        report.fds_skipped += 1;
        report.truncated = true;
    }
    for &(_, inode) in &fds.others {
        if report.others.len() < MAX_OTHERS && !report.others.iter().any(|o| o.1 == inode) {
            report.others.push((pid, inode));
        }
    }
    for &epfd in &fds.epolls {
        let path = format!("/proc/{pid}/fdinfo/{epfd}");
        match read_file(&path, buf) {
            Ok(()) => {}
            Err(e) if vanished(&e) => continue,
            Err(e) if is_denied(&e) => {
                return {
                    let _: () = denied(report, Blind::Fds, &e);
                    Ok(())
                }
            }
            Err(e) => return Err(e),
        }
        for t in epoll::parse_fdinfo(buf) {
            if t.events & epoll::EPOLLIN == 0 {
                continue; // registered but not for reading (disabled, or a fired EPOLLONESHOT)
            }
            let inode = t.socket_inode(|fd| fds.sockets.iter().find(|s| s.0 == fd).map(|s| s.1));
            if let Some(inode) = inode.filter(|i| inodes.contains(i)) {
                report.see(Sighting { inode, pid, fd: t.tfd, how: How::Epoll { epfd } });
            }
        }
    }
    // Blocking accept/poll/select need an fd of the socket in this very process.
    if fds.sockets.iter().all(|s| report.is_proven(s.1)) {
        return Ok(());
    }
    if syscalls::SUPPORTED {
        let mut found = Vec::new();
        let result = syscalls::inspect_threads(
            pid,
            &fds.sockets,
            buf,
            &mut |fd, inode, how| found.push(Sighting { inode, pid, fd, how }),
            &|| false,
        );
        for s in found {
            report.see(s);
        }
        match result {
            Ok(()) => {}
            Err(e) if vanished(&e) => return Ok(()),
            Err(e) if is_denied(&e) => denied(report, Blind::Syscalls, &e),
            Err(e) => return Err(e),
        }
    }
    // Last, the connections it took: a busy accept loop's, or the probe.
    let unproven: Vec<(i32, u64)> = fds.sockets.iter().copied().filter(|s| !report.is_proven(s.1)).collect();
    let others = &fds.others[fds.others.len().saturating_sub(look.limits.copies)..];
    // Best effort: gone is "not seen"; refused, or a kernel before 5.6
    // (ENOSYS), is said, so that waiting counts instead (Report::proof).
    let taken = match accepted::accepted_from(pid, &unproven, others, look.probes) {
        Ok(taken) => taken,
        Err(e) if is_denied(&e) || e.raw_os_error() == Some(libc::ENOSYS) => {
            denied(report, Blind::Copies, &e);
            Vec::new()
        }
        Err(_) => Vec::new(),
    };
    for (inode, conn, probe) in taken {
        let fd = fds.sockets.iter().find(|s| s.1 == inode).map_or(-1, |s| s.0);
        let how = if probe { How::Probe { conn } } else { How::Serving { conn } };
        report.see(Sighting { inode, pid, fd, how });
    }
    Ok(())
}

/// Walks `/proc/PID/fd`, at most `look.limits.fds` entries. Errors keep
/// their kind (ENOENT: gone; EACCES: denied).
fn read_fds(pid: i32, inodes: &[u64], look: &Look<'_>) -> io::Result<Fds> {
    let dir_path = format!("/proc/{pid}/fd");
    let dir = fs::read_dir(&dir_path).map_err(|e| context(e, &dir_path))?;
    let mut fds = Fds::default();
    let deadline = Instant::now() + look.limits.time;
    for (n, entry) in dir.enumerate() {
        if n >= look.limits.fds || (n >= ALWAYS_READ && n % 256 == 0 && Instant::now() >= deadline) {
            fds.truncated = true;
            break;
        }
        let entry = entry.map_err(|e| context(e, &dir_path))?;
        let Some(fd) = parse_int(entry.file_name().as_bytes()) else { continue };
        let link = match fs::read_link(entry.path()) {
            Ok(link) => link,
            Err(e) if vanished(&e) => continue, // closed meanwhile
            Err(e) => return Err(context(e, format_args!("{dir_path}/{fd}"))),
        };
        let link = link.as_os_str().as_bytes();
        if link == b"anon_inode:[eventpoll]" {
            fds.epolls.push(fd);
        } else if let Some(ino) = link.strip_prefix(b"socket:[").and_then(|r| r.strip_suffix(b"]")) {
            match parse_int::<u64>(ino) {
                Some(ino) if inodes.contains(&ino) => fds.sockets.push((fd, ino)),
                Some(ino) => fds.others.push((fd, ino)),
                None => {}
            }
        }
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_socket() {
        let f = fs::File::open("/proc/self/stat").unwrap();
        let e = socket_inode(std::os::fd::AsFd::as_fd(&f)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn bad_group() {
        assert_eq!(accepting(0, &[1], &[], Limits::default()).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(accepting(-5, &[1], &[], Limits::default()).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    /// A thread of this very process blocked in accept is seen; before it
    /// blocks, nothing is.
    #[test]
    fn a_blocked_accept_is_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ino = socket_inode(std::os::fd::AsFd::as_fd(&l)).unwrap();
        let me = nix::unistd::getpgrp().as_raw();
        assert!(!accepting(me, &[ino], &[], Limits::default()).unwrap().is_seen(ino));
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || drop(l.accept()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let seen = loop {
            let r = accepting(me, &[ino], &[], Limits::default()).unwrap();
            if r.is_seen(ino) || std::time::Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(matches!(seen.seen[0].how, How::Accept { .. }), "{seen:?}");
        drop(std::net::TcpStream::connect(addr));
        t.join().unwrap();
    }
}
