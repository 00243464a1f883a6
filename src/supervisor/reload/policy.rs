//! The rolling reload, as a state machine that knows no processes.
//!
//! For each old worker: start a new-generation worker in its slot, wait
//! until it is ready, then retire the old one. Up to `surge` new workers
//! (`--surge`, or the reload request's own) are starting or waiting for
//! their old worker to exit at any moment, so the pool holds at most N+surge
//! workers and never fewer than N ready ones: with surge 1 the roll goes one
//! worker at a time, with surge N every replacement starts at once and the
//! reload takes about one worker's start-up time.
//!
//! If a new worker dies or misses `--ready-timeout`, the reload stops right
//! there: every new worker still starting is abandoned (killed), the old
//! workers not yet replaced keep serving, and those already replaced stay
//! replaced (their old worker was retired only once the new one was ready).
//! A new worker is taken for proven only once it has stayed ready for
//! `--min-ready` (its window): until then the old worker it replaces keeps
//! serving and no other new worker starts in its place of the surge, so a
//! release that crashes soon after it says ready fails the reload with no
//! old worker retired. A canary reload (`hotswap reload --canary DUR`)
//! starts one new worker beside the whole old generation, watches it for
//! DUR, and only then goes on (see [`window`]).
//!
//! A reload asked for while one runs is queued; further requests join the
//! queued one (`Queue`).
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
use std::time::{Duration, Instant};

use crate::options::Settings;
use crate::types::surge::Surge;
use crate::types::wire::{LifecycleEvent, Reply, ReplyTx};
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
    /// Start a new-generation worker in `slot`, tell [`Reload::started`]
    /// (or [`Reload::start_failed`]), then ask [`Reload::next`].
    Start { slot: usize },
    /// Tell this worker to drain and exit, then ask [`Reload::next`].
    Retire(WorkerId),
    /// Call [`Reload::on_proven`] for this new worker once it has been
    /// ready for `window` (unless it is gone by then), then ask
    /// [`Reload::next`].
    Watch { worker: WorkerId, window: Duration },
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

/// A new worker that is starting, to replace `old` (or to add capacity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Starting {
    new: WorkerId,
    old: Option<WorkerId>,
    since: Instant,
}

/// `old` has been told to drain; `new` (if any) serves in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Draining {
    new: Option<WorkerId>,
    old: WorkerId,
    since: Instant,
}

/// A reload in progress (its `--build`, if any, runs before [`Reload::begin_rolling`]).
#[derive(Debug)]
pub struct Reload {
    pub generation: u64,
    /// Requests the rescue passed on during this reload, for its answer.
    pub rescued: u64,
    /// The new generation's settings.
    pub settings: Rc<Settings>,
    /// The request's surge, instead of the settings' one.
    surge: Option<Surge>,
    started: Instant,
    /// Whether the roll has begun (not while the build runs).
    rolling: bool,
    /// How many new workers may be in flight at once (the surge, resolved
    /// against the pool's size when the roll begins).
    width: usize,
    /// Old workers still to be replaced (or retired), oldest first.
    queue: VecDeque<WorkerId>,
    /// An [`Order::Start`] given, and the old worker it replaces, until
    /// [`Reload::started`] names the new worker.
    spawning: Option<Option<WorkerId>>,
    starting: Vec<Starting>,
    /// Ready new workers inside their window, old worker still serving.
    proving: Vec<window::Proving>,
    draining: Vec<Draining>,
    /// `--min-ready` of the new generation.
    min_ready: Duration,
    /// The canary of a canary reload.
    canary: window::Canary,
    /// Events for the supervisor to send (the canary's).
    events: Vec<LifecycleEvent>,
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
    /// New workers that were starting when the reload failed: kill them,
    /// their slots are still served by the old workers.
    pub abandon: Vec<WorkerId>,
    pub settings: Rc<Settings>,
}

