//! The listening sockets of this network namespace, asked of the kernel
//! by netlink (`NETLINK_SOCK_DIAG`, what `ss -l` asks).
//!
//! Why not `/proc/net/tcp`: that table lists every socket of the
//! namespace, TIME_WAIT ones included, and a host that served a few
//! thousand short connections a second has a hundred thousand of them:
//! 16 MB, and a read that took 1.5 s, once more than 5 s, while clients
//! kept connecting. The kernel filters by state here, so the answer holds
//! the listening sockets only, whatever else the host does.

use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::unix::nlas::{Nla, UnixDiagName};
use netlink_packet_sock_diag::unix::{self, ShowFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

/// A listening socket: its inode and its address (`127.0.0.1:8000`,
/// `[::]:80`, `unix:/path` or `unix:@abstract`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    pub inode: u64,
    pub addr: String,
}

/// Every listening TCP (IPv4 and IPv6) and Unix stream socket of the
/// calling process's network namespace.
pub fn listening() -> io::Result<Vec<Listening>> {
    let mut out = Vec::new();
    let socket = |kind| {
        let mut s = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| context(e, "opening a NETLINK_SOCK_DIAG socket"))?;
        s.bind_auto().map_err(|e| context(e, "binding a NETLINK_SOCK_DIAG socket"))?;
        s.connect(&NetlinkAddr::new(0, 0)).map_err(|e| context(e, kind))?;
        Ok::<_, io::Error>(s)
    };
    for family in [AF_INET, AF_INET6] {
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id: if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() },
        });
        let what = if family == AF_INET { "TCP/IPv4 listeners" } else { "TCP/IPv6 listeners" };
        dump(&socket(what)?, request, what, |m| {
            if let SockDiagMessage::InetResponse(r) = m {
                let id = &r.header.socket_id;
                let addr = SocketAddr::new(id.source_address, id.source_port);
                out.push(Listening { inode: r.header.inode.into(), addr: addr.to_string() });
            }
        })?;
    }
    let request = SockDiagMessage::UnixRequest(UnixRequest {
        state_flags: unix::StateFlags::LISTEN,
        inode: 0,
        show_flags: ShowFlags::NAME,
        cookie: [0xff; 8],
    });
    dump(&socket("Unix listeners")?, request, "Unix listeners", |m| {
        if let SockDiagMessage::UnixResponse(r) = m {
            let name = r.nlas.iter().find_map(|n| match n {
                Nla::Name(UnixDiagName::Pathname(p)) => Some(String::from_utf8_lossy(p.as_bytes()).into_owned()),
                Nla::Name(UnixDiagName::Abstract(a)) => Some(format!("@{}", String::from_utf8_lossy(a))),
                _ => None,
            });
            // Unnamed listeners (socketpair-like) have no address to name.
            if let Some(name) = name {
                out.push(Listening { inode: r.header.inode.into(), addr: format!("unix:{name}") });
            }
        }
    })?;
    Ok(out)
}

/// Sends one dump request and hands each answer to `each` until the
/// kernel says it is done.
fn dump(
    socket: &Socket,
    request: SockDiagMessage,
    what: &str,
    mut each: impl FnMut(SockDiagMessage),
) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(header, request.into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| context(e, what))?;
    // The kernel fills a datagram up to about a page per recv (or 32 KiB,
    // whichever the buffer allows).
    let mut received = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut received[..], 0).map_err(|e| context(e, what))?;
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{what}: the kernel's answer ended early"),
            ));
        }
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&received[offset..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}")))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(m) => each(m),
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    let errno = e.code.map_or(0, |c| -c.get());
                    return Err(context(io::Error::from_raw_os_error(errno), what));
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

/// Names what was being asked, keeping the error's kind and errno text.
fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("asking the kernel for {what} (sock_diag): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn inode(fd: &impl AsRawFd) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap().ino()
    }

    #[test]
    fn listening_sockets_of_every_kind_are_listed_and_connections_are_not() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connected = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let dir = std::env::temp_dir().join(format!("hotswap-diag-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let unix = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        let all = listening().unwrap();
        let find = |i: u64| all.iter().find(|l| l.inode == i).map(|l| l.addr.clone());
        assert_eq!(find(inode(&v4)), Some(v4.local_addr().unwrap().to_string()));
        assert_eq!(find(inode(&unix)), Some(format!("unix:{}", dir.join("s").display())));
        assert_eq!(find(inode(&connected)), None, "a connection is not a listener");
        if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
            let all = listening().unwrap();
            assert!(all.iter().any(|l| l.inode == inode(&v6) && l.addr == v6.local_addr().unwrap().to_string()));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
