//! The primary's probe connections: how a worker whose event loop merely
//! holds the listening socket (an epoll registration, made when the app
//! takes fd 3, maybe before a warm-up of seconds) is seen *taking* a
//! connection.
//!
//! A probe is a plain connect to the listener's address from the primary,
//! with a local address of its own that identifies it: an ephemeral port
//! for TCP, an abstract name for a Unix socket. Nothing is ever written on
//! it; the primary closes it once it has seen which process holds the
//! other end (the look finds it among the worker's fds, with
//! `pidfd_getfd`, by that address), or when it gives it up. An app sees a
//! connection that closes without a request, as from a TCP health check of
//! a load balancer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, SockAddr, Socket, Type};

/// One probe connection (closed when dropped).
#[derive(Debug)]
pub struct Probe {
    socket: Socket,
    /// Its local address: how the worker's end is recognised.
    local: SockAddr,
}

/// Numbers abstract Unix names apart.
static NEXT: AtomicU64 = AtomicU64::new(0);

impl Probe {
    /// Connects to a listener bound at `listener` (a wildcard address is
    /// reached through loopback), from `from` if given (so that a
    /// `SO_REUSEPORT` group's program picks a given socket). Non-blocking:
    /// a connect in progress is fine, the kernel completes it.
    pub fn connect(listener: &SockAddr, from: Option<SocketAddr>) -> io::Result<Probe> {
        let (socket, target) = match listener.as_socket() {
            Some(sa) => {
                let ip = match (sa.ip(), from) {
                    // A dual-stack [::] socket takes IPv4 connections too.
                    (ip, Some(SocketAddr::V4(_))) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    (IpAddr::V4(ip), _) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    (IpAddr::V6(ip), _) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    (ip, _) => ip,
                };
                let target = SocketAddr::new(ip, sa.port());
                let s = Socket::new(Domain::for_address(target), Type::STREAM.nonblocking().cloexec(), None)?;
                if let Some(from) = from {
                    s.bind(&from.into())?;
                }
                (s, target.into())
            }
            None => {
                let s = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
                // An abstract name (no file), unique to this primary: the
                // accepted end's peer name.
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                s.bind(&SockAddr::unix(format!("\0hotswap-probe-{}-{n}", std::process::id()))?)?;
                (s, listener.clone())
            }
        };
        match socket.connect(&target) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let local = socket.local_addr()?;
        Ok(Probe { socket, local })
    }

    /// Its local address (the peer address of the worker's end).
    pub fn local(&self) -> &SockAddr {
        &self.local
    }

    /// Whether the connection failed (refused, reset): no worker takes it.
    pub fn failed(&self) -> bool {
        matches!(self.socket.take_error(), Ok(Some(_)) | Err(_))
    }
}

/// How many connections wait in a TCP listening socket's accept queue
/// (`tcpi_unacked` of `TCP_INFO` in the LISTEN state); None for a socket
/// that does not say (a Unix one). See [`defers_accept`].
pub fn queued(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain-old-data struct, valid when zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info.tcpi_unacked)
}

/// Whether `TCP_DEFER_ACCEPT` is set on a listening socket: the kernel
/// then hands a connection to `accept` only once data arrived on it, or
/// after the deferral's SYN-ACK retransmissions (about 1 s for unicorn's
/// 1 s). Until then a connection that sent nothing, as a probe, waits
/// outside the accept queue, so an empty queue does not mean that a
/// worker took it (unicorn sets it on every listener it is given,
/// hotswap's shared one too).
pub fn defers_accept(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && v > 0
}

/// The address a listening socket is bound to.
pub fn listener_address(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<SockAddr> {
    socket2::SockRef::from(&fd).local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_deferred_accept_queue_does_not_say_it_is_empty() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!defers_accept(l.as_fd()));
        let one: libc::c_int = 1;
        // SAFETY: a valid option value of its size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&l),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        assert!(defers_accept(l.as_fd()));
        let _probe = Probe::connect(&listener_address(l.as_fd()).unwrap(), None).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(queued(l.as_fd()), Some(0), "a probe that sent nothing waits outside the accept queue");
    }

    #[test]
    fn a_probe_reaches_a_wildcard_listener_and_is_known_by_its_address() {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let p = Probe::connect(&listener_address(l.as_fd()).unwrap(), None).unwrap();
        assert_eq!(queued(l.as_fd()), Some(1), "it waits in the accept queue");
        let (conn, peer) = l.accept().unwrap();
        assert_eq!(queued(l.as_fd()), Some(0));
        assert_eq!(peer, p.local().as_socket().unwrap());
        assert!(!p.failed());
        drop(p);
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &conn, &mut buf).unwrap(), 0, "closed without a byte");
    }

    #[test]
    fn a_unix_probe_has_a_name_of_its_own() {
        let dir = std::env::temp_dir().join(format!("hotswap-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let l = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        let p = Probe::connect(&listener_address(l.as_fd()).unwrap(), None).unwrap();
        assert_eq!(queued(l.as_fd()), None, "a Unix socket does not say");
        let (conn, _) = l.accept().unwrap();
        let peer = socket2::SockRef::from(&conn).peer_addr().unwrap();
        assert!(peer.as_abstract_namespace().is_some());
        assert_eq!(peer.as_abstract_namespace(), p.local().as_abstract_namespace());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_probe_comes_from_the_address_asked() {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let from: SocketAddr = "127.0.0.9:0".parse().unwrap();
        let _p = Probe::connect(&listener_address(l.as_fd()).unwrap(), Some(from)).unwrap();
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), from.ip());
    }

    #[test]
    fn a_refused_probe_says_so() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // Nothing listens there any more.
        match Probe::connect(&addr.into(), None) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            Ok(p) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                assert!(p.failed());
            }
        }
    }
}
