//! A Socket.IO 4 app, unchanged (`tests/apps/node/socketio-app.js`: an http
//! server, `new Server(httpServer)`, `listen(PORT)`, its sessions in memory),
//! driven by real Socket.IO clients over HTTP long-polling
//! (`tests/apps/node/socketio-client.js`), each client from its own loopback
//! source address (127.0.0.2, .3, ...) and every request of it on a new TCP
//! connection. The long-polling handshake is several HTTP requests that must
//! all reach the worker holding the session: with one shared socket and 2
//! workers they do not ("Session ID unknown"); with `--balance sticky` the
//! kernel sends each client address to one slot, and they do, also across
//! reloads. Both server and client come from the npm registry (`.ci/run`
//! installs them).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

fn node_dir() -> std::path::PathBuf {
    root().join("tests/apps/node")
}

/// Socket.IO comes from the npm registry; without it the tests say so and
/// skip (under CI they fail instead).
fn installed() -> bool {
    let there = ["socket.io", "socket.io-client"].iter().all(|m| node_dir().join("node_modules").join(m).exists());
    if !there {
        assert!(std::env::var_os("CI").is_none(), "socket.io is not installed in tests/apps/node (run .ci/run)");
        eprintln!("skipped: socket.io or socket.io-client is not installed in tests/apps/node (npm install there)");
    }
    there
}

fn app() -> Vec<String> {
    vec!["node".into(), node_dir().join("socketio-app.js").display().to_string()]
}

/// `-w workers` of the Socket.IO app, with `--balance MODE` unless `None`
/// (the default, one shared socket), and `extra` arguments.
fn start(balance: Option<&str>, workers: u32, extra: &[&str]) -> Primary {
    let mut b = Primary::builder(app()).workers(workers);
    if let Some(mode) = balance {
        b = b.arg("--balance").arg(mode);
    }
    for a in extra {
        b = b.arg(*a);
    }
    b.start()
}

/// The client script on the primary's address, from `first` on.
fn client_cmd(p: &Primary, clients: u32, first: u32, extra: &[&str]) -> Command {
    let mut c = Command::new("node");
    c.arg(node_dir().join("socketio-client.js"))
        .args(["--url", &format!("http://{}", p.addr())])
        .args(["--clients", &clients.to_string(), "--messages", "5", "--first-address", &first.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for a client run (at most 60 s: a hang fails the test) and returns
/// its summary (the last line of its output).
fn summary(mut child: Child) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Socket.IO client hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Socket.IO client failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no summary from the client"));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("summary {last:?}: {e}"))
}

/// One run of `clients` Socket.IO clients from 127.0.0.`first` on.
fn run_clients(p: &Primary, clients: u32, first: u32, extra: &[&str]) -> Value {
    summary(client_cmd(p, clients, first, extra).spawn().unwrap())
}

/// The summary without the per-client details, and the first failures, for
/// assertion messages.
fn brief(s: &Value) -> String {
    let mut head = s.clone();
    head.as_object_mut().unwrap().remove("results");
    let failures: Vec<_> = s["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ok"] != true)
        .take(3)
        .map(|r| format!("{} {}", r["address"], r["errors"]))
        .collect();
    format!("{head} failures: {failures:?}")
}

/// Every client of the run completed its handshake at once and had every
/// message echoed, with no error at all, and the server saw each one's own
/// source address.
#[track_caller]
fn assert_all_clean(s: &Value, what: &str) {
    let n = s["clients"].as_u64().unwrap();
    assert_eq!(s["ok"], n, "{what}: every client succeeds: {}", brief(s));
    assert_eq!(s["handshakes"], n, "{what}: every handshake completes: {}", brief(s));
    assert_eq!(s["echoed"], n * 5, "{what}: every message is echoed: {}", brief(s));
    assert_eq!(s["lost"], 0, "{what}: {}", brief(s));
    assert_eq!(s["reconnects"], 0, "{what}: {}", brief(s));
    assert_eq!(s["sessionUnknown"], 0, "{what}: {}", brief(s));
    for r in s["results"].as_array().unwrap() {
        assert_eq!(r["errors"], serde_json::json!([]), "{what}: client {} had errors", r["address"]);
    }
    assert_eq!(s["addressesTookEffect"], true, "{what}: each client's source address reached the app: {}", brief(s));
}

/// Client address -> the one pid that served it in a run.
fn pid_by_address(s: &Value) -> BTreeMap<String, i64> {
    s["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let pids = r["pids"].as_array().unwrap();
            assert_eq!(pids.len(), 1, "client {} was served by one worker: {pids:?}", r["address"]);
            (r["address"].as_str().unwrap().to_string(), pids[0].as_i64().unwrap())
        })
        .collect()
}

