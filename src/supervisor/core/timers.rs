//! Every pending deadline of the supervisor, and every task a worker owns
//! (its health check), in one place: known by what they are, whom they
//! belong to and when they are due. So a worker's deadlines are cancelled
//! when it goes (thousands of reloads leave no sleeping timers behind), a
//! timer that fired is forgotten at the next one armed (a worker's repeated
//! looks at its accepts hold one entry, not one per look), and a
//! self-upgrade hands every pending deadline to the next image with the
//! time it has left: a crash restart waiting out its backoff, a `--ready
//! delay:`, a ready or shutdown deadline. (The image's timer tasks end with
//! the exec; a deadline not carried over would leave a slot empty for good,
//! or a worker waiting to be assumed ready until it is killed as never
//! ready.)
//!
//! What runs a timer is the shell's business: anything that can say it has
//! finished and be aborted ([`Task`]; a tokio task's handle in the
//! supervisor, a fake in the tests).

use std::time::{Duration, Instant};

use crate::handover::TimerSnapshot;
use crate::types::{Timer, WorkerId};

/// A running timer or task, as the registry sees it.
pub trait Task {
    /// It fired (or ended, or was aborted).
    fn is_finished(&self) -> bool;
    /// Cancels it; nothing happens if it already finished.
    fn abort(&self);
}

pub struct Timers<H> {
    armed: Vec<Armed<H>>,
}

impl<H> Default for Timers<H> {
    fn default() -> Self {
        Timers { armed: Vec::new() }
    }
}

struct Armed<H> {
    /// `None` for a task that is no deadline (a health check).
    timer: Option<Timer>,
    /// The worker it belongs to: cancelled when that worker goes.
    owner: Option<WorkerId>,
    due: Instant,
    handle: H,
}

impl<H: Task> Timers<H> {
    /// Records a timer due at `due`, belonging to `owner` if any; forgets
    /// those that have fired or were cancelled.
    pub fn add(&mut self, timer: Timer, owner: Option<WorkerId>, due: Instant, handle: H) {
        self.prune();
        self.armed.push(Armed { timer: Some(timer), owner, due, handle });
    }

    /// Records a task of `owner` that is no deadline (its health check):
    /// cancelled with it, never handed over.
    pub fn add_task(&mut self, owner: WorkerId, now: Instant, handle: H) {
        self.prune();
        self.armed.push(Armed { timer: None, owner: Some(owner), due: now, handle });
    }

    /// Cancels and forgets everything `owner` had pending (it is gone);
    /// returns how many were still pending.
    pub fn cancel_worker(&mut self, owner: WorkerId) -> usize {
        let mut cancelled = 0;
        self.armed.retain(|a| {
            if a.owner != Some(owner) {
                return true;
            }
            if !a.handle.is_finished() {
                cancelled += 1;
                a.handle.abort();
            }
            false
        });
        cancelled
    }

    /// How many timers and tasks are pending.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.armed.iter().filter(|a| !a.handle.is_finished()).count()
    }

    /// How many `owner` has pending.
    #[cfg(test)]
    fn pending_for(&self, owner: WorkerId) -> usize {
        self.armed.iter().filter(|a| a.owner == Some(owner) && !a.handle.is_finished()).count()
    }

    /// The deadlines still pending, with the time each has left. The
    /// watchdog's is left out (every image arms its own), and so are tasks
    /// (a health check running in this image is lost with it).
    pub fn snapshot(&self, now: Instant) -> Vec<TimerSnapshot> {
        self.armed
            .iter()
            .filter(|a| !a.handle.is_finished())
            .filter_map(|a| Some((a.timer?, a.due)))
            .filter(|(timer, _)| !matches!(timer, Timer::Watchdog))
            .map(|(timer, due)| TimerSnapshot {
                timer,
                remaining_ms: due.saturating_duration_since(now).as_millis() as u64,
            })
            .collect()
    }

    fn prune(&mut self) {
        self.armed.retain(|a| !a.handle.is_finished());
    }
}

