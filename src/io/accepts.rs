//! The looks at starting workers' accepts (`--ready accepting` and
//! `auto`), run on a thread of their own: the event loop asks and goes on,
//! and hears the result as an [`Event::Looked`].
//!
//! Why a thread: a look reads `/proc` (a `readlink` per fd of every
//! process of the worker's group), which is 0.1-0.3 ms for a typical
//! worker but grew with the worker's fds, to a third of a second for one
//! with 75,000, with `hotswap status` and every other event waiting
//! behind it. Each look is also bounded ([`Limits`]), and the supervisor
//! spaces a worker's looks by their cost (`supervisor::accepting`). One
//! thread for all workers: looks queue behind each other rather than run
//! on every core at once.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::types::accepts::Report;
use crate::types::{Event, WorkerId};

#[cfg(target_os = "linux")]
pub use crate::sys::acceptors::probe::{defers_accept, listener_address, queued, Probe};
#[cfg(target_os = "linux")]
pub use crate::sys::acceptors::Limits;

/// One look asked for.
#[derive(Debug)]
pub struct Look {
    pub worker: WorkerId,
    /// The worker's process group.
    pub pgid: i32,
    /// The listening sockets' inodes, as the worker holds them.
    pub inodes: Vec<u64>,
    /// The local addresses of the primary's probe connections to it.
    pub probes: Vec<socket2::SockAddr>,
    /// Sockets of its own to look up in the socket tables for a listening
    /// one (a pid of the group, their inodes): a server that binds its own
    /// address instead of serving fd 3.
    pub own: Option<(i32, Vec<u64>)>,
}

/// Starts the thread; looks go to the returned sender.
pub fn start(events: mpsc::Sender<Event>) -> std::io::Result<std::sync::mpsc::Sender<Look>> {
    let (tx, rx) = std::sync::mpsc::channel::<Look>();
    // With the primary's signals blocked: a signal sent during the exec of
    // a self-upgrade must wait for the new image, not be taken by this
    // thread, which the exec ends (`crate::sys::signal_mask`).
    let spawn = || {
        std::thread::Builder::new().name("hotswap-accepts".into()).spawn(move || {
            while let Ok(look) = rx.recv() {
                let (report, cost) = scan(&look);
                let event =
                    Event::Looked { worker: look.worker, report: Box::new(report.map_err(|e| e.to_string())), cost };
                if events.blocking_send(event).is_err() {
                    return; // the supervisor is gone
                }
            }
        })
    };
    crate::sys::signal_mask::blocked_while(spawn)?;
    Ok(tx)
}

/// The CPU time this thread used so far: what a look costs, whatever the
/// machine's load (wall time on a busy machine would space looks out for
/// no work of theirs).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is valid for writes.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One look, and what its look at the worker's processes cost (the CPU
/// time the next look is spaced by).
///
/// The search for listening sockets of the worker's own comes after, and
/// only for a worker that was not seen on every one of hotswap's sockets
/// (it serves an address of its own *instead*: the mistake it is for).
/// Its cost is not the look's: it is asked once per socket, and on a host
/// with a hundred thousand TIME_WAIT connections, read from `/proc/net`
/// (the fallback of a worker in a network namespace of its own), it took
/// 6 s of wall time. Counted, it spaced the worker's next look by the 2 s
/// cap; and a worker that began to wait on fd 3 during such a look (puma,
/// whose start passes the 1 s after which it is searched) waited for it
/// to end before its probe was even made.
#[cfg(target_os = "linux")]
fn scan(look: &Look) -> (std::io::Result<Report>, Duration) {
    let started = thread_cpu();
    let mut report = crate::sys::acceptors::accepting(look.pgid, &look.inodes, &look.probes, Limits::default());
    let cost = thread_cpu().saturating_sub(started);
    let Ok(found) = &mut report else { return (report, cost) };
    match &look.own {
        Some((pid, inodes)) if !found.all_seen(&look.inodes) => {
            let started = std::time::Instant::now();
            match crate::sys::acceptors::own::listening(*pid, inodes) {
                // Each with the process seen holding it (the pid asked
                // for names only the network namespace).
                Ok(own) => {
                    let holder = |inode| found.others.iter().find(|o| o.1 == inode).map_or(*pid, |o| o.0);
                    found.own = own.into_iter().map(|l| (holder(l.inode), l.addr)).collect();
                }
                Err(e) => tracing::debug!(worker = look.worker, "looking for listeners of its own: {e}"),
            }
            tracing::debug!(
                worker = look.worker,
                "looked up {} sockets of pid {pid} for listeners of its own in {} ms",
                inodes.len(),
                started.elapsed().as_millis()
            );
        }
        Some(_) => {
            tracing::debug!(worker = look.worker, "it waits on its sockets: not searched for listeners of its own")
        }
        None => {}
    }
    (report, cost)
}

