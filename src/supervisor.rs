//! The primary's event loop: the one owner of all supervisor state.
//!
//! Workers, slots, generations, listeners, the reload in progress and the
//! stop in progress live in [`Supervisor`], touched only by
//! [`Supervisor::handle`]. Everything else (signals, the control socket, IPC
//! channels, notify sockets, timers) sends it an [`Event`] over one channel.
//! Child exits arrive as SIGCHLD and are reaped in one place, by pid
//! ([`crate::exits`]), so no status is ever lost or stolen.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::cli::RunArgs;
use crate::config::{ReadyMode, Settings};
use crate::control::{Reply, ReplyTx, Request};
use crate::events::{LifecycleEvent, Watchers};
use crate::guardian::Guardian;
use crate::ipc::{to_worker, FromWorker};
use crate::listeners::Listener;
use crate::notify::Notifier;
use crate::notify_socket::Notification;
use crate::output::Output;
use crate::reload::Reload;
use crate::status::ReloadOutcome;
use crate::worker::{Launcher, ReadyVia, Worker, WorkerId, WorkerState};

/// Everything that can happen to the supervisor.
#[derive(Debug)]
pub enum Event {
    Signal(i32),
    Control {
        request: Request,
        reply: ReplyTx,
        /// A copy of the client's connection, for requests whose answers
        /// outlive a self-upgrade (`upgrade`, `events`).
        conn: Option<std::os::fd::OwnedFd>,
    },
    Ipc {
        worker: WorkerId,
        msg: FromWorker,
    },
    IpcClosed {
        worker: WorkerId,
    },
    Notify {
        worker: WorkerId,
        note: Notification,
    },
    /// Watched files changed (one debounced burst).
    Watch {
        paths: Vec<PathBuf>,
    },
    /// The new binary answered `upgrade-check` (its version) or failed.
    UpgradeChecked {
        pid: i32,
        result: std::result::Result<String, String>,
    },
    Timer(Timer),
}

/// Deadlines; each checks on arrival whether it still applies.
#[derive(Debug, Clone, Copy)]
pub enum Timer {
    /// A starting worker must be ready by now.
    Ready(WorkerId),
    /// `--ready delay:DUR` has passed for this worker.
    AssumeReady(WorkerId),
    /// A stopping worker must have exited by now.
    Shutdown(WorkerId),
    /// Start a worker in this slot again after a crash.
    Respawn(usize),
    /// Time for `WATCHDOG=1`.
    Watchdog,
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub enum Exit {
    Code(i32),
    Signal(nix::sys::signal::Signal),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => write!(f, "was killed by {s}"),
        }
    }
}

/// One of the N places a worker fills, with its crash history.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) restarts: u32,
    /// Crashes in a row (a worker that lived long resets it).
    pub(crate) streak: u32,
    /// When the next start after a crash is due, while backing off.
    pub(crate) retry_at: Option<Instant>,
}

pub struct Supervisor {
    /// The flags `hotswap run` was given, to resolve the config file again.
    pub(crate) args: RunArgs,
    /// The serving generation's settings.
    pub(crate) settings: Rc<Settings>,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) control: crate::control::Server,
    pub(crate) origin: Origin,
    pub(crate) base_env: Vec<(OsString, OsString)>,
    pub(crate) runtime_dir: PathBuf,
    pub(crate) output: Output,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) guardian: Guardian,
    pub(crate) notifier: Notifier,
    pub(crate) watchers: Watchers,
    pub(crate) workers: BTreeMap<WorkerId, Worker>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) next_id: WorkerId,
    /// The newest generation number handed out.
    pub(crate) newest_generation: u64,
    /// The generation that serves: 1, or the last reload that succeeded.
    pub(crate) serving_generation: u64,
    pub(crate) reload: Option<Reload>,
    /// The reload queued behind the running one, if any: its subscribers,
    /// and whether all of them asked to skip the build.
    pub(crate) queued: Option<(Vec<ReplyTx>, bool)>,
    /// Tells the watcher whether a build runs (its writes do not count).
    pub(crate) build_clock: tokio::sync::watch::Sender<crate::watch::BuildClock>,
    /// Children whose exit someone else waits for (tokio's), never reaped here.
    pub(crate) foreign: std::collections::HashSet<i32>,
    pub(crate) last_reload: Option<ReloadOutcome>,
    pub(crate) stop: Option<crate::stop::Stop>,
    /// Whether any worker has ever been ready: before that, a failing worker
    /// means the command cannot start at all, and the primary gives up.
    pub(crate) ever_ready: bool,
    /// Whether `READY=1` went to systemd for the first generation.
    pub(crate) announced: bool,
    pub(crate) started: Instant,
    /// When the primary first started (Unix seconds), across upgrades.
    pub(crate) started_at: u64,
    /// When this binary image started.
    pub(crate) image_started_at: u64,
    pub(crate) upgrades: u32,
    /// A self-upgrade waiting for its check of the new binary.
    pub(crate) upgrade: Option<crate::upgrade::Pending>,
    /// Set when the loop should end, with the process exit code.
    pub(crate) exit: Option<(i32, String)>,
}

