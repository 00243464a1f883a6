//! The roll one worker at a time: each new worker is ready before its
//! old one is retired; a new worker that exits or times out fails the
//! reload; old workers that die are not restarted twice; the pool grows
//! and shrinks; a stop cancels.

use super::*;

#[test]
fn a_successful_reload_replaces_every_worker_one_by_one() {
    let mut pool = Pool::ready(3);
    let (mut r, mut rx) = reload(3);
    let first = r.begin_rolling(&pool.members);
    assert_eq!(first, Order::Start { slot: 0 }, "the first old worker's slot");
    assert_eq!(run(&mut r, &mut pool, first, 3), Order::Done);
    assert!(pool.members.iter().all(|m| m.id > 3), "only new workers remain: {:?}", pool.members);
    let slots: Vec<usize> = pool.members.iter().map(|m| m.slot).collect();
    assert_eq!(slots, vec![0, 1, 2]);
    r.rescued = 6;
    let done = r.finish(None);
    assert!(done.ok && done.message.contains("3 workers replaced"), "{}", done.message);
    assert!(done.message.ends_with("; rescued 6 requests"), "the rescue's count: {}", done.message);
    assert!(done.abandon.is_empty());
    let replies = replies(&mut rx);
    let progress = replies.iter().filter(|r| matches!(r, Reply::Progress { .. })).count();
    assert_eq!(progress, 4, "started + one line per replaced worker: {replies:?}");
    assert!(matches!(replies.last(), Some(Reply::Done { .. })));
}

#[test]
fn the_new_worker_is_started_before_the_old_one_is_retired() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = reload(2);
    let Order::Start { slot } = r.begin_rolling(&pool.members) else { panic!() };
    let new = pool.start(slot);
    r.started(new);
    // Not ready yet: nothing happens to the old worker, whatever else does.
    assert_eq!(r.on_ready(99, &pool.members), Order::Wait, "another worker's readiness is not ours");
    pool.set(new, WorkerState::Ready);
    assert_eq!(r.on_ready(new, &pool.members), Order::Retire(1));
}

#[test]
fn a_new_worker_that_exits_fails_the_reload_and_touches_no_old_worker() {
    let mut pool = Pool::ready(2);
    let (mut r, mut rx) = reload(2);
    let Order::Start { slot } = r.begin_rolling(&pool.members) else { panic!() };
    let new = pool.start(slot);
    r.started(new);
    pool.remove(new);
    let verdict = r.on_exit(new, &gone("[w3 g2 100]", Exit::Code(1)), &pool.members);
    assert_eq!(verdict, ExitVerdict::Handled(Order::Fail));
    assert!(r.failure().unwrap().contains("exited with code 1 before it was ready"));
    let done = r.finish(None);
    assert!(!done.ok);
    assert!(done.message.contains("failed after replacing 0 workers"), "{}", done.message);
    assert_eq!(pool.serving(), 2, "both old workers still serve");
    assert!(matches!(replies(&mut rx).last(), Some(Reply::Error { .. })));
}

#[test]
fn a_new_worker_that_times_out_is_abandoned() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = reload(2);
    let first = r.begin_rolling(&pool.members);
    // The first replacement succeeds...
    let Order::Start { slot } = first else { panic!() };
    let a = pool.start(slot);
    r.started(a);
    pool.set(a, WorkerState::Ready);
    let Order::Retire(old) = r.on_ready(a, &pool.members) else { panic!() };
    pool.remove(old);
    let Order::Start { slot } = r.on_exit(old, &gone("w1", Exit::Code(0)), &pool.members).order() else { panic!() };
    // ... the second never gets ready.
    let b = pool.start(slot);
    r.started(b);
    assert_eq!(r.on_not_ready(a, "not mine".into()), Order::Wait, "a ready worker's deadline is moot");
    assert_eq!(r.on_not_ready(b, "w4 was not ready within 1s".into()), Order::Fail);
    let done = r.finish(None);
    assert_eq!(done.abandon, vec![b], "the starting worker is killed; its slot keeps its old worker");
    assert!(done.message.contains("failed after replacing 1 worker:"), "{}", done.message);
    assert!(done.message.contains("not ready within"));
}

#[test]
fn an_old_worker_that_dies_while_it_is_being_replaced_is_not_restarted() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = reload(2);
    let Order::Start { slot } = r.begin_rolling(&pool.members) else { panic!() };
    let new = pool.start(slot);
    r.started(new);
    pool.remove(1);
    assert_eq!(r.on_exit(1, &gone("w1", Exit::Code(137)), &pool.members), ExitVerdict::Handled(Order::Wait));
    pool.set(new, WorkerState::Ready);
    // Nothing to retire: the roll goes on with the next old worker.
    assert_eq!(r.on_ready(new, &pool.members), Order::Start { slot: 1 });
}

