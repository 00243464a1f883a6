//! `--ready accepting` (and the accepting part of `auto`): a starting
//! worker is looked at in `/proc` until one of its processes is seen
//! *taking* connections on every listening socket, then never again.
//!
//! Looks are asked of the scanner's thread ([`crate::io::accepts`]) on
//! each [`Timer::AcceptCheck`], and judged when their [`crate::types::Event::Looked`]
//! comes back: every 20 ms at first, backing off to every 50 ms for a
//! worker that takes long to start, and never more often than ten times
//! what the last look cost. The rules are in [`super::readiness`]:
//!
//! * a thread blocked in `accept`, or a connection the worker holds that
//!   it accepted (a client's, or the primary's probe), proves it takes
//!   connections;
//! * a socket merely in an epoll set, or waited on in `poll`/`select`,
//!   proves nothing (Go, tokio, asyncio and Java NIO register it when the
//!   app takes fd 3, maybe before seconds of warm-up): the primary then
//!   connects to the listener itself ([`crate::io::accepts::Probe`]),
//!   bounded in rate and count, until the worker is seen holding one of
//!   its probe connections, and closes each probe once seen (or given up);
//! * under `auto`, a worker that speaks IPC or Node's cluster protocol is
//!   judged by it and no longer looked at; one that speaks sd_notify is
//!   ready once it sent `READY=1` *and* is proven, whichever comes last;
//!   one that says nothing is ready once proven and silent for
//!   [`AUTO_SETTLE`].
//!
//! One that announces much later is learned ([`Announcers`]): once a worker
//! of a command announced, every later worker of the same command waits for
//! the announcement.

use std::time::{Duration, Instant};

use socket2::SockAddr;

use super::readiness::{self, Verdict, AUTO_SETTLE};
use super::Supervisor;

mod own_listeners;
mod watch;

use crate::io::accepts::{Look, Probe};
use crate::options::ReadyMode;
use crate::types::accepts::Report;
use crate::types::{ReadyVia, Timer, WorkerId};
use own_listeners::OWN_LISTENER_GRACE;
use watch::OpenProbe;
pub use watch::{Announcers, Watch};

/// The first look, and the shortest interval between looks.
const FIRST: Duration = Duration::from_millis(20);
/// The longest interval between looks, reached after a second of start-up.
const LONGEST: Duration = Duration::from_millis(50);

/// What the looks at starting workers' accepts need, and what they learned:
/// all of it changed here alone (the commands that announce, through
/// [`Announcers`]' methods; the rest is set once at start).
pub(super) struct Looks {
    /// The listeners' socket inodes, in the same order: how `--ready
    /// accepting` recognises them in a worker's `/proc` entries.
    pub(super) inodes: Vec<u64>,
    /// Commands whose workers announce their readiness (`--ready auto`).
    pub(super) announcers: Announcers,
    /// Where looks at starting workers' accepts are asked (a thread of
    /// their own: [`crate::io::accepts`]).
    pub(super) accepts: std::sync::mpsc::Sender<Look>,
    /// The listeners' addresses, where probe connections go.
    pub(super) probe_targets: Vec<Option<SockAddr>>,
}

impl Looks {
    /// The looks at workers on `listeners`; their results come back as
    /// [`crate::types::Event::Looked`] on `events`.
    pub(super) fn new(
        listeners: &[crate::sys::listeners::Listener],
        events: tokio::sync::mpsc::Sender<crate::types::Event>,
    ) -> anyhow::Result<Looks> {
        use anyhow::Context;
        Ok(Looks {
            inodes: inodes(listeners)?,
            probe_targets: addresses(listeners),
            accepts: crate::io::accepts::start(events).context("starting the accepts scanner")?,
            announcers: Default::default(),
        })
    }
}

