//! Which `bind` gets hotswap's socket: pure decisions, tested without
//! processes.
//!
//! A worker's `bind(addr)` is given one of its listening sockets (the one
//! at its fd 3, 4, ...) when `addr` names the same TCP port and its
//! address overlaps the listener's: one equals the other, or one of them
//! is a wildcard that covers the other. So a server that binds `:8080`
//! (`[::]:8080` or `0.0.0.0:8080`) under `-l 127.0.0.1:8080` gets
//! 127.0.0.1:8080: the `-l` address is where the service listens, as the
//! user said; and one that binds 127.0.0.1:8080 under `-l 0.0.0.0:8080`
//! gets the wildcard socket (its own bind would fail with `EADDRINUSE`
//! anyway). Port 0 (any free port) never matches. Every other bind, and
//! any bind of a socket that is not a TCP stream socket, is the program's
//! own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the program's socket is, as far as the choice goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub addr: SocketAddr,
    /// `IPV6_V6ONLY` on an `AF_INET6` socket: its `::` covers no IPv4
    /// address.
    pub v6_only: bool,
}

/// The answer to a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Put the worker's listener `index` (in `--listen` order) at the fd
    /// the program named, and answer success.
    Install(usize),
    /// Answer `listen` with success without running it: the fd already is
    /// a listening socket of hotswap's, whose backlog (`--backlog`) stays.
    Listening,
    /// Let the kernel run the call as the program made it.
    Continue,
}

/// The sockaddr a program passed to `bind`, if it is an IPv4 or IPv6 one
/// (`struct sockaddr_in` / `sockaddr_in6`, in the machine's byte order
/// except port and address, which are big-endian).
pub fn parse_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        libc::AF_INET6 if bytes.len() >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            let ip = Ipv6Addr::from(ip);
            // An IPv4-mapped address is the IPv4 address it maps.
            let ip = match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            };
            Some(SocketAddr::new(ip, port))
        }
        _ => None,
    }
}

/// Whether some listener has this port: the cheap test done before
/// anything else is read of the program's socket.
pub fn port_wanted(port: u16, listeners: &[SocketAddr]) -> bool {
    port != 0 && listeners.iter().any(|l| l.port() == port)
}

/// Whether address `a` (of a socket of the family `a` is in, `v6_only` for
/// an IPv6 wildcard) covers address `b`.
fn covers(a: IpAddr, a_v6_only: bool, b: IpAddr) -> bool {
    if a == b {
        return true;
    }
    match a {
        IpAddr::V4(v4) => v4.is_unspecified() && b.is_ipv4(),
        IpAddr::V6(v6) => v6.is_unspecified() && (b.is_ipv6() || !a_v6_only),
    }
}

/// Which of the worker's TCP listeners (`listeners[i]` is its fd 3 + i's
/// address; `None` for a Unix one) a bind of `req` gets: an exact match
/// first, else the first whose address overlaps. Listeners are never
/// `v6_only`-wildcards from the program's point of view: hotswap's `[::]`
/// is taken to cover IPv4 as well (Linux's default), the safe side for a
/// program that asked for a specific IPv4 address on that port, whose own
/// bind would fail.
pub fn choose(req: Requested, listeners: &[Option<SocketAddr>]) -> Option<usize> {
    if req.addr.port() == 0 {
        return None;
    }
    let same_port = || {
        listeners.iter().enumerate().filter_map(|(i, l)| Some((i, (*l)?))).filter(|(_, l)| l.port() == req.addr.port())
    };
    if let Some((i, _)) = same_port().find(|(_, l)| l.ip() == req.addr.ip()) {
        return Some(i);
    }
    same_port()
        .find(|(_, l)| covers(req.addr.ip(), req.v6_only, l.ip()) || covers(l.ip(), false, req.addr.ip()))
        .map(|(i, _)| i)
}

/// The answer to a `bind`: `requested` is the program's address and
/// socket (None: not an IPv4 or IPv6 address), `tcp` whether its socket is
/// a TCP stream socket.
pub fn decide_bind(requested: Option<Requested>, tcp: bool, listeners: &[Option<SocketAddr>]) -> Decision {
    match requested.filter(|_| tcp).and_then(|r| choose(r, listeners)) {
        Some(i) => Decision::Install(i),
        None => Decision::Continue,
    }
}

