//! A process seen *serving*: it holds a connection accepted from one of the
//! listening sockets.
//!
//! Why: a blocking accept loop is seen only while it waits
//! ([`super::syscalls`]); one that is busy because connections are already
//! queued (a reload under load) accepts at once and is caught reading,
//! writing or running, never in `accept` or `select`. gunicorn's sync
//! worker under load is that: it would never look ready. But while it
//! serves it holds the connection it accepted: a connected socket whose
//! local address is the listener's (a client's socket to it has that
//! address as its *remote* one).
//!
//! How: the process's sockets are copied into the primary with
//! `pidfd_getfd(2)` (Linux 5.6; the same permission as reading its
//! syscalls, which a worker's parent has) and asked for their addresses,
//! then closed. Not through the TCP tables in `/proc/net`: they list every
//! connection of the machine, TIME_WAIT ones included, and take longer to
//! read under load than a sync worker holds a connection. Holding a copy
//! for a few microseconds delays nothing the worker does (its `close`
//! completes when the copy is closed). Only done for a process that holds a
//! listener not otherwise seen, and has other sockets.

use std::io;
#[cfg(test)]
use std::os::fd::AsRawFd;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use socket2::SockAddr;

use crate::sys::pidfd::{copy_fd, open as pidfd_open};

/// Which of `listeners` (fd, inode: sockets the process holds) have a
/// connection among `others` (its other socket fds, with their inodes)
/// accepted from them: (listener inode, connection inode, whether it is
/// one of the primary's `probes`, recognised by its peer address).
pub(super) fn accepted_from(
    pid: i32,
    listeners: &[(RawFd, u64)],
    others: &[(RawFd, u64)],
    probes: &[SockAddr],
) -> io::Result<Vec<(u64, u64, bool)>> {
    let mut found: Vec<(u64, u64, bool)> = Vec::new();
    if listeners.is_empty() || others.is_empty() {
        return Ok(found);
    }
    let process = pidfd_open(pid)?;
    let mut bound = Vec::new();
    for &(fd, inode) in listeners {
        match copy_fd(&process, fd) {
            Ok(l) => bound.extend(local(&l).map(|a| (a, inode))),
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => continue, // closed meanwhile
            Err(e) => return Err(e),
        }
    }
    // Newest first: a probe was accepted last.
    for &(fd, conn) in others.iter().rev() {
        let Ok(c) = copy_fd(&process, fd) else { continue }; // closed meanwhile, or not ours to see
        let Some(here) = local(&c) else { continue };
        let Some((_, listener)) = bound.iter().find(|(a, _)| accepted_on(a, &here)) else { continue };
        let Some(peer) = socket2::SockRef::from(&c).peer_addr().ok() else { continue }; // a second listener
        let probe = probes.iter().any(|p| same(p, &peer));
        match found.iter_mut().find(|(l, _, _)| l == listener) {
            None => found.push((*listener, conn, probe)),
            Some(f) if probe && !f.2 => *f = (*listener, conn, true),
            Some(_) => {}
        }
        if found.len() == bound.len() && (probes.is_empty() || found.iter().all(|f| f.2)) {
            break;
        }
    }
    Ok(found)
}

