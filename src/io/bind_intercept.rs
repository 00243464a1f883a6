//! The primary's side of a worker's bind filter
//! ([`crate::sys::bind_intercept`]): a task per worker that answers each
//! `bind` and `listen` its processes make, on the event loop.
//!
//! Why on the event loop and not a thread: each answer is a handful of
//! system calls that never wait (read 16 to 28 bytes of the worker's
//! memory, copy one fd, two `getsockopt`, one `ioctl`), a few microseconds,
//! made only when the worker binds or listens, so mostly at its start. And
//! a self-upgrade's exec, which runs on the event loop, then never comes
//! between receiving a call and answering it: a call is answered in the
//! same poll that received it, and one not yet received waits in the
//! kernel for the next image, which takes over the filter's fd.
//!
//! Every call is answered: a call whose answer cannot be decided (the
//! worker's memory or socket cannot be read) runs as the program made it.
//! The task ends when every process that has the filter is gone (the
//! kernel says so on the fd); if the primary is gone, a waiting call fails
//! with `ENOSYS` rather than hang (and the worker dies with the primary
//! anyway).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::unix::AsyncFd;

use super::warnings::Warnings;
use crate::sys::bind_intercept::rules::{self, Decision, Requested};
use crate::sys::bind_intercept::{self as sys, Call, Notice};
use crate::types::WorkerId;

pub use crate::sys::bind_intercept::{support, Filter, Installed, Notifier};

/// One of the worker's listeners, as its bind may be given it.
#[derive(Debug)]
pub struct Target {
    /// Its address (None: a Unix socket, never given by a bind).
    pub addr: Option<SocketAddr>,
    /// A copy of the socket at the worker's fd 3 + its index.
    pub socket: OwnedFd,
    pub inode: u64,
}

impl Target {
    pub fn new(addr: Option<SocketAddr>, socket: OwnedFd) -> io::Result<Target> {
        let inode = sys::inode(socket.as_fd())?;
        Ok(Target { addr, socket, inode })
    }
}

/// The task of one worker's filter.
struct Answerer {
    notifier: AsyncFd<Notifier>,
    targets: Vec<Target>,
    label: String,
    worker: WorkerId,
    warnings: Warnings,
}

/// Answers the calls of a worker's filter until every process that has it
/// is gone.
pub fn serve(notifier: Notifier, targets: Vec<Target>, worker: WorkerId, label: String) -> io::Result<()> {
    // SAFETY: the Notifier owns its fd and neither closes nor replaces it
    // while the AsyncFd holds it.
    let notifier = unsafe { AsyncFd::register_with_interest(notifier, tokio::io::Interest::READABLE) }?;
    let warnings = Warnings::new(format!("{label} bind"));
    let mut a = Answerer { notifier, targets, label, worker, warnings };
    tokio::spawn(async move {
        loop {
            let Ok(mut ready) = a.notifier.readable().await else { return };
            // RECV blocks when nothing waits: ask poll first, every time.
            loop {
                match ready.get_inner().pending() {
                    Some(true) => {}
                    Some(false) => {
                        ready.clear_ready();
                        break;
                    }
                    None => return,
                }
                let notifier = ready.get_inner();
                match notifier.receive() {
                    Ok(n) => answer(notifier, &a.targets, &n, (&a.label, a.worker), &mut a.warnings),
                    // The caller was interrupted: its call is gone.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => {
                        tracing::warn!(worker = a.worker, "{}: reading its bind filter: {e}; it stops", a.label);
                        return;
                    }
                }
            }
        }
    });
    Ok(())
}

