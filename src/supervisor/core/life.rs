//! A worker's life as one enum whose states carry what holds only in
//! them, so that an impossible worker cannot be written: a starting worker
//! has no ready time, a ready one no reason it never got ready, only a
//! stopping one was killed or is not to be replaced.
//!
//! - [`Life::Starting`]: how the primary watches it get ready (its
//!   accepts, whether it sent anything on its `NOTIFY_SOCKET`, its
//!   `--health-check`), the priority it starts at (`--warmup-nice`), and
//!   why it is being stopped before it was ready, if it is.
//! - [`Life::Ready`]: how it became ready, how long that took, what proved
//!   it takes connections.
//! - [`Life::Stopping`]: what it was (ready, and how; or never ready, and
//!   why), whether SIGKILL went out and why, whether its exit is made good
//!   by a replacement.
//!
//! Every change of state is a method that takes what the new state needs
//! and gives back what the old one held and the shell still has to act on
//! (the warm-up priority to give back, the watch whose probes close). The
//! accept watch is a parameter, `A`: the shell's holds probe connections;
//! the tests use `()`. The shell (`supervisor/worker/`) does the signals.
//!
//! The handover snapshot of a self-upgrade says a worker's life in fields
//! of its own (`state`, `ready_via`, `killed`...); [`Record`] is those
//! fields, read and written here, so that the format stays as it was.

use std::time::Duration;

use crate::types::accepts::How;
use crate::types::{Killed, ReadyVia, WorkerState};

/// `--warmup-nice`: the nice value a worker started at, and the primary's,
/// to give back once it is ready (or told to go).
pub type Warm = (i32, i32);

/// Where a worker is in its life.
#[derive(Debug)]
pub enum Life<A> {
    /// Started, not yet ready.
    Starting(Starting<A>),
    /// Ready: serving.
    Ready(Ready),
    /// Told to shut down, or killed; waiting for it to exit.
    Stopping(Stopping),
}

/// What holds of a worker while it starts.
#[derive(Debug, Default)]
pub struct Starting<A> {
    /// What the primary saw of its accepts (`--ready accepting`, `auto`).
    pub accept: A,
    /// Whether it sent anything on its own `NOTIFY_SOCKET` (`--ready auto`,
    /// and the diagnosis of a worker that never gets ready).
    pub notified: bool,
    /// Its `--health-check`.
    pub health: Health,
    /// The priority it starts at, until given back.
    pub warm: Option<Warm>,
    /// Why it is being stopped though it never got ready (it failed its
    /// health check and drains): carried into [`Was::Starting`].
    pub failed: Option<String>,
}

/// How a worker became ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// How; it decides how the worker is asked to stop.
    pub via: ReadyVia,
    /// How long it took from its start; None for a worker adopted from an
    /// image that did not say.
    pub took: Option<Duration>,
    /// What proved it takes connections, when its accepts were looked at.
    proof: Option<How>,
}

impl Ready {
    /// What proved it takes connections, if its accepts counted (it is
    /// ready by them, or by `READY=1` and them).
    pub fn proof(&self) -> Option<How> {
        match self.via {
            ReadyVia::Accepting | ReadyVia::Notify => self.proof,
            _ => None,
        }
    }
}

/// What holds of a worker told to go (or killed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopping {
    /// What it was before.
    pub was: Was,
    /// Why SIGKILL went out, if it did (it goes once): the `exit` event
    /// says it.
    pub killed: Option<Killed>,
    /// Whether its exit is made good by starting another worker in its
    /// slot: true for a worker killed at a ready deadline (a crash, in
    /// effect); false for one told to go on purpose.
    pub respawn: bool,
}

/// What a stopping worker was before it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Was {
    /// Still starting; why it was given up on, if that is why (its
    /// `--ready-timeout`, its health check): the message of a first
    /// generation that cannot start.
    Starting { not_ready: Option<String> },
    /// Ready, and how: `hotswap status` still says it.
    Ready(Ready),
}

/// Where a starting worker's `--health-check` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Unchecked,
    /// Running; it said it was ready this way.
    Checking(ReadyVia),
    Passed,
}

