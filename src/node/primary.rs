//! The app's own cluster primary: the messages between hotswap and the
//! long-lived child in which a Node.js cluster app runs its
//! `cluster.isPrimary` branch, and how hotswap tells such an app from one
//! that has no primary branch.
//!
//! That child loads [`PRELOAD`] (`--require`), which backs its `cluster`
//! module with hotswap: `cluster.fork()` is answered with one of hotswap's
//! workers, and what Node's primary would see of its workers (`fork`,
//! `online`, `listening`, `message`, `disconnect`, `exit`) hotswap tells
//! it. Every message either way is a `NODE_HOTSWAP` one: Node hands such
//! messages (their `cmd` starts with `NODE_`) to `internalMessage`
//! listeners only, so the app's own `process.on('message')` never sees
//! them. The whole design is in docs/node-primary.md.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::types::WorkerId;

/// The primary's preload, written into the runtime directory at start.
pub const PRELOAD: &str = include_str!("primary.js");

/// What the app's primary asks of hotswap.
#[derive(Debug, Clone, PartialEq)]
pub enum FromPrimary {
    /// `worker.send(data)`: deliver `data` to worker `to`.
    Send { to: WorkerId, data: Value },
    /// `worker.disconnect()` or `worker.kill()`: retire that worker (its
    /// slot gets a new one: the pool's size is hotswap's).
    Retire { id: WorkerId },
    /// Something the log should say (a fork that waits for a worker).
    Warn { text: String },
    /// `server.listen()` in the primary (sticky's `setupMaster`, a server
    /// of its own): it gets hotswap's socket, as a worker's listen does
    /// (the same fields as Node's `queryServer`).
    Listen(crate::node::cluster::Query),
}

/// Parses a message of the primary's; `Ok(None)` for one that is not
/// hotswap's (the app's own `process.send()`, ignored).
pub fn parse(v: &Value) -> Result<Option<FromPrimary>, String> {
    if v.get("cmd").and_then(Value::as_str) != Some("NODE_HOTSWAP") {
        return Ok(None);
    }
    let act = v.get("act").and_then(Value::as_str).ok_or("no \"act\"")?;
    let id = || v.get("id").and_then(Value::as_u64).ok_or_else(|| format!("{act:?} without a numeric \"id\""));
    Ok(Some(match act {
        "send" => FromPrimary::Send { to: id()?, data: v.get("data").cloned().unwrap_or(Value::Null) },
        "retire" => FromPrimary::Retire { id: id()? },
        "warn" => FromPrimary::Warn { text: v.get("text").and_then(Value::as_str).unwrap_or_default().to_string() },
        "queryServer" => match crate::node::cluster::parse(v)? {
            crate::node::cluster::FromNode::QueryServer(q) => FromPrimary::Listen(q),
            _ => return Err("a queryServer that is not one".into()),
        },
        other => return Err(format!("unknown act {other:?}")),
    }))
}

/// Messages from hotswap to the app's primary.
pub mod to_primary {
    use super::*;

    fn msg(act: &str, id: WorkerId) -> Value {
        json!({"cmd": "NODE_HOTSWAP", "act": act, "id": id})
    }
    /// A worker started; `replaces`: the live worker of its slot it is to
    /// take over from (a reload's, or a `--max-memory` replacement).
    pub fn started(id: WorkerId, pid: i32, replaces: Option<WorkerId>) -> Value {
        let mut v = msg("started", id);
        v["pid"] = pid.into();
        v["replaces"] = replaces.into();
        v
    }
    pub fn online(id: WorkerId) -> Value {
        msg("online", id)
    }
    /// A server of the worker listens (Node's `address` object).
    pub fn listening(id: WorkerId, address: Value) -> Value {
        let mut v = msg("listening", id);
        v["address"] = address;
        v
    }
    /// What the worker sent with `process.send()`.
    pub fn message(id: WorkerId, data: Value) -> Value {
        let mut v = msg("message", id);
        v["data"] = data;
        v
    }
    /// The answer to the primary's listen (`ack`: its `seq`): sent with
    /// the socket as a handle (`errno` 0), or alone with a negative errno
    /// its server emits as `'error'`.
    pub fn listen_reply(ack: u64, errno: i32) -> Value {
        json!({"cmd": "NODE_HOTSWAP", "act": "listen", "ack": ack, "errno": -errno.abs()})
    }
    /// A message carrying a handle, as Node sends one: a listening socket
    /// for the primary (`net.Native`), or a connection the primary passed
    /// to a worker (`worker.send(msg, socket)`: the worker's
    /// `process.on('message')` gets `data` and the socket).
    pub fn handle_for_worker(kind: &Value, data: Value) -> Value {
        json!({"cmd": "NODE_HANDLE", "type": kind, "msg": data})
    }
    pub fn disconnect(id: WorkerId) -> Value {
        msg("disconnect", id)
    }
    /// `after_disconnect`: it was retired (reload, stop, `worker.kill()`),
    /// Node's `worker.exitedAfterDisconnect`.
    pub fn exit(id: WorkerId, code: Option<i32>, signal: Option<&str>, after_disconnect: bool) -> Value {
        let mut v = msg("exit", id);
        v["code"] = code.into();
        v["signal"] = signal.into();
        v["afterDisconnect"] = after_disconnect.into();
        v
    }
}

