//! Messages from the primary to a worker.

use serde_json::{json, Value};

use crate::types::WorkerId;

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
/// A `NODE_HANDLE` line came without its fd: Node sends it again.
pub fn node_handle_nack() -> Value {
    json!({"cmd": "NODE_HANDLE_NACK"})
}
/// PM2's convention for "stop" (`shutdown_with_message`).
pub fn pm2_shutdown() -> Value {
    json!("shutdown")
}
