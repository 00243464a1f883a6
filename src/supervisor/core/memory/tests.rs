//! Each rule of `--max-memory`, with fake readings.

use super::*;

const LIMIT: u64 = 100;

fn ready(id: WorkerId, rss: u64) -> Reading {
    Reading { id, state: WorkerState::Ready, rss: Some(rss) }
}

#[test]
fn the_check_is_armed_only_with_a_limit_not_while_stopping_and_once() {
    let mut m = MemoryWatch::default();
    assert!(!m.arm(false, false), "no --max-memory");
    assert!(!m.arm(true, true), "stopping");
    assert!(m.arm(true, false));
    assert!(!m.arm(true, false), "already armed");
    assert!(m.fired(true, false));
    assert!(m.arm(true, false), "armed again after it fired");
}

#[test]
fn a_check_that_fires_while_stopping_or_without_a_limit_reads_nothing() {
    let mut m = MemoryWatch::default();
    m.arm(true, false);
    assert!(!m.fired(true, true));
    assert!(!m.fired(false, false), "the limit was taken out of the config");
    assert!(m.arm(true, false), "disarmed all the same");
}

#[test]
fn one_check_above_the_limit_is_not_enough() {
    let mut m = MemoryWatch::default();
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, false), None);
    assert_eq!(m.above(1), 1);
}

#[test]
fn a_worker_above_on_two_checks_in_a_row_is_replaced() {
    let mut m = MemoryWatch::default();
    m.sampled(&[ready(1, 150), ready(2, 50)], LIMIT, false);
    assert_eq!(m.sampled(&[ready(1, 160), ready(2, 50)], LIMIT, false), Some((1, 160)));
    assert_eq!(m.above(1), 0, "counted again from zero");
}

#[test]
fn the_limit_itself_is_not_above_it() {
    let mut m = MemoryWatch::default();
    for _ in 0..5 {
        assert_eq!(m.sampled(&[ready(1, LIMIT)], LIMIT, false), None);
    }
}

#[test]
fn a_dip_below_the_limit_starts_the_count_again() {
    let mut m = MemoryWatch::default();
    m.sampled(&[ready(1, 150)], LIMIT, false);
    m.sampled(&[ready(1, 90)], LIMIT, false);
    assert_eq!(m.above(1), 0);
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, false), None);
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, false), Some((1, 150)));
}

#[test]
fn the_biggest_is_replaced_first_one_at_a_time() {
    let mut m = MemoryWatch::default();
    let reading = [ready(1, 150), ready(2, 300), ready(3, 200)];
    m.sampled(&reading, LIMIT, false);
    assert_eq!(m.sampled(&reading, LIMIT, false), Some((2, 300)));
    assert_eq!(m.above(1), 2, "the others keep their count");
    assert_eq!(m.above(3), 2);
}

#[test]
fn nothing_is_replaced_while_a_reload_runs_and_the_check_after_takes_over() {
    let mut m = MemoryWatch::default();
    m.sampled(&[ready(1, 150)], LIMIT, true);
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, true), None, "a reload runs");
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, true), None);
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, false), Some((1, 150)), "at once once it ended");
}

#[test]
fn only_ready_workers_count() {
    let mut m = MemoryWatch::default();
    for state in [WorkerState::Starting, WorkerState::Stopping] {
        let w = Reading { id: 1, state, rss: Some(500) };
        for _ in 0..3 {
            assert_eq!(m.sampled(&[w], LIMIT, false), None, "{state}");
        }
        assert_eq!(m.above(1), 0);
    }
}

#[test]
fn a_worker_no_longer_ready_is_forgotten() {
    let mut m = MemoryWatch::default();
    m.sampled(&[ready(1, 150)], LIMIT, false);
    m.sampled(&[Reading { id: 1, state: WorkerState::Stopping, rss: Some(150) }], LIMIT, false);
    assert_eq!(m.above(1), 0);
    m.sampled(&[ready(2, 10)], LIMIT, false);
    assert!(m.above.is_empty(), "a worker gone from the pool is forgotten too");
}

#[test]
fn a_missing_reading_keeps_the_count() {
    let mut m = MemoryWatch::default();
    m.sampled(&[ready(1, 150)], LIMIT, false);
    m.sampled(&[Reading { id: 1, state: WorkerState::Ready, rss: None }], LIMIT, false);
    assert_eq!(m.above(1), 1);
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, false), Some((1, 150)));
}

