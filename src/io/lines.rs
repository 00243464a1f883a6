//! Newline framing, for every newline-delimited stream hotswap reads: a
//! worker's IPC channel, its stdout and stderr, and control requests.
//!
//! One type, so that the bound on a line is enforced the same way
//! everywhere: whatever a peer sends, the buffer holds at most one line's
//! bound plus one read. What happens to a longer line depends on the
//! stream: a message that long is refused ([`Long::Refuse`]: dropped up to
//! its newline), output is passed on in pieces ([`Long::Split`]).

use bytes::{Buf, BytesMut};

/// What to do with a line longer than the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Long {
    /// Report [`Frame::TooLong`] once, and drop the line up to its newline.
    Refuse,
    /// Hand it on in pieces of the bound's size.
    Split,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A line, without its newline (a last line at end of input may have
    /// had none).
    Line(BytesMut),
    /// A line over the bound, refused.
    TooLong,
}

/// Splits bytes into lines of at most `max` bytes.
#[derive(Debug)]
pub struct Lines {
    buf: BytesMut,
    max: usize,
    long: Long,
    /// Dropping the rest of a refused line, up to its newline.
    discarding: bool,
    /// How far `buf` has been searched for a newline.
    searched: usize,
}

impl Lines {
    pub fn new(max: usize, long: Long) -> Lines {
        Lines { buf: BytesMut::with_capacity(8 * 1024), max, long, discarding: false, searched: 0 }
    }

    /// Where to read the next bytes into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes held: a partial line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete line, or `None` when more bytes are needed. At end
    /// of input (`eof`), whatever is left is the last line.
    pub fn next_frame(&mut self, eof: bool) -> Option<Frame> {
        loop {
            let newline = self.buf[self.searched..].iter().position(|&b| b == b'\n').map(|i| i + self.searched);
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.buf.advance(i + 1);
                        self.searched = 0;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        self.buf.clear();
                        self.searched = 0;
                        return None;
                    }
                }
            }
            match newline {
                Some(i) if i <= self.max => {
                    let mut line = self.buf.split_to(i + 1);
                    line.truncate(i);
                    self.searched = 0;
                    return Some(Frame::Line(line));
                }
                _ if self.buf.len() > self.max || newline.is_some() => {
                    return Some(match self.long {
                        Long::Split => {
                            self.searched = 0;
                            Frame::Line(self.buf.split_to(self.max))
                        }
                        Long::Refuse => {
                            self.discarding = true;
                            Frame::TooLong
                        }
                    });
                }
                None if eof && !self.buf.is_empty() => {
                    self.searched = 0;
                    return Some(Frame::Line(self.buf.split()));
                }
                None => {
                    self.searched = self.buf.len();
                    return None;
                }
                Some(_) => unreachable!("handled above"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(l: &mut Lines, eof: bool) -> Vec<Frame> {
        std::iter::from_fn(|| l.next_frame(eof)).collect()
    }

    fn line(s: &[u8]) -> Frame {
        Frame::Line(BytesMut::from(s))
    }

    #[test]
    fn splits_on_newlines_and_keeps_a_partial_line() {
        let mut l = Lines::new(16, Long::Refuse);
        l.buffer().extend_from_slice(b"a\n\nbc\npart");
        assert_eq!(frames(&mut l, false), vec![line(b"a"), line(b""), line(b"bc")]);
        assert_eq!(l.buffered(), 4);
        l.buffer().extend_from_slice(b"ial\n");
        assert_eq!(frames(&mut l, false), vec![line(b"partial")]);
        l.buffer().extend_from_slice(b"last");
        assert_eq!(frames(&mut l, true), vec![line(b"last")]);
    }

    #[test]
    fn a_long_line_is_refused_once_and_the_stream_recovers() {
        let mut l = Lines::new(4, Long::Refuse);
        l.buffer().extend_from_slice(b"abcdefgh");
        assert_eq!(frames(&mut l, false), vec![Frame::TooLong]);
        l.buffer().extend_from_slice(b"ijkl\nok\n");
        assert_eq!(frames(&mut l, false), vec![line(b"ok")]);
        l.buffer().extend_from_slice(b"toolong\nyes\n");
        assert_eq!(frames(&mut l, false), vec![Frame::TooLong, line(b"yes")]);
    }

    #[test]
    fn a_long_line_is_split_for_output() {
        let mut l = Lines::new(4, Long::Split);
        l.buffer().extend_from_slice(b"abcdefghij\nxy\n");
        assert_eq!(frames(&mut l, false), vec![line(b"abcd"), line(b"efgh"), line(b"ij"), line(b"xy")]);
    }

    #[test]
    fn an_endless_line_stays_bounded() {
        let mut l = Lines::new(1 << 20, Long::Refuse);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            l.buffer().extend_from_slice(&chunk);
            while l.next_frame(false).is_some() {}
            assert!(l.buffered() <= (1 << 20) + chunk.len());
        }
        l.buffer().extend_from_slice(b"\nfine\n");
        assert_eq!(frames(&mut l, false), vec![line(b"fine")]);
    }
}
