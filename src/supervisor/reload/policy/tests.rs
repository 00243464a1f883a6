//! The policy played without a process: a [`Pool`] the tests change by
//! hand, and [`run`], which plays the supervisor.

use super::*;
use std::time::Duration;
use tokio::sync::mpsc;

/// A pool the tests change by hand, as the supervisor would.
struct Pool {
    members: Vec<Member>,
    next_id: WorkerId,
    /// The most workers (in any state) the pool ever held.
    peak: usize,
    /// The fewest ready workers seen by [`run`] (`usize::MAX` before it ran).
    low: usize,
    /// Workers whose window was asked for ([`Order::Watch`]) and has not
    /// passed yet.
    watched: Vec<WorkerId>,
}

impl Pool {
    /// `n` ready workers w1..wn in slots 0..n.
    fn ready(n: usize) -> Pool {
        let members = (0..n).map(|i| Member { id: i as WorkerId + 1, slot: i, state: WorkerState::Ready }).collect();
        Pool { members, next_id: n as WorkerId + 1, peak: n, low: usize::MAX, watched: Vec::new() }
    }
    fn start(&mut self, slot: usize) -> WorkerId {
        let id = self.next_id;
        self.next_id += 1;
        self.members.push(Member { id, slot, state: WorkerState::Starting });
        self.peak = self.peak.max(self.members.len());
        id
    }
    fn set(&mut self, id: WorkerId, state: WorkerState) {
        self.members.iter_mut().find(|m| m.id == id).unwrap().state = state;
    }
    fn state(&self, id: WorkerId) -> WorkerState {
        self.members.iter().find(|m| m.id == id).unwrap().state
    }
    fn remove(&mut self, id: WorkerId) {
        self.members.retain(|m| m.id != id);
    }
    fn serving(&self) -> usize {
        self.members.iter().filter(|m| m.state == WorkerState::Ready).count()
    }
    fn starting(&self) -> Vec<WorkerId> {
        self.members.iter().filter(|m| m.state == WorkerState::Starting).map(|m| m.id).collect()
    }
    fn has(&self, id: WorkerId) -> bool {
        self.members.iter().any(|m| m.id == id)
    }
}

fn gone(label: &str, how: Exit) -> Gone<'_> {
    Gone { label, how, killed: false, hint: None }
}

/// Settings without a `--min-ready` window: the tests of windows set one.
fn settings(workers: u32) -> Rc<Settings> {
    windowed(workers, Duration::ZERO)
}

fn windowed(workers: u32, min_ready: Duration) -> Rc<Settings> {
    let mut s = Settings::for_tests();
    s.workers = workers;
    s.min_ready = min_ready;
    Rc::new(s)
}

fn reload(workers: u32) -> (Reload, mpsc::UnboundedReceiver<Reply>) {
    surged(workers, None)
}

/// A reload to `workers` workers with this request's surge.
fn surged(workers: u32, surge: Option<Surge>) -> (Reload, mpsc::UnboundedReceiver<Reply>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Reload::new(2, settings(workers), vec![tx], surge), rx)
}

fn replies(rx: &mut mpsc::UnboundedReceiver<Reply>) -> Vec<Reply> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// Carries out orders as the supervisor does (asking for the next one
/// after each start and retirement) until the policy waits, is done or
/// fails. New workers stay starting, retired ones stay stopping: the test
/// says when they get ready or exit.
fn obey(r: &mut Reload, pool: &mut Pool, mut order: Order) -> Order {
    for _ in 0..10_000 {
        order = match order {
            Order::Start { slot } => {
                let id = pool.start(slot);
                r.started(id);
                r.next(&pool.members)
            }
            Order::Retire(old) => {
                pool.set(old, WorkerState::Stopping);
                r.next(&pool.members)
            }
            Order::Watch { worker, .. } => {
                pool.watched.push(worker);
                r.next(&pool.members)
            }
            Order::Wait | Order::Done | Order::Fail => return order,
        };
    }
    panic!("the policy gave orders without end");
}

/// Worker `id` gets ready; the orders that follow are carried out.
fn ready(r: &mut Reload, pool: &mut Pool, id: WorkerId) -> Order {
    pool.set(id, WorkerState::Ready);
    let order = r.on_ready(id, &pool.members);
    obey(r, pool, order)
}

/// Worker `id` exits (code 0), as the reload's; the orders that follow are
/// carried out.
fn exit(r: &mut Reload, pool: &mut Pool, id: WorkerId) -> Order {
    pool.remove(id);
    let order = r.on_exit(id, &gone(&format!("w{id}"), Exit::Code(0)), &pool.members).order();
    obey(r, pool, order)
}

