//! The worker pool: starting workers into slots, marking them ready, asking
//! them to stop, their deadlines, and what they say over IPC and their
//! notify sockets.

use std::rc::Rc;

use anyhow::Result;

use super::Supervisor;
use crate::io::ipc::to_worker;
use crate::options::{ReadyMode, Settings};
use crate::types::event::{FromWorker, Notification};
use crate::types::{Killed, ReadyVia, Timer, WorkerId, WorkerState};

/// When a starting worker that is not ready yet gets a log line saying why.
const HINT_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// When a starting worker is said to be not ready yet: at a sixth of its
/// `--ready-timeout`, at least [`HINT_AFTER`] (5 s under the default 30 s).
/// A user who gave a JVM server 90 s knows it starts slowly: a warning at
/// 5 s would come on every start.
fn hint_after(ready_timeout: std::time::Duration) -> std::time::Duration {
    (ready_timeout / 6).max(HINT_AFTER)
}

impl Supervisor {
    /// Starts a worker in `slot` with `settings` and arms its deadlines.
    pub(super) fn spawn(&mut self, slot: usize, generation: u64, settings: &Rc<Settings>) -> Result<WorkerId> {
        // Workers load code from it (the preloads): never from a directory
        // that is not the one this primary made.
        if let Some(what) = self.given.runtime.ensure()? {
            tracing::warn!("{what}");
        }
        // An id is used up only by a worker that started.
        let id = self.life.next_id();
        let warm = self.warmup_nice(settings);
        let worker = super::worker::Launcher { warm, ..self.launcher(settings) }.start(id, slot, generation)?;
        self.life.id_used();
        tracing::info!(
            worker = id,
            pid = worker.pid().as_raw(),
            generation,
            "{} started (slot {slot})",
            worker.label()
        );
        self.io.guardian.protect(worker.pid());
        self.io.subscribers.worker_event("fork", &worker);
        self.io.subscribers.worker_event("online", &worker);
        self.workers.insert(id, worker);
        self.primary_worker_started(id);
        self.worker_timer(id, settings.ready_timeout, Timer::Ready(id));
        if settings.ready_timeout > HINT_AFTER * 2 && !matches!(settings.ready, ReadyMode::None | ReadyMode::Delay(_)) {
            self.worker_timer(id, hint_after(settings.ready_timeout), Timer::ReadyHint(id));
        }
        match settings.ready {
            ReadyMode::None => self.mark_ready(id, ReadyVia::Assumed),
            ReadyMode::Delay(d) => self.worker_timer(id, d, Timer::AssumeReady(id)),
            _ => self.watch_accepts(id),
        }
        Ok(id)
    }

    /// Tells a worker to shut down and arms its kill deadline.
    pub(super) fn shut_down(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else { return };
        if w.state() == WorkerState::Stopping || self.defer_shutdown(id) {
            return;
        }
        self.send_shutdown(id);
    }

    /// Tells a worker to shut down now, whatever its state (once the rescue
    /// has copied its connections: [`super::rescue`]).
    pub(super) fn send_shutdown(&mut self, id: WorkerId) {
        if self.quiesce_first(id) || self.rescue_first(id) {
            return;
        }
        self.tell_shutdown(id);
    }

    /// Tells a worker to shut down, now.
    pub(super) fn tell_shutdown(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        let via_ipc = w.shutdown();
        // `disconnect` once, when its channel closes: here for a worker
        // whose channel the shutdown closes; for a Node worker (which
        // closes it itself once drained) when that is heard, or at its exit.
        let closed = w.disconnect_news(false);
        // A worker stopped while quiesced gets its signal stopped: it dies
        // as it goes on, without having run again.
        let pgid = w.pid().as_raw();
        if self.quiescing.frozen(id) {
            self.quiescing.gone(id);
            super::quiesce::thaw(pgid);
        }
        let Some(w) = self.workers.get(&id) else { return };
        let how = match (via_ipc, w.node().is_some()) {
            (true, true) => "Node cluster disconnect sent".to_string(),
            (true, false) => "shutdown sent".to_string(),
            (false, _) => format!("{} sent", w.settings().stop_signal),
        };
        tracing::info!(
            worker = id,
            pid = w.pid().as_raw(),
            generation = w.generation(),
            "{} stopping ({how})",
            w.label()
        );
        let deadlines = super::core::stop::deadlines(id, w.settings().shutdown_timeout, w.node().is_some());
        if closed {
            self.io.subscribers.worker_event("disconnect", &self.workers[&id]);
            self.tell_primary(crate::node::primary::to_primary::disconnect(id));
        }
        for (after, timer) in deadlines {
            self.worker_timer(id, after, timer);
        }
    }