#[cfg(not(target_os = "linux"))]
fn scan(_: &Look) -> (std::io::Result<Report>, Duration) {
    (Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "--ready accepting works on Linux only")), Duration::ZERO)
}

/// Elsewhere there are no probes (nothing is ever seen waiting).
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub struct Probe(socket2::SockAddr);

#[cfg(not(target_os = "linux"))]
impl Probe {
    pub fn connect(_: &socket2::SockAddr, _: Option<std::net::SocketAddr>) -> std::io::Result<Probe> {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "probes work on Linux only"))
    }
    pub fn local(&self) -> &socket2::SockAddr {
        &self.0
    }
    pub fn failed(&self) -> bool {
        true
    }
}

#[cfg(not(target_os = "linux"))]
pub fn queued(_: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    None
}

#[cfg(not(target_os = "linux"))]
pub fn defers_accept(_: std::os::fd::BorrowedFd<'_>) -> bool {
    false
}

#[cfg(not(target_os = "linux"))]
pub fn listener_address(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<socket2::SockAddr> {
    socket2::SockRef::from(&fd).local_addr()
}

/// How long to wait before a worker's next look, at least: ten times the
/// CPU time the last one cost, so that looking at a worker with very many fds takes
/// at most a tenth of a core; but never more than 2 s, so that such a
/// worker is still seen within 2 s of taking connections.
pub fn spacing(cost: Duration) -> Duration {
    (cost * 10).min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    #[test]
    fn costly_looks_are_spaced_out_but_not_forever() {
        use std::time::Duration;
        assert_eq!(super::spacing(Duration::from_micros(300)), Duration::from_millis(3));
        assert_eq!(super::spacing(Duration::from_millis(30)), Duration::from_millis(300));
        assert_eq!(super::spacing(Duration::from_millis(600)), Duration::from_secs(2));
    }

    /// A worker seen waiting on hotswap's socket is not searched for
    /// listeners of its own (that search is for one that serves elsewhere
    /// instead, and can take seconds); one not seen there is.
    #[cfg(target_os = "linux")]
    #[test]
    fn listeners_of_its_own_are_searched_only_while_it_is_not_seen_waiting() {
        use std::os::fd::AsFd;
        use std::time::{Duration, Instant};
        let inode = |l: &std::net::TcpListener| crate::sys::acceptors::socket_inode(l.as_fd()).unwrap();
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (ours_inode, own_inode) = (inode(&ours), inode(&own));
        let look = || super::Look {
            worker: 1,
            pgid: nix::unistd::getpgrp().as_raw(),
            inodes: vec![ours_inode],
            probes: vec![],
            own: Some((std::process::id() as i32, vec![own_inode])),
        };
        let (report, _) = super::scan(&look());
        let report = report.unwrap();
        assert!(!report.all_seen(&[ours_inode]), "nothing waits on it yet");
        assert_eq!(report.own.len(), 1, "not seen on ours: searched, {report:?}");
        let addr = ours.local_addr().unwrap();
        let waiter = std::thread::spawn(move || drop(ours.accept()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let report = loop {
            let (report, _) = super::scan(&look());
            let report = report.unwrap();
            if !report.seen.is_empty() || Instant::now() > deadline {
                break report;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(!report.seen.is_empty(), "the thread blocked in accept was not seen");
        assert!(report.own.is_empty(), "seen waiting on ours: not searched, {report:?}");
        drop(std::net::TcpStream::connect(addr));
        waiter.join().unwrap();
    }
}
