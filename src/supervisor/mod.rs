//! The primary's event loop: the one owner of all supervisor state.
//!
//! Workers, slots, generations, listeners, the reload in progress and the
//! stop in progress live in [`Supervisor`], whose fields are private: only
//! the files of this folder touch them, each for one concern (workers,
//! reloads, exits, adopted orphans, stop, status, subscribers, the live
//! slots of `--balance`, health checks, warm-up priority, self-upgrade
//! and taking over from the previous image, the phases: first `--build`,
//! serving, ending). Its state is at most twenty fields (the layout test
//! counts them), most of them a group of the state of one concern, in the
//! file that owns it (changes it): `Looks` in `accepting`, `Reloads` in
//! [`reload`], `Rescuing` in `rescue`, `Upgrading` in `upgrade`, `Life` in
//! `status`, `Metrics` in `metrics`, the `Phase` in
//! `phase`; what is set once at start (`Given`, `Sockets`) and the handles
//! that only send (`Io`) here. There is one event loop, from the first
//! build to the exit. Everything else (signals, the control socket, IPC
//! channels, notify sockets, the file watcher, timers) sends it an
//! [`Event`] over one channel, which `dispatch` hands to the file that owns
//! its concern; child exits arrive as SIGCHLD and are reaped in one place,
//! by pid (`exits`), so no status is ever lost or stolen.
//!
//! It is split in two. The functional core (`core/`) decides: a worker's
//! life (an enum whose states carry their own data), what an exit means,
//! how a stop goes, which worker `--max-memory` replaces, which slots are
//! live, and where every pending deadline is; like the rolling
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
mod dispatch;
mod exits;
mod health;
mod memory;
mod metrics;
mod node;
mod phase;
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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use self::core::stop::Stop;
use self::phase::Phase;
use crate::io::control;
use crate::io::file_watch;
use crate::io::output::Output;
use crate::options::{Options, Settings};
use crate::sys::guardian::Guardian;
use crate::sys::listeners::Listener;
use crate::sys::runtime_dir::{self, Preload, RuntimeDir};
use crate::sys::sd_notify::Systemd;
use crate::sys::slots::SlotSockets;
use crate::types::{Event, Killed, Timer, WorkerId};
use backoff::CrashHistory;
use subscribers::Subscribers;
use worker::{Launcher, Worker};

pub use resume::resume;
pub use worker::{base_env, runs_node};

/// How long an exiting primary waits for its events clients, its workers'
/// output and its control connections' last replies to be written out.
const EXIT_DRAIN: Duration = Duration::from_secs(1);

/// The supervisor's state: twenty fields at most (the layout test counts
/// them), each a concern. A group is owned by one file, the one that
/// changes it (the other files read it, or ask the owner's methods); its
/// doc says which and why its fields go together. Four are changed by
/// several files, each for its own event, and say which: the pool, the
/// settings, the crash history and the stop.
pub struct Supervisor {
    /// What the primary was started as and starts workers with (this file).
    given: Given,
    /// The serving generation's settings: replaced by a reload that
    /// succeeded ([`reload`]) and by `hotswap scale` (`scale`), which lays
    /// its size over them as a reload of the same settings would.
    settings: Rc<Settings>,
    /// What workers serve on (this file: bound at start, handed over).
    sockets: Sockets,
    /// The handles that carry the supervisor's answers out (this file).
    io: Io,
    /// The pool. A worker's own state changes only through its methods
    /// (`worker`); `workers` (spawn), `exits` (reaped) and `upgrade`
    /// (adopted) add and remove workers.
    workers: BTreeMap<WorkerId, Worker>,
    /// Each slot's crash history (restarts, backoff), indexed by slot:
    /// decided by the core's exits ([`core::exits`]) and `workers`'
    /// respawn; resized with the pool ([`reload`], `scale`), restored by
    /// `upgrade`.
    crash_history: Vec<CrashHistory>,
    /// Building the first generation's code, serving, or ending: what the
    /// loop's dispatch consults (`phase`).
    phase: Phase,
    /// The primary's life so far, carried across upgrades (`status`).
    life: status::Life,
    /// The looks at starting workers' accepts (`accepting`).
    looks: accepting::Looks,
    /// The running reload, its build, the queue behind it and the
    /// generations ([`reload`]).
    reloads: reload::Reloads,
    /// Rescue's bookkeeping (`rescue`).
    rescue: rescue::Rescuing,
    /// A self-upgrade under way (`upgrade`).
    upgrade: upgrade::Upgrading,
    /// What `/metrics` counts and serves (`metrics`).
    metrics: metrics::Metrics,
    /// The stop in progress: begun by `stop`, decided in [`core::stop`],
    /// ended by `exits`; `workers` and `adopted` count what it had to kill.
    stop: Option<Stop>,
    /// Workers whose slot was left out of the balance, waiting for its
    /// queue to empty before they are told to go (`balance`, deciding by
    /// [`core::balance`]).
    leaving: core::balance::Leaving,
    /// Retiring workers that do not drain, told to go once they answer
    /// nothing (`quiesce`, deciding by [`core::quiesce`]).
    quiescing: core::quiesce::Quiescing,
    /// Orphans of workers (daemons) re-parented to the primary (`adopted`).
    adopted: adopted::Adopted,
    /// `--max-memory`: the check and the replacements (`memory`, deciding
    /// by [`core::memory`]).
    memory: core::memory::MemoryWatch,
    /// Every pending deadline and every task a worker owns: cancelled with
    /// their worker, carried over by a self-upgrade ([`core::timers`]; armed
    /// by this file's `arm`).
    timers: core::timers::Timers<tokio::task::AbortHandle>,
    /// The app's own cluster primary, if it has one (`app_primary`).
    app_primary: app_primary::AppPrimary,
}

