//! Running reloads: the supervisor's side of [`policy`], which decides.
//!
//! A request (SIGHUP, `hotswap reload`, a watched change) starts a reload or
//! joins the queue behind the running one. A reload first re-reads the
//! config file and runs `--build` (if any; a failure touches no worker),
//! then rolls: this module carries out the policy's [`Order`]s (start a
//! worker, retire one) and feeds it what happens (ready, exited, timed out).

pub mod policy;
pub mod queue;

use std::time::{Duration, Instant};

use policy::{Member, Order, Reload};
pub use queue::Ask;

use super::Supervisor;
use crate::io::build::Build;
use crate::io::file_watch::BuildClock;
use crate::types::wire::{LifecycleEvent, ReloadOutcome, ReplyTx};
use crate::types::{unix_now, Exit, Killed, WorkerId, WorkerState};

/// The reloads: the running one (whose course [`policy`] decides), its
/// `--build`, the requests queued behind it, how the last one went, and the
/// generation numbers. Changed here alone (an upgrade restores them,
/// [`Reloads::restore`]); the exits, health checks and status read them.
pub(in crate::supervisor) struct Reloads {
    /// The running reload (or `--max-memory` replacement).
    pub(in crate::supervisor) running: Option<Reload>,
    /// The running reload's `--build` command, while it runs (before any
    /// worker is touched).
    pub(in crate::supervisor) build: Option<Build>,
    /// Reload requests waiting behind the running one.
    pub(in crate::supervisor) queued: queue::Queue,
    /// How the last reload went.
    pub(in crate::supervisor) last: Option<ReloadOutcome>,
    /// Tells the file watcher whether a build runs (its writes do not count).
    pub(in crate::supervisor) build_clock: tokio::sync::watch::Sender<BuildClock>,
    /// The newest generation number handed out.
    pub(in crate::supervisor) newest_generation: u64,
    /// The generation that serves: 1, or the last reload that succeeded.
    pub(in crate::supervisor) serving_generation: u64,
}

impl Default for Reloads {
    fn default() -> Reloads {
        Reloads {
            running: None,
            build: None,
            queued: Default::default(),
            last: None,
            build_clock: tokio::sync::watch::Sender::new(Default::default()),
            newest_generation: 1,
            serving_generation: 1,
        }
    }
}

impl Reloads {
    /// A new image: where the previous one was.
    pub(in crate::supervisor) fn restore(&mut self, newest: u64, serving: u64, last: Option<ReloadOutcome>) {
        self.newest_generation = newest;
        self.serving_generation = serving;
        self.last = last;
    }
}

impl Supervisor {
    /// A reload request from SIGHUP or a watched change (`None`) or a
    /// control client; `no_build` skips the `--build` command, `ask` says
    /// the request's own surge and canary.
    pub(super) fn request_reload(&mut self, subscriber: Option<ReplyTx>, no_build: bool, ask: Ask) {
        // Every trigger gets its RELOADING=1, even one that joins a queue:
        // systemd shows the unit reloading until the READY=1 after the last.
        self.io.systemd.reloading(&format!("reload requested; {}", self.status_line()));
        if self.reloads.running.is_some() {
            self.reloads.queued.push(subscriber, no_build, ask);
            tracing::info!("reload queued behind the running one");
            return;
        }
        self.start_reload(subscriber.into_iter().collect(), no_build, ask);
    }

    fn start_reload(&mut self, subscribers: Vec<ReplyTx>, no_build: bool, ask: Ask) {
        let generation = self.reloads.newest_generation + 1;
        self.reloads.newest_generation = generation;
        self.rescue_reload_began();
        let mut ev = LifecycleEvent::new("reload-started");
        ev.generation = Some(generation);
        self.io.subscribers.emit(ev);
        let settings = self.reload_settings();
        let mut reload = Reload::new(generation, self.settings.clone(), subscribers, ask.surge).with_canary(ask.canary);
        match settings {
            Ok(s) => reload.settings = s,
            Err(e) => {
                self.reloads.running = Some(reload);
                return self.finish_reload(Some(format!("{e:#}")));
            }
        }
        match reload.settings.build.clone() {
            Some(cmd) if !no_build => {
                reload.tell(format!("building: {cmd}"));
                self.reloads.running = Some(reload);
                self.start_build(&cmd);
            }
            _ => {
                self.reloads.running = Some(reload);
                self.begin_rolling();
            }
        }
    }

    fn start_build(&mut self, cmd: &str) {
        match Build::start(cmd, &self.io.output) {
            Ok(b) => {
                // Its whole group dies with the primary, even by SIGKILL.
                self.io.guardian.protect(b.pid);
                self.reloads.build_clock.send_replace(BuildClock { running: true, ended: None });
                self.reloads.build = Some(b);
            }
            Err(e) => self.finish_reload(Some(format!("{e:#}"))),
        }
    }

