//! The `hotswap events` clients, and the lifecycle events they are sent.
//!
//! Each client keeps a copy of its connection so that a self-upgrade can
//! hand it over to the next image, where it goes on streaming.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::worker::Worker;
use crate::io::control;
use crate::types::wire::{LifecycleEvent, Reply, ReplyTx};
use crate::types::Exit;

#[derive(Debug, Default)]
pub struct Subscribers(Vec<(ReplyTx, Option<OwnedFd>)>);

impl Subscribers {
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

    /// A lifecycle event about one worker.
    pub fn worker_event(&mut self, event: &str, w: &Worker) {
        self.emit(about(event, w));
    }

    /// `exit`, with the code or the signal.
    pub fn exit_event(&mut self, w: &Worker, how: Exit) {
        let mut ev = about("exit", w);
        match how {
            Exit::Code(c) => ev.code = Some(c),
            Exit::Signal(s) => ev.signal = Some(s.to_string()),
        }
        self.emit(ev);
    }

    /// The connections to hand over on self-upgrade.
    pub fn fds(&self) -> Vec<RawFd> {
        self.0.iter().filter_map(|(_, fd)| fd.as_ref().map(|f| f.as_raw_fd())).collect()
    }

    /// Takes over the clients of the previous image (self-upgrade).
    pub fn adopt(&mut self, conns: Vec<OwnedFd>) {
        for fd in conns {
            // A copy of the socket stays with the client, for the next upgrade.
            let adopted = fd.try_clone().map_err(anyhow::Error::from).and_then(|copy| {
                let tx = control::adopt_subscriber(fd)?;
                Ok((tx, copy))
            });
            match adopted {
                Ok((tx, copy)) => self.add(tx, Some(copy)),
                Err(e) => tracing::warn!("an events client was lost in the upgrade: {e:#}"),
            }
        }
    }
}

fn about(event: &str, w: &Worker) -> LifecycleEvent {
    let mut ev = LifecycleEvent::new(event);
    ev.worker = Some(w.id());
    ev.pid = Some(w.pid().as_raw());
    ev.generation = Some(w.generation());
    if event == "listening" {
        ev.via = w.ready_via().map(|v| v.name().to_string());
    }
    ev
}
