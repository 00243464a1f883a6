//! One worker process: what the supervisor knows of it, and how it starts.
//!
//! The supervisor owns every [`Worker`]; nothing else touches one. Starting a
//! worker wires up its fds (listeners, IPC socketpair, output pipes), forks
//! it through [`crate::spawn`], and starts the tasks that carry its IPC and
//! output. Its exit is noticed by the reaper, by pid.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::ipc::Channel;
use crate::listeners::{self, Listener};
use crate::notify_socket::NotifySocket;
use crate::output::{Output, Stream};
use crate::spawn::{self, Fds};
use crate::supervisor::Event;

/// Unique for the primary's lifetime, never reused (like Node's
/// `cluster.worker.id`).
pub type WorkerId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Started, not yet ready.
    Starting,
    /// Reported `listening`: serving.
    Ready,
    /// Told to shut down (or killed); waiting for it to exit.
    Stopping,
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Stopping => "stopping",
        })
    }
}

/// How a worker became ready; it decides how the worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadyVia {
    Ipc,
    Notify,
    /// `--ready delay:DUR` or `none`.
    Assumed,
}

#[derive(Debug)]
pub struct Worker {
    pub id: WorkerId,
    /// Which of the N places this worker fills; a replacement takes it over.
    pub slot: usize,
    pub pid: Pid,
    pub generation: u64,
    pub state: WorkerState,
    pub started: Instant,
    /// None once disconnected.
    pub ipc: Option<Channel>,
    /// The worker's own `NOTIFY_SOCKET`, in the notify readiness modes;
    /// held so that it lives (and is removed) with the worker.
    #[allow(dead_code)]
    pub notify: Option<NotifySocket>,
    /// The settings it was started with (its generation's).
    pub settings: Rc<Settings>,
    pub ready_via: Option<ReadyVia>,
    /// Set when SIGKILL was sent, so it is sent once.
    pub killed: bool,
    /// Whether its exit should be made good by starting another worker in
    /// its slot: true until it is retired on purpose.
    pub respawn: bool,
    /// Its pending deadlines, cancelled when it goes.
    pub timers: Vec<tokio::task::AbortHandle>,
    /// Copies of the primary's ends of its IPC channel and output pipes,
    /// to hand over to the next image on self-upgrade.
    pub handover: Handover,
}

/// The fds of a worker that a self-upgrade hands over (close-on-exec until
/// then).
#[derive(Debug)]
pub struct Handover {
    /// None once the channel is closed.
    pub ipc: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Worker {
    /// `[w3 g2 1234]`: how the worker is named in every log line.
    pub fn label(&self) -> String {
        label(self.id, self.generation, self.pid)
    }

    /// Asks the worker to drain and exit: `shutdown` over IPC (then the
    /// channel is closed) when it speaks IPC, else `--stop-signal` to its
    /// main process, as systemd would. Returns whether IPC was used.
    pub fn shutdown(&mut self) -> bool {
        self.state = WorkerState::Stopping;
        let speaks_ipc = match self.ready_via {
            Some(via) => via == ReadyVia::Ipc,
            None => self.settings.ready.uses_ipc(),
        };
        let ipc = self.ipc.take();
        self.handover.ipc = None;
        if let Some(ch) = &ipc {
            if speaks_ipc && ch.send(crate::ipc::to_worker::shutdown()) {
                ch.disconnect();
                return true;
            }
            ch.disconnect();
        }
        let _ = nix::sys::signal::kill(self.pid, self.settings.stop_signal);
        false
    }

    /// SIGKILL to the worker's whole process group.
    pub fn kill(&mut self) {
        self.state = WorkerState::Stopping;
        self.ipc = None;
        self.handover.ipc = None;
        if !self.killed {
            self.killed = true;
            let _ = nix::sys::signal::killpg(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

pub fn label(id: WorkerId, generation: u64, pid: Pid) -> String {
    format!("[w{id} g{generation} {pid}]")
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
        (id, generation, pid): (WorkerId, u64, nix::unistd::Pid),
        ipc: Option<OwnedFd>,
        out_r: OwnedFd,
        err_r: OwnedFd,
    ) -> Result<(Option<Channel>, Handover)> {
        let (output, events) = (self.output, self.events);
        let copy = |fd: &OwnedFd| fd.try_clone().context("duplicating a worker fd");
        let handover =
            Handover { ipc: ipc.as_ref().map(copy).transpose()?, stdout: copy(&out_r)?, stderr: copy(&err_r)? };
        let prefix = format!("{} ", label(id, generation, pid));
        output.forward(out_r, Stream::Stdout, prefix.clone());
        output.forward(err_r, Stream::Stderr, prefix);
        let channel = match ipc {
            Some(fd) => {
                let stream = std::os::unix::net::UnixStream::from(fd);
                stream.set_nonblocking(true).context("IPC socket")?;
                let stream = tokio::net::UnixStream::from_std(stream).context("IPC socket")?;
                Some(Channel::start(stream, id, label(id, generation, pid), events.clone()))
            }
            None => None,
        };
        Ok((channel, handover))
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
        let notify = if self.settings.ready.uses_notify() {
            let n = NotifySocket::bind(self.runtime_dir, id, format!("[w{id} g{generation}]"), self.events.clone())?;
            set("NOTIFY_SOCKET", n.path().display().to_string());
            Some(n)
        } else {
            None
        };

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
            notify,
            settings: self.settings.clone(),
            ready_via: None,
            killed: false,
            respawn: true,
            timers: Vec::new(),
            handover,
        })
    }

    /// Takes over a worker the previous image started (self-upgrade).
    pub fn adopt(&self, w: &crate::upgrade::WorkerSnapshot, fds: crate::upgrade::WorkerFds) -> Result<Worker> {
        let pid = nix::unistd::Pid::from_raw(w.pid);
        let (ipc, handover) = self.attach((w.id, w.generation, pid), fds.ipc, fds.stdout, fds.stderr)?;
        let notify = if self.settings.ready.uses_notify() {
            Some(NotifySocket::bind(
                self.runtime_dir,
                w.id,
                format!("[w{} g{}]", w.id, w.generation),
                self.events.clone(),
            )?)
        } else {
            None
        };
        Ok(Worker {
            id: w.id,
            slot: w.slot,
            pid,
            generation: w.generation,
            state: w.state,
            started: Instant::now()
                .checked_sub(std::time::Duration::from_millis(w.age_ms))
                .unwrap_or_else(Instant::now),
            ipc,
            notify,
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