    /// A worker is ready to serve; a reload waiting for it moves on.
    pub(super) fn mark_ready(&mut self, id: WorkerId, via: ReadyVia) {
        let Some(worker) = self.workers.get_mut(&id) else { return };
        if matches!(via, ReadyVia::Ipc | ReadyVia::Notify | ReadyVia::Cluster) {
            self.looks.announcers.learn(&worker.settings().command, via);
        }
        if self.check_health_first(id, via) {
            return;
        }
        let Some(worker) = self.workers.get_mut(&id) else { return };
        let Some(started) = worker.mark_ready(via) else { return };
        self.life.a_worker_was_ready();
        self.metrics.counters.startup_seconds.observe(worker.age().as_secs_f64());
        let warm = started.warm;
        if let Some((warm, original)) = warm {
            self.end_warmup(id, warm, original);
        }
        let Some(worker) = self.workers.get(&id) else { return };
        tracing::info!(
            worker = id,
            pid = worker.pid().as_raw(),
            generation = worker.generation(),
            "{} ready in {} ms ({via})",
            worker.label(),
            worker.age().as_millis()
        );
        self.io.subscribers.worker_event("listening", &self.workers[&id]);
        self.reload_on_ready(id);
        if !self.life.systemd_told_ready()
            && self.reloads.running.is_none()
            && self.ready_count() >= self.settings.workers as usize
        {
            self.life.systemd_was_told_ready();
            self.io.systemd.ready(&self.status_line());
        } else {
            self.notify_status();
        }
    }

    pub(super) fn on_ipc(&mut self, id: WorkerId, msg: FromWorker) {
        let Some(worker) = self.workers.get_mut(&id) else {
            // Read after its exit was reaped (its channel's reader lags
            // behind under load): the app's primary still gets it.
            if let FromWorker::Other(v) = msg {
                self.tell_primary(crate::node::primary::to_primary::message(id, v));
            }
            return;
        };
        if let FromWorker::Preload(patch) = msg {
            // hotswap's preload, not the app: the worker has not spoken.
            if worker.preload_patch(patch.clone()) {
                if patch.ok {
                    tracing::debug!(worker = id, "{}: the preload patched {}", worker.label(), patch.patch);
                } else if let Some(why) = &patch.skipped {
                    tracing::debug!(worker = id, "{}: the preload left out {}: {why}", worker.label(), patch.patch);
                } else {
                    tracing::warn!(
                        worker = id,
                        "{}: the preload could not patch {} ({}): its server's own stop may lose requests caught \
                         on keep-alive connections (rescue, on by default, answers those)",
                        worker.label(),
                        patch.patch,
                        patch.error.as_deref().unwrap_or("did not apply")
                    );
                }
            }
            return;
        }
        worker.spoke();
        let worker = &self.workers[&id];
        match msg {
            FromWorker::Cluster(v) => self.on_cluster(id, v),
            // Handled by the channel itself.
            FromWorker::HandleAck { .. } => {}
            FromWorker::Listening => {
                if worker.settings().ready.uses_ipc() {
                    self.mark_ready(id, ReadyVia::Ipc);
                } else {
                    tracing::debug!(
                        worker = id,
                        "{} sent listening; readiness mode is {}",
                        worker.label(),
                        worker.settings().ready
                    );
                }
            }
            FromWorker::Broadcast { data } => {
                for other in self.workers.values().filter(|w| w.id() != id) {
                    if let Some(ch) = other.ipc() {
                        ch.send(to_worker::broadcast(id, data.clone()));
                    }
                }
            }
            FromWorker::Send { to, data } => {
                let delivered =
                    self.workers.get(&to).and_then(|w| w.ipc()).is_some_and(|ch| ch.send(to_worker::send(id, data)));
                if !delivered {
                    if let Some(ch) = worker.ipc() {
                        ch.send(to_worker::error(&format!("no worker {to} to send to")));
                    }
                }
            }
            // The channel turns these into `Event::IpcHandle`.
            FromWorker::NodeHandle(_) => {}
            FromWorker::Preload(_) => {}
            FromWorker::Other(v) if self.app_primary.child.is_some() => {
                self.tell_primary(crate::node::primary::to_primary::message(id, v));
            }
            FromWorker::Other(v) => {
                let mut text = v.to_string();
                text.truncate(200);
                tracing::debug!(worker = id, "{} sent an unhandled message: {text}", worker.label());
            }
        }
    }

    pub(super) fn on_ipc_closed(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        tracing::debug!(worker = id, "{} IPC channel closed", w.label());
        // From now on it is asked to stop with --stop-signal.
        w.disconnected();
        if w.disconnect_news(false) {
            self.io.subscribers.worker_event("disconnect", &self.workers[&id]);
            self.tell_primary(crate::node::primary::to_primary::disconnect(id));
        }
        self.after_disconnect(id);
    }

    pub(super) fn on_notify(&mut self, id: WorkerId, note: Notification) {
        let Some(worker) = self.workers.get_mut(&id) else { return };
        worker.notified();
        match note {
            Notification::Ready => self.on_ready_1(id),
            Notification::Status(s) => tracing::info!(worker = id, "{} status: {s}", worker.label()),
            Notification::Stopping => tracing::info!(worker = id, "{} says it is stopping", worker.label()),
        }
    }