/// The inodes of the listening sockets: how workers' copies are recognised.
fn inodes(listeners: &[crate::sys::listeners::Listener]) -> anyhow::Result<Vec<u64>> {
    #[cfg(target_os = "linux")]
    {
        use anyhow::Context;
        use std::os::fd::AsFd;
        listeners
            .iter()
            .map(|l| crate::sys::acceptors::socket_inode(l.as_fd()).with_context(|| format!("listener {}", l.addr)))
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listeners;
        Ok(Vec::new())
    }
}

/// The addresses the listening sockets are bound to: where probes go.
fn addresses(listeners: &[crate::sys::listeners::Listener]) -> Vec<Option<SockAddr>> {
    use std::os::fd::AsFd;
    listeners.iter().map(|l| crate::io::accepts::listener_address(l.as_fd()).ok()).collect()
}

impl Supervisor {
    /// The inodes of the sockets a worker in `slot` holds: the listeners,
    /// or its slot's sockets under `--balance slots|sticky`.
    fn inodes_of(&self, slot: usize) -> Vec<u64> {
        #[cfg(target_os = "linux")]
        if self.sockets.slot_sockets.per_slot() {
            return self
                .sockets
                .slot_sockets
                .borrowed(&self.sockets.listeners, slot)
                .into_iter()
                .map(|fd| crate::sys::acceptors::socket_inode(fd).unwrap_or(0))
                .collect();
        }
        let _ = slot;
        self.looks.inodes.clone()
    }

    /// Whether every accept queue of the listening sockets is empty (None:
    /// they do not say, as Unix sockets, or a probe may wait outside them,
    /// with `TCP_DEFER_ACCEPT` set).
    fn queues_empty(&self) -> Option<bool> {
        use crate::io::accepts::{defers_accept, queued};
        let mut total = 0;
        if self.sockets.slot_sockets.per_slot() {
            for slot in 0..self.crash_history.len() {
                for fd in self.sockets.slot_sockets.borrowed(&self.sockets.listeners, slot) {
                    if defers_accept(fd) {
                        return None;
                    }
                    total += queued(fd)?;
                }
            }
        } else {
            use std::os::fd::AsFd;
            for l in &self.sockets.listeners {
                if defers_accept(l.as_fd()) {
                    return None;
                }
                total += queued(l.as_fd())?;
            }
        }
        Some(total == 0)
    }

    /// Starts looking at a new worker's accepts, if its readiness mode does.
    pub(super) fn watch_accepts(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else { return };
        let mode = w.settings().ready;
        let learned = self.looks.announcers.how(&w.settings().command);
        let auto = mode == ReadyMode::Auto;
        // IPC and Node cluster workers are ready by what they say; so is
        // every worker where nothing can be seen (no listening socket).
        let judged_otherwise = auto
            && (w.speaks_ipc()
                || self.looks.inodes.is_empty()
                || matches!(learned, Some(ReadyVia::Ipc | ReadyVia::Cluster)));
        let Some(w) = self.workers.get_mut(&id) else { return };
        let Some(watch) = w.accept_watch_mut() else { return };
        if let (true, Some(via)) = (auto, learned) {
            watch.last = Some(match via {
                ReadyVia::Notify => "earlier workers of this command sent READY=1, so under --ready auto it is \
                    ready once it sends READY=1 and accepts"
                    .into(),
                _ => format!(
                    "earlier workers of this command announced their readiness ({via}), so under --ready auto its \
                     accepts do not count"
                ),
            });
        }
        if mode.uses_accepting() && !judged_otherwise {
            watch.looking = true;
            self.worker_timer(id, FIRST, Timer::AcceptCheck(id));
        }
    }

    /// Whether a worker's accepts still matter; if not, its looks end.
    fn still_watched(&mut self, id: WorkerId) -> bool {
        let Some(w) = self.workers.get_mut(&id) else { return false };
        let auto = w.settings().ready == ReadyMode::Auto;
        let speaks_ipc = w.speaks_ipc();
        // Only a starting worker has a watch (it ends with its start).
        let Some(watch) = w.accept_watch_mut() else { return false };
        if (auto && speaks_ipc) || !watch.looking {
            watch.looking = false;
            watch.end_probes();
            return false;
        }
        true
    }

