//! Starting a worker: its fds (listeners, IPC socketpair, output pipes, a
//! notify socket), its environment, the fork through
//! [`crate::sys::spawn`], and the tasks that carry its IPC and output.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::held::HeldEnds;
use super::{Life, Worker};
use crate::io::ipc::{self, Channel};
use crate::io::last_lines::LastLines;
use crate::io::log_format::LineLabel;
use crate::io::output::{Output, Stream};
use crate::io::worker_notify::NotifySocket;
use crate::node;
use crate::options::{NodeMode, Settings};
use crate::sys::listeners::{self, ListenAddr, Listener};
use crate::sys::spawn::{self, Fds};
use crate::types::{label, Event, NodeState, WorkerId};

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
    pub(super) fn attach(
        &self,
        (id, generation, pid): (WorkerId, u64, Pid),
        ipc: Option<OwnedFd>,
        out_r: OwnedFd,
        err_r: OwnedFd,
        carried: [&[u8]; 2],
        queue: usize,
    ) -> Result<(Option<Channel>, HeldEnds)> {
        let copy = |fd: &OwnedFd| fd.try_clone().context("duplicating a worker fd");
        let (ipc_copy, stdout, stderr) = (ipc.as_ref().map(copy).transpose()?, copy(&out_r)?, copy(&err_r)?);
        let line_label = LineLabel::worker(id, generation, pid.as_raw());
        let last = LastLines::new();
        let pending = [
            self.output.forward(out_r, Stream::Stdout, line_label.clone(), carried[0], Some(last.clone())),
            self.output.forward(err_r, Stream::Stderr, line_label, carried[1], Some(last.clone())),
        ];
        let held = HeldEnds { ipc: ipc_copy, stdout, stderr, pending, bind_notify: None, last };
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
        Ok((channel, held))
    }

    pub(super) fn notify_socket(&self, id: WorkerId, generation: u64) -> Result<Option<NotifySocket>> {
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

        let (ipc, mut held) = self.attach(
            (id, generation, pid),
            Some(ours),
            out_r,
            err_r,
            [&[], &[]],
            if primary.is_some() { ipc::PRIMARY_QUEUE } else { ipc::OUTGOING_QUEUE },
        )?;
        held.bind_notify = bind_notify;
        Ok(Worker {
            id,
            slot,
            pid,
            generation,
            life: Life::start(self.warm),
            started: Instant::now(),
            ipc,
            _notify: notify,
            settings: self.settings.clone(),
            held,
            node: is_node.then(NodeState::default),
            spoke: false,
            preload: Vec::new(),
            disconnect_told: false,
        })
    }

    pub(in crate::supervisor) fn is_node(&self) -> bool {
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
