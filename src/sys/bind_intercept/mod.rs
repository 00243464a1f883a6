//! Servers that bind their own port: a seccomp user-notification filter on
//! `bind` and `listen` (Linux 5.9), so that a worker that binds an address
//! hotswap listens on gets hotswap's socket instead of `EADDRINUSE`.
//!
//! How: between fork and exec ([`super::spawn`]) the worker installs a
//! filter ([`Filter`]) whose only effect is that its `bind` and `listen`
//! calls (and those of every process it starts: filters are inherited)
//! wait for the primary, which holds the filter's listener fd
//! ([`Notifier`]). For each call the primary reads the program's
//! `sockaddr` from its memory, decides ([`rules`]) and answers:
//!
//! - a bind of an address one of the worker's listeners serves: that
//!   listener (the socket at its fd 3, 4, ...; under `--balance` its slot's)
//!   replaces the program's socket at the same fd number
//!   (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SETFD`, which
//!   closes the program's own socket), and the bind returns 0;
//! - a `listen` on a socket hotswap gave returns 0 without touching the
//!   socket (a program's `listen(5)` would shrink the shared accept queue);
//! - anything else runs as the program made it
//!   (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
//!
//! Why seccomp rather than an `LD_PRELOAD` shim: it works for static
//! binaries (Go) and for every language runtime alike, and needs no file
//! in the worker's environment. Its price: a process with a filter
//! installed without `CAP_SYS_ADMIN` must have `PR_SET_NO_NEW_PRIVS`, so
//! a worker (and everything it runs) can no longer gain privileges
//! through setuid, setgid or file capabilities; a primary running as root
//! installs the filter without it. The filter's verdict depends on the
//! call's number alone, so the kernel (5.11+) caches it and runs no BPF for
//! other calls; what remains is the filtered system-call entry, about 55 ns
//! of CPU per call measured (docs/own-bind.md).
//!
//! Only the native architecture's calls are filtered (x86-64 or aarch64;
//! a 32-bit program's binds are its own), and only a primary on one of
//! those, on Linux 5.9 or later, installs the filter at all ([`support`]).

pub mod rules;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `AUDIT_ARCH_*` of the architecture hotswap was built for
/// (linux/audit.h: `EM_*` | 64-bit | little-endian).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = libc::EM_X86_64 as u32 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = libc::EM_AARCH64 as u32 | 0x8000_0000 | 0x4000_0000;
/// Elsewhere [`support`] says no, and no filter is installed.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: u32 = 0;

/// Whether this machine can intercept binds: `Err` says why not.
pub fn support() -> Result<(), String> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return Err(format!("hotswap was built for {}, not x86-64 or aarch64", std::env::consts::ARCH));
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| format!("uname: {e}"))?;
    match kernel_version(&release) {
        Some(v) if v >= (5, 9) => Ok(()),
        Some(_) => Err(format!("Linux {release} is older than 5.9 (SECCOMP_IOCTL_NOTIF_ADDFD)")),
        None => Err(format!("cannot read the kernel version {release:?}")),
    }
}

/// `5.10.0-28-amd64` -> (5, 10).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The filter program, built before the fork (the child may not allocate).
pub struct Filter {
    prog: [libc::sock_filter; 7],
}

impl Filter {
    /// The program: the native architecture's `bind` and `listen` go to
    /// the primary, every other call is allowed.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Filter {
        let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
        let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        };
        let load = |offset: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
        // struct seccomp_data: nr at 0, arch at 4.
        Filter {
            prog: [
                load(4),
                jeq(AUDIT_ARCH, 0, 4), // another architecture: allow
                load(0),
                jeq(libc::SYS_bind as u32, 1, 0),
                jeq(libc::SYS_listen as u32, 0, 1),
                stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF),
                stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
            ],
        }
    }

    /// Installs the filter on the calling thread and returns its listener
    /// fd (close-on-exec), or the errno of the refusal. Tried first
    /// without `PR_SET_NO_NEW_PRIVS` (a privileged primary needs none),
    /// then, on `EACCES`, with it.
    ///
    /// # Safety
    /// For the child between fork and exec: async-signal-safe calls only.
    pub unsafe fn install(&self) -> Result<RawFd, i32> {
        let prog = libc::sock_fprog { len: self.prog.len() as u16, filter: self.prog.as_ptr() as *mut _ };
        let call = || {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                // SPEC_ALLOW: the filter is no sandbox, so it must not
                // turn on the Speculative Store Bypass mitigation that
                // kernels before 5.16 force on filtered processes (a
                // slowdown of all their code).
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                &prog as *const libc::sock_fprog,
            )
        };
        let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
        let mut fd = call();
        if fd < 0 && errno() == libc::EACCES {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(errno());
            }
            fd = call();
        }
        if fd < 0 {
            Err(errno())
        } else {
            Ok(fd as RawFd)
        }
    }
}

