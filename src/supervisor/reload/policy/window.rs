//! The window a new worker must stay ready for before it counts as
//! proven (`--min-ready`), and the canary: the first new worker of a
//! `hotswap reload --canary DUR`, watched for DUR beside the whole old
//! generation.
//!
//! Why a window at all: "ready" is the worker's word (or what the primary
//! saw of its accepts) at one instant. A release that crashes on its first
//! real requests, or once a lazy connection fails, says ready and dies a
//! second later; without a window its old worker would be gone by then,
//! and a roll one at a time would have retired the next old worker too.
//! With one, a new worker that exits (or is stopped) inside its window
//! fails the reload while its old worker still serves: every slot is as it
//! was before the reload, except those whose new worker proved itself.
//!
//! The window is per new worker, before its own old worker is retired
//! (Kubernetes' `minReadySeconds` with `maxUnavailable: 0`), not only
//! before the next one: the safe reading, at a price of one window per
//! worker (per `--surge` batch) in reload time.
//!
//! During a canary the surge is one: nothing else starts and no old worker
//! is retired until the canary's verdict.

use std::time::{Duration, Instant};

use super::{Member, Order, Reload};
use crate::types::wire::LifecycleEvent;
use crate::types::{plural, WorkerId, WorkerState};

/// A new worker that is ready and inside its window; `old` (if still
/// alive) serves on in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Proving {
    pub(super) new: WorkerId,
    pub(super) old: Option<WorkerId>,
    /// When it was started (for the "replaced in N ms" line).
    pub(super) since: Instant,
    /// When it got ready.
    pub(super) ready_at: Instant,
    pub(super) window: Duration,
}

/// Where the canary of a canary reload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Canary {
    /// Not a canary reload.
    None,
    /// Asked for, for this long; not started yet.
    Asked(Duration),
    /// This worker is the canary, on trial for this long (once ready).
    Running(WorkerId, Duration),
    /// It passed; the rest of the roll goes on as usual.
    Passed(WorkerId, Duration),
    /// It failed (the reload with it).
    Failed,
}

impl Canary {
    /// What a successful reload's message says of it.
    pub(super) fn verdict(&self) -> String {
        match self {
            Canary::Passed(id, d) => format!("canary w{id} passed {}; ", secs(*d)),
            _ => String::new(),
        }
    }
}