/// Plays the supervisor to the end: carries out every order, and whenever
/// the policy waits, lets the first pending thing in the pool happen (a new
/// worker gets ready, a retired one exits). Records in the pool the most
/// workers it held and the fewest ready ones, and checks at every step that
/// at least `min` were ready.
fn run(r: &mut Reload, pool: &mut Pool, mut order: Order, min: usize) -> Order {
    for _ in 0..10_000 {
        pool.low = pool.low.min(pool.serving());
        assert!(pool.serving() >= min, "capacity dropped to {} (< {min}): {:?}", pool.serving(), pool.members);
        order = match order {
            Order::Start { slot } => {
                let id = pool.start(slot);
                r.started(id);
                r.next(&pool.members)
            }
            Order::Retire(old) => {
                pool.set(old, WorkerState::Stopping);
                r.next(&pool.members)
            }
            Order::Watch { worker, .. } => {
                pool.watched.push(worker);
                r.next(&pool.members)
            }
            Order::Wait => match pool.members.iter().find(|m| m.state != WorkerState::Ready).copied() {
                // Nothing else to happen: a window passes.
                None if !pool.watched.is_empty() => {
                    let id = pool.watched.remove(0);
                    r.on_proven(id, &pool.members)
                }
                None => return Order::Wait,
                Some(m) if m.state == WorkerState::Starting => {
                    pool.set(m.id, WorkerState::Ready);
                    r.on_ready(m.id, &pool.members)
                }
                Some(m) => {
                    pool.remove(m.id);
                    match r.on_exit(m.id, &gone(&format!("w{}", m.id), Exit::Code(0)), &pool.members) {
                        ExitVerdict::Handled(o) => o,
                        ExitVerdict::Crash => panic!("a retired worker's exit is the reload's"),
                    }
                }
            },
            Order::Done | Order::Fail => return order,
        };
    }
    panic!("the reload did not end in 10000 steps");
}

impl ExitVerdict {
    fn order(self) -> Order {
        match self {
            ExitVerdict::Handled(o) => o,
            ExitVerdict::Crash => panic!("expected the reload to handle it"),
        }
    }
}

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

// ------------------------------------------------------------- surge ----

/// Every worker of the pool is a new one, one per slot `0..n`.
fn all_new(pool: &Pool, n: usize, first_new: WorkerId) {
    let mut slots: Vec<usize> = pool.members.iter().map(|m| m.slot).collect();
    slots.sort();
    assert_eq!(slots, (0..n).collect::<Vec<_>>(), "{:?}", pool.members);
    assert!(pool.members.iter().all(|m| m.id >= first_new && m.state == WorkerState::Ready), "{:?}", pool.members);
}

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

// ------------------------------------------------------ min-ready window ----

const SECOND: Duration = Duration::from_secs(1);

fn with_window(workers: u32, min_ready: Duration, surge: Option<Surge>) -> (Reload, mpsc::UnboundedReceiver<Reply>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Reload::new(2, windowed(workers, min_ready), vec![tx], surge), rx)
}

/// Starts the first replacement and makes it ready: (new id, the order).
fn first_ready(r: &mut Reload, pool: &mut Pool) -> (WorkerId, Order) {
    let first = r.begin_rolling(&pool.members);
    assert_eq!(obey(r, pool, first), Order::Wait);
    let new = pool.starting()[0];
    pool.set(new, WorkerState::Ready);
    (new, r.on_ready(new, &pool.members))
}

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

// ----------------------------------------------------------------- canary ----

fn canary(workers: u32, trial: Duration, surge: Option<Surge>) -> (Reload, mpsc::UnboundedReceiver<Reply>) {
    let (r, rx) = with_window(workers, Duration::ZERO, surge);
    (r.with_canary(Some(trial)), rx)
}

fn event_names(r: &mut Reload) -> Vec<String> {
    r.take_events().into_iter().map(|e| e.event).collect()
}

