//! The system side of quiescing a retiring worker that does not drain
//! (the supervisor's `quiesce`): what the worker's main process does with
//! a signal (`/proc/PID/status`), where each connection it accepted stands
//! (`TCP_INFO`, `SIOCINQ` and `SIOCOUTQ` on a copy of it), and freezing and
//! thawing its process group (`SIGSTOP`, `SIGCONT`), with whether every
//! thread of it has stopped.
//!
//! Why: a server whose stop signal is not caught (Python's `http.server`,
//! `php -S`, waitress) ends at once with the requests it is answering. The
//! primary cannot keep new connections from such a worker on a shared
//! socket, but it can stop the worker itself: a stopped process accepts
//! and reads nothing, so what the primary sees of its connections then
//! stays true until the stop signal ends it.
//!
//! Nothing here reads from or writes to a connection: the copies are
//! looked at with `getsockopt` and `ioctl` and closed again (the worker's
//! own fd keeps each connection open).

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use procfs_core::process::Status;
use procfs_core::FromRead;

use super::acceptors::group::group_members;
use super::pidfd;
use super::rescue::{accepted_from, sockets_of};

/// What a process does with a signal, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    /// A handler runs (`SigCgt`).
    pub caught: bool,
    /// `SigIgn`.
    pub ignored: bool,
    /// Every thread of it blocks it (`SigBlk`).
    pub blocked: bool,
}

/// What process `pid` does with signal number `signo`. Blocked means by
/// every thread (a server that takes its signals with `sigwait` or a
/// `signalfd` blocks them in all): glibc's `pthread_create` blocks every
/// signal in the creating thread for an instant, so one thread's mask
/// says nothing (a server that starts a thread per connection was seen so
/// under load).
pub fn disposition(pid: i32, signo: i32) -> io::Result<Disposition> {
    let status = status(&format!("/proc/{pid}/status"))?;
    let mut blocked = true;
    for task in fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let path = task.path().join("status");
        let Ok(text) = fs::read(&path) else { continue }; // ended
        blocked &= has(parse_status(&text, &path.to_string_lossy())?.sigblk, signo);
    }
    Ok(Disposition { caught: has(status.sigcgt, signo), ignored: has(status.sigign, signo), blocked })
}

/// A `/proc/PID/status` file, read and parsed.
fn status(path: &str) -> io::Result<Status> {
    parse_status(&fs::read(path)?, path)
}

fn parse_status(text: &[u8], path: &str) -> io::Result<Status> {
    Status::from_read(text).map_err(|e| io::Error::other(format!("{path}: {e}")))
}

/// Whether a signal mask has `signo`.
fn has(mask: u64, signo: i32) -> bool {
    (1..=64).contains(&signo) && mask & (1u64 << (signo - 1)) != 0
}

pub use crate::types::quiesce::Standing;

/// `struct tcp_info` up to `tcpi_bytes_received` (Linux 4.1): 8 bytes of
/// small fields, 24 `u32`s, then `pacing_rate`, `max_pacing_rate`,
/// `bytes_acked`, `bytes_received`. libc's struct stops before them.
#[repr(C)]
#[derive(Default)]
struct TcpInfo {
    small: [u8; 8],
    words: [u32; 24],
    wide: [u64; 4],
}

/// Index of `tcpi_last_data_sent` and `tcpi_last_data_recv` in `words`.
const LAST_DATA_SENT: usize = 9;
const LAST_DATA_RECV: usize = 11;
/// `tcpi_state` values in which the client's FIN has been received (it
/// counts one in `tcpi_bytes_received`): CLOSE_WAIT, LAST_ACK, CLOSING.
const FIN_RECEIVED: [u8; 3] = [8, 9, 11];

/// Where `socket` stands; None where the kernel does not say it all.
pub fn standing(socket: &OwnedFd) -> Option<Standing> {
    let fd = socket.as_raw_fd();
    let mut info = TcpInfo::default();
    let mut len = std::mem::size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: getsockopt fills at most `len` bytes of `info`.
    let r = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len) };
    if r != 0 || (len as usize) < std::mem::size_of::<TcpInfo>() {
        return None;
    }
    let (mut unread, mut unsent): (libc::c_int, libc::c_int) = (0, 0);
    // SAFETY: SIOCINQ and SIOCOUTQ write an int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) } != 0
        || unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unsent) } != 0
    {
        return None;
    }
    let (unread, unsent) = (unread.max(0) as u32, unsent.max(0) as u32);
    let [_, _, acked, received] = info.wide;
    let fin = u64::from(FIN_RECEIVED.contains(&info.small[0]));
    Some(Standing {
        read: received.saturating_sub(fin).saturating_sub(unread.into()),
        written: acked + u64::from(unsent),
        unread,
        unsent,
        since_sent: Duration::from_millis(info.words[LAST_DATA_SENT].into()),
        since_recv: Duration::from_millis(info.words[LAST_DATA_RECV].into()),
    })
}

