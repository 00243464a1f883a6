//! tracing's way to the terminal: through the writer thread once the
//! primary runs, straight to stderr before that and in other subcommands.

use std::io::Write;
use std::sync::OnceLock;

use super::{History, OUTPUT};

/// tracing's writer: the primary's log lines go through
/// [`Output`](super::Output) once it runs (`hotswap run`), unless stderr is
/// a regular file (a write to a file waits for no reader, and the log stays
/// in step with what the primary does); before that, and in every other
/// subcommand, straight to stderr.
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
