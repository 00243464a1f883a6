//! The policy played without a process: a [`Pool`] the tests change by
//! hand, and [`run`], which plays the supervisor.
//!
//! The tests are grouped by the rule they test: [`roll`] (one worker at a
//! time: order, failures, crashes, resizing, stop), [`surge`] (several
//! replacements at once), [`min_ready`] (the `--min-ready` window) and
//! [`canary`] (the first replacement on trial).

use super::*;
use std::time::Duration;
use tokio::sync::mpsc;

mod canary;
mod min_ready;
mod roll;
mod surge;

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
        match carry_out(r, pool, order) {
            Some(next) => order = next,
            None => return order,
        }
    }
    panic!("the policy gave orders without end");
}

/// Carries out an order the pool answers by itself (a start, a retirement,
/// a watch) and returns the policy's next; `None` for the others (wait,
/// done, fail), which the caller handles.
fn carry_out(r: &mut Reload, pool: &mut Pool, order: Order) -> Option<Order> {
    Some(match order {
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
        Order::Wait | Order::Done | Order::Fail => return None,
    })
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
        if let Some(next) = carry_out(r, pool, order) {
            order = next;
            continue;
        }
        order = match order {
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
            Order::Start { .. } | Order::Retire(_) | Order::Watch { .. } => unreachable!("carried out above"),
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

/// Every worker of the pool is a new one, one per slot `0..n`.
fn all_new(pool: &Pool, n: usize, first_new: WorkerId) {
    let mut slots: Vec<usize> = pool.members.iter().map(|m| m.slot).collect();
    slots.sort();
    assert_eq!(slots, (0..n).collect::<Vec<_>>(), "{:?}", pool.members);
    assert!(pool.members.iter().all(|m| m.id >= first_new && m.state == WorkerState::Ready), "{:?}", pool.members);
}

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
