//! Crash restarts: each of the N slots keeps its crash history, and a slot
//! whose worker keeps dying soon after it starts is restarted ever later
//! (100 ms, 200 ms, ... up to 30 s), so a crash loop never burns a core.
//! A start that fails (the command is gone, `fork` fails, the runtime
//! directory is gone) counts as a crash too, and the same failure again is
//! counted rather than logged again ([`CrashHistory::start_failed`]).
//! Pure policy, tested without processes.

use std::time::{Duration, Instant};

/// A crash within this long of the start counts towards the streak.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The crash history of one of the N slots a worker fills.
#[derive(Debug, Default, Clone)]
pub struct CrashHistory {
    restarts: u32,
    /// Crashes in a row (a worker that lived long resets it).
    streak: u32,
    /// When the next start after a crash is due, while backing off.
    retry_at: Option<Instant>,
    /// The last start that failed, and how many in a row failed that way.
    failing: Option<Failing>,
}

/// Starts of one slot that failed in a row with the same error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub error: String,
    pub times: u32,
}

/// What to do about a failed start: when to try again, and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub delay: Duration,
    /// The error is new for this slot (log it); `None` when it is the same
    /// as the last attempt's (only counted).
    pub new_error: bool,
    /// A different error ended a run of this one, failed this many times
    /// (log that count).
    pub ended: Option<Failing>,
}

/// The shortest wait after a failed start, even on a first failure: a
/// start that fails at once must never be retried at once.
pub const START_FAILED_MIN: Duration = Duration::from_millis(100);

impl CrashHistory {
    /// A slot's history as a previous image of the primary left it
    /// (self-upgrade).
    pub fn restore(restarts: u32, streak: u32) -> CrashHistory {
        CrashHistory { restarts, streak, retry_at: None, failing: None }
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
        self.streak = self.streak.saturating_add(1);
        let delay = delay(self.streak);
        self.retry_at = Some(now + delay);
        delay
    }

    /// A start failed with `error` (the command could not run, `fork`
    /// failed): it counts as a crash, so the wait doubles as for a crash
    /// loop (never less than [`START_FAILED_MIN`]), and says whether the
    /// error is worth a log line.
    pub fn start_failed(&mut self, error: &str, now: Instant) -> Retry {
        self.streak = self.streak.saturating_add(1);
        let delay = delay(self.streak).max(START_FAILED_MIN);
        self.retry_at = Some(now + delay);
        let (new_error, ended) = match &mut self.failing {
            Some(f) if f.error == error => {
                f.times = f.times.saturating_add(1);
                (false, None)
            }
            other => {
                let ended = other.replace(Failing { error: error.to_string(), times: 1 });
                (true, ended)
            }
        };
        Retry { delay, new_error, ended }
    }

    /// How the starts failed in a row before this one, if they did.
    pub fn failing(&self) -> Option<&Failing> {
        self.failing.as_ref()
    }

    /// The next start is due at `at` (a backoff handed over by a previous
    /// image of the primary).
    pub fn waits_until(&mut self, at: Instant) {
        self.retry_at = Some(at);
    }

    /// The slot's worker exited because it was told to (a reload replaced
    /// it, or `--max-memory`): it did not crash, so the crashes before it
    /// were not in a row with any after it. (Without this, a slot whose
    /// workers a frequent reload replaces, none living 10 s, would keep a
    /// crash from an hour ago in its streak and wait 30 s after the next.)
    pub fn retired(&mut self) {
        self.streak = 0;
    }

    /// A worker started again in this slot after a crash; returns the run
    /// of failed starts this ends, if any (to log its count).
    pub fn restarted(&mut self) -> Option<Failing> {
        self.restarts += 1;
        self.retry_at = None;
        self.failing.take()
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
        let mut slot = CrashHistory::default();
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

    #[test]
    fn failed_starts_count_as_crashes_and_each_error_is_logged_once() {
        let now = Instant::now();
        let mut slot = CrashHistory::default();
        // A stable worker crashed: restarted at once, and that start fails.
        assert_eq!(slot.crashed(STABLE_AFTER, now), Duration::ZERO);
        let gone = "cannot execute /srv/app: No such file or directory";
        let first = slot.start_failed(gone, now);
        assert_eq!(first, Retry { delay: Duration::from_millis(100), new_error: true, ended: None });
        let delays: Vec<u64> = (0..10)
            .map(|_| {
                let r = slot.start_failed(gone, now);
                assert!(!r.new_error && r.ended.is_none(), "the same error again is counted, not logged");
                r.delay.as_millis() as u64
            })
            .collect();
        assert_eq!(delays, vec![200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        assert_eq!(slot.waiting(now), Some(BACKOFF_MAX));
        assert_eq!(slot.failing(), Some(&Failing { error: gone.into(), times: 11 }));
        // Another error is logged, with the count of the one before.
        let fork = "fork failed: Resource temporarily unavailable";
        let r = slot.start_failed(fork, now);
        assert!(r.new_error);
        assert_eq!(r.ended, Some(Failing { error: gone.into(), times: 11 }));
        assert_eq!(r.delay, BACKOFF_MAX);
        // The command is back: the run ends, and is reported once.
        assert_eq!(slot.restarted(), Some(Failing { error: fork.into(), times: 1 }));
        assert_eq!(slot.restarted(), None);
        assert_eq!(slot.waiting(now), None);
    }

    #[test]
    fn a_worker_replaced_as_told_ends_the_streak() {
        let now = Instant::now();
        let mut slot = CrashHistory::default();
        let quick = Duration::from_millis(50);
        slot.crashed(quick, now);
        slot.crashed(quick, now);
        assert_eq!(slot.crashed(quick, now), Duration::from_millis(200));
        slot.retired();
        assert_eq!(
            slot.crashed(quick, now),
            Duration::ZERO,
            "a crash after a worker that was replaced starts a new streak"
        );
    }

    #[test]
    fn a_first_start_that_fails_is_not_retried_at_once() {
        let now = Instant::now();
        let mut slot = CrashHistory::default();
        assert_eq!(slot.start_failed("x", now).delay, START_FAILED_MIN);
        assert_eq!(slot.streak(), 1);
    }
}
