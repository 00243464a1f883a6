//! `--surge`: several replacements start at once, each retiring the old
//! worker of its own slot, within the bounds for every pool size.

use super::*;

#[test]
fn surge_one_replaces_one_worker_at_a_time() {
    let mut pool = Pool::ready(4);
    let (mut r, mut rx) = surged(4, Some(Surge::Count(1)));
    let order = r.begin_rolling(&pool.members);
    assert_eq!(obey(&mut r, &mut pool, order), Order::Wait);
    assert_eq!(pool.starting().len(), 1, "one new worker at a time");
    let order = r.next(&pool.members);
    assert_eq!(run(&mut r, &mut pool, order, 4), Order::Done);
    assert_eq!((pool.peak, pool.low), (5, 4), "never more than N+1 workers, never fewer than N ready");
    all_new(&pool, 4, 5);
    assert!(matches!(&replies(&mut rx)[0], Reply::Progress { message } if message.contains("one at a time (surge 1)")));
}

#[test]
fn surge_two_starts_two_new_workers_at_once() {
    let mut pool = Pool::ready(4);
    let (mut r, mut rx) = surged(4, Some(Surge::Count(2)));
    let order = r.begin_rolling(&pool.members);
    assert_eq!(obey(&mut r, &mut pool, order), Order::Wait);
    assert_eq!(pool.starting(), vec![5, 6], "two at once, for the first two old workers");
    // The second gets ready first: it retires the old worker of its own slot.
    assert_eq!(ready(&mut r, &mut pool, 6), Order::Wait, "its old worker drains: still two in flight");
    assert_eq!(pool.state(2), WorkerState::Stopping);
    assert_eq!(pool.state(1), WorkerState::Ready, "w1 waits for its own replacement");
    assert_eq!(exit(&mut r, &mut pool, 2), Order::Wait);
    assert_eq!(pool.starting(), vec![5, 7], "an exit makes room for the next one");
    let order = r.next(&pool.members);
    assert_eq!(run(&mut r, &mut pool, order, 4), Order::Done);
    assert_eq!((pool.peak, pool.low), (6, 4), "never more than N+2 workers, never fewer than N ready");
    all_new(&pool, 4, 5);
    let done = r.finish(None);
    assert!(done.ok && done.message.contains("4 workers replaced"), "{}", done.message);
    assert!(replies(&mut rx)
        .iter()
        .any(|m| matches!(m, Reply::Progress { message } if message.contains("up to 2 at a time"))));
}

#[test]
fn surge_n_starts_every_replacement_at_once() {
    let mut pool = Pool::ready(4);
    let (mut r, mut rx) = surged(4, Some(Surge::Percent(100)));
    let order = r.begin_rolling(&pool.members);
    assert_eq!(obey(&mut r, &mut pool, order), Order::Wait);
    assert_eq!(pool.starting(), vec![5, 6, 7, 8]);
    assert_eq!(pool.members.len(), 8, "N+N while they start");
    // Ready in any order, each retires the old worker of its slot.
    for (new, old) in [(8, 4), (5, 1), (7, 3), (6, 2)] {
        assert_eq!(ready(&mut r, &mut pool, new), Order::Wait);
        assert_eq!(pool.state(old), WorkerState::Stopping, "w{new} retires w{old}");
        assert_eq!(pool.serving(), 4, "N ready all along");
    }
    for old in [2, 1, 4] {
        assert_eq!(exit(&mut r, &mut pool, old), Order::Wait, "done only when the last old worker is gone");
    }
    assert_eq!(exit(&mut r, &mut pool, 3), Order::Done);
    all_new(&pool, 4, 5);
    let first = replies(&mut rx);
    assert!(
        matches!(&first[0], Reply::Progress { message } if message.contains("up to 4 at a time (surge 100% of 4)")),
        "{first:?}"
    );
}

#[test]
fn a_surge_beyond_the_pool_starts_each_replacement_once() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = surged(2, Some(Surge::Count(9)));
    let order = r.begin_rolling(&pool.members);
    assert_eq!(run(&mut r, &mut pool, order, 2), Order::Done);
    assert_eq!(pool.peak, 4);
    all_new(&pool, 2, 3);
}

#[test]
fn the_settings_surge_applies_unless_the_request_names_one() {
    let mut s = Settings::for_tests();
    s.workers = 4;
    s.surge = Surge::Count(3);
    let mut p = Pool::ready(4);
    let mut r = Reload::new(2, Rc::new(s.clone()), vec![], None);
    let order = r.begin_rolling(&p.members);
    obey(&mut r, &mut p, order);
    assert_eq!(p.starting().len(), 3, "--surge 3");
    let mut p = Pool::ready(4);
    let mut r = Reload::new(2, Rc::new(s), vec![], Some(Surge::Count(1)));
    let order = r.begin_rolling(&p.members);
    obey(&mut r, &mut p, order);
    assert_eq!(p.starting().len(), 1, "the request's surge wins");
}

