//! `--ready accepting` (and the accepting part of `auto`): a starting
//! worker is looked at in `/proc` until one of its processes accepts on
//! every listening socket, then never again.
//!
//! Looks come as [`Timer::AcceptCheck`]s on the event loop: each is a short
//! synchronous walk of `/proc` (0.1-0.3 ms, see [`crate::sys::accepting`]),
//! every 20 ms at first, backing off to every 50 ms for a worker that takes
//! long to start. Under `auto`:
//!
//! * a worker that speaks IPC or Node's cluster protocol is judged by it
//!   and no longer looked at;
//! * a worker that speaks sd_notify is ready once it sent `READY=1` *and*
//!   is seen accepting, whichever comes last: a pre-fork master (gunicorn)
//!   says `READY=1` when it has bound, before the workers it forks accept;
//! * a worker that says nothing is ready once it has been seen accepting
//!   for [`AUTO_SETTLE`]: an app that accepts first and announces readiness
//!   a moment later is ready by its announcement.
//!
//! One that announces much later is learned ([`Announcers`]): once a worker
//! of a command announced, every later worker of the same command waits for
//! the announcement.

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
    /// Socket inodes of its own already looked up in the socket tables.
    looked_up: Vec<u64>,
    /// When the socket tables were last read for it: at most once a second
    /// (they can be megabytes on a busy host).
    last_lookup: Option<Instant>,
    /// Listening sockets of its own found there, in words.
    own: Vec<String>,
    /// Whether looks go on (an [`Timer::AcceptCheck`] is armed).
    looking: bool,
    /// Under `auto`: it sent `READY=1` and is ready once seen accepting.
    said_ready: bool,
}

impl Watch {
    /// What the last look found: for the log and the failure of a worker
    /// that does not get ready.
    pub fn describe(&self) -> String {
        let mut text = self.last.clone().unwrap_or_else(|| "it has not been seen accepting yet".into());
        if !self.own.is_empty() {
            text += &format!("; it listens on a socket of its own instead: {}", self.own.join(", "));
        }
        text
    }

    /// Whether it sent `READY=1` and waits to be seen accepting.
    pub fn said_ready(&self) -> bool {
        self.said_ready
    }

    /// The watch of a worker adopted in a self-upgrade (looks start again).
    pub fn resumed(said_ready: bool) -> Watch {
        Watch { said_ready, ..Default::default() }
    }
}

