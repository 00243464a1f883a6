//! The last lines a worker wrote (stdout and stderr together, as read),
//! for the messages of a worker that never got ready: a failure summary
//! that quotes `SyntaxError: ...` or `KeyError: 'PORT'` says more than any
//! guess of the primary's. Fed by the worker's output readers
//! ([`super::output::Output::forward`]), in memory only, a few lines each.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Lines kept per worker.
const KEPT: usize = 24;
/// Lines quoted in a message.
const QUOTED: usize = 3;
/// Characters quoted of one line.
const LINE_CHARS: usize = 200;

/// One worker's last lines, shared by its two output readers and the
/// supervisor.
#[derive(Debug, Clone, Default)]
pub struct LastLines(Arc<Mutex<VecDeque<String>>>);

impl LastLines {
    pub fn new() -> LastLines {
        LastLines::default()
    }

    /// A line as the worker wrote it (without its newline).
    pub fn push(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text: String = text.trim_end().chars().take(LINE_CHARS).collect();
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == KEPT {
            lines.pop_front();
        }
        lines.push_back(text);
    }

    /// The lines that say why, in a message: `; its last output: "…" "…"`,
    /// or that it wrote nothing. Blank lines, stack frames (`    at f
    /// (file:1:2)`) and Node's closing `Node.js v20.1.0` are left out: the
    /// error line and what precedes it are what a reader needs.
    pub fn quote(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.is_empty() {
            return "; it wrote nothing on stdout or stderr".into();
        }
        let telling: Vec<&String> = lines.iter().filter(|l| telling(l)).collect();
        let shown = &telling[telling.len().saturating_sub(QUOTED)..];
        if shown.is_empty() {
            return "; it wrote nothing but blank lines and stack frames".into();
        }
        let quoted: Vec<String> = shown.iter().map(|l| format!("{l:?}")).collect();
        format!("; its last output: {}", quoted.join(" "))
    }
}

/// Whether a line says something of its own (not blank, not a stack
/// frame, not Node's version footer).
fn telling(line: &str) -> bool {
    let t = line.trim();
    !(t.is_empty()
        || t == "^"
        || t.chars().all(|c| c == '^' || c == '~' || c == ' ')
        || (line.starts_with(char::is_whitespace) && t.starts_with("at "))
        || t.starts_with("Node.js v"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_the_error_not_the_stack() {
        let l = LastLines::new();
        assert_eq!(l.quote(), "; it wrote nothing on stdout or stderr");
        for line in [
            "/srv/app/server.js:3",
            "",
            "SyntaxError: Unexpected end of input",
            "    at internalCompileFunction (node:internal/vm:76:18)",
            "    at Module._compile (node:internal/modules/cjs/loader:1137:27)",
            "",
            "Node.js v18.19.0",
        ] {
            l.push(line.as_bytes());
        }
        assert_eq!(l.quote(), "; its last output: \"/srv/app/server.js:3\" \"SyntaxError: Unexpected end of input\"");
        for i in 0..40 {
            l.push(format!("line {i}").as_bytes());
        }
        assert_eq!(l.quote(), "; its last output: \"line 37\" \"line 38\" \"line 39\"");
    }
}
