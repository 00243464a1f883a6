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
use std::os::fd::{OwnedFd, RawFd};

use crate::sys::pidfd::{copy_fd, open as pidfd_open};

/// Which of `listeners` (fd, inode: sockets the process holds) have a
/// connection among `others` (its other socket fds, with their inodes)
/// accepted from them: (listener inode, connection inode).
pub(super) fn accepted_from(
    pid: i32,
    listeners: &[(RawFd, u64)],
    others: &[(RawFd, u64)],
) -> io::Result<Vec<(u64, u64)>> {
    let mut found = Vec::new();
    if listeners.is_empty() || others.is_empty() {
        return Ok(found);
    }
    let process = pidfd_open(pid)?;
    let mut bound = Vec::new();
    for &(fd, inode) in listeners {
        match copy_fd(&process, fd) {
            Ok(l) => bound.extend(address(&l).map(|a| (a, inode))),
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => continue, // closed meanwhile
            Err(e) => return Err(e),
        }
    }
    for &(fd, conn) in others {
        let Ok(c) = copy_fd(&process, fd) else { continue }; // closed meanwhile, or not ours to see
        let Some(local) = address(&c) else { continue };
        if let Some((_, listener)) = bound.iter().find(|(a, _)| *a == local) {
            if connected(&c) && !found.iter().any(|(l, _)| l == listener) {
                found.push((*listener, conn));
            }
        }
        if found.len() == bound.len() {
            break;
        }
    }
    Ok(found)
}

/// A socket's local address, as text (IP and port, or a Unix path; None
/// for an unnamed Unix socket).
fn address(socket: &OwnedFd) -> Option<String> {
    let a = socket2::SockRef::from(socket).local_addr().ok()?;
    match a.as_socket() {
        Some(ip) => Some(ip.to_string()),
        None => Some(a.as_pathname()?.display().to_string()),
    }
}

/// Whether a socket is connected (a second listener on the same address
/// is not).
fn connected(socket: &OwnedFd) -> bool {
    socket2::SockRef::from(socket).peer_addr().is_ok()
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
        match accepted_from(me, &listener, &[c]) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return, // kernel before 5.6
            r => assert_eq!(r.unwrap(), vec![]),
        }
        let (conn, _) = l.accept().unwrap();
        let a = (conn.as_raw_fd(), inode(conn.as_fd()));
        assert_eq!(accepted_from(me, &listener, &[c, a]).unwrap(), vec![(listener[0].1, a.1)]);
    }
}