/// Worker pid -> slot, from status.
fn slot_by_pid(p: &Primary) -> HashMap<i64, u64> {
    p.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["pid"].as_i64().unwrap(), w["slot"].as_u64().unwrap()))
        .collect()
}

/// Client address -> the slot of the worker that served it.
fn slot_by_address(p: &Primary, s: &Value) -> BTreeMap<String, u64> {
    let slots = slot_by_pid(p);
    pid_by_address(s)
        .into_iter()
        .map(|(a, pid)| {
            let slot = *slots.get(&pid).unwrap_or_else(|| panic!("pid {pid} (client {a}) is a worker now: {slots:?}"));
            (a, slot)
        })
        .collect()
}

/// `--balance sticky -w 2`: 20 clients from 127.0.0.2 to .21, twice. Every
/// handshake completes and every message is echoed, each client by one
/// worker, the same one in both runs, and the clients are spread over both
/// workers (the pass does not come from one worker taking everything).
#[test]
fn a_socketio_app_completes_every_handshake_under_sticky() {
    if !installed() {
        return;
    }
    let p = start(Some("sticky"), 2, &[]);
    let first = run_clients(&p, 20, 2, &[]);
    assert_all_clean(&first, "first run");
    let second = run_clients(&p, 20, 2, &[]);
    assert_all_clean(&second, "second run");
    let (a, b) = (pid_by_address(&first), pid_by_address(&second));
    assert_eq!(a, b, "each client address reached the same worker in both runs");
    let workers: std::collections::HashSet<_> = a.values().collect();
    assert_eq!(workers.len(), 2, "the 20 client addresses are spread over both workers: {a:?}");
}