impl TimerSnapshot {
    pub(in crate::supervisor) fn remaining(&self) -> Duration {
        Duration::from_millis(self.remaining_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A timer the test fires or watches being aborted.
    #[derive(Clone, Default)]
    struct Fake {
        fired: Rc<Cell<bool>>,
        aborted: Rc<Cell<bool>>,
    }

    impl Task for Fake {
        fn is_finished(&self) -> bool {
            self.fired.get() || self.aborted.get()
        }
        fn abort(&self) {
            self.aborted.set(true);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_workers_deadlines_are_cancelled_when_it_goes_and_no_one_elses() {
        let now = Instant::now();
        let mut t = Timers::default();
        let (a, b, c, slot) = (Fake::default(), Fake::default(), Fake::default(), Fake::default());
        t.add(Timer::Ready(1), Some(1), now + ms(100), a.clone());
        t.add(Timer::Shutdown(1), Some(1), now + ms(100), b.clone());
        t.add(Timer::Ready(2), Some(2), now + ms(100), c.clone());
        t.add(Timer::Respawn(0), None, now + ms(100), slot.clone());
        assert_eq!(t.cancel_worker(1), 2);
        assert!(a.aborted.get() && b.aborted.get());
        assert!(!c.aborted.get() && !slot.aborted.get());
        assert_eq!(t.pending(), 2);
        assert_eq!(t.pending_for(1), 0);
        assert_eq!(t.cancel_worker(1), 0, "nothing left to cancel");
    }

    #[test]
    fn a_timer_that_fired_is_not_aborted_when_its_worker_goes() {
        let now = Instant::now();
        let mut t = Timers::default();
        let a = Fake::default();
        t.add(Timer::AcceptCheck(1), Some(1), now, a.clone());
        a.fired.set(true);
        assert_eq!(t.cancel_worker(1), 0);
        assert!(!a.aborted.get());
    }

    #[test]
    fn a_worker_rearming_a_timer_holds_one_entry_not_one_per_look() {
        // The bug this replaces: `Worker::arm` appended a handle per timer
        // for the worker's whole life (a look at its accepts every 20 ms).
        let now = Instant::now();
        let mut t = Timers::default();
        for i in 0..1000 {
            let f = Fake::default();
            t.add(Timer::AcceptCheck(1), Some(1), now + ms(i), f.clone());
            f.fired.set(true);
        }
        t.add(Timer::AcceptCheck(1), Some(1), now, Fake::default());
        assert_eq!(t.armed.len(), 1);
        assert_eq!(t.pending_for(1), 1);
    }

    #[test]
    fn the_handover_gets_each_pending_deadline_with_its_time_left() {
        let now = Instant::now();
        let mut t = Timers::default();
        let fired = Fake::default();
        t.add(Timer::Respawn(3), None, now + ms(1500), Fake::default());
        t.add(Timer::Shutdown(7), Some(7), now + ms(200), Fake::default());
        t.add(Timer::Ready(8), Some(8), now + ms(50), fired.clone());
        fired.fired.set(true);
        let snap = t.snapshot(now + ms(100));
        let got: Vec<_> = snap.iter().map(|s| (s.timer, s.remaining_ms)).collect();
        assert_eq!(got, vec![(Timer::Respawn(3), 1400), (Timer::Shutdown(7), 100)]);
        assert_eq!(snap[0].remaining(), ms(1400));
    }

    #[test]
    fn an_overdue_deadline_is_handed_over_as_due_now() {
        let now = Instant::now();
        let mut t = Timers::default();
        t.add(Timer::AssumeReady(2), Some(2), now, Fake::default());
        let snap = t.snapshot(now + ms(500));
        assert_eq!(snap[0].remaining_ms, 0);
    }

    #[test]
    fn the_watchdog_and_tasks_are_not_handed_over() {
        let now = Instant::now();
        let mut t = Timers::default();
        t.add(Timer::Watchdog, None, now + ms(500), Fake::default());
        t.add_task(4, now, Fake::default());
        t.add(Timer::OrphanAndGuardianCheck, None, now + ms(1000), Fake::default());
        let snap: Vec<_> = t.snapshot(now).into_iter().map(|s| s.timer).collect();
        assert_eq!(snap, vec![Timer::OrphanAndGuardianCheck]);
        assert_eq!(t.pending(), 3);
    }

    #[test]
    fn a_workers_health_check_goes_with_it() {
        let now = Instant::now();
        let mut t = Timers::default();
        let check = Fake::default();
        t.add_task(4, now, check.clone());
        assert_eq!(t.pending_for(4), 1);
        assert_eq!(t.cancel_worker(4), 1);
        assert!(check.aborted.get());
    }
}
