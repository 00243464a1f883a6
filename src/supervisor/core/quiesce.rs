//! Quiescing a retiring worker that does not drain, decided without a
//! process: which workers, when a connection has a request in flight, and
//! when the worker is stopped.
//!
//! A worker whose stop signal is neither caught nor ignored nor blocked
//! (and ends a process by default) dies at that signal with whatever it is
//! answering: Python's `http.server`, `php -S`, waitress, any server
//! without a graceful stop. Such a worker, on a socket shared with the
//! others, cannot be kept from new connections, so it is caught at a
//! moment when it answers nothing:
//!
//! 1. Every [`TICK`] the shell looks at the connections the worker holds.
//!    When none has a request in flight ([`in_flight`]), it stops the
//!    worker's process group (`SIGSTOP`): a stopped process accepts and
//!    reads nothing.
//! 2. Once every thread has stopped, it looks again. Still nothing in
//!    flight: the worker is told to go (its stop signal, then `SIGCONT`),
//!    and dies without having run again. Otherwise (it accepted and read a
//!    request between the two looks) it goes on (`SIGCONT`) and the looks
//!    go on.
//! 3. After [`MAX`] (or when the primary stops) it is told to go as it is.
//!
//! What is not in flight: a connection the worker has neither read from
//! nor written to (its request, if any, waits in the socket, and rescue
//! passes it on once the worker is gone), and a keep-alive connection
//! answered and quiet for [`IDLE`] (rescue holds it as for any idle
//! close). Without rescue only the second kind is safe.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::types::WorkerId;

/// How often a quiescing worker is looked at while it runs.
pub const TICK: Duration = Duration::from_millis(5);
/// How soon a worker just stopped is looked at again (its threads stop as
/// each next enters the kernel: at once for a thread that waits there).
pub const FREEZE_TICK: Duration = Duration::from_millis(1);
/// The longest a worker stays stopped waiting for its threads to stop;
/// then it goes on and the looks go on.
pub const FREEZE_MAX: Duration = Duration::from_millis(100);
/// The longest a worker is quiesced before it is told to go anyway.
pub const MAX: Duration = Duration::from_secs(5);
/// How long an answered keep-alive connection must have been quiet to be
/// idle: an HTTP/1.0 server closes a connection microseconds after its
/// last write, and one between two writes of an answer (its head, then
/// its body) is not quiet that long.
pub const IDLE: Duration = Duration::from_millis(200);

/// Signals whose default action ends the process (`signal(7)`): the others
/// are ignored by default, or stop or continue it.
const FATAL_BY_DEFAULT: &[&str] = &[
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// What a worker's main process does with its stop signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handling {
    /// A handler runs.
    pub caught: bool,
    pub ignored: bool,
    /// Every thread blocks it (a server that takes it with `sigwait`).
    pub blocked: bool,
}

/// Whether a worker is quiesced before it is told to go: it is told by
/// signal (`by_signal`, not over IPC), named `signal`, not while the
/// primary stops, and either it is a server known to have no graceful stop
/// (`no_graceful_stop`: `php -S` catches SIGTERM only while it runs a
/// request, to end it first) that does not ignore the signal, or its main
/// process neither catches, ignores nor blocks the signal, whose default
/// action ends a process.
pub fn applies(by_signal: bool, signal: &str, h: Handling, no_graceful_stop: bool, stopping: bool) -> bool {
    if !by_signal || stopping || h.ignored {
        return false;
    }
    no_graceful_stop || (!h.caught && !h.blocked && FATAL_BY_DEFAULT.contains(&signal))
}

pub use crate::types::quiesce::Standing;

/// Whether `c` has a request in flight: anything but a connection the
/// worker has not touched (when `rescued`: rescue passes its request on)
/// or one answered and quiet for [`IDLE`], whose client's last data came
/// no later than the answer and that holds nothing unread. `None` (the
/// kernel did not say) is in flight.
pub fn in_flight(c: Option<&Standing>, rescued: bool) -> bool {
    let Some(c) = c else { return true };
    if c.read == 0 && c.written == 0 {
        return !rescued;
    }
    let idle = c.written > 0 && c.unsent == 0 && c.unread == 0 && c.since_sent >= IDLE && c.since_recv >= c.since_sent;
    !idle
}