impl Reload {
    /// `surge` overrides the settings' `--surge` for this reload.
    pub fn new(generation: u64, settings: Rc<Settings>, subscribers: Vec<ReplyTx>, surge: Option<Surge>) -> Reload {
        Reload {
            min_ready: settings.min_ready,
            proving: Vec::new(),
            canary: window::Canary::None,
            events: Vec::new(),
            rescued: 0,
            generation,
            settings,
            surge,
            started: Instant::now(),
            rolling: false,
            width: 1,
            queue: VecDeque::new(),
            spawning: None,
            starting: Vec::new(),
            draining: Vec::new(),
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

    /// A note about one of this reload's new workers (the supervisor has
    /// logged it already) for every waiting client, so that a `hotswap
    /// reload` that waits says why; a worker not of this reload is none of
    /// its clients' business.
    pub fn note_about(&mut self, id: WorkerId, message: String) {
        if self.starting.iter().any(|s| s.new == id) {
            self.subscribers.retain(|s| s.send(Reply::Progress { message: message.clone() }).is_ok());
        }
    }

    /// Starts replacing the workers there are now.
    pub fn begin_rolling(&mut self, pool: &[Member]) -> Order {
        self.min_ready = self.settings.min_ready;
        let target = self.target();
        self.queue = pool.iter().filter(|m| m.state != WorkerState::Stopping).map(|m| m.id).collect();
        let surge = self.surge.unwrap_or(self.settings.surge);
        self.width = surge.of(target);
        self.rolling = true;
        let change =
            if target == self.queue.len() { String::new() } else { format!(" ({target} workers from now on)") };
        let n = self.queue.len();
        let pace = match self.width {
            1 => "one at a time".to_string(),
            w => format!("up to {w} at a time"),
        };
        let surge = match surge {
            Surge::Percent(_) => format!("surge {surge} of {target}"),
            Surge::Count(_) => format!("surge {surge}"),
        };
        let window = match self.min_ready {
            d if d.is_zero() => String::new(),
            d => format!(", each new worker ready for {} before its old one is retired", window::secs(d)),
        };
        self.tell(format!("started: replacing {n} {}{change}, {pace} ({surge}){window}", plural(n, "worker")));
        if let window::Canary::Asked(d) = self.canary {
            self.tell(format!(
                "canary: one new worker serves beside the {n} old {} for {} before any is retired",
                plural(n, "one"),
                window::secs(d)
            ));
        }
        self.next(pool)
    }

    /// Replaces only `old` (`--max-memory`): a reload restricted to its slot.
    pub fn begin_replacing(&mut self, old: WorkerId, pool: &[Member]) -> Order {
        self.queue = pool.iter().filter(|m| m.id == old && m.state != WorkerState::Stopping).map(|m| m.id).collect();
        self.width = 1;
        self.rolling = true;
        self.tell(format!("replacing w{old} in its slot"));
        self.next(pool)
    }

    fn target(&self) -> usize {
        self.settings.workers as usize
    }

    /// New workers that hold a place of the surge: starting, or ready while
    /// the old worker they replace drains. (A surplus worker retired without
    /// a replacement takes none: the pool only shrinks by it.)
    fn in_flight(&self) -> usize {
        self.spawning.iter().count()
            + self.starting.len()
            + self.proving.len()
            + self.draining.iter().filter(|d| d.new.is_some()).count()
    }

    /// The next step: replace, retire or add a worker while the surge
    /// leaves room; wait for a worker; or done.
    ///
    /// Why the bounds hold: an old worker is retired only when its
    /// replacement is ready (so at least N are ready), and a new worker
    /// starts only while fewer than `width` are in flight (so the pool
    /// holds at most N + `width` workers, N being the larger of the old and
    /// the new count). With nothing in flight a start is always allowed,
    /// so the roll cannot stall.
    pub fn next(&mut self, pool: &[Member]) -> Order {
        if !self.rolling || self.spawning.is_some() {
            return Order::Wait;
        }
        let live = |id: WorkerId| pool.iter().find(|m| m.id == id && m.state != WorkerState::Stopping);
        while let Some(&id) = self.queue.front() {
            let Some(old) = live(id).copied() else {
                self.queue.pop_front();
                continue;
            };
            if old.slot >= self.target() {
                // The pool shrinks: retire it without a replacement.
                self.queue.pop_front();
                self.draining.push(Draining { new: None, old: old.id, since: Instant::now() });
                return Order::Retire(old.id);
            }
            if self.in_flight() >= self.width() {
                return Order::Wait;
            }
            self.queue.pop_front();
            self.spawning = Some(Some(old.id));
            return Order::Start { slot: old.slot };
        }
        // The pool grows, or a slot emptied by a crash is filled.
        if self.in_flight() < self.width() {
            let taken = |s: usize| pool.iter().any(|m| m.slot == s && m.state != WorkerState::Stopping);
            if let Some(slot) = (0..self.target()).find(|s| !taken(*s)) {
                self.spawning = Some(None);
                return Order::Start { slot };
            }
        }
        if self.starting.is_empty() && self.draining.is_empty() && self.proving.is_empty() {
            Order::Done
        } else {
            Order::Wait
        }
    }

    /// The worker asked for by [`Order::Start`] runs, as `new`.
    pub fn started(&mut self, new: WorkerId) {
        if let Some(old) = self.spawning.take() {
            self.starting.push(Starting { new, old, since: Instant::now() });
            self.canary_started(new, old);
        }
    }

    /// The worker asked for by [`Order::Start`] could not be started.
    pub fn start_failed(&mut self, why: String) -> Order {
        self.spawning = None;
        self.fail(format!("cannot start a new worker: {why}"))
    }

    fn fail(&mut self, why: String) -> Order {
        if self.failure.is_none() {
            self.canary_failed(&why);
        }
        self.failure.get_or_insert(why);
        Order::Fail
    }

    /// Why the reload failed, once an order said [`Order::Fail`].
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// A worker is ready; if it is one of the reload's new workers, the old
    /// worker it replaces is retired (or, if that one is gone, the roll
    /// moves on).
    pub fn on_ready(&mut self, id: WorkerId, pool: &[Member]) -> Order {
        let Some(i) = self.starting.iter().position(|s| s.new == id) else { return Order::Wait };
        let Starting { new, old, since } = self.starting.swap_remove(i);
        // The old worker may have died meanwhile: then nothing is to drain.
        let old = old.filter(|o| pool.iter().any(|m| m.id == *o && m.state != WorkerState::Stopping));
        if let Some(order) = self.begin_window(new, old, since, pool) {
            return order;
        }
        self.replace(new, old, since, pool)
    }

    /// `new` has proven itself: retire the old worker it replaces (or, if
    /// there is none, go on).
    fn replace(&mut self, new: WorkerId, old: Option<WorkerId>, since: Instant, pool: &[Member]) -> Order {
        match old {
            Some(old) => {
                self.draining.push(Draining { new: Some(new), old, since });
                Order::Retire(old)
            }
            None => {
                self.tell(format!("started worker w{new} in {} ms", since.elapsed().as_millis()));
                self.next(pool)
            }
        }
    }

    /// Whether `id` is one of the reload's new workers, not ready yet.
    pub fn is_starting(&self, id: WorkerId) -> bool {
        self.starting.iter().any(|s| s.new == id)
    }

    /// A new worker missed its ready deadline (and was killed): fatal to the
    /// reload if it is one of the reload's.
    pub fn on_not_ready(&mut self, id: WorkerId, why: String) -> Order {
        if self.starting.iter().any(|s| s.new == id) {
            self.fail(why)
        } else {
            Order::Wait
        }
    }

    /// A worker exited: `gone` says how (`pool` no longer holds it).
    pub fn on_exit(&mut self, id: WorkerId, gone: &Gone<'_>, pool: &[Member]) -> ExitVerdict {
        let (label, how) = (gone.label, gone.how);
        if let Some(i) = self.starting.iter().position(|s| s.new == id) {
            // Gone already: nothing to abandon.
            self.starting.swap_remove(i);
            let hint = gone.hint.map(|h| format!(": {h}")).unwrap_or_default();
            let who = self.who(id);
            return ExitVerdict::Handled(self.fail(format!("{who} {label} {how} before it was ready{hint}")));
        }
        if let Some(order) = self.exit_in_window(id, gone) {
            return ExitVerdict::Handled(order);
        }
        if let Some(i) = self.draining.iter().position(|d| d.old == id) {
            let Draining { new, since, .. } = self.draining.swap_remove(i);
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
            return ExitVerdict::Handled(self.next(pool));
        }
        if let Some(s) = self.starting.iter_mut().find(|s| s.old == Some(id)) {
            // The worker being replaced died first: its replacement is
            // already starting in its slot, so it is not restarted.
            s.old = None;
            return ExitVerdict::Handled(self.next(pool));
        }
        if let Some(p) = self.proving.iter_mut().find(|p| p.old == Some(id)) {
            // Likewise, with its replacement ready and in its window.
            p.old = None;
            return ExitVerdict::Handled(self.next(pool));
        }
        // An old worker that died while waiting its turn is restarted like
        // any crash (and that restart is queued).
        self.queue.retain(|q| *q != id);
        ExitVerdict::Crash
    }

    /// A crash replacement started during the reload is of the old
    /// generation: it is replaced too, last.
    pub fn enqueue(&mut self, id: WorkerId) {
        self.queue.push_back(id);
    }

    /// Ends the reload (`failure` overrides a recorded failure's absence)
    /// and answers every waiting client.
    pub fn finish(&mut self, failure: Option<String>) -> Finished {
        let failure = failure.or(self.failure.take());
        if let Some(why) = &failure {
            self.canary_failed(why);
        }
        // New workers in their window whose old worker still serves go too:
        // a failed reload leaves those slots as they were.
        let proving = self.proving.iter().filter(|p| p.old.is_some()).map(|p| p.new);
        let abandon = self.starting.iter().map(|s| s.new).chain(proving).collect();
        // Old workers still draining count as replaced: their new workers
        // serve, whatever happens to the rest of the reload.
        let n = self.replaced as usize + self.draining.len();
        let k = self.killed as usize;
        let killed = if k > 0 {
            format!("; {k} old {} had to be killed at --shutdown-timeout instead of draining", plural(k, "worker"))
        } else {
            String::new()
        };
        let (ok, message) = match failure {
            None => {
                let rescued = match self.rescued as usize {
                    0 => String::new(),
                    r => format!("; rescued {r} {}", plural(r, "request")),
                };
                let (g, canary) = (self.generation, self.canary.verdict());
                (true, format!("generation {g} serves ({canary}{n} {} replaced{killed}){rescued}", plural(n, "worker")))
            }
            Some(why) => {
                let stopped = match self.starting.len() {
                    0 | 1 => String::new(),
                    s => format!(" ({s} new workers still starting were stopped)"),
                };
                (
                    false,
                    format!(
                        "failed after replacing {n} {}: {why}{stopped}; the remaining workers of the previous generation keep serving",
                        plural(n, "worker")
                    ),
                )
            }
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

#[cfg(test)]
mod tests;
pub mod window;
