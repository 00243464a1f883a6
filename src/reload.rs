//! The rolling reload: replace every worker, one at a time, without ever
//! dropping below N serving workers.
//!
//! For each old worker in turn: start a new-generation worker in its slot,
//! wait for its `listening`, then shut the old one down and wait for it to
//! exit. If the new worker dies or misses `--ready-timeout`, the reload stops
//! right there: the new worker is killed and the old ones still running keep
//! serving. A reload asked for while one runs is queued; further requests
//! join the queued one.

use std::collections::VecDeque;
use std::time::Instant;

use crate::control::{Reply, ReplyTx};
use crate::status::ReloadOutcome;
use crate::supervisor::{unix_now, Exit, Supervisor};
use crate::worker::{Worker, WorkerId, WorkerState};

#[derive(Debug)]
pub struct Reload {
    pub generation: u64,
    started: Instant,
    /// Old workers still to be replaced, oldest first.
    queue: VecDeque<WorkerId>,
    step: Step,
    replaced: u32,
    subscribers: Vec<ReplyTx>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// `new` is starting to replace `old`.
    Starting { new: WorkerId, old: WorkerId, since: Instant },
    /// `new` is ready; `old` has been told to shut down.
    Draining { new: WorkerId, old: WorkerId, since: Instant },
    Idle,
}

impl Reload {
    fn tell(&mut self, message: String) {
        tracing::info!("reload to generation {}: {message}", self.generation);
        self.subscribers.retain(|s| s.send(Reply::Progress { message: message.clone() }).is_ok());
    }
}

impl Supervisor {
    /// A reload request from SIGHUP (`None`) or a control client.
    pub(crate) fn request_reload(&mut self, subscriber: Option<ReplyTx>) {
        if self.reload.is_some() {
            let queued = self.queued.get_or_insert_with(Vec::new);
            if let Some(s) = subscriber {
                let _ = s.send(Reply::Progress { message: "a reload is running; this one is queued behind it".into() });
                queued.push(s);
            }
            tracing::info!("reload queued behind the running one");
            return;
        }
        self.start_reload(subscriber.into_iter().collect());
    }

    fn start_reload(&mut self, subscribers: Vec<ReplyTx>) {
        let generation = self.newest_generation + 1;
        self.newest_generation = generation;
        let queue: VecDeque<WorkerId> =
            self.workers.values().filter(|w| w.state != WorkerState::Stopping).map(|w| w.id).collect();
        let mut reload = Reload { generation, started: Instant::now(), queue, step: Step::Idle, replaced: 0, subscribers };
        reload.tell(format!("started: replacing {} workers", reload.queue.len()));
        self.reload = Some(reload);
        self.reload_next();
    }

    /// Starts the replacement of the next old worker, or finishes.
    fn reload_next(&mut self) {
        let Some(reload) = self.reload.as_mut() else { return };
        reload.step = Step::Idle;
        let next = loop {
            match reload.queue.pop_front() {
                None => break None,
                Some(id) => match self.workers.get(&id) {
                    Some(w) if w.state != WorkerState::Stopping => break Some((id, w.slot)),
                    _ => continue,
                },
            }
        };
        let Some((old, slot)) = next else {
            self.finish_reload(None);
            return;
        };
        let generation = reload.generation;
        match self.spawn(slot, generation) {
            Ok(new) => {
                let r = self.reload.as_mut().expect("reload in progress");
                r.step = Step::Starting { new, old, since: Instant::now() };
            }
            Err(e) => self.finish_reload(Some(format!("cannot start a new worker: {e:#}"))),
        }
    }

    /// A worker reported ready; if it is the one the reload waits for, the
    /// old worker it replaces is shut down.
    pub(crate) fn reload_on_ready(&mut self, id: WorkerId) {
        let Some(reload) = self.reload.as_mut() else { return };
        let Step::Starting { new, old, since } = reload.step else { return };
        if new != id {
            return;
        }
        reload.step = Step::Draining { new, old, since };
        self.shut_down(old);
    }

    /// A worker exited. True when the reload accounts for it, so the
    /// supervisor must not treat it as a crash.
    pub(crate) fn reload_on_exit(&mut self, worker: &Worker, how: Exit) -> bool {
        let Some(reload) = self.reload.as_mut() else { return false };
        match reload.step {
            Step::Starting { new, .. } if new == worker.id => {
                let why = format!("new worker {} {how} before it was ready", worker.label());
                self.finish_reload(Some(why));
                true
            }
            Step::Draining { new, old, since } if old == worker.id => {
                reload.replaced += 1;
                let label = self.workers.get(&new).map_or_else(|| format!("w{new}"), Worker::label);
                reload.tell(format!(
                    "replaced {} with {label} in {} ms",
                    worker.label(),
                    since.elapsed().as_millis()
                ));
                self.reload_next();
                true
            }
            _ => {
                // An old worker that died while waiting its turn is restarted
                // like any crash, in the new generation.
                reload.queue.retain(|id| *id != worker.id);
                false
            }
        }
    }

    /// A worker missed its ready deadline (and was killed).
    pub(crate) fn reload_on_failure(&mut self, id: WorkerId, why: String) {
        let Some(reload) = self.reload.as_ref() else { return };
        if matches!(reload.step, Step::Starting { new, .. } if new == id) {
            self.finish_reload(Some(why));
        }
    }

    /// Ends the running reload (`failure` says why it failed), then starts
    /// the queued one, if any.
    fn finish_reload(&mut self, failure: Option<String>) {
        let Some(mut reload) = self.reload.take() else { return };
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
            let reply = if ok { Reply::Done { message: message.clone() } } else { Reply::Error { error: message.clone() } };
            let _ = s.send(reply);
        }
        self.last_reload =
            Some(ReloadOutcome { generation: reload.generation, ok, message, duration_ms, finished_at: unix_now() });
        if let Some(subscribers) = self.queued.take() {
            self.start_reload(subscribers);
        }
    }

    /// Fails the running and the queued reload (the primary is stopping).
    pub(crate) fn cancel_reloads(&mut self, why: &str) {
        for s in self.queued.take().into_iter().flatten() {
            let _ = s.send(Reply::Error { error: format!("cancelled: {why}") });
        }
        if self.reload.is_some() {
            self.finish_reload(Some(format!("cancelled: {why}")));
        }
    }
}
