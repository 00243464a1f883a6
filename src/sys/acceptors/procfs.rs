//! Reading `/proc` without surprises: whole small files into a reused
//! buffer, errors that keep their errno under added context (so that "the
//! process is gone" and "not allowed" can be told apart after wrapping),
//! and the number parsing `/proc` needs.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};

/// Reads a whole (small) file into `buf`, with no `stat` first (unlike
/// `fs::read`: /proc sizes are 0 anyway). The error keeps its kind, with the path.
pub(super) fn read_file(path: &str, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut f = File::open(path).map_err(|e| context(e, path))?;
    f.read_to_end(buf).map(drop).map_err(|e| context(e, path))
}

/// The process or thread went away during the look.
pub(super) fn vanished(e: &io::Error) -> bool {
    matches!(errno(e), Some(libc::ENOENT | libc::ESRCH))
}

/// Lack of ptrace access (or of a file mode on a non-dumpable process's files).
pub(super) fn is_denied(e: &io::Error) -> bool {
    matches!(errno(e), Some(libc::EACCES | libc::EPERM))
}

/// The errno of an OS error, also once wrapped by [`context`].
pub(super) fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| e.get_ref()?.downcast_ref::<ContextError>().map(|c| c.errno))
}

/// Prefixes the message, keeping the kind and the errno (see [`errno`]).
pub(super) fn context(e: io::Error, what: impl fmt::Display) -> io::Error {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<ContextError>()).map(|c| c.what.as_str());
    match errno(&e) {
        Some(errno) => {
            let what = match inner {
                Some(inner) if inner != what.to_string() => format!("{what}: {inner}"),
                _ => what.to_string(),
            };
            io::Error::new(e.kind(), ContextError { what, errno })
        }
        None => io::Error::new(e.kind(), format!("{what}: {e}")),
    }
}

/// An error message with context that still knows its errno.
#[derive(Debug)]
struct ContextError {
    what: String,
    errno: i32,
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, io::Error::from_raw_os_error(self.errno))
    }
}

impl std::error::Error for ContextError {}

pub(super) fn parse_int<T: std::str::FromStr>(s: &[u8]) -> Option<T> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

pub(super) fn parse_hex(s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s).ok()?;
    u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_errno() {
        let e = context(io::Error::from_raw_os_error(libc::ENOENT), "reading /proc/1/x");
        assert!(vanished(&e));
        assert_eq!(e.to_string(), format!("reading /proc/1/x: {}", io::Error::from_raw_os_error(libc::ENOENT)));
        let twice = context(e, "looking at pid 1");
        assert!(vanished(&twice) && twice.to_string().starts_with("looking at pid 1: reading /proc/1/x"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_hex(b"0x1c3b7b"), Some(0x1c3b7b));
        assert_eq!(parse_hex(b"ff"), Some(255));
        assert_eq!(parse_int::<i32>(b"-1"), Some(-1));
        assert_eq!(parse_int::<i32>(b"x"), None);
    }
}
