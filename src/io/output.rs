//! Worker stdout and stderr, passed through the primary line by line.
//!
//! Each line is prefixed with the worker's id, generation and pid, so the
//! output of many workers (and generations) stays readable when interleaved.
//! One writer thread owns the primary's stdout and stderr; pipe readers send
//! it whole lines over a bounded channel, so a slow terminal slows the
//! workers down (as a full pipe would) instead of growing the primary's
//! memory, and never blocks the event loop.

use std::os::fd::OwnedFd;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::lines::{Frame, Lines, Long};

/// Longest line kept whole; longer ones are split.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

struct Line {
    stream: Stream,
    bytes: Vec<u8>,
}

/// Where pipe readers send their lines.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<Line>,
}

impl Output {
    /// Starts the writer: a thread of its own, so that a slow terminal or
    /// pipe never blocks the event loop, and writes are plain blocking ones.
    pub fn start() -> Output {
        // At most 64 lines of at most MAX_LINE bytes wait: 4 MiB.
        let (tx, mut rx) = mpsc::channel::<Line>(64);
        std::thread::Builder::new()
            .name("hotswap-output".into())
            .spawn(move || {
                use std::io::{BufWriter, Write};
                // Own buffered handles on fds 1 and 2 (dups): the primary's
                // own log (tracing) keeps writing to std's stderr, unblocked.
                let open = |fd: std::os::fd::BorrowedFd<'_>| -> Option<BufWriter<std::fs::File>> {
                    let dup = nix::unistd::dup(fd).ok()?;
                    let _ = nix::fcntl::fcntl(&dup, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
                    Some(BufWriter::with_capacity(64 * 1024, std::fs::File::from(dup)))
                };
                use std::os::fd::AsFd;
                let (mut out, mut err) = (open(std::io::stdout().as_fd()), open(std::io::stderr().as_fd()));
                while let Some(line) = rx.blocking_recv() {
                    let w = match line.stream {
                        Stream::Stdout => out.as_mut(),
                        Stream::Stderr => err.as_mut(),
                    };
                    if let Some(w) = w {
                        let _ = w.write_all(&line.bytes);
                    }
                    // Flush when nothing else waits: batches under a flood.
                    if rx.is_empty() {
                        out.as_mut().map(|w| w.flush());
                        err.as_mut().map(|w| w.flush());
                    }
                }
            })
            .expect("starting the output thread");
        Output { tx }
    }

    /// Forwards everything read from `fd` (the read end of a worker's pipe)
    /// until end of file, each line behind `prefix`.
    pub fn forward(&self, fd: OwnedFd, stream: Stream, prefix: String) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut rx = match pipe::Receiver::from_owned_fd(fd) {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::error!("cannot read worker output ({prefix}): {e}");
                    return;
                }
            };
            let mut lines = Lines::new(MAX_LINE, Long::Split);
            loop {
                lines.buffer().reserve(64 * 1024);
                let eof = rx.read_buf(lines.buffer()).await.unwrap_or(0) == 0;
                while let Some(Frame::Line(line)) = lines.next_frame(eof) {
                    let mut bytes = Vec::with_capacity(prefix.len() + line.len() + 1);
                    bytes.extend_from_slice(prefix.as_bytes());
                    bytes.extend_from_slice(&line);
                    bytes.push(b'\n');
                    if tx.send(Line { stream, bytes }).await.is_err() {
                        return;
                    }
                }
                if eof {
                    return;
                }
            }
        });
    }
}
