//! The primary's event loop: the one owner of all supervisor state.
//!
//! Workers, slots, generations, listeners, the reload in progress and the
//! stop in progress live in [`Supervisor`], whose fields are private: only
//! the files of this folder touch them, each for one concern (workers,
//! reloads, exits, adopted orphans, stop, status, subscribers, the live
//! slots of `--balance`, health checks, warm-up priority, self-upgrade
//! and taking over from the previous image, the first `--build`).
//! Everything else (signals, the control socket, IPC channels, notify
//! sockets, the file watcher, timers) sends it an [`Event`] over one channel; child exits
//! arrive as SIGCHLD and are reaped in one place, by pid (`exits`), so no
//! status is ever lost or stolen.
//!
//! It is split in two. The functional core (`core/`) decides: what an exit
//! means, how a stop goes, which worker `--max-memory` replaces, which
//! slots are live, and where every pending deadline is; like the rolling
//! reload ([`reload::policy`]), the crash backoff ([`backoff`]) and the
//! readiness rules (`readiness`), it is a set of functions of state,
//! event and time, with no process, socket or `/proc` (the layout test
//! checks it), tested with fake workers and an injected clock. The other
//! files are the shell: they gather the facts, ask the core, and carry its
//! answer out (spawn, signal, reply, arm a timer, read `/proc`).

mod accepting;
mod adopted;
mod app_primary;
pub mod backoff;
mod balance;
#[cfg(target_os = "linux")]
mod bind_filter;
mod core;
mod exits;
mod first_build;
mod health;
mod memory;
mod metrics;
mod node;
mod port_hint;
mod quiesce;
mod readiness;
pub mod reload;
mod rescue;
mod resume;
mod scale;
mod status;
mod stop;
mod subscribers;
mod upgrade;
mod warmup;
mod worker;
mod workers;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use self::core::stop::Stop;
use crate::io::build::Build;
use crate::io::control;
use crate::io::file_watch::{self, BuildClock};
use crate::io::output::Output;
use crate::options::{Options, Settings};
use crate::sys::guardian::Guardian;
use crate::sys::listeners::Listener;
use crate::sys::runtime_dir::{self, Preload, RuntimeDir};
use crate::sys::sd_notify::Systemd;
use crate::sys::slots::SlotSockets;
use crate::types::wire::{ReloadOutcome, Reply, ReplyTx, Request};
use crate::types::{unix_now, Event, Killed, Timer, WorkerId};
use backoff::CrashHistory;
use reload::policy::Reload;
use reload::queue::Queue;
use subscribers::Subscribers;
use worker::{Launcher, Worker};

pub use resume::resume;
pub use worker::{base_env, runs_node};

/// How long an exiting primary waits for its events clients and its
/// workers' output to be written out.
const EXIT_DRAIN: Duration = Duration::from_secs(1);

