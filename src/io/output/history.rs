//! What the primary wrote, kept for `hotswap logs`: the last lines and a
//! feed of those to come.

use std::sync::{Arc, Mutex, OnceLock};

/// Lines `hotswap logs` gets from the past: at most this many...
const HISTORY_LINES: usize = 1000;
/// ...and at most this many bytes.
const HISTORY_BYTES: usize = 1024 * 1024;
/// Lines a following `hotswap logs` client may fall behind before it is
/// told it missed some.
const FEED: usize = 1024;

/// What the primary wrote (its log and every worker line, as written), for
/// `hotswap logs`: the last 1000 lines (1 MiB at most) and a feed of those to
/// come. Filled by the writer thread (and by the log lines that go straight
/// to a stderr that is a file), never waited on: a client that does not
/// keep up misses lines and is told so, the writer never slows down.
/// In memory only: a self-upgrade starts it afresh.
pub struct History {
    kept: Mutex<(std::collections::VecDeque<Arc<[u8]>>, usize)>,
    feed: tokio::sync::broadcast::Sender<Arc<[u8]>>,
}

static HISTORY: OnceLock<History> = OnceLock::new();

/// The lines written from now on.
pub type Feed = tokio::sync::broadcast::Receiver<Arc<[u8]>>;

impl History {
    pub fn global() -> &'static History {
        HISTORY.get_or_init(|| History {
            kept: Mutex::new((Default::default(), 0)),
            feed: tokio::sync::broadcast::channel(FEED).0,
        })
    }

    pub(super) fn push(&self, bytes: &[u8]) {
        let line: Arc<[u8]> = Arc::from(bytes);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.1 += line.len();
        kept.0.push_back(line.clone());
        while kept.0.len() > HISTORY_LINES || (kept.1 > HISTORY_BYTES && kept.0.len() > 1) {
            if let Some(old) = kept.0.pop_front() {
                kept.1 -= old.len();
            }
        }
        // Under the lock: a client's snapshot and feed never overlap or leave a gap.
        let _ = self.feed.send(line);
    }

    /// The last `n` lines kept, and the feed of every line after them.
    pub fn follow(&self, n: usize) -> (Vec<Arc<[u8]>>, Feed) {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let skip = kept.0.len().saturating_sub(n);
        (kept.0.iter().skip(skip).cloned().collect(), self.feed.subscribe())
    }
}