/// Sends the outcome of [`Filter::install`] to the primary over `sock` (a
/// Unix socket): 0 with the listener fd attached, or the errno.
///
/// # Safety
/// For the child between fork and exec: async-signal-safe calls only.
pub unsafe fn send_in_child(sock: RawFd, outcome: Result<RawFd, i32>) {
    let code: i32 = match outcome {
        Ok(_) => 0,
        Err(e) => e,
    };
    let bytes = code.to_ne_bytes();
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: 4 };
    let mut control = [0u64; 4]; // CMSG_SPACE(4) is 24 bytes, u64-aligned
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Ok(fd) = outcome {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
}

/// What became of the filter of a worker just started.
#[derive(Debug)]
pub enum Installed {
    /// Not asked for.
    No,
    /// In place: the primary answers its calls through this.
    Yes(Notifier),
    /// Refused by the kernel or a sandbox, with the reason.
    Refused(io::Error),
}

/// Receives what [`send_in_child`] sent; nothing (the child died before
/// it could say) is a refusal too.
pub fn receive(sock: BorrowedFd<'_>) -> Installed {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut code = [0u8; 4];
    let mut iov = [io::IoSliceMut::new(&mut code)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
        Ok(m) => m,
        Err(e) => return Installed::Refused(e.into()),
    };
    let mut fd = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: received with SCM_RIGHTS: a new fd nobody else owns.
                    let owned = unsafe { OwnedFd::from_raw_fd(f) };
                    fd.get_or_insert(owned);
                }
            }
        }
    }
    let bytes = msg.bytes;
    match (bytes, i32::from_ne_bytes(code), fd) {
        (4, 0, Some(fd)) => Installed::Yes(Notifier { fd }),
        (4, errno, _) if errno > 0 => Installed::Refused(io::Error::from_raw_os_error(errno)),
        _ => Installed::Refused(io::Error::other("the worker exited before it could install the filter")),
    }
}

/// Which call a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Bind { addr: u64, len: u64 },
    Listen,
    Other(i32),
}

/// One call waiting for the primary's answer.
#[derive(Debug, Clone, Copy)]
pub struct Notice {
    pub id: u64,
    /// The calling thread (its tid, not its process's pid), in the
    /// primary's pid namespace.
    pub pid: i32,
    /// The fd the call names (its first argument).
    pub fd: i32,
    pub call: Call,
}

/// The primary's end of a worker's filter.
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
}

/// The `SECCOMP_IOCTL_NOTIF_ID_VALID` number of Linux 5.0 to 5.16 before
/// its fix (`_IOR` for `_IOW`), which some of them still accept alone.
const ID_VALID_OLD: libc::Ioctl = 0x8008_2102 as libc::Ioctl;

impl Notifier {
    /// Takes over a listener fd handed over by a previous image.
    pub fn adopt(fd: OwnedFd) -> Notifier {
        Notifier { fd }
    }

    /// A copy of its fd, for a self-upgrade.
    pub fn try_clone(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Whether a call waits (`Some(true)`), none does (`Some(false)`), or
    /// every process of the filter is gone (`None`). Never blocks.
    pub fn pending(&self) -> Option<bool> {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n > 0 && p.revents & libc::POLLIN != 0 {
            Some(true)
        } else if n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            None
        } else {
            Some(false)
        }
    }

