//! The channel's framing: one JSON value per line, at most [`MAX_LINE`]
//! bytes, parsed into a [`FromWorker`] message or refused with the reason.
//! Pure (no socket), so it is tested on arbitrary bytes.

use serde_json::Value;

use super::MAX_LINE;
use crate::io::lines::{Frame, Lines, Long};
use crate::types::event::FromWorker;

/// Parses one line from a worker. `Err` says why it was refused.
pub fn parse(line: &str) -> Result<FromWorker, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    if value.as_str() == Some("ready") {
        return Ok(FromWorker::Listening);
    }
    match value.get("cmd").and_then(Value::as_str) {
        Some("NODE_HANDLE") => return Ok(FromWorker::NodeHandle(value)),
        Some("NODE_HANDLE_ACK") => return Ok(FromWorker::HandleAck { ok: true }),
        Some("NODE_HANDLE_NACK") => return Ok(FromWorker::HandleAck { ok: false }),
        Some("NODE_CLUSTER") => return Ok(FromWorker::Cluster(value)),
        _ => {}
    }
    let kind = value.get("type").and_then(Value::as_str);
    Ok(match kind {
        Some("listening") => FromWorker::Listening,
        Some("broadcast") => FromWorker::Broadcast { data: value.get("data").cloned().unwrap_or(Value::Null) },
        Some("send") => {
            let to = value
                .get("to")
                .and_then(Value::as_u64)
                .ok_or_else(|| "a \"send\" message needs a numeric \"to\"".to_string())?;
            FromWorker::Send { to, data: value.get("data").cloned().unwrap_or(Value::Null) }
        }
        Some("hotswap:preload") => FromWorker::Preload(crate::types::wire::PreloadPatch {
            patch: value.get("patch").and_then(Value::as_str).unwrap_or("?").chars().take(200).collect(),
            ok: value.get("ok").and_then(Value::as_bool).unwrap_or(false),
            error: value.get("error").and_then(Value::as_str).map(|e| e.chars().take(300).collect()),
            skipped: value.get("skipped").and_then(Value::as_str).map(|e| e.chars().take(300).collect()),
        }),
        _ => FromWorker::Other(value),
    })
}

/// Turns the bytes a worker writes into messages: one JSON value per line,
/// at most [`MAX_LINE`] bytes each (the bound is [`Lines`]'s to enforce).
pub struct Framer {
    lines: Lines,
    /// Refused lines since the last good one.
    pub refused_in_a_row: u32,
}

impl Default for Framer {
    fn default() -> Self {
        Framer { lines: Lines::new(MAX_LINE, Long::Refuse), refused_in_a_row: 0 }
    }
}

impl Framer {
    /// Where to read the next bytes into.
    pub fn buffer(&mut self) -> &mut bytes::BytesMut {
        self.lines.buffer()
    }

    /// Bytes held (a partial line).
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }

    /// The next complete line as a message, or why it was refused; `None`
    /// when more bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<FromWorker, String>> {
        loop {
            let item = match self.lines.next_frame(false)? {
                Frame::Line(line) if line.trim_ascii().is_empty() => continue,
                Frame::Line(line) => match std::str::from_utf8(&line) {
                    Ok(text) => parse(text),
                    Err(_) => Err("not valid UTF-8".into()),
                },
                Frame::TooLong => Err(format!("longer than {MAX_LINE} bytes")),
            };
            match item {
                Ok(_) => self.refused_in_a_row = 0,
                Err(_) => self.refused_in_a_row += 1,
            }
            return Some(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn framer_splits_refuses_and_recovers() {
        let mut f = Framer::default();
        f.buffer().extend_from_slice(b"{\"type\":\"listening\"}\n\n{bad\n\xff\n\"ready\"\npartial");
        assert_eq!(f.next_message(), Some(Ok(FromWorker::Listening)));
        assert!(f.next_message().unwrap().unwrap_err().contains("invalid JSON"));
        assert_eq!(f.next_message(), Some(Err("not valid UTF-8".into())));
        assert_eq!(f.refused_in_a_row, 2);
        assert_eq!(f.next_message(), Some(Ok(FromWorker::Listening)));
        assert_eq!(f.refused_in_a_row, 0);
        assert_eq!(f.next_message(), None);
        assert_eq!(f.buffered(), 7);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Arbitrary bytes, in arbitrary chunks: no panic, and the buffer
        /// never holds more than one line's bound plus one chunk.
        #[test]
        fn framer_is_total_and_bounded(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..150_000), 0..12)) {
            let mut f = Framer::default();
            for c in &chunks {
                f.buffer().extend_from_slice(c);
                while f.next_message().is_some() {}
                proptest::prop_assert!(f.buffered() <= MAX_LINE + c.len() + 1);
            }
        }

        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }
    }

    #[test]
    fn an_endless_line_stays_bounded() {
        let mut f = Framer::default();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            f.buffer().extend_from_slice(&chunk);
            while f.next_message().is_some() {}
            assert!(f.buffered() <= MAX_LINE + chunk.len());
        }
        f.buffer().extend_from_slice(b"\n{\"type\":\"listening\"}\n");
        let mut got = Vec::new();
        while let Some(m) = f.next_message() {
            got.push(m);
        }
        assert_eq!(got.last(), Some(&Ok(FromWorker::Listening)), "the channel recovers after the long line");
    }

    #[test]
    fn parses_every_message_kind() {
        assert_eq!(parse(r#"{"type":"listening"}"#).unwrap(), FromWorker::Listening);
        assert_eq!(parse(r#""ready""#).unwrap(), FromWorker::Listening);
        assert_eq!(
            parse(r#"{"type":"broadcast","data":{"a":1}}"#).unwrap(),
            FromWorker::Broadcast { data: json!({"a":1}) }
        );
        assert_eq!(
            parse(r#"{"type":"send","to":3,"data":"x"}"#).unwrap(),
            FromWorker::Send { to: 3, data: json!("x") }
        );
        assert!(parse(r#"{"type":"send","data":"x"}"#).is_err());
        assert!(matches!(
            parse(r#"{"cmd":"NODE_HANDLE","type":"net.Socket"}"#).unwrap(),
            FromWorker::NodeHandle(v) if v["type"] == "net.Socket"
        ));
        assert!(matches!(parse(r#"{"hello":1}"#).unwrap(), FromWorker::Other(_)));
        assert_eq!(
            parse(r#"{"type":"hotswap:preload","patch":"m.C","ok":false,"error":"no shutdown"}"#).unwrap(),
            FromWorker::Preload(crate::types::wire::PreloadPatch {
                patch: "m.C".into(),
                ok: false,
                error: Some("no shutdown".into()),
                skipped: None,
            })
        );
        assert_eq!(
            parse(r#"{"type":"hotswap:preload","patch":"m.C","ok":false,"skipped":"rescue covers this worker"}"#)
                .unwrap(),
            FromWorker::Preload(crate::types::wire::PreloadPatch {
                patch: "m.C".into(),
                ok: false,
                error: None,
                skipped: Some("rescue covers this worker".into()),
            })
        );
        assert!(parse("{not json").is_err());
    }
}
