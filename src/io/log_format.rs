//! The shape of every line the primary writes (`--log-format`): its own
//! log lines ([`PrimaryFormat`], tracing's event formatter) and its workers'
//! lines ([`LineLabel::frame`], used by [`super::output`]).
//!
//! - `text`: the primary's lines as tracing's default format; worker lines
//!   behind `[wID gGEN PID] `, with the time first under `--timestamps`.
//! - `json`: one object per line. The primary's: `time`, `level`,
//!   `source: "hotswap"`, `message`, and the event's fields (`worker`,
//!   `generation`). A worker's: `time`, `level` (`info` for stdout, `warn`
//!   for stderr, or the line's own `<N>` prefix), `source: "worker"`,
//!   `worker`, `pid`, `generation`, `stream`, `message`. `--build` output:
//!   `source: "build"`.
//! - `journald`: every line starts with a syslog priority, `<3>` for an
//!   error, as journald reads them (`SyslogLevelPrefix=`, on by default);
//!   worker stdout is `<6>` (info), stderr `<4>` (warning), and a worker line
//!   that carries its own prefix (`<3>...`, as programs written for systemd
//!   print) keeps it.
//!
//! The style is set once, when the settings are known ([`set_style`]);
//! lines before that (none in a normal start) are text.

use std::fmt::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

use crate::options::LogFormat;

/// Which of a worker's pipes a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Copy, Default)]
struct Style {
    format: LogFormat,
    timestamps: bool,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// Sets the format for the primary's life (the first call wins: a
/// self-upgrade's new image sets the same).
pub fn set_style(format: LogFormat, timestamps: bool) {
    let _ = STYLE.set(Style { format, timestamps });
}

fn style() -> Style {
    STYLE.get().copied().unwrap_or_default()
}

/// The time as the text log shows it: `2026-12-06T10:14:02.123456Z`.
fn now() -> String {
    let mut s = String::with_capacity(32);
    let _ = SystemTime.format_time(&mut Writer::new(&mut s));
    s
}

/// The primary's last word when it fails (written straight to stderr,
/// past the log): `hotswap: WHY`, in the style's shape.
pub fn error_line(why: &str) -> String {
    match style().format {
        LogFormat::Text => format!("hotswap: {why}"),
        LogFormat::Journald => format!("<3>hotswap: {}", why.replace('\n', "\n<3>")),
        LogFormat::Json => serde_json::json!({
            "time": now(), "level": "error", "source": "hotswap", "message": why,
        })
        .to_string(),
    }
}

/// Who wrote a line the primary passes on, with its text prefix made once
/// (not per line).
#[derive(Debug, Clone)]
pub struct LineLabel {
    source: Source,
    /// `[w3 g2 4242]` or `[build]`.
    prefix: String,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Worker { id: u64, generation: u64, pid: i32 },
    Build,
}

impl LineLabel {
    pub fn worker(id: u64, generation: u64, pid: i32) -> LineLabel {
        LineLabel { source: Source::Worker { id, generation, pid }, prefix: crate::types::label(id, generation, pid) }
    }

    /// The `--build` command's output.
    pub fn build() -> LineLabel {
        LineLabel { source: Source::Build, prefix: "[build]".into() }
    }