    /// Time to look at a starting worker: asks the scanner, with the
    /// probes it should search for.
    pub(super) fn on_accept_check(&mut self, id: WorkerId) {
        if !self.still_watched(id) {
            return;
        }
        let Some(w) = self.workers.get(&id) else { return };
        let (pgid, slot) = (w.pid().as_raw(), w.slot());
        let inodes = self.inodes_of(slot);
        let w = self.workers.get_mut(&id).expect("looked up above");
        let watch = w.accept_watch_mut().expect("still watched");
        if watch.in_flight {
            return; // its result arms the next look
        }
        let mut probes = Vec::new();
        for p in watch.probes.iter_mut() {
            p.asked = true;
            probes.push(p.probe.local().clone());
        }
        watch.in_flight = true;
        let own = watch.own_ask.take();
        if self.looks.accepts.send(Look { worker: id, pgid, inodes, probes, own }).is_err() {
            // The scanner thread is gone (it never is): look again later.
            tracing::error!(worker = id, "the accepts scanner is gone");
            w.accept_watch_mut().expect("still watched").in_flight = false;
            self.worker_timer(id, LONGEST, Timer::AcceptCheck(id));
        }
    }

    /// `READY=1` from a worker. Under `auto`, while its accepts are looked
    /// at, it is ready only once it is also proven to accept (now, or at a
    /// later look); otherwise at once.
    pub(super) fn on_ready_1(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        let auto = w.settings().ready == ReadyMode::Auto;
        // A worker no longer starting has no looks going on.
        let looking = w.accept_watch_mut().is_some_and(|watch| {
            watch.said_ready = true;
            watch.looking && watch.proven_since.is_none()
        });
        // Otherwise the armed look stays armed: at most one chain of looks.
        if !auto || !looking {
            self.ready_by(id, ReadyVia::Notify);
        }
    }

    /// `--ready auto`'s settling time after the proof has passed.
    pub(super) fn on_accept_settled(&mut self, id: WorkerId) {
        if let Some(watch) = self.workers.get_mut(&id).and_then(|w| w.accept_watch_mut()) {
            watch.settling = false;
        }
        self.judge(id);
    }