    /// A starting worker's ready deadline passed.
    pub(super) fn on_ready_deadline(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        if w.state() != WorkerState::Starting {
            return;
        }
        let why = format!(
            "{} was not ready within {}: {}",
            w.label(),
            humantime::format_duration(w.settings().ready_timeout),
            w.diagnosis_quoting()
        );
        tracing::error!(worker = id, "{why}; killing it");
        w.kill_not_ready(why.clone(), Killed::ReadyTimeout);
        self.reload_on_not_ready(id, why);
    }

    /// A worker has been starting for a while: say what it waits for.
    pub(super) fn on_ready_hint(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else { return };
        if w.state() == WorkerState::Starting {
            let hint = format!(
                "{} not ready after {} s: {} (it is killed at --ready-timeout {})",
                w.label(),
                hint_after(w.settings().ready_timeout).as_secs(),
                w.diagnosis_quoting(),
                humantime::format_duration(w.settings().ready_timeout)
            );
            tracing::warn!(worker = id, "{hint}");
            if let Some(reload) = self.reloads.running.as_mut() {
                reload.note_about(id, format!("waiting: {hint}"));
            }
        }
    }

    /// A stopping worker's drain deadline passed.
    pub(super) fn on_shutdown_deadline(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        if super::core::stop::kill_at_deadline(w.state(), w.killed()) {
            tracing::warn!(
                worker = id,
                "{} did not exit within {} of shutdown; killing it",
                w.label(),
                humantime::format_duration(w.settings().shutdown_timeout)
            );
            w.kill(Killed::ShutdownTimeout);
            if let Some(stop) = self.stop.as_mut() {
                stop.killed += 1;
            }
        }
    }

    /// A slot's crash backoff is over: start a worker in it again. A start
    /// that fails counts as a crash (the backoff doubles, so a command that
    /// is gone costs a few attempts a minute, not a busy loop) and each
    /// distinct error is logged once; the slot fills by itself once the
    /// command can start again, and that line says how many attempts failed.
    pub(super) fn respawn(&mut self, slot: usize) {
        if self.stop.is_some()
            || slot >= self.settings.workers as usize
            || self.workers.values().any(|w| w.slot() == slot && w.state() != WorkerState::Stopping)
        {
            return;
        }
        let settings = self.settings.clone();
        match self.spawn(slot, self.reloads.serving_generation, &settings) {
            Ok(id) => {
                self.metrics.counters.restarts_crash += 1;
                if let Some(failed) = self.crash_history[slot].restarted() {
                    tracing::info!(
                        worker = id,
                        "slot {slot} started again after {} failed attempt{} ({})",
                        failed.times,
                        if failed.times == 1 { "" } else { "s" },
                        failed.error
                    );
                }
                // A reload in progress replaces it too.
                self.reload_enqueue(id)
            }
            Err(e) => {
                let error = format!("{e:#}");
                self.metrics.counters.start_failures += 1;
                let retry = self.crash_history[slot].start_failed(&error, std::time::Instant::now());
                if let Some(ended) = retry.ended {
                    tracing::warn!("slot {slot}: {} attempts failed with: {}", ended.times, ended.error);
                }
                if retry.new_error {
                    tracing::error!(
                        "cannot restart slot {slot}: {error}; retrying in {} ms, then ever later (up to {} s); \
                         the same error again is counted, not logged",
                        retry.delay.as_millis(),
                        super::backoff::BACKOFF_MAX.as_secs()
                    );
                } else {
                    tracing::debug!("cannot restart slot {slot} (again): {error}");
                }
                let mut ev = crate::types::wire::LifecycleEvent::new("start-failed");
                ev.generation = Some(self.reloads.serving_generation);
                ev.message = Some(format!("slot {slot}: {error}"));
                self.io.subscribers.emit(ev);
                self.after(retry.delay, Timer::Respawn(slot));
            }
        }
    }

    /// SIGKILL to every worker (`why`), the app's own primary and adopted
    /// processes.
    pub(super) fn kill_all(&mut self, why: Killed) {
        for w in self.workers.values_mut() {
            w.kill(why);
        }
        if let Some(p) = self.app_primary.child.as_mut() {
            p.kill(why);
        }
        self.kill_orphans(true);
    }

    pub(super) fn ready_count(&self) -> usize {
        self.workers.values().filter(|w| w.state() == WorkerState::Ready).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_not_ready_hint_comes_at_a_sixth_of_the_ready_timeout_and_not_before_5_s() {
        assert_eq!(hint_after(Duration::from_secs(30)), Duration::from_secs(5), "the default");
        assert_eq!(hint_after(Duration::from_secs(12)), Duration::from_secs(5));
        assert_eq!(hint_after(Duration::from_secs(90)), Duration::from_secs(15), "a JVM server's 90 s");
    }
}
