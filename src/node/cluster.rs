//! Node.js's internal cluster protocol, spoken by the primary so that an
//! unchanged cluster, Express or PM2 app runs as a hotswap worker.
//!
//! A Node worker started with `NODE_UNIQUE_ID` sets itself up as a cluster
//! worker: every `server.listen()` asks the primary for a listening socket
//! (`queryServer`), and hotswap answers with its own shared socket, sent as
//! a handle (`NODE_HANDLE` with the fd as `SCM_RIGHTS`): Node's "shared
//! handle" path, so the kernel balances connections and hotswap stays out of
//! the data path. The worker then says `listening`, which makes it ready.
//! To stop it, hotswap sends Node's own `disconnect`: the worker closes
//! every server it got this way and, once they have drained, its channel.
//!
//! This module parses and builds those messages; which socket answers which
//! listen is the supervisor's decision. The wire format is documented in
//! `docs/protocol.md` ("Node.js cluster workers").

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_json::{json, Value};

/// A listen the app asked for (`queryServer`).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The request's `seq`, which the reply acknowledges.
    pub seq: u64,
    pub target: Target,
    /// TLS servers send their session-ticket keys; the first worker's are
    /// echoed to every later one (as Node's primary does).
    pub data: Value,
    /// The key Node uses for this server (address, port, type, fd, index).
    pub key: String,
    /// Which of the worker's listens on the same address this is (Node's
    /// `index`: 0, 1, ... for two `listen(0)` calls).
    pub index: u64,
}

/// Where the app wants to listen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// `listen(port[, host])`: `host` is `None` when the app gave none (Node
    /// then binds every address, `::` with IPv4 mapped).
    Tcp { host: Option<IpAddr>, port: u16 },
    /// `listen(path)`.
    Unix(PathBuf),
    /// `listen({fd: N})`: one of the fds the worker inherited.
    Fd(i32),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { host: None, port } => write!(f, ":{port}"),
            Target::Tcp { host: Some(h), port } => write!(f, "{}", SocketAddr::new(*h, *port)),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
            Target::Fd(n) => write!(f, "fd {n}"),
        }
    }
}

/// A cluster message from a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum FromNode {
    /// The worker's cluster setup ran.
    Online,
    /// A `server.listen()` wants a socket.
    QueryServer(Query),
    /// A server is up, at the port it really got.
    Listening { key: Option<String>, port: Option<u16> },
    /// A server closed: the key of its listen (as the reply gave it).
    Close { key: Option<String> },
    /// Anything else (`act` names it).
    Other(String),
}

/// Parses a `{"cmd":"NODE_CLUSTER",...}` message; `Err` says what is wrong.
pub fn parse(v: &Value) -> Result<FromNode, String> {
    let act = v.get("act").and_then(Value::as_str).ok_or("a NODE_CLUSTER message without \"act\"")?;
    Ok(match act {
        "online" => FromNode::Online,
        "queryServer" => FromNode::QueryServer(parse_query(v)?),
        "listening" => FromNode::Listening {
            key: key_of(v),
            port: v.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()),
        },
        "close" => FromNode::Close { key: v.get("key").and_then(Value::as_str).map(str::to_string) },
        other => FromNode::Other(other.to_string()),
    })
}

fn key_of(v: &Value) -> Option<String> {
    let field = |k: &str| v.get(k).map(|x| if x.is_null() { String::new() } else { x.to_string() });
    Some(format!(
        "{}:{}:{}:{}:{}",
        field("address")?.trim_matches('"'),
        field("port").unwrap_or_default(),
        field("addressType").unwrap_or_default(),
        field("fd").unwrap_or_default(),
        field("index").unwrap_or_default()
    ))
}

