//! The worker protocol, message by message, against real worker processes.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

#[test]
fn worker_gets_exactly_its_fds_and_environment() {
    let out = TempDir::new("probe");
    let sock = out.path("app.sock");
    // The primary's own notify socket must not reach the workers.
    let notify = out.path("notify.sock");
    let _sink = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    let p = Primary::bare(probe())
        .arg("-l")
        .arg("web=127.0.0.1:0")
        .arg("-l")
        .arg(format!("unix:{}", sock.display()))
        .probe_dir(&out)
        // The primary's own systemd and Node variables must not leak.
        .env("LISTEN_FDS", "7")
        .env("LISTEN_PIDFDID", "1234")
        .env("NOTIFY_SOCKET", notify.display().to_string())
        .env("WATCHDOG_USEC", "100")
        .env("NODE_UNIQUE_ID", "3")
        .env("PROBE_PASSTHROUGH", "kept")
        // An app's own LISTEN_ variable is not systemd's.
        .env("LISTEN_MODE", "app's own")
        .start();
    let ids = p.worker_ids();
    assert_eq!(ids, [1, 2]);
    let pids = p.worker_pids();
    for (id, pid) in ids.iter().zip(pids) {
        let r = probe_report(&out, *id);
        let env = &r["env"];
        assert_eq!(r["pid"], json!(pid));
        assert_eq!(r["ppid"], json!(p.pid()), "workers are the primary's own children");
        assert_eq!(env["LISTEN_PID"], json!(pid.to_string()), "LISTEN_PID is the worker's own pid");
        assert_eq!(env["LISTEN_FDS"], "2");
        assert_eq!(env["LISTEN_FDNAMES"], "web:unknown");
        assert_eq!(env["HOTSWAP_IPC_FD"], "5");
        assert_eq!(env["NODE_CHANNEL_FD"], "5");
        assert_eq!(env["NODE_CHANNEL_SERIALIZATION_MODE"], "json");
        assert_eq!(env["HOTSWAP_WORKER_ID"], json!(id.to_string()));
        assert_eq!(env["HOTSWAP_GENERATION"], "1");
        assert_eq!(env["HOTSWAP_CONTROL"], json!(p.control.display().to_string()));
        assert_eq!(env["PROBE_PASSTHROUGH"], "kept");
        assert_eq!(env["LISTEN_MODE"], "app's own");
        for leaked in ["LISTEN_PIDFDID", "WATCHDOG_USEC", "NODE_UNIQUE_ID"] {
            assert_eq!(env[leaked], Value::Null, "{leaked} leaked into the worker");
        }
        // Under `--ready auto` (the default) each worker has a NOTIFY_SOCKET
        // of its own, never the primary's.
        assert_ne!(env["NOTIFY_SOCKET"], json!(notify.display().to_string()), "NOTIFY_SOCKET leaked into the worker");
        let fds: BTreeMap<String, String> = serde_json::from_value(r["fds"].clone()).unwrap();
        let expected: BTreeMap<String, String> = [
            ("0", "chr"),
            ("1", "pipe"),
            ("2", "pipe"),
            ("3", "socket:inet:listening"),
            ("4", "socket:unix:listening"),
            ("5", "socket:unix:connected"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(fds, expected, "exactly the listeners and the IPC end, nothing else");
    }
}

#[test]
fn bare_ready_string_marks_a_worker_ready() {
    let out = TempDir::new("probe");
    // start() waits for both workers to be ready; the string is all they send.
    let p = Primary::builder(probe()).probe_dir(&out).env("PROBE_READY", "ready-string").start();
    let log = p.log_text();
    for (id, pid) in p.worker_ids().into_iter().zip(p.worker_pids()) {
        let label = format!("[w{id} g1 {pid}]");
        assert!(
            log.lines().any(|l| l.contains(&format!("{label} ready in")) && l.contains("(said so over IPC)")),
            "{label} ready by its IPC message: {log}"
        );
    }
    assert!(!log.contains("unhandled message"), "\"ready\" is understood, not passed on: {log}");
}

#[test]
fn bad_ipc_input_is_refused_and_logged_never_fatal() {
    let out = TempDir::new("probe");
    let send = json!([
        "{not json\n",
        "HEX:ff fe 0a",
        "LONG:2097152",
        "{\"type\":\"mystery\"}\n",
        "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\"}\n",
        "{\"type\":\"send\",\"data\":1}\n",
        "\n"
    ]);
    let mut p = Primary::builder(probe()).workers(1).probe_dir(&out).env("PROBE_SEND", send.to_string()).start();
    // The worker is ready: the channel survived all of the above.
    let (id, pid) = (p.worker_ids()[0], p.worker_pids()[0]);
    // A NODE_HANDLE line that came without its fd is answered NACK (Node
    // sends it again, at most 3 times), so Node never stalls waiting.
    wait_until(Duration::from_secs(5), "the NODE_HANDLE nack", || {
        probe_inbox(&out, id).contains(&json!({"cmd":"NODE_HANDLE_NACK"}))
    });
    let log = p.log_text();
    let refused = |why: &str| {
        log.lines().any(|l| l.contains("[w1 g1 ") && l.contains("IPC: refused a message") && l.contains(why))
    };
    assert!(refused("invalid JSON"), "{log}");
    assert!(refused("longer than 1048576 bytes"), "{log}");
    assert!(refused("not valid UTF-8"), "{log}");
    assert!(log.contains("unhandled message: {\"type\":\"mystery\"}"), "{log}");
    assert!(refused("needs a numeric \"to\""), "{log}");
    // Never fatal: the primary runs and answers, the same worker serves on,
    // its channel still open.
    assert!(p.running(), "the primary runs");
    let s = p.status();
    assert_eq!((p.worker_ids(), p.worker_pids()), (vec![id], vec![pid]), "{s}");
    assert_eq!(s["workers"][0]["restarts"], 0, "{s}");
    assert!(!probe_inbox(&out, id).contains(&json!({"eof": true})), "the worker's channel was closed");
}

#[test]
fn broadcast_and_send_reach_the_other_workers() {
    let out = TempDir::new("probe");
    let send = json!([
        "{\"type\":\"broadcast\",\"data\":{\"hello\":\"all\"}}\n",
        "{\"type\":\"send\",\"to\":2,\"data\":\"direct\"}\n",
        "{\"type\":\"send\",\"to\":99,\"data\":\"nobody\"}\n"
    ]);
    let _p = Primary::builder(probe()).probe_dir(&out).env("PROBE_SEND", send.to_string()).start();
    let err = json!({"type":"error","error":"no worker 99 to send to"});
    let delivered = || {
        let (a, b) = (probe_inbox(&out, 1), probe_inbox(&out, 2));
        a.contains(&json!({"type":"broadcast","from":2,"data":{"hello":"all"}}))
            && a.contains(&err)
            && b.contains(&json!({"type":"broadcast","from":1,"data":{"hello":"all"}}))
            && b.contains(&json!({"type":"send","from":1,"data":"direct"}))
            && b.contains(&json!({"type":"send","from":2,"data":"direct"}))
            && b.contains(&err)
    };
    let delivered_in_time = poll_until(Duration::from_secs(5), delivered);
    assert!(delivered_in_time, "inboxes: {:?} / {:?}", probe_inbox(&out, 1), probe_inbox(&out, 2));
    // A worker never gets its own broadcast.
    assert!(!probe_inbox(&out, 1).iter().any(|m| m["type"] == "broadcast" && m["from"] == 1));
}

#[test]
fn shutdown_is_sent_then_the_channel_is_closed() {
    let out = TempDir::new("probe");
    let p = Primary::builder(probe()).workers(1).probe_dir(&out).start();
    let old = p.worker_ids()[0];
    p.reload();
    let msgs = probe_inbox(&out, old);
    assert_eq!(msgs.last(), Some(&json!({"type":"shutdown"})), "{msgs:?}");
    // A worker that ignores shutdown sees the disconnect (EOF) right after.
    let out2 = TempDir::new("probe");
    let p2 = Primary::builder(probe())
        .workers(1)
        .arg("--shutdown-timeout")
        .arg("1s")
        .probe_dir(&out2)
        .env("PROBE_IGNORE_SHUTDOWN", "1")
        .start();
    let old = p2.worker_ids()[0];
    let pid = p2.worker_pids()[0];
    let events = EventStream::start(&p2);
    p2.reload();
    assert_eq!(probe_inbox(&out2, old), vec![json!({"type":"shutdown"}), json!({"eof":true})]);
    let seen = events.until("exit", Duration::from_secs(20));
    let exit = seen.last().filter(|e| e["event"] == "exit").unwrap_or_else(|| panic!("no exit event: {seen:?}"));
    assert_eq!((&exit["worker"], &exit["signal"]), (&json!(old), &json!("SIGKILL")), "{seen:?}");
    assert_eq!(exit["killed"], "shutdown-timeout", "killed at the shutdown timeout: {seen:?}");
    assert!(process_gone(pid));
    // The reload waited the shutdown timeout: measured on the primary's
    // clock (its log), from the shutdown to the kill, so that a loaded
    // machine's slow start of the new worker does not count. The upper
    // bound is generous (a loaded machine delays the timer): it tells
    // the 1 s timeout from the 30 s default.
    let log = p2.log_text();
    let label = format!("[w{old} g1 {pid}]");
    let sent = log_times(&log, &format!("{label} stopping (shutdown sent)"));
    let killed = log_times(&log, &format!("{label} did not exit within 1s of shutdown"));
    assert!(sent.len() == 1 && killed.len() == 1, "{log}");
    let waited = killed[0] - sent[0];
    assert!((0.99..10.0).contains(&waited), "killed {waited:.3} s after the shutdown, for a 1 s timeout:\n{log}");
}

#[test]
fn node_process_send_works_both_ways() {
    // The Node example worker logs each message it receives; its output
    // reaches the primary's log behind the worker's prefix.
    let p = Primary::builder(node_worker()).start();
    let t = Target::Tcp(p.addr());
    let ids = p.worker_ids();
    let a = get(&t, "/broadcast?data=ping").unwrap();
    let from = a.worker();
    let to = *ids.iter().find(|i| **i != from).unwrap();
    let a = get(&t, &format!("/send?to={to}&data=direct")).unwrap();
    let sender = a.worker();
    let expect_broadcast = format!(r#"received {{"type":"broadcast","from":{from},"data":"ping"}}"#);
    let expect_send = format!(r#"received {{"type":"send","from":{sender},"data":"direct"}}"#);
    let prefix = format!("[w{to} g1 ");
    wait_until(Duration::from_secs(5), format_args!("worker {to} to log both messages"), || {
        let log = p.log_text();
        let of_to: Vec<&str> = log.lines().filter(|l| l.starts_with(&prefix)).collect();
        of_to.iter().any(|l| l.contains(&expect_broadcast)) && of_to.iter().any(|l| l.contains(&expect_send))
    });
}
