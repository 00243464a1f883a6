//! One worker process: what the supervisor knows of it, and the signals
//! that change its state.
//!
//! The supervisor owns every [`Worker`] and nothing else touches one; its
//! fields are private to this folder, and every change of state goes
//! through a method here, which moves its [`Life`] (the functional core's
//! `life`: the state with what holds only in it) and sends what that takes
//! (`shutdown`, the stop signal, SIGKILL, its priority given back). The
//! rest of the folder, one concern a file:
//! - `launch`: starting one: its fds (listeners, IPC socketpair, output
//!   pipes), its environment, the fork through [`crate::sys::spawn`], and
//!   the tasks that carry its IPC and output.
//! - `held`: the primary's ends of it that a self-upgrade hands over, and
//!   what the upgrade says of it, out and back in.
//! - `diagnosis`: why it is not ready, in words, for the log and the
//!   failure.
//!
//! Its exit is noticed by the reaper, by pid.

mod diagnosis;
mod held;
mod launch;

use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::accepting::Watch;
use super::core::life::{self, Starting};
use super::core::stop::Way;
use crate::io::ipc::{self, Channel};
use crate::io::last_lines::LastLines;
use crate::io::worker_notify::NotifySocket;
use crate::options::Settings;
use crate::types::{label, Killed, NodeState, ReadyVia, WorkerId, WorkerState};
use held::HeldEnds;

pub use super::core::life::Health;
pub use launch::{base_env, runs_node, Launcher};

/// A worker's life, with the shell's accept watch.
type Life = life::Life<Watch>;