#[test]
fn a_failed_replacement_is_tried_again_after_as_many_checks() {
    let mut m = MemoryWatch::default();
    m.sampled(&[ready(1, 150)], LIMIT, false);
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, false), Some((1, 150)));
    let r = Replacing { old: 1, slot: 0, why: "too big".into() };
    m.replaced(&r, false);
    assert!(m.per_slot.is_empty(), "not counted: it failed");
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, false), None);
    assert_eq!(m.sampled(&[ready(1, 150)], LIMIT, false), Some((1, 150)));
}

#[test]
fn a_replacement_that_worked_is_counted_for_its_slot() {
    let mut m = MemoryWatch::default();
    let r = Replacing { old: 1, slot: 2, why: "too big".into() };
    m.replaced(&r, true);
    m.replaced(&r, true);
    assert_eq!(m.per_slot.get(&2), Some(&2));
}

#[test]
fn far_below_the_limit_the_check_is_slow() {
    let mut m = MemoryWatch::default();
    assert_eq!(m.next_check(), CHECK_FAST, "the first check comes soon");
    m.sampled(&[ready(1, 10), ready(2, 50)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_FAST, "workers read once: their rate is not known yet");
    m.sampled(&[ready(1, 10), ready(2, 50)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_EVERY);
    m.sampled(&[ready(1, 10), ready(2, 50), ready(3, 5)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_FAST, "a new worker is read again soon");
}

#[test]
fn near_the_limit_the_check_is_fast() {
    let mut m = MemoryWatch::default();
    m.sampled(&[ready(1, 10), ready(2, 10)], LIMIT, false);
    m.next_check();
    m.sampled(&[ready(1, 10), ready(2, LIMIT * NEAR_PERCENT / 100)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_FAST);
    // Back down: slow again.
    m.sampled(&[ready(1, 10), ready(2, 10)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_EVERY);
}

#[test]
fn a_worker_that_would_cross_the_limit_before_the_next_slow_check_is_checked_fast() {
    let mut m = MemoryWatch::default();
    // LIMIT is 100: from 10 to 40 in one slow interval would reach 70 by
    // the next: slow; from 10 to 60 would reach 110: fast.
    m.sampled(&[ready(1, 10), ready(2, 10)], LIMIT, false);
    m.interval = Some(CHECK_EVERY);
    m.sampled(&[ready(1, 40), ready(2, 10)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_EVERY);
    let mut g = MemoryWatch::default();
    g.sampled(&[ready(1, 10)], LIMIT, false);
    g.interval = Some(CHECK_EVERY);
    g.sampled(&[ready(1, 60)], LIMIT, false);
    assert_eq!(g.next_check(), CHECK_FAST);
}

#[test]
fn growth_is_measured_per_interval_so_a_fast_check_sees_the_same_rate() {
    let mut m = MemoryWatch::default();
    m.sampled(&[ready(1, 78)], LIMIT, false);
    m.interval = Some(CHECK_FAST);
    m.sampled(&[ready(1, 80)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_FAST, "80 is near 100");
    // 2 in 250 ms is 16 per 2 s: 82 + 16 stays under 100, but 82 is near.
    m.sampled(&[ready(1, 82)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_FAST);
    // A worker that shrank and stays low goes back to slow checks.
    m.sampled(&[ready(1, 20)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_EVERY);
    assert_eq!(m.interval, Some(CHECK_EVERY));
    // 20 to 35 in 2 s (the last interval was slow) projects to 50: slow.
    m.sampled(&[ready(1, 35)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_EVERY);
    // 35 to 40 in 2 s: slow; but 40 to 48 after a fast interval is 8 per
    // 250 ms, 64 per 2 s: 48 + 64 > 100: fast.
    m.sampled(&[ready(1, 40)], LIMIT, false);
    m.interval = Some(CHECK_FAST);
    m.sampled(&[ready(1, 48)], LIMIT, false);
    assert_eq!(m.next_check(), CHECK_FAST);
}

#[test]
fn a_gone_worker_leaves_no_reading_behind() {
    let mut m = MemoryWatch::default();
    m.sampled(&[ready(1, 10), ready(2, 10)], LIMIT, false);
    m.sampled(&[ready(2, 10)], LIMIT, false);
    assert_eq!(m.last.len(), 1);
}
