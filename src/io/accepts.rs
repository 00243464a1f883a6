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
pub use crate::sys::accepting::probe::{defers_accept, listener_address, queued, Probe};
#[cfg(target_os = "linux")]
pub use crate::sys::accepting::Limits;

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
                let started = thread_cpu();
                let report = scan(&look).map_err(|e| e.to_string());
                let cost = thread_cpu().saturating_sub(started);
                let event = Event::Looked { worker: look.worker, report: Box::new(report), cost };
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

#[cfg(target_os = "linux")]
fn scan(look: &Look) -> std::io::Result<Report> {
    let mut report = crate::sys::accepting::accepting(look.pgid, &look.inodes, &look.probes, Limits::default())?;
    if let Some((pid, inodes)) = &look.own {
        match crate::sys::accepting::own::listening(*pid, inodes) {
            Ok(found) => report.own = found.into_iter().map(|l| (*pid, l.addr)).collect(),
            Err(e) => tracing::debug!(worker = look.worker, "looking for listeners of its own: {e}"),
        }
    }
    Ok(report)
}

#[cfg(not(target_os = "linux"))]
fn scan(_: &Look) -> std::io::Result<Report> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "--ready accepting works on Linux only"))
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
}