#[test]
fn a_canary_serves_beside_the_whole_old_generation_then_the_roll_goes_on() {
    let mut pool = Pool::ready(4);
    let (mut r, mut rx) = canary(4, 3 * SECOND, Some(Surge::Percent(100)));
    let first = r.begin_rolling(&pool.members);
    assert_eq!(first, Order::Start { slot: 0 });
    assert_eq!(obey(&mut r, &mut pool, first), Order::Wait, "one canary, whatever the surge");
    let c = pool.starting()[0];
    assert_eq!(pool.members.len(), 5, "capacity + 1");
    assert_eq!(event_names(&mut r), ["canary-started"]);
    pool.set(c, WorkerState::Ready);
    assert_eq!(r.on_ready(c, &pool.members), Order::Watch { worker: c, window: 3 * SECOND });
    assert_eq!(r.next(&pool.members), Order::Wait, "nothing more during the trial");
    assert_eq!(event_names(&mut r), ["canary-ready"]);
    assert!(pool.members.iter().all(|m| m.state == WorkerState::Ready), "no old worker retired");
    // The verdict: it passed, and the rest go at the surge asked for.
    let order = r.on_proven(c, &pool.members);
    assert_eq!(order, Order::Retire(1));
    assert_eq!(event_names(&mut r), ["canary-passed"]);
    assert_eq!(obey(&mut r, &mut pool, order), Order::Wait);
    assert_eq!(pool.starting().len(), 3, "the other three start at once: {:?}", pool.members);
    assert_eq!(run(&mut r, &mut pool, Order::Wait, 4), Order::Done);
    all_new(&pool, 4, 5);
    let done = r.finish(None);
    assert!(done.ok && done.message.contains("canary w5 passed 3s; 4 workers replaced"), "{}", done.message);
    let lines: Vec<String> = replies(&mut rx)
        .into_iter()
        .filter_map(|r| match r {
            Reply::Progress { message } => Some(message),
            _ => None,
        })
        .collect();
    assert!(lines.iter().any(|l| l.contains("canary w5 is ready") && l.contains("beside 4 old workers")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("canary w5 passed")), "{lines:?}");
}

#[test]
fn a_canary_that_exits_on_trial_fails_the_reload_and_leaves_the_old_generation_as_it_was() {
    let mut pool = Pool::ready(3);
    let (mut r, mut rx) = canary(3, 3 * SECOND, None);
    let first = r.begin_rolling(&pool.members);
    obey(&mut r, &mut pool, first);
    let c = pool.starting()[0];
    assert!(matches!(ready(&mut r, &mut pool, c), Order::Wait));
    pool.remove(c);
    assert_eq!(r.on_exit(c, &gone("[w4 g2 100]", Exit::Code(1)), &pool.members), ExitVerdict::Handled(Order::Fail));
    assert_eq!(event_names(&mut r), ["canary-started", "canary-ready", "canary-failed"]);
    let done = r.finish(None);
    assert!(!done.ok);
    assert!(done.message.contains("canary [w4 g2 100] exited with code 1"), "{}", done.message);
    assert!(done.message.contains("within --canary 3s"), "{}", done.message);
    assert!(r.take_events().is_empty(), "one verdict");
    assert_eq!(
        pool.members.iter().map(|m| (m.id, m.state)).collect::<Vec<_>>(),
        Pool::ready(3).members.iter().map(|m| (m.id, m.state)).collect::<Vec<_>>()
    );
    let progress: Vec<Reply> = replies(&mut rx);
    assert!(progress.iter().any(|p| matches!(p, Reply::Progress { message } if message.starts_with("canary failed"))));
}

#[test]
fn a_canary_that_never_gets_ready_fails_as_the_canary() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = canary(2, SECOND, None);
    let first = r.begin_rolling(&pool.members);
    obey(&mut r, &mut pool, first);
    let c = pool.starting()[0];
    assert_eq!(r.on_not_ready(c, format!("w{c} was not ready within 1s")), Order::Fail);
    assert_eq!(event_names(&mut r), ["canary-started", "canary-failed"]);
    let done = r.finish(None);
    assert_eq!(done.abandon, vec![c]);
}

#[test]
fn a_canary_is_on_trial_for_the_longer_of_its_time_and_min_ready() {
    let mut pool = Pool::ready(2);
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut r = Reload::new(2, windowed(2, 5 * SECOND), vec![tx], None).with_canary(Some(SECOND));
    let (c, order) = first_ready(&mut r, &mut pool);
    assert_eq!(order, Order::Watch { worker: c, window: 5 * SECOND });
}

#[test]
fn a_canary_reload_that_fails_in_its_build_has_no_canary_verdict_but_says_so() {
    let (mut r, _rx) = canary(2, SECOND, None);
    let done = r.finish(Some("build `make` exited with code 2".into()));
    assert!(!done.ok);
    let events = r.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "canary-failed");
    assert_eq!(events[0].worker, None, "no canary was started");
}