/// What the primary was started as, and what every worker starts with. Set
/// at start and never changed after, except that `hotswap scale` lays its
/// size over the flags ([`Given::scale_to`]), so that a reload that reads
/// the config file again keeps it.
struct Given {
    /// The flags `hotswap run` was given, to read the config file again.
    flags: Options,
    /// What a self-upgrade re-executes.
    origin: Origin,
    /// The environment every worker starts from.
    base_env: Vec<(OsString, OsString)>,
    /// Private (0700, unpredictable name, checked before each spawn):
    /// per-worker notify sockets and the Node.js and Python preloads;
    /// handed over on self-upgrade.
    runtime: RuntimeDir,
}

impl Given {
    /// `hotswap scale N`: the size holds until the primary stops.
    fn scale_to(&mut self, workers: u32) {
        self.flags.workers = Some(workers);
    }
}

/// The sockets workers serve on. Each is a type whose own methods change
/// it: the listeners are bound once, for the primary's life (a new image
/// takes them over); the slot sockets grow with the pool and are told the
/// live slots by `balance` ([`SlotSockets`]); the sockets bound on demand
/// for Node workers' listens are `node`'s ([`node::OnDemand`]).
struct Sockets {
    listeners: Vec<Listener>,
    /// Each slot's sockets under `--balance slots|sticky` (shared listeners
    /// otherwise), and what the kernel was told of the live slots.
    slot_sockets: SlotSockets,
    /// Sockets bound for Node workers' listens that no `--listen` gave.
    on_demand: node::OnDemand,
}

/// The handles through which the supervisor's decisions reach the outside:
/// each only sends (an event, a line of output, a reply, a notification to
/// systemd, a group to protect), through its own type's methods; none holds
/// a decision of the supervisor's, so every file may use them.
struct Io {
    /// Where timers and the tasks the supervisor starts send their events.
    events: mpsc::Sender<Event>,
    output: Output,
    control: control::Server,
    /// The process that kills every worker's group if the primary dies.
    guardian: Guardian,
    systemd: Systemd,
    /// `hotswap events` clients.
    subscribers: Subscribers,
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
    sup.metrics.server = metrics;
    if let Some(choice) = sup.server_choice() {
        tracing::info!("{choice}");
    }
    sup.sockets.slot_sockets.grow(workers)?;
    let result = sup.serve(&mut rx).await;
    // Exiting in order: every worker has been reaped (or killed, on error).
    sup.end_orphans();
    sup.io.guardian.dismiss();
    result
}

