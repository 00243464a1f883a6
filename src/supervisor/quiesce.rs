//! Quiescing a retiring worker that does not drain ([`super::core::quiesce`]
//! decides): before it is told to go, a worker whose stop signal ends it at
//! once (not caught, ignored or blocked, as `/proc` says) is looked at
//! until it answers nothing, stopped (`SIGSTOP`) to make sure, and only
//! then signalled; rescue then passes on the requests it had not read.
//!
//! Linux only (the looks read `/proc` and copy the worker's fds, as rescue
//! does); elsewhere a worker is told to go at once.

use std::time::Instant;

use super::core::quiesce::{self, Handling, Seen, Step};
use super::Supervisor;
use crate::types::{Timer, WorkerId, WorkerState};

impl Supervisor {
    /// Before a worker is told to go: one that does not drain is quiesced
    /// first. True when the caller must not tell it now: it is told when
    /// the looks say so ([`Self::on_quiesce`]).
    pub(super) fn quiesce_first(&mut self, id: WorkerId) -> bool {
        if self.quiescing.knows(id) || self.quiescing.frozen(id) {
            return false;
        }
        let Some(w) = self.workers.get(&id) else { return false };
        if !w.settings().quiesce || w.killed() || w.state() == WorkerState::Starting || self.tcp_listeners().is_empty()
        {
            return false;
        }
        let signal = w.settings().stop_signal;
        let Some(h) = disposition(w.pid().as_raw(), signal as i32) else { return false };
        let known = w.settings().server().filter(|r| !r.server.has_graceful_stop()).map(|r| r.server.name());
        if !quiesce::applies(w.stops_by_signal(), signal.as_str(), h, known.is_some(), self.stop.is_some()) {
            return false;
        }
        let why = match known {
            Some(name) => format!("{name} has no graceful stop"),
            None => format!("{signal} is not caught: it ends the process at once"),
        };
        tracing::info!(
            worker = id,
            "{}: does not drain ({why}); it is told once it answers nothing (at most {} s)",
            w.label(),
            quiesce::MAX.as_secs()
        );
        if let Some(w) = self.workers.get_mut(&id) {
            w.leave();
        }
        let look = self.quiescing.begin(id, Instant::now());
        self.worker_timer(id, look, Timer::Quiesce(id));
        true
    }

    /// A look at a quiescing worker is due: it is asked of a blocking
    /// thread, and [`Self::on_quiesced`] takes what it saw.
    pub(super) fn on_quiesce(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else {
            self.quiescing.gone(id);
            return;
        };
        let pgid = w.pid().as_raw();
        if !self.quiescing.knows(id) {
            // A new image: the previous one may have left it stopped.
            thaw(pgid);
        }
        let rescued = self.rescue_covers(w.settings());
        let (listeners, frozen) = (self.tcp_listeners(), self.quiescing.frozen(id));
        // Off the event loop: the look copies every socket the worker's
        // group holds (thousands for a busy server), every few ms.
        let events = self.io.events.clone();
        // Sent from a task of the loop's own, as every timer's event: it has
        // ended by the time the event is handled (the registry forgets it
        // then), and a look that panicked still answers (as unknown: the
        // worker is told to go as it is).
        let task = tokio::spawn(async move {
            let seen = tokio::task::spawn_blocking(move || look(pgid, &listeners, frozen, rescued))
                .await
                .unwrap_or(Seen::Unknown);
            let _ = events.send(crate::types::Event::Quiesced { worker: id, seen }).await;
        });
        // The look in flight stands for the worker's pending quiesce timer:
        // a self-upgrade that execs meanwhile hands the timer over, due at
        // once, and the next image looks again.
        self.timers.add(Timer::Quiesce(id), Some(id), Instant::now(), task.abort_handle());
    }

