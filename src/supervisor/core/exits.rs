//! What a worker's exit means, decided without a process: the shell has
//! reaped it, removed it from the pool, cancelled its timers and told the
//! events clients; this says what follows.
//!
//! In this order:
//! - A worker that was told to go (its state is `Stopping`) did not crash:
//!   its slot's crash streak ends ([`CrashHistory::retired`]).
//! - While the primary stops, every exit only brings the end closer: no
//!   restart, no reload (it was cancelled).
//! - A running reload may account for it: a new worker that died before it
//!   was ready fails the reload, an old worker it retired has been
//!   replaced, a worker in its window fails it ([`Reload::on_exit`]).
//! - A worker retired on purpose is not made good.
//! - Before any worker was ever ready, a worker that dies means the
//!   command cannot start at all: the primary gives up with why.
//! - Anything else is a crash: its slot is started again after the
//!   backoff of [`crate::supervisor::backoff`].

use std::time::{Duration, Instant};

use crate::supervisor::backoff::CrashHistory;
use crate::supervisor::reload::policy::{ExitVerdict, Gone, Member, Order, Reload};
use crate::types::{WorkerId, WorkerState};

/// The worker that exited, as it was.
#[derive(Debug, Clone, Copy)]
pub struct Exited<'a> {
    pub id: WorkerId,
    pub slot: usize,
    pub state: WorkerState,
    /// Whether its exit is to be made good by a replacement.
    pub respawn: bool,
    /// How long it ran.
    pub lived: Duration,
    /// Why it was killed before it was ready (`--ready-timeout`).
    pub not_ready: Option<&'a str>,
    /// How it went, for the reload and the messages.
    pub gone: Gone<'a>,
}

/// What the exit touches of the supervisor's state.
pub struct Around<'a> {
    /// The primary is stopping.
    pub stopping: bool,
    /// Some worker has been ready once.
    pub ever_ready: bool,
    /// Each slot's crash history.
    pub slots: &'a mut [CrashHistory],
    pub reload: Option<&'a mut Reload>,
    /// The pool without the worker that exited.
    pub pool: &'a [Member],
}

/// What the shell does about an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// The primary stops: see whether the stop is done.
    StopMayBeDone,
    /// The running reload accounted for it: carry out its order.
    Reload(Order),
    /// Retired on purpose: nothing to make good.
    Nothing,
    /// The first generation cannot start: kill everything and exit with 1,
    /// saying this.
    GiveUp(String),
    /// A crash: start a worker in `slot` again after `delay`, the
    /// `streak`th crash in a row.
    Respawn { slot: usize, delay: Duration, streak: u32 },
}

/// Decides what follows the exit of `w` at `now`.
pub fn on_exit(w: &Exited<'_>, around: Around<'_>, now: Instant) -> Then {
    if w.state == WorkerState::Stopping {
        if let Some(slot) = around.slots.get_mut(w.slot) {
            slot.retired();
        }
    }
    if around.stopping {
        return Then::StopMayBeDone;
    }
    if let Some(reload) = around.reload {
        if let ExitVerdict::Handled(order) = reload.on_exit(w.id, &w.gone, around.pool) {
            return Then::Reload(order);
        }
    }
    if !w.respawn {
        return Then::Nothing;
    }
    if !around.ever_ready {
        return Then::GiveUp(cannot_start(w));
    }
    let Some(slot) = around.slots.get_mut(w.slot) else { return Then::Nothing };
    let delay = slot.crashed(w.lived, now);
    Then::Respawn { slot: w.slot, delay, streak: slot.streak() }
}

/// Why the first generation cannot start, from its worker that exited.
fn cannot_start(w: &Exited<'_>) -> String {
    match w.not_ready {
        Some(not_ready) => format!("the first generation cannot start: {not_ready}"),
        None => format!(
            "the first generation cannot start: {} {} before it was ready{}",
            w.gone.label,
            w.gone.how,
            w.gone.hint.map(|h| format!(": {h}")).unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests;
