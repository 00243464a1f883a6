//! The app's own cluster primary ([`crate::node::primary`]): one
//! long-lived child running a Node.js cluster app's `cluster.isPrimary`
//! branch, whose `cluster.fork()` calls are answered with hotswap's
//! workers. hotswap tells it what Node's primary would see of them and
//! carries their messages both ways; reloads replace the workers, never
//! the primary (which keeps its state). It is started after the first
//! generation (so it knows their ids and pids at once), restarted a second
//! after it exits, and stopped once the last worker is gone.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use serde_json::Value;

use super::worker::Worker;
use super::Supervisor;
use crate::node::primary::{self, to_primary, FromPrimary};
use crate::options::NodeMode;
use crate::types::{Exit, Killed, Timer, WorkerId, WorkerState};

/// How long after its exit the app's primary is started again.
pub const RESTART_AFTER: Duration = Duration::from_secs(1);

/// The app's primary, if the app has one.
#[derive(Debug, Default)]
pub struct AppPrimary {
    /// Whether the app has a primary branch to run (`--node-primary`).
    pub enabled: bool,
    /// The running child (a [`Worker`] for its pid, output and channel; it
    /// is in no slot and never in the pool).
    pub child: Option<Worker>,
    /// Stopping it was asked (hotswap stops, or `reload --primary`).
    pub stopping: bool,
    /// Turns through the ready workers for handles whose worker is leaving.
    pub handle_turn: usize,
}

impl AppPrimary {
    pub fn id(&self) -> Option<WorkerId> {
        self.child.as_ref().map(Worker::id)
    }
}

/// Whether the app of `settings` runs its own primary: `--node-primary
/// on`, or `auto` for a Node command whose script is a cluster app.
pub fn wanted(settings: &crate::options::Settings, node: bool) -> bool {
    match settings.node_primary {
        NodeMode::Off => false,
        NodeMode::On => node,
        NodeMode::Auto => {
            let cwd = settings.cwd.clone().unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
            node && primary::is_cluster_app(&settings.command, &cwd)
        }
    }
}

impl Supervisor {
    /// Starts the app's primary, if it has one, with the workers now live.
    pub(super) fn start_app_primary(&mut self) {
        if !self.app_primary.enabled || self.app_primary.child.is_some() || self.stop.is_some() {
            return;
        }
        let live: Vec<(WorkerId, i32)> = self
            .workers
            .values()
            .filter(|w| w.state() != WorkerState::Stopping)
            .map(|w| (w.id(), w.pid().as_raw()))
            .collect();
        let id = self.life.next_id();
        let settings = self.settings.clone();
        match self.launcher(&settings).start_primary(id, &primary::workers_env(&live)) {
            Ok(child) => {
                self.life.id_used();
                self.io.guardian.protect(child.pid());
                tracing::info!(
                    pid = child.pid().as_raw(),
                    "the app's own cluster primary started (pid {}): its cluster.fork() gets hotswap's {} workers",
                    child.pid(),
                    live.len()
                );
                self.app_primary.child = Some(child);
                self.app_primary.stopping = false;
            }
            Err(e) => {
                tracing::error!("cannot start the app's cluster primary: {e:#}; retrying in {RESTART_AFTER:?}");
                self.after(RESTART_AFTER, Timer::AppPrimary);
            }
        }
    }

    pub(super) fn is_app_primary(&self, id: WorkerId) -> bool {
        self.app_primary.id() == Some(id)
    }

    pub(super) fn app_primary_pid(&self) -> Option<nix::unistd::Pid> {
        self.app_primary.child.as_ref().map(Worker::pid)
    }

    /// Queues `msg` for the app's primary, if it runs.
    pub(super) fn tell_primary(&self, msg: Value) {
        if let Some(ch) = self.app_primary.child.as_ref().and_then(Worker::ipc) {
            ch.send(msg);
        }
    }

