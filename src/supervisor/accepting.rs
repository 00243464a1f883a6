//! `--ready accepting` (and the accepting part of `auto`): a starting
//! worker is looked at in `/proc` until one of its processes accepts on
//! every listening socket, then never again.
//!
//! Looks come as [`Timer::AcceptCheck`]s on the event loop: each is a short
//! synchronous walk of `/proc` (0.1-0.3 ms, see [`crate::sys::accepting`]),
//! every 20 ms at first, backing off to every 50 ms for a worker that takes
//! long to start. Under `auto` a worker that speaks a readiness protocol of
//! its own (IPC, notify, Node's cluster) is judged by it and no longer
//! looked at, and accepting counts only once it has been seen for
//! [`AUTO_SETTLE`] with the worker silent meanwhile: an app that accepts
//! first and announces readiness a moment later is ready by its
//! announcement. One that announces it much later is learned
//! ([`Announcers`]): once a worker of a command announced, every later
//! worker of the same command waits for the announcement.

use std::time::{Duration, Instant};

use super::Supervisor;
use crate::options::ReadyMode;
use crate::types::{ReadyVia, Timer, WorkerId, WorkerState};

/// The first look, and the shortest interval between looks.
const FIRST: Duration = Duration::from_millis(20);
/// The longest interval between looks, reached after a second of start-up.
const LONGEST: Duration = Duration::from_millis(50);
/// Under `--ready auto`: how long a worker must be seen accepting, saying
/// nothing on IPC or notify, before accepting makes it ready.
pub const AUTO_SETTLE: Duration = Duration::from_millis(100);

/// What the primary saw of one starting worker's accepts.
#[derive(Debug, Default)]
pub struct Watch {
    /// When it was first seen accepting on every socket.
    seen_since: Option<Instant>,
    /// What the last look found, in words, for the diagnosis.
    last: Option<String>,
    /// Whether a failure to look was logged (once per worker).
    warned: bool,
}

impl Watch {
    /// What the last look found: for the log and the failure of a worker
    /// that does not get ready.
    pub fn describe(&self) -> String {
        self.last.clone().unwrap_or_else(|| "it has not been seen accepting yet".into())
    }
}

/// The commands whose workers announced their readiness (IPC, notify, Node
/// cluster), for `--ready auto`: their later workers are judged by that
/// alone, never by their accepts, since the app may accept before it is
/// done starting (PM2's `wait_ready`, `READY=1` after a warm-up).
#[derive(Debug, Default)]
pub struct Announcers(Vec<(Vec<String>, ReadyVia)>);

impl Announcers {
    pub fn learn(&mut self, command: &[String], via: ReadyVia) {
        if self.how(command).is_none() {
            tracing::debug!("workers of {command:?} announce their readiness ({via}): accepting no longer counts");
            self.0.push((command.to_vec(), via));
        }
    }

    /// How workers of `command` announce their readiness, if they do.
    pub fn how(&self, command: &[String]) -> Option<ReadyVia> {
        self.0.iter().find(|(c, _)| c == command).map(|(_, v)| *v)
    }
}

/// The inodes of the listening sockets: how workers' copies are recognised.
pub(super) fn inodes(listeners: &[crate::sys::listeners::Listener]) -> anyhow::Result<Vec<u64>> {
    #[cfg(target_os = "linux")]
    {
        use anyhow::Context;
        use std::os::fd::AsFd;
        listeners
            .iter()
            .map(|l| crate::sys::accepting::socket_inode(l.as_fd()).with_context(|| format!("listener {}", l.addr)))
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listeners;
        Ok(Vec::new())
    }
}

impl Supervisor {
    /// The inodes of the sockets a worker in `slot` holds: the listeners,
    /// or its slot's sockets under `--balance slots|sticky`.
    fn inodes_of(&self, slot: usize) -> Vec<u64> {
        #[cfg(target_os = "linux")]
        if self.slot_sockets.per_slot() {
            return self
                .slot_sockets
                .borrowed(&self.listeners, slot)
                .into_iter()
                .map(|fd| crate::sys::accepting::socket_inode(fd).unwrap_or(0))
                .collect();
        }
        let _ = slot;
        self.inodes.clone()
    }

