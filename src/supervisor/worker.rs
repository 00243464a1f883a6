//! One worker process: what the supervisor knows of it, and how it starts.
//!
//! The supervisor owns every [`Worker`] and nothing else touches one; its
//! fields are private to this file, and every change of state goes through
//! a method here. Starting a worker wires up its fds (listeners, IPC
//! socketpair, output pipes), forks it through [`crate::sys::spawn`], and
//! starts the tasks that carry its IPC and output. Its exit is noticed by
//! the reaper, by pid.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::core::stop::Way;
use crate::handover::{WorkerFds, WorkerSnapshot};
use crate::io::ipc::{self, Channel};
use crate::io::last_lines::LastLines;
use crate::io::log_format::LineLabel;
use crate::io::output::{Output, Stream, Unforwarded};
use crate::io::worker_notify::NotifySocket;
use crate::node;
use crate::options::ReadyMode;
use crate::options::{NodeMode, Settings};
use crate::sys::listeners::{self, ListenAddr, Listener};
use crate::sys::spawn::{self, Fds};
use crate::types::{label, Event, Killed, NodeState, ReadyVia, WorkerId, WorkerState};

/// A worker that runs and serves nothing, in words.
const SERVES_NOTHING: &str = "it serves nothing: it never listened on anything, neither on the sockets it inherits \
                              nor on one of its own";

#[derive(Debug)]
pub struct Worker {
    id: WorkerId,
    /// Which of the N places this worker fills; a replacement takes it over.
    slot: usize,
    pid: Pid,
    generation: u64,
    state: WorkerState,
    started: Instant,
    /// None once disconnected.
    ipc: Option<Channel>,
    /// The worker's own `NOTIFY_SOCKET`, in the notify readiness modes;
    /// held so that it lives (and is removed) with the worker.
    _notify: Option<NotifySocket>,
    /// The settings it was started with (its generation's).
    settings: Rc<Settings>,
    ready_via: Option<ReadyVia>,
    /// How long it took to get ready (from its start).
    ready_in: Option<Duration>,
    /// Set when SIGKILL was sent (so it is sent once), with why: the
    /// `exit` event says it.
    killed: Option<Killed>,
    /// Why it was killed before it was ready (`--ready-timeout`), for the
    /// message of a first generation that cannot start.
    not_ready: Option<String>,
    /// Whether its exit should be made good by starting another worker in
    /// its slot: true until it is retired on purpose.
    respawn: bool,
    /// Copies of the primary's ends of its IPC channel and output pipes,
    /// to hand over to the next image on self-upgrade.
    handover: Handover,
    /// Set for a Node.js cluster worker (`NODE_UNIQUE_ID`).
    node: Option<NodeState>,
    /// Whether it said anything on its IPC channel: for the diagnosis of a
    /// worker that never gets ready, and `--ready auto`.
    spoke: bool,
    /// What hotswap's preload told it patched (or could not).
    preload: Vec<crate::types::wire::PreloadPatch>,
    /// Whether it sent anything on its own `NOTIFY_SOCKET` (`--ready auto`).
    notified: bool,
    /// What the primary saw of its accepts while it starts.
    accept: super::accepting::Watch,
    /// `disconnect` was sent to events clients (once per worker).
    disconnect_told: bool,
    /// Its `--health-check`: not yet asked, running (with how it said it
    /// was ready), or passed.
    health: Health,
    /// `--warmup-nice`: the nice value it started at and the one to give
    /// back once ready.
    warm: Option<(i32, i32)>,
}

/// Where a worker's `--health-check` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Unchecked,
    /// Running; it said it was ready this way.
    Checking(ReadyVia),
    Passed,
}

/// The fds of a worker that a self-upgrade hands over (close-on-exec until
/// then).
#[derive(Debug)]
struct Handover {
    /// None once the channel is closed.
    ipc: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    /// What the output readers hold, carried with the pipes.
    pending: [Unforwarded; 2],
    /// Its bind filter's listener (`--bind-intercept`), answered by a task
    /// of this image and by the next one's after an upgrade.
    bind_notify: Option<OwnedFd>,
    /// Its last lines of output, as the readers read them.
    last: LastLines,
}