/// The error for `--name APP` when a running primary holds that name.
pub fn name_taken(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the name {name:?} is taken: a running primary answers on its control socket (`hotswap stop {name}` \
         stops it; or give this one another --name)"
    )
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
            looks: accepting::Looks::new(&listeners, events.clone())?,
            sockets: Sockets { listeners, slot_sockets, on_demand: Default::default() },
            leaving: Default::default(),
            quiescing: Default::default(),
            given: Given { flags, origin, base_env: base_env(), runtime },
            crash_history: (0..settings.workers).map(|_| CrashHistory::default()).collect(),
            settings: Rc::new(settings),
            io: Io {
                control,
                output: Output::global().clone(),
                events,
                guardian,
                systemd,
                subscribers: Subscribers::default(),
            },
            adopted: Default::default(),
            workers: BTreeMap::new(),
            phase: Phase::Serving,
            life: status::Life::new(),
            reloads: Default::default(),
            rescue: Default::default(),
            upgrade: Default::default(),
            metrics: metrics::Metrics::new(sampler_events),
            stop: None,
            timers: Default::default(),
            memory: Default::default(),
            app_primary: Default::default(),
        };
        #[cfg(target_os = "linux")]
        sup.start_rescue();
        Ok(sup)
    }

    /// The one event loop, from the first build (if any) to the exit.
    async fn serve(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<(i32, String)> {
        match self.settings.build.clone() {
            Some(cmd) => self.begin_first_build(&cmd)?,
            None => self.start_serving()?,
        }
        self.event_loop(rx).await
    }

    /// The first generation starts, and what runs while workers serve.
    fn start_serving(&mut self) -> Result<()> {
        let settings = self.settings.clone();
        for slot in 0..self.crash_history.len() {
            if let Err(e) = self.spawn(slot, 1, &settings) {
                self.kill_all(Killed::PrimaryGaveUp);
                return Err(e.context("starting the first generation"));
            }
        }
        self.app_primary.enabled = app_primary::wanted(&settings, runs_node(&settings, &self.given.base_env));
        self.start_app_primary();
        self.start_watching()
    }

    /// A new image's loop (self-upgrade): it serves from the start.
    async fn serve_on(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<(i32, String)> {
        self.start_watching()?;
        self.event_loop(rx).await
    }

    /// What runs while workers serve: the file watcher, the systemd
    /// watchdog, the look for orphans and the guardian, the memory check.
    fn start_watching(&mut self) -> Result<()> {
        if !self.settings.watch.is_empty() {
            let s = &self.settings;
            crate::sys::signal_mask::blocked_while(|| {
                file_watch::start(
                    &s.watch,
                    &s.watch_ignore,
                    s.watch_debounce,
                    self.io.events.clone(),
                    self.reloads.build_clock.subscribe(),
                )
            })?;
        }
        if let Some(every) = self.io.systemd.watchdog_interval() {
            tracing::info!("systemd watchdog: pinging every {} ms", every.as_millis());
            self.after(every, Timer::Watchdog);
        }
        self.after(adopted::CHECK_EVERY, Timer::OrphanAndGuardianCheck);
        self.arm_memory_check();
        Ok(())
    }

    /// Handles events until the primary stops.
    async fn event_loop(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<(i32, String)> {
        loop {
            let event = if self.upgrade.handing_over.is_some() {
                // A checked upgrade execs once what is queued is handled.
                match self.queued_during_hand_over(rx).await {
                    Some(event) => event,
                    None => {
                        self.hand_over().await;
                        if let Some(ending) = self.phase.take_ending() {
                            return self.end(ending).await;
                        }
                        continue;
                    }
                }
            } else {
                match rx.recv().await {
                    Some(event) => event,
                    None => return Ok((1, "event channel closed".into())),
                }
            };
            self.handle(event);
            // (A hand-over that fails still answers its client first.)
            if self.upgrade.handing_over.is_none() {
                if let Some(ending) = self.phase.take_ending() {
                    return self.end(ending).await;
                }
            }
        }
    }

    /// What starts (or adopts) workers of a generation with `settings`.
    fn launcher<'a>(&'a self, settings: &'a Rc<Settings>) -> Launcher<'a> {
        Launcher {
            settings,
            base_env: &self.given.base_env,
            runtime_dir: self.given.runtime.path(),
            listeners: &self.sockets.listeners,
            slot_sockets: &self.sockets.slot_sockets,
            output: &self.io.output,
            events: &self.io.events,
            preload: self.given.runtime.preload(NODE_PRELOAD),
            primary_preload: self.given.runtime.preload(NODE_PRIMARY_PRELOAD),
            python_dir: self.given.runtime.preload(PYTHON_DIR),
            rescue_covers: self.rescue_covers(settings),
            warm: None,
            wait_ready: match settings.ready {
                crate::options::ReadyMode::Ipc | crate::options::ReadyMode::IpcOrNotify => true,
                crate::options::ReadyMode::Auto => {
                    self.looks.announcers.how(&settings.command) == Some(crate::types::ReadyVia::Ipc)
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
        let new = Settings::load(&self.given.flags)?;
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
