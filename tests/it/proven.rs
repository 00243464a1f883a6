//! A new worker replaces an old one only once it has proven that it
//! serves: a socket in an event loop's epoll set is not enough (the app
//! may warm up for seconds after taking fd 3), and an app that says
//! `'ready'` itself (PM2's `wait_ready`) is ready then, not when its
//! server listens.

use std::time::{Duration, Instant};

use crate::common::*;

fn warmup_server() -> String {
    root().join("tests/apps/python/warmup_server.py").display().to_string()
}

/// A stock asyncio server that puts fd 3 in its epoll set, then warms up
/// 2 s: under the default `--ready auto`, every reload waits for each new
/// worker's warm-up, under load, with no failed request; each worker was
/// proven by a connection it took.
#[test]
fn a_stock_asyncio_server_is_ready_only_once_it_takes_connections() {
    let p =
        Primary::builder(vec!["python3".into(), warmup_server()]).workers(2).arg("--ready-timeout").arg("30s").start();
    let events = EventStream::start(&p);
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(50);
    for _ in 0..2 {
        let t = Instant::now();
        let out = p.reload();
        // Two workers, one at a time, each warming up 2 s.
        assert!(t.elapsed() >= Duration::from_secs(4), "reloaded in {:?}: {out}", t.elapsed());
        load.wait_for_requests(50);
    }
    let records = load.finish();
    assert_no_failures(&records, "load across reloads of a server that warms up");
    let status = p.status();
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["ready_via"], "accepting", "{status}");
        assert!(["probe", "connection"].contains(&w["ready_proof"].as_str().unwrap_or("")), "{status}");
        assert!(w["ready_ms"].as_u64().unwrap() >= 2000, "{status}");
    }
    let ready: Vec<_> = events.until("never", Duration::from_millis(200));
    let ready: Vec<_> = ready.iter().filter(|e| e["event"] == "listening").collect();
    assert_eq!(ready.len(), 4, "{ready:?}");
    for e in ready {
        assert_eq!(e["via"], "accepting", "{e}");
        assert!(e["ready_ms"].as_u64().unwrap() >= 2000, "{e}");
    }
    let log = p.log_text();
    assert!(!log.contains("Traceback") && !log.contains("Unhandled exception"), "probes made the app complain:\n{log}");
}

/// A release of it that exits 1 at the end of its warm-up fails the reload
/// with a non-zero exit; every old worker still serves, and no request
/// fails.
#[test]
fn a_release_that_dies_after_its_warm_up_fails_the_reload() {
    let dir = TempDir::new("warmup");
    let start = dir.path("start.sh");
    script(&start, &format!("exec python3 {}", warmup_server()));
    let p = Primary::builder(vec![start.display().to_string()]).workers(2).start();
    let old = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(50);
    script(&start, &format!("FAIL_AFTER_WARMUP=1 exec python3 {}", warmup_server()));
    let out = p.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the reload must fail: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("exited with code 1 before it was ready"), "{err}");
    assert_eq!(p.worker_pids(), old, "every old worker still serves");
    load.wait_for_requests(50);
    let records = load.finish();
    assert_no_failures(&records, "load across a reload to a release that dies after its warm-up");
    assert_eq!(records.last().unwrap().result, Ok(1), "the old generation answers");
}

fn node_app(name: &str) -> Vec<String> {
    vec!["node".into(), root().join("tests/apps/node").join(name).display().to_string()]
}

/// Waits until every worker answers 200 (a PM2 app answers 503 until it
/// said 'ready'), then a moment more for the 'ready' to reach the primary.
fn until_all_answer(p: &Primary) {
    let target = Target::Tcp(p.addr());
    wait_until(Duration::from_secs(20), "every worker answering 200", || {
        (0..10).all(|_| get(&target, "/").is_ok_and(|a| a.status == 200))
    });
    std::thread::sleep(Duration::from_millis(300));
}

/// PM2's `wait_ready`: an app that listens at once but answers 503 until it
/// says `'ready'` 1.5 s later. Once its workers have said it, every later
/// worker waits for it: 3 reloads under keep-alive and new-connection load
/// see no answer but 200.
#[test]
fn a_pm2_wait_ready_app_gets_no_traffic_it_answers_503_to() {
    let _alone = exclusive();
    let p = Primary::builder(node_app("pm2-wait-ready.js")).workers(2).start();
    until_all_answer(&p);
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(100);
    for _ in 0..3 {
        let t = Instant::now();
        p.reload();
        assert!(t.elapsed() >= Duration::from_millis(2 * 1500), "reloaded in {:?}", t.elapsed());
        load.wait_for_requests(100);
    }
    let records = load.finish();
    assert_no_failures(&records, "load across reloads of a PM2 wait_ready app (a 503 is a failure)");
    assert_eq!(records.last().unwrap().result, Ok(4));
    let status = p.status();
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["ready_via"], "ipc", "ready by its own 'ready': {status}");
        assert!(w["ready_ms"].as_u64().unwrap() >= 1500, "{status}");
    }
}

