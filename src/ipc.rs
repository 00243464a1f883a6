//! The IPC channel between the primary and one worker.
//!
//! Framing is one JSON value per line, both ways: what Node.js speaks on
//! `NODE_CHANNEL_FD` with `NODE_CHANNEL_SERIALIZATION_MODE=json`. [`Channel`]
//! owns the primary's end of the socketpair in one task: it turns bytes into
//! whole, validated [`FromWorker`] messages (enforcing [`MAX_LINE`] in one
//! place) and writes what the supervisor queues for the worker. A bad line is
//! logged with the worker's id and dropped, never fatal.

use bytes::BytesMut;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

use crate::supervisor::Event;
use crate::worker::WorkerId;

/// The longest line accepted from a worker, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// A message from a worker, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    /// `{"type":"listening"}` or the bare string `"ready"`.
    Listening,
    /// `{"type":"broadcast","data":...}`: to every other worker.
    Broadcast { data: Value },
    /// `{"type":"send","to":ID,"data":...}`: to one worker.
    Send { to: WorkerId, data: Value },
    /// Node.js trying to pass a handle; it waits for an acknowledgement.
    NodeHandle,
    /// Valid JSON that means nothing to hotswap.
    Other(Value),
}

/// Parses one line from a worker. `Err` says why it was refused.
pub fn parse(line: &str) -> Result<FromWorker, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    if value.as_str() == Some("ready") {
        return Ok(FromWorker::Listening);
    }
    if value.get("cmd").and_then(Value::as_str) == Some("NODE_HANDLE") {
        return Ok(FromWorker::NodeHandle);
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
        _ => FromWorker::Other(value),
    })
}

/// Messages from the primary to a worker.
pub mod to_worker {
    use super::*;

    pub fn shutdown() -> Value {
        json!({"type": "shutdown"})
    }
    pub fn broadcast(from: WorkerId, data: Value) -> Value {
        json!({"type": "broadcast", "from": from, "data": data})
    }
    pub fn send(from: WorkerId, data: Value) -> Value {
        json!({"type": "send", "from": from, "data": data})
    }
    pub fn error(message: &str) -> Value {
        json!({"type": "error", "error": message})
    }
    pub fn node_handle_ack() -> Value {
        json!({"cmd": "NODE_HANDLE_ACK"})
    }
}

enum Outgoing {
    Message(Value),
    Disconnect,
}

/// The supervisor's handle on a worker's channel. Dropping it disconnects.
#[derive(Debug, Clone)]
pub struct Channel {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outgoing::Message(v) => write!(f, "Message({v})"),
            Outgoing::Disconnect => write!(f, "Disconnect"),
        }
    }
}

impl Channel {
    /// Starts the task that owns `stream`, the primary's end.
    pub fn start(stream: UnixStream, worker: WorkerId, label: String, events: mpsc::Sender<Event>) -> Channel {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(stream, worker, label, events, rx));
        Channel { tx }
    }

    /// Queues a message; false if the channel is already closed.
    pub fn send(&self, message: Value) -> bool {
        self.tx.send(Outgoing::Message(message)).is_ok()
    }

    /// Flushes what is queued, then closes the primary's end.
    pub fn disconnect(&self) {
        let _ = self.tx.send(Outgoing::Disconnect);
    }
}

async fn run(
    mut stream: UnixStream,
    worker: WorkerId,
    label: String,
    events: mpsc::Sender<Event>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut codec = LinesCodec::new_with_max_length(MAX_LINE);
    let mut reading = true;
    loop {
        tokio::select! {
            read = stream.read_buf(&mut buf), if reading => {
                match read {
                    Ok(0) | Err(_) => {
                        reading = false;
                        if !buf.is_empty() {
                            tracing::warn!("{label} IPC: dropped {} bytes without a final newline", buf.len());
                            buf.clear();
                        }
                        let _ = events.send(Event::IpcClosed { worker }).await;
                    }
                    Ok(_) => {
                        if !drain_lines(&mut codec, &mut buf, worker, &label, &events).await {
                            return;
                        }
                    }
                }
            }
            out = rx.recv() => match out {
                Some(Outgoing::Message(v)) => {
                    let mut line = v.to_string();
                    line.push('\n');
                    if let Err(e) = stream.write_all(line.as_bytes()).await {
                        tracing::debug!("{label} IPC: write failed: {e}");
                    }
                }
                Some(Outgoing::Disconnect) | None => {
                    let _ = stream.shutdown().await;
                    return;
                }
            },
        }
    }
}

/// Hands every complete line in `buf` to the supervisor. False once the
/// supervisor is gone.
async fn drain_lines(
    codec: &mut LinesCodec,
    buf: &mut BytesMut,
    worker: WorkerId,
    label: &str,
    events: &mpsc::Sender<Event>,
) -> bool {
    loop {
        match codec.decode(buf) {
            Ok(Some(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                match parse(&line) {
                    Ok(msg) => {
                        if events.send(Event::Ipc { worker, msg }).await.is_err() {
                            return false;
                        }
                    }
                    Err(why) => tracing::warn!("{label} IPC: refused a message: {why}"),
                }
            }
            Ok(None) => return true,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::warn!("{label} IPC: refused a message longer than {MAX_LINE} bytes");
            }
            Err(LinesCodecError::Io(_)) => {
                tracing::warn!("{label} IPC: refused a message: not valid UTF-8")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parse(r#"{"cmd":"NODE_HANDLE","type":"net.Socket"}"#).unwrap(), FromWorker::NodeHandle);
        assert!(matches!(parse(r#"{"hello":1}"#).unwrap(), FromWorker::Other(_)));
        assert!(parse("{not json").is_err());
    }
}
