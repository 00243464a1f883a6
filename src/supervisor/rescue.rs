//! The supervisor's side of rescue ([`crate::io::rescue`]): a retiring
//! worker is told to stop only once the rescue has copied its connections,
//! its exit is passed on, and what the rescue did is counted (`/metrics`,
//! the reload's answer).
//!
//! Not during a stop of the primary: there is no serving generation to
//! pass a request to, and connections held from earlier reloads are closed
//! (as their worker would have). Not across a self-upgrade: the exec waits
//! (at most [`CLOSE_MAX`]) for the exchanges under way and, for 1.5 s of
//! that, for the requests of connections waiting for one, then closes those
//! still waiting; the new image watches the workers still stopping again.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::Supervisor;
use crate::types::event::RescueNote;
use crate::types::{Exit, WorkerId, WorkerState};

/// How long a self-upgrade waits for rescued exchanges under way.
pub(super) const CLOSE_MAX: Duration = Duration::from_millis(2500);

/// Rescue's bookkeeping: the task, the workers it is looking at, what it
/// counted when the running reload began, whether that reload waits for its
/// count, whether a copy was refused. Private to this file: the reloads
/// and the quiesce ask its methods.
#[derive(Default)]
pub(super) struct Rescuing {
    /// Holds retiring workers' connections (`--rescue`; TCP listeners).
    task: Option<crate::io::rescue::Rescue>,
    /// Workers told to stop once the rescue has looked at them.
    looking: std::collections::HashSet<WorkerId>,
    /// The rescued requests counted when the running reload began.
    before_reload: u64,
    /// The running reload is done and waits for the rescue's count.
    settling: bool,
    /// Copies of a worker's connections were refused: later workers are
    /// told rescue does not cover them.
    denied: bool,
}

impl Supervisor {
    /// Starts the rescue task if the primary has a TCP listener.
    pub(super) fn start_rescue(&mut self) {
        let tcp: Vec<std::net::SocketAddr> = self
            .sockets
            .listeners
            .iter()
            .filter_map(|l| match &l.addr {
                crate::sys::listeners::ListenAddr::Tcp(sa) => Some(*sa),
                _ => None,
            })
            .collect();
        if tcp.is_empty() {
            return;
        }
        if let Err(e) = crate::sys::pidfd::probe() {
            tracing::warn!(
                "rescue: off: this primary may not copy file descriptors (pidfd_getfd: {e}; a kernel before 5.6 \
                 or a seccomp profile that refuses it); the Node preload's drain patch applies (--drain-patch auto)"
            );
            return;
        }
        self.rescue.task = Some(crate::io::rescue::Rescue::start(tcp, self.io.events.clone()));
    }

    /// Whether rescue covers the workers started now with `settings`: it
    /// runs (a TCP listener, copies allowed), `--rescue` is on, and no
    /// copy was refused yet. Told to each worker as `HOTSWAP_RESCUE`, where
    /// the preloads decide whether their drain patches are needed.
    pub(super) fn rescue_covers(&self, settings: &crate::options::Settings) -> bool {
        self.rescue.task.is_some() && settings.rescue && !self.rescue.denied
    }

    /// Before a worker is told to stop: the rescue copies its connections
    /// first. True when the caller must not tell it now: it is told when the
    /// rescue has looked ([`RescueNote::Looked`]).
    pub(super) fn rescue_first(&mut self, id: WorkerId) -> bool {
        let Some(rescue) = &self.rescue.task else { return false };
        if self.stop.is_some() || self.rescue.looking.contains(&id) {
            return false;
        }
        let Some(w) = self.workers.get_mut(&id) else { return false };
        if !w.settings().rescue || w.killed() || w.state() == WorkerState::Starting {
            return false;
        }
        w.leave();
        rescue.watch(id, w.pid().as_raw(), w.label());
        self.rescue.looking.insert(id);
        true
    }

    pub(super) fn on_rescue(&mut self, note: RescueNote) {
        match note {
            RescueNote::Looked(id) => {
                if self.rescue.looking.remove(&id) && self.workers.contains_key(&id) {
                    self.tell_shutdown(id);
                }
            }
            RescueNote::Rescued => self.metrics.counters.rescued_requests += 1,
            RescueNote::GaveUp => self.metrics.counters.rescue_given_up += 1,
            RescueNote::Held(n) => self.metrics.counters.rescue_held = n as u64,
            RescueNote::Denied => self.rescue.denied = true,
            RescueNote::Settled => {
                if std::mem::take(&mut self.rescue.settling) {
                    self.finish_reload(None);
                }
            }
        }
    }

    /// A reload is done: it answers once the rescue has counted what its
    /// last worker's exit left waiting (at most half a second). True when
    /// the caller must not finish it now.
    pub(super) fn rescue_settle(&mut self) -> bool {
        if self.rescue.settling {
            return true;
        }
        let Some(r) = &self.rescue.task else { return false };
        if !self.settings.rescue {
            return false;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        r.settle(tx);
        let events = self.io.events.clone();
        tokio::spawn(async move {
            let _ = rx.await;
            let _ = events.send(crate::types::Event::Rescue(RescueNote::Settled)).await;
        });
        self.rescue.settling = true;
        true
    }

    /// A worker exited: the rescue closes what it held of it (killed, or
    /// died by a signal other than its stop signal: it may have been
    /// mid-answer) or passes on what comes on them (it exited, or its stop
    /// signal ended it, which is how many servers stop).
    pub(super) fn rescue_exited(&mut self, id: WorkerId, how: Exit, killed: bool, stop_signal: Signal) {
        self.rescue.looking.remove(&id);
        if let Some(r) = &self.rescue.task {
            r.exited(id, killed || matches!(how, Exit::Signal(s) if s != stop_signal));
        }
    }

    /// The primary stops: nothing more is held.
    pub(super) fn rescue_stop(&mut self) {
        if let Some(r) = &self.rescue.task {
            r.close(None);
        }
    }

    /// Before the exec of a self-upgrade: the exchanges under way end (at
    /// most [`CLOSE_MAX`]), the connections waiting for a request are closed.
    pub(super) async fn rescue_close_for_exec(&mut self) {
        let Some(r) = &self.rescue.task else { return };
        let (tx, rx) = tokio::sync::oneshot::channel();
        r.close(Some(tx));
        if tokio::time::timeout(CLOSE_MAX, rx).await.is_err() {
            tracing::warn!("upgrade: rescued exchanges still under way after {} ms are cut", CLOSE_MAX.as_millis());
        }
    }

    /// After a self-upgrade failed before the exec: the rescue holds again.
    pub(super) fn rescue_reopen(&mut self) {
        if let Some(r) = &self.rescue.task {
            r.reopen();
        }
    }

    /// A new image watches the workers still stopping again.
    pub(super) fn rescue_resume(&mut self) {
        let Some(r) = &self.rescue.task else { return };
        for w in self.workers.values() {
            if w.state() == WorkerState::Stopping && w.settings().rescue && !w.killed() {
                r.watch(w.id(), w.pid().as_raw(), w.label());
            }
        }
    }

    /// The rescued requests counted so far (for the reload's answer).
    fn rescued(&self) -> u64 {
        self.metrics.counters.rescued_requests
    }

    /// A reload begins: what the rescue counts from now on is its.
    pub(super) fn rescue_reload_began(&mut self) {
        self.rescue.before_reload = self.rescued();
    }

    /// The running reload ends: the requests rescued during it.
    pub(super) fn rescue_reload_ended(&mut self) -> u64 {
        self.rescue.settling = false;
        self.rescued() - self.rescue.before_reload
    }
}
