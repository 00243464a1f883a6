//! Each rule of `--balance`'s live slots and of a slot given up, with an
//! injected clock.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_slot_is_live_while_it_has_a_ready_worker() {
    assert_eq!(live_slots([0, 2], 3, 3), (3, vec![true, false, true]));
    assert_eq!(live_slots([0, 1, 2], 3, 3), (3, vec![true, true, true]));
}

#[test]
fn two_ready_workers_in_one_slot_make_it_live_once() {
    assert_eq!(live_slots([1, 1], 2, 2), (2, vec![false, true]));
}

#[test]
fn no_ready_worker_leaves_every_slot_out_but_one_is_hashed_over() {
    assert_eq!(live_slots([], 3, 3), (3, vec![false; 3]));
    assert_eq!(live_slots([], 0, 0), (1, vec![false]), "never zero slots");
}

#[test]
fn a_growing_pools_new_slots_count_once_they_have_a_ready_worker() {
    // Serving 2, the reload grows to 4: slots 2 and 3 exist but are not
    // hashed over until a worker in them is ready.
    assert_eq!(live_slots([0, 1], 2, 4), (2, vec![true, true]));
    assert_eq!(live_slots([0, 1, 3], 2, 4), (4, vec![true, true, false, true]));
}

#[test]
fn a_shrinking_pool_hashes_over_its_ready_slots_until_they_are_gone() {
    // Serving 2 after a reload from 4: slot 3's worker still ready.
    assert_eq!(live_slots([0, 1, 3], 2, 4), (4, vec![true, true, false, true]));
    assert_eq!(live_slots([0, 1], 2, 2), (2, vec![true, true]));
}

#[test]
fn no_more_slots_are_hashed_over_than_exist() {
    assert_eq!(live_slots([0, 5], 4, 2), (2, vec![true, false]));
}

#[test]
fn only_the_last_ready_worker_of_a_slot_leaves_first() {
    assert!(leaves_first(true, false, true, true));
    assert!(!leaves_first(false, false, true, true), "shared listeners: nothing to leave");
    assert!(!leaves_first(true, true, true, true), "stopping: every worker goes at once");
    assert!(!leaves_first(true, false, false, true), "a starting worker never served the slot");
    assert!(!leaves_first(true, false, true, false), "another ready worker serves the slot");
}

#[test]
fn a_leaving_worker_waits_the_minimum_even_with_an_empty_queue() {
    let t0 = Instant::now();
    let mut l = Leaving::default();
    assert_eq!(l.begin(7, t0), DRAIN_TICK);
    assert_eq!(l.look(7, 0, false, t0 + ms(20)), Drain::Again(DRAIN_TICK));
    assert_eq!(l.look(7, 0, false, t0 + DRAIN_MIN), Drain::Go { queued: 0, waited: DRAIN_MIN });
    assert_eq!(l.len(), 0, "forgotten once told");
}

#[test]
fn a_leaving_worker_waits_while_its_queue_holds_connections() {
    let t0 = Instant::now();
    let mut l = Leaving::default();
    l.begin(7, t0);
    assert_eq!(l.look(7, 3, false, t0 + ms(500)), Drain::Again(DRAIN_TICK));
    assert_eq!(l.look(7, 0, false, t0 + ms(520)), Drain::Go { queued: 0, waited: ms(520) });
}

#[test]
fn a_leaving_worker_goes_at_the_longest_wait_even_with_a_queue() {
    let t0 = Instant::now();
    let mut l = Leaving::default();
    l.begin(7, t0);
    assert_eq!(l.look(7, 2, false, t0 + DRAIN_MAX), Drain::Go { queued: 2, waited: DRAIN_MAX });
}

#[test]
fn a_leaving_worker_goes_at_once_when_the_primary_stops() {
    let t0 = Instant::now();
    let mut l = Leaving::default();
    l.begin(7, t0);
    assert_eq!(l.look(7, 5, true, t0 + ms(1)), Drain::Go { queued: 5, waited: ms(1) });
}

#[test]
fn a_look_at_a_worker_not_known_to_leave_starts_its_wait_then() {
    // A self-upgrade hands over its look, not when it began.
    let t0 = Instant::now();
    let mut l = Leaving::default();
    assert_eq!(l.look(9, 0, false, t0), Drain::Again(DRAIN_TICK));
    assert_eq!(l.look(9, 0, false, t0 + DRAIN_MIN), Drain::Go { queued: 0, waited: DRAIN_MIN });
}

#[test]
fn a_leaving_worker_that_exits_is_forgotten() {
    // The bug: a leaving worker that crashed (or was killed) stayed in the
    // set for good, since its looks were cancelled with it.
    let t0 = Instant::now();
    let mut l = Leaving::default();
    l.begin(7, t0);
    l.begin(8, t0);
    l.gone(7);
    assert_eq!(l.len(), 1);
    l.gone(7);
    assert_eq!(l.len(), 1, "forgetting twice is harmless");
}
