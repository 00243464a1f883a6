//! Unix signals, turned into supervisor events.
//!
//! SIGHUP asks for a reload (systemd's `ExecReload=kill -HUP $MAINPID`),
//! SIGTERM and SIGINT for a graceful stop (a second one forces), SIGCHLD
//! tells the supervisor a child changed state so it reaps, SIGUSR2 asks for
//! a self-upgrade, SIGUSR1 to open `--out-file` and `--error-file` again
//! (after logrotate moved them; handled here, by the output writer, in
//! every phase of the primary's life). The handlers are
//! installed before the first worker starts, so no child exit and no early
//! reload request is missed; only then are these signals unblocked (a new
//! image of a self-upgrade starts with them blocked, see
//! [`crate::sys::signal_mask`]), so one sent during the exec is delivered
//! now.
//!
//! **What counts as a second stop signal.** Some senders signal a process
//! and then its whole process group: GNU `timeout` sends SIGTERM to its
//! child and then to the child's group, so the primary gets two copies of
//! one request within microseconds. A copy of the same stop signal from the
//! same sending process within [`REPEAT_WINDOW`] of the last one is
//! therefore ignored (and logged). A signal from another process (a second
//! `kill`, `systemctl stop` after a `kill`), one that comes later, and one
//! the kernel sends for the terminal (each Ctrl-C) still counts: a second
//! Ctrl-C, or a `kill` run twice, forces the stop.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Origin;
use signal_hook_tokio::SignalsInfo;
use tokio::sync::mpsc;

use crate::types::Event;

/// A copy of a stop signal from the same sender within this long is the
/// same request (a process-group copy), not a second one.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(1);

pub fn start(events: mpsc::Sender<Event>) -> Result<()> {
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGHUP, SIGTERM, SIGINT, SIGCHLD, SIGUSR1, SIGUSR2])
        .context("installing signal handlers")?;
    // The handlers are in place: what was held back (by the previous image,
    // across the exec of a self-upgrade) is delivered now.
    crate::sys::signal_mask::unblock();
    tokio::spawn(async move {
        let mut repeats = Repeats::default();
        while let Some(origin) = signals.next().await {
            if repeats.is_copy(&origin, Instant::now()) {
                continue;
            }
            if origin.signal == SIGUSR1 {
                super::output::Output::global().reopen();
                continue;
            }
            if events.send(Event::Signal(origin.signal)).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// The last stop signal: which, from which process, when.
#[derive(Default)]
struct Repeats {
    last: Option<(i32, i32, Instant)>,
}

impl Repeats {
    /// Whether this signal is a copy of the last stop signal (same signal,
    /// same sending process, within [`REPEAT_WINDOW`]), to be ignored.
    fn is_copy(&mut self, origin: &Origin, now: Instant) -> bool {
        if origin.signal != SIGTERM && origin.signal != SIGINT {
            return false;
        }
        let name = if origin.signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
        let Some(sender) = origin.process.as_ref().map(|p| p.pid).filter(|pid| *pid > 0) else {
            // From the kernel (a terminal's Ctrl-C): every one counts.
            self.last = None;
            tracing::debug!("{name} from the kernel");
            return false;
        };
        let copy = self.last.is_some_and(|(sig, pid, at)| {
            sig == origin.signal && pid == sender && now.duration_since(at) < REPEAT_WINDOW
        });
        if copy {
            tracing::info!(
                "{name} from pid {sender} again within {} ms: the same request (a copy sent to the process group), \
                 ignored; send it again later to force the stop",
                REPEAT_WINDOW.as_millis()
            );
            return true;
        }
        tracing::debug!("{name} from pid {sender}");
        self.last = Some((origin.signal, sender, now));
        false
    }
}