    /// What a look found: judged by [`readiness::judge`].
    pub(super) fn on_looked(&mut self, id: WorkerId, report: Result<Report, String>, cost: Duration) {
        if let Some(watch) = self.workers.get_mut(&id).and_then(|w| w.accept_watch_mut()) {
            watch.in_flight = false;
            watch.cost = cost;
        }
        if !self.still_watched(id) {
            return;
        }
        let inodes = self.inodes_of(self.workers[&id].slot());
        let queues_empty = self.queues_empty();
        let w = self.workers.get_mut(&id).expect("still watched");
        let label = w.label();
        let age = w.age();
        let said_ready = w.accept_watch_mut().expect("still watched").said_ready;
        let now = Instant::now();
        match report {
            Ok(report) => {
                if !report.own.is_empty() {
                    self.on_own_listeners(id, &report.own);
                }
                let w = self.workers.get_mut(&id).expect("still watched");
                let watch = w.accept_watch_mut().expect("still watched");
                for &inode in &inodes {
                    if let (Some(how), false) = (report.proof(inode), watch.proven.iter().any(|p| p.0 == inode)) {
                        watch.proven.push((inode, how));
                    }
                }
                let all_proven = inodes.iter().all(|i| watch.proven.iter().any(|p| p.0 == *i));
                if all_proven && watch.proven_since.is_none() {
                    watch.proven_since = Some(now);
                    watch.end_probes();
                    let how: Vec<String> = report.seen.iter().map(|s| format!("pid {} by {}", s.pid, s.how)).collect();
                    tracing::debug!(worker = id, "{label} takes connections ({})", how.join(", "));
                }
                watch.waiting = inodes.iter().all(|i| report.is_seen(*i) || watch.proven.iter().any(|p| p.0 == *i));
                if report.truncated {
                    tracing::debug!(worker = id, "{label}: the look stopped at its bound ({} ms)", cost.as_millis());
                }
                // Probes searched for and not found: given up when another
                // worker took them, or when old.
                watch.probes.retain_mut(|p| {
                    if std::mem::take(&mut p.asked) {
                        p.looks += 1;
                    }
                    !readiness::probe_given_up(now - p.made, p.looks, queues_empty) && !p.probe.failed()
                });
                let (proven, waiting, made) = (watch.proven_since.is_some(), watch.waiting, watch.probes_made);
                if said_ready && !proven && !report.denied.is_empty() {
                    // Some of its processes cannot be looked at (another
                    // user): READY=1 is all there is to go by.
                    return self.ready_by(id, ReadyVia::Notify);
                }
                if !proven {
                    let text = if waiting {
                        waiting_text(&report, &inodes, made)
                    } else if said_ready {
                        format!("it sent READY=1, but {}", self.describe(&report, &inodes))
                    } else {
                        self.describe(&report, &inodes)
                    };
                    if let Some(watch) = self.workers.get_mut(&id).and_then(|w| w.accept_watch_mut()) {
                        watch.last = Some(text);
                        // A socket not yet looked up in the socket tables
                        // could be a listener of its own (as could what a
                        // look could not see). One asked for with the
                        // look just back has its answer in this report,
                        // already taken (looks are one at a time).
                        let unexplained = report.others.iter().any(|o| !watch.looked_up.contains(&o.1));
                        watch.other_sockets =
                            unexplained || watch.own_ask.is_some() || !report.denied.is_empty() || report.truncated;
                    }
                    if !waiting && age >= OWN_LISTENER_GRACE {
                        self.look_for_own_listeners(id, &report.others);
                    }
                }
            }
            Err(e) => {
                if said_ready {
                    // Nothing can be seen: READY=1 is all there is to go by.
                    tracing::debug!(worker = id, "{label}: READY=1 taken alone: {e}");
                    return self.ready_by(id, ReadyVia::Notify);
                }
                let watch = w.accept_watch_mut().expect("still watched");
                watch.last = Some(format!("its processes could not be looked at in /proc: {e}"));
                if !std::mem::replace(&mut watch.warned, true) {
                    tracing::warn!(worker = id, "{label}: cannot see whether it accepts: {e}");
                }
            }
        }
        if self.judge(id) {
            return;
        }
        let probed = self.probe(id);
        let Some(watch) = self.workers.get_mut(&id).and_then(|w| w.accept_watch_mut()) else { return };
        if watch.proven_since.is_some() {
            return; // waits for READY=1 or its settling time: no more looks
        }
        let next = if probed { FIRST } else { (age / 20).clamp(FIRST, LONGEST) };
        let next = next.max(crate::io::accepts::spacing(watch.cost));
        self.worker_timer(id, next, Timer::AcceptCheck(id));
    }

    /// Applies the rule to what is known of a worker; true if it is done
    /// (ready, or waiting for a settling time or `READY=1` with no more
    /// looks).
    fn judge(&mut self, id: WorkerId) -> bool {
        if !self.still_watched(id) {
            return true;
        }
        let learned = self.workers.get(&id).and_then(|w| self.looks.announcers.how(&w.settings().command));
        let w = self.workers.get_mut(&id).expect("still watched");
        let mode = w.settings().ready;
        let notify = mode == ReadyMode::Auto && (w.notifies() || learned == Some(ReadyVia::Notify));
        let watch = w.accept_watch_mut().expect("still watched");
        let facts =
            readiness::Facts { mode, notify, said_ready: watch.said_ready, seen: watch.seen(), now: Instant::now() };
        match readiness::judge(&facts) {
            Verdict::Ready(via) => {
                self.ready_by(id, via);
                true
            }
            Verdict::Settle(left) => {
                watch.last = Some(format!(
                    "it takes connections (for {} ms), and says nothing on IPC or notify",
                    (AUTO_SETTLE - left).as_millis()
                ));
                if !std::mem::replace(&mut watch.settling, true) {
                    self.worker_timer(id, left, Timer::AcceptSettled(id));
                }
                true
            }
            Verdict::AwaitReady1 => {
                watch.last = Some("it takes connections, but has not sent READY=1 yet".into());
                true
            }
            Verdict::Look => false,
        }
    }

