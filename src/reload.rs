//! The rolling reload: replace every worker, one at a time, without ever
//! dropping below N serving workers.
//!
//! For each old worker in turn: start a new-generation worker in its slot,
//! wait until it is ready, then shut the old one down and wait for it to
//! exit. If the new worker dies or misses `--ready-timeout`, the reload stops
//! right there: the new worker is killed and the old ones still running keep
//! serving. A reload asked for while one runs is queued; further requests
//! join the queued one.
//!
//! The config file, if any, is read again for each reload: a new worker
//! count grows or shrinks the pool as part of the same roll (new workers are
//! added after the replacements, surplus old ones are retired last).

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::build::Build;
use crate::config::Settings;
use crate::control::{Reply, ReplyTx};
use crate::events::LifecycleEvent;
use crate::status::ReloadOutcome;
use crate::supervisor::{unix_now, Exit, Slot, Supervisor};
use crate::watch::BuildClock;
use crate::worker::{Worker, WorkerId, WorkerState};

#[derive(Debug)]
pub struct Reload {
    pub generation: u64,
    /// The new generation's settings.
    settings: Rc<Settings>,
    started: Instant,
    /// Old workers still to be replaced (or retired), oldest first.
    queue: VecDeque<WorkerId>,
    step: Step,
    replaced: u32,
    subscribers: Vec<ReplyTx>,
    /// The `--build` command, while it runs (before any worker is touched).
    pub(crate) build: Option<Build>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// `new` is starting, to replace `old` (or to add capacity).
    Starting {
        new: WorkerId,
        old: Option<WorkerId>,
        since: Instant,
    },
    /// `old` has been told to shut down, `new` (if any) serves in its place.
    Draining {
        new: Option<WorkerId>,
        old: WorkerId,
        since: Instant,
    },
    Idle,
}

impl Reload {
    fn tell(&mut self, message: String) {
        tracing::info!("reload to generation {}: {message}", self.generation);
        self.subscribers.retain(|s| s.send(Reply::Progress { message: message.clone() }).is_ok());
    }
}

impl Supervisor {
    /// A reload request from SIGHUP or a watched change (`None`) or a
    /// control client; `no_build` skips the `--build` command.
    pub(crate) fn request_reload(&mut self, subscriber: Option<ReplyTx>, no_build: bool) {
        // Every trigger gets its RELOADING=1, even one that joins a queue:
        // `systemctl reload` waits for it.
        self.notifier.reloading(&format!("reload requested; {}", self.status_line()));
        if self.reload.is_some() {
            let queued = self.queued.get_or_insert_with(|| (Vec::new(), true));
            queued.1 &= no_build;
            if let Some(s) = subscriber {
                let _ = s.send(Reply::Progress { message: "a reload is running; this one is queued behind it".into() });
                queued.0.push(s);
            }
            tracing::info!("reload queued behind the running one");
            return;
        }
        self.start_reload(subscriber.into_iter().collect(), no_build);
    }

    fn start_reload(&mut self, subscribers: Vec<ReplyTx>, no_build: bool) {
        let generation = self.newest_generation + 1;
        self.newest_generation = generation;
        let mut ev = LifecycleEvent::new("reload-started");
        ev.generation = Some(generation);
        self.watchers.emit(ev);
        let settings = self.reload_settings();
        let mut reload = Reload {
            generation,
            settings: self.settings.clone(),
            started: Instant::now(),
            queue: VecDeque::new(),
            step: Step::Idle,
            replaced: 0,
            subscribers,
            build: None,
        };
        match settings {
            Ok(s) => reload.settings = s,
            Err(e) => {
                self.reload = Some(reload);
                return self.finish_reload(Some(format!("{e:#}")));
            }
        }
        match reload.settings.build.clone() {
            Some(cmd) if !no_build => {
                reload.tell(format!("building: {cmd}"));
                self.reload = Some(reload);
                self.start_build(&cmd);
            }
            _ => {
                self.reload = Some(reload);
                self.begin_rolling();
            }
        }
    }

    fn start_build(&mut self, cmd: &str) {
        match Build::start(cmd, &self.output) {
            Ok(b) => {
                self.build_clock.send_replace(BuildClock { running: true, ended: None });
                if let Some(r) = self.reload.as_mut() {
                    r.build = Some(b);
                }
            }
            Err(e) => self.finish_reload(Some(format!("{e:#}"))),
        }
    }