pub struct Supervisor {
    /// The flags `hotswap run` was given, to read the config file again.
    flags: Options,
    /// The serving generation's settings.
    settings: Rc<Settings>,
    listeners: Vec<Listener>,
    /// Each slot's sockets under `--balance slots|sticky` (shared listeners
    /// otherwise), and what the kernel was told of the live slots.
    slot_sockets: SlotSockets,
    /// Workers whose slot was left out of the balance, waiting for its
    /// queue to empty before they are told to go (since when).
    leaving: core::balance::Leaving,
    /// Retiring workers that do not drain, told to go once they answer
    /// nothing ([`quiesce`]).
    quiescing: core::quiesce::Quiescing,
    /// The listeners' socket inodes, in the same order: how `--ready
    /// accepting` recognises them in a worker's `/proc` entries.
    inodes: Vec<u64>,
    /// Commands whose workers announce their readiness (`--ready auto`).
    announcers: accepting::Announcers,
    /// Where looks at starting workers' accepts are asked (a thread of
    /// their own: [`crate::io::accepts`]).
    accepts: std::sync::mpsc::Sender<crate::io::accepts::Look>,
    /// The listeners' addresses, where probe connections go.
    probe_targets: Vec<Option<socket2::SockAddr>>,
    control: control::Server,
    origin: Origin,
    base_env: Vec<(OsString, OsString)>,
    /// Private (0700, unpredictable name, checked before each spawn):
    /// per-worker notify sockets and the Node.js and Python preloads;
    /// handed over on self-upgrade.
    runtime: RuntimeDir,
    output: Output,
    events: mpsc::Sender<Event>,
    guardian: Guardian,
    systemd: Systemd,
    subscribers: Subscribers,
    workers: BTreeMap<WorkerId, Worker>,
    /// Each slot's crash history (restarts, backoff), indexed by slot.
    crash_history: Vec<CrashHistory>,
    next_id: WorkerId,
    /// The newest generation number handed out.
    newest_generation: u64,
    /// The generation that serves: 1, or the last reload that succeeded.
    serving_generation: u64,
    reload: Option<Reload>,
    /// The running reload's `--build` command, while it runs (before any
    /// worker is touched).
    build: Option<Build>,
    /// Sockets bound for Node workers' listens that no `--listen` gave.
    on_demand: node::OnDemand,
    /// Reload requests waiting behind the running one.
    queued: Queue,
    /// Tells the file watcher whether a build runs (its writes do not count).
    build_clock: tokio::sync::watch::Sender<BuildClock>,
    /// Children whose exit someone else waits for (tokio's), never reaped here.
    foreign: HashSet<i32>,
    /// Orphans of workers (daemons) re-parented to the primary.
    adopted: adopted::Adopted,
    last_reload: Option<ReloadOutcome>,
    stop: Option<Stop>,
    /// Whether any worker has ever been ready: before that, a failing worker
    /// means the command cannot start at all, and the primary gives up.
    ever_ready: bool,
    /// Whether `READY=1` went to systemd for the first generation.
    systemd_told_ready: bool,
    started: Instant,
    /// When the primary first started (Unix seconds), across upgrades.
    started_at: u64,
    /// When this binary image started.
    image_started_at: u64,
    upgrades: u32,
    /// What `/metrics` counts; carried over a self-upgrade.
    counters: crate::types::counters::Counters,
    /// Reads what workers use (off the event loop) and answers with it.
    sampler: tokio::sync::mpsc::UnboundedSender<crate::io::usage::Ask>,
    /// `--max-memory`: the check and the replacements.
    memory: core::memory::MemoryWatch,
    /// `--metrics`: the socket `/metrics` is served on.
    metrics: Option<crate::io::metrics_endpoint::Server>,
    /// A self-upgrade waiting for its check of the new binary.
    upgrade: Option<upgrade::InFlight>,
    /// A checked self-upgrade, to exec once the event loop is quiet.
    handing_over: Option<(upgrade::InFlight, bool)>,
    /// Every pending deadline and every task a worker owns: cancelled with
    /// their worker, carried over by a self-upgrade.
    timers: core::timers::Timers<tokio::task::AbortHandle>,
    /// The app's own cluster primary, if it has one.
    app_primary: app_primary::AppPrimary,
    /// Set when the loop should end, with the process exit code.
    exit: Option<(i32, String)>,
    /// The last lines of the worker whose exit made the primary give up,
    /// as quoted in `exit` then: quoted again once its output is read to
    /// the end.
    exit_quote: Option<(String, crate::io::last_lines::LastLines)>,
    /// Holds retiring workers' connections (`--rescue`; TCP listeners).
    rescue: Option<crate::io::rescue::Rescue>,
    /// Workers told to stop once the rescue has looked at them.
    rescue_looking: HashSet<WorkerId>,
    /// The rescued requests counted when the running reload began.
    rescued_before_reload: u64,
    /// The running reload is done and waits for the rescue's count.
    rescue_settling: bool,
    /// Copies of a worker's connections were refused: later workers are
    /// told rescue does not cover them.
    rescue_denied: bool,
}

impl core::timers::Task for tokio::task::AbortHandle {
    fn is_finished(&self) -> bool {
        tokio::task::AbortHandle::is_finished(self)
    }
    fn abort(&self) {
        tokio::task::AbortHandle::abort(self)
    }
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
    flags: Options,
    origin: Origin,
    settings: Settings,
    listeners: Vec<Listener>,
    systemd: Systemd,
) -> Result<(i32, String)> {
    let (tx, mut rx) = mpsc::channel(1024);
    // Before the first worker and before READY=1: no exit and no reload
    // request may be missed.
    crate::io::signals::start(tx.clone())?;
    crate::sys::reap::become_subreaper().context("becoming a child subreaper")?;
    let control = control::Server::bind(&settings.control_path, tx.clone()).map_err(|e| match &settings.name {
        Some(name) if format!("{e}").contains("another hotswap primary answers") => name_taken(name),
        _ => e,
    })?;
    let metrics = settings.metrics.map(|a| crate::io::metrics_endpoint::Server::bind(a.0, tx.clone())).transpose()?;
    let guardian = Guardian::start()?;
    let base = runtime_dir::base();
    for dir in runtime_dir::remove_stale(&base) {
        tracing::info!("removed {}, left by a primary that no longer runs", dir.display());
    }
    // Removed when it is dropped, on any way out but the exec of an upgrade.
    let runtime = RuntimeDir::create(&base, PRELOADS)?;
    let workers = settings.workers as usize;
    let mut sup = Supervisor::new(flags, origin, settings, listeners, systemd, control, guardian, tx, runtime)?;
    sup.metrics = metrics;
    if let Some(choice) = sup.server_choice() {
        tracing::info!("{choice}");
    }
    sup.slot_sockets.grow(workers)?;
    let result = sup.serve(&mut rx).await;
    // Exiting in order: every worker has been reaped (or killed, on error).
    sup.end_orphans();
    sup.guardian.dismiss();
    result
}

