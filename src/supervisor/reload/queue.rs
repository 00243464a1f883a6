//! Reload requests that arrive while a reload runs: the first is queued,
//! the rest join it, so a storm of requests gives one more reload, not many.

use std::time::Duration;

use crate::types::surge::Surge;
use crate::types::wire::{Reply, ReplyTx};

/// What a reload request asks of the roll itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// Its surge instead of the settings' `--surge`.
    pub surge: Option<Surge>,
    /// `--canary DUR`.
    pub canary: Option<Duration>,
}

/// The one reload waiting behind the running one.
#[derive(Debug)]
pub struct Queued {
    /// Every client that asked for it.
    pub subscribers: Vec<ReplyTx>,
    /// Skip the build: only if every joined request asked for it.
    pub no_build: bool,
    /// The surge and canary the last request that named one asked for
    /// (the newest wish wins), else the settings' own surge and no canary.
    pub ask: Ask,
}

#[derive(Debug, Default)]
pub struct Queue {
    queued: Option<Queued>,
}

impl Queue {
    /// Queues (or joins) a request.
    pub fn push(&mut self, subscriber: Option<ReplyTx>, no_build: bool, ask: Ask) {
        let queued =
            self.queued.get_or_insert_with(|| Queued { subscribers: Vec::new(), no_build: true, ask: Ask::default() });
        queued.no_build &= no_build;
        if ask.surge.is_some() {
            queued.ask.surge = ask.surge;
        }
        if ask.canary.is_some() {
            queued.ask.canary = ask.canary;
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
        queue.push(Some(a), true, Ask::default());
        queue.push(None, true, Ask::default()); // SIGHUP
        queue.push(Some(b), true, Ask::default());
        assert!(queue.is_queued());
        let q = queue.take().unwrap();
        assert_eq!(q.subscribers.len(), 2, "both clients wait for the one queued reload");
        assert!(q.no_build);
        assert_eq!(q.ask, Ask::default());
        assert!(queue.take().is_none(), "one queued reload, not three");
        assert!(matches!(&replies(&mut a_rx)[0], Reply::Progress { message } if message.contains("queued")));
        queue.push(None, true, Ask::default());
        queue.push(None, false, Ask::default());
        assert!(!queue.take().unwrap().no_build, "the build is skipped only if every joined request says so");
    }

    #[test]
    fn the_newest_surge_and_canary_asked_for_win() {
        let mut queue = Queue::default();
        queue.push(None, false, Ask { surge: Some(Surge::Count(2)), canary: None });
        queue.push(None, false, Ask { surge: Some(Surge::Percent(100)), canary: Some(Duration::from_secs(3)) });
        queue.push(None, false, Ask::default()); // SIGHUP: no wish of its own
        let ask = queue.take().unwrap().ask;
        assert_eq!(ask.surge, Some(Surge::Percent(100)));
        assert_eq!(ask.canary, Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_stop_cancels_the_queued_reload() {
        let mut queue = Queue::default();
        let (tx, mut queued_rx) = mpsc::unbounded_channel();
        queue.push(Some(tx), false, Ask::default());
        queue.cancel("the primary is stopping");
        assert!(!queue.is_queued());
        let q = replies(&mut queued_rx);
        assert!(matches!(q.last(), Some(Reply::Error { error }) if error.contains("cancelled")), "{q:?}");
    }
}