    /// What a look at a quiescing worker saw, and what follows.
    pub(super) fn on_quiesced(&mut self, id: WorkerId, seen: Seen) {
        let Some(w) = self.workers.get(&id) else {
            self.quiescing.gone(id);
            return;
        };
        let (pgid, label) = (w.pid().as_raw(), w.label());
        match self.quiescing.look(id, seen, self.stop.is_some(), Instant::now()) {
            Step::Again(after) => self.worker_timer(id, after, Timer::Quiesce(id)),
            Step::Freeze => {
                freeze(pgid);
                self.worker_timer(id, quiesce::FREEZE_TICK, Timer::Quiesce(id));
            }
            Step::Thaw(after) => {
                thaw(pgid);
                self.worker_timer(id, after, Timer::Quiesce(id));
            }
            Step::Go { frozen, in_flight, waited, gave_up } => {
                if gave_up && waited >= quiesce::MAX {
                    tracing::warn!(
                        worker = id,
                        "{label}: still answered {in_flight} {} after {} ms; stopping it anyway",
                        crate::types::plural(in_flight, "request"),
                        waited.as_millis()
                    );
                } else if gave_up {
                    tracing::warn!(
                        worker = id,
                        "{label}: its connections could not be looked at (no right to copy them, or /proc refused); \
                         stopping it as it is"
                    );
                } else if self.stop.is_some() {
                    tracing::info!(worker = id, "{label}: the primary stops; stopping it now");
                } else {
                    tracing::info!(
                        worker = id,
                        "{label}: answers nothing after {} ms{}; stopping it",
                        waited.as_millis(),
                        if frozen { " (held stopped until its signal)" } else { "" }
                    );
                }
                if !self.rescue_first(id) {
                    self.tell_shutdown(id);
                }
            }
        }
    }

    /// Before the exec of a self-upgrade: no worker is left stopped (the
    /// next image looks at them again from the start).
    pub(super) fn thaw_before_exec(&mut self) {
        for id in self.quiescing.thaw_all() {
            if let Some(w) = self.workers.get(&id) {
                thaw(w.pid().as_raw());
            }
        }
    }

    /// The TCP listeners' addresses: an accepted connection has one as its
    /// own.
    fn tcp_listeners(&self) -> Vec<std::net::SocketAddr> {
        self.sockets
            .listeners
            .iter()
            .filter_map(|l| match &l.addr {
                crate::sys::listeners::ListenAddr::Tcp(sa) => Some(*sa),
                _ => None,
            })
            .collect()
    }
}

/// What process `pid` does with signal `signo`; None where `/proc` does
/// not say (not Linux, or it is gone).
#[cfg(target_os = "linux")]
fn disposition(pid: i32, signo: i32) -> Option<Handling> {
    let d = crate::sys::quiesce::disposition(pid, signo).ok()?;
    Some(Handling { caught: d.caught, ignored: d.ignored, blocked: d.blocked })
}

#[cfg(not(target_os = "linux"))]
fn disposition(_pid: i32, _signo: i32) -> Option<Handling> {
    None
}

/// What the worker's group holds, and whether it is all stopped (asked
/// only while it is meant to be).
#[cfg(target_os = "linux")]
fn look(pgid: i32, listeners: &[std::net::SocketAddr], frozen: bool, rescued: bool) -> Seen {
    use crate::sys::quiesce as sys;
    let Ok(conns) = sys::connections(pgid, listeners) else { return Seen::Unknown };
    let in_flight = conns.iter().filter(|c| quiesce::in_flight(c.as_ref(), rescued)).count();
    let stopped = frozen && sys::stopped(pgid).unwrap_or(false);
    Seen::Held { in_flight, stopped }
}

#[cfg(not(target_os = "linux"))]
fn look(_pgid: i32, _listeners: &[std::net::SocketAddr], _frozen: bool, _rescued: bool) -> Seen {
    Seen::Unknown
}

#[cfg(target_os = "linux")]
fn freeze(pgid: i32) {
    if let Err(e) = crate::sys::quiesce::freeze(pgid) {
        tracing::debug!("quiesce: SIGSTOP to process group {pgid}: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn freeze(_pgid: i32) {}

/// Lets a worker's group go on (`SIGCONT`); harmless if it was not stopped.
pub(super) fn thaw(pgid: i32) {
    if let Err(e) = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGCONT) {
        tracing::debug!("quiesce: SIGCONT to process group {pgid}: {e}");
    }
}