impl Worker {
    pub fn id(&self) -> WorkerId {
        self.id
    }
    pub fn slot(&self) -> usize {
        self.slot
    }
    pub fn pid(&self) -> Pid {
        self.pid
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn state(&self) -> WorkerState {
        self.state
    }
    pub fn settings(&self) -> &Rc<Settings> {
        &self.settings
    }
    pub fn killed(&self) -> bool {
        self.killed.is_some()
    }
    /// Why hotswap sent it SIGKILL, if it did.
    pub fn killed_for(&self) -> Option<Killed> {
        self.killed
    }
    pub fn not_ready(&self) -> Option<&str> {
        self.not_ready.as_deref()
    }
    pub fn respawn(&self) -> bool {
        self.respawn
    }
    /// How long it has been running.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }
    /// Its last lines of output, as read so far.
    pub fn last_lines(&self) -> &LastLines {
        &self.handover.last
    }
    /// Its IPC channel, until it is disconnected.
    pub fn ipc(&self) -> Option<&Channel> {
        self.ipc.as_ref()
    }

    /// Its Node.js cluster state, if it is a cluster worker.
    pub fn node(&self) -> Option<&NodeState> {
        self.node.as_ref()
    }

    pub fn node_mut(&mut self) -> Option<&mut NodeState> {
        self.node.as_mut()
    }

    /// It said something on its IPC channel.
    /// A patch the preload reports; true when it is news (a pre-fork
    /// server's processes each report the same patches).
    pub fn preload_patch(&mut self, p: crate::types::wire::PreloadPatch) -> bool {
        match self.preload.iter_mut().find(|q| q.patch == p.patch) {
            Some(q) if *q == p => false,
            Some(q) => {
                *q = p;
                true
            }
            None => {
                self.preload.push(p);
                true
            }
        }
    }

    pub fn preload(&self) -> &[crate::types::wire::PreloadPatch] {
        &self.preload
    }

    pub fn spoke(&mut self) {
        self.spoke = true;
    }

    /// It sent something on its `NOTIFY_SOCKET`.
    pub fn notified(&mut self) {
        self.notified = true;
    }

    /// Whether it speaks IPC or Node's cluster protocol: under `--ready
    /// auto` it is ready by what it says there, and its accepts no longer
    /// matter. (`READY=1` is not enough on its own: see
    /// [`super::accepting`].)
    pub fn speaks_ipc(&self) -> bool {
        self.spoke || self.node.is_some()
    }

    /// Whether it sent anything on its `NOTIFY_SOCKET`.
    pub fn notifies(&self) -> bool {
        self.notified
    }

    pub fn ready_via(&self) -> Option<ReadyVia> {
        self.ready_via
    }

    /// How long it took to get ready.
    pub fn ready_in(&self) -> Option<Duration> {
        self.ready_in
    }

    /// What proved it takes connections, if its accepts counted:
    /// `probe`, `accept` or `connection`.
    pub fn ready_proof(&self) -> Option<&'static str> {
        match self.ready_via? {
            ReadyVia::Accepting | ReadyVia::Notify => self.accept.proof().map(|h| h.name()),
            _ => None,
        }
    }

    pub fn accept_watch_mut(&mut self) -> &mut super::accepting::Watch {
        &mut self.accept
    }

    /// The nice value it started at and the primary's, until given back.
    pub fn take_warm(&mut self) -> Option<(i32, i32)> {
        self.warm.take()
    }

    pub fn health(&self) -> Health {
        self.health
    }

    pub fn set_health(&mut self, h: Health) {
        self.health = h;
    }

    /// Why it is not ready yet, as far as the primary can tell, and what
    /// would help: for the log while it waits and for the failure message.
    pub fn diagnosis(&self) -> String {
        self.diagnose(false)
    }

    /// [`Worker::diagnosis`] of a worker that exited before it was ready:
    /// what it did not do matters less than why it ended, which its own
    /// output says (a syntax error, a missing module or setting).
    pub fn exit_diagnosis(&self) -> String {
        self.diagnose(true)
    }

