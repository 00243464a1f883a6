//! Warnings a worker can cause, rate-limited per worker.
//!
//! A worker that writes garbage on its IPC channel (or that never reads it)
//! could otherwise make the primary log a line per message: millions a
//! second, drowning the log and the disk. Each worker's channel gets a token
//! bucket: a burst of [`BURST`] warnings, then at most [`PER_SECOND`] a
//! second; the rest are counted and summed up every [`SUMMARY_EVERY`]
//! ("[w3 g1 PID] IPC: 12,345 more warnings like this suppressed in the last
//! 5 s"), and once more when the channel closes.

use std::time::{Duration, Instant};

/// Warnings logged at once before the rate applies.
pub const BURST: u32 = 10;
/// Warnings logged per second after the burst.
pub const PER_SECOND: u32 = 2;
/// How often what was suppressed is summed up.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// One worker's warning budget.
#[derive(Debug)]
pub struct Warnings {
    label: String,
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
    since: Instant,
}

impl Warnings {
    pub fn new(label: String) -> Warnings {
        let now = Instant::now();
        Warnings { label, tokens: f64::from(BURST), refilled: now, suppressed: 0, since: now }
    }

    /// Whether to log the next warning; one that is not is counted.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.summary_if_due(now);
        let earned = now.duration_since(self.refilled).as_secs_f64() * f64::from(PER_SECOND);
        self.tokens = (self.tokens + earned).min(f64::from(BURST));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Sums up what was suppressed, if a summary is due.
    pub fn tick(&mut self) {
        self.summary_if_due(Instant::now());
    }

    /// Sums up what was suppressed, now (the channel closes).
    pub fn finish(&mut self) {
        self.summarize(Instant::now());
    }

    fn summary_if_due(&mut self, now: Instant) {
        if now.duration_since(self.since) >= SUMMARY_EVERY {
            self.summarize(now);
        }
    }

    fn summarize(&mut self, now: Instant) {
        if self.suppressed > 0 {
            let secs = now.duration_since(self.since).as_secs_f64().round().max(1.0);
            tracing::warn!(
                "{} IPC: {} more {} like this suppressed in the last {secs} s",
                self.label,
                thousands(self.suppressed),
                crate::types::plural(self.suppressed as usize, "warning")
            );
        }
        self.suppressed = 0;
        self.since = now;
    }
}

/// `12345` as `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut w = Warnings::new("[w1]".into());
        let allowed = (0..10_000).filter(|_| w.allow()).count();
        // The burst, plus whatever the rate earned while the loop ran.
        assert!((BURST as usize..BURST as usize + 3).contains(&allowed), "{allowed}");
        assert!(w.suppressed >= 9_990 - 3);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(12_345), "12,345");
        assert_eq!(thousands(2_400_000), "2,400,000");
    }
}
