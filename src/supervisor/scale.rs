//! `hotswap scale N`, `+N`, `-N`: the pool's size changed live. New workers
//! start in new slots with the serving generation's settings; the workers
//! of the slots that go are retired as a reload retires old workers (told
//! to shut down, drained, killed only at `--shutdown-timeout`). Nothing
//! else is touched, so no connection is refused: the listening sockets stay
//! open and the workers that stay serve on.
//!
//! The new size holds until the primary stops: it is laid over the flags as
//! `-w N` would be, so a reload that reads the config file again keeps it.

use std::rc::Rc;

use super::Supervisor;
use crate::options::Settings;
use crate::types::wire::{Reply, ReplyTx, ScaleTo};
use crate::types::{Timer, WorkerState};

impl Supervisor {
    pub(super) fn scale(&mut self, to: ScaleTo, reply: ReplyTx) {
        let refuse = |why: String| {
            let _ = reply.send(Reply::Error { error: why });
        };
        if self.stop.is_some() {
            return refuse("refused: the primary is stopping".into());
        }
        if self.reloads.running.is_some() {
            return refuse(
                "refused: a reload (or a --max-memory replacement) is running; scale once it is over".into(),
            );
        }
        let old = self.settings.workers;
        let n = match to.apply(old) {
            Ok(n) => n,
            Err(e) => return refuse(e),
        };
        if self.settings.balance.per_slot() && n as usize > crate::types::MAX_SLOTS {
            return refuse(format!(
                "--balance {} handles at most {} workers",
                self.settings.balance,
                crate::types::MAX_SLOTS
            ));
        }
        if n == old {
            let _ = reply.send(Reply::Done { message: format!("already {n} workers") });
            return;
        }
        if n > old {
            if let Err(e) = self.sockets.slot_sockets.grow(n as usize) {
                return refuse(format!("cannot scale to {n}: {e:#}"));
            }
        }
        let settings = Rc::new(Settings { workers: n, ..(*self.settings).clone() });
        self.settings = settings.clone();
        self.given.scale_to(n);
        let mut done = Vec::new();
        if n > old {
            self.crash_history.resize_with(n as usize, Default::default);
            for slot in old as usize..n as usize {
                match self.spawn(slot, self.reloads.serving_generation, &settings) {
                    Ok(id) => done.push(format!("started w{id}")),
                    Err(e) => {
                        tracing::error!("scale: cannot start a worker in slot {slot}: {e:#}; retrying");
                        done.push(format!("slot {slot} failed to start ({e:#}), retrying"));
                        self.after(std::time::Duration::from_secs(1), Timer::Respawn(slot));
                    }
                }
            }
        } else {
            let going: Vec<_> = self
                .workers
                .values()
                .filter(|w| w.slot() >= n as usize && w.state() != WorkerState::Stopping)
                .map(|w| (w.id(), w.label()))
                .collect();
            for (id, label) in going {
                self.shut_down(id);
                done.push(format!("retiring {label}"));
            }
            self.crash_history.truncate(n as usize);
        }
        let message = format!("scaled from {old} to {n} workers: {}", done.join(", "));
        tracing::info!("{message}");
        self.notify_status();
        let _ = reply.send(Reply::Done { message });
    }
}