    fn diagnose(&self, exited: bool) -> String {
        let accepts = || self.accept.describe();
        if let (Health::Checking(via), Some(path)) = (self.health, &self.settings.health_check) {
            return format!("it said it was ready ({via}) but has not passed its health check GET {path} yet");
        }
        match (&self.node, self.settings.ready) {
            (_, ReadyMode::Accepting) if self.accept.serves_nothing() => format!(
                "{}; {SERVES_NOTHING} (under --ready accepting, a worker is ready once it is seen accepting on the \
                 sockets it inherits, LISTEN_FDS from fd 3)",
                accepts()
            ),
            (_, ReadyMode::Accepting) => format!(
                "{}; if it accepts through io_uring or runs as another user, use --ready ipc, notify or delay:DUR",
                accepts()
            ),
            (Some(n), _) if n.awaiting_own => {
                "its servers listen, but it has not said 'ready' (process.send('ready')) \
                or {\"type\":\"listening\"} itself: earlier workers of this command said it (PM2's wait_ready), or \
                --ready ipc asks for it, so Node's cluster `listening` does not count"
                    .to_string()
            }
            (Some(n), _) if n.served == 0 && exited => "it is a Node.js cluster worker that exited before it called \
                server.listen(): its own output, above, says why (a syntax error, a missing module, a setting it \
                needs such as an environment variable)"
                .to_string(),
            (Some(n), _) if n.served == 0 => "it is a Node.js cluster worker that never called server.listen(): it \
                serves nothing (hotswap takes a Node.js worker as ready once a server of it listens, which Node's \
                cluster reports; an app that waits for something first, a database or a setting, or whose server \
                never starts, looks like this: its own output says which)"
                .to_string(),
            (Some(_), _) => "its server got its socket but has not reported listening yet".to_string(),
            (None, ReadyMode::Notify) => "it has not sent READY=1 on its NOTIFY_SOCKET (is it a systemd Type=notify \
                app? otherwise use --ready accepting, ipc, delay:DUR or none)"
                .to_string(),
            (None, ReadyMode::Auto) if self.notified && !self.spoke && self.accept.said_ready() => format!(
                "{} (under --ready auto, READY=1 counts once a process of the worker also accepts: a pre-fork \
                 master such as gunicorn's says READY=1 before its workers exist; if it accepts through io_uring, \
                 use --ready notify)",
                accepts()
            ),
            (None, ReadyMode::Auto) if self.notified && !self.spoke => {
                "it sent on its NOTIFY_SOCKET but never READY=1 (under --ready auto, a worker that speaks \
                 sd_notify is ready by READY=1 and accepting, not by accepting alone)"
                    .to_string()
            }
            (None, ReadyMode::Auto) if !self.spoke && self.accept.serves_nothing() => format!(
                "it said nothing on its IPC channel, sent nothing on its NOTIFY_SOCKET, and {}; {SERVES_NOTHING} \
                 (under --ready auto, a worker is ready once it is seen accepting on the sockets it inherits, \
                 LISTEN_FDS from fd 3, or once it says so: {{\"type\":\"listening\"}} on its IPC channel, READY=1 \
                 on its NOTIFY_SOCKET)",
                accepts()
            ),
            (None, ReadyMode::Auto) if !self.spoke => {
                format!("it said nothing on its IPC channel, sent nothing on its NOTIFY_SOCKET, and {}", accepts())
            }
            // It would have been ready by the clock alone: what it said
            // does not matter, why it ended does.
            (None, ReadyMode::Delay(_)) => format!(
                "under --ready {} it is ready once that time has passed, and it ended before: its own output above \
                 says why (a server that binds a --listen address itself fails with EADDRINUSE where bind \
                 interception is off or refused: docs/own-bind.md)",
                self.settings.ready
            ),
            (None, _) if !self.spoke => "it said nothing on its IPC channel (the fd in HOTSWAP_IPC_FD): a worker says \
                 {\"type\":\"listening\"} there when it serves; for an app that cannot, use --ready accepting \
                 (any server), --ready notify (systemd-style apps), --ready delay:DUR or --ready none"
                .to_string(),
            (None, _) => "it spoke on its IPC channel but never sent {\"type\":\"listening\"} or \"ready\"".to_string(),
        }
    }

    /// [`Worker::diagnosis`] and its last lines of output, for a worker
    /// given up on: what it wrote says more than what it did not do.
    pub fn diagnosis_quoting(&self) -> String {
        format!("{}{}", self.diagnosis(), self.handover.last.quote())
    }