#[derive(Debug)]
pub struct Worker {
    id: WorkerId,
    /// Which of the N places this worker fills; a replacement takes it over.
    slot: usize,
    pid: Pid,
    generation: u64,
    /// Starting, ready or stopping, with what holds only then.
    life: Life,
    started: Instant,
    /// None once disconnected.
    ipc: Option<Channel>,
    /// The worker's own `NOTIFY_SOCKET`, in the notify readiness modes;
    /// held so that it lives (and is removed) with the worker.
    _notify: Option<NotifySocket>,
    /// The settings it was started with (its generation's).
    settings: Rc<Settings>,
    /// Copies of the primary's ends of its IPC channel and output pipes,
    /// to hand over to the next image on self-upgrade.
    held: HeldEnds,
    /// Set for a Node.js cluster worker (`NODE_UNIQUE_ID`).
    node: Option<NodeState>,
    /// Whether it said anything on its IPC channel: for the diagnosis of a
    /// worker that never gets ready, `--ready auto`, and how it is asked
    /// to stop.
    spoke: bool,
    /// What hotswap's preload told it patched (or could not).
    preload: Vec<crate::types::wire::PreloadPatch>,
    /// `disconnect` was sent to events clients (once per worker).
    disconnect_told: bool,
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
        self.life.state()
    }
    pub fn settings(&self) -> &Rc<Settings> {
        &self.settings
    }
    pub fn killed(&self) -> bool {
        self.life.killed().is_some()
    }
    /// Why hotswap sent it SIGKILL, if it did.
    pub fn killed_for(&self) -> Option<Killed> {
        self.life.killed()
    }
    /// Why it never got ready, when it was given up on for that.
    pub fn not_ready(&self) -> Option<&str> {
        self.life.not_ready()
    }
    /// Whether its exit is to be made good by a replacement.
    pub fn respawn(&self) -> bool {
        self.life.respawn()
    }
    /// How long it has been running.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }
    /// Its last lines of output, as read so far.
    pub fn last_lines(&self) -> &LastLines {
        &self.held.last
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

    /// It said something on its IPC channel.
    pub fn spoke(&mut self) {
        self.spoke = true;
    }

    /// It sent something on its `NOTIFY_SOCKET` (which matters while it
    /// starts).
    pub fn notified(&mut self) {
        if let Some(s) = self.life.starting_mut() {
            s.notified = true;
        }
    }

    /// Whether it speaks IPC or Node's cluster protocol: under `--ready
    /// auto` it is ready by what it says there, and its accepts no longer
    /// matter. (`READY=1` is not enough on its own: see
    /// [`super::accepting`].)
    pub fn speaks_ipc(&self) -> bool {
        self.spoke || self.node.is_some()
    }

    /// Whether it sent anything on its `NOTIFY_SOCKET` while starting.
    pub fn notifies(&self) -> bool {
        self.life.starting().is_some_and(|s| s.notified)
    }

    /// How it became ready (also once stopping after it was).
    pub fn ready_via(&self) -> Option<ReadyVia> {
        self.life.readiness().map(|r| r.via)
    }

    /// How long it took to get ready.
    pub fn ready_in(&self) -> Option<Duration> {
        self.life.readiness().and_then(|r| r.took)
    }

    /// What proved it takes connections, if its accepts counted:
    /// `probe`, `accept` or `connection`.
    pub fn ready_proof(&self) -> Option<&'static str> {
        self.life.readiness()?.proof().map(|h| h.name())
    }

    /// What the primary sees of its accepts, while it starts.
    pub fn accept_watch_mut(&mut self) -> Option<&mut Watch> {
        self.life.starting_mut().map(|s| &mut s.accept)
    }

    /// Its `--health-check`, while it starts (unchecked otherwise).
    pub fn health(&self) -> Health {
        self.life.starting().map_or(Health::Unchecked, |s| s.health)
    }

    /// Where its health check is; ignored unless it is starting.
    pub fn set_health(&mut self, h: Health) {
        if let Some(s) = self.life.starting_mut() {
            s.health = h;
        }
    }
    /// `[w3 g2 1234]`: how the worker is named in every log line.
    pub fn label(&self) -> String {
        label(self.id, self.generation, self.pid.as_raw())
    }

    /// Starting -> Ready, with what its accepts proved. Gives back what
    /// it held while starting (its warm-up priority is the caller's to give
    /// back); None if it was not starting ([`life::Life::ready`]).
    pub fn mark_ready(&mut self, via: ReadyVia) -> Option<Starting<Watch>> {
        let proof = self.life.starting().and_then(|s| s.accept.proof());
        self.life.ready(via, self.started.elapsed(), proof)
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
        self.held.ipc = None;
        self.ipc.take().is_some()
    }

    /// A stopping worker's exit is not to be made good by a replacement
    /// (a starting or ready one is retired by being stopped).
    pub fn retire(&mut self) {
        self.life.retire();
    }

    /// How it is asked to drain.
    fn way(&self) -> Way {
        Way::of(self.node.is_some(), self.ipc.is_some(), self.ready_via(), self.settings.ready, self.spoke)
    }

    /// Whether it would be told to go by `--stop-signal` (not by Node's
    /// `disconnect` or `shutdown` over IPC).
    pub fn stops_by_signal(&self) -> bool {
        self.way() == Way::Signal
    }

    /// It is leaving (its slot is given up, it is quiesced or its
    /// connections copied first): stopping, not to be replaced, not yet
    /// told.
    pub fn leave(&mut self) {
        let left = self.life.stop();
        self.end_warmup(left);
    }

    /// Asks the worker to drain and exit: `shutdown` over IPC (then the
    /// channel is closed) when it speaks IPC, else `--stop-signal` to its
    /// main process, as systemd would. Returns whether IPC was used.
    pub fn shutdown(&mut self) -> bool {
        let left = self.life.stop();
        self.end_warmup(left);
        let way = self.way();
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
        self.held.ipc = None;
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

    /// Why it never got ready, when it is stopped another way (a starting
    /// worker that failed its health check drains).
    pub fn set_not_ready(&mut self, why: String) {
        self.life.fail(why);
    }

    /// SIGKILL to the worker's whole process group, because it was not
    /// ready in time (`why`; `killed`: which deadline or check).
    pub fn kill_not_ready(&mut self, why: String, killed: Killed) {
        self.life.fail(why);
        self.kill(killed);
    }

    /// A worker told to go before it was ready gets the primary's priority
    /// back first: at a low one, on a busy machine, even dying (which runs
    /// in its own threads) or draining takes long. `left`: what it held
    /// while starting, if it was.
    fn end_warmup(&self, left: Option<Starting<Watch>>) {
        if let Some((warm, original)) = left.and_then(|s| s.warm) {
            let _ = crate::sys::priority::restore_group(self.pid.as_raw(), warm, original);
        }
    }

    /// SIGKILL to the worker's whole process group, for the reason `why`.
    pub fn kill(&mut self, why: Killed) {
        let killing = self.life.kill(why);
        self.end_warmup(killing.left);
        self.ipc = None;
        self.held.ipc = None;
        if killing.signal {
            let _ = killpg(self.pid, Signal::SIGKILL);
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }
}
