//! Everything the primary writes to its stdout and stderr: worker output,
//! passed through line by line, and the primary's own log.
//!
//! Each worker line is prefixed with the worker's id, generation and pid, so
//! the output of many workers (and generations) stays readable when
//! interleaved. One writer thread owns the primary's stdout and stderr; no
//! other thread ever writes to them, so a stalled reader (`| less`, a stuck
//! `tee`, Ctrl-S, a slow log collector) stalls that thread alone, never the
//! event loop:
//! - pipe readers send it whole worker lines over a bounded channel
//!   ([`QUEUE`] lines), so a slow terminal slows the workers down (as a full
//!   pipe would) instead of growing the primary's memory;
//! - the primary's own log lines (tracing) go over a second channel of the
//!   same bound, never waited for: a line that finds it full is dropped and
//!   counted, and once the reader has caught up the writer says how many
//!   (`hotswap: N lines dropped: stderr was not being read`). The log
//!   channel is served first, so a chatty worker does not crowd it out.
//!
//! [`Output::flush`] is a barrier: it returns once everything queued before
//! it is written out (with a bound, for a reader that never comes back). The
//! primary uses it before it exits and before it re-executes itself. Before
//! it exits it also waits ([`Output::drain`], bounded) for every pipe reader
//! to reach end of file, so the last lines a worker wrote before exiting
//! (why it failed to start, what it did while stopping) are not lost.
//!
//! Self-upgrade: a pipe reader never holds a line across a wait. It takes a
//! line out of its buffer only with a place in the writer's queue in hand,
//! so at any moment what it read and did not pass on is in its buffer
//! ([`Unforwarded`]), which the supervisor reads just before the exec and hands
//! to the next image with the pipe itself; that image writes it first.
//! What the writer could write only in part before the exec (a stalled
//! reader) is cut there: the old image freezes the writer and tells the
//! next one which streams end inside a line ([`Output::freeze`]), and the
//! next image ends those lines before anything else.
//!
//! In parts: the writer thread and what it knows of line ends (`writer`),
//! the pipe readers (`forward`), what `hotswap logs` reads
//! ([`history`]) and tracing's way in ([`log_sink`]); [`Output`], the
//! handle on all of it, is here.

mod forward;
pub mod history;
pub mod log_sink;
mod writer;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::log_files::LogFiles;
pub use super::log_format::Stream;
pub use forward::Unforwarded;
pub use history::{Feed, History};
pub use log_sink::{LogSink, LogWriter};
use writer::LineEnds;

/// Longest line kept whole; longer ones are split.
const MAX_LINE: usize = 64 * 1024;
/// Lines waiting for the writer, per channel: at most 64 lines of at most
/// `MAX_LINE` bytes, 4 MiB, of worker output; as many of the primary's own.
pub const QUEUE: usize = 64;

struct Line {
    stream: Stream,
    bytes: Vec<u8>,
}

enum ToWriter {
    Line(Line),
    /// Write out everything queued, flush, then answer.
    Flush(std::sync::mpsc::SyncSender<()>),
    /// From now on, worker lines go to these files (`--out-file`).
    Files(LogFiles),
    /// Open the files again by path (after logrotate): what asked (for
    /// the log), and where to say what was done (`hotswap logs --reopen`).
    Reopen(&'static str, Option<tokio::sync::oneshot::Sender<(bool, Vec<String>)>>),
}

/// Where pipe readers send their lines, and the primary its log.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<ToWriter>,
    log: mpsc::Sender<Vec<u8>>,
    /// The primary's own lines dropped since the last note.
    dropped: Arc<AtomicU64>,
    /// Pipe readers that have not reached end of file.
    readers: Arc<AtomicUsize>,
    /// Where the writer is in each stream's lines, and whether it may write.
    ends: Arc<LineEnds>,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

impl Output {
    /// The primary's writer, started on first use. From then on the log
    /// ([`LogSink`]) goes through it too.
    pub fn global() -> &'static Output {
        OUTPUT.get_or_init(|| crate::sys::signal_mask::blocked_while(Output::start))
    }

    /// Waits until every pipe reader has reached end of file (every worker
    /// and build has exited and its output is queued), at most `bound`: a
    /// worker's leftover process may hold a pipe open.
    pub async fn drain(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        while self.readers.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// From now on the workers' (and `--build`'s) lines go to `files`
    /// (`--out-file`, `--error-file`); the primary's own stay on stderr.
    /// Queued behind the lines already waiting; waits at most a second
    /// for room (a stalled stdout), false if it found none.
    pub fn use_files(&self, files: LogFiles) -> bool {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut msg = ToWriter::Files(files);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
    }

    /// Asks the writer to open the out and error files again by path
    /// (SIGUSR1): it does so after the lines queued before, which go to
    /// the old files. Never waits.
    pub fn reopen(&self) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(ToWriter::Reopen("SIGUSR1", None)).await;
        });
    }

    /// [`Output::reopen`], asked by `who`, and what was done: false when
    /// there was nothing to reopen or a file could not be opened.
    pub async fn reopen_told(&self, who: &'static str) -> (bool, Vec<String>) {
        let (tell, told) = tokio::sync::oneshot::channel();
        if self.tx.send(ToWriter::Reopen(who, Some(tell))).await.is_err() {
            return (false, vec!["the output writer has stopped".into()]);
        }
        told.await.unwrap_or_else(|_| (false, vec!["the output writer has stopped".into()]))
    }

    /// Flushes the writer if it runs (see [`Output::flush`]).
    pub fn flush_if_running(bound: Duration) -> bool {
        OUTPUT.get().is_none_or(|o| o.flush(bound))
    }

    /// Queues one of the primary's own log lines; never waits. A full queue
    /// (stderr not being read) drops it, counted for the note.
    pub fn log_line(&self, bytes: &[u8]) {
        if self.log.try_send(bytes.to_vec()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until everything queued so far is written and flushed, at most
    /// `bound` (a reader that stays stalled). Blocking: for the moments the
    /// primary is about to exit or re-execute itself. False on time-out.
    pub fn flush(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let mut msg = ToWriter::Flush(done_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }
}
