//! The supervisor's pending deadlines, known by what they are and when they
//! are due, so that a self-upgrade can hand every one of them to the next
//! image with the time it has left: a crash restart waiting out its backoff,
//! a `--ready delay:`, a ready or shutdown deadline. (The image's timer
//! tasks end with the exec; a deadline not carried over would leave a slot
//! empty for good, or a worker waiting to be assumed ready until it is
//! killed as never ready.)

use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use crate::handover::TimerSnapshot;
use crate::types::Timer;

#[derive(Default)]
pub(super) struct Timers {
    armed: Vec<Armed>,
}

struct Armed {
    timer: Timer,
    due: Instant,
    handle: AbortHandle,
}

impl Timers {
    /// Records a timer task; forgets those that have fired or were cancelled.
    pub(super) fn add(&mut self, timer: Timer, due: Instant, handle: AbortHandle) {
        self.armed.retain(|a| !a.handle.is_finished());
        self.armed.push(Armed { timer, due, handle });
    }

    /// The deadlines still pending, with the time each has left. The
    /// watchdog's is left out: every image arms its own.
    pub(super) fn snapshot(&self, now: Instant) -> Vec<TimerSnapshot> {
        self.armed
            .iter()
            .filter(|a| !a.handle.is_finished() && !matches!(a.timer, Timer::Watchdog))
            .map(|a| TimerSnapshot {
                timer: a.timer,
                remaining_ms: a.due.saturating_duration_since(now).as_millis() as u64,
            })
            .collect()
    }
}

impl TimerSnapshot {
    pub(super) fn remaining(&self) -> Duration {
        Duration::from_millis(self.remaining_ms)
    }
}
