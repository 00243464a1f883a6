//! The `hotswap events` clients, and the lifecycle events they are sent.
//!
//! Each client keeps a copy of its connection so that a self-upgrade can
//! hand it over to the next image, where it goes on streaming. Each has a
//! bounded queue ([`SUBSCRIBER_QUEUE`]): a client that falls further behind
//! is dropped (its task says why), so clients that do not read cannot grow
//! the primary. A client that leaves is forgotten as soon as its task
//! notices ([`crate::types::Event::SubscriberLeft`]). When the primary
//! stops, every client gets every event, then `done`, before it exits.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::worker::Worker;
use crate::io::control;
use crate::types::wire::{LifecycleEvent, Reply, Subscription, SUBSCRIBER_QUEUE};
use crate::types::{Event, Exit};

#[derive(Debug)]
struct Client {
    sub: Subscription,
    conn: OwnedFd,
}

#[derive(Debug, Default)]
pub struct Subscribers(Vec<Client>);

impl Subscribers {
    pub fn add(&mut self, sub: Subscription, conn: OwnedFd) {
        self.0.push(Client { sub, conn });
    }

    /// Sends to every client; forgets those that left, and drops those that
    /// fell too far behind.
    pub fn emit(&mut self, event: LifecycleEvent) {
        self.0.retain(|c| match c.sub.tx.try_send(Reply::Event(event.clone())) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    "an events client fell more than {SUBSCRIBER_QUEUE} events behind (it does not read); dropped"
                );
                c.sub.kill.notify_one();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        });
    }

    /// Forgets the clients whose task ended (they left, or were dropped).
    pub fn prune(&mut self) {
        self.0.retain(|c| !c.sub.tx.is_closed());
    }

    /// The primary is exiting: each client gets `done` after what is queued;
    /// returns when every client's task has written it all, at most `bound`.
    pub async fn close(&mut self, message: &str, bound: Duration) {
        let done: Vec<oneshot::Receiver<()>> = self
            .0
            .drain(..)
            .map(|c| {
                let _ = c.sub.tx.try_send(Reply::Done { message: message.to_string() });
                c.sub.done
            })
            .collect();
        let _ = tokio::time::timeout(bound, async {
            for d in done {
                let _ = d.await;
            }
        })
        .await;
    }

    /// An event about the primary itself (`upgrade-started`, ...) with a
    /// message.
    pub fn say(&mut self, event: &str, message: String) {
        let mut ev = LifecycleEvent::new(event);
        ev.message = Some(message);
        self.emit(ev);
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
        ev.killed = w.killed_for().map(|k| k.name().to_string());
        self.emit(ev);
    }

    /// The connections to hand over on self-upgrade.
    pub fn fds(&self) -> Vec<RawFd> {
        self.0.iter().map(|c| c.conn.as_raw_fd()).collect()
    }

    /// Takes over the clients of the previous image (self-upgrade).
    pub fn adopt(&mut self, conns: Vec<OwnedFd>, events: &mpsc::Sender<Event>) {
        for fd in conns {
            // A copy of the socket stays with the client, for the next upgrade.
            let adopted = fd.try_clone().map_err(anyhow::Error::from).and_then(|copy| {
                let sub = control::adopt_subscriber(fd, events.clone())?;
                Ok((sub, copy))
            });
            match adopted {
                Ok((sub, copy)) => self.add(sub, copy),
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
        ev.proof = w.ready_proof().map(str::to_string);
        ev.ready_ms = w.ready_in().map(|d| d.as_millis() as u64);
    }
    ev
}