    /// `[w3 g2 1234]`: how the worker is named in every log line.
    pub fn label(&self) -> String {
        label(self.id, self.generation, self.pid.as_raw())
    }

    /// Starting -> Ready. False if it was not starting.
    pub fn mark_ready(&mut self, via: ReadyVia) -> bool {
        if self.state != WorkerState::Starting {
            // A worker taken for ready by its accepts that announces it
            // later is one that speaks that protocol: it is stopped by it.
            if self.state == WorkerState::Ready && self.ready_via == Some(ReadyVia::Accepting) {
                self.ready_via = Some(via);
            }
            return false;
        }
        self.state = WorkerState::Ready;
        self.ready_via = Some(via);
        self.ready_in = Some(self.started.elapsed());
        true
    }

    /// Whether `disconnect` is news for events clients: true once, the
    /// first time it is asked after the channel closed (or, with `gone`,
    /// when the worker exited with it open: it closes with the worker).
    pub fn disconnect_news(&mut self, gone: bool) -> bool {
        if self.disconnect_told || (self.ipc.is_some() && !gone) {
            return false;
        }
        self.disconnect_told = true;
        true
    }

    /// Its IPC channel closed (the worker's side). True if it was open.
    pub fn disconnected(&mut self) -> bool {
        self.handover.ipc = None;
        self.ipc.take().is_some()
    }

    /// Its exit is not to be made good by a replacement.
    pub fn retire(&mut self) {
        self.respawn = false;
    }

    /// Whether it would be told to go by `--stop-signal` (not by Node's
    /// `disconnect` or `shutdown` over IPC).
    pub fn stops_by_signal(&self) -> bool {
        Way::of(self.node.is_some(), self.ipc.is_some(), self.ready_via, self.settings.ready, self.spoke) == Way::Signal
    }

    /// It is leaving (its slot is given up): stopping, not to be replaced,
    /// not yet told.
    pub fn leave(&mut self) {
        self.state = WorkerState::Stopping;
        self.respawn = false;
    }

    /// Asks the worker to drain and exit: `shutdown` over IPC (then the
    /// channel is closed) when it speaks IPC, else `--stop-signal` to its
    /// main process, as systemd would. Returns whether IPC was used.
    pub fn shutdown(&mut self) -> bool {
        self.end_warmup();
        self.state = WorkerState::Stopping;
        self.respawn = false;
        let way = Way::of(self.node.is_some(), self.ipc.is_some(), self.ready_via, self.settings.ready, self.spoke);
        if let (Way::Node { shutdown }, Some(node), Some(ch)) = (way, self.node.as_mut(), self.ipc.as_ref()) {
            // Node's own way: the worker closes the servers it got from the
            // primary and, once they have drained, its channel (which stays
            // open on this side: closing it would make Node exit at once).
            // PM2 apps also hear `'shutdown'`; hotswap-aware ones their own
            // message. The stop signal follows once the channel closed.
            // Disconnect first: a server the app closes itself on
            // `'shutdown'` would otherwise leave the cluster's list, and the
            // channel would close before that server drained.
            node.seq += 1;
            let sent = ch.send(crate::node::cluster::disconnect(node.seq));
            if shutdown {
                ch.send(ipc::to_worker::shutdown());
            }
            ch.send(ipc::to_worker::pm2_shutdown());
            return sent;
        }
        let ipc = self.ipc.take();
        self.handover.ipc = None;
        if let Some(ch) = &ipc {
            if way == Way::Ipc && ch.send(ipc::to_worker::shutdown()) {
                ch.disconnect();
                return true;
            }
            ch.disconnect();
        }
        let _ = kill(self.pid, self.settings.stop_signal);
        false
    }

    /// `--stop-signal` to the worker's main process, once.
    pub fn signal_stop(&mut self) -> bool {
        match self.node.as_mut() {
            Some(n) if n.signalled => return false,
            Some(n) => n.signalled = true,
            None => {}
        }
        kill(self.pid, self.settings.stop_signal).is_ok()
    }

    /// Why it never got ready, when it is stopped another way.
    pub fn set_not_ready(&mut self, why: String) {
        self.not_ready = Some(why);
    }

    /// SIGKILL to the worker's whole process group, because it was not
    /// ready in time (`why`; `killed`: which deadline or check).
    pub fn kill_not_ready(&mut self, why: String, killed: Killed) {
        self.not_ready = Some(why);
        self.kill(killed);
    }