/// How long a starting worker may hold a listening socket of its own (an
/// admin or metrics port opened first) before hotswap says so.
const OWN_LISTENER_GRACE: Duration = Duration::from_secs(1);

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

    /// What is handed over in a self-upgrade.
    pub fn snapshot(&self) -> Vec<(Vec<String>, ReadyVia)> {
        self.0.clone()
    }

    pub fn restore(learned: &[(Vec<String>, ReadyVia)]) -> Announcers {
        Announcers(learned.to_vec())
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
        let auto = mode == ReadyMode::Auto;
        // IPC and Node cluster workers are ready by what they say; so is
        // every worker where nothing can be seen (no listening socket).
        let judged_otherwise = auto
            && (w.speaks_ipc() || self.inodes.is_empty() || matches!(learned, Some(ReadyVia::Ipc | ReadyVia::Cluster)));
        let Some(w) = self.workers.get_mut(&id) else { return };
        if let (true, Some(via)) = (auto, learned) {
            w.accept_watch_mut().last = Some(match via {
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
            w.accept_watch_mut().looking = true;
            self.worker_timer(id, FIRST, Timer::AcceptCheck(id));
        }
    }

    /// Looks whether a starting worker accepts; marks it ready, or looks
    /// again later.
    pub(super) fn on_accept_check(&mut self, id: WorkerId) {
        if let Some(next) = self.judge_accepts(id) {
            self.worker_timer(id, next, Timer::AcceptCheck(id));
        }
    }

    /// `READY=1` from a worker. Under `auto`, while its accepts are looked
    /// at, it is ready only once it is also seen accepting (now, or at a
    /// later look); otherwise at once.
    pub(super) fn on_ready_1(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        if w.settings().ready != ReadyMode::Auto || !w.accept_watch_mut().looking {
            return self.mark_ready(id, ReadyVia::Notify);
        }
        w.accept_watch_mut().said_ready = true;
        // The armed look stays armed: at most one chain of looks.
        let _ = self.judge_accepts(id);
    }

    /// One look at a starting worker: marks it ready if it is, and returns
    /// when to look again (None: no more looks).
    fn judge_accepts(&mut self, id: WorkerId) -> Option<Duration> {
        let inodes = self.inodes_of(self.workers.get(&id)?.slot());
        let learned = self.workers.get(&id).and_then(|w| self.announcers.how(&w.settings().command));
        let w = self.workers.get_mut(&id)?;
        let auto = w.settings().ready == ReadyMode::Auto;
        if w.state() != WorkerState::Starting || (auto && w.speaks_ipc()) {
            w.accept_watch_mut().looking = false;
            return None;
        }
        // Under auto, a worker that speaks sd_notify (or whose command's
        // workers did) needs READY=1 and accepting both.
        let notify = auto && (w.notifies() || learned == Some(ReadyVia::Notify));
        let said_ready = w.accept_watch_mut().said_ready;
        let now = Instant::now();
        let mut next = (w.age() / 20).clamp(FIRST, LONGEST);
        match look(w.pid().as_raw(), &inodes) {
            Ok(report) if report.all_seen(&inodes) => {
                let since = *w.accept_watch_mut().seen_since.get_or_insert(now);
                let waited = now - since;
                let via = match (notify, said_ready) {
                    (true, true) => Some(ReadyVia::Notify),
                    (true, false) => None,
                    (false, _) if !auto || waited >= AUTO_SETTLE => Some(ReadyVia::Accepting),
                    (false, _) => None,
                };
                if let Some(via) = via {
                    let how: Vec<String> = report.seen.iter().map(|s| format!("pid {} by {}", s.pid, s.how)).collect();
                    tracing::debug!(worker = id, "{} accepts ({})", w.label(), how.join(", "));
                    w.accept_watch_mut().looking = false;
                    self.mark_ready(id, via);
                    return None;
                }
                if notify {
                    w.accept_watch_mut().last = Some("it accepts, but has not sent READY=1 yet".into());
                } else {
                    w.accept_watch_mut().last =
                        Some(format!("it accepts (for {} ms), and says nothing on IPC or notify", waited.as_millis()));
                    next = AUTO_SETTLE - waited;
                }
            }
            Ok(report) if said_ready && !report.denied.is_empty() => {
                // Some of its processes cannot be looked at (another user):
                // READY=1 is all there is to go by.
                w.accept_watch_mut().looking = false;
                self.mark_ready(id, ReadyVia::Notify);
                return None;
            }
            Ok(report) => {
                let mut text = self.describe(&report, &inodes);
                if said_ready {
                    text = format!("it sent READY=1, but {text}");
                }
                let w = self.workers.get_mut(&id).expect("looked up above");
                w.accept_watch_mut().last = Some(text);
                if w.age() >= OWN_LISTENER_GRACE {
                    self.look_for_own_listeners(id, &report.others);
                }
            }
            Err(e) => {
                if said_ready {
                    // Nothing can be seen: READY=1 is all there is to go by.
                    tracing::debug!(worker = id, "{}: READY=1 taken alone: {e}", w.label());
                    w.accept_watch_mut().looking = false;
                    self.mark_ready(id, ReadyVia::Notify);
                    return None;
                }
                let watch = w.accept_watch_mut();
                watch.last = Some(format!("its processes could not be looked at in /proc: {e}"));
                if !std::mem::replace(&mut watch.warned, true) {
                    tracing::warn!(worker = id, "{}: cannot see whether it accepts: {e}", w.label());
                }
            }
        }
        Some(next)
    }

    /// Says once, for each listening socket of its own that a worker not
    /// yet accepting on hotswap's sockets holds, that it serves the wrong
    /// socket and what to change (the usual first-run mistake).
    fn look_for_own_listeners(&mut self, id: WorkerId, others: &[(i32, u64)]) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        let watch = w.accept_watch_mut();
        let new: Vec<(i32, u64)> = others.iter().filter(|o| !watch.looked_up.contains(&o.1)).copied().collect();
        let recently = watch.last_lookup.is_some_and(|t| t.elapsed() < OWN_LISTENER_GRACE);
        if new.is_empty() || recently || watch.looked_up.len() >= 4 * crate::sys::accepting::MAX_OTHERS {
            return;
        }
        watch.last_lookup = Some(Instant::now());
        watch.looked_up.extend(new.iter().map(|o| o.1));
        let inodes: Vec<u64> = new.iter().map(|o| o.1).collect();
        let found = match crate::sys::accepting::own::listening(new[0].0, &inodes) {
            Ok(found) => found,
            Err(e) => return tracing::debug!(worker = id, "looking for listeners of its own: {e}"),
        };
        let ours: Vec<String> =
            self.listeners.iter().enumerate().map(|(i, l)| format!("{} (fd {})", l.addr, 3 + i)).collect();
        for l in found {
            let pid = new.iter().find(|o| o.1 == l.inode).map_or(0, |o| o.0);
            let label = w.label();
            tracing::warn!(
                worker = id,
                "{label} listens on {} itself (pid {pid}) and not on the socket hotswap gives it, {}: clients of \
                 that address do not reach it. Make the server use the socket it inherits (LISTEN_FDS, fd 3) \
                 instead of binding its own: for example `uvicorn --fd 3`, `hypercorn --bind fd://3`; gunicorn \
                 and systemd-aware servers do it by themselves; see the README's worker guide",
                l.addr,
                ours.join(" and "),
            );
            w.accept_watch_mut().own.push(format!("{} (pid {pid})", l.addr));
        }
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
    others: Vec<(i32, u64)>,
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
