//! Lifecycle events, streamed to `hotswap events` clients as they happen:
//! the same events Node's `cluster` module emits (`fork`, `online`,
//! `listening`, `disconnect`, `exit`) plus the reload's own
//! (`reload-started`, `reload-finished`, `reload-failed`) and `stopping`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use crate::control::{Reply, ReplyTx};
use crate::worker::WorkerId;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LifecycleEvent {
    /// `fork`, `online`, `listening`, `disconnect`, `exit`,
    /// `reload-started`, `reload-finished`, `reload-failed`, `stopping`.
    pub event: String,
    /// Seconds since the Unix epoch, with fractions.
    pub time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// `exit`: the exit code, when it exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// `exit`: the signal's name, when it was killed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl LifecycleEvent {
    pub fn new(event: &str) -> LifecycleEvent {
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        LifecycleEvent { event: event.into(), time, ..Default::default() }
    }

    /// One line for people.
    pub fn render(&self) -> String {
        let mut s = format!("{:<16}", self.event);
        if let Some(w) = self.worker {
            s += &format!(" worker={w}");
        }
        if let Some(p) = self.pid {
            s += &format!(" pid={p}");
        }
        if let Some(g) = self.generation {
            s += &format!(" generation={g}");
        }
        if let Some(c) = self.code {
            s += &format!(" code={c}");
        }
        if let Some(sig) = &self.signal {
            s += &format!(" signal={sig}");
        }
        if let Some(m) = &self.message {
            s += &format!(" {m}");
        }
        s
    }
}

/// The connected `hotswap events` clients, each with a copy of its
/// connection so that a self-upgrade can hand it over.
#[derive(Debug, Default)]
pub struct Watchers(Vec<(ReplyTx, Option<OwnedFd>)>);

impl Watchers {
    pub fn add(&mut self, tx: ReplyTx, conn: Option<OwnedFd>) {
        self.0.push((tx, conn));
    }

    /// Sends to every client, forgetting those that left.
    pub fn emit(&mut self, event: LifecycleEvent) {
        if self.0.is_empty() {
            return;
        }
        self.0.retain(|(tx, _)| tx.send(Reply::Event(event.clone())).is_ok());
    }

    /// The connections to hand over on self-upgrade.
    pub fn fds(&self) -> Vec<RawFd> {
        self.0.iter().filter_map(|(_, fd)| fd.as_ref().map(|f| f.as_raw_fd())).collect()
    }
}