fn parse_query(v: &Value) -> Result<Query, String> {
    let seq = v.get("seq").and_then(Value::as_u64).ok_or("queryServer without a numeric \"seq\"")?;
    let address = v.get("address").and_then(Value::as_str);
    let fd = v.get("fd").and_then(Value::as_i64).filter(|fd| *fd >= 0);
    let target = match (fd, v.get("addressType").and_then(Value::as_i64)) {
        (Some(fd), _) => Target::Fd(fd as i32),
        (None, Some(-1)) => Target::Unix(PathBuf::from(address.ok_or("a pipe queryServer without \"address\"")?)),
        (None, _) => {
            let port = v
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("queryServer without a valid \"port\"")?;
            let host = match address {
                None => None,
                Some(a) => Some(a.parse::<IpAddr>().map_err(|_| format!("queryServer for address {a:?}"))?),
            };
            Target::Tcp { host, port }
        }
    };
    Ok(Query {
        seq,
        target,
        data: v.get("data").cloned().unwrap_or(Value::Null),
        key: key_of(v).unwrap_or_default(),
        index: v.get("index").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// The answer to a `queryServer` that carries a socket: sent with the fd as
/// `SCM_RIGHTS`, one handle per message. `errno: 0` makes Node check that
/// the socket's port is the one the app asked for.
pub fn handle_reply(query: &Query, data: &Value, seq: u64) -> Value {
    json!({
        "cmd": "NODE_HANDLE",
        "type": "net.Native",
        "msg": {"cmd": "NODE_CLUSTER", "errno": 0, "key": query.key, "ack": query.seq, "data": data, "seq": seq}
    })
}

/// The answer to a `queryServer` that cannot be served: the app's server
/// emits `'error'` with this (negative, libuv-style) errno.
pub fn refusal(query: &Query, errno: i32, seq: u64) -> Value {
    json!({"cmd": "NODE_CLUSTER", "errno": -errno.abs(), "key": query.key, "ack": query.seq, "data": null, "seq": seq})
}

/// Node's own way to stop a worker: close every server it got from the
/// primary, then the channel.
pub fn disconnect(seq: u64) -> Value {
    json!({"cmd": "NODE_CLUSTER", "act": "disconnect", "seq": seq})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_messages_node_20_sends() {
        let online = json!({"cmd":"NODE_CLUSTER","act":"online","seq":0});
        assert_eq!(parse(&online).unwrap(), FromNode::Online);
        let q = json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":3000,"addressType":4,"backlog":511,"seq":1});
        let FromNode::QueryServer(query) = parse(&q).unwrap() else { panic!() };
        assert_eq!(query.seq, 1);
        assert_eq!(query.target, Target::Tcp { host: None, port: 3000 });
        assert_eq!(query.key, ":3000:4::0");
        let q6 = json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"::1","port":0,"addressType":6,"seq":4});
        let FromNode::QueryServer(query) = parse(&q6).unwrap() else { panic!() };
        assert_eq!(query.target, Target::Tcp { host: Some("::1".parse().unwrap()), port: 0 });
        let pipe = json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"/tmp/a.sock","port":null,"addressType":-1,"seq":2});
        let FromNode::QueryServer(query) = parse(&pipe).unwrap() else { panic!() };
        assert_eq!(query.target, Target::Unix("/tmp/a.sock".into()));
        let fd = json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":null,"addressType":4,"fd":3,"seq":2});
        let FromNode::QueryServer(query) = parse(&fd).unwrap() else { panic!() };
        assert_eq!(query.target, Target::Fd(3));
        let listening = json!({"cmd":"NODE_CLUSTER","act":"listening","address":null,"port":3000,"addressType":4,"index":0,"seq":2});
        assert!(matches!(parse(&listening).unwrap(), FromNode::Listening { port: Some(3000), .. }));
        assert_eq!(
            parse(&json!({"cmd":"NODE_CLUSTER","act":"close","key":"x"})).unwrap(),
            FromNode::Close { key: Some("x".into()) }
        );
        let second = json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":1,"data":null,"address":null,"port":0,"addressType":4,"seq":5});
        let FromNode::QueryServer(query) = parse(&second).unwrap() else { panic!() };
        assert_eq!((query.index, query.key.as_str()), (1, ":0:4::1"));
    }

    #[test]
    fn malformed_cluster_messages_are_refused_with_a_reason() {
        assert!(parse(&json!({"cmd":"NODE_CLUSTER"})).unwrap_err().contains("act"));
        let no_seq = json!({"cmd":"NODE_CLUSTER","act":"queryServer","port":3000,"addressType":4});
        assert!(parse(&no_seq).unwrap_err().contains("seq"));
        let bad_port = json!({"cmd":"NODE_CLUSTER","act":"queryServer","port":70000,"addressType":4,"seq":1});
        assert!(parse(&bad_port).unwrap_err().contains("port"));
        let bad_host =
            json!({"cmd":"NODE_CLUSTER","act":"queryServer","port":1,"address":"nowhere","addressType":4,"seq":1});
        assert!(parse(&bad_host).unwrap_err().contains("nowhere"));
    }

    #[test]
    fn replies_acknowledge_the_query() {
        let q = Query { seq: 7, target: Target::Fd(3), data: Value::Null, key: "k".into(), index: 0 };
        let h = handle_reply(&q, &json!({"ticketKeys":"ab"}), 2);
        assert_eq!(h["cmd"], "NODE_HANDLE");
        assert_eq!(h["msg"]["ack"], 7);
        assert_eq!(h["msg"]["errno"], 0);
        assert_eq!(h["msg"]["data"]["ticketKeys"], "ab");
        let r = refusal(&q, 98, 3);
        assert_eq!(r["errno"], -98);
        assert_eq!(r["ack"], 7);
        assert_eq!(disconnect(9)["act"], "disconnect");
    }
}