    /// Starts looking at a new worker's accepts, if its readiness mode does.
    pub(super) fn watch_accepts(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else { return };
        let mode = w.settings().ready;
        let learned = self.announcers.how(&w.settings().command);
        let judged_otherwise = mode == ReadyMode::Auto && (w.announces() || self.inodes.is_empty() || learned.is_some());
        if let (ReadyMode::Auto, Some(via), Some(w)) = (mode, learned, self.workers.get_mut(&id)) {
            w.accept_watch_mut().last = Some(format!(
                "earlier workers of this command announced their readiness ({via}), so under --ready auto its \
                 accepts do not count"
            ));
        }
        if mode.uses_accepting() && !judged_otherwise {
            self.worker_timer(id, FIRST, Timer::AcceptCheck(id));
        }
    }

    /// Looks whether a starting worker accepts; marks it ready, or looks
    /// again later.
    pub(super) fn on_accept_check(&mut self, id: WorkerId) {
        let Some(slot) = self.workers.get(&id).map(|w| w.slot()) else { return };
        let inodes = self.inodes_of(slot);
        let Some(w) = self.workers.get_mut(&id) else { return };
        let auto = w.settings().ready == ReadyMode::Auto;
        if w.state() != WorkerState::Starting || (auto && w.announces()) {
            return;
        }
        let now = Instant::now();
        let mut next = (w.age() / 20).clamp(FIRST, LONGEST);
        match look(w.pid().as_raw(), &inodes) {
            Ok(report) if report.all_seen(&inodes) => {
                let since = *w.accept_watch_mut().seen_since.get_or_insert(now);
                let waited = now - since;
                if !auto || waited >= AUTO_SETTLE {
                    let how: Vec<String> = report.seen.iter().map(|s| format!("pid {} by {}", s.pid, s.how)).collect();
                    tracing::debug!(worker = id, "{} accepts ({})", w.label(), how.join(", "));
                    self.mark_ready(id, ReadyVia::Accepting);
                    return;
                }
                w.accept_watch_mut().last =
                    Some(format!("it accepts (for {} ms), and says nothing on IPC or notify", waited.as_millis()));
                next = AUTO_SETTLE - waited;
            }
            Ok(report) => {
                let text = self.describe(&report, &inodes);
                let w = self.workers.get_mut(&id).expect("looked up above");
                w.accept_watch_mut().last = Some(text);
            }
            Err(e) => {
                let watch = w.accept_watch_mut();
                watch.last = Some(format!("its processes could not be looked at in /proc: {e}"));
                if !std::mem::replace(&mut watch.warned, true) {
                    tracing::warn!(worker = id, "{}: cannot see whether it accepts: {e}", w.label());
                }
            }
        }
        self.worker_timer(id, next, Timer::AcceptCheck(id));
    }

    /// A look that did not see every socket accepted on, in words: which
    /// socket, and what could not be seen.
    fn describe(&self, report: &Report, inodes: &[u64]) -> String {
        if report.processes == 0 {
            return "its process group is empty".into();
        }
        let missing: Vec<String> = self
            .listeners
            .iter()
            .zip(inodes)
            .enumerate()
            .filter(|(_, (_, inode))| !report.is_seen(**inode))
            .map(|(i, (l, _))| format!("{} (fd {})", l.addr, 3 + i))
            .collect();
        let whose = match report.processes {
            1 => "its process".to_string(),
            n => format!("its {n} processes"),
        };
        let mut text = format!(
            "it never accepted on {}: no epoll set of {whose} holds the socket, and no thread of theirs is \
             blocked in accept, poll or select on it",
            missing.join(" and "),
        );
        for d in report.denied.iter() {
            text += &format!("; {d}");
        }
        text
    }
}

#[cfg(target_os = "linux")]
use crate::sys::accepting::Report;

#[cfg(target_os = "linux")]
fn look(pgid: i32, inodes: &[u64]) -> std::io::Result<Report> {
    crate::sys::accepting::accepting(pgid, inodes)
}

/// Elsewhere nothing is seen: the worker fails at `--ready-timeout` with
/// this reason.
#[cfg(not(target_os = "linux"))]
#[derive(Default)]
struct Report {
    processes: usize,
    denied: Vec<String>,
}

#[cfg(not(target_os = "linux"))]
impl Report {
    fn all_seen(&self, _: &[u64]) -> bool {
        false
    }
    fn is_seen(&self, _: u64) -> bool {
        false
    }
}

#[cfg(not(target_os = "linux"))]
fn look(_: i32, _: &[u64]) -> std::io::Result<Report> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "--ready accepting works on Linux only"))
}
