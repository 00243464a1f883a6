//! Blocked threads: `accept`/`accept4` (thread-per-connection servers) and
//! `poll`/`ppoll`/`select`/`pselect6` (Python `socketserver` and
//! `http.server`, gunicorn's sync worker, Ruby, ...).
//!
//! `/proc/PID/task/TID/syscall` is `NR ARG0 ... ARG5 SP PC` while the thread
//! is blocked in a system call. For accept, `ARG0` is the fd. For poll and
//! select the `pollfd` array or the read `fd_set` is read from
//! `/proc/PID/mem` at the address in the arguments: the kernel leaves the
//! caller's copy untouched until the call returns.
//!
//! Both need ptrace *attach* access (`PTRACE_MODE_ATTACH_FSCREDS`): the
//! primary as the worker's ancestor with the same uid has it (also under
//! Yama `ptrace_scope` 1, since workers and the orphans it reaps as
//! subreaper are its descendants); root has it. Without it the read fails
//! with `EPERM`/`EACCES`, which the caller reports.

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;

use super::procfs::{context, parse_hex, parse_int, read_file, vanished};
use super::How;

/// System call numbers of the primary's own architecture (workers run the same).
struct Numbers {
    accept: i64,
    accept4: i64,
    /// -1 where the architecture has no such call.
    poll: i64,
    ppoll: i64,
    select: i64,
    pselect6: i64,
}

#[cfg(target_arch = "x86_64")]
const NR: Option<Numbers> = Some(Numbers { accept: 43, accept4: 288, poll: 7, ppoll: 271, select: 23, pselect6: 270 });
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64", target_arch = "loongarch64"))]
const NR: Option<Numbers> = Some(Numbers { accept: 202, accept4: 242, poll: -1, ppoll: 73, select: -1, pselect6: 72 });
/// Elsewhere only epoll sets are looked at.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
)))]
const NR: Option<Numbers> = None;

/// Whether blocked threads can be interpreted on this architecture.
pub(super) const SUPPORTED: bool = NR.is_some();

/// x32 processes on x86_64 report numbers with this bit set; the calls used
/// here have the same numbers otherwise.
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// `/proc/PID/task/TID/syscall`: `NR ARG0 .. ARG5 SP PC` (args in hex) while
/// blocked in a call, `-1 SP PC` when blocked outside one, `running` when on CPU.
#[derive(Debug, PartialEq, Eq)]
struct Syscall {
    nr: i64,
    args: [u64; 2],
}

fn parse_syscall(text: &[u8]) -> Option<Syscall> {
    let mut words = text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
    let nr = parse_int::<i64>(words.next()?)?;
    let arg0 = parse_hex(words.next()?)?;
    let arg1 = parse_hex(words.next()?)?;
    let nr = if cfg!(target_arch = "x86_64") && nr > 0 { nr & !X32_SYSCALL_BIT } else { nr };
    Some(Syscall { nr, args: [arg0, arg1] })
}

const POLLIN: i16 = libc::POLLIN | libc::POLLRDNORM;
/// Never read more of a huge `pollfd` array than this many entries.
const MAX_POLLFDS: u64 = 4096;

