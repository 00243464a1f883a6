//! What one look at a starting worker's processes found: on which
//! listening sockets it waits for connections, and whether it was seen
//! *taking* one. Filled in by [`crate::sys::acceptors`] on the scanner's
//! thread, carried to the supervisor in an [`crate::Event`], judged there.

use std::fmt;
use std::io;

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
    /// The process holds `conn`, a connection accepted from it (a busy
    /// accept loop, seen serving rather than waiting).
    Serving { conn: u64 },
    /// The process holds `conn`, the primary's own probe connection,
    /// accepted from it.
    Probe { conn: u64 },
}

impl How {
    /// Whether this is proof that the process *takes* connections, not
    /// only that it could: a thread blocked in `accept` takes the next
    /// one; a connection it holds it took. An epoll registration is made
    /// when an event loop takes the socket, maybe long before the app
    /// runs its accept loop (Go, tokio, asyncio, Java NIO); `poll` and
    /// `select` wait, and may not be followed by an `accept` either.
    pub fn proves(self) -> bool {
        matches!(self, How::Accept { .. } | How::Serving { .. } | How::Probe { .. })
    }

    /// Its short name in `hotswap status`, events and `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            How::Epoll { .. } => "epoll",
            How::Accept { .. } => "accept",
            How::Poll { .. } => "poll",
            How::Select { .. } => "select",
            How::Serving { .. } => "connection",
            How::Probe { .. } => "probe",
        }
    }
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            How::Epoll { .. } => f.write_str("epoll"),
            How::Accept { .. } => f.write_str("accept"),
            How::Poll { .. } => f.write_str("poll"),
            How::Select { .. } => f.write_str("select"),
            How::Serving { .. } => f.write_str("a connection it accepted"),
            How::Probe { .. } => f.write_str("the primary's probe connection, which it accepted"),
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
    /// `pidfd_getfd` (a container's seccomp profile, no ptrace right, a
    /// kernel before 5.6): no connection it took can be seen, neither a
    /// client's nor a probe.
    Copies,
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
            Blind::Copies => "the connections it took (pidfd_getfd refused: waiting on a socket is taken as ready)",
        };
        write!(f, "pid {}: cannot read {what}: {}", self.pid, io::Error::from_raw_os_error(self.errno))
    }
}

/// The result of one look at a process group.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// At most one per inode: the first proof it was taken from, else the
    /// first way it was seen waited on.
    pub seen: Vec<Sighting>,
    /// How many processes the group had.
    pub processes: usize,
    /// Processes that could not be fully inspected (another uid,
    /// non-dumpable, Yama).
    pub denied: Vec<Denied>,
    /// The group's other sockets, (pid, inode), at most [`MAX_OTHERS`]:
    /// where to look for a listener of its own.
    pub others: Vec<(i32, u64)>,
    /// The look stopped early (its bound of fds or time was reached): what
    /// it did not reach is not seen.
    pub truncated: bool,
    /// Processes whose fd table was longer than a look reads.
    pub fds_skipped: usize,
    /// Listening sockets of the worker's own (not hotswap's), looked up
    /// when asked: (pid, address).
    pub own: Vec<(i32, String)>,
}

/// How many other sockets a [`Report`] keeps: enough for a server's own
/// listeners, bounded for one with thousands of connections.
pub const MAX_OTHERS: usize = 64;

impl Report {
    /// Whether `inode` is accepted on, or at least waited on.
    pub fn is_seen(&self, inode: u64) -> bool {
        self.seen.iter().any(|s| s.inode == inode)
    }

    /// Whether `inode` was seen taken from (see [`How::proves`]).
    pub fn is_proven(&self, inode: u64) -> bool {
        self.seen.iter().any(|s| s.inode == inode && s.how.proves())
    }

    /// Whether every one of `inodes` is accepted on, or at least waited on.
    pub fn all_seen(&self, inodes: &[u64]) -> bool {
        inodes.iter().all(|&i| self.is_seen(i))
    }

    /// Whether every one of `inodes` was seen taken from.
    pub fn all_proven(&self, inodes: &[u64]) -> bool {
        inodes.iter().all(|&i| self.is_proven(i))
    }

    /// Adds a sighting: a proof replaces a mere wait on the same socket.
    pub fn see(&mut self, s: Sighting) {
        match self.seen.iter_mut().find(|x| x.inode == s.inode) {
            None => self.seen.push(s),
            Some(x) if !x.how.proves() && s.how.proves() => *x = s,
            Some(_) => {}
        }
    }

    /// The proof for `inode`, if there is one.
    ///
    /// Where the connections a process took cannot be seen at all
    /// ([`Blind::Copies`]), its waiting on the socket (epoll, poll, select)
    /// is all there is to go by, and counts, as it did before probes: a
    /// worker is never left unready only because the primary may not look.
    pub fn proof(&self, inode: u64) -> Option<How> {
        let blind = |pid: i32| self.denied.iter().any(|d| d.pid == pid && d.what == Blind::Copies);
        let found = self.seen.iter().find(|s| s.inode == inode && s.how.proves());
        found.or_else(|| self.seen.iter().find(|s| s.inode == inode && blind(s.pid))).map(|s| s.how)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_replaces_a_wait_and_is_kept() {
        let mut r = Report::default();
        let at = |how| Sighting { inode: 7, pid: 1, fd: 3, how };
        r.see(at(How::Epoll { epfd: 4 }));
        assert!(r.all_seen(&[7]) && !r.all_proven(&[7]));
        r.see(at(How::Probe { conn: 9 }));
        assert_eq!(r.proof(7), Some(How::Probe { conn: 9 }));
        r.see(at(How::Poll { tid: 2 }));
        r.see(at(How::Accept { tid: 2 }));
        assert_eq!(r.seen.len(), 1);
        assert_eq!(r.proof(7), Some(How::Probe { conn: 9 }), "the first proof stays");
        assert!(!r.is_proven(8) && !r.all_proven(&[7, 8]));
    }

    #[test]
    fn waiting_counts_where_connections_cannot_be_copied() {
        let mut r = Report::default();
        r.see(Sighting { inode: 7, pid: 1, fd: 3, how: How::Epoll { epfd: 4 } });
        r.see(Sighting { inode: 8, pid: 2, fd: 3, how: How::Epoll { epfd: 4 } });
        assert_eq!(r.proof(7), None, "an epoll registration alone proves nothing");
        r.denied.push(Denied { pid: 1, what: Blind::Syscalls, errno: libc::EPERM });
        assert_eq!(r.proof(7), None, "blind to system calls only: a probe can still be seen");
        r.denied.push(Denied { pid: 1, what: Blind::Copies, errno: libc::EPERM });
        assert_eq!(r.proof(7), Some(How::Epoll { epfd: 4 }), "pidfd_getfd refused: waiting is all there is");
        assert_eq!(r.proof(8), None, "only for the process that could not be looked at");
    }
}