    /// Marks a watched worker ready, its looks and probes ended.
    fn ready_by(&mut self, id: WorkerId, via: ReadyVia) {
        if let Some(watch) = self.workers.get_mut(&id).and_then(|w| w.accept_watch_mut()) {
            watch.looking = false;
            watch.end_probes();
        }
        self.mark_ready(id, via);
    }

    /// Opens a probe connection to a worker that waits on its sockets, if
    /// [`readiness::probe_now`] says so. True if one was opened.
    fn probe(&mut self, id: WorkerId) -> bool {
        let Some(w) = self.workers.get(&id) else { return false };
        let slot = w.slot();
        let inodes = self.inodes_of(slot);
        let age = w.age();
        let w = self.workers.get_mut(&id).expect("looked up above");
        let label = w.label();
        let Some(watch) = w.accept_watch_mut() else { return false };
        let facts = readiness::ProbeFacts {
            seen: watch.seen(),
            open: watch.probes.len(),
            made: watch.probes_made,
            last: watch.last_probe,
            age,
            now: Instant::now(),
        };
        if !readiness::probe_now(&facts) {
            return false;
        }
        // The first socket not proven yet.
        let Some(i) = inodes.iter().position(|i| !watch.proven.iter().any(|p| p.0 == *i)) else { return false };
        let Some(Some(target)) = self.looks.probe_targets.get(i) else { return false };
        // Under --balance slots|sticky, to the worker's own slot socket.
        let from = self.sockets.slot_sockets.probe_source(i, slot);
        let w = self.workers.get_mut(&id).expect("looked up above");
        let Some(watch) = w.accept_watch_mut() else { return false };
        watch.last_probe = Some(Instant::now());
        watch.probes_made += 1;
        match Probe::connect(target, from) {
            Ok(probe) => {
                watch.probes.push(OpenProbe { probe, made: Instant::now(), looks: 0, asked: false });
                true
            }
            Err(e) => {
                tracing::debug!(worker = id, "{label}: probe connection to {target:?} failed: {e}");
                false
            }
        }
    }

    /// A look that did not see every socket accepted on, in words: which
    /// socket, and what could not be seen.
    fn describe(&self, report: &Report, inodes: &[u64]) -> String {
        if report.processes == 0 {
            return "its process group is empty".into();
        }
        let missing: Vec<String> = self
            .sockets
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
            "it never accepted on {}: no epoll set of {whose} holds the socket, no thread of theirs is \
             blocked in accept, poll or select on it, and none holds a connection accepted from it",
            missing.join(" and "),
        );
        for d in report.denied.iter() {
            text += &format!("; {d}");
        }
        text
    }
}

/// A worker that waits on its sockets but was not seen taking from them,
/// in words.
fn waiting_text(report: &Report, inodes: &[u64], probes: u32) -> String {
    let how: Vec<String> = inodes
        .iter()
        .filter_map(|i| report.seen.iter().find(|s| s.inode == *i))
        .map(|s| format!("{} (pid {})", s.how, s.pid))
        .collect();
    format!(
        "its sockets are waited on ({}), but it was not seen taking a connection: it took none of the {probes} \
         probe connections the primary made, and holds no connection accepted from them (an event loop \
         registers the socket when the app takes fd 3, before a warm-up; the worker is ready once it accepts)",
        how.join(", ")
    )
}