/// `--ready ipc` means the worker's own message from the first worker on:
/// Node's cluster `listening` never counts.
#[test]
fn ready_ipc_waits_for_a_node_workers_own_message_from_the_start() {
    let mut p = Primary::builder(node_app("pm2-wait-ready.js"))
        .workers(1)
        .arg("--ready")
        .arg("ipc")
        .env("CONNECT_MS", "1000")
        .no_wait()
        .start();
    wait_until(Duration::from_secs(10), "the control socket", || p.try_status().is_some());
    p.wait_ready(1, Duration::from_secs(20));
    let status = p.status();
    let w = &status["workers"][0];
    assert_eq!(w["ready_via"], "ipc", "{status}");
    assert!(w["ready_ms"].as_u64().unwrap() >= 1000, "{status}");
    assert_eq!(get(&Target::Tcp(p.addr()), "/").unwrap().status, 200, "ready means it answers");
}

/// A Node worker that said `{"type":"listening"}` in its first version and
/// whose next version never says it (it hangs before its announcement) is
/// not taken ready by Node's cluster `listening`: the reload fails, the old
/// workers serve on, no request fails.
#[test]
fn a_release_that_never_announces_fails_the_reload() {
    let dir = TempDir::new("announcer");
    let file = dir.path("announce");
    std::fs::write(&file, "yes").unwrap();
    let p = Primary::builder(node_app("announcer.js"))
        .workers(2)
        .arg("--ready-timeout")
        .arg("4s")
        .env("ANNOUNCE_FILE", file.display().to_string())
        .start();
    assert_eq!(Primary::ready_workers(&p.status())[0]["ready_via"], "ipc");
    let old = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(100);
    std::fs::write(&file, "no").unwrap();
    let out = p.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the reload must fail: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("was not ready within 4s") && err.contains("has not said 'ready'"), "{err}");
    // The new worker killed at the timeout may not be reaped yet when the
    // reload's answer comes: the old ones, and only they, remain.
    wait_until(Duration::from_secs(10), "only the untouched old workers", || p.worker_pids() == old);
    load.wait_for_requests(100);
    let records = load.finish();
    assert_no_failures(&records, "load across a reload to a release that never announces");
    assert_eq!(records.last().unwrap().result, Ok(1));
}

/// Under `--balance sticky` each worker has its own slot's socket, and one
/// client address always reaches the same slot: the probes come from a
/// loopback address the balance sends to the new worker's slot, so every
/// new worker is proven by a probe (without that, a probe from 127.0.0.1
/// would reach one slot only, and the other slot's worker would never be
/// ready without traffic).
#[test]
fn under_sticky_balance_the_probe_reaches_the_new_workers_slot() {
    let p = Primary::builder(vec!["python3".into(), warmup_server()])
        .workers(2)
        .arg("--balance")
        .arg("sticky")
        .env("WARMUP", "1")
        .start();
    let t = Instant::now();
    p.reload();
    assert!(t.elapsed() >= Duration::from_secs(2), "reloaded in {:?}", t.elapsed());
    let status = p.status();
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["ready_proof"], "probe", "no traffic: a probe proved it: {status}");
        assert!(w["ready_ms"].as_u64().unwrap() >= 1000, "{status}");
    }
    // A crashed worker's slot is not live (no client reaches it) until its
    // replacement is ready: the probe reaches it all the same.
    let victim = p.worker_pids()[0];
    unsafe { libc::kill(victim, libc::SIGKILL) };
    // One status for both checks: with two, the victim could still count as
    // ready in the first (not reaped yet) and be gone from the second while
    // its replacement was still starting (seen in a clean-clone CI run).
    wait_until(Duration::from_secs(30), "the crashed worker's replacement", || {
        let ready = Primary::ready_workers(&p.status());
        ready.len() == 2 && ready.iter().all(|w| w["pid"] != victim)
    });
    let status = p.status();
    assert!(status["workers"].as_array().unwrap().iter().all(|w| w["ready_proof"] == "probe"), "{status}");
}