#[test]
fn an_old_worker_that_dies_while_waiting_its_turn_is_a_crash_and_the_roll_goes_on() {
    let mut pool = Pool::ready(3);
    let (mut r, _rx) = reload(3);
    let order = r.begin_rolling(&pool.members);
    pool.remove(3);
    assert_eq!(r.on_exit(3, &gone("w3", Exit::Code(1)), &pool.members), ExitVerdict::Crash);
    // Its crash replacement (old generation) joins the end of the queue.
    let restarted = pool.start(2);
    pool.set(restarted, WorkerState::Ready);
    r.enqueue(restarted);
    assert_eq!(run(&mut r, &mut pool, order, 2), Order::Done);
    assert!(!pool.members.iter().any(|m| m.id == restarted), "the crash replacement was replaced too");
    assert_eq!(pool.members.len(), 3);
}

#[test]
fn the_pool_grows_after_the_replacements() {
    let mut pool = Pool::ready(2);
    let (mut r, mut rx) = reload(4);
    let order = r.begin_rolling(&pool.members);
    assert_eq!(run(&mut r, &mut pool, order, 2), Order::Done);
    let mut slots: Vec<usize> = pool.members.iter().map(|m| m.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![0, 1, 2, 3]);
    assert!(matches!(&replies(&mut rx)[0], Reply::Progress { message } if message.contains("4 workers from now on")));
}

#[test]
fn the_pool_shrinks_by_retiring_the_surplus_last() {
    let mut pool = Pool::ready(4);
    let (mut r, _rx) = reload(2);
    let order = r.begin_rolling(&pool.members);
    assert_eq!(run(&mut r, &mut pool, order, 2), Order::Done);
    assert_eq!(pool.members.len(), 2);
    assert!(pool.members.iter().all(|m| m.id > 4 && m.slot < 2), "{:?}", pool.members);
    assert!(r.finish(None).message.contains("4 workers replaced"), "retirements count as replaced");
}

#[test]
fn an_old_worker_that_had_to_be_killed_is_not_a_clean_success() {
    let mut pool = Pool::ready(1);
    let (mut r, _rx) = reload(1);
    let Order::Start { slot } = r.begin_rolling(&pool.members) else { panic!() };
    let new = pool.start(slot);
    r.started(new);
    pool.set(new, WorkerState::Ready);
    assert_eq!(r.on_ready(new, &pool.members), Order::Retire(1));
    pool.remove(1);
    let killed = Gone { label: "w1", how: Exit::Code(137), killed: true, hint: None };
    assert_eq!(r.on_exit(1, &killed, &pool.members), ExitVerdict::Handled(Order::Done));
    let done = r.finish(None);
    assert!(done.ok, "the new generation serves");
    assert_eq!(done.killed, 1);
    assert!(done.message.contains("1 old worker had to be killed"), "{}", done.message);
}

#[test]
fn a_new_worker_that_exits_says_why_it_never_got_ready() {
    let mut pool = Pool::ready(1);
    let (mut r, _rx) = reload(1);
    let Order::Start { slot } = r.begin_rolling(&pool.members) else { panic!() };
    let new = pool.start(slot);
    r.started(new);
    pool.remove(new);
    let hint = "it said nothing on its IPC channel";
    let gone = Gone { label: "w2", how: Exit::Code(0), killed: false, hint: Some(hint) };
    assert_eq!(r.on_exit(new, &gone, &pool.members), ExitVerdict::Handled(Order::Fail));
    assert!(r
        .failure()
        .unwrap()
        .ends_with("exited with code 0 before it was ready: it said nothing on its IPC channel"));
}

#[test]
fn a_slot_emptied_by_a_crash_is_filled() {
    let mut pool = Pool::ready(3);
    pool.remove(2); // slot 1 waits out a crash backoff
    let (mut r, _rx) = reload(3);
    let order = r.begin_rolling(&pool.members);
    assert_eq!(run(&mut r, &mut pool, order, 2), Order::Done);
    assert_eq!(pool.members.len(), 3);
}

#[test]
fn a_failed_start_fails_the_reload() {
    let pool = Pool::ready(1);
    let (mut r, _rx) = reload(1);
    assert_eq!(r.begin_rolling(&pool.members), Order::Start { slot: 0 });
    assert_eq!(r.start_failed("command not found: app".into()), Order::Fail);
    let done = r.finish(None);
    assert!(!done.ok && done.message.contains("cannot start a new worker: command not found"));
    assert!(done.abandon.is_empty(), "nothing was started");
}

#[test]
fn a_stop_cancels_the_running_reload() {
    let mut pool = Pool::ready(2);
    let (mut r, mut rx) = reload(2);
    let Order::Start { slot } = r.begin_rolling(&pool.members) else { panic!() };
    let new = pool.start(slot);
    r.started(new);
    let done = r.finish(Some("cancelled: the primary is stopping".into()));
    assert_eq!(done.abandon, vec![new]);
    assert!(matches!(replies(&mut rx).last(), Some(Reply::Error { error }) if error.contains("cancelled")));
}