    /// Replaces one worker in its slot (`--max-memory`): a reload of the
    /// serving generation with its settings, restricted to that worker;
    /// no build, no config re-read.
    pub(super) fn start_replacement(&mut self, old: WorkerId) {
        let mut reload = Reload::new(self.reloads.serving_generation, self.settings.clone(), Vec::new(), None);
        let pool = self.members();
        let order = reload.begin_replacing(old, &pool);
        self.reloads.running = Some(reload);
        self.obey(order);
    }

    /// The build process exited: roll on success, fail otherwise.
    pub(super) fn reload_on_build_exit(&mut self, how: Exit) {
        let Some(build) = self.reloads.build.take() else { return };
        let Some(reload) = self.reloads.running.as_mut() else { return };
        self.reloads.build_clock.send_replace(BuildClock { running: false, ended: Some(Instant::now()) });
        let took = format!("{:.1} s", build.started.elapsed().as_secs_f64());
        let cmd = reload.settings.build.clone().unwrap_or_default();
        match how {
            Exit::Code(0) if build.again => {
                reload.tell(format!("build finished in {took}; files changed meanwhile, building again"));
                self.start_build(&cmd);
            }
            Exit::Code(0) => {
                reload.tell(format!("build finished in {took}"));
                self.begin_rolling();
            }
            _ => self.finish_reload(Some(format!("build `{cmd}` {how} after {took}; no worker was touched"))),
        }
    }

    /// Files changed while the build ran: build again before rolling.
    pub(super) fn reload_build_again(&mut self) -> bool {
        match self.reloads.build.as_mut() {
            Some(b) => {
                b.again = true;
                true
            }
            None => false,
        }
    }

    /// The pool as the policy sees it.
    pub(in crate::supervisor) fn members(&self) -> Vec<Member> {
        self.workers.values().map(|w| Member { id: w.id(), slot: w.slot(), state: w.state() }).collect()
    }

    fn begin_rolling(&mut self) {
        let pool = self.members();
        let Some(reload) = self.reloads.running.as_mut() else { return };
        let target = reload.settings.workers as usize;
        if self.crash_history.len() < target {
            if let Err(e) = self.sockets.slot_sockets.grow(target) {
                return self.finish_reload(Some(format!("{e:#}")));
            }
            self.crash_history.resize_with(target, Default::default);
        }
        let order = reload.begin_rolling(&pool);
        self.obey(order);
    }

    /// Carries out the policy's orders until it waits for an event.
    pub(in crate::supervisor) fn obey(&mut self, mut order: Order) {
        loop {
            let Some(reload) = self.reloads.running.as_mut() else { return };
            order = match order {
                Order::Wait => return self.send_reload_events(),
                Order::Watch { worker, window } => {
                    self.worker_timer(worker, window, crate::types::Timer::Proven(worker));
                    let pool = self.members();
                    reload_mut(&mut self.reloads.running).next(&pool)
                }
                Order::Done => {
                    if !self.rescue_settle() {
                        self.finish_reload(None);
                    }
                    return;
                }
                Order::Fail => {
                    let why = reload.failure().unwrap_or("failed").to_string();
                    return self.finish_reload(Some(why));
                }
                Order::Retire(old) => {
                    self.shut_down(old);
                    let pool = self.members();
                    reload_mut(&mut self.reloads.running).next(&pool)
                }
                Order::Start { slot } => {
                    let (settings, generation) = (reload.settings.clone(), reload.generation);
                    self.io
                        .systemd
                        .extend_timeout(settings.ready_timeout + settings.shutdown_timeout + Duration::from_secs(10));
                    match self.spawn(slot, generation, &settings) {
                        Ok(new) => {
                            let ready = self.workers.get(&new).is_some_and(|w| w.state() == WorkerState::Ready);
                            let pool = self.members();
                            let Some(reload) = self.reloads.running.as_mut() else { return };
                            reload.started(new);
                            // (`--ready none`: ready the moment it started.)
                            if ready {
                                reload.on_ready(new, &pool)
                            } else {
                                reload.next(&pool)
                            }
                        }
                        Err(e) => reload_mut(&mut self.reloads.running).start_failed(format!("{e:#}")),
                    }
                }
            };
        }
    }

    /// The canary's events, as the policy made them.
    fn send_reload_events(&mut self) {
        for ev in self.reloads.running.as_mut().map(|r| r.take_events()).unwrap_or_default() {
            self.io.subscribers.emit(ev);
        }
    }

