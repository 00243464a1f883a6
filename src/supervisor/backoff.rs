//! Crash restarts: each of the N slots keeps its crash history, and a slot
//! whose worker keeps dying soon after it starts is restarted ever later
//! (100 ms, 200 ms, ... up to 30 s), so a crash loop never burns a core.
//! Pure policy, tested without processes.

use std::time::{Duration, Instant};

/// A crash within this long of the start counts towards the streak.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One of the N places a worker fills, with its crash history.
#[derive(Debug, Default, Clone)]
pub struct Slot {
    restarts: u32,
    /// Crashes in a row (a worker that lived long resets it).
    streak: u32,
    /// When the next start after a crash is due, while backing off.
    retry_at: Option<Instant>,
}

impl Slot {
    /// A slot as a previous image of the primary left it (self-upgrade).
    pub fn restore(restarts: u32, streak: u32) -> Slot {
        Slot { restarts, streak, retry_at: None }
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// The worker of this slot crashed after living `lived`: how long to
    /// wait before starting another.
    pub fn crashed(&mut self, lived: Duration, now: Instant) -> Duration {
        if lived >= STABLE_AFTER {
            self.streak = 0;
        }
        self.streak += 1;
        self.retry_in(now)
    }

    /// A start failed (the command could not run): wait as after a crash,
    /// without counting a new one.
    pub fn retry_in(&mut self, now: Instant) -> Duration {
        let delay = delay(self.streak);
        self.retry_at = Some(now + delay);
        delay
    }

    /// The next start is due at `at` (a backoff handed over by a previous
    /// image of the primary).
    pub fn waits_until(&mut self, at: Instant) {
        self.retry_at = Some(at);
    }

    /// A worker starts again in this slot after a crash.
    pub fn restarted(&mut self) {
        self.restarts += 1;
        self.retry_at = None;
    }

    /// How long until the next start, while backing off.
    pub fn waiting(&self, now: Instant) -> Option<Duration> {
        self.retry_at?.checked_duration_since(now).filter(|d| !d.is_zero())
    }
}

/// The delay before a restart after `streak` crashes in a row: none after
/// the first, then 100 ms doubling up to [`BACKOFF_MAX`].
pub fn delay(streak: u32) -> Duration {
    match streak {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(100) * 2u32.saturating_pow(n.min(20) - 2)).min(BACKOFF_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_crash_restarts_at_once_then_the_delay_doubles_up_to_the_cap() {
        let delays: Vec<u64> = (1..=12).map(|n| delay(n).as_millis() as u64).collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        assert_eq!(delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_worker_that_lived_long_resets_the_streak() {
        let now = Instant::now();
        let mut slot = Slot::default();
        let quick = Duration::from_millis(50);
        assert_eq!(slot.crashed(quick, now), Duration::ZERO);
        assert_eq!(slot.crashed(quick, now), Duration::from_millis(100));
        assert_eq!(slot.crashed(quick, now), Duration::from_millis(200));
        assert_eq!(slot.waiting(now), Some(Duration::from_millis(200)));
        slot.restarted();
        assert_eq!(slot.waiting(now), None);
        assert_eq!(slot.crashed(STABLE_AFTER, now), Duration::ZERO, "a stable worker's crash starts a new streak");
        assert_eq!(slot.streak(), 1);
        assert_eq!(slot.restarts(), 1);
    }
}
