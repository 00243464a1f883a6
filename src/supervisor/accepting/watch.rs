//! What the primary knows of one starting worker's accepts ([`Watch`]:
//! what the looks proved, its probe connections, what it holds besides
//! hotswap's sockets) and of the commands whose workers announce their
//! readiness ([`Announcers`]). The looks that fill them are in the parent
//! module.

use std::time::{Duration, Instant};

use super::super::readiness::{self, Seen};
use crate::io::accepts::Probe;
use crate::types::accepts::How;
use crate::types::ReadyVia;

/// One of the primary's probe connections to a starting worker.
#[derive(Debug)]
pub(super) struct OpenProbe {
    pub(super) probe: Probe,
    pub(super) made: Instant,
    /// Looks that searched the worker for it.
    pub(super) looks: u32,
    /// Whether the look in flight searches for it.
    pub(super) asked: bool,
}

/// What the primary saw of one starting worker's accepts.
#[derive(Debug, Default)]
pub struct Watch {
    /// Its listening sockets proven taken from, and how (kept across looks).
    pub(super) proven: Vec<(u64, How)>,
    /// When the last of them was proven.
    pub(super) proven_since: Option<Instant>,
    /// Whether the last look saw every socket at least waited on.
    pub(super) waiting: bool,
    /// What the last look found, in words, for the diagnosis.
    pub(super) last: Option<String>,
    /// Whether a failure to look was logged (once per worker).
    pub(super) warned: bool,
    /// Socket inodes of its own already looked up in the socket tables.
    pub(super) looked_up: Vec<u64>,
    /// When the socket tables were last read for it: at most once a second
    /// (they can be megabytes on a busy host).
    pub(super) last_lookup: Option<Instant>,
    /// Listening sockets of its own found there, in words.
    pub(super) own: Vec<String>,
    /// What its `PORT` has to do with them (the supervisor's `port_hint`).
    pub(super) port_hint: Option<String>,
    /// Whether the last look found sockets of its group besides hotswap's
    /// not yet looked up in the socket tables (or could not see
    /// everything): any could be a listener of its own.
    pub(super) other_sockets: bool,
    /// Whether looks go on (an [`crate::types::Timer::AcceptCheck`] is armed or a look
    /// is in flight).
    pub(super) looking: bool,
    /// A look was asked and has not come back.
    pub(super) in_flight: bool,
    /// An [`crate::types::Timer::AcceptSettled`] is armed.
    pub(super) settling: bool,
    /// Under `auto`: it sent `READY=1` and is ready once proven.
    pub(super) said_ready: bool,
    pub(super) probes: Vec<OpenProbe>,
    pub(super) probes_made: u32,
    pub(super) last_probe: Option<Instant>,
    /// What the last look cost (the next is spaced by it).
    pub(super) cost: Duration,
    /// Sockets of its own to look up in the socket tables at the next look
    /// (a pid of the group, their inodes).
    pub(super) own_ask: Option<(i32, Vec<u64>)>,
}

impl Watch {
    /// What the last look found: for the log and the failure of a worker
    /// that does not get ready.
    pub fn describe(&self) -> String {
        let mut text = self.last.clone().unwrap_or_else(|| "it has not been seen accepting yet".into());
        if !self.own.is_empty() {
            text += &format!("; it listens on a socket of its own instead: {}", self.own.join(", "));
        }
        if let Some(hint) = &self.port_hint {
            text += &format!(" ({hint})");
        }
        text
    }

    /// Whether the looks saw nothing of it serving: not waiting on the
    /// sockets it inherited, not accepting from them, and none of its other
    /// sockets (its IPC channel, clients of a database...) found listening
    /// in the socket tables, every one looked up (after at least one look).
    /// Until they are, it is not said to serve nothing.
    pub fn serves_nothing(&self) -> bool {
        self.last.is_some() && !self.waiting && self.proven.is_empty() && self.own.is_empty() && !self.other_sockets
    }

    /// Whether it sent `READY=1` and waits to be seen accepting.
    pub fn said_ready(&self) -> bool {
        self.said_ready
    }

    /// The watch of a worker adopted in a self-upgrade (looks start again).
    pub fn resumed(said_ready: bool) -> Watch {
        Watch { said_ready, ..Default::default() }
    }

    /// How it was proven to take connections (the first socket's proof):
    /// `probe`, `accept` or `connection`.
    pub fn proof(&self) -> Option<How> {
        self.proven.first().map(|p| p.1)
    }

    pub(super) fn seen(&self) -> Seen {
        match (self.proven_since, self.waiting) {
            (Some(t), _) => Seen::Proven(t),
            (None, true) => Seen::Waiting,
            (None, false) => Seen::Nothing,
        }
    }

    /// Closes every probe (it is proven, ready, or gone).
    pub(super) fn end_probes(&mut self) {
        self.probes.clear();
    }
}

/// The commands whose workers announced their readiness (IPC, notify, Node
/// cluster), for `--ready auto`: their later workers are judged by that
/// alone, never by their accepts, since the app may accept before it is
/// done starting (PM2's `wait_ready`, `READY=1` after a warm-up). A
/// worker's own `"ready"`/`listening` overrides Node's cluster `listening`
/// ([`readiness::learned`]).
#[derive(Debug, Default)]
pub struct Announcers(Vec<(Vec<String>, ReadyVia)>);

impl Announcers {
    pub fn learn(&mut self, command: &[String], via: ReadyVia) {
        let known = self.how(command);
        let new = readiness::learned(known, via);
        if new != known {
            let Some(new) = new else { return };
            tracing::debug!("workers of {command:?} announce their readiness ({new}): later ones wait for it");
            self.0.retain(|(c, _)| c != command);
            self.0.push((command.to_vec(), new));
        }
    }

    /// How workers of `command` announce their readiness, if they do.
    pub fn how(&self, command: &[String]) -> Option<ReadyVia> {
        self.0.iter().find(|(c, _)| c == command).map(|(_, v)| *v)
    }

    /// What is handed over in a self-upgrade.
    pub fn snapshot(&self) -> Vec<(Vec<String>, ReadyVia)> {
        self.0.clone()
    }

    pub fn restore(learned: &[(Vec<String>, ReadyVia)]) -> Announcers {
        Announcers(learned.to_vec())
    }
}
