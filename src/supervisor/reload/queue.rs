//! Reload requests that arrive while a reload runs: the first is queued,
//! the rest join it, so a storm of requests gives one more reload, not many.

use crate::types::surge::Surge;
use crate::types::wire::{Reply, ReplyTx};

/// The one reload waiting behind the running one.
#[derive(Debug)]
pub struct Queued {
    /// Every client that asked for it.
    pub subscribers: Vec<ReplyTx>,
    /// Skip the build: only if every joined request asked for it.
    pub no_build: bool,
    /// The surge the last request that named one asked for (the newest
    /// wish wins), else the settings' own.
    pub surge: Option<Surge>,
}

#[derive(Debug, Default)]
pub struct Queue {
    queued: Option<Queued>,
}

impl Queue {
    /// Queues (or joins) a request.
    pub fn push(&mut self, subscriber: Option<ReplyTx>, no_build: bool, surge: Option<Surge>) {
        let queued = self.queued.get_or_insert_with(|| Queued { subscribers: Vec::new(), no_build: true, surge: None });
        queued.no_build &= no_build;
        if surge.is_some() {
            queued.surge = surge;
        }
        if let Some(s) = subscriber {
            let _ = s.send(Reply::Progress { message: "a reload is running; this one is queued behind it".into() });
            queued.subscribers.push(s);
        }
    }

    pub fn is_queued(&self) -> bool {
        self.queued.is_some()
    }

    /// The queued request, if any.
    pub fn take(&mut self) -> Option<Queued> {
        self.queued.take()
    }

    /// Fails the queued request (the primary is stopping).
    pub fn cancel(&mut self, why: &str) {
        for s in self.queued.take().map(|q| q.subscribers).into_iter().flatten() {
            let _ = s.send(Reply::Error { error: format!("cancelled: {why}") });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn replies(rx: &mut mpsc::UnboundedReceiver<Reply>) -> Vec<Reply> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn requests_during_a_reload_queue_once_and_join() {
        let mut queue = Queue::default();
        let (a, mut a_rx) = mpsc::unbounded_channel();
        let (b, _b_rx) = mpsc::unbounded_channel();
        queue.push(Some(a), true, None);
        queue.push(None, true, None); // SIGHUP
        queue.push(Some(b), true, None);
        assert!(queue.is_queued());
        let q = queue.take().unwrap();
        assert_eq!(q.subscribers.len(), 2, "both clients wait for the one queued reload");
        assert!(q.no_build);
        assert_eq!(q.surge, None);
        assert!(queue.take().is_none(), "one queued reload, not three");
        assert!(matches!(&replies(&mut a_rx)[0], Reply::Progress { message } if message.contains("queued")));
        queue.push(None, true, None);
        queue.push(None, false, None);
        assert!(!queue.take().unwrap().no_build, "the build is skipped only if every joined request says so");
    }

    #[test]
    fn the_newest_surge_asked_for_wins() {
        let mut queue = Queue::default();
        queue.push(None, false, Some(Surge::Count(2)));
        queue.push(None, false, Some(Surge::Percent(100)));
        queue.push(None, false, None); // SIGHUP: no wish of its own
        assert_eq!(queue.take().unwrap().surge, Some(Surge::Percent(100)));
    }

    #[test]
    fn a_stop_cancels_the_queued_reload() {
        let mut queue = Queue::default();
        let (tx, mut queued_rx) = mpsc::unbounded_channel();
        queue.push(Some(tx), false, None);
        queue.cancel("the primary is stopping");
        assert!(!queue.is_queued());
        let q = replies(&mut queued_rx);
        assert!(matches!(q.last(), Some(Reply::Error { error }) if error.contains("cancelled")), "{q:?}");
    }
}
