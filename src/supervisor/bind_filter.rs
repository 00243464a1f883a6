//! The bind filter of a worker being started (`--bind-intercept`,
//! docs/own-bind.md): whether it gets one, what became of it, and the
//! sockets its binds may be given. Linux only.

use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::worker::Launcher;
use crate::options::NodeMode;
use crate::sys::listeners::ListenAddr;
use crate::types::{label, WorkerId};

impl Launcher<'_> {
    /// The bind filter a new worker gets (`--bind-intercept`): under
    /// `auto` when some listener is TCP, the worker is not a Node.js
    /// cluster worker (which asks hotswap for its sockets over IPC, and
    /// would pay the filter's cost on every system call for nothing) and
    /// the kernel can; `on` refuses to start a worker without it.
    pub(super) fn bind_filter(
        &self,
        id: WorkerId,
        generation: u64,
    ) -> Result<Option<crate::io::bind_intercept::Filter>> {
        use crate::io::bind_intercept;
        let tcp = self.listeners.iter().any(|l| matches!(l.addr, ListenAddr::Tcp(_)));
        match self.settings.bind_intercept {
            NodeMode::Off => Ok(None),
            NodeMode::Auto if !tcp || self.is_node() => Ok(None),
            mode => match bind_intercept::support() {
                Ok(()) => Ok(Some(bind_intercept::Filter::new())),
                Err(why) if mode == NodeMode::On => anyhow::bail!("--bind-intercept on: {why}"),
                Err(why) => {
                    bind_intercept::refused(&format!("[w{id} g{generation}]"), id, &why);
                    Ok(None)
                }
            },
        }
    }

    /// What became of a new worker's bind filter: in place, its calls are
    /// answered from now on (and a copy of its fd is returned, for an
    /// upgrade); refused, said. A worker whose filter is in place but
    /// cannot be answered, or refused under `on`, is killed: its binds
    /// would fail with `ENOSYS`.
    pub(super) fn bind_intercepted(
        &self,
        installed: crate::io::bind_intercept::Installed,
        (id, generation, pid): (WorkerId, u64, Pid),
        slot: usize,
    ) -> Result<Option<OwnedFd>> {
        use crate::io::bind_intercept::{self, Installed};
        let name = label(id, generation, pid.as_raw());
        let kill_it = |why: anyhow::Error| {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            why
        };
        match installed {
            Installed::No => Ok(None),
            Installed::Yes(notifier) => {
                let answered = (|| {
                    let copy = notifier.try_clone().context("duplicating its bind filter's fd")?;
                    let targets = self.bind_targets(slot)?;
                    bind_intercept::serve(notifier, targets, id, name.clone()).context("answering its bind filter")?;
                    Ok(copy)
                })();
                answered.map(Some).map_err(kill_it)
            }
            Installed::Refused(e) => {
                let why = crate::sys::bind_intercept::explain(&e);
                if self.settings.bind_intercept == NodeMode::On {
                    return Err(kill_it(anyhow::anyhow!("--bind-intercept on: {name}: {why}")));
                }
                bind_intercept::refused(&name, id, &why);
                Ok(None)
            }
        }
    }

    /// Copies of the sockets a worker of `slot` holds at fd 3, 4, ...,
    /// with their addresses: what its binds may be given.
    pub(super) fn bind_targets(&self, slot: usize) -> Result<Vec<crate::io::bind_intercept::Target>> {
        let fds = self.slot_sockets.fds(self.listeners, slot);
        self.listeners
            .iter()
            .zip(fds)
            .map(|(l, fd)| {
                let addr = match &l.addr {
                    ListenAddr::Tcp(sa) => Some(*sa),
                    ListenAddr::Unix(_) => None,
                };
                // SAFETY: the fd is a listener's or slot socket's, which the
                // primary keeps open for its life; only borrowed to copy it.
                let copy = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
                    .try_clone_to_owned()
                    .with_context(|| format!("duplicating {}", l.addr))?;
                crate::io::bind_intercept::Target::new(addr, copy).with_context(|| format!("{}", l.addr))
            })
            .collect()
    }
}
