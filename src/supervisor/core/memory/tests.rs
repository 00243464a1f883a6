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
