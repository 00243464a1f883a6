//! The rolling reload, as a state machine that knows no processes.
//!
//! For each old worker in turn: start a new-generation worker in its slot,
//! wait until it is ready, then retire the old one and wait for it to exit.
//! If the new worker dies or misses `--ready-timeout`, the reload stops right
//! there: the new worker is abandoned and the old ones still running keep
//! serving. A reload asked for while one runs is queued; further requests
//! join the queued one ([`Queue`]).
//!
//! A new worker count (from the config file, re-read for every reload)
//! grows or shrinks the pool within the same roll: new workers are added
//! after the replacements, surplus old ones are retired without one.
//!
//! The machine decides, the supervisor acts: every method takes a view of
//! the pool ([`Member`]s) and answers with an [`Order`] (start a worker in
//! a slot, retire a worker, wait, done). That is why the policy can be
//! tested without a single process (see the tests below).

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use crate::options::Settings;
use crate::types::wire::{Reply, ReplyTx};
use crate::types::{plural, Exit, WorkerId, WorkerState};

/// What the reload needs to know of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub id: WorkerId,
    pub slot: usize,
    pub state: WorkerState,
}

/// What the supervisor must do next for the reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Start a new-generation worker in `slot`, then call [`Reload::started`].
    Start { slot: usize },
    /// Tell this worker to drain and exit.
    Retire(WorkerId),
    /// Nothing until a worker gets ready or exits.
    Wait,
    /// Every worker is replaced: finish the reload.
    Done,
    /// The reload failed (the reason is in [`Reload::failure`]).
    Fail,
}

/// A worker that exited, as the reload sees it.
#[derive(Debug, Clone, Copy)]
pub struct Gone<'a> {
    /// How it is named in messages.
    pub label: &'a str,
    pub how: Exit,
    /// Whether it had to be killed (it did not drain in time).
    pub killed: bool,
    /// Why it never got ready, if it was starting.
    pub hint: Option<&'a str>,
}

/// What an exit means to the reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitVerdict {
    /// Not the reload's business: a crash, to be restarted as usual.
    Crash,
    /// The reload accounts for it; do this next.
    Handled(Order),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A worker is to be started in a slot, replacing `old` (or adding
    /// capacity); [`Reload::started`] names it.
    Spawning {
        old: Option<WorkerId>,
    },
    /// `new` is starting, to replace `old` (or to add capacity).
    Starting {
        new: WorkerId,
        old: Option<WorkerId>,
        since: Instant,
    },
    /// `old` has been told to drain; `new` (if any) serves in its place.
    Draining {
        new: Option<WorkerId>,
        old: WorkerId,
        since: Instant,
    },
    Idle,
}

/// A reload in progress (its `--build`, if any, runs before [`Reload::begin_rolling`]).
#[derive(Debug)]
pub struct Reload {
    pub generation: u64,
    /// The new generation's settings.
    pub settings: Rc<Settings>,
    started: Instant,
    /// Old workers still to be replaced (or retired), oldest first.
    queue: VecDeque<WorkerId>,
    step: Step,
    replaced: u32,
    /// Old workers that had to be killed instead of draining.
    killed: u32,
    subscribers: Vec<ReplyTx>,
    failure: Option<String>,
}

/// How a reload ended, for the supervisor to apply.
#[derive(Debug)]
pub struct Finished {
    pub generation: u64,
    pub ok: bool,
    /// `generation 3 serves (2 workers replaced)`, or why it failed.
    pub message: String,
    /// Old workers that had to be killed instead of draining: not a clean
    /// success.
    pub killed: u32,
    pub duration_ms: u64,
    /// A new worker that was starting when the reload failed: kill it, its
    /// slot is still served by the old worker.
    pub abandon: Option<WorkerId>,
    pub settings: Rc<Settings>,
}

impl Reload {
    pub fn new(generation: u64, settings: Rc<Settings>, subscribers: Vec<ReplyTx>) -> Reload {
        Reload {
            generation,
            settings,
            started: Instant::now(),
            queue: VecDeque::new(),
            step: Step::Idle,
            replaced: 0,
            killed: 0,
            subscribers,
            failure: None,
        }
    }

    /// A progress line to the log and every waiting client.
    pub fn tell(&mut self, message: String) {
        tracing::info!(generation = self.generation, "reload: {message}");
        self.subscribers.retain(|s| s.send(Reply::Progress { message: message.clone() }).is_ok());
    }

