//! The socket side of rescue: copies of a retiring worker's connections,
//! whether the worker still holds them, and looking at one without taking
//! anything from it.
//!
//! Why: a server's graceful stop closes its idle keep-alive connections at
//! once, and a client that sent its next request in that instant gets a
//! closed connection with no answer. If the primary holds a copy of the
//! connection ([`super::pidfd::copy_fd`]) when the worker closes it, the
//! socket stays open (an fd of the same open socket remains): the request
//! the client wrote waits in it, and the primary can pass it on.
//!
//! Which connections: a process's connected sockets whose local address is
//! one of the listeners' (an accepted connection has the listener's
//! address as its own; a connection the worker opened has an ephemeral
//! port). Whether the worker still holds one: an fd of one of its group's
//! processes refers to the socket's inode (`/proc/PID/fd`).
//!
//! Nothing here reads from a socket: [`peek`] looks with `MSG_PEEK`, which
//! leaves every byte to whoever reads next.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use super::acceptors::group::group_members;
use super::pidfd;

/// A connection copied from a worker.
#[derive(Debug)]
pub struct Caught {
    /// The socket's inode: how the worker's fds for it are recognised.
    pub inode: u64,
    pub socket: OwnedFd,
}

/// One look at a worker's process group.
#[derive(Debug, Default)]
pub struct Look {
    /// How many processes the group had (0: it is gone).
    pub processes: usize,
    /// Every socket inode a process of the group holds.
    pub inodes: HashSet<u64>,
    /// Connections accepted from the listeners, not seen before, copied.
    pub caught: Vec<Caught>,
    /// Sockets looked at that are no such connection (the listeners, the
    /// IPC channel, connections the worker opened): not looked at again.
    pub other: Vec<u64>,
    /// Why copies were refused (`EPERM`: no ptrace right, a seccomp
    /// filter), the first time.
    pub denied: Option<io::Error>,
    /// Connections left uncopied because `room` was reached.
    pub over: usize,
}

/// Looks at process group `pgid`: which sockets its processes hold, and
/// copies of the connections accepted from `listeners` whose inode `known`
/// does not know, at most `room` of them.
pub fn look(pgid: i32, listeners: &[SocketAddr], known: &dyn Fn(u64) -> bool, room: usize) -> io::Result<Look> {
    let mut look = Look::default();
    let members = group_members(pgid)?;
    look.processes = members.len();
    for pid in members {
        let Ok(sockets) = sockets_of(pid) else { continue }; // gone, or not ours to see
        let fresh: Vec<(i32, u64)> =
            sockets.iter().copied().filter(|&(_, inode)| !known(inode) && !look.inodes.contains(&inode)).collect();
        look.inodes.extend(sockets.iter().map(|s| s.1));
        if fresh.is_empty() || look.denied.is_some() {
            continue;
        }
        let process = match pidfd::open(pid) {
            Ok(p) => p,
            Err(_) => continue, // gone meanwhile
        };
        for (fd, inode) in fresh {
            let copy = match pidfd::copy_fd(&process, fd) {
                Ok(c) => c,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::ENOSYS)) => {
                    look.denied = Some(e);
                    break;
                }
                Err(_) => continue, // closed meanwhile, or the process is gone
            };
            if !accepted_from(&copy, listeners) {
                look.other.push(inode);
            } else if look.caught.len() < room {
                look.caught.push(Caught { inode, socket: copy });
            } else {
                look.over += 1;
            }
        }
    }
    Ok(look)
}

/// Whether `socket` is a connection accepted from one of `listeners`: its
/// local address is theirs (an unspecified listener address takes any
/// local address on its port) and it has a peer.
pub(super) fn accepted_from(socket: &OwnedFd, listeners: &[SocketAddr]) -> bool {
    let s = socket2::SockRef::from(socket);
    let Some(local) = s.local_addr().ok().and_then(|a| a.as_socket()) else { return false };
    let ours = listeners.iter().any(|l| l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip()));
    ours && s.peer_addr().is_ok()
}

