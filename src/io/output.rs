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

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::last_lines::LastLines;
use super::lines::{Frame, Lines, Long};
use super::log_files::LogFiles;
use super::log_format::LineLabel;
pub use super::log_format::Stream;

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

/// Whether what fds 1 and 2 got so far ends with a whole line, for a
/// self-upgrade: a line the writer could write only in part (stdout or
/// stderr not read) must not have the next image's first line glued to it.
/// The writer says which stream it is writing before each write and
/// checks that it may; [`Output::freeze`] stops it from starting another.
#[derive(Default)]
struct LineEnds {
    /// Per stream (stdout, stderr): the last byte written was a newline
    /// (or nothing was written). False while a write is under way.
    cut: [std::sync::atomic::AtomicBool; 2],
    /// The stream being written: 0 none, 1 stdout, 2 stderr.
    writing: std::sync::atomic::AtomicU8,
    frozen: std::sync::atomic::AtomicBool,
}

/// One of the writer's handles on fd 1 or 2, keeping [`LineEnds`] true.
struct Tracked {
    file: std::fs::File,
    stream: usize,
    ends: Arc<LineEnds>,
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let ends = &self.ends;
        loop {
            ends.writing.store(self.stream as u8 + 1, Ordering::SeqCst);
            if !ends.frozen.load(Ordering::SeqCst) {
                break;
            }
            // The primary is about to re-execute itself: nothing more.
            ends.writing.store(0, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        }
        let was = ends.cut[self.stream].swap(false, Ordering::SeqCst);
        let result = self.file.write(buf);
        let now = match &result {
            Ok(n) if *n > 0 => buf[n - 1] == b'\n',
            _ => was,
        };
        ends.cut[self.stream].store(now, Ordering::SeqCst);
        ends.writing.store(0, Ordering::SeqCst);
        result
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

impl Output {
    /// The primary's writer, started on first use. From then on the log
    /// ([`LogSink`]) goes through it too.
    pub fn global() -> &'static Output {
        OUTPUT.get_or_init(|| crate::sys::signal_mask::blocked_while(Output::start))
    }

    /// Starts the writer: a thread of its own, so that a slow terminal or
    /// pipe never blocks the event loop, and writes are plain blocking ones.
    fn start() -> Output {
        let (tx, mut rx) = mpsc::channel::<ToWriter>(QUEUE);
        let (log, mut log_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let ends = Arc::new(LineEnds::default());
        for cut in &ends.cut {
            cut.store(true, Ordering::SeqCst);
        }
        let writer_ends = ends.clone();
        std::thread::Builder::new()
            .name("hotswap-output".into())
            .spawn(move || {
                // A runtime of its own, only to wait on both channels at once;
                // the writes themselves are blocking, on this thread alone.
                let rt = tokio::runtime::Builder::new_current_thread().build().expect("the output thread's runtime");
                let mut w = Writer::open(counter, writer_ends);
                rt.block_on(async {
                    loop {
                        let first = tokio::select! {
                            biased;
                            Some(line) = log_rx.recv() => Some(ToWriter::Line(Line { stream: Stream::Stderr, bytes: line })),
                            msg = rx.recv() => match msg {
                                Some(m) => Some(m),
                                None => break,
                            },
                        };
                        // Then whatever waits, without going back to the
                        // runtime (the primary's own lines first).
                        let mut next = first;
                        while let Some(msg) = next.take() {
                            match msg {
                                ToWriter::Line(line) => w.write_line(line.stream, &line.bytes),
                                ToWriter::Files(files) => w.files = Some(files),
                                ToWriter::Reopen(who, tell) => w.reopen(who, tell),
                                ToWriter::Flush(done) => {
                                    while let Ok(m) = rx.try_recv() {
                                        match m {
                                            ToWriter::Line(line) => w.write_line(line.stream, &line.bytes),
                                            ToWriter::Files(files) => w.files = Some(files),
                                            ToWriter::Reopen(who, tell) => w.reopen(who, tell),
                                            ToWriter::Flush(_) => {}
                                        }
                                    }
                                    while let Ok(line) = log_rx.try_recv() {
                                        w.write(Stream::Stderr, &line);
                                    }
                                    w.flush();
                                    let _ = done.try_send(());
                                }
                            }
                            next = match log_rx.try_recv() {
                                Ok(line) => Some(ToWriter::Line(Line { stream: Stream::Stderr, bytes: line })),
                                Err(_) => rx.try_recv().ok(),
                            };
                        }
                        // Flush when nothing else waits: batches under a flood.
                        w.flush();
                    }
                });
            })
            .expect("starting the output thread");
        Output { tx, log, dropped, readers: Default::default(), ends }
    }

    /// Before the exec of a self-upgrade: the writer starts no more writes
    /// (one under way may go on). Returns, per stream (stdout, stderr),
    /// whether what was written may end inside a line, for the next image
    /// to end it ([`Output::end_cut_lines`]).
    pub fn freeze(&self) -> [bool; 2] {
        let ends = &self.ends;
        ends.frozen.store(true, Ordering::SeqCst);
        let writing = ends.writing.load(Ordering::SeqCst) as usize;
        let mut cut = [!ends.cut[0].load(Ordering::SeqCst), !ends.cut[1].load(Ordering::SeqCst)];
        if writing > 0 {
            cut[writing - 1] = true;
        }
        cut
    }

    /// The exec did not happen: writing goes on.
    pub fn thaw(&self) {
        self.ends.frozen.store(false, Ordering::SeqCst);
    }

    /// The next image, first thing: ends the lines the previous one could
    /// only write in part, so that none is glued to this image's first line.
    pub fn end_cut_lines(&self, mut cut: [bool; 2]) {
        // One pipe for both (`2>&1`): one line to end, before the log's.
        if same_file(1, 2) && cut[0] {
            cut = [false, true];
        }
        if cut[0] {
            let _ = self.tx.try_send(ToWriter::Line(Line { stream: Stream::Stdout, bytes: b"\n".to_vec() }));
        }
        // On the log's channel, which the writer serves first: before any
        // log line of this image, and before any worker line (queued later).
        if cut[1] {
            let _ = self.log.try_send(b"\n".to_vec());
        }
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

    /// Forwards everything read from `fd` (the read end of a worker's pipe)
    /// until end of file, each line framed for `label` (`--log-format`);
    /// `carried` first (what the previous image had read and not written).
    /// Each line also goes to `last`, a worker's last lines.
    pub fn forward(
        &self,
        fd: OwnedFd,
        stream: Stream,
        label: LineLabel,
        carried: &[u8],
        last: Option<LastLines>,
    ) -> Unforwarded {
        let tx = self.tx.clone();
        let reading = Reading::new(&self.readers);
        let mut lines = Lines::new(MAX_LINE, Long::Split);
        lines.buffer().extend_from_slice(carried);
        let pending = Unforwarded(Arc::new(Mutex::new(lines)));
        let buffer = pending.0.clone();
        tokio::spawn(async move {
            let _reading = reading;
            let mut rx = match pipe::Receiver::from_owned_fd(fd) {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::error!("cannot read worker output ({label:?}): {e}");
                    return;
                }
            };
            let mut eof = false;
            let mut chunk = bytes::BytesMut::new();
            loop {
                // A line leaves the buffer only with its place in the queue.
                // (One wait per line: each spends tokio's cooperative budget,
                // so a flooding worker leaves the event loop its turns.)
                loop {
                    let Ok(permit) = tx.reserve().await else { return };
                    let Some(Frame::Line(line)) = lock(&buffer).next_frame(eof) else { break };
                    if let Some(last) = &last {
                        last.push(&line);
                    }
                    let bytes = label.frame(stream == Stream::Stderr, &line);
                    permit.send(ToWriter::Line(Line { stream, bytes }));
                }
                if eof {
                    return;
                }
                chunk.reserve(64 * 1024);
                eof = rx.read_buf(&mut chunk).await.unwrap_or(0) == 0;
                lock(&buffer).buffer().extend_from_slice(&chunk.split());
            }
        });
        pending
    }
}

/// Whether two fds of this process are open on the same file (pipe).
fn same_file(a: std::os::fd::RawFd, b: std::os::fd::RawFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |fd| std::fs::metadata(format!("/proc/self/fd/{fd}")).ok().map(|m| (m.dev(), m.ino()));
    id(a).is_some_and(|x| Some(x) == id(b))
}

/// What a pipe reader has read and not passed on (a partial line, or lines
/// waiting for room in the writer's queue), for a self-upgrade to carry.
#[derive(Debug, Clone)]
pub struct Unforwarded(Arc<Mutex<Lines>>);

impl Unforwarded {
    /// The bytes, as they came from the pipe. Read on the event loop's
    /// thread, between two steps of the reader (its only other user).
    pub fn bytes(&self) -> Vec<u8> {
        lock(&self.0).buffer().to_vec()
    }
}

fn lock(m: &Mutex<Lines>) -> std::sync::MutexGuard<'_, Lines> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pipe reader at work, counted until it ends.
struct Reading(Arc<AtomicUsize>);

impl Reading {
    fn new(count: &Arc<AtomicUsize>) -> Reading {
        count.fetch_add(1, Ordering::Relaxed);
        Reading(count.clone())
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

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

    fn push(&self, bytes: &[u8]) {
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

/// The writer thread's buffered handles on fds 1 and 2, and the files
/// worker lines go to instead, if any.
struct Writer {
    out: Option<std::io::BufWriter<Tracked>>,
    err: Option<std::io::BufWriter<Tracked>>,
    files: Option<LogFiles>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn open(dropped: Arc<AtomicU64>, ends: Arc<LineEnds>) -> Writer {
        use std::os::fd::AsFd;
        // Own handles on fds 1 and 2 (dups, close-on-exec).
        let open = |fd: std::os::fd::BorrowedFd<'_>, stream: usize| -> Option<std::io::BufWriter<Tracked>> {
            let dup = fd.try_clone_to_owned().ok()?;
            let file = Tracked { file: std::fs::File::from(dup), stream, ends: ends.clone() };
            Some(std::io::BufWriter::with_capacity(64 * 1024, file))
        };
        Writer {
            out: open(std::io::stdout().as_fd(), 0),
            err: open(std::io::stderr().as_fd(), 1),
            files: None,
            dropped,
        }
    }

    /// A worker's (or the build's) line: to its file if there is one.
    fn write_line(&mut self, stream: Stream, bytes: &[u8]) {
        if self.files.as_mut().is_some_and(|f| f.write(stream, bytes)) {
            History::global().push(bytes);
        } else {
            self.write(stream, bytes);
        }
    }

    fn reopen(&mut self, who: &str, tell: Option<tokio::sync::oneshot::Sender<(bool, Vec<String>)>>) {
        let (ok, said) = match self.files.as_mut() {
            Some(files) => files.reopen(),
            None => (false, vec!["no --out-file or --error-file to reopen".to_string()]),
        };
        for line in &said {
            tracing::info!("{who}: {line}");
        }
        if let Some(tell) = tell {
            let _ = tell.send((ok, said));
        }
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let w = match stream {
            Stream::Stdout => self.out.as_mut(),
            Stream::Stderr => self.err.as_mut(),
        };
        if let Some(w) = w {
            let _ = w.write_all(bytes);
        }
        History::global().push(bytes);
    }

    /// Flushes both, then says how many of the primary's lines were dropped
    /// (the reader has caught up: everything queued is written).
    fn flush(&mut self) {
        if let Some(files) = self.files.as_mut() {
            files.flush();
        }
        if let Some(w) = self.out.as_mut() {
            let _ = w.flush();
        }
        if let Some(w) = self.err.as_mut() {
            let _ = w.flush();
            let n = self.dropped.swap(0, Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    w,
                    "hotswap: {n} {} dropped: stderr was not being read",
                    crate::types::plural(n as usize, "line")
                );
                let _ = w.flush();
            }
        }
    }
}

/// tracing's writer: the primary's log lines go through [`Output`] once it
/// runs (`hotswap run`), unless stderr is a regular file (a write to a file
/// waits for no reader, and the log stays in step with what the primary
/// does); before that, and in every other subcommand, straight to stderr.
pub struct LogSink;

/// Whether fd 2 is a regular file (checked once).
fn stderr_is_a_file() -> bool {
    static FILE: OnceLock<bool> = OnceLock::new();
    *FILE.get_or_init(|| {
        use std::os::fd::AsFd;
        nix::sys::stat::fstat(std::io::stderr().as_fd()).is_ok_and(|st| {
            nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
                == nix::sys::stat::SFlag::S_IFREG
        })
    })
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

pub struct LogWriter;

impl Write for LogWriter {
    /// tracing formats a whole event, then writes it in one call.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match OUTPUT.get() {
            Some(o) if !stderr_is_a_file() => {
                o.log_line(buf);
                Ok(buf.len())
            }
            Some(_) => {
                History::global().push(buf);
                std::io::stderr().write(buf)
            }
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