    /// Starts replacing the workers there are now.
    pub fn begin_rolling(&mut self, pool: &[Member]) -> Order {
        let target = self.target();
        self.queue = pool.iter().filter(|m| m.state != WorkerState::Stopping).map(|m| m.id).collect();
        let change =
            if target == self.queue.len() { String::new() } else { format!(" ({target} workers from now on)") };
        let n = self.queue.len();
        self.tell(format!("started: replacing {n} {}{change}", plural(n, "worker")));
        self.next(pool)
    }

    /// Replaces only `old` (`--max-memory`): a reload restricted to its slot.
    pub fn begin_replacing(&mut self, old: WorkerId, pool: &[Member]) -> Order {
        self.queue = pool.iter().filter(|m| m.id == old && m.state != WorkerState::Stopping).map(|m| m.id).collect();
        self.tell(format!("replacing w{old} in its slot"));
        self.next(pool)
    }

    fn target(&self) -> usize {
        self.settings.workers as usize
    }

    /// The next step: replace, retire or add a worker; or done.
    fn next(&mut self, pool: &[Member]) -> Order {
        self.step = Step::Idle;
        let live = |id: WorkerId| pool.iter().find(|m| m.id == id && m.state != WorkerState::Stopping);
        let next_old = loop {
            match self.queue.pop_front() {
                None => break None,
                Some(id) => match live(id) {
                    Some(m) => break Some(*m),
                    None => continue,
                },
            }
        };
        match next_old {
            Some(old) if old.slot < self.target() => {
                self.step = Step::Spawning { old: Some(old.id) };
                Order::Start { slot: old.slot }
            }
            Some(old) => {
                // The pool shrinks: retire it without a replacement.
                self.step = Step::Draining { new: None, old: old.id, since: Instant::now() };
                Order::Retire(old.id)
            }
            None => {
                // The pool grows, or a slot emptied by a crash is filled.
                let taken = |s: usize| pool.iter().any(|m| m.slot == s && m.state != WorkerState::Stopping);
                match (0..self.target()).find(|s| !taken(*s)) {
                    Some(slot) => {
                        self.step = Step::Spawning { old: None };
                        Order::Start { slot }
                    }
                    None => Order::Done,
                }
            }
        }
    }

    /// The worker asked for by [`Order::Start`] runs, as `new`.
    pub fn started(&mut self, new: WorkerId) {
        if let Step::Spawning { old } = self.step {
            self.step = Step::Starting { new, old, since: Instant::now() };
        }
    }

    /// The worker asked for by [`Order::Start`] could not be started.
    pub fn start_failed(&mut self, why: String) -> Order {
        self.fail(format!("cannot start a new worker: {why}"))
    }

    fn fail(&mut self, why: String) -> Order {
        self.failure.get_or_insert(why);
        Order::Fail
    }

    /// Why the reload failed, once an order said [`Order::Fail`].
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// A worker is ready; if the reload waits for it, the worker it
    /// replaces is retired (or, if that one is gone, the roll moves on).
    pub fn on_ready(&mut self, id: WorkerId, pool: &[Member]) -> Order {
        let Step::Starting { new, old, since } = self.step else { return Order::Wait };
        if new != id {
            return Order::Wait;
        }
        // The old worker may have died meanwhile: then nothing is to drain.
        let old = old.filter(|o| pool.iter().any(|m| m.id == *o && m.state != WorkerState::Stopping));
        match old {
            Some(old) => {
                self.step = Step::Draining { new: Some(new), old, since };
                Order::Retire(old)
            }
            None => {
                self.tell(format!("started worker w{new} in {} ms", since.elapsed().as_millis()));
                self.next(pool)
            }
        }
    }

    /// A new worker missed its ready deadline (and was killed): fatal to the
    /// reload if the reload waited for it.
    pub fn on_not_ready(&mut self, id: WorkerId, why: String) -> Order {
        match self.step {
            Step::Starting { new, .. } if new == id => self.fail(why),
            _ => Order::Wait,
        }
    }