/// The socket fds of a process, with their inodes.
pub(super) fn sockets_of(pid: i32) -> io::Result<Vec<(i32, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = std::str::from_utf8(entry.file_name().as_bytes()).ok().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(link) = fs::read_link(entry.path()) else { continue }; // closed meanwhile
        let inode = link
            .as_os_str()
            .as_bytes()
            .strip_prefix(b"socket:[")
            .and_then(|r| r.strip_suffix(b"]"))
            .and_then(|i| std::str::from_utf8(i).ok()?.parse().ok());
        if let Some(inode) = inode {
            out.push((fd, inode));
        }
    }
    Ok(out)
}

/// What a connection holds for its next reader, seen without reading.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek {
    /// Nothing yet.
    Nothing,
    /// The client closed its side (end of file, nothing before it).
    Eof,
    /// These first bytes (up to the buffer's size) wait to be read.
    Bytes(Vec<u8>),
    /// The connection failed (reset).
    Failed,
}

/// Looks at what waits in `socket` (at most `max` bytes) with `MSG_PEEK`,
/// never blocking and taking nothing.
pub fn peek(socket: impl AsFd, max: usize) -> Peek {
    let mut buf = vec![0u8; max];
    // SAFETY: recv into a buffer of its length, on an fd we own a copy of.
    let n = unsafe {
        libc::recv(socket.as_fd().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    match n {
        0 => Peek::Eof,
        n if n > 0 => {
            buf.truncate(n as usize);
            Peek::Bytes(buf)
        }
        _ => match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Peek::Nothing,
            _ => Peek::Failed,
        },
    }
}

/// Where a connection the worker let go of stands, as far as the kernel
/// tells (`TCP_INFO` gives the time of the last data each way, in
/// jiffies: 4 ms at `HZ=250`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Bytes wait to be read, or the server's data came last: idle between
    /// requests, or a request waiting.
    Open,
    /// Nothing waits, and the client's data came after the server's: the
    /// worker read something the client sent (a request) and closed without
    /// answering. The client waits for an answer no one will send.
    Unanswered,
    /// Nothing waits, and both came within the same tick: cannot tell.
    Unsure,
    /// The worker shut the connection down for writing before it let go
    /// (`shutdown(SHUT_WR)`, a lingering close: lighttpd's and Apache's
    /// graceful stops, hyper's, Twisted's): the client has its end of file
    /// and takes the connection for closed, whatever it wrote after, and
    /// no answer can be sent on it any more. A request waiting there must
    /// not be passed on: its client saw it fail and may send it again.
    ShutDown,
}

/// Where `socket` stands (see [`Turn`]).
pub fn turn(socket: impl AsFd) -> Turn {
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: an all-zero tcp_info is a valid value to be filled.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt fills at most `len` bytes of `info`.
    let r = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len) };
    if r == 0 && sent_fin(info.tcpi_state) {
        return Turn::ShutDown;
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) } != 0 || queued > 0 {
        return Turn::Open;
    }
    // Both are "milliseconds ago": smaller is more recent.
    match (r, info.tcpi_last_data_recv.cmp(&info.tcpi_last_data_sent)) {
        (0, std::cmp::Ordering::Less) => Turn::Unanswered,
        (0, std::cmp::Ordering::Equal) => Turn::Unsure,
        _ => Turn::Open,
    }
}

/// Whether a TCP state (`tcpi_state`) is one this end reaches only by
/// sending its FIN (FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK, TIME_WAIT),
/// or CLOSE: both FINs exchanged, this end's first (a socket still open
/// leaves FIN_WAIT2 for CLOSE, not TIME_WAIT, when the client's FIN comes:
/// the client saw the end of file and closed), or a reset
/// (linux/include/net/tcp_states.h). Either way nothing can be answered.
fn sent_fin(state: u8) -> bool {
    const FIN_WAIT1: u8 = 4;
    const FIN_WAIT2: u8 = 5;
    const TIME_WAIT: u8 = 6;
    const CLOSE: u8 = 7;
    const LAST_ACK: u8 = 9;
    const CLOSING: u8 = 11;
    matches!(state, FIN_WAIT1 | FIN_WAIT2 | TIME_WAIT | CLOSE | LAST_ACK | CLOSING)
}