/// What the shell saw at a look (a type of [`crate::types`]: the look runs
/// off the event loop and comes back as an event).
pub use crate::types::quiesce::Seen;

/// What to do after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Look again after this long.
    Again(Duration),
    /// Nothing in flight while it runs: stop it, and look again after
    /// [`FREEZE_TICK`].
    Freeze,
    /// It was stopped and something came in flight (or its threads did not
    /// all stop in time): let it go on, and look again after this long.
    Thaw(Duration),
    /// Tell it to go (and, if it is `frozen`, let it go on after the
    /// signal). `in_flight` requests are lost with it (0 unless it
    /// `gave_up`: [`MAX`] passed or its connections could not be seen);
    /// quiesced for `waited`.
    Go { frozen: bool, in_flight: usize, waited: Duration, gave_up: bool },
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    since: Instant,
    /// When it was stopped, while it is.
    frozen: Option<Instant>,
}

/// The workers being quiesced.
#[derive(Debug, Default)]
pub struct Quiescing {
    workers: HashMap<WorkerId, Phase>,
    /// Workers told to go while stopped ([`Step::Go`] with `frozen`), until
    /// the shell has signalled them and let them go on.
    told_frozen: HashSet<WorkerId>,
}

impl Quiescing {
    /// `id` begins to be quiesced at `now`; look at it after [`TICK`].
    pub fn begin(&mut self, id: WorkerId, now: Instant) -> Duration {
        self.workers.insert(id, Phase { since: now, frozen: None });
        TICK
    }

    /// Whether `id` is being quiesced (a new image after a self-upgrade
    /// knows none: it lets the worker go on and begins again).
    pub fn knows(&self, id: WorkerId) -> bool {
        self.workers.contains_key(&id)
    }

    /// Whether `id` was stopped by a look and not let go on since (also
    /// once it is to be told to go: [`Step::Go`] with `frozen`).
    pub fn frozen(&self, id: WorkerId) -> bool {
        self.told_frozen.contains(&id) || self.workers.get(&id).is_some_and(|p| p.frozen.is_some())
    }

    /// A look at `id` at `now`.
    pub fn look(&mut self, id: WorkerId, seen: Seen, stopping: bool, now: Instant) -> Step {
        let phase = *self.workers.entry(id).or_insert(Phase { since: now, frozen: None });
        let waited = now.saturating_duration_since(phase.since);
        let go = |this: &mut Self, in_flight: usize, gave_up: bool| {
            this.workers.remove(&id);
            if phase.frozen.is_some() {
                this.told_frozen.insert(id);
            }
            Step::Go { frozen: phase.frozen.is_some(), in_flight, waited, gave_up }
        };
        let (in_flight, stopped) = match seen {
            Seen::Unknown => return go(self, 0, true),
            Seen::Held { in_flight, stopped } => (in_flight, stopped),
        };
        if stopping {
            return go(self, in_flight, false);
        }
        match phase.frozen {
            Some(_) if stopped && in_flight == 0 => go(self, 0, false),
            _ if waited >= MAX => go(self, in_flight, true),
            None if in_flight == 0 => {
                self.set_frozen(id, Some(now));
                Step::Freeze
            }
            None => Step::Again(TICK),
            Some(at) if !stopped && now.saturating_duration_since(at) < FREEZE_MAX => Step::Again(FREEZE_TICK),
            Some(_) => {
                self.set_frozen(id, None);
                Step::Thaw(TICK)
            }
        }
    }

    fn set_frozen(&mut self, id: WorkerId, at: Option<Instant>) {
        if let Some(p) = self.workers.get_mut(&id) {
            p.frozen = at;
        }
    }

    /// Every worker held stopped, now to be let go on (before the exec of a
    /// self-upgrade: the next image knows nothing of them); their looks
    /// start over from a running worker.
    pub fn thaw_all(&mut self) -> Vec<WorkerId> {
        let mut ids: Vec<WorkerId> = self.told_frozen.drain().collect();
        for (id, p) in &mut self.workers {
            if p.frozen.take().is_some() {
                ids.push(*id);
            }
        }
        ids
    }

    /// The worker was let go on after its signal, or exited: forgotten.
    pub fn gone(&mut self, id: WorkerId) {
        self.workers.remove(&id);
        self.told_frozen.remove(&id);
    }
}

#[cfg(test)]
mod tests;
