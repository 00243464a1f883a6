//! The writer thread, sole writer of fds 1 and 2 (so that a stalled
//! reader stalls it alone, never the event loop), and what it knows of the
//! line ends there, which a self-upgrade needs to cut cleanly
//! ([`Output::freeze`], [`Output::end_cut_lines`]).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{History, Line, Output, Stream, ToWriter, QUEUE};
use crate::io::log_files::LogFiles;

/// Whether what fds 1 and 2 got so far ends with a whole line, for a
/// self-upgrade: a line the writer could write only in part (stdout or
/// stderr not read) must not have the next image's first line glued to it.
/// The writer says which stream it is writing before each write and
/// checks that it may; [`Output::freeze`] stops it from starting another.
#[derive(Default)]
pub(super) struct LineEnds {
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

impl Output {
    /// Starts the writer: a thread of its own, so that a slow terminal or
    /// pipe never blocks the event loop, and writes are plain blocking ones.
    pub(super) fn start() -> Output {
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
}

/// Whether two fds of this process are open on the same file (pipe).
fn same_file(a: std::os::fd::RawFd, b: std::os::fd::RawFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |fd| std::fs::metadata(format!("/proc/self/fd/{fd}")).ok().map(|m| (m.dev(), m.ino()));
    id(a).is_some_and(|x| Some(x) == id(b))
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