/// Whether process `pid` holds, among `others` (its socket fds), the
/// accepted end of the caller's connection `client`: how a health check
/// knows which worker took the connection it made. TCP: the accepted
/// socket's peer is `client`'s local address. Unix: an unnamed client has
/// no address to match, so the accepted end is the one whose local path is
/// the listener's and whose peer is the caller's own process.
pub(super) fn holds_peer_of(pid: i32, others: &[(RawFd, u64)], client: BorrowedFd<'_>) -> io::Result<bool> {
    let me = socket2::SockRef::from(&client);
    let mine = me.local_addr()?.as_socket();
    let listener = match mine {
        Some(_) => None,
        None => Some(me.peer_addr()?.as_pathname().map(|p| p.to_path_buf())),
    };
    let process = pidfd_open(pid)?;
    let own = std::process::id() as i32;
    // The newest connection is likely the last fd.
    for &(fd, _) in others.iter().rev() {
        let Ok(c) = copy_fd(&process, fd) else { continue }; // closed meanwhile
        let s = socket2::SockRef::from(&c);
        let found = match &listener {
            None => s.peer_addr().ok().and_then(|a| a.as_socket()) == mine,
            Some(path) => {
                let local = s.local_addr().ok().and_then(|a| a.as_pathname().map(|p| p.to_path_buf()));
                local.is_some() && local == *path && peer_pid(&c) == Some(own)
            }
        };
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The pid of a Unix socket's peer (`SO_PEERCRED`).
fn peer_pid(socket: &OwnedFd) -> Option<i32> {
    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::PeerCredentials).ok().map(|c| c.pid())
}

/// A socket's local address.
fn local(socket: &OwnedFd) -> Option<SockAddr> {
    socket2::SockRef::from(socket).local_addr().ok()
}

/// Whether a connection whose local address is `conn` was accepted from a
/// listener bound to `listener`: the same port on the same address, or any
/// address for a wildcard listener (`0.0.0.0`, `[::]`, IPv4 mapped); the
/// same path for a Unix socket.
pub(super) fn accepted_on(listener: &SockAddr, conn: &SockAddr) -> bool {
    match (listener.as_socket(), conn.as_socket()) {
        (Some(l), Some(c)) => {
            let canonical = |ip: std::net::IpAddr| ip.to_canonical();
            l.port() == c.port() && (l.ip().is_unspecified() || canonical(l.ip()) == canonical(c.ip()))
        }
        (None, None) => listener.as_pathname().is_some() && listener.as_pathname() == conn.as_pathname(),
        _ => false,
    }
}

/// Whether two addresses are the same: IP and port (IPv4 mapped or not),
/// or a Unix path or abstract name.
pub(super) fn same(a: &SockAddr, b: &SockAddr) -> bool {
    match (a.as_socket(), b.as_socket()) {
        (Some(x), Some(y)) => x.port() == y.port() && x.ip().to_canonical() == y.ip().to_canonical(),
        (None, None) => {
            (a.as_pathname().is_some() && a.as_pathname() == b.as_pathname())
                || (a.as_abstract_namespace().is_some() && a.as_abstract_namespace() == b.as_abstract_namespace())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    /// This very process accepts a connection: seen; the client's end is not.
    #[test]
    fn an_accepted_connection_is_seen_and_a_client_is_not() {
        let inode = |f: std::os::fd::BorrowedFd<'_>| super::super::socket_inode(f).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = [(l.as_raw_fd(), inode(l.as_fd()))];
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let c = (client.as_raw_fd(), inode(client.as_fd()));
        let me = std::process::id() as i32;
        match accepted_from(me, &listener, &[c], &[]) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return, // kernel before 5.6
            r => assert_eq!(r.unwrap(), vec![]),
        }
        let (conn, _) = l.accept().unwrap();
        let a = (conn.as_raw_fd(), inode(conn.as_fd()));
        assert_eq!(accepted_from(me, &listener, &[c, a], &[]).unwrap(), vec![(listener[0].1, a.1, false)]);
        // The client's own address makes it the probe.
        let probe = socket2::SockRef::from(&client).local_addr().unwrap();
        assert_eq!(accepted_from(me, &listener, &[c, a], &[probe]).unwrap(), vec![(listener[0].1, a.1, true)]);
    }
}

#[cfg(test)]
mod addresses {
    use super::*;

    fn ip(s: &str) -> SockAddr {
        s.parse::<std::net::SocketAddr>().unwrap().into()
    }

    #[test]
    fn a_wildcard_listener_owns_connections_to_any_of_its_addresses() {
        assert!(accepted_on(&ip("0.0.0.0:80"), &ip("127.0.0.1:80")));
        assert!(accepted_on(&ip("[::]:80"), &ip("[::ffff:127.0.0.1]:80")));
        assert!(accepted_on(&ip("127.0.0.1:80"), &ip("[::ffff:127.0.0.1]:80")));
        assert!(!accepted_on(&ip("127.0.0.1:80"), &ip("127.0.0.2:80")));
        assert!(!accepted_on(&ip("0.0.0.0:80"), &ip("127.0.0.1:81")));
        let unix = SockAddr::unix("/tmp/a.sock").unwrap();
        assert!(accepted_on(&unix, &SockAddr::unix("/tmp/a.sock").unwrap()));
        assert!(!accepted_on(&unix, &SockAddr::unix("/tmp/b.sock").unwrap()));
        assert!(!accepted_on(&unix, &ip("127.0.0.1:80")));
    }

    #[test]
    fn probes_are_known_by_their_address() {
        assert!(same(&ip("127.0.0.1:5000"), &ip("[::ffff:127.0.0.1]:5000")));
        assert!(!same(&ip("127.0.0.1:5000"), &ip("127.0.0.1:5001")));
        let a = SockAddr::unix("\0hotswap-probe-1").unwrap();
        assert!(same(&a, &SockAddr::unix("\0hotswap-probe-1").unwrap()));
        assert!(!same(&a, &SockAddr::unix("\0hotswap-probe-2").unwrap()));
    }

    /// The health check's question: did this process accept *my* connection?
    #[test]
    fn the_accepted_end_of_a_connection_is_found_by_its_client() {
        use std::os::fd::AsFd;
        let inode = |f: std::os::fd::BorrowedFd<'_>| super::super::socket_inode(f).unwrap();
        let me = std::process::id() as i32;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let other = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, _) = l.accept().unwrap();
        let held = [(conn.as_raw_fd(), inode(conn.as_fd()))];
        match holds_peer_of(me, &held, client.as_fd()) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return, // kernel before 5.6
            r => assert!(r.unwrap(), "the first connection was accepted"),
        }
        assert!(!holds_peer_of(me, &held, other.as_fd()).unwrap(), "the second is still queued");
        let dir = std::env::temp_dir().join(format!("hotswap-peer-{me}"));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let ul = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let uc = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert!(!holds_peer_of(me, &[], uc.as_fd()).unwrap());
        let (ua, _) = ul.accept().unwrap();
        assert!(holds_peer_of(me, &[(ua.as_raw_fd(), inode(ua.as_fd()))], uc.as_fd()).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