/// `--balance sticky -w 2` through 3 reloads, with HTTP keep-alive and
/// new-connection load throughout (no request may fail), and three kinds
/// of Socket.IO clients:
///
/// - **after** each reload completes: 20 new clients (127.0.0.2 ...), no
///   reconnection allowed: every handshake completes, every message is
///   echoed, and each address reaches the same slot as after the previous
///   reload (a new worker in it, since a reload replaces them all);
/// - **during** each reload: 10 clients (127.0.0.40 ...) that start as the
///   reload does. While a slot's old and new workers both accept from its
///   socket, a handshake can land its requests on both and get "Session ID
///   unknown", so these may reconnect; each must end with all its messages
///   echoed;
/// - **through** all 3 reloads: 10 clients (127.0.0.60 ...) connected
///   before the first and sending a message every 100 ms until after the
///   last. The new worker has none of the old one's memory: a long-polling
///   session open across the swap is unknown to it, so its next request
///   gets "Session ID unknown" and Socket.IO reconnects with a new
///   handshake, on the same slot's new worker. A message sent in that gap
///   may be lost (counted, not asserted: that is the app's to tolerate, as
///   under any reload). Asserted: each of these clients reconnected after
///   each reload (4 handshakes at least) and then had its messages echoed
///   again, the last one after the third reload included.
///
/// `--shutdown-timeout 5s`: an old worker's `server.close()` waits for its
/// open requests, and a held client's long-polling GET stays open on the old
/// worker after the client has moved on (Socket.IO's client does not abort
/// it; the server answers it at its next ping, up to `pingInterval`, 25 s).
/// Socket.IO closes its sessions only once the server has closed. So each
/// old worker would drain for up to 25 s; here it is killed after 5 s, with
/// only that abandoned request open (the HTTP load, which must not fail, has
/// long left it: a drained keep-alive connection answers once more with
/// `Connection: close`).
#[test]
fn a_socketio_app_under_sticky_keeps_its_handshakes_through_reloads() {
    if !installed() {
        return;
    }
    let _alone = exclusive();
    let p = start(Some("sticky"), 2, &["--shutdown-timeout", "5s"]);
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(100);

    let before = run_clients(&p, 20, 2, &[]);
    assert_all_clean(&before, "before the reloads");
    let mut slots = slot_by_address(&p, &before);

    let mut held =
        client_cmd(&p, 10, 60, &["--hold", "--reconnect", "--timeout", "30000"]).stdin(Stdio::piped()).spawn().unwrap();
    let held_stdin: ChildStdin = held.stdin.take().unwrap();
    let mut held_out = BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    held_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), r#"{"holding":10}"#, "the held clients are connected and echoed");

    for i in 1..=3 {
        let pids_before = p.worker_pids();
        let during = client_cmd(&p, 10, 40, &["--reconnect", "--timeout", "30000"]).spawn().unwrap();
        let out = p.reload();
        assert!(out.contains(&format!("generation {} serves", i + 1)), "reload {i}: {out}");
        let during = summary(during);
        assert_eq!(
            during["ok"],
            10,
            "reload {i}: every client that connected during it got its messages echoed: {}",
            brief(&during)
        );
        eprintln!(
            "clients connecting during reload {i}: {} reconnects, {} \"Session ID unknown\"",
            during["reconnects"], during["sessionUnknown"]
        );
        assert!(p.worker_pids().iter().all(|pid| !pids_before.contains(pid)), "reload {i} replaced both workers");

        let after = run_clients(&p, 20, 2, &[]);
        assert_all_clean(&after, &format!("after reload {i}"));
        let now = slot_by_address(&p, &after);
        assert_eq!(now, slots, "after reload {i}, each client address reaches the same slot");
        slots = now;
        load.wait_for_requests(50);
    }

    drop(held_stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut held_out, &mut rest).unwrap();
    let status = held.wait().unwrap();
    assert!(status.success(), "the held clients' run: {status}: {rest}");
    let s: Value = serde_json::from_str(rest.trim().lines().last().unwrap()).unwrap();
    for r in s["results"].as_array().unwrap() {
        // Each reload replaces the worker holding the session: one new
        // handshake per reload at least.
        assert!(r["connects"].as_u64().unwrap() >= 4, "held client {} reconnected after each swap: {r}", r["address"]);
        assert_eq!(r["finalEcho"], true, "held client {} is served after the reloads: {r}", r["address"]);
        assert_eq!(r["ok"], true, "held client {}: {r}", r["address"]);
    }
    eprintln!(
        "held clients through 3 reloads: {} reconnects, {} messages echoed, {} lost in the swaps",
        s["reconnects"], s["echoed"], s["lost"]
    );
    assert_no_failures(&load.finish(), "HTTP load through 3 reloads of the Socket.IO app");
}

/// The same app and clients with the default balance (one shared socket)
/// and 2 workers: the kernel gives each new connection to whichever worker
/// accepts first, so a handshake's requests reach both workers and some
/// clients get "Session ID unknown". With 1 worker the same clients all
/// succeed: the failures come from the spread, not the client.
#[test]
fn a_socketio_app_fails_its_handshake_on_a_shared_socket() {
    if !installed() {
        return;
    }
    let one = start(None, 1, &[]);
    assert_all_clean(&run_clients(&one, 20, 2, &[]), "1 worker, shared socket");
    drop(one);

    let p = start(None, 2, &[]);
    let s = run_clients(&p, 20, 2, &[]);
    assert!(s["failed"].as_u64().unwrap() > 0, "some clients fail with 2 workers on one shared socket: {}", brief(&s));
    assert!(s["sessionUnknown"].as_u64().unwrap() > 0, "the failures are \"Session ID unknown\": {}", brief(&s));
}