    /// A worker exited: `gone` says how (`pool` no longer holds it).
    pub fn on_exit(&mut self, id: WorkerId, gone: &Gone<'_>, pool: &[Member]) -> ExitVerdict {
        let (label, how) = (gone.label, gone.how);
        match self.step {
            Step::Starting { new, .. } if new == id => {
                let hint = gone.hint.map(|h| format!(": {h}")).unwrap_or_default();
                ExitVerdict::Handled(self.fail(format!("new worker {label} {how} before it was ready{hint}")))
            }
            Step::Draining { new, old, since } if old == id => {
                self.replaced += 1;
                let ms = since.elapsed().as_millis();
                let killed = if gone.killed {
                    self.killed += 1;
                    " (it had to be killed at --shutdown-timeout)"
                } else {
                    ""
                };
                let line = match new {
                    Some(n) => format!("replaced {label} with w{n} in {ms} ms{killed}"),
                    None => format!("retired {label} in {ms} ms{killed}"),
                };
                self.tell(line);
                ExitVerdict::Handled(self.next(pool))
            }
            Step::Starting { new, old: Some(old), since } if old == id => {
                // The worker being replaced died first: its replacement is
                // already starting in its slot, so it is not restarted.
                self.step = Step::Starting { new, old: None, since };
                ExitVerdict::Handled(Order::Wait)
            }
            _ => {
                // An old worker that died while waiting its turn is restarted
                // like any crash (and that restart is queued).
                self.queue.retain(|q| *q != id);
                ExitVerdict::Crash
            }
        }
    }

    /// A crash replacement started during the reload is of the old
    /// generation: it is replaced too, last.
    pub fn enqueue(&mut self, id: WorkerId) {
        self.queue.push_back(id);
    }

    /// Ends the reload (`failure` overrides a recorded failure's absence)
    /// and answers every waiting client.
    pub fn finish(mut self, failure: Option<String>) -> Finished {
        let failure = failure.or(self.failure.take());
        let abandon = match self.step {
            Step::Starting { new, .. } => Some(new),
            _ => None,
        };
        let n = self.replaced as usize;
        let k = self.killed as usize;
        let killed = if k > 0 {
            format!("; {k} old {} had to be killed at --shutdown-timeout instead of draining", plural(k, "worker"))
        } else {
            String::new()
        };
        let (ok, message) = match failure {
            None => {
                (true, format!("generation {} serves ({n} {} replaced{killed})", self.generation, plural(n, "worker")))
            }
            Some(why) => (
                false,
                format!(
                    "failed after replacing {n} {}: {why}; the remaining workers of the previous generation keep serving",
                    plural(n, "worker")
                ),
            ),
        };
        for s in self.subscribers.drain(..) {
            let reply =
                if ok { Reply::Done { message: message.clone() } } else { Reply::Error { error: message.clone() } };
            let _ = s.send(reply);
        }
        Finished {
            generation: self.generation,
            ok,
            message,
            duration_ms: self.started.elapsed().as_millis() as u64,
            killed: self.killed,
            abandon,
            settings: self.settings.clone(),
        }
    }
}

/// Reload requests that arrive while one runs: the first is queued, the
/// rest join it, so a storm of requests gives one more reload, not many.
#[derive(Debug, Default)]
pub struct Queue {
    queued: Option<(Vec<ReplyTx>, bool)>,
}

impl Queue {
    /// Queues (or joins) a request; `no_build` holds only if every joined
    /// request asked for it.
    pub fn push(&mut self, subscriber: Option<ReplyTx>, no_build: bool) {
        let queued = self.queued.get_or_insert_with(|| (Vec::new(), true));
        queued.1 &= no_build;
        if let Some(s) = subscriber {
            let _ = s.send(Reply::Progress { message: "a reload is running; this one is queued behind it".into() });
            queued.0.push(s);
        }
    }

    pub fn is_queued(&self) -> bool {
        self.queued.is_some()
    }

    /// The queued request's clients and whether to skip the build.
    pub fn take(&mut self) -> Option<(Vec<ReplyTx>, bool)> {
        self.queued.take()
    }

    /// Fails the queued request (the primary is stopping).
    pub fn cancel(&mut self, why: &str) {
        for s in self.queued.take().map(|q| q.0).into_iter().flatten() {
            let _ = s.send(Reply::Error { error: format!("cancelled: {why}") });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A pool the tests change by hand, as the supervisor would.
    struct Pool {
        members: Vec<Member>,
        next_id: WorkerId,
    }

    impl Pool {
        /// `n` ready workers w1..wn in slots 0..n.
        fn ready(n: usize) -> Pool {
            let members =
                (0..n).map(|i| Member { id: i as WorkerId + 1, slot: i, state: WorkerState::Ready }).collect();
            Pool { members, next_id: n as WorkerId + 1 }
        }
        fn start(&mut self, slot: usize) -> WorkerId {
            let id = self.next_id;
            self.next_id += 1;
            self.members.push(Member { id, slot, state: WorkerState::Starting });
            id
        }
        fn set(&mut self, id: WorkerId, state: WorkerState) {
            self.members.iter_mut().find(|m| m.id == id).unwrap().state = state;
        }
        fn remove(&mut self, id: WorkerId) {
            self.members.retain(|m| m.id != id);
        }
        fn serving(&self) -> usize {
            self.members.iter().filter(|m| m.state == WorkerState::Ready).count()
        }
    }

    fn gone(label: &str, how: Exit) -> Gone<'_> {
        Gone { label, how, killed: false, hint: None }
    }

    fn settings(workers: u32) -> Rc<Settings> {
        let mut s = Settings::for_tests();
        s.workers = workers;
        Rc::new(s)
    }

    fn reload(workers: u32) -> (Reload, mpsc::UnboundedReceiver<Reply>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Reload::new(2, settings(workers), vec![tx]), rx)
    }