/// Decides and answers one call; every path answers.
fn answer(notifier: &Notifier, targets: &[Target], n: &Notice, (label, worker): (&str, WorkerId), warn: &mut Warnings) {
    let addrs: Vec<Option<SocketAddr>> = targets.iter().map(|t| t.addr).collect();
    let (decision, theirs, requested) = match n.call {
        Call::Bind { addr, len } => {
            let requested = sys::read_memory(n.pid, addr, len).ok().and_then(|b| rules::parse_sockaddr(&b));
            match requested {
                // The common case of a bind that is not ours: nothing more
                // is read of the worker.
                Some(r) if rules::port_wanted(r.port(), &addrs.iter().flatten().copied().collect::<Vec<_>>()) => {
                    match sys::their_socket(n.pid, n.fd) {
                        Ok(s) => {
                            let req = Requested { addr: r, v6_only: s.v6_only };
                            (rules::decide_bind(Some(req), s.tcp, &addrs), s, Some(r))
                        }
                        Err(e) => {
                            if warn.allow() {
                                tracing::warn!(
                                    worker,
                                    "{label} binds {r} (thread {}, fd {}), which hotswap listens on, but its socket \
                                     cannot be looked at ({e}): the bind is its own",
                                    n.pid,
                                    n.fd
                                );
                            }
                            (Decision::Continue, Default::default(), Some(r))
                        }
                    }
                }
                _ => (Decision::Continue, Default::default(), requested),
            }
        }
        Call::Listen => {
            let inodes: Vec<u64> = targets.iter().map(|t| t.inode).collect();
            (rules::decide_listen(sys::their_inode(n.pid, n.fd), &inodes), Default::default(), None)
        }
        Call::Other(_) => (Decision::Continue, Default::default(), None),
    };
    // What was read is the caller's only if its call still waits (the pid
    // could have been reused): only then is anything but "run it" said.
    let decision = if decision != Decision::Continue && !notifier.valid(n.id) { Decision::Continue } else { decision };
    let result = match decision {
        Decision::Continue => notifier.answer(n.id, None),
        Decision::Listening => notifier.answer(n.id, Some(0)),
        Decision::Install(i) => {
            let target = &targets[i];
            let given = (|| {
                if theirs.nonblocking {
                    // Shared with every holder, as for Node's handles: a
                    // runtime that made its socket non-blocking expects it.
                    sys::set_nonblocking(target.socket.as_fd())?;
                }
                notifier.install_fd(n.id, target.socket.as_fd(), n.fd, theirs.cloexec)
            })();
            match given {
                Ok(()) => {
                    if warn.allow() {
                        tracing::info!(
                            worker,
                            "{label} binds {} itself (thread {}, fd {}): it gets hotswap's socket {} (fd {})",
                            requested.map(|r| r.to_string()).unwrap_or_default(),
                            n.pid,
                            n.fd,
                            target.addr.map(|a| a.to_string()).unwrap_or_default(),
                            3 + i
                        );
                    }
                    notifier.answer(n.id, Some(0))
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()), // the call is gone
                Err(e) => {
                    if warn.allow() {
                        tracing::warn!(
                            worker,
                            "{label}: giving hotswap's socket to its bind on fd {} failed ({e}); the bind is its own",
                            n.fd
                        );
                    }
                    notifier.answer(n.id, None)
                }
            }
        }
    };
    if let Err(e) = result {
        if e.raw_os_error() != Some(libc::ENOENT) {
            tracing::debug!(worker, "{label}: answering its {:?}: {e}", n.call);
        }
    }
}

/// Whether a refusal was said already: said once per primary, with the
/// worker and the reason; later ones go to the debug log.
static REFUSAL_SAID: AtomicBool = AtomicBool::new(false);

/// Says that a worker runs without the filter, and why: a warning the
/// first time.
pub fn refused(label: &str, worker: WorkerId, why: &dyn std::fmt::Display) {
    let text = format!(
        "{label} runs without bind interception ({why}): a server that binds a --listen address itself fails with \
         EADDRINUSE; make it serve fd 3 (LISTEN_FDS), or see docs/own-bind.md for what refuses it"
    );
    if REFUSAL_SAID.swap(true, Ordering::Relaxed) {
        tracing::debug!(worker, "{text}");
    } else {
        tracing::warn!(worker, "{text}");
    }
}
