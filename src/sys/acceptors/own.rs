//! Listening sockets a worker opened itself: the commonest mistake of a
//! first run (`uvicorn app:app` without `--fd 3`, a server whose port comes
//! from its own config) leaves the worker serving an address of its own
//! while hotswap's socket goes unanswered. The worker looks healthy to
//! itself, so only the primary can say what is wrong, and it can: the
//! worker's other socket inodes ([`super::Report::others`]) are looked up
//! in the kernel's socket tables for one in the listening state.
//!
//! Read only for inodes not looked up before (the tables can be large on a
//! busy host), and only while a worker has not been seen accepting.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::procfs::{context, parse_hex, parse_int, read_file, vanished};

/// A listening socket of a worker's own, by inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnListener {
    pub inode: u64,
    /// `127.0.0.1:8000`, `[::]:80` or `unix:/path`.
    pub addr: String,
}

/// Which of `inodes` are listening TCP or Unix stream sockets, as seen in
/// the network namespace of process `pid`. A process that vanished gives
/// nothing.
///
/// Asked of the kernel by netlink ([`crate::sys::sock_diag`]) when the
/// worker shares the primary's namespace, the usual case: that answer holds
/// listeners only. A worker in a namespace of its own is looked up in its
/// `/proc/PID/net` tables, which list every socket and can take seconds on
/// a host with a hundred thousand TIME_WAIT connections.
pub fn listening(pid: i32, inodes: &[u64]) -> io::Result<Vec<OwnListener>> {
    if inodes.is_empty() {
        return Ok(Vec::new());
    }
    if same_network_namespace(pid) {
        if let Ok(all) = crate::sys::sock_diag::listening() {
            let ours = all.into_iter().filter(|l| inodes.contains(&l.inode));
            return Ok(ours.map(|l| OwnListener { inode: l.inode, addr: l.addr }).collect());
        }
    }
    in_proc_tables(pid, inodes)
}

/// Whether process `pid` is in this process's network namespace (false
/// when it cannot be told).
fn same_network_namespace(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    matches!((ns("/proc/self/ns/net"), ns(&format!("/proc/{pid}/ns/net"))), (Ok(a), Ok(b)) if a == b)
}

/// [`listening`] read from `/proc/PID/net/{tcp,tcp6,unix}`.
fn in_proc_tables(pid: i32, inodes: &[u64]) -> io::Result<Vec<OwnListener>> {
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(16 * 1024);
    for table in ["tcp", "tcp6", "unix"] {
        let path = format!("/proc/{pid}/net/{table}");
        match read_file(&path, &mut buf) {
            Ok(()) => {}
            Err(e) if vanished(&e) => return Ok(out),
            Err(e) => return Err(context(e, &path)),
        }
        for line in buf.split(|&b| b == b'\n').skip(1) {
            let found = if table == "unix" { unix_listener(line) } else { tcp_listener(line) };
            if let Some((inode, addr)) = found.filter(|(inode, _)| inodes.contains(inode)) {
                out.push(OwnListener { inode, addr });
            }
        }
    }
    Ok(out)
}

/// A line of `/proc/net/tcp{,6}` in state `0A` (LISTEN): its inode and
/// local address.
fn tcp_listener(line: &[u8]) -> Option<(u64, String)> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').filter(|f| !f.is_empty()).collect();
    if fields.get(3) != Some(&&b"0A"[..]) {
        return None;
    }
    let inode = parse_int(fields.get(9)?)?;
    let local = std::str::from_utf8(fields.get(1)?).ok()?;
    let (ip, port) = local.split_once(':')?;
    let port = u16::try_from(parse_hex(port.as_bytes())?).ok()?;
    // Each 32-bit word is printed as the host reads the network-order bytes.
    let word = |i: usize| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((inode, SocketAddr::new(ip, port).to_string()))
}

/// A line of `/proc/net/unix` with `__SO_ACCEPTCON` in its flags (a
/// listening socket) and a path.
fn unix_listener(line: &[u8]) -> Option<(u64, String)> {
    let line = std::str::from_utf8(line).ok()?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
    if flags & 0x0001_0000 == 0 {
        return None;
    }
    let inode = fields.get(6)?.parse().ok()?;
    let path = fields.get(7).filter(|p| !p.is_empty())?;
    Some((inode, format!("unix:{path}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn inode(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
        super::super::socket_inode(fd).unwrap()
    }

    #[test]
    fn a_listening_socket_of_this_process_is_found_with_its_address() {
        let me = std::process::id() as i32;
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connected = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let dir = std::env::temp_dir().join(format!("hotswap-own-{me}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let unix = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        let asked = [inode(v4.as_fd()), inode(connected.as_fd()), inode(unix.as_fd())];
        let expected = [v4.local_addr().unwrap().to_string(), format!("unix:{}", dir.join("s").display())];
        for found in [listening(me, &asked).unwrap(), in_proc_tables(me, &asked).unwrap()] {
            let addrs: Vec<&str> = found.iter().map(|l| l.addr.as_str()).collect();
            assert_eq!(addrs, expected);
        }
        if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
            let found = listening(me, &[inode(v6.as_fd())]).unwrap();
            assert_eq!(found[0].addr, v6.local_addr().unwrap().to_string());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lines_that_are_not_listeners_are_skipped() {
        let established = b"   2: 0100007F:E4FC 0100007F:8285 01 00000000:00000000 03:00000FA0 00000000  0  0 77 3 x";
        assert_eq!(tcp_listener(established), None);
        let listen = b"   1: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 99 1 x";
        if cfg!(target_endian = "little") {
            assert_eq!(tcp_listener(listen), Some((99, "127.0.0.1:8000".into())));
        }
        assert_eq!(unix_listener(b"0000: 00000002 00000000 00000000 0001 01 5 /tmp/x"), None);
        assert_eq!(
            unix_listener(b"0000: 00000002 00000000 00010000 0001 01 5 /tmp/x"),
            Some((5, "unix:/tmp/x".into()))
        );
        assert_eq!(unix_listener(b"garbage"), None);
    }
}