    /// One line as it is written (with its newline); `stderr` says which
    /// of the worker's streams it came from.
    pub fn frame(&self, stderr: bool, line: &[u8]) -> Vec<u8> {
        let style = style();
        let original = line;
        let (own, line) = syslog_prefix(line);
        let prefix = &self.prefix;
        let mut out = Vec::with_capacity(line.len() + prefix.len() + 48);
        match style.format {
            LogFormat::Text => {
                if style.timestamps {
                    out.extend_from_slice(now().as_bytes());
                    out.push(b' ');
                }
                out.extend_from_slice(prefix.as_bytes());
                out.push(b' ');
                // The line as the worker wrote it, its own prefix included.
                out.extend_from_slice(original);
            }
            LogFormat::Journald => {
                let priority = own.unwrap_or(if stderr { 4 } else { 6 });
                let _ = write!(LossyWriter(&mut out), "<{priority}>{prefix} ");
                out.extend_from_slice(line);
            }
            LogFormat::Json => {
                let priority = own.unwrap_or(if stderr { 4 } else { 6 });
                let mut o = serde_json::Map::new();
                o.insert("time".into(), now().into());
                o.insert("level".into(), level_of(priority).into());
                match self.source {
                    Source::Worker { id, generation, pid } => {
                        o.insert("source".into(), "worker".into());
                        o.insert("worker".into(), id.into());
                        o.insert("pid".into(), pid.into());
                        o.insert("generation".into(), generation.into());
                    }
                    Source::Build => {
                        o.insert("source".into(), "build".into());
                    }
                }
                o.insert("stream".into(), if stderr { "stderr" } else { "stdout" }.into());
                o.insert("message".into(), String::from_utf8_lossy(line).into_owned().into());
                out = serde_json::to_vec(&o).unwrap_or_default();
            }
        }
        out.push(b'\n');
        out
    }
}

/// Gives back the `<N>` a worker put in front of its line (N a syslog
/// priority, 0 to 7) and the rest.
fn syslog_prefix(line: &[u8]) -> (Option<u8>, &[u8]) {
    match line {
        [b'<', d @ b'0'..=b'7', b'>', rest @ ..] => (Some(d - b'0'), rest),
        _ => (None, line),
    }
}

/// The JSON level of a syslog priority.
fn level_of(priority: u8) -> &'static str {
    match priority {
        0..=3 => "error",
        4 => "warn",
        5 | 6 => "info",
        _ => "debug",
    }
}

fn priority_of(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// `fmt::Write` into bytes.
struct LossyWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for LossyWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// tracing's event formatter for the primary's own lines: the style's
/// shape, decided at each line (the style is set after tracing starts).
pub struct PrimaryFormat {
    text: format::Format<format::Full, SystemTime>,
}

impl Default for PrimaryFormat {
    fn default() -> Self {
        PrimaryFormat { text: format::Format::default().with_target(false) }
    }
}

impl<S, N> FormatEvent<S, N> for PrimaryFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = event.metadata().level();
        match style().format {
            LogFormat::Text => self.text.format_event(ctx, writer, event),
            LogFormat::Journald => {
                let mut fields = Fields::default();
                event.record(&mut fields);
                let priority = priority_of(level);
                // Each line of a message that spans several gets the
                // priority: journald reads it per line.
                let mut lines = fields.message.split('\n');
                write!(writer, "<{priority}>{}", lines.next().unwrap_or(""))?;
                for (k, v) in &fields.rest {
                    write!(writer, " {k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))?;
                }
                for more in lines {
                    write!(writer, "\n<{priority}>{more}")?;
                }
                writeln!(writer)
            }
            LogFormat::Json => {
                let mut fields = Fields::default();
                event.record(&mut fields);
                let mut o = serde_json::Map::new();
                o.insert("time".into(), now().into());
                o.insert("level".into(), level.as_str().to_ascii_lowercase().into());
                o.insert("source".into(), "hotswap".into());
                o.insert("message".into(), fields.message.into());
                for (k, v) in fields.rest {
                    o.insert(k, v);
                }
                writeln!(writer, "{}", serde_json::Value::Object(o))
            }
        }
    }
}

/// An event's message and its other fields, as JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest.push((field.name().to_string(), format!("{value:?}").into()));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.push((field.name().to_string(), value.into()));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.push((field.name().to_string(), value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.push((field.name().to_string(), value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.push((field.name().to_string(), value.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_own_priority_prefix_is_read() {
        assert_eq!(syslog_prefix(b"<3>disk full"), (Some(3), &b"disk full"[..]));
        assert_eq!(syslog_prefix(b"<9>not one"), (None, &b"<9>not one"[..]));
        assert_eq!(syslog_prefix(b"plain"), (None, &b"plain"[..]));
        assert_eq!(level_of(3), "error");
        assert_eq!(level_of(4), "warn");
        assert_eq!(level_of(6), "info");
    }
}
