//! Event loops: a listening socket in an epoll set with `EPOLLIN`.
//!
//! `/proc/PID/fdinfo/<epoll fd>` lists the set, one line per target:
//! `tfd: N events: X data: D pos:P ino:I sdev:S`. `ino` (hex) and `sdev`
//! identify the target file whatever fd number the process keeps it under
//! (uvicorn dups fd 3 to 7); `events` must include `EPOLLIN`. Reading it
//! needs ptrace *read* access (same uid, or `CAP_SYS_PTRACE`); Yama does not
//! restrict it.

use std::sync::OnceLock;

use super::procfs::parse_hex;
use super::procfs::parse_int;

pub(super) const EPOLLIN: u32 = libc::EPOLLIN as u32;

/// One `tfd:` line of an epoll fd's fdinfo.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub tfd: i32,
    pub events: u32,
    pub ino: Option<u64>,
    /// The kernel-internal dev_t (`MAJOR << 20 | MINOR`) of the target's file system.
    pub sdev: Option<u32>,
}

impl Target {
    /// The inode of the socket this target is, if it is one; `by_fd` maps an
    /// fd number of the process to a socket inode, for kernels older than 5.x
    /// that print only `tfd`, `events` and `data`.
    pub fn socket_inode(&self, by_fd: impl Fn(i32) -> Option<u64>) -> Option<u64> {
        match (self.ino, self.sdev) {
            (Some(ino), Some(sdev)) if is_sockfs(sdev) => Some(ino),
            (Some(_), Some(_)) => None, // same number, another file system
            (Some(ino), None) => Some(ino),
            (None, _) => by_fd(self.tfd),
        }
    }
}

/// `tfd:        7 events:       19 data:     7f9500000003  pos:0 ino:1c3b7b sdev:8`;
/// other lines (`pos:`, `flags:`, `mnt_id:`, `ino:` of the epoll itself) skipped,
/// malformed ones too.
pub(super) fn parse_fdinfo(text: &[u8]) -> impl Iterator<Item = Target> + '_ {
    text.split(|&b| b == b'\n').filter_map(|line| {
        let mut words = line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
        if words.next()? != b"tfd:" {
            return None;
        }
        let tfd = parse_int(words.next()?)?;
        let (mut events, mut ino, mut sdev) = (None, None, None);
        while let Some(w) = words.next() {
            if w == b"events:" {
                events = parse_hex(words.next()?);
            } else if let Some(v) = w.strip_prefix(b"ino:") {
                ino = parse_hex(v);
            } else if let Some(v) = w.strip_prefix(b"sdev:") {
                sdev = parse_hex(v).and_then(|v| u32::try_from(v).ok());
            }
        }
        Some(Target { tfd, events: u32::try_from(events?).ok()?, ino, sdev })
    })
}

/// Whether a kernel-internal dev_t from fdinfo is the socket file system's.
fn is_sockfs(kdev: u32) -> bool {
    static SOCKFS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    let Some((major, minor)) = *SOCKFS.get_or_init(sockfs_dev) else { return true };
    (kdev >> 20, kdev & 0xfffff) == (major, minor)
}

/// (major, minor) of sockfs, from a throwaway socket: every socket lives there.
fn sockfs_dev() -> Option<(u32, u32)> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let fd = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).ok()?;
    let st = nix::sys::stat::fstat(&fd).ok()?;
    Some((nix::sys::stat::major(st.st_dev) as u32, nix::sys::stat::minor(st.st_dev) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo() {
        let text = b"pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n\
tfd:        7 events:       19 data:     7f9500000007  pos:0 ino:1c3b7b sdev:8\n\
tfd:       12 events: 80002005 data:                c  pos:0 ino:ff sdev:9\n\
tfd:       13 events:       19 data:                d\n\
tfd: garbage\n\
tfd:       14 events:\n";
        let got: Vec<_> = parse_fdinfo(text).collect();
        assert_eq!(
            got,
            vec![
                Target { tfd: 7, events: 0x19, ino: Some(0x1c3b7b), sdev: Some(8) },
                Target { tfd: 12, events: 0x8000_2005, ino: Some(0xff), sdev: Some(9) },
                Target { tfd: 13, events: 0x19, ino: None, sdev: None },
            ]
        );
        assert!(parse_fdinfo(b"").next().is_none());
        // Old kernels: the fd number decides.
        assert_eq!(got[2].socket_inode(|fd| (fd == 13).then_some(42)), Some(42));
    }

    #[test]
    fn sockfs_is_known() {
        let (major, minor) = sockfs_dev().unwrap();
        assert!(is_sockfs(major << 20 | minor));
        assert!(!is_sockfs((major << 20 | minor) + 1));
    }
}