    /// The build process exited: roll on success, fail otherwise.
    pub(crate) fn reload_on_build_exit(&mut self, how: Exit) {
        let Some(reload) = self.reload.as_mut() else { return };
        let Some(build) = reload.build.take() else { return };
        self.build_clock.send_replace(BuildClock { running: false, ended: Some(Instant::now()) });
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
    pub(crate) fn reload_build_again(&mut self) -> bool {
        match self.reload.as_mut().and_then(|r| r.build.as_mut()) {
            Some(b) => {
                b.again = true;
                true
            }
            None => false,
        }
    }

    /// Starts replacing the workers there are now.
    fn begin_rolling(&mut self) {
        let Some(reload) = self.reload.as_mut() else { return };
        let target = reload.settings.workers as usize;
        if self.slots.len() < target {
            self.slots.resize_with(target, Slot::default);
        }
        reload.queue = self.workers.values().filter(|w| w.state != WorkerState::Stopping).map(|w| w.id).collect();
        let change =
            if target == reload.queue.len() { String::new() } else { format!(" ({target} workers from now on)") };
        reload.tell(format!("started: replacing {} workers{change}", reload.queue.len()));
        self.reload_next();
    }

    /// Starts the next step: replace, retire or add a worker; or finishes.
    fn reload_next(&mut self) {
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        reload.step = Step::Idle;
        let target = reload.settings.workers as usize;
        let settings = reload.settings.clone();
        let generation = reload.generation;
        let next_old = loop {
            match reload.queue.pop_front() {
                None => break None,
                Some(id) => match self.workers.get(&id) {
                    Some(w) if w.state != WorkerState::Stopping => break Some((id, w.slot)),
                    _ => continue,
                },
            }
        };
        let (slot, old) = match next_old {
            Some((old, slot)) if slot < target => (slot, Some(old)),
            Some((old, _)) => {
                // The pool shrinks: retire it without a replacement.
                reload.step = Step::Draining { new: None, old, since: Instant::now() };
                self.shut_down(old);
                return;
            }
            None => {
                // The pool grows, or a slot emptied by a crash is filled.
                let empty = (0..target)
                    .find(|s| !self.workers.values().any(|w| w.slot == *s && w.state != WorkerState::Stopping));
                match empty {
                    Some(slot) => (slot, None),
                    None => return self.finish_reload(None),
                }
            }
        };
        self.notifier.extend_timeout(settings.ready_timeout + settings.shutdown_timeout + Duration::from_secs(10));
        match self.spawn(slot, generation, &settings) {
            Ok(new) => {
                if let Some(r) = self.reload.as_mut() {
                    // (spawn may already have found it ready: --ready none)
                    if r.step == Step::Idle {
                        r.step = Step::Starting { new, old, since: Instant::now() };
                        if self.workers.get(&new).is_some_and(|w| w.state == WorkerState::Ready) {
                            self.reload_on_ready(new);
                        }
                    }
                }
            }
            Err(e) => self.finish_reload(Some(format!("cannot start a new worker: {e:#}"))),
        }
    }

    /// A worker is ready; if the reload waits for it, the old worker it
    /// replaces is shut down.
    pub(crate) fn reload_on_ready(&mut self, id: WorkerId) {
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        let Step::Starting { new, old, since } = reload.step else {
            return;
        };
        if new != id {
            return;
        }
        // (The old worker may have died meanwhile; then there is nothing to drain.)
        let old = old.filter(|o| self.workers.get(o).is_some_and(|w| w.state != WorkerState::Stopping));
        match old {
            Some(old) => {
                reload.step = Step::Draining { new: Some(new), old, since };
                self.shut_down(old);
            }
            None => {
                reload.tell(format!("started worker w{new} in {} ms", since.elapsed().as_millis()));
                self.reload_next();
            }
        }
    }

    /// A crash replacement started during a reload is old news: queue it.
    pub(crate) fn reload_adopt(&mut self, id: WorkerId) {
        if let Some(r) = self.reload.as_mut() {
            r.queue.push_back(id);
        }
    }

    /// A worker exited. True when the reload accounts for it, so the
    /// supervisor must not treat it as a crash.
    pub(crate) fn reload_on_exit(&mut self, worker: &Worker, how: Exit) -> bool {
        let Some(reload) = self.reload.as_mut() else {
            return false;
        };
        match reload.step {
            Step::Starting { new, .. } if new == worker.id => {
                let why = format!("new worker {} {how} before it was ready", worker.label());
                self.finish_reload(Some(why));
                true
            }
            Step::Draining { new, old, since } if old == worker.id => {
                reload.replaced += 1;
                let ms = since.elapsed().as_millis();
                let line = match new.and_then(|n| self.workers.get(&n)) {
                    Some(n) => format!("replaced {} with {} in {ms} ms", worker.label(), n.label()),
                    None => format!("retired {} in {ms} ms", worker.label()),
                };
                reload.tell(line);
                self.reload_next();
                true
            }
            Step::Starting { new, old: Some(old), since } if old == worker.id => {
                // The worker being replaced died first: its replacement is
                // already starting in its slot, so it is not restarted.
                reload.step = Step::Starting { new, old: None, since };
                true
            }
            _ => {
                // An old worker that died while waiting its turn is restarted
                // like any crash (and that restart is queued).
                reload.queue.retain(|id| *id != worker.id);
                false
            }
        }
    }

    /// A worker missed its ready deadline (and was killed).
    pub(crate) fn reload_on_failure(&mut self, id: WorkerId, why: String) {
        let Some(reload) = self.reload.as_ref() else {
            return;
        };
        if matches!(reload.step, Step::Starting { new, .. } if new == id) {
            self.finish_reload(Some(why));
        }
    }

    /// Ends the running reload (`failure` says why it failed), then starts
    /// the queued one, if any.
    fn finish_reload(&mut self, failure: Option<String>) {
        let Some(mut reload) = self.reload.take() else {
            return;
        };
        if let Some(b) = reload.build.take() {
            b.kill();
            self.build_clock.send_replace(BuildClock { running: false, ended: Some(Instant::now()) });
        }
        if let Step::Starting { new, .. } = reload.step {
            // Its slot is still served by the old worker: no replacement.
            if let Some(w) = self.workers.get_mut(&new) {
                w.respawn = false;
                w.kill();
            }
        }
        let duration_ms = reload.started.elapsed().as_millis() as u64;
        let (ok, message) = match failure {
            None => {
                self.serving_generation = reload.generation;
                self.settings = reload.settings.clone();
                self.slots.truncate(self.settings.workers as usize);
                (true, format!("generation {} serves ({} workers replaced)", reload.generation, reload.replaced))
            }
            Some(why) => (
                false,
                format!(
                    "failed after replacing {} workers: {why}; the remaining workers of the previous generation keep serving",
                    reload.replaced
                ),
            ),
        };
        if ok {
            tracing::info!("reload to generation {} finished in {duration_ms} ms: {message}", reload.generation);
        } else {
            tracing::error!("reload to generation {} {message}", reload.generation);
        }
        for s in reload.subscribers.drain(..) {
            let reply =
                if ok { Reply::Done { message: message.clone() } } else { Reply::Error { error: message.clone() } };
            let _ = s.send(reply);
        }
        let mut ev = LifecycleEvent::new(if ok { "reload-finished" } else { "reload-failed" });
        ev.generation = Some(reload.generation);
        ev.message = Some(message.clone());
        self.watchers.emit(ev);
        self.last_reload =
            Some(ReloadOutcome { generation: reload.generation, ok, message, duration_ms, finished_at: unix_now() });
        match self.queued.take() {
            Some((subscribers, no_build)) => self.start_reload(subscribers, no_build),
            None => {
                // Finished, failed or not: systemd waits for READY=1.
                self.announced = true;
                self.notifier.ready(&self.status_line());
            }
        }
    }

    /// Fails the running and the queued reload (the primary is stopping).
    pub(crate) fn cancel_reloads(&mut self, why: &str) {
        for s in self.queued.take().map(|q| q.0).into_iter().flatten() {
            let _ = s.send(Reply::Error { error: format!("cancelled: {why}") });
        }
        if self.reload.is_some() {
            self.finish_reload(Some(format!("cancelled: {why}")));
        }
    }
}