    /// The next call. Call it only when [`Notifier::pending`] said one
    /// waits: it blocks otherwise. `ENOENT`: the caller was interrupted
    /// and the call is gone.
    pub fn receive(&self) -> io::Result<Notice> {
        // SAFETY: the kernel wants a zeroed struct; all zeros is valid.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV fills the struct passed by pointer.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let call = match i64::from(n.data.nr) {
            nr if nr == libc::SYS_bind => Call::Bind { addr: n.data.args[1], len: n.data.args[2] },
            nr if nr == libc::SYS_listen => Call::Listen,
            nr => Call::Other(nr as i32),
        };
        Ok(Notice { id: n.id, pid: n.pid as i32, fd: n.data.args[0] as i32, call })
    }

    /// Whether the call is still waiting: what was read of its process
    /// since [`Notifier::receive`] is then that process's (its pid was not
    /// reused meanwhile).
    pub fn valid(&self, id: u64) -> bool {
        let fd = self.fd.as_raw_fd();
        // SAFETY: ID_VALID reads a u64 through the pointer.
        let r = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) };
        if r == 0 {
            return true;
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // SAFETY: as above, under the old request number.
            return unsafe { libc::ioctl(fd, ID_VALID_OLD, &id) } == 0;
        }
        false
    }

    /// Puts a copy of `socket` at fd `newfd` of the calling process
    /// (closing what was there), close-on-exec if `cloexec`.
    pub fn install_fd(&self, id: u64, socket: BorrowedFd<'_>, newfd: i32, cloexec: bool) -> io::Result<()> {
        let add = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
            srcfd: socket.as_raw_fd() as u32,
            newfd: newfd as u32,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: ADDFD reads the struct passed by pointer.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &add) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Answers the call: `Some(0)` makes it return 0 without running it,
    /// `None` runs it as the program made it.
    pub fn answer(&self, id: u64, value: Option<i64>) -> io::Result<()> {
        let resp = libc::seccomp_notif_resp {
            id,
            val: value.unwrap_or(0),
            error: 0,
            flags: if value.is_none() { libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32 } else { 0 },
        };
        // SAFETY: SEND reads the struct passed by pointer.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for Notifier {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A refusal in words: what refused, and what it means.
pub fn explain(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => format!(
            "installing a seccomp filter was refused ({e}): a container's seccomp profile or a security module \
             forbids it"
        ),
        Some(libc::ENOSYS) => format!("this kernel has no seccomp filters ({e})"),
        Some(libc::EINVAL) => format!("this kernel refused the filter ({e}): no seccomp user notification"),
        Some(libc::EBUSY) => format!(
            "a seccomp filter with a user-notification listener is already in place ({e}): hotswap runs under \
             something that intercepts system calls too, such as another hotswap's bind interception"
        ),
        _ => e.to_string(),
    }
}

impl std::os::fd::AsFd for Notifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
}

/// The bytes at `addr` in process `pid` (its `sockaddr`), at most 128.
pub fn read_memory(pid: i32, addr: u64, len: u64) -> io::Result<Vec<u8>> {
    use nix::sys::uio::{process_vm_readv, RemoteIoVec};
    let len = (len as usize).min(128);
    let mut buf = vec![0u8; len];
    let remote = [RemoteIoVec { base: addr as usize, len }];
    let n = process_vm_readv(nix::unistd::Pid::from_raw(pid), &mut [io::IoSliceMut::new(&mut buf)], &remote)
        .map_err(io::Error::from)?;
    buf.truncate(n);
    Ok(buf)
}

/// What the program's socket is: a TCP stream socket or not, `IPV6_V6ONLY`,
/// `O_NONBLOCK` (its open file's) and `FD_CLOEXEC` (its fd's).
#[derive(Debug, Clone, Copy, Default)]
pub struct TheirSocket {
    pub tcp: bool,
    pub v6_only: bool,
    pub nonblocking: bool,
    pub cloexec: bool,
}

/// Looks at fd `fd` of thread `tid` (a notification names the calling
/// thread: Go binds from any thread) through a copy (`pidfd_getfd`, of its
/// process) and its `/proc/TID/fdinfo` entry.
pub fn their_socket(tid: i32, fd: i32) -> io::Result<TheirSocket> {
    use socket2::SockRef;
    let pid = std::fs::read_to_string(format!("/proc/{tid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|t| t.trim().parse::<i32>().ok())
        .ok_or_else(|| io::Error::other(format!("no Tgid in /proc/{tid}/status")))?;
    let process = super::pidfd::open(pid)?;
    let copy = super::pidfd::copy_fd(&process, fd)?;
    let sock = SockRef::from(&copy);
    let tcp = sock.r#type()? == socket2::Type::STREAM
        && matches!(sock.domain()?, d if d == socket2::Domain::IPV4 || d == socket2::Domain::IPV6)
        && sock.protocol()?.is_none_or(|p| p == socket2::Protocol::TCP);
    let v6_only = sock.domain()? == socket2::Domain::IPV6 && sock.only_v6()?;
    let info = std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}"))?;
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i64::from_str_radix(f.trim(), 8).ok())
        .unwrap_or(0);
    Ok(TheirSocket {
        tcp,
        v6_only,
        nonblocking: flags & i64::from(libc::O_NONBLOCK) != 0,
        cloexec: flags & i64::from(libc::O_CLOEXEC) != 0,
    })
}

/// The inode of the socket at fd `fd` of process `pid` (`/proc/PID/fd`),
/// or None if it is not a socket.
pub fn their_inode(pid: i32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The inode of one of the primary's sockets.
pub fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd).map_err(io::Error::from)?.st_ino)
}

/// Sets `O_NONBLOCK` on a socket's open file (shared with every process
/// that holds it).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(kernel_version("5.9"), Some((5, 9)));
        assert_eq!(kernel_version("x"), None);
        assert!((5, 8) < (5, 9) && (6, 1) > (5, 9));
    }
}