/// Where this primary came from: what a self-upgrade re-executes.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The binary's path as given at start (it may be replaced on disk).
    pub exe: PathBuf,
    pub argv: Vec<OsString>,
}

/// Runs the primary until it stops; returns the exit code and why.
pub async fn run(
    args: RunArgs,
    origin: Origin,
    settings: Settings,
    listeners: Vec<Listener>,
    notifier: Notifier,
) -> Result<(i32, String)> {
    let (tx, mut rx) = mpsc::channel(1024);
    // Before the first worker and before READY=1: no exit and no reload
    // request may be missed.
    crate::signals::start(tx.clone())?;
    let control = crate::control::Server::bind(&settings.control_path, tx.clone())?;
    let guardian = Guardian::start()?;
    let mut sup = Supervisor::new(args, origin, settings, listeners, notifier, control, guardian, tx)?;
    let _cleanup = RemoveDir(sup.runtime_dir.clone());
    let result = sup.serve(&mut rx).await;
    // Exiting in order: every worker has been reaped (or killed, on error).
    sup.guardian.dismiss();
    result
}

/// Runs a primary that the previous image handed over (self-upgrade).
pub async fn resume(
    args: RunArgs,
    origin: Origin,
    state: crate::upgrade::State,
    fds: crate::upgrade::Inherited,
    rollback: Option<String>,
    notifier: Notifier,
) -> Result<(i32, String)> {
    let (tx, mut rx) = mpsc::channel(1024);
    crate::signals::start(tx.clone())?;
    let control = crate::control::Server::adopt(fds.control, &state.settings.control_path, tx.clone())?;
    let guardian = Guardian::adopt(state.guardian_pid, fds.guardian);
    let mut sup =
        Supervisor::new(args, origin, state.settings.clone(), fds.listeners, notifier, control, guardian, tx)?;
    let _cleanup = RemoveDir(sup.runtime_dir.clone());
    for fd in fds.watchers {
        // A copy of the socket stays with the watcher, for the next upgrade.
        let adopted = fd.try_clone().map_err(anyhow::Error::from).and_then(|copy| {
            let tx = crate::control::adopt_subscriber(fd)?;
            Ok((tx, copy))
        });
        match adopted {
            Ok((tx, copy)) => sup.watchers.add(tx, Some(copy)),
            Err(e) => tracing::warn!("an events client was lost in the upgrade: {e:#}"),
        }
    }
    let adopted = sup.adopt(&state, fds.workers, rollback.is_none());
    if let Some(conn) = fds.reply {
        let version = env!("CARGO_PKG_VERSION");
        let reply = match (&adopted, &rollback) {
            (Ok(()), None) => Reply::Done {
                message: format!(
                    "upgraded hotswap {} to {version}: pid {} and {} workers kept",
                    state.from_version,
                    std::process::id(),
                    sup.workers.len()
                ),
            },
            (Ok(()), Some(why)) => {
                Reply::Error { error: format!("upgrade failed: {why}; still running hotswap {version}") }
            }
            (Err(e), _) => Reply::Error { error: format!("upgrade failed: {e:#}") },
        };
        crate::upgrade::answer(conn, &reply);
    }
    if let Some(why) = &rollback {
        tracing::error!("upgrade failed and was rolled back: {why}");
    }
    adopted?;
    let result = sup.event_loop(&mut rx).await;
    sup.guardian.dismiss();
    result
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    fn new(
        args: RunArgs,
        origin: Origin,
        settings: Settings,
        listeners: Vec<Listener>,
        notifier: Notifier,
        control: crate::control::Server,
        guardian: Guardian,
        events: mpsc::Sender<Event>,
    ) -> Result<Supervisor> {
        #[cfg(target_os = "linux")]
        {
            // Orphaned grandchildren come to us, to be reaped, not to init.
            let _ = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        }
        for l in &listeners {
            tracing::info!("listening on {} (fd name {:?})", l.addr, l.name);
        }
        tracing::info!("control socket {}", settings.control_path.display());
        let runtime_dir = std::env::temp_dir().join(format!("hotswap-{}", std::process::id()));
        std::fs::create_dir_all(&runtime_dir).with_context(|| format!("creating {}", runtime_dir.display()))?;
        Ok(Supervisor {
            args,
            origin,
            slots: (0..settings.workers).map(|_| Slot::default()).collect(),
            settings: Rc::new(settings),
            listeners,
            control,
            base_env: crate::worker::base_env(),
            runtime_dir,
            output: Output::start(),
            events,
            guardian,
            notifier,
            watchers: Watchers::default(),
            build_clock: tokio::sync::watch::Sender::new(Default::default()),
            foreign: Default::default(),
            workers: BTreeMap::new(),
            next_id: 1,
            newest_generation: 1,
            serving_generation: 1,
            reload: None,
            queued: None,
            last_reload: None,
            stop: None,
            upgrade: None,
            ever_ready: false,
            announced: false,
            started: Instant::now(),
            started_at: unix_now(),
            image_started_at: unix_now(),
            upgrades: 0,
            exit: None,
        })
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<(i32, String)> {
        let settings = self.settings.clone();
        for slot in 0..self.slots.len() {
            if let Err(e) = self.spawn(slot, 1, &settings) {
                self.kill_all();
                return Err(e.context("starting the first generation"));
            }
        }
        self.event_loop(rx).await
    }

    /// Starts the watcher and the watchdog, then handles events until the
    /// primary stops.
    pub(crate) async fn event_loop(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<(i32, String)> {
        if !self.settings.watch.is_empty() {
            let s = &self.settings;
            crate::watch::start(
                &s.watch,
                &s.watch_ignore,
                s.watch_debounce,
                self.events.clone(),
                self.build_clock.subscribe(),
            )?;
        }
        if let Some(every) = self.notifier.watchdog_interval() {
            tracing::info!("systemd watchdog: pinging every {} ms", every.as_millis());
            let _ = self.after(every, Timer::Watchdog);
        }
        while let Some(event) = rx.recv().await {
            self.handle(event);
            if let Some(exit) = self.exit.take() {
                return Ok(exit);
            }
        }
        Ok((1, "event channel closed".into()))
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(sig) => self.on_signal(sig),
            Event::Control { request, reply, conn } => self.on_control(request, reply, conn),
            Event::Ipc { worker, msg } => self.on_ipc(worker, msg),
            Event::IpcClosed { worker } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    tracing::debug!("{} IPC channel closed", w.label());
                    // From now on it is asked to stop with --stop-signal.
                    w.handover.ipc = None;
                    if w.ipc.take().is_some() {
                        let ev = worker_event("disconnect", w);
                        self.watchers.emit(ev);
                    }
                }
            }
            Event::Notify { worker, note } => self.on_notify(worker, note),
            Event::Watch { paths } => self.on_watch(paths),
            Event::UpgradeChecked { pid, result } => self.on_upgrade_checked(pid, result),
            Event::Timer(t) => self.on_timer(t),
        }
    }

    fn on_signal(&mut self, sig: i32) {
        use signal_hook::consts::*;
        match sig {
            SIGCHLD => self.reap(),
            SIGHUP => {
                tracing::info!("SIGHUP: reload requested");
                self.request_reload(None, false);
            }
            SIGUSR2 => {
                tracing::info!("SIGUSR2: self-upgrade requested");
                self.begin_upgrade(None, None);
            }
            SIGTERM | SIGINT => {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                self.begin_stop(name, None);
            }
            _ => {}
        }
    }

    fn on_control(&mut self, request: Request, reply: ReplyTx, conn: Option<std::os::fd::OwnedFd>) {
        match request {
            Request::Status => {
                let _ = reply.send(Reply::Status(Box::new(self.status())));
            }
            Request::Reload { no_build } => {
                if self.stop.is_some() {
                    let _ = reply.send(Reply::Error { error: "refused: the primary is stopping".into() });
                } else {
                    self.request_reload(Some(reply), no_build);
                }
            }
            Request::Stop => self.begin_stop("stop requested", Some(reply)),
            Request::Events => self.watchers.add(reply, conn),
            Request::Upgrade => self.begin_upgrade(Some(reply), conn),
        }
    }

    fn on_ipc(&mut self, id: WorkerId, msg: FromWorker) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        match msg {
            FromWorker::Listening => {
                if worker.settings.ready.uses_ipc() {
                    self.mark_ready(id, ReadyVia::Ipc);
                } else {
                    tracing::debug!("{} sent listening; readiness mode is {:?}", worker.label(), worker.settings.ready);
                }
            }
            FromWorker::Broadcast { data } => {
                for (_, other) in self.workers.iter().filter(|(other, _)| **other != id) {
                    if let Some(ch) = &other.ipc {
                        ch.send(to_worker::broadcast(id, data.clone()));
                    }
                }
            }
            FromWorker::Send { to, data } => {
                let delivered = self
                    .workers
                    .get(&to)
                    .and_then(|w| w.ipc.as_ref())
                    .is_some_and(|ch| ch.send(to_worker::send(id, data)));
                if !delivered {
                    if let Some(ch) = self.workers.get(&id).and_then(|w| w.ipc.as_ref()) {
                        ch.send(to_worker::error(&format!("no worker {to} to send to")));
                    }
                }
            }
            FromWorker::NodeHandle => {
                tracing::warn!("{} tried to send a handle over IPC; dropped", worker.label());
                if let Some(ch) = &worker.ipc {
                    ch.send(to_worker::node_handle_ack());
                }
            }
            FromWorker::Other(v) => {
                let mut text = v.to_string();
                text.truncate(200);
                tracing::info!("{} sent an unhandled message: {text}", worker.label());
            }
        }
    }

    fn on_watch(&mut self, paths: Vec<PathBuf>) {
        if self.stop.is_some() {
            return;
        }
        let what = crate::watch::describe(&paths);
        if self.reload_build_again() {
            tracing::info!("changed during the build: {what}; building again when it ends");
            return;
        }
        tracing::info!("changed: {what}");
        self.request_reload(None, false);
    }

    fn on_notify(&mut self, id: WorkerId, note: Notification) {
        let Some(worker) = self.workers.get(&id) else {
            return;
        };
        match note {
            Notification::Ready => self.mark_ready(id, ReadyVia::Notify),
            Notification::Status(s) => tracing::info!("{} status: {s}", worker.label()),
            Notification::Stopping => tracing::info!("{} says it is stopping", worker.label()),
        }
    }

    /// A worker is ready to serve; a reload waiting for it moves on.
    fn mark_ready(&mut self, id: WorkerId, via: ReadyVia) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if worker.state != WorkerState::Starting {
            return;
        }
        worker.state = WorkerState::Ready;
        worker.ready_via = Some(via);
        self.ever_ready = true;
        tracing::info!("{} ready in {} ms ({via:?})", worker.label(), worker.started.elapsed().as_millis());
        let ev = worker_event("listening", worker);
        self.watchers.emit(ev);
        self.reload_on_ready(id);
        if !self.announced && self.reload.is_none() && self.ready_count() >= self.settings.workers as usize {
            self.announced = true;
            self.notifier.ready(&self.status_line());
        } else {
            self.notify_status();
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Ready(id) => {
                let Some(w) = self.workers.get_mut(&id) else {
                    return;
                };
                if w.state != WorkerState::Starting {
                    return;
                }
                let why = format!(
                    "{} was not ready within {}",
                    w.label(),
                    humantime::format_duration(w.settings.ready_timeout)
                );
                tracing::error!("{why}; killing it");
                w.kill();
                self.reload_on_failure(id, why);
            }
            Timer::AssumeReady(id) => self.mark_ready(id, ReadyVia::Assumed),
            Timer::Shutdown(id) => {
                let Some(w) = self.workers.get_mut(&id) else {
                    return;
                };
                if w.state == WorkerState::Stopping && !w.killed {
                    tracing::warn!(
                        "{} did not exit within {} of shutdown; killing it",
                        w.label(),
                        humantime::format_duration(w.settings.shutdown_timeout)
                    );
                    w.kill();
                }
            }
            Timer::Respawn(slot) => {
                if self.stop.is_some()
                    || slot >= self.settings.workers as usize
                    || self.workers.values().any(|w| w.slot == slot && w.state != WorkerState::Stopping)
                {
                    return;
                }
                self.slots[slot].restarts += 1;
                self.slots[slot].retry_at = None;
                let settings = self.settings.clone();
                match self.spawn(slot, self.serving_generation, &settings) {
                    // A reload in progress replaces it too.
                    Ok(id) => self.reload_adopt(id),
                    Err(e) => {
                        tracing::error!("restarting slot {slot}: {e:#}");
                        self.schedule_respawn(slot);
                    }
                }
            }
            Timer::Watchdog => {
                self.notifier.watchdog();
                if let Some(every) = self.notifier.watchdog_interval() {
                    let _ = self.after(every, Timer::Watchdog);
                }
            }
        }
    }

    /// What starts (or adopts) workers of a generation with `settings`.
    pub(crate) fn launcher<'a>(&'a self, settings: &'a Rc<Settings>) -> Launcher<'a> {
        Launcher {
            settings,
            base_env: &self.base_env,
            runtime_dir: &self.runtime_dir,
            listeners: &self.listeners,
            output: &self.output,
            events: &self.events,
        }
    }

    /// Starts a worker in `slot` with `settings` and arms its deadlines.
    pub(crate) fn spawn(&mut self, slot: usize, generation: u64, settings: &Rc<Settings>) -> Result<WorkerId> {
        let id = self.next_id;
        self.next_id += 1;
        let worker = self.launcher(settings).start(id, slot, generation)?;
        tracing::info!("{} started (slot {slot})", worker.label());
        self.guardian.watch(worker.pid);
        self.watchers.emit(worker_event("fork", &worker));
        self.watchers.emit(worker_event("online", &worker));
        self.workers.insert(id, worker);
        self.worker_timer(id, settings.ready_timeout, Timer::Ready(id));
        match settings.ready {
            ReadyMode::None => self.mark_ready(id, ReadyVia::Assumed),
            ReadyMode::Delay(d) => self.worker_timer(id, d, Timer::AssumeReady(id)),
            _ => {}
        }
        Ok(id)
    }

    /// Tells a worker to shut down and arms its kill deadline.
    pub(crate) fn shut_down(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.state == WorkerState::Stopping {
            return;
        }
        w.respawn = false;
        let via_ipc = w.shutdown();
        let how = if via_ipc { "shutdown sent".to_string() } else { format!("{} sent", w.settings.stop_signal) };
        tracing::info!("{} stopping ({how})", w.label());
        let (timeout, ev) = (w.settings.shutdown_timeout, worker_event("disconnect", w));
        self.watchers.emit(ev);
        self.worker_timer(id, timeout, Timer::Shutdown(id));
    }

    pub(crate) fn after(&self, delay: Duration, timer: Timer) -> tokio::task::AbortHandle {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Timer(timer)).await;
        })
        .abort_handle()
    }

    /// A deadline about one worker: cancelled when the worker goes, so that
    /// thousands of reloads leave no sleeping timers behind.
    pub(crate) fn worker_timer(&mut self, id: WorkerId, delay: Duration, timer: Timer) {
        let handle = self.after(delay, timer);
        if let Some(w) = self.workers.get_mut(&id) {
            w.timers.push(handle);
        } else {
            handle.abort();
        }
    }

    /// Re-reads the config file (if any) for a new generation.
    pub(crate) fn reload_settings(&self) -> Result<Rc<Settings>> {
        if self.settings.config.is_none() {
            return Ok(self.settings.clone());
        }
        let new = Settings::load(&self.args)?;
        let fixed = self.settings.needs_restart(&new);
        if !fixed.is_empty() {
            tracing::warn!("config: changes to {} take effect only after a restart of hotswap", fixed.join(", "));
        }
        // Keep what is bound for life.
        Ok(Rc::new(Settings {
            listen: self.settings.listen.clone(),
            control_path: self.settings.control_path.clone(),
            backlog: self.settings.backlog,
            ..new
        }))
    }
}

pub(crate) fn worker_event(event: &str, w: &Worker) -> LifecycleEvent {
    let mut ev = LifecycleEvent::new(event);
    ev.worker = Some(w.id);
    ev.pid = Some(w.pid.as_raw());
    ev.generation = Some(w.generation);
    ev
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