/// Calls `found(fd, inode, how)` for each of `sockets` (fd, inode) that a
/// thread of `pid` waits on; stops early once `done()` says so. Errors keep
/// their kind (ENOENT: gone; EACCES/EPERM: denied).
pub(super) fn inspect_threads(
    pid: i32,
    sockets: &[(i32, u64)],
    buf: &mut Vec<u8>,
    found: &mut dyn FnMut(i32, u64, How),
    done: &dyn Fn() -> bool,
) -> io::Result<()> {
    let Some(nr) = &NR else { return Ok(()) };
    let dir_path = format!("/proc/{pid}/task");
    let dir = fs::read_dir(&dir_path).map_err(|e| context(e, &dir_path))?;
    let mut mem: Option<File> = None;
    for entry in dir {
        let entry = entry.map_err(|e| context(e, &dir_path))?;
        let Some(tid) = parse_int(entry.file_name().as_bytes()) else { continue };
        let path = format!("{dir_path}/{tid}/syscall");
        match read_file(&path, buf) {
            Ok(()) => {}
            Err(e) if vanished(&e) => continue, // thread exited
            Err(e) => return Err(e),
        }
        let Some(call) = parse_syscall(buf) else { continue };
        let socket = |fd: i32| sockets.iter().find(|s| s.0 == fd).copied();
        if call.nr == nr.accept || call.nr == nr.accept4 {
            if let Some((fd, inode)) = socket(call.args[0] as i32) {
                found(fd, inode, How::Accept { tid });
            }
        } else if call.nr == nr.poll || call.nr == nr.ppoll {
            let (addr, n) = (call.args[0], call.args[1].min(MAX_POLLFDS) as usize);
            let Some(mem) = open_mem(pid, &mut mem)? else { return Ok(()) };
            let mut raw = vec![0u8; n * 8];
            if addr == 0 || mem.read_exact_at(&mut raw, addr).is_err() {
                continue; // returned meanwhile, or an odd address: not seen this time
            }
            // struct pollfd { int fd; short events; short revents; }
            for p in raw.chunks_exact(8) {
                let fd = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                let events = i16::from_ne_bytes([p[4], p[5]]);
                if events & POLLIN == 0 {
                    continue;
                }
                if let Some((fd, inode)) = socket(fd) {
                    found(fd, inode, How::Poll { tid });
                }
            }
        } else if call.nr == nr.select || call.nr == nr.pselect6 {
            let (nfds, readfds) = (call.args[0], call.args[1]);
            if readfds == 0 {
                continue;
            }
            let Some(mem) = open_mem(pid, &mut mem)? else { return Ok(()) };
            // fd_set: an array of longs, bit fd % BITS of long fd / BITS.
            const LONG: usize = std::mem::size_of::<libc::c_long>();
            for &(fd, inode) in sockets {
                if fd < 0 || fd as u64 >= nfds {
                    continue;
                }
                let (word, bit) = (fd as usize / (LONG * 8), fd as usize % (LONG * 8));
                let mut raw = [0u8; LONG];
                if mem.read_exact_at(&mut raw, readfds + (word * LONG) as u64).is_err() {
                    continue;
                }
                if libc::c_ulong::from_ne_bytes(raw) & (1 << bit) != 0 {
                    found(fd, inode, How::Select { tid });
                }
            }
        }
        if done() {
            break;
        }
    }
    Ok(())
}

/// Opens `/proc/PID/mem` once per process. `Ok(None)`: gone.
fn open_mem(pid: i32, mem: &mut Option<File>) -> io::Result<Option<&File>> {
    if mem.is_none() {
        let path = format!("/proc/{pid}/mem");
        match File::open(&path) {
            Ok(f) => *mem = Some(f),
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(context(e, path)),
        }
    }
    Ok(mem.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_file() {
        assert_eq!(
            parse_syscall(b"288 0x7 0x7ffd3c 0x7ffd38 0x80000 0x0 0x0 0x7ffd10 0x7f12\n"),
            Some(Syscall { nr: 288, args: [7, 0x7ffd3c] })
        );
        assert_eq!(parse_syscall(b"running\n"), None);
        assert_eq!(parse_syscall(b"-1 0x7ffd10 0x7f12\n").map(|s| s.nr), Some(-1));
        assert_eq!(parse_syscall(b""), None);
        assert_eq!(parse_syscall(b"43"), None);
        // x32 accept4
        #[cfg(target_arch = "x86_64")]
        assert_eq!(parse_syscall(b"1073742112 0x7 0x0").map(|s| s.nr), Some(288));
    }
}

#[cfg(test)]
mod select_tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A thread blocked in `select` with the listener in its read set is
    /// seen (Ruby's `IO.select`, Python's `select.select`: `pselect6`).
    #[test]
    fn a_thread_blocked_in_select_is_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = l.as_raw_fd();
        let inode = super::super::socket_inode(std::os::fd::AsFd::as_fd(&l)).unwrap();
        let t = std::thread::spawn(move || unsafe {
            let mut set: libc::fd_set = std::mem::zeroed();
            libc::FD_SET(fd, &mut set);
            libc::select(fd + 1, &mut set, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        });
        let me = std::process::id() as i32;
        let mut seen = false;
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut buf = Vec::new();
            inspect_threads(me, &[(fd, inode)], &mut buf, &mut |_, i, _| seen |= i == inode, &|| false).unwrap();
            if seen {
                break;
            }
        }
        // Wake it before the listener (and its fd number) goes: no thread
        // is left waiting on an fd another test may reuse.
        let _wake = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        t.join().unwrap();
        assert!(seen, "the thread in select was not seen");
    }
}