#[test]
fn a_failure_with_several_starting_stops_them_and_keeps_the_replaced() {
    let mut pool = Pool::ready(4);
    let (mut r, mut rx) = surged(4, Some(Surge::Count(4)));
    let order = r.begin_rolling(&pool.members);
    obey(&mut r, &mut pool, order);
    assert_eq!(pool.starting(), vec![5, 6, 7, 8]);
    // w5 replaces w1 completely; w6 is ready and w2 drains.
    ready(&mut r, &mut pool, 5);
    exit(&mut r, &mut pool, 1);
    ready(&mut r, &mut pool, 6);
    // w7 fails.
    pool.remove(7);
    let verdict = r.on_exit(7, &gone("[w7 g2 100]", Exit::Code(3)), &pool.members);
    assert_eq!(verdict, ExitVerdict::Handled(Order::Fail));
    let done = r.finish(None);
    assert!(!done.ok);
    assert_eq!(done.abandon, vec![8], "only the new worker still starting is stopped");
    assert!(done.message.contains("failed after replacing 2 workers"), "w2 drains, w6 serves: {}", done.message);
    assert!(done.message.contains("exited with code 3 before it was ready"), "{}", done.message);
    assert!(pool.has(3) && pool.has(4) && pool.state(3) == WorkerState::Ready, "the old ones not reached serve");
    assert!(pool.has(5) && pool.state(6) == WorkerState::Ready, "the replaced stay replaced");
    assert!(matches!(replies(&mut rx).last(), Some(Reply::Error { .. })));
}

#[test]
fn a_timeout_with_several_starting_stops_them_all() {
    let mut pool = Pool::ready(3);
    let (mut r, _rx) = surged(3, Some(Surge::Percent(100)));
    let order = r.begin_rolling(&pool.members);
    obey(&mut r, &mut pool, order);
    assert_eq!(r.on_not_ready(2, "not mine".into()), Order::Wait, "an old worker's deadline is not the reload's");
    assert_eq!(r.on_not_ready(5, "[w5 g2 1] was not ready within 1s".into()), Order::Fail);
    let done = r.finish(None);
    let mut abandon = done.abandon.clone();
    abandon.sort();
    assert_eq!(abandon, vec![4, 5, 6], "every new worker not ready is stopped (the late one was killed already)");
    assert!(done.message.contains("failed after replacing 0 workers"), "{}", done.message);
    assert!(done.message.contains("3 new workers still starting were stopped"), "{}", done.message);
    assert_eq!(pool.serving(), 3, "the old generation is whole");
}

#[test]
fn an_old_worker_that_crashes_mid_reload_with_surge() {
    let mut pool = Pool::ready(4);
    let (mut r, _rx) = surged(4, Some(Surge::Count(2)));
    let order = r.begin_rolling(&pool.members);
    obey(&mut r, &mut pool, order);
    assert_eq!(pool.starting(), vec![5, 6]);
    // w1, being replaced by w5, crashes: w5 takes its slot when ready.
    pool.remove(1);
    assert_eq!(r.on_exit(1, &gone("w1", Exit::Code(137)), &pool.members).order(), Order::Wait);
    // w4, waiting its turn, crashes: a crash; its restart joins the queue.
    pool.remove(4);
    assert_eq!(r.on_exit(4, &gone("w4", Exit::Code(137)), &pool.members), ExitVerdict::Crash);
    let restarted = pool.start(3);
    pool.set(restarted, WorkerState::Ready);
    r.enqueue(restarted);
    assert_eq!(ready(&mut r, &mut pool, 5), Order::Wait, "nothing to retire for w5; the next one starts");
    assert_eq!(pool.starting().len(), 2);
    let order = r.next(&pool.members);
    assert_eq!(run(&mut r, &mut pool, order, 2), Order::Done);
    assert!(!pool.has(restarted), "the crash replacement was replaced too");
    assert_eq!(pool.members.len(), 4);
    assert!(pool.peak <= 6, "N+S: {}", pool.peak);
}

#[test]
fn the_pool_grows_with_surge() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = surged(4, Some(Surge::Percent(50)));
    let order = r.begin_rolling(&pool.members);
    obey(&mut r, &mut pool, order);
    assert_eq!(pool.starting().len(), 2, "50% of the new 4");
    let order = r.next(&pool.members);
    assert_eq!(run(&mut r, &mut pool, order, 2), Order::Done);
    assert!(pool.peak <= 4 + 2, "never more than the new N + surge: {}", pool.peak);
    all_new(&pool, 4, 3);
}

#[test]
fn the_pool_shrinks_with_surge() {
    let mut pool = Pool::ready(6);
    let (mut r, _rx) = surged(2, Some(Surge::Count(2)));
    let order = r.begin_rolling(&pool.members);
    assert_eq!(run(&mut r, &mut pool, order, 2), Order::Done);
    assert!(pool.peak <= 6 + 2, "never more than the old N + surge: {}", pool.peak);
    all_new(&pool, 2, 7);
    assert!(r.finish(None).message.contains("6 workers replaced"));
}

#[test]
fn the_bounds_hold_for_every_pool_and_surge() {
    for from in 1..=6 {
        for to in 1..=6 {
            for s in 1..=7 {
                let mut pool = Pool::ready(from);
                let (mut r, _rx) = surged(to as u32, Some(Surge::Count(s)));
                let order = r.begin_rolling(&pool.members);
                let case = format!("{from} -> {to} workers, surge {s}");
                assert_eq!(run(&mut r, &mut pool, order, from.min(to)), Order::Done, "{case}");
                assert!(pool.peak <= from.max(to) + s as usize, "{case}: peak {}", pool.peak);
                all_new(&pool, to, from as WorkerId + 1);
            }
        }
    }
}

#[test]
fn a_replacement_replaces_only_its_worker_in_its_slot() {
    let mut pool = Pool::ready(3);
    let (mut r, _rx) = reload(3);
    let first = r.begin_replacing(2, &pool.members);
    assert_eq!(first, Order::Start { slot: 1 }, "the replaced worker's slot");
    assert_eq!(run(&mut r, &mut pool, first, 3), Order::Done);
    let ids: Vec<WorkerId> = pool.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 3, 4], "w2 replaced by w4, the others untouched");
    assert_eq!(pool.members[2].slot, 1);
    assert!(r.finish(None).message.contains("1 worker replaced"));
}