/// `HOTSWAP_NODE_WORKERS` for the primary: the workers already running,
/// `id:pid` joined by `,` (its first `fork()` calls take them, in order).
pub fn workers_env(workers: &[(WorkerId, i32)]) -> String {
    workers.iter().map(|(id, pid)| format!("{id}:{pid}")).collect::<Vec<_>>().join(",")
}

/// The script a node command runs: the first argument after the
/// program's options (skipping the value of those that take one).
pub fn script(command: &[String]) -> Option<String> {
    let words: Vec<&str> = match command {
        [sh, c, s, ..] if sh.ends_with("sh") && c == "-c" => {
            s.strip_prefix("exec ").unwrap_or(s).split_whitespace().collect()
        }
        _ => command.iter().map(String::as_str).collect(),
    };
    script_of(&words).map(str::to_string)
}

fn script_of<'a>(words: &[&'a str]) -> Option<&'a str> {
    const TAKES_VALUE: [&str; 7] =
        ["-r", "--require", "--import", "--loader", "--experimental-loader", "-C", "--conditions"];
    let mut it = words.iter().skip(1);
    while let Some(w) = it.next() {
        if TAKES_VALUE.contains(w) {
            it.next();
        } else if matches!(*w, "-e" | "--eval" | "-p" | "--print") {
            return None;
        } else if !w.starts_with('-') {
            return Some(w);
        }
    }
    None
}

/// Whether a script's text is a cluster app's: it imports `cluster` and
/// calls `fork`. An app without a primary branch (a plain
/// `http.createServer().listen()`) has neither, so it is never run as a
/// primary: it would serve in it.
pub fn is_cluster_source(text: &str) -> bool {
    let imports = ["'cluster'", "\"cluster\"", "'node:cluster'", "\"node:cluster\""].iter().any(|m| text.contains(m));
    imports && text.contains("fork")
}

/// Whether the command's script (resolved against `cwd`) is a cluster app.
pub fn is_cluster_app(command: &[String], cwd: &Path) -> bool {
    let Some(s) = script(command) else { return false };
    let mut path = PathBuf::from(s);
    if path.is_relative() {
        path = cwd.join(path);
    }
    let candidates = [path.clone(), path.with_extension("js")];
    candidates.iter().find_map(|p| std::fs::read(p).ok()).is_some_and(|bytes| {
        let head = &bytes[..bytes.len().min(1 << 20)];
        is_cluster_source(&String::from_utf8_lossy(head))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_script_is_found_past_nodes_options() {
        assert_eq!(script(&cmd(&["node", "app.js"])).as_deref(), Some("app.js"));
        assert_eq!(
            script(&cmd(&["node", "-r", "dotenv/config", "--max-old-space-size=512", "a.js", "x"])).as_deref(),
            Some("a.js")
        );
        assert_eq!(
            script(&cmd(&["/bin/sh", "-c", "exec node --import tsx server.mjs"])).as_deref(),
            Some("server.mjs")
        );
        assert_eq!(script(&cmd(&["node", "-e", "1"])), None);
    }

    #[test]
    fn cluster_apps_are_told_from_plain_ones() {
        let guide = "const cluster = require('node:cluster');\nif (cluster.isPrimary) { cluster.fork(); }";
        assert!(is_cluster_source(guide));
        assert!(is_cluster_source("import cluster from \"cluster\";\nfor (;;) cluster.fork()"));
        assert!(!is_cluster_source("require('http').createServer().listen(3000)"));
        // A worker-only use of cluster (reading cluster.worker.id).
        assert!(!is_cluster_source("const { worker } = require('cluster'); console.log(worker.id)"));
    }

    #[test]
    fn primary_messages_parse() {
        let send = json!({"cmd":"NODE_HOTSWAP","act":"send","id":3,"data":{"a":1}});
        assert_eq!(parse(&send).unwrap(), Some(FromPrimary::Send { to: 3, data: json!({"a":1}) }));
        assert_eq!(
            parse(&json!({"cmd":"NODE_HOTSWAP","act":"retire","id":2})).unwrap(),
            Some(FromPrimary::Retire { id: 2 })
        );
        assert_eq!(parse(&json!({"hello":1})).unwrap(), None);
        assert!(parse(&json!({"cmd":"NODE_HOTSWAP","act":"send"})).unwrap_err().contains("id"));
        assert!(parse(&json!({"cmd":"NODE_HOTSWAP","act":"nope","id":1})).is_err());
        assert_eq!(to_primary::exit(4, Some(0), None, true)["afterDisconnect"], true);
        let listen = json!({"cmd":"NODE_HOTSWAP","act":"queryServer","seq":7,"address":null,"port":3000,
            "addressType":4,"index":0,"data":null});
        match parse(&listen).unwrap() {
            Some(FromPrimary::Listen(q)) => assert_eq!((q.seq, q.target.to_string()), (7, ":3000".to_string())),
            other => panic!("{other:?}"),
        }
        assert_eq!(to_primary::listen_reply(7, 98)["errno"], -98);
        assert_eq!(workers_env(&[(1, 10), (2, 11)]), "1:10,2:11");
    }
}
