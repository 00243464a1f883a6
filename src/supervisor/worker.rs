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
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use crate::handover::{WorkerFds, WorkerSnapshot};
use crate::io::ipc::{self, Channel};
use crate::io::output::{Output, Stream};
use crate::io::worker_notify::NotifySocket;
use crate::options::Settings;
use crate::sys::listeners::{self, Listener};
use crate::sys::spawn::{self, Fds};
use crate::types::{label, Event, ReadyVia, WorkerId, WorkerState};

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
    /// Set when SIGKILL was sent, so it is sent once.
    killed: bool,
    /// Whether its exit should be made good by starting another worker in
    /// its slot: true until it is retired on purpose.
    respawn: bool,
    /// Its pending deadlines, cancelled when it goes.
    timers: Vec<tokio::task::AbortHandle>,
    /// Copies of the primary's ends of its IPC channel and output pipes,
    /// to hand over to the next image on self-upgrade.
    handover: Handover,
}

/// The fds of a worker that a self-upgrade hands over (close-on-exec until
/// then).
#[derive(Debug)]
struct Handover {
    /// None once the channel is closed.
    ipc: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
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
        self.killed
    }
    pub fn respawn(&self) -> bool {
        self.respawn
    }
    /// How long it has been running.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }
    /// Its IPC channel, until it is disconnected.
    pub fn ipc(&self) -> Option<&Channel> {
        self.ipc.as_ref()
    }

    /// `[w3 g2 1234]`: how the worker is named in every log line.
    pub fn label(&self) -> String {
        label(self.id, self.generation, self.pid.as_raw())
    }

    /// Starting -> Ready. False if it was not starting.
    pub fn mark_ready(&mut self, via: ReadyVia) -> bool {
        if self.state != WorkerState::Starting {
            return false;
        }
        self.state = WorkerState::Ready;
        self.ready_via = Some(via);
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

    /// A deadline about this worker, cancelled when it goes.
    pub fn arm(&mut self, timer: tokio::task::AbortHandle) {
        self.timers.push(timer);
    }

    /// Cancels its pending deadlines (it is gone).
    pub fn disarm(&mut self) {
        self.timers.drain(..).for_each(|t| t.abort());
    }

    /// Asks the worker to drain and exit: `shutdown` over IPC (then the
    /// channel is closed) when it speaks IPC, else `--stop-signal` to its
    /// main process, as systemd would. Returns whether IPC was used.
    pub fn shutdown(&mut self) -> bool {
        self.state = WorkerState::Stopping;
        self.respawn = false;
        let speaks_ipc = match self.ready_via {
            Some(via) => via == ReadyVia::Ipc,
            None => self.settings.ready.uses_ipc(),
        };
        let ipc = self.ipc.take();
        self.handover.ipc = None;
        if let Some(ch) = &ipc {
            if speaks_ipc && ch.send(ipc::to_worker::shutdown()) {
                ch.disconnect();
                return true;
            }
            ch.disconnect();
        }
        let _ = kill(self.pid, self.settings.stop_signal);
        false
    }

    /// SIGKILL to the worker's whole process group.
    pub fn kill(&mut self) {
        self.state = WorkerState::Stopping;
        self.ipc = None;
        self.handover.ipc = None;
        if !self.killed {
            self.killed = true;
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
            killed: self.killed,
            ipc_fd: self.handover.ipc.as_ref().map(|f| f.as_raw_fd()),
            stdout_fd: self.handover.stdout.as_raw_fd(),
            stderr_fd: self.handover.stderr.as_raw_fd(),
        }
    }
}

/// What every worker is started with: its generation's settings and the
/// primary's sockets.
pub struct Launcher<'a> {
    pub settings: &'a Rc<Settings>,
    pub base_env: &'a [(OsString, OsString)],
    /// Where per-worker notify sockets go (`--ready notify`).
    pub runtime_dir: &'a Path,
    pub listeners: &'a [Listener],
    pub output: &'a Output,
    pub events: &'a mpsc::Sender<Event>,
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
    ) -> Result<(Option<Channel>, Handover)> {
        let copy = |fd: &OwnedFd| fd.try_clone().context("duplicating a worker fd");
        let handover =
            Handover { ipc: ipc.as_ref().map(copy).transpose()?, stdout: copy(&out_r)?, stderr: copy(&err_r)? };
        let prefix = format!("{} ", label(id, generation, pid.as_raw()));
        self.output.forward(out_r, Stream::Stdout, prefix.clone());
        self.output.forward(err_r, Stream::Stderr, prefix);
        let channel = match ipc {
            Some(fd) => {
                let stream = std::os::unix::net::UnixStream::from(fd);
                stream.set_nonblocking(true).context("IPC socket")?;
                let stream = tokio::net::UnixStream::from_std(stream).context("IPC socket")?;
                Some(Channel::start(stream, id, label(id, generation, pid.as_raw()), self.events.clone()))
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
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
            .context("creating the IPC socketpair")?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let devnull = std::fs::File::open("/dev/null").context("opening /dev/null")?;

        let listener_fds: Vec<_> = self.listeners.iter().map(|l| l.raw_fd()).collect();
        let ipc_fd = 3 + listener_fds.len();
        let mut env = self.base_env.to_vec();
        let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
        set("LISTEN_FDS", listener_fds.len().to_string());
        set("LISTEN_FDNAMES", listeners::fd_names(self.listeners));
        set("HOTSWAP_IPC_FD", ipc_fd.to_string());
        set("NODE_CHANNEL_FD", ipc_fd.to_string());
        set("NODE_CHANNEL_SERIALIZATION_MODE", "json".into());
        set("HOTSWAP_WORKER_ID", id.to_string());
        set("HOTSWAP_GENERATION", generation.to_string());
        set("HOTSWAP_CONTROL", self.settings.control_path.display().to_string());
        let notify = self.notify_socket(id, generation)?;
        if let Some(n) = &notify {
            set("NOTIFY_SOCKET", n.path().display().to_string());
        }

        let fds = Fds {
            stdin: devnull.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            listeners: &listener_fds,
            ipc: theirs.as_raw_fd(),
        };
        let pid = spawn::spawn(&self.settings.command, &env, &fds)?;
        drop((theirs, out_w, err_w, devnull));

        let (ipc, handover) = self.attach((id, generation, pid), Some(ours), out_r, err_r)?;
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
            killed: false,
            respawn: true,
            timers: Vec::new(),
            handover,
        })
    }

    /// Takes over a worker the previous image started (self-upgrade).
    pub fn adopt(&self, w: &WorkerSnapshot, fds: WorkerFds) -> Result<Worker> {
        let pid = Pid::from_raw(w.pid);
        let (ipc, handover) = self.attach((w.id, w.generation, pid), fds.ipc, fds.stdout, fds.stderr)?;
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
            killed: w.killed,
            respawn: w.respawn,
            timers: Vec::new(),
            handover,
        })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating an output pipe")
}

/// The primary's environment as a worker should see it: without the
/// variables that describe the primary's own sockets and channel, which
/// would mislead the worker (a stale `LISTEN_PIDFDID` makes libsystemd reject
/// the fds; `NODE_UNIQUE_ID` makes Node think it is a cluster worker).
pub fn base_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            !(k.starts_with("LISTEN_")
                || k == "NOTIFY_SOCKET"
                || k.starts_with("WATCHDOG_")
                || k.starts_with("NODE_CHANNEL_")
                || k == "NODE_UNIQUE_ID"
                || k.starts_with("HOTSWAP_"))
        })
        .collect()
}