/// `1.5s`, `3s`, `250ms`: a window as the options give it.
pub(super) fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Reload {
    /// Makes this a canary reload: the first new worker serves beside the
    /// whole old generation for `trial` before the roll goes on.
    pub fn with_canary(mut self, trial: Option<Duration>) -> Reload {
        if let Some(d) = trial {
            self.canary = Canary::Asked(d);
        }
        self
    }

    /// Events (the canary's) for the supervisor to send.
    pub fn take_events(&mut self) -> Vec<LifecycleEvent> {
        std::mem::take(&mut self.events)
    }

    /// How many new workers may be in flight: one while a canary is asked
    /// for or on trial.
    pub(super) fn width(&self) -> usize {
        match self.canary {
            Canary::Asked(_) | Canary::Running(..) => 1,
            _ => self.width,
        }
    }

    /// How a new worker is named in messages.
    pub(super) fn who(&self, id: WorkerId) -> &'static str {
        match self.canary {
            Canary::Running(c, _) if c == id => "canary",
            _ => "new worker",
        }
    }

    fn event(&mut self, kind: &str, worker: Option<WorkerId>, message: String) {
        let mut ev = LifecycleEvent::new(kind);
        ev.generation = Some(self.generation);
        ev.worker = worker;
        ev.message = Some(message);
        self.events.push(ev);
    }

    /// The first worker started by a canary reload is its canary.
    pub(super) fn canary_started(&mut self, new: WorkerId, old: Option<WorkerId>) {
        let Canary::Asked(d) = self.canary else { return };
        self.canary = Canary::Running(new, d);
        let beside = old.map(|o| format!(" (slot of w{o})")).unwrap_or_default();
        let line = format!("canary w{new} started{beside}; on trial for {} once ready", secs(d));
        self.tell(line.clone());
        self.event("canary-started", Some(new), line);
    }

    /// The reload failed while the canary was asked for or on trial.
    pub(super) fn canary_failed(&mut self, why: &str) {
        let worker = match self.canary {
            Canary::Running(id, _) => Some(id),
            Canary::Asked(_) => None,
            _ => return,
        };
        self.canary = Canary::Failed;
        let line = format!("canary failed: {why}; no old worker was retired");
        self.tell(line.clone());
        self.event("canary-failed", worker, line);
    }

    /// `new` is ready: if it has a window, it starts (an [`Order::Watch`]);
    /// None when it has none and its old worker is retired at once.
    pub(super) fn begin_window(
        &mut self,
        new: WorkerId,
        old: Option<WorkerId>,
        since: Instant,
        pool: &[Member],
    ) -> Option<Order> {
        let window = match self.canary {
            Canary::Running(c, d) if c == new => d.max(self.min_ready),
            _ => self.min_ready,
        };
        if window.is_zero() {
            return None;
        }
        if let Canary::Running(c, d) = self.canary {
            if c == new {
                let old = pool.iter().filter(|m| m.id != new && m.state == WorkerState::Ready).count();
                let line = format!(
                    "canary w{new} is ready in {} ms and serves beside {old} old {}; verdict in {}",
                    since.elapsed().as_millis(),
                    plural(old, "worker"),
                    secs(d)
                );
                self.tell(line.clone());
                self.event("canary-ready", Some(new), line);
            }
        }
        self.proving.push(Proving { new, old, since, ready_at: Instant::now(), window });
        Some(Order::Watch { worker: new, window })
    }

    /// `id`'s window is over (the supervisor's timer): if it is still
    /// ready, it has proven itself and its old worker is retired.
    pub fn on_proven(&mut self, id: WorkerId, pool: &[Member]) -> Order {
        let Some(i) = self.proving.iter().position(|p| p.new == id) else { return Order::Wait };
        let p = self.proving.swap_remove(i);
        let ready = pool.iter().any(|m| m.id == id && m.state == WorkerState::Ready);
        if !ready {
            // Stopped (killed, told to go) without having exited yet.
            let who = self.who(id);
            return self.fail(format!(
                "{who} w{id} stopped being ready {} after it was ready (within its {} window)",
                secs(round(p.ready_at.elapsed())),
                secs(p.window)
            ));
        }
        if let Canary::Running(c, d) = self.canary {
            if c == id {
                self.canary = Canary::Passed(id, d);
                let line = format!("canary w{id} passed: ready for {} beside the old generation; rolling on", secs(d));
                self.tell(line.clone());
                self.event("canary-passed", Some(id), line);
            }
        }
        let old = p.old.filter(|o| pool.iter().any(|m| m.id == *o && m.state != WorkerState::Stopping));
        self.replace(p.new, old, p.since, pool)
    }

    /// A new worker in its window exited: the reload fails, and the old
    /// worker it was to replace serves on. None if `id` is not one.
    pub(super) fn exit_in_window(&mut self, id: WorkerId, gone: &super::Gone<'_>) -> Option<Order> {
        let i = self.proving.iter().position(|p| p.new == id)?;
        let p = self.proving.swap_remove(i);
        let who = self.who(id);
        let option = match self.canary {
            Canary::Running(c, d) if c == id => format!("--canary {}", secs(d)),
            _ => format!("--min-ready {}", secs(p.window)),
        };
        Some(self.fail(format!(
            "{who} {} {} {} after it was ready (within {option})",
            gone.label,
            gone.how,
            secs(round(p.ready_at.elapsed()))
        )))
    }
}

/// To a tenth of a second, for messages.
fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}