    /// A worker told to go before it was ready gets the primary's priority
    /// back first: at a low one, on a busy machine, even dying (which runs
    /// in its own threads) or draining takes long.
    fn end_warmup(&mut self) {
        if let Some((warm, original)) = self.warm.take() {
            let _ = crate::sys::priority::restore_group(self.pid.as_raw(), warm, original);
        }
    }

    /// SIGKILL to the worker's whole process group, for the reason `why`.
    pub fn kill(&mut self, why: Killed) {
        self.end_warmup();
        self.state = WorkerState::Stopping;
        self.ipc = None;
        self.handover.ipc = None;
        if self.killed.is_none() {
            self.killed = Some(why);
            let _ = killpg(self.pid, Signal::SIGKILL);
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }

    /// What a self-upgrade hands over of it.
    pub fn snapshot(&self) -> WorkerSnapshot {
        WorkerSnapshot {
            id: self.id,
            slot: self.slot,
            pid: self.pid.as_raw(),
            generation: self.generation,
            state: self.state,
            ready_via: self.ready_via,
            age_ms: self.started.elapsed().as_millis() as u64,
            respawn: self.respawn,
            killed: self.killed.is_some(),
            killed_for: self.killed,
            ipc_fd: self.handover.ipc.as_ref().map(|f| f.as_raw_fd()),
            stdout_fd: self.handover.stdout.as_raw_fd(),
            stderr_fd: self.handover.stderr.as_raw_fd(),
            stdout_pending: self.handover.pending[0].bytes(),
            stderr_pending: self.handover.pending[1].bytes(),
            bind_notify_fd: self.handover.bind_notify.as_ref().map(|f| f.as_raw_fd()),
            node: self.node,
            spoke: Some(self.spoke),
            preload: self.preload.clone(),
            notified: self.notified,
            said_ready: self.accept.said_ready(),
            ready_ms: self.ready_in.map(|d| d.as_millis() as u64),
        }
    }
}

/// The fds starting a worker takes, at most (some only for a moment).
const FDS_PER_START: u64 = 12;

/// What every worker is started with: its generation's settings and the
/// primary's sockets.
pub struct Launcher<'a> {
    pub settings: &'a Rc<Settings>,
    pub base_env: &'a [(OsString, OsString)],
    /// Where per-worker notify sockets go (`--ready notify`).
    pub runtime_dir: &'a Path,
    pub listeners: &'a [Listener],
    /// Each slot's sockets (`--balance`).
    pub slot_sockets: &'a crate::sys::slots::SlotSockets,
    pub output: &'a Output,
    pub events: &'a mpsc::Sender<Event>,
    /// The Node.js preload, for cluster workers.
    pub preload: PathBuf,
    /// The preload of the app's own cluster primary.
    pub primary_preload: PathBuf,
    /// The Python preload's directory, for Python workers.
    pub python_dir: PathBuf,
    /// Whether rescue covers its workers (`HOTSWAP_RESCUE`): the Node
    /// preload's `http` drain is then left out under `--drain-patch auto`.
    pub rescue_covers: bool,
    /// Start at this nice value (`--warmup-nice`), and the primary's own.
    pub warm: Option<(i32, i32)>,
    /// Whether its workers are ready by their own `"ready"`/`listening`
    /// (`--ready ipc`, or PM2's `wait_ready` learned under `auto`): a Node
    /// worker's servers then accept only once it says so
    /// (`HOTSWAP_WAIT_READY`, read by the preload).
    pub wait_ready: bool,
}