/// The answer to a `listen` on a socket of inode `inode` (None: not a
/// socket, or not known), given the inodes of the worker's listeners.
pub fn decide_listen(inode: Option<u64>, listeners: &[u64]) -> Decision {
    match inode {
        Some(i) if listeners.contains(&i) => Decision::Listening,
        _ => Decision::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn req(s: &str) -> Requested {
        Requested { addr: sa(s), v6_only: false }
    }

    fn tcp(list: &[&str]) -> Vec<Option<SocketAddr>> {
        list.iter().map(|s| Some(sa(s))).collect()
    }

    #[test]
    fn the_same_address_matches() {
        assert_eq!(choose(req("127.0.0.1:8080"), &tcp(&["127.0.0.1:8080"])), Some(0));
        assert_eq!(choose(req("[::1]:8080"), &tcp(&["127.0.0.1:8080", "[::1]:8080"])), Some(1));
    }

    #[test]
    fn a_wildcard_bind_gets_the_listener_it_covers() {
        // Go's ListenAndServe(":8080") binds [::]:8080, dual-stack.
        assert_eq!(choose(req("[::]:8080"), &tcp(&["127.0.0.1:8080"])), Some(0));
        assert_eq!(choose(req("0.0.0.0:8080"), &tcp(&["127.0.0.1:8080"])), Some(0));
        assert_eq!(choose(req("0.0.0.0:8080"), &tcp(&["[::1]:8080"])), None, "IPv4 wildcard, IPv6 listener");
        let v6_only = Requested { addr: sa("[::]:8080"), v6_only: true };
        assert_eq!(choose(v6_only, &tcp(&["127.0.0.1:8080"])), None);
        assert_eq!(choose(v6_only, &tcp(&["127.0.0.1:8080", "[::1]:8080"])), Some(1));
    }

    #[test]
    fn a_specific_bind_gets_a_wildcard_listener_that_covers_it() {
        assert_eq!(choose(req("127.0.0.1:8080"), &tcp(&["0.0.0.0:8080"])), Some(0));
        assert_eq!(choose(req("127.0.0.1:8080"), &tcp(&["[::]:8080"])), Some(0));
        assert_eq!(choose(req("[::1]:8080"), &tcp(&["0.0.0.0:8080"])), None);
    }

    #[test]
    fn an_exact_match_wins_over_an_overlap() {
        assert_eq!(choose(req("127.0.0.1:8080"), &tcp(&["0.0.0.0:8080", "127.0.0.1:8080"])), Some(1));
    }

    #[test]
    fn other_binds_are_the_programs_own() {
        let ours = tcp(&["127.0.0.1:8080"]);
        assert_eq!(choose(req("127.0.0.1:8081"), &ours), None, "another port");
        assert_eq!(choose(req("127.0.0.2:8080"), &ours), None, "another address on the port");
        assert_eq!(choose(req("0.0.0.0:0"), &tcp(&["127.0.0.1:0"])), None, "port 0 is any free port");
        assert_eq!(choose(req("127.0.0.1:8080"), &[None]), None, "a Unix listener");
        assert!(!port_wanted(0, &[sa("127.0.0.1:0")]));
        assert!(port_wanted(8080, &[sa("127.0.0.1:8080")]));
        assert!(!port_wanted(8081, &[sa("127.0.0.1:8080")]));
    }

    #[test]
    fn decisions() {
        let ours = tcp(&["127.0.0.1:8080", "127.0.0.1:9090"]);
        assert_eq!(decide_bind(Some(req("[::]:9090")), true, &ours), Decision::Install(1));
        assert_eq!(decide_bind(Some(req("[::]:9090")), false, &ours), Decision::Continue, "a UDP socket");
        assert_eq!(decide_bind(Some(req("127.0.0.1:7070")), true, &ours), Decision::Continue);
        assert_eq!(decide_bind(None, true, &ours), Decision::Continue, "a Unix address");
        assert_eq!(decide_listen(Some(42), &[7, 42]), Decision::Listening);
        assert_eq!(decide_listen(Some(43), &[7, 42]), Decision::Continue);
        assert_eq!(decide_listen(None, &[7, 42]), Decision::Continue);
    }

    #[test]
    fn sockaddrs_are_read_as_the_kernel_lays_them_out() {
        // SAFETY: plain C structs, all zeros is valid.
        let mut v4: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        v4.sin_family = libc::AF_INET as libc::sa_family_t;
        v4.sin_port = 8080u16.to_be();
        v4.sin_addr.s_addr = u32::from(Ipv4Addr::new(127, 0, 0, 1)).to_be();
        // SAFETY: reading the struct's own bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&v4 as *const libc::sockaddr_in).cast::<u8>(), std::mem::size_of_val(&v4))
        };
        assert_eq!(parse_sockaddr(bytes), Some(sa("127.0.0.1:8080")));
        // SAFETY: as above.
        let mut v6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        v6.sin6_port = 443u16.to_be();
        v6.sin6_addr.s6_addr = Ipv6Addr::LOCALHOST.octets();
        // SAFETY: as above.
        let bytes6 = unsafe {
            std::slice::from_raw_parts((&v6 as *const libc::sockaddr_in6).cast::<u8>(), std::mem::size_of_val(&v6))
        };
        assert_eq!(parse_sockaddr(bytes6), Some(sa("[::1]:443")));
        v6.sin6_addr.s6_addr = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets();
        // SAFETY: as above.
        let mapped = unsafe {
            std::slice::from_raw_parts((&v6 as *const libc::sockaddr_in6).cast::<u8>(), std::mem::size_of_val(&v6))
        };
        assert_eq!(parse_sockaddr(mapped), Some(sa("127.0.0.1:443")));
        assert_eq!(parse_sockaddr(&bytes6[..20]), None, "too short");
        assert_eq!(parse_sockaddr(&[1, 0, b'/', b'x']), None, "AF_UNIX");
        assert_eq!(parse_sockaddr(&[]), None);
    }
}