/// The inode of a socket fd.
pub fn inode(socket: impl AsFd) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(socket.as_fd())?.st_ino as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// This very process's accepted connection is caught, the client's end
    /// and the listener are not; a second look knows it.
    #[test]
    fn an_accepted_connection_is_caught_once() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let (conn, _) = l.accept().unwrap();
        let me = nix::unistd::getpgrp().as_raw();
        let want = inode(&conn).unwrap();
        let first = match look(me, &[addr], &|_| false, 10) {
            Ok(l) if l.denied.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::ENOSYS) => return,
            r => r.unwrap(),
        };
        assert!(first.processes >= 1 && first.inodes.contains(&want));
        let caught: Vec<u64> = first.caught.iter().map(|c| c.inode).collect();
        assert_eq!(caught, vec![want], "only the accepted connection: {first:?}");
        assert!(first.other.contains(&inode(&l).unwrap()));
        let again = look(me, &[addr], &|i| i == want || first.other.contains(&i), 10).unwrap();
        assert!(again.caught.is_empty());
        let none = look(me, &["127.0.0.1:1".parse().unwrap()], &|_| false, 10).unwrap();
        assert!(none.caught.is_empty(), "another port is not ours");
    }

    /// A copy outlives the original: the client's bytes wait in it, seen
    /// without being taken, and the client's close shows as end of file.
    #[test]
    fn a_copy_keeps_the_connection_and_peek_takes_nothing() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, _) = l.accept().unwrap();
        let copy = OwnedFd::from(conn.try_clone().unwrap());
        assert_eq!(peek(&copy, 16), Peek::Nothing);
        drop(conn);
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while peek(&copy, 16) == Peek::Nothing && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(peek(&copy, 3), Peek::Bytes(b"GET".to_vec()));
        assert_eq!(peek(&copy, 16), Peek::Bytes(b"GET / HTTP/1.1\r\n".to_vec()), "nothing was taken");
        drop(client);
        let mut sink = [0u8; 64];
        let n = nix::sys::socket::recv(copy.as_raw_fd(), &mut sink, nix::sys::socket::MsgFlags::empty()).unwrap();
        assert_eq!(n, 16);
        while peek(&copy, 16) == Peek::Nothing && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(peek(&copy, 16), Peek::Eof);
    }

    /// A request read and not answered is told from one answered.
    #[test]
    fn a_request_taken_and_not_answered_is_told() {
        use std::io::Read;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut conn, _) = l.accept().unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(turn(&conn), Turn::Open, "the request waits");
        let mut buf = [0u8; 64];
        let _ = conn.read(&mut buf).unwrap();
        assert_ne!(turn(&conn), Turn::Open, "taken, not answered");
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let _ = client.read(&mut buf).unwrap();
        assert_eq!(turn(&conn), Turn::Open, "answered");
        std::thread::sleep(std::time::Duration::from_millis(30));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let _ = conn.read(&mut buf).unwrap();
        assert_eq!(turn(&conn), Turn::Unanswered, "the next one taken, 30 ms after the answer");
    }

    /// A connection its server shut down for writing is told, whether a
    /// request waits in it or not (lighttpd's lingering close: the client
    /// has its end of file, and wrote its request after it).
    #[test]
    fn a_connection_the_server_shut_down_is_told() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, _) = l.accept().unwrap();
        assert_ne!(turn(&conn), Turn::ShutDown, "open");
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(turn(&conn), Turn::ShutDown, "its FIN sent, nothing waits");
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(turn(&conn), Turn::ShutDown, "a request waits, after the FIN");
        // The client, which saw the end of file, closes: the request still
        // waits in the socket, which is now closed both ways.
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(turn(&conn), Turn::ShutDown, "closed both ways, a request waiting");
    }
}