/// What a kill did.
#[derive(Debug)]
#[must_use]
pub struct Killing<A> {
    /// SIGKILL is to be sent: it was not killed before.
    pub signal: bool,
    /// What it held while starting, if it was (its priority to give back).
    pub left: Option<Starting<A>>,
}

impl<A: Default> Life<A> {
    /// A worker just started, at the priority `warm` if given.
    pub fn start(warm: Option<Warm>) -> Life<A> {
        Life::Starting(Starting { warm, ..Default::default() })
    }
}

impl<A> Life<A> {
    /// Its state's name, as status, events and the log say it.
    pub fn state(&self) -> WorkerState {
        match self {
            Life::Starting(_) => WorkerState::Starting,
            Life::Ready(_) => WorkerState::Ready,
            Life::Stopping(_) => WorkerState::Stopping,
        }
    }

    pub fn starting(&self) -> Option<&Starting<A>> {
        match self {
            Life::Starting(s) => Some(s),
            _ => None,
        }
    }

    pub fn starting_mut(&mut self) -> Option<&mut Starting<A>> {
        match self {
            Life::Starting(s) => Some(s),
            _ => None,
        }
    }

    /// How it became ready: while ready, and once stopping after it was.
    pub fn readiness(&self) -> Option<&Ready> {
        match self {
            Life::Ready(r) | Life::Stopping(Stopping { was: Was::Ready(r), .. }) => Some(r),
            _ => None,
        }
    }

    /// Why hotswap sent it SIGKILL, if it did.
    pub fn killed(&self) -> Option<Killed> {
        match self {
            Life::Stopping(s) => s.killed,
            _ => None,
        }
    }

    /// Why it never got ready, when it was given up on for that.
    pub fn not_ready(&self) -> Option<&str> {
        match self {
            Life::Starting(s) => s.failed.as_deref(),
            Life::Stopping(Stopping { was: Was::Starting { not_ready }, .. }) => not_ready.as_deref(),
            _ => None,
        }
    }

    /// Whether its exit is to be made good by a replacement: until it is
    /// told to go on purpose.
    pub fn respawn(&self) -> bool {
        match self {
            Life::Stopping(s) => s.respawn,
            _ => true,
        }
    }