impl Launcher<'_> {
    /// Wires up the primary's ends of a worker: output forwarding and the IPC
    /// channel, keeping copies of the fds for a later handover.
    fn attach(
        &self,
        (id, generation, pid): (WorkerId, u64, Pid),
        ipc: Option<OwnedFd>,
        out_r: OwnedFd,
        err_r: OwnedFd,
        carried: [&[u8]; 2],
        queue: usize,
    ) -> Result<(Option<Channel>, Handover)> {
        let copy = |fd: &OwnedFd| fd.try_clone().context("duplicating a worker fd");
        let (ipc_copy, stdout, stderr) = (ipc.as_ref().map(copy).transpose()?, copy(&out_r)?, copy(&err_r)?);
        let line_label = LineLabel::worker(id, generation, pid.as_raw());
        let last = LastLines::new();
        let pending = [
            self.output.forward(out_r, Stream::Stdout, line_label.clone(), carried[0], Some(last.clone())),
            self.output.forward(err_r, Stream::Stderr, line_label, carried[1], Some(last.clone())),
        ];
        let handover = Handover { ipc: ipc_copy, stdout, stderr, pending, bind_notify: None, last };
        let channel = match ipc {
            Some(fd) => {
                let stream = std::os::unix::net::UnixStream::from(fd);
                stream.set_nonblocking(true).context("IPC socket")?;
                let stream = tokio::net::UnixStream::from_std(stream).context("IPC socket")?;
                Some(Channel::start(
                    stream,
                    id,
                    label(id, generation, pid.as_raw()),
                    self.is_node(),
                    self.events.clone(),
                    queue,
                ))
            }
            None => None,
        };
        Ok((channel, handover))
    }

    fn notify_socket(&self, id: WorkerId, generation: u64) -> Result<Option<NotifySocket>> {
        if !self.settings.ready.uses_notify() {
            return Ok(None);
        }
        NotifySocket::bind(self.runtime_dir, id, format!("[w{id} g{generation}]"), self.events.clone()).map(Some)
    }

    pub fn start(&self, id: WorkerId, slot: usize, generation: u64) -> Result<Worker> {
        self.start_as(id, slot, generation, None)
    }

    /// Starts the app's own cluster primary ([`crate::node::primary`]):
    /// the same command, without sockets, with `cluster.isPrimary` true and
    /// the primary's preload; `workers`: `HOTSWAP_NODE_WORKERS`.
    pub fn start_primary(&self, id: WorkerId, workers: &str) -> Result<Worker> {
        self.start_as(id, 0, 0, Some(workers))
    }

    fn start_as(&self, id: WorkerId, slot: usize, generation: u64, primary: Option<&str>) -> Result<Worker> {
        // Its IPC pair, output pipes, the copies kept for an upgrade, a
        // notify socket, and the fork's own: refused while fds run low.
        // Under --bind-intercept also its filter's fd, a copy, and a copy of
        // each listener for the task that answers it.
        let more = 2 + self.listeners.len() as u64;
        crate::sys::fd_limit::room(FDS_PER_START + more).map_err(|e| anyhow::anyhow!("cannot start a worker: {e}"))?;
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
            .context("creating the IPC socketpair")?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let devnull = std::fs::File::open("/dev/null").context("opening /dev/null")?;

        let listener_fds = if primary.is_some() { Vec::new() } else { self.slot_sockets.fds(self.listeners, slot) };
        let ipc_fd = 3 + listener_fds.len();
        let mut env = self.base_env.to_vec();
        fn set(env: &mut Vec<(OsString, OsString)>, k: &str, v: impl Into<OsString>) {
            env.retain(|(key, _)| key != k);
            env.push((k.into(), v.into()));
        }
        // The config's `env` and the command's own `VAR=value` words.
        for (k, v) in &self.settings.env {
            set(&mut env, k, v);
        }
        set(&mut env, "LISTEN_FDS", listener_fds.len().to_string());
        set(&mut env, "LISTEN_FDNAMES", listeners::fd_names(self.listeners));
        set(&mut env, "HOTSWAP_IPC_FD", ipc_fd.to_string());
        set(&mut env, "NODE_CHANNEL_FD", ipc_fd.to_string());
        set(&mut env, "NODE_CHANNEL_SERIALIZATION_MODE", "json");
        set(&mut env, "HOTSWAP_WORKER_ID", id.to_string());
        set(&mut env, "HOTSWAP_GENERATION", generation.to_string());
        set(&mut env, "HOTSWAP_CONTROL", self.settings.control_path.as_os_str());
        set(&mut env, "HOTSWAP_WORKER_SLOT", slot.to_string());
        set(&mut env, "HOTSWAP_RESCUE", if self.rescue_covers { "on" } else { "off" });
        set(&mut env, "HOTSWAP_DRAIN_PATCH", self.settings.drain_patch.to_string());
        let has = |k: &str| {
            self.base_env.iter().any(|(key, _)| key == k) || self.settings.env.iter().any(|(key, _)| key == k)
        };
        if !has("PORT") {
            if let Some(ListenAddr::Tcp(sa)) = self.listeners.first().map(|l| &l.addr) {
                set(&mut env, "PORT", sa.port().to_string());
            }
        }
        // A recognised server's own variable for its inherited sockets
        // (nginx's NGINX, php-fpm's FPM_SOCKETS), unless the user set it.
        if let Some(r) = self.settings.server() {
            let addrs: Vec<ListenAddr> = self.listeners.iter().map(|l| l.addr.clone()).collect();
            for (k, v) in r.server.env(&addrs) {
                if !has(k) {
                    set(&mut env, k, v);
                }
            }
            if r.server.wants_nonblocking() {
                for l in self.listeners.iter() {
                    if let Err(e) = l.set_nonblocking() {
                        tracing::warn!("{} recognised: {e:#}", r.server.name());
                    }
                }
            }
        }
        let is_node = self.is_node() && primary.is_none();
        if let Some(workers) = primary {
            set(&mut env, "HOTSWAP_NODE_PRIMARY", "1");
            set(&mut env, "HOTSWAP_NODE_WORKERS", workers);
            let existing = self.base_env.iter().find(|(k, _)| k == "NODE_OPTIONS").map(|(_, v)| v);
            set(&mut env, "NODE_OPTIONS", node::node_options(existing, &self.primary_preload));
        }
        if is_node {
            // Node sets itself up as a cluster worker, and removes both.
            set(&mut env, "NODE_UNIQUE_ID", id.to_string());
            let existing = self.base_env.iter().find(|(k, _)| k == "NODE_OPTIONS").map(|(_, v)| v);
            set(&mut env, "NODE_OPTIONS", node::node_options(existing, &self.preload));
            if !has("NODE_APP_INSTANCE") {
                set(&mut env, "NODE_APP_INSTANCE", slot.to_string());
            }
            if self.wait_ready {
                set(&mut env, "HOTSWAP_WAIT_READY", "1");
            }
        }
        if self.is_python() {
            let existing = self.base_env.iter().find(|(k, _)| k == "PYTHONPATH").map(|(_, v)| v);
            set(&mut env, "PYTHONPATH", crate::python::pythonpath(existing, &self.python_dir));
        }
        let notify = if primary.is_some() { None } else { self.notify_socket(id, generation)? };
        if let Some(n) = &notify {
            set(&mut env, "NOTIFY_SOCKET", n.path().as_os_str());
        }

        #[cfg(target_os = "linux")]
        let filter = self.bind_filter(id, generation)?;
        let fds = Fds {
            stdin: devnull.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            listeners: &listener_fds,
            ipc: theirs.as_raw_fd(),
            nice: self.warm.map(|(w, _)| w),
            #[cfg(target_os = "linux")]
            intercept: filter.as_ref(),
            cwd: self.settings.cwd.as_deref(),
        };
        let spawned = spawn::spawn(&self.settings.command, &env, &fds)?;
        let pid = spawned.pid;
        if spawned.exec_pending {
            tracing::warn!(
                worker = id,
                "worker {id} (pid {pid}): the exec of {} had not returned after {} s (a slow or hung filesystem?); \
                 hotswap goes on, and a failed exec will show as its exit",
                self.settings.command[0],
                spawn::EXEC_WAIT.as_secs()
            );
        }
        drop((theirs, out_w, err_w, devnull));
        #[cfg(target_os = "linux")]
        let bind_notify = self.bind_intercepted(spawned.intercept, (id, generation, pid), slot)?;
        #[cfg(not(target_os = "linux"))]
        let bind_notify = None;

        let (ipc, mut handover) = self.attach(
            (id, generation, pid),
            Some(ours),
            out_r,
            err_r,
            [&[], &[]],
            if primary.is_some() { ipc::PRIMARY_QUEUE } else { ipc::OUTGOING_QUEUE },
        )?;
        handover.bind_notify = bind_notify;
        Ok(Worker {
            id,
            slot,
            pid,
            generation,
            state: WorkerState::Starting,
            started: Instant::now(),
            ipc,
            _notify: notify,
            settings: self.settings.clone(),
            ready_via: None,
            ready_in: None,
            killed: None,
            not_ready: None,
            respawn: true,
            handover,
            node: is_node.then(NodeState::default),
            spoke: false,
            preload: Vec::new(),
            notified: false,
            accept: Default::default(),
            disconnect_told: false,
            health: Health::Unchecked,
            warm: self.warm,
        })
    }

    pub(super) fn is_node(&self) -> bool {
        runs_node(self.settings, self.base_env)
    }

    fn is_python(&self) -> bool {
        match self.settings.python {
            NodeMode::On => true,
            NodeMode::Off => false,
            NodeMode::Auto => {
                let path = self.base_env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
                crate::python::runs_python(&self.settings.command, &path)
            }
        }
    }

    /// Takes over a worker the previous image started (self-upgrade).
    pub fn adopt(&self, w: &WorkerSnapshot, fds: WorkerFds) -> Result<Worker> {
        let pid = Pid::from_raw(w.pid);
        let carried = [&w.stdout_pending[..], &w.stderr_pending[..]];
        let (ipc, mut handover) =
            self.attach((w.id, w.generation, pid), fds.ipc, fds.stdout, fds.stderr, carried, ipc::OUTGOING_QUEUE)?;
        #[cfg(target_os = "linux")]
        if let Some(fd) = fds.bind_notify {
            let notifier = crate::io::bind_intercept::Notifier::adopt(fd);
            handover.bind_notify = Some(notifier.try_clone().context("duplicating a bind filter's fd")?);
            let targets = self.bind_targets(w.slot)?;
            crate::io::bind_intercept::serve(notifier, targets, w.id, label(w.id, w.generation, w.pid))
                .context("answering a bind filter")?;
        }
        // A channel closed before the upgrade was said closed then.
        let disconnect_told = ipc.is_none();
        Ok(Worker {
            id: w.id,
            slot: w.slot,
            pid,
            generation: w.generation,
            state: w.state,
            started: Instant::now().checked_sub(Duration::from_millis(w.age_ms)).unwrap_or_else(Instant::now),
            ipc,
            _notify: self.notify_socket(w.id, w.generation)?,
            settings: self.settings.clone(),
            ready_via: w.ready_via,
            ready_in: w.ready_ms.map(Duration::from_millis),
            // An older image says `killed` without why: taken as its
            // --shutdown-timeout, the usual case (a worker killed at
            // another deadline is seldom still unreaped at an upgrade).
            killed: w.killed_for.or(w.killed.then_some(Killed::ShutdownTimeout)),
            not_ready: None,
            respawn: w.respawn,
            handover,
            node: w.node,
            spoke: w.spoke.unwrap_or(true),
            preload: w.preload.clone(),
            notified: w.notified,
            accept: super::accepting::Watch::resumed(w.said_ready),
            disconnect_told,
            // A check running in the previous image is lost: a worker still
            // starting is checked again when it says ready again, or not.
            health: Health::Unchecked,
            warm: None,
        })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating an output pipe")
}

/// Whether workers of these settings are Node.js cluster workers.
pub fn runs_node(settings: &Settings, env: &[(OsString, OsString)]) -> bool {
    match settings.node {
        NodeMode::On => true,
        NodeMode::Off => false,
        NodeMode::Auto => {
            let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
            node::runs_node(&settings.command, &path, settings.cwd.as_deref())
        }
    }
}

/// The primary's environment as a worker should see it: without the
/// variables that describe the primary's own sockets and channel, which
/// would mislead the worker (a stale `LISTEN_PIDFDID` makes libsystemd reject
/// the fds; `NODE_UNIQUE_ID` makes Node think it is a cluster worker). Only
/// systemd's own `LISTEN_*` names go: an app's `LISTEN_MODE` or
/// `LISTEN_ADDR` is the app's business.
pub fn base_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            !(matches!(&*k, "LISTEN_FDS" | "LISTEN_PID" | "LISTEN_FDNAMES" | "LISTEN_PIDFDID")
                || k == "NOTIFY_SOCKET"
                || k.starts_with("WATCHDOG_")
                || k.starts_with("NODE_CHANNEL_")
                || k == "NODE_UNIQUE_ID"
                || k.starts_with("HOTSWAP_"))
        })
        .collect()
}