/// Every connection the processes of group `pgid` hold that was accepted
/// from one of `listeners`, where it stands (None: not told). Copies are
/// taken to look and closed at once. `EPERM` and the like: the primary
/// may not look (no ptrace right), as for rescue.
pub fn connections(pgid: i32, listeners: &[SocketAddr]) -> io::Result<Vec<Option<Standing>>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for pid in group_members(pgid)? {
        let Ok(sockets) = sockets_of(pid) else { continue }; // gone meanwhile
        let Ok(process) = pidfd::open(pid) else { continue };
        for (fd, inode) in sockets {
            if !seen.insert(inode) {
                continue;
            }
            let copy = match pidfd::copy_fd(&process, fd) {
                Ok(c) => c,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::ENOSYS)) => return Err(e),
                Err(_) => continue, // closed meanwhile
            };
            if accepted_from(&copy, listeners) {
                out.push(standing(&copy));
            }
        }
    }
    Ok(out)
}

/// Stops (`SIGSTOP`) every process of group `pgid`.
pub fn freeze(pgid: i32) -> io::Result<()> {
    killpg(Pid::from_raw(pgid), Signal::SIGSTOP).map_err(io::Error::from)
}

/// Lets every process of group `pgid` go on (`SIGCONT`).
pub fn thaw(pgid: i32) -> io::Result<()> {
    killpg(Pid::from_raw(pgid), Signal::SIGCONT).map_err(io::Error::from)
}

/// Whether every thread of every process of group `pgid` is stopped (or
/// dead): a thread stops only when it next runs in the kernel, so a look
/// right after [`freeze`] may find one still running.
pub fn stopped(pgid: i32) -> io::Result<bool> {
    for pid in group_members(pgid)? {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { continue }; // gone
        for task in tasks.flatten() {
            let Ok(stat) = fs::read_to_string(task.path().join("stat")) else { continue };
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
            if !matches!(state, Some('T' | 't' | 'Z' | 'X') | None) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::process::CommandExt;

    fn settle() {
        std::thread::sleep(Duration::from_millis(30));
    }

    /// The counts follow a request read and answered: untouched, read,
    /// answered.
    #[test]
    fn a_connection_is_seen_untouched_read_and_answered() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut conn, _) = l.accept().unwrap();
        let copy = OwnedFd::from(conn.try_clone().unwrap());
        let s = standing(&copy).unwrap();
        assert_eq!((s.read, s.written, s.unread), (0, 0, 0), "{s:?}");
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        settle();
        let s = standing(&copy).unwrap();
        assert_eq!((s.read, s.written, s.unread), (0, 0, 18), "waiting, untouched: {s:?}");
        let mut buf = [0u8; 64];
        assert_eq!(conn.read(&mut buf).unwrap(), 18);
        let s = standing(&copy).unwrap();
        assert_eq!((s.read, s.written, s.unread), (18, 0, 0), "read: {s:?}");
        conn.write_all(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        settle();
        let s = standing(&copy).unwrap();
        assert_eq!((s.read, s.written, s.unsent), (18, 19, 0), "answered: {s:?}");
        drop(client);
        settle();
        let s = standing(&copy).unwrap();
        assert_eq!(s.read, 18, "the client's FIN is not a byte read: {s:?}");
    }

    /// This very process: SIGSTOP is not caught by default, SIGCHLD's
    /// default is no handler either; the test harness catches nothing of
    /// SIGTERM.
    #[test]
    fn the_disposition_of_this_process_is_read() {
        let d = disposition(std::process::id() as i32, libc::SIGSTOP).unwrap();
        assert!(!d.caught && !d.ignored && !d.blocked, "{d:?}");
    }

    /// A child stopped and let go again: seen stopped only in between.
    #[test]
    fn a_frozen_group_is_seen_stopped_and_thawed() {
        let mut child = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let pgid = child.id() as i32;
        settle();
        assert!(!stopped(pgid).unwrap());
        freeze(pgid).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !stopped(pgid).unwrap() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(stopped(pgid).unwrap());
        thaw(pgid).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stopped(pgid).unwrap() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!stopped(pgid).unwrap());
        let _ = child.kill();
        let _ = child.wait();
    }
}