    fn replies(rx: &mut mpsc::UnboundedReceiver<Reply>) -> Vec<Reply> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Plays the supervisor: obeys orders, making every new worker ready at
    /// once and every retired worker exit at once, until the reload is done
    /// or fails. Checks at every step that capacity never dropped below `min`.
    fn run(r: &mut Reload, pool: &mut Pool, mut order: Order, min: usize) -> Order {
        for _ in 0..100 {
            assert!(pool.serving() >= min, "capacity dropped to {} (< {min})", pool.serving());
            order = match order {
                Order::Start { slot } => {
                    let id = pool.start(slot);
                    r.started(id);
                    pool.set(id, WorkerState::Ready);
                    r.on_ready(id, &pool.members)
                }
                Order::Retire(old) => {
                    pool.set(old, WorkerState::Stopping);
                    pool.remove(old);
                    match r.on_exit(old, &gone(&format!("w{old}"), Exit::Code(0)), &pool.members) {
                        ExitVerdict::Handled(o) => o,
                        ExitVerdict::Crash => panic!("a retired worker's exit is the reload's"),
                    }
                }
                Order::Wait | Order::Done | Order::Fail => return order,
            };
        }
        panic!("the reload did not end in 100 steps");
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
        let done = r.finish(None);
        assert!(done.ok && done.message.contains("3 workers replaced"), "{}", done.message);
        assert_eq!(done.abandon, None);
        let replies = replies(&mut rx);
        let progress = replies.iter().filter(|r| matches!(r, Reply::Progress { .. })).count();
        assert_eq!(progress, 4, "started + one line per replaced worker: {replies:?}");
        assert!(matches!(replies.last(), Some(Reply::Done { .. })));
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
        assert_eq!(done.abandon, Some(b), "the starting worker is killed; its slot keeps its old worker");
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
        assert!(
            matches!(&replies(&mut rx)[0], Reply::Progress { message } if message.contains("4 workers from now on"))
        );
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
        assert_eq!(done.abandon, None, "nothing was started");
    }

    #[test]
    fn a_stop_cancels_the_running_and_the_queued_reload() {
        let mut pool = Pool::ready(2);
        let (mut r, mut rx) = reload(2);
        let Order::Start { slot } = r.begin_rolling(&pool.members) else { panic!() };
        let new = pool.start(slot);
        r.started(new);
        let mut queue = Queue::default();
        let (tx, mut queued_rx) = mpsc::unbounded_channel();
        queue.push(Some(tx), false);
        queue.cancel("the primary is stopping");
        assert!(!queue.is_queued());
        let done = r.finish(Some("cancelled: the primary is stopping".into()));
        assert_eq!(done.abandon, Some(new));
        assert!(matches!(replies(&mut rx).last(), Some(Reply::Error { error }) if error.contains("cancelled")));
        let q = replies(&mut queued_rx);
        assert!(matches!(q.last(), Some(Reply::Error { error }) if error.contains("cancelled")), "{q:?}");
    }

    #[test]
    fn requests_during_a_reload_queue_once_and_join() {
        let mut queue = Queue::default();
        let (a, mut a_rx) = mpsc::unbounded_channel();
        let (b, _b_rx) = mpsc::unbounded_channel();
        queue.push(Some(a), true);
        queue.push(None, true); // SIGHUP
        queue.push(Some(b), true);
        assert!(queue.is_queued());
        let (subscribers, no_build) = queue.take().unwrap();
        assert_eq!(subscribers.len(), 2, "both clients wait for the one queued reload");
        assert!(no_build);
        assert!(queue.take().is_none(), "one queued reload, not three");
        assert!(matches!(&replies(&mut a_rx)[0], Reply::Progress { message } if message.contains("queued")));
        queue.push(None, true);
        queue.push(None, false);
        assert!(!queue.take().unwrap().1, "the build is skipped only if every joined request says so");
    }

    impl ExitVerdict {
        fn order(self) -> Order {
            match self {
                ExitVerdict::Handled(o) => o,
                ExitVerdict::Crash => panic!("expected the reload to handle it"),
            }
        }
    }
}
