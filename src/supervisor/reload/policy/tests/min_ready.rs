//! The `--min-ready` window: a new worker stays ready for it before its
//! old worker is retired, and one that exits or stops being ready in it
//! fails the reload.

use super::*;

#[test]
fn a_new_worker_stays_ready_for_its_window_before_its_old_worker_is_retired() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = with_window(2, 2 * SECOND, None);
    let (new, order) = first_ready(&mut r, &mut pool);
    assert_eq!(order, Order::Watch { worker: new, window: 2 * SECOND }, "its window, not a retirement");
    assert_eq!(obey(&mut r, &mut pool, order), Order::Wait, "nothing else starts meanwhile (surge 1)");
    assert!(pool.members.iter().all(|m| m.state == WorkerState::Ready), "no old worker told to go: {:?}", pool.members);
    assert_eq!(pool.members.len(), 3);
    assert_eq!(r.on_proven(new, &pool.members), Order::Retire(1), "proven: its old worker goes");
    assert_eq!(r.on_proven(new, &pool.members), Order::Wait, "a window ends once");
}

#[test]
fn a_windowed_roll_replaces_every_worker_and_keeps_capacity() {
    for surge in [1, 2, 4] {
        let mut pool = Pool::ready(4);
        let (mut r, _rx) = with_window(4, SECOND, Some(Surge::Count(surge)));
        let order = r.begin_rolling(&pool.members);
        assert_eq!(run(&mut r, &mut pool, order, 4), Order::Done, "surge {surge}");
        all_new(&pool, 4, 5);
        assert!(pool.peak <= 4 + surge as usize, "surge {surge}: peak {}", pool.peak);
        assert!(r.finish(None).ok);
    }
}

#[test]
fn a_new_worker_that_exits_in_its_window_fails_the_reload_and_no_old_worker_is_retired() {
    let mut pool = Pool::ready(3);
    let (mut r, mut rx) = with_window(3, 2 * SECOND, None);
    let (new, order) = first_ready(&mut r, &mut pool);
    assert_eq!(obey(&mut r, &mut pool, order), Order::Wait);
    pool.remove(new);
    let verdict = r.on_exit(new, &gone("[w4 g2 100]", Exit::Code(1)), &pool.members);
    assert_eq!(verdict, ExitVerdict::Handled(Order::Fail), "an exit in the window is the reload's, not a crash");
    let why = r.failure().unwrap().to_string();
    assert!(
        why.contains("new worker [w4 g2 100] exited with code 1") && why.contains("within --min-ready 2s"),
        "{why}"
    );
    let done = r.finish(None);
    assert!(!done.ok && done.message.contains("failed after replacing 0 workers"), "{}", done.message);
    assert!(done.abandon.is_empty(), "it is gone already");
    assert_eq!(pool.serving(), 3, "every old worker serves on: {:?}", pool.members);
    assert!(matches!(replies(&mut rx).last(), Some(Reply::Error { .. })));
}

#[test]
fn a_later_new_worker_that_exits_in_its_window_stops_the_roll_there() {
    let mut pool = Pool::ready(3);
    let (mut r, _rx) = with_window(3, SECOND, None);
    let (a, order) = first_ready(&mut r, &mut pool);
    obey(&mut r, &mut pool, order);
    let order = r.on_proven(a, &pool.members);
    assert_eq!(obey(&mut r, &mut pool, order), Order::Wait);
    assert_eq!(exit(&mut r, &mut pool, 1), Order::Wait, "w1 drained; the next replacement starts");
    let b = pool.starting()[0];
    assert_eq!(ready(&mut r, &mut pool, b), Order::Wait, "in its window");
    pool.remove(b);
    assert_eq!(
        r.on_exit(b, &gone("w5", Exit::Signal(nix::sys::signal::Signal::SIGKILL)), &pool.members),
        ExitVerdict::Handled(Order::Fail)
    );
    let done = r.finish(None);
    assert!(done.message.contains("failed after replacing 1 worker:"), "{}", done.message);
    assert!(pool.has(2) && pool.has(3) && pool.state(2) == WorkerState::Ready, "{:?}", pool.members);
}

#[test]
fn a_new_worker_no_longer_ready_when_its_window_ends_fails_the_reload() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = with_window(2, SECOND, None);
    let (new, order) = first_ready(&mut r, &mut pool);
    obey(&mut r, &mut pool, order);
    pool.set(new, WorkerState::Stopping); // killed, not reaped yet
    assert_eq!(r.on_proven(new, &pool.members), Order::Fail);
    assert!(r.failure().unwrap().contains("stopped being ready"), "{:?}", r.failure());
    assert_eq!(pool.state(1), WorkerState::Ready);
}

#[test]
fn a_failed_reload_abandons_new_workers_in_their_window_whose_old_worker_serves() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = with_window(2, SECOND, Some(Surge::Count(2)));
    let first = r.begin_rolling(&pool.members);
    assert_eq!(obey(&mut r, &mut pool, first), Order::Wait);
    let [a, b] = pool.starting()[..] else { panic!("two start at once: {:?}", pool.members) };
    assert!(matches!(ready(&mut r, &mut pool, a), Order::Wait));
    assert_eq!(r.on_not_ready(b, "w4 was not ready within 1s".into()), Order::Fail);
    let done = r.finish(None);
    let mut abandoned = done.abandon.clone();
    abandoned.sort();
    assert_eq!(abandoned, vec![a, b], "the slots stay as they were");
    assert!(done.message.contains("failed after replacing 0 workers"), "{}", done.message);
}

#[test]
fn an_old_worker_that_dies_during_its_replacements_window_is_not_retired_twice() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = with_window(2, SECOND, None);
    let (new, order) = first_ready(&mut r, &mut pool);
    obey(&mut r, &mut pool, order);
    pool.remove(1);
    assert_eq!(r.on_exit(1, &gone("w1", Exit::Code(137)), &pool.members), ExitVerdict::Handled(Order::Wait));
    assert_eq!(r.on_proven(new, &pool.members), Order::Start { slot: 1 }, "nothing to retire; the roll goes on");
    let done = r.finish(None);
    assert!(done.abandon.is_empty(), "the new worker is its slot's only one: {:?}", done.abandon);
}
