//! Is a worker accepting? What `--ready accepting` (and `auto`) look at.
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
//! created, maybe before the app is done starting; Node/libuv on the loop
//! iteration after `listen()`'s callback; asyncio inside `start_server()`.
//! Connections arriving meanwhile wait in the shared backlog, which is what
//! readiness has to guarantee.
//!
//! Cost: per member, a readdir of `/proc/PID/fd` and a `readlink` per fd
//! (about 5 µs each), the fdinfo of its epoll fds, and only for a member
//! holding one of the sockets and not yet seen through epoll, one `syscall`
//! file per thread: 0.1 to 0.3 ms for a typical worker on a small VM.
//! Meant to be polled every few tens of milliseconds while a worker starts,
//! not forever.

mod accepted;
mod epoll;
pub mod group;
pub mod own;
mod procfs;
mod syscalls;

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use procfs::{context, errno, is_denied, parse_int, read_file, vanished};

/// How a listening socket was seen being accepted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// In the epoll set `epfd` of the process, with `EPOLLIN`.
    Epoll { epfd: i32 },
    /// Thread `tid` blocked in `accept`/`accept4` on it.
    Accept { tid: i32 },
    /// Thread `tid` blocked in `poll`/`ppoll` waiting for `POLLIN` on it.
    Poll { tid: i32 },
    /// Thread `tid` blocked in `select`/`pselect6` with it in the read set.
    Select { tid: i32 },
    /// The process holds `conn`, a TCP connection accepted from it (a busy
    /// accept loop, seen serving rather than waiting).
    Serving { conn: u64 },
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            How::Epoll { .. } => f.write_str("epoll"),
            How::Accept { .. } => f.write_str("accept"),
            How::Poll { .. } => f.write_str("poll"),
            How::Select { .. } => f.write_str("select"),
            How::Serving { .. } => f.write_str("a connection it accepted"),
        }
    }
}

/// One listening socket seen accepted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// The socket's inode, one of those asked about.
    pub inode: u64,
    /// The process that accepts on it.
    pub pid: i32,
    /// The socket's fd number in that process (for epoll: the number it was
    /// registered under, which the process may have closed since).
    pub fd: i32,
    pub how: How,
}

/// What of a process could not be read for lack of permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blind {
    /// `/proc/PID/fd` or `fdinfo`: nothing of this process can be seen.
    Fds,
    /// `/proc/PID/task/TID/syscall` or `/proc/PID/mem`: blocking `accept`,
    /// `poll` and `select` cannot be seen, epoll can.
    Syscalls,
}

/// A process of the group that could not be fully inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub pid: i32,
    pub what: Blind,
    /// The errno (`EACCES` or `EPERM`).
    pub errno: i32,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.what {
            Blind::Fds => "its file descriptors (nothing of it is visible)",
            Blind::Syscalls => "its threads' system calls (blocking accept/poll/select are not visible)",
        };
        write!(f, "pid {}: cannot read {what}: {}", self.pid, io::Error::from_raw_os_error(self.errno))
    }
}

/// The result of one look at a process group.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// At most one per inode: the first way it was seen.
    pub seen: Vec<Sighting>,
    /// How many processes the group had.
    pub processes: usize,
    /// Processes that could not be fully inspected (another uid,
    /// non-dumpable, Yama).
    pub denied: Vec<Denied>,
    /// The group's other sockets, (pid, inode), at most [`MAX_OTHERS`]:
    /// where to look for a listener of its own ([`own`]).
    pub others: Vec<(i32, u64)>,
}

/// How many other sockets a [`Report`] keeps: enough for a server's own
/// listeners, bounded for one with thousands of connections.
pub const MAX_OTHERS: usize = 64;

impl Report {
    /// Whether `inode` is accepted on.
    pub fn is_seen(&self, inode: u64) -> bool {
        self.seen.iter().any(|s| s.inode == inode)
    }

    /// Whether every one of `inodes` is accepted on.
    pub fn all_seen(&self, inodes: &[u64]) -> bool {
        inodes.iter().all(|&i| self.is_seen(i))
    }

    fn see(&mut self, s: Sighting) {
        if !self.is_seen(s.inode) {
            self.seen.push(s);
        }
    }
}

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

/// Which of `inodes` some process of process group `pgid` accepts on, and how.
///
/// Processes that vanish during the look are skipped. An error means `/proc`
/// itself could not be read or a `/proc` file failed in an unexpected way;
/// lacking permission on a process is not an error (see [`Report::denied`]).
/// `processes == 0` in the report: the group is gone.
///
/// Blocking, but short (0.1-0.3 ms CPU for a typical worker): fine inline on
/// the primary's event loop every few tens of milliseconds while a worker
/// starts.
pub fn accepting(pgid: i32, inodes: &[u64]) -> io::Result<Report> {
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
    for pid in members {
        inspect(pid, inodes, &mut report, &mut buf)?;
        if report.all_seen(inodes) {
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
    for pid in group::group_members(pgid)? {
        let fds = match read_fds(pid, &[]) {
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

/// What one process's fd table says about the sockets asked about.
#[derive(Default)]
struct Fds {
    /// Its epoll fds.
    epolls: Vec<i32>,
    /// Its fds that are one of the sockets asked about, with the inode.
    sockets: Vec<(i32, u64)>,
    /// Its other sockets (connections it may have accepted), with the inode.
    others: Vec<(i32, u64)>,
}

/// Looks at one process; adds what it finds to `report`.
fn inspect(pid: i32, inodes: &[u64], report: &mut Report, buf: &mut Vec<u8>) -> io::Result<()> {
    let denied = |report: &mut Report, what, e: &io::Error| {
        report.denied.push(Denied { pid, what, errno: errno(e).unwrap_or(0) });
    };
    let fds = match read_fds(pid, inodes) {
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
    if fds.sockets.iter().all(|s| report.is_seen(s.1)) {
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
    // Last, a busy accept loop: the connections it accepted.
    let unseen: Vec<(i32, u64)> = fds.sockets.iter().copied().filter(|s| !report.is_seen(s.1)).collect();
    // Best effort: gone, denied, or a kernel before 5.6 (ENOSYS) is "not seen".
    for (inode, conn) in accepted::accepted_from(pid, &unseen, &fds.others).unwrap_or_default() {
        let fd = fds.sockets.iter().find(|s| s.1 == inode).map_or(-1, |s| s.0);
        report.see(Sighting { inode, pid, fd, how: How::Serving { conn } });
    }
    Ok(())
}

/// Walks `/proc/PID/fd`. Errors keep their kind (ENOENT: gone; EACCES: denied).
fn read_fds(pid: i32, inodes: &[u64]) -> io::Result<Fds> {
    let dir_path = format!("/proc/{pid}/fd");
    let dir = fs::read_dir(&dir_path).map_err(|e| context(e, &dir_path))?;
    let mut fds = Fds::default();
    for entry in dir {
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
        assert_eq!(accepting(0, &[1]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(accepting(-5, &[1]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    /// A thread of this very process blocked in accept is seen; before it
    /// blocks, nothing is.
    #[test]
    fn a_blocked_accept_is_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ino = socket_inode(std::os::fd::AsFd::as_fd(&l)).unwrap();
        let me = nix::unistd::getpgrp().as_raw();
        assert!(!accepting(me, &[ino]).unwrap().is_seen(ino));
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || drop(l.accept()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let seen = loop {
            let r = accepting(me, &[ino]).unwrap();
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