    /// Starting -> Ready, `via` something, `took` that long, `proof` what
    /// its accepts showed. Gives back what it held while starting; None if
    /// it was not starting. A worker taken for ready by its accepts that
    /// announces it later is one that speaks that protocol: it is stopped
    /// by it, so its `via` changes (and nothing else).
    pub fn ready(&mut self, via: ReadyVia, took: Duration, proof: Option<How>) -> Option<Starting<A>> {
        match self {
            Life::Starting(_) => {}
            Life::Ready(r) => {
                if r.via == ReadyVia::Accepting {
                    r.via = via;
                }
                return None;
            }
            Life::Stopping(_) => return None,
        }
        match std::mem::replace(self, Life::Ready(Ready { via, took: Some(took), proof })) {
            Life::Starting(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    /// It is told to go (or will be, once it has drained its slot, been
    /// quiesced, or had its connections copied): stopping, not to be
    /// replaced. Gives back what it held if it was starting.
    pub fn stop(&mut self) -> Option<Starting<A>> {
        if let Life::Stopping(s) = self {
            s.respawn = false;
            return None;
        }
        self.become_stopping(None, false)
    }

    /// SIGKILL, for the reason `why`: stopping; its exit is still made good
    /// unless it was told to go (or [`Life::retire`]d). Only the first kill
    /// signals, and its reason is the one said.
    pub fn kill(&mut self, why: Killed) -> Killing<A> {
        if let Life::Stopping(s) = self {
            let signal = s.killed.is_none();
            if signal {
                s.killed = Some(why);
            }
            return Killing { signal, left: None };
        }
        Killing { signal: true, left: self.become_stopping(Some(why), true) }
    }

    /// A starting worker is given up on for `why`: it is about to be
    /// stopped (or killed), and that is what its exit says. Ignored once it
    /// is ready or stopping: a ready worker has no reason it never was.
    pub fn fail(&mut self, why: String) {
        if let Life::Starting(s) = self {
            s.failed = Some(why);
        }
    }

    /// A stopping worker's exit is not made good (a reload that failed
    /// gives up its new workers). A starting or ready worker is retired by
    /// [`Life::stop`].
    pub fn retire(&mut self) {
        if let Life::Stopping(s) = self {
            s.respawn = false;
        }
    }

    /// Starting or Ready -> Stopping (a stopping worker is left as it is).
    fn become_stopping(&mut self, killed: Option<Killed>, respawn: bool) -> Option<Starting<A>> {
        let placeholder = Stopping { was: Was::Starting { not_ready: None }, killed, respawn };
        match std::mem::replace(self, Life::Stopping(placeholder)) {
            Life::Starting(mut s) => {
                *self = Life::Stopping(Stopping { was: Was::Starting { not_ready: s.failed.take() }, killed, respawn });
                Some(s)
            }
            Life::Ready(r) => {
                *self = Life::Stopping(Stopping { was: Was::Ready(r), killed, respawn });
                None
            }
            stopping @ Life::Stopping(_) => {
                *self = stopping;
                None
            }
        }
    }
}

/// A worker's life as the handover snapshot of a self-upgrade says it, in
/// the fields it has always had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub state: WorkerState,
    pub ready_via: Option<ReadyVia>,
    /// How long it took to get ready, in milliseconds.
    pub ready_ms: Option<u64>,
    pub respawn: bool,
    pub killed: bool,
    pub killed_for: Option<Killed>,
    /// It sent something on its `NOTIFY_SOCKET` (while starting).
    pub notified: bool,
    /// Under `--ready auto`, it sent `READY=1` and waits to be seen
    /// accepting (while starting).
    pub said_ready: bool,
}

impl<A> Life<A> {
    /// What the snapshot says of it; `said_ready`: what its accept watch
    /// says of `READY=1`.
    pub fn record(&self, said_ready: impl FnOnce(&A) -> bool) -> Record {
        let ready = self.readiness();
        let starting = self.starting();
        Record {
            state: self.state(),
            ready_via: ready.map(|r| r.via),
            ready_ms: ready.and_then(|r| r.took).map(|d| d.as_millis() as u64),
            respawn: self.respawn(),
            killed: self.killed().is_some(),
            killed_for: self.killed(),
            notified: starting.is_some_and(|s| s.notified),
            said_ready: starting.is_some_and(|s| said_ready(&s.accept)),
        }
    }

    /// The life of a worker taken over from the previous image; `accept`
    /// makes its watch from `said_ready` (its looks start again). What the
    /// previous image knew and this one cannot carry on is lost: a health
    /// check that was running (a worker still starting is checked again
    /// when it says ready again, or not), the proof of its accepts, its
    /// warm-up priority. An older image says `killed` without why: taken as
    /// its `--shutdown-timeout`, the usual case (a worker killed at another
    /// deadline is seldom still unreaped at an upgrade); and said a ready
    /// worker's `ready_via` always, though the field may be null: then
    /// `assumed`.
    pub fn from_record(r: &Record, accept: impl FnOnce(bool) -> A) -> Life<A> {
        let killed = r.killed_for.or(r.killed.then_some(Killed::ShutdownTimeout));
        let ready = || Ready {
            via: r.ready_via.unwrap_or(ReadyVia::Assumed),
            took: r.ready_ms.map(Duration::from_millis),
            proof: None,
        };
        match r.state {
            WorkerState::Starting => Life::Starting(Starting {
                accept: accept(r.said_ready),
                notified: r.notified,
                health: Health::Unchecked,
                warm: None,
                failed: None,
            }),
            WorkerState::Ready => Life::Ready(ready()),
            WorkerState::Stopping => Life::Stopping(Stopping {
                was: match r.ready_via {
                    Some(_) => Was::Ready(ready()),
                    None => Was::Starting { not_ready: None },
                },
                killed,
                respawn: r.respawn,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