    /// A new worker's window is over: the reload may go on.
    pub(super) fn reload_on_proven(&mut self, id: WorkerId) {
        let pool = self.members();
        if let Some(reload) = self.reloads.running.as_mut() {
            let order = reload.on_proven(id, &pool);
            self.obey(order);
        }
    }

    /// A worker is ready; the reload may be waiting for it.
    pub(super) fn reload_on_ready(&mut self, id: WorkerId) {
        let pool = self.members();
        if let Some(reload) = self.reloads.running.as_mut() {
            let order = reload.on_ready(id, &pool);
            self.obey(order);
        }
    }

    /// A crash replacement started during a reload is old news: queue it.
    pub(super) fn reload_enqueue(&mut self, id: WorkerId) {
        if let Some(r) = self.reloads.running.as_mut() {
            r.enqueue(id);
        }
    }

    /// A worker missed its ready deadline (and was killed).
    pub(super) fn reload_on_not_ready(&mut self, id: WorkerId, why: String) {
        if let Some(reload) = self.reloads.running.as_mut() {
            let order = reload.on_not_ready(id, why);
            self.obey(order);
        }
    }

    /// Ends the running reload (`failure` says why it failed), then starts
    /// the queued one, if any.
    pub(super) fn finish_reload(&mut self, failure: Option<String>) {
        let Some(mut reload) = self.reloads.running.take() else { return };
        reload.rescued = self.rescue_reload_ended();
        let done = reload.finish(failure);
        for ev in reload.take_events() {
            self.io.subscribers.emit(ev);
        }
        if let Some(b) = self.reloads.build.take() {
            b.kill();
            self.io.guardian.release(b.pid);
            self.reloads.build_clock.send_replace(BuildClock { running: false, ended: Some(Instant::now()) });
        }
        for new in &done.abandon {
            // Its slot is still served by the old worker: no replacement.
            let Some(w) = self.workers.get_mut(new) else { continue };
            match w.state() {
                // Proving itself: it serves, so it drains like any worker
                // (and is not replaced, as any worker told to go).
                WorkerState::Ready => self.shut_down(*new),
                WorkerState::Starting => {
                    w.kill(Killed::Abandoned);
                    w.retire();
                }
                // Already told to go (a failed health check drains), or
                // killed at its ready deadline (then replaced, unless this).
                WorkerState::Stopping => w.retire(),
            }
        }
        if let Some(r) = self.memory.replacing.take() {
            // A memory replacement: not a reload (no outcome, no events of
            // one, generation and settings unchanged).
            self.replaced_for_memory(r, done.ok, &done.message);
            if let Some(q) = self.reloads.queued.take() {
                self.start_reload(q.subscribers, q.no_build, q.ask);
            }
            return;
        }
        self.count_reload(done.ok, done.duration_ms);
        if done.ok {
            self.reloads.serving_generation = done.generation;
            self.settings = done.settings.clone();
            self.crash_history.truncate(self.settings.workers as usize);
            self.arm_memory_check();
            tracing::info!(
                generation = done.generation,
                "reload finished in {} ms: {}",
                done.duration_ms,
                done.message
            );
        } else {
            tracing::error!(generation = done.generation, "reload {}", done.message);
        }
        let mut ev = LifecycleEvent::new(if done.ok { "reload-finished" } else { "reload-failed" });
        ev.generation = Some(done.generation);
        ev.message = Some(done.message.clone());
        self.io.subscribers.emit(ev);
        self.reloads.last = Some(ReloadOutcome {
            generation: done.generation,
            ok: done.ok,
            message: done.message,
            duration_ms: done.duration_ms,
            killed: done.killed,
            finished_at: unix_now(),
        });
        match self.reloads.queued.take() {
            Some(q) => self.start_reload(q.subscribers, q.no_build, q.ask),
            None => {
                // Finished, failed or not: systemd waits for READY=1. Sent
                // now, before the replies above reach their clients (the
                // control task writes them after this turn of the loop), so
                // an ExecReload=`hotswap reload` exits after systemd saw it.
                self.life.systemd_was_told_ready();
                self.io.systemd.ready(&self.status_line());
            }
        }
    }

    /// Fails the running and the queued reload (the primary is stopping).
    pub(super) fn cancel_reloads(&mut self, why: &str) {
        self.reloads.queued.cancel(why);
        if self.reloads.running.is_some() {
            self.finish_reload(Some(format!("cancelled: {why}")));
        }
    }
}

fn reload_mut(r: &mut Option<Reload>) -> &mut Reload {
    r.as_mut().expect("a reload runs while it is obeyed")
}
