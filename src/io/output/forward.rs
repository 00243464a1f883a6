//! The pipe readers: each forwards a worker's (or the build's) stdout or
//! stderr to the writer, line by line, and keeps what it read and did not
//! pass on where a self-upgrade can take it ([`Unforwarded`]).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::{Line, Output, Stream, ToWriter, MAX_LINE};
use crate::io::last_lines::LastLines;
use crate::io::lines::{Frame, Lines, Long};
use crate::io::log_format::LineLabel;

impl Output {
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