    /// A worker started: the primary hears of it (`replaces`: the worker
    /// of the same slot still there, which it takes over from).
    pub(super) fn primary_worker_started(&self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else { return };
        let replaces = self.workers.values().find(|o| o.slot() == w.slot() && o.id() != id).map(Worker::id);
        self.tell_primary(to_primary::started(id, w.pid().as_raw(), replaces));
    }

    /// A worker exited; `retired`: on purpose (Node's
    /// `exitedAfterDisconnect`).
    pub(super) fn primary_worker_exited(&self, id: WorkerId, how: Exit, retired: bool) {
        let (code, signal) = match how {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s.as_str())),
        };
        self.tell_primary(to_primary::exit(id, code, signal, retired));
    }

    /// What the app's primary said.
    pub(super) fn on_primary_ipc(&mut self, msg: crate::types::event::FromWorker) {
        use crate::types::event::FromWorker;
        let FromWorker::Other(v) = msg else { return };
        match primary::parse(&v) {
            Ok(None) => tracing::debug!("the app's cluster primary sent a message of its own; ignored"),
            Err(why) => tracing::warn!("the app's cluster primary sent a message hotswap cannot use: {why}"),
            Ok(Some(FromPrimary::Send { to, data })) => {
                let sent = self.workers.get(&to).and_then(Worker::ipc).is_some_and(|ch| ch.send(data));
                if !sent {
                    tracing::debug!(worker = to, "the app's primary sent to worker {to}, which is gone or not reading");
                }
            }
            Ok(Some(FromPrimary::Retire { id })) => {
                let Some(w) = self.workers.get(&id) else { return };
                if w.state() == WorkerState::Stopping || self.stop.is_some() {
                    return;
                }
                let slot = w.slot();
                tracing::info!(
                    worker = id,
                    "the app's primary retires {} (worker.disconnect() or kill()); its slot gets a new worker",
                    w.label()
                );
                self.shut_down(id);
                self.respawn(slot);
            }
            Ok(Some(FromPrimary::Warn { text })) => tracing::warn!("{text}"),
            Ok(Some(FromPrimary::Listen(q))) => self.serve_primary_listen(q),
        }
    }

    /// A `server.listen()` of the app's primary: answered with the socket
    /// a worker's listen on the same address gets (a `--listen` one, or one
    /// bound on demand and kept while the primary holds it), so the
    /// primary serves on hotswap's socket through every reload.
    fn serve_primary_listen(&mut self, q: crate::node::cluster::Query) {
        let Some(id) = self.app_primary.id() else { return };
        let found = self.socket_for(id, &q);
        let Some(ch) = self.app_primary.child.as_ref().and_then(Worker::ipc) else { return };
        match found {
            Ok((fd, name)) => {
                tracing::info!("the app's cluster primary listens on {}: it gets {name}", q.target);
                let reply = to_primary::handle_for_worker(&"net.Native".into(), to_primary::listen_reply(q.seq, 0));
                if !ch.send_handle(reply, fd) {
                    self.sockets.on_demand.forget(id, Some(&q.key));
                    ch.send(to_primary::listen_reply(q.seq, libc::EMFILE));
                }
            }
            Err((errno, why)) => {
                tracing::error!(
                    "the app's cluster primary cannot listen on {}: {why}; its server gets the error",
                    q.target
                );
                ch.send(to_primary::listen_reply(q.seq, errno));
            }
        }
    }

    /// A handle a Node process passed. The app's primary's
    /// `worker.send(msg, socket)` (sticky's `setupMaster` hands each
    /// connection over so) goes to that worker as Node's primary would
    /// send it; a worker's is not carried (closed).
    pub(super) fn on_ipc_handle(&mut self, from: WorkerId, msg: Value, fd: std::os::fd::OwnedFd) {
        if !self.is_app_primary(from) {
            let label = self.workers.get(&from).map(Worker::label).unwrap_or_default();
            // Said once per primary: a worker passing handles in a loop
            // must not flood the log (tests/it/flow.rs).
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::debug!(worker = from, "{label} passed another handle: closed");
            } else {
                tracing::warn!(
                    worker = from,
                    "{label} IPC: the worker tried to send a handle; hotswap carries only the app's cluster \
                     primary's handles: closed (said once; later ones at debug level)"
                );
            }
            return;
        }
        let (to, data) = match primary::parse(&msg["msg"]) {
            Ok(Some(FromPrimary::Send { to, data })) => (to, data),
            other => {
                tracing::warn!("the app's cluster primary passed a handle hotswap cannot use ({other:?}): closed");
                return;
            }
        };
        // A worker that is leaving (hotswap told it to go; the primary
        // hears of it only once its channel closes) may close its channel
        // before it reads the handle, and the connection would be lost: a
        // ready worker gets it instead.
        let serving = |w: &&Worker| w.state() != WorkerState::Stopping && w.ipc().is_some();
        self.app_primary.handle_turn = self.app_primary.handle_turn.wrapping_add(1);
        let turn = self.app_primary.handle_turn;
        let target = match self.workers.get(&to).filter(serving) {
            Some(w) => Some(w),
            None => {
                let ready: Vec<&Worker> =
                    self.workers.values().filter(|w| w.state() == WorkerState::Ready && w.ipc().is_some()).collect();
                let pick = (!ready.is_empty()).then(|| ready[turn % ready.len()]);
                if let Some(w) = pick {
                    tracing::debug!(worker = to, "a handle for worker {to}, which is leaving, goes to {}", w.label());
                }
                pick
            }
        };
        let sent = target
            .and_then(Worker::ipc)
            .is_some_and(|ch| ch.send_handle(to_primary::handle_for_worker(&msg["type"], data), fd));
        if !sent {
            tracing::warn!(
                worker = to,
                "the app's primary passed a handle to worker {to}, and no worker can take it: closed"
            );
        }
    }

    /// Whether `pid` was the app's primary; if so its exit is dealt with.
    pub(super) fn app_primary_exited(&mut self, pid: nix::unistd::Pid, how: Exit) -> bool {
        if self.app_primary_pid() != Some(pid) {
            return false;
        }
        let Some(child) = self.app_primary.child.take() else { return false };
        self.sockets.on_demand.forget(child.id(), None);
        // Its kill deadline must not reach the next primary.
        self.timers.cancel_worker(child.id());
        self.io.guardian.release(pid);
        let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
        if self.stop.is_some() {
            tracing::info!("the app's cluster primary (pid {pid}) {how}");
            self.finish_stop_if_done();
        } else if self.app_primary.stopping {
            tracing::info!("the app's cluster primary (pid {pid}) {how}; starting its new one");
            self.start_app_primary();
        } else {
            tracing::warn!(
                "the app's cluster primary (pid {pid}) {how}; the workers go on; starting it again in {RESTART_AFTER:?}"
            );
            self.after(RESTART_AFTER, Timer::AppPrimary);
        }
        true
    }

    /// Asks the app's primary to go: its channel closes (the preload exits
    /// on that), SIGKILL at `--shutdown-timeout`. True while it runs.
    pub(super) fn stop_app_primary(&mut self) -> bool {
        let timeout = self.settings.shutdown_timeout;
        let Some(child) = self.app_primary.child.as_mut() else { return false };
        if !self.app_primary.stopping {
            self.app_primary.stopping = true;
            child.disconnected();
            let _ = kill(child.pid(), self.settings.stop_signal);
            let id = child.id();
            self.arm(timeout, Timer::AppPrimaryKill, Some(id));
        }
        true
    }

    pub(super) fn on_app_primary_kill_deadline(&mut self) {
        if let Some(child) = self.app_primary.child.as_mut() {
            tracing::warn!("the app's cluster primary (pid {}) did not exit in time; killing it", child.pid());
            child.kill(Killed::ShutdownTimeout);
        }
    }
}