/// The error for `--name APP` when a running primary holds that name.
pub fn name_taken(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the name {name:?} is taken: a running primary answers on its control socket (`hotswap stop {name}` \
         stops it; or give this one another --name)"
    )
}

/// Lets the control connections write their last replies before the
/// primary exits (`hotswap stop` waits for how the stop went).
async fn let_replies_out() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// The files of the runtime directory's preloads' directory: the Node.js
/// preload, and the Python one in a directory of its own (it goes first
/// on `PYTHONPATH`).
pub(crate) const PRELOADS: &[Preload] = &[
    (NODE_PRELOAD, crate::node::PRELOAD),
    (NODE_PRIMARY_PRELOAD, crate::node::primary::PRELOAD),
    ("python/sitecustomize.py", crate::python::SITECUSTOMIZE),
];
const NODE_PRELOAD: &str = "node-preload.js";
const NODE_PRIMARY_PRELOAD: &str = "node-primary.js";
const PYTHON_DIR: &str = "python";

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    fn new(
        flags: Options,
        origin: Origin,
        settings: Settings,
        listeners: Vec<Listener>,
        systemd: Systemd,
        control: control::Server,
        guardian: Guardian,
        events: mpsc::Sender<Event>,
        runtime: RuntimeDir,
    ) -> Result<Supervisor> {
        let sampler_events = events.clone();
        if settings.ready == crate::options::ReadyMode::Accepting && listeners.is_empty() {
            anyhow::bail!(
                "--ready accepting needs a listening socket (--listen, or socket activation): \
                 it is ready once a worker accepts on them"
            );
        }
        // Slot 0 only: a new primary binds the others ([`run`]), a new image
        // takes them over ([`resume`]).
        let slot_sockets = SlotSockets::new(settings.balance, &listeners, settings.backlog)?;
        let mut sup = Supervisor {
            slot_sockets,
            leaving: Default::default(),
            quiescing: Default::default(),
            inodes: accepting::inodes(&listeners)?,
            probe_targets: accepting::addresses(&listeners),
            accepts: crate::io::accepts::start(events.clone()).context("starting the accepts scanner")?,
            announcers: Default::default(),
            flags,
            origin,
            crash_history: (0..settings.workers).map(|_| CrashHistory::default()).collect(),
            settings: Rc::new(settings),
            listeners,
            control,
            base_env: base_env(),
            runtime,
            output: Output::global().clone(),
            events,
            guardian,
            systemd,
            subscribers: Subscribers::default(),
            build_clock: tokio::sync::watch::Sender::new(Default::default()),
            foreign: Default::default(),
            adopted: Default::default(),
            workers: BTreeMap::new(),
            next_id: 1,
            newest_generation: 1,
            serving_generation: 1,
            reload: None,
            build: None,
            queued: Queue::default(),
            on_demand: Default::default(),
            last_reload: None,
            stop: None,
            upgrade: None,
            handing_over: None,
            timers: Default::default(),
            ever_ready: false,
            systemd_told_ready: false,
            started: Instant::now(),
            started_at: unix_now(),
            image_started_at: unix_now(),
            upgrades: 0,
            counters: Default::default(),
            sampler: crate::io::usage::start(sampler_events),
            memory: Default::default(),
            metrics: None,
            exit: None,
            exit_quote: None,
            app_primary: Default::default(),
            rescue: None,
            rescue_looking: Default::default(),
            rescued_before_reload: 0,
            rescue_settling: false,
            rescue_denied: false,
        };
        #[cfg(target_os = "linux")]
        sup.start_rescue();
        Ok(sup)
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<(i32, String)> {
        if let Some(exit) = self.first_build(rx).await? {
            return Ok(exit);
        }
        let settings = self.settings.clone();
        for slot in 0..self.crash_history.len() {
            if let Err(e) = self.spawn(slot, 1, &settings) {
                self.kill_all(Killed::PrimaryGaveUp);
                return Err(e.context("starting the first generation"));
            }
        }
        self.app_primary.enabled = app_primary::wanted(&settings, runs_node(&settings, &self.base_env));
        self.start_app_primary();
        self.event_loop(rx).await
    }

    /// Starts the file watcher and the watchdog, then handles events until
    /// the primary stops.
    async fn event_loop(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<(i32, String)> {
        if !self.settings.watch.is_empty() {
            let s = &self.settings;
            crate::sys::signal_mask::blocked_while(|| {
                file_watch::start(
                    &s.watch,
                    &s.watch_ignore,
                    s.watch_debounce,
                    self.events.clone(),
                    self.build_clock.subscribe(),
                )
            })?;
        }
        if let Some(every) = self.systemd.watchdog_interval() {
            tracing::info!("systemd watchdog: pinging every {} ms", every.as_millis());
            self.after(every, Timer::Watchdog);
        }
        self.after(adopted::CHECK_EVERY, Timer::OrphanAndGuardianCheck);
        self.arm_memory_check();
        while let Some(event) = rx.recv().await {
            self.handle(event);
            if let Some(pending) = self.handing_over.take() {
                self.hand_over(pending, rx).await;
            }
            if let Some(mut exit) = self.exit.take() {
                // Every events client gets every event, then `done`; the
                // workers' last lines of output are read to the end (main
                // then waits for them to be written). A first generation
                // that cannot start: read first, so that the message
                // quotes the worker's last lines all.
                let mut drained = false;
                if let Some((said, last)) = self.exit_quote.take() {
                    drained = self.output.drain(EXIT_DRAIN).await;
                    let now = last.quote();
                    if now != said && exit.1.contains(&said) {
                        exit.1 = exit.1.replacen(&said, &now, 1);
                    }
                }
                self.subscribers.close(&exit.1, EXIT_DRAIN).await;
                if !drained && !self.output.drain(EXIT_DRAIN).await {
                    tracing::debug!("worker output still open {} ms after the last exit", EXIT_DRAIN.as_millis());
                }
                let_replies_out().await;
                return Ok(exit);
            }
        }
        Ok((1, "event channel closed".into()))
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(sig) => self.on_signal(sig),
            Event::Control { request, reply, conn } => self.on_control(request, reply, conn),
            Event::Subscribe { sub, conn } => self.subscribers.add(sub, conn),
            Event::SubscriberLeft => self.subscribers.prune(),
            Event::Ipc { worker, msg } if self.is_app_primary(worker) => self.on_primary_ipc(msg),
            Event::IpcClosed { worker } if self.is_app_primary(worker) => {}
            Event::Ipc { worker, msg } => self.on_ipc(worker, msg),
            Event::IpcClosed { worker } => self.on_ipc_closed(worker),
            Event::IpcHandle { worker, msg, fd } => self.on_ipc_handle(worker, msg, fd),
            Event::Notify { worker, note } => self.on_notify(worker, note),
            Event::FilesChanged { paths } => self.on_files_changed(paths),
            Event::UpgradeChecked { pid, result } => self.on_upgrade_checked(pid, result),
            Event::Timer(t) => self.on_timer(t),
            Event::Metrics { reply } => self.on_metrics(reply),
            Event::MemorySampled { rss } => self.on_memory_sampled(rss),
            Event::HealthChecked { worker, result } => self.on_health_checked(worker, result),
            Event::Looked { worker, report, cost } => self.on_looked(worker, *report, cost),
            Event::Rescue(note) => self.on_rescue(note),
        }
        self.rebalance();
        self.release_unused_sockets();
    }

    fn on_signal(&mut self, sig: i32) {
        use signal_hook::consts::*;
        match sig {
            SIGCHLD => self.reap(),
            SIGHUP if self.stop.is_some() => tracing::warn!("SIGHUP ignored: the primary is stopping"),
            SIGHUP => {
                tracing::info!("SIGHUP: reload requested");
                self.request_reload(None, false, reload::Ask::default());
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

    fn on_control(&mut self, request: Request, reply: ReplyTx, conn: Option<OwnedFd>) {
        match request {
            Request::Status => self.status_with_usage(reply),
            Request::Reload { no_build, surge, canary_ms } => {
                if self.stop.is_some() {
                    let _ = reply.send(Reply::Error { error: "refused: the primary is stopping".into() });
                } else {
                    let canary = canary_ms.map(Duration::from_millis);
                    self.request_reload(Some(reply), no_build, reload::Ask { surge, canary });
                }
            }
            Request::Stop => self.begin_stop("stop requested", Some(reply)),
            // Served by `Event::Subscribe`, and by the control task.
            Request::Events | Request::Logs { .. } | Request::Reopen => drop((reply, conn)),
            Request::Upgrade => self.begin_upgrade(Some(reply), conn),
            Request::Scale { to } => self.scale(to, reply),
        }
    }

    fn on_files_changed(&mut self, paths: Vec<PathBuf>) {
        if self.stop.is_some() {
            return;
        }
        let what = file_watch::describe(&paths);
        if self.reload_build_again() {
            tracing::info!("changed during the build: {what}; building again when it ends");
            return;
        }
        tracing::info!("changed: {what}");
        self.request_reload(None, false, reload::Ask::default());
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Ready(id) => self.on_ready_deadline(id),
            Timer::AssumeReady(id) => self.mark_ready(id, crate::types::ReadyVia::Assumed),
            Timer::AcceptCheck(id) => self.on_accept_check(id),
            Timer::AcceptSettled(id) => self.on_accept_settled(id),
            Timer::Shutdown(id) => self.on_shutdown_deadline(id),
            Timer::StopSignal(id) => self.on_stop_signal_deadline(id),
            Timer::NoListenReady(id) => self.on_no_listen_deadline(id),
            Timer::ReadyHint(id) => self.on_ready_hint(id),
            Timer::Proven(id) => self.reload_on_proven(id),
            Timer::Respawn(slot) => self.respawn(slot),
            Timer::SlotDrain(id) => self.on_slot_drain(id),
            Timer::Quiesce(id) => self.on_quiesce(id),
            Timer::OrphanAndGuardianCheck => self.check_orphans_and_guardian(),
            Timer::MemoryCheck => self.on_memory_check(),
            Timer::AppPrimary => self.start_app_primary(),
            Timer::AppPrimaryKill => self.on_app_primary_kill_deadline(),
            Timer::Watchdog => {
                self.systemd.watchdog();
                if let Some(every) = self.systemd.watchdog_interval() {
                    self.after(every, Timer::Watchdog);
                }
            }
        }
    }

    /// Sends `timer` after `delay`.
    fn after(&mut self, delay: Duration, timer: Timer) {
        self.arm(delay, timer, None);
    }

    /// A deadline about one worker: cancelled when the worker goes, so that
    /// thousands of reloads leave no sleeping timers behind. None for a
    /// worker that is already gone.
    fn worker_timer(&mut self, id: WorkerId, delay: Duration, timer: Timer) {
        if self.workers.contains_key(&id) {
            self.arm(delay, timer, Some(id));
        }
    }

    /// Sends `timer` after `delay`, recorded in the one place that knows
    /// every pending deadline ([`core::timers`]).
    fn arm(&mut self, delay: Duration, timer: Timer, owner: Option<WorkerId>) {
        let events = self.events.clone();
        let handle = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Timer(timer)).await;
        })
        .abort_handle();
        self.timers.add(timer, owner, Instant::now() + delay, handle);
    }

    /// What starts (or adopts) workers of a generation with `settings`.
    fn launcher<'a>(&'a self, settings: &'a Rc<Settings>) -> Launcher<'a> {
        Launcher {
            settings,
            base_env: &self.base_env,
            runtime_dir: self.runtime.path(),
            listeners: &self.listeners,
            slot_sockets: &self.slot_sockets,
            output: &self.output,
            events: &self.events,
            preload: self.runtime.preload(NODE_PRELOAD),
            primary_preload: self.runtime.preload(NODE_PRIMARY_PRELOAD),
            python_dir: self.runtime.preload(PYTHON_DIR),
            rescue_covers: self.rescue_covers(settings),
            warm: None,
            wait_ready: match settings.ready {
                crate::options::ReadyMode::Ipc | crate::options::ReadyMode::IpcOrNotify => true,
                crate::options::ReadyMode::Auto => {
                    self.announcers.how(&settings.command) == Some(crate::types::ReadyVia::Ipc)
                }
                _ => false,
            },
        }
    }

    /// Re-reads the config file (if any) for a new generation.
    fn reload_settings(&self) -> Result<Rc<Settings>> {
        if self.settings.config.is_none() {
            return Ok(self.settings.clone());
        }
        let new = Settings::load(&self.flags)?;
        let fixed = self.settings.needs_restart(&new);
        if !fixed.is_empty() {
            tracing::warn!("config: changes to {} take effect only after a restart of hotswap", fixed.join(", "));
        }
        // Keep what is bound for life.
        Ok(Rc::new(Settings {
            listen: self.settings.listen.clone(),
            control_path: self.settings.control_path.clone(),
            backlog: self.settings.backlog,
            metrics: self.settings.metrics,
            balance: self.settings.balance,
            ..new
        }))
    }
}
