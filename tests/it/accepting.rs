//! `--ready accepting`: servers that know nothing of hotswap (no IPC, no
//! sd_notify) are ready once one of their processes accepts on the
//! listening socket, whichever way it waits for connections; each reloads
//! under load with zero failed requests.

use std::time::{Duration, Instant};

use crate::common::*;

/// `tests/apps/plain/server.py MODE`.
pub fn plain(mode: &str) -> Vec<String> {
    vec!["python3".into(), root().join("tests/apps/plain/server.py").display().to_string(), mode.into()]
}

/// `reloads` reloads under keep-alive and new-connection load: zero failed
/// requests, the newest generation answers, and every worker was ready by
/// `via`.
pub fn reloads_cleanly(p: &Primary, reloads: u32, via: &str) {
    let first = p.generation();
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(100);
    let mut took = Vec::new();
    for _ in 0..reloads {
        let t = Instant::now();
        p.reload();
        took.push(t.elapsed().as_millis());
        load.wait_for_requests(100);
    }
    let records = load.finish();
    assert_no_failures(&records, "load across reloads");
    // For the record (--nocapture): what a reload costs against a start-up.
    let started =
        p.log_text().lines().find_map(|l| Some(l.split(" ready in ").nth(1)?.split(" ms").next()?.to_string()));
    eprintln!(
        "{}: {} requests, none failed; reloads took {took:?} ms; the first worker was ready in {} ms",
        std::thread::current().name().unwrap_or("?"),
        records.len(),
        started.as_deref().unwrap_or("?")
    );
    assert_eq!(records.last().unwrap().result, Ok(first + u64::from(reloads)), "the newest generation answers");
    let status = p.status();
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["ready_via"], via, "{status}");
    }
}

fn accepting(command: Vec<String>) -> Primary {
    Primary::builder(command).arg("--ready").arg("accepting").arg("--ready-timeout").arg("30s").start()
}

#[test]
fn accepting_sees_a_poll_loop() {
    // socketserver / http.server: serve_forever waits in poll().
    let p = accepting(plain("select"));
    let s = p.status();
    assert!(Primary::ready_workers(&s).iter().all(|w| w["ready_via"] == "accepting"), "{s}");
    reloads_cleanly(&p, 3, "accepting");
}

#[test]
fn accepting_sees_an_asyncio_server() {
    // asyncio: the socket is in the event loop's epoll set.
    reloads_cleanly(&accepting(plain("asyncio")), 3, "accepting");
}

#[test]
fn accepting_sees_a_thread_blocked_in_accept() {
    reloads_cleanly(&accepting(plain("threads")), 3, "accepting");
}

#[test]
fn accepting_sees_a_child_of_the_worker() {
    // The worker forks; its child, in the same process group, accepts.
    reloads_cleanly(&accepting(plain("child")), 3, "accepting");
}

#[test]
fn accepting_sees_a_node_server_on_fd_3_that_says_nothing() {
    let app = root().join("tests/apps/plain/fd3.js").display().to_string();
    reloads_cleanly(&accepting(vec!["node".into(), app]), 3, "accepting");
}

#[test]
fn accepting_waits_for_a_slow_server_and_sees_it_at_once() {
    let _x = exclusive();
    let dir = TempDir::new("accepting");
    let stamp = dir.path("stamp");
    let mut p = Primary::builder(plain("asyncio"))
        .workers(1)
        .arg("--ready")
        .arg("accepting")
        .env("ACCEPT_AFTER", "2")
        .env("ACCEPT_STAMP", stamp.display().to_string())
        .no_wait()
        .start();
    wait_until(Duration::from_secs(10), "the control socket", || p.try_status().is_some());
    let events = EventStream::start(&p);
    let ready = events.until("listening", Duration::from_secs(10));
    let ready = ready.last().filter(|e| e["event"] == "listening").expect("a listening event");
    assert_eq!(ready["via"], "accepting");
    let accepted: f64 = std::fs::read_to_string(&stamp).unwrap().parse().unwrap();
    let after = ready["time"].as_f64().unwrap() - accepted;
    assert!(after >= 0.0, "ready {:.3} s before it accepted", -after);
    // Its socket in asyncio's epoll set is not enough: it is ready once it
    // took the primary's probe, one look and one probe after it registered
    // (some 70 ms; seconds on a machine with a load average of 40).
    assert!(after < 3.0, "ready {:.3} s after it accepted", after);
    p.wait_ready(1, Duration::from_secs(5));
}

#[test]
fn a_worker_that_never_accepts_fails_the_reload_saying_so() {
    let dir = TempDir::new("accepting");
    let start = dir.path("start.sh");
    let server = root().join("tests/apps/plain/server.py").display().to_string();
    script(&start, &format!("exec python3 {server} threads"));
    let p = Primary::builder(vec![start.display().to_string()])
        .arg("--ready")
        .arg("accepting")
        .arg("--ready-timeout")
        .arg("8s")
        .start();
    let old = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(100);
    script(&start, &format!("exec python3 {server} never"));
    let events = EventStream::start(&p);
    let out = p.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Its new worker was killed at its ready deadline.
    let seen = events.until("exit", Duration::from_secs(20));
    assert!(seen.last().is_some_and(|e| e["event"] == "exit" && e["killed"] == "ready-timeout"), "{seen:?}");
    let addr = p.addr();
    assert!(
        err.contains("was not ready within 8s") && err.contains(&format!("it never accepted on {addr} (fd 3)")),
        "{err}"
    );
    assert_eq!(p.worker_pids(), old, "the old workers were not touched");
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a reload that never accepted");
}

/// `--ready auto` (given here; it is also the default) and the milliseconds
/// the log says the first worker took to get ready.
fn auto(command: Vec<String>, env: &[(&str, &str)]) -> (Primary, u64) {
    let mut b = Primary::builder(command).arg("--ready").arg("auto").arg("--ready-timeout").arg("30s");
    for (k, v) in env {
        b = b.env(k, *v);
    }
    let p = b.start();
    let log = p.log_text();
    let ms = log
        .lines()
        .find_map(|l| l.split(" ready in ").nth(1)?.split(" ms").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `ready in` line; log:\n{log}"));
    (p, ms)
}

/// One more language: a small Perl server (core modules only) that takes
/// fd 3 from `LISTEN_FDS`, forks a process per connection and drains on
/// SIGTERM, under the default readiness.
#[test]
fn an_unchanged_perl_server_reloads_without_a_failed_request() {
    let server = root().join("contrib/apps/perl/server.pl").display().to_string();
    let p = Primary::builder(vec!["perl".into(), server]).start();
    reloads_cleanly(&p, 3, "accepting");
    assert!(p.log_text().contains("server.pl: drained"), "{}", p.log_text());
}

#[test]
fn auto_takes_a_silent_server_by_its_accepts() {
    let (p, _) = auto(plain("threads"), &[]);
    reloads_cleanly(&p, 3, "accepting");
}

/// An app that accepts at once but announces readiness 1.5 s later: its
/// first workers are taken by their accepts; once one announced, every
/// later worker waits for its announcement.
fn late_announcer(how: &str, via: &str) {
    let (p, _) = auto(plain("asyncio"), &[("ANNOUNCE", how), ("ANNOUNCE_AFTER", "1.5")]);
    let log_has = |s: &str| p.log_text().contains(s);
    wait_until(Duration::from_secs(10), "the first announcement", || {
        log_has("announce their readiness") || log_has("ready in")
    });
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    p.reload();
    assert!(t.elapsed() >= Duration::from_millis(2 * 1500), "reloaded in {:?}", t.elapsed());
    reloads_cleanly(&p, 2, via);
}

#[test]
fn auto_waits_for_a_late_ipc_announcement() {
    late_announcer("ipc", "ipc");
}

#[test]
fn auto_waits_for_a_late_ready_1() {
    late_announcer("notify", "notify");
}

/// A worker that says `READY=1` before it accepts, as gunicorn's master
/// does before its forked workers accept: under `auto` it is ready once it
/// accepts, not at `READY=1`.
#[test]
fn auto_takes_ready_1_only_once_the_worker_accepts() {
    let _x = exclusive();
    let dir = TempDir::new("accepting");
    let stamp = dir.path("stamp");
    let mut p = Primary::builder(plain("asyncio"))
        .workers(1)
        .env("ANNOUNCE", "notify")
        .env("ANNOUNCE_FIRST", "1")
        .env("ACCEPT_AFTER", "2")
        .env("ACCEPT_STAMP", stamp.display().to_string())
        .no_wait()
        .start();
    wait_until(Duration::from_secs(10), "the control socket", || p.try_status().is_some());
    let events = EventStream::start(&p);
    let ready = events.until("listening", Duration::from_secs(10));
    let ready = ready.last().filter(|e| e["event"] == "listening").expect("a listening event");
    assert_eq!(ready["via"], "notify");
    let accepted: f64 = std::fs::read_to_string(&stamp).expect("it accepts before it is ready").parse().unwrap();
    let after = ready["time"].as_f64().unwrap() - accepted;
    assert!(after >= 0.0, "ready {:.3} s before it accepted", -after);
    assert!(after < 3.0, "ready {:.3} s after it accepted (one look and one probe)", after);
    p.wait_ready(1, Duration::from_secs(5));
    // Its next workers too (the command is known to say READY=1), under load.
    reloads_cleanly(&p, 2, "notify");
}

/// What `auto` learned of a command (its workers say READY=1 late) is
/// handed over in a self-upgrade: the next reload still waits for it.
#[test]
fn auto_remembers_late_announcers_across_an_upgrade() {
    let (p, _) = auto(plain("asyncio"), &[("ANNOUNCE", "notify"), ("ANNOUNCE_AFTER", "1.5")]);
    wait_until(Duration::from_secs(10), "the announcement", || p.log_text().contains("announce their readiness"));
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = Instant::now();
    p.reload();
    assert!(t.elapsed() >= Duration::from_millis(2 * 1500), "reloaded in {:?}", t.elapsed());
    // Each new worker was ready by its READY=1, none by its accepts.
    let log = p.log_text();
    let after = log.split("upgraded from").nth(1).expect("the upgrade is logged");
    assert!(!after.contains("(it accepts)"), "a worker was taken by its accepts after the upgrade:\n{log}");
    assert_eq!(after.matches("(sent READY=1)").count(), 2, "{log}");
}

#[test]
fn auto_takes_hotswap_and_node_workers_by_what_they_say() {
    let (p, _) = auto(rust_worker(), &[]);
    assert_eq!(Primary::ready_workers(&p.status())[0]["ready_via"], "ipc");
    let app = root().join("tests/apps/plain/fd3.js").display().to_string();
    let (p, _) = auto(vec!["node".into(), app], &[]);
    assert_eq!(Primary::ready_workers(&p.status())[0]["ready_via"], "cluster");
}

/// The commonest first-run mistake: a server that binds an address of its
/// own (`uvicorn app:app` without `--fd 3`). hotswap says so within a
/// couple of seconds, naming the address and what to change, and the
/// failed reload's message says it too; the old workers keep serving.
#[test]
fn a_worker_listening_on_a_socket_of_its_own_is_named_with_the_fix() {
    let dir = TempDir::new("own-listener");
    let start = dir.path("start.sh");
    let server = root().join("tests/apps/plain/server.py").display().to_string();
    script(&start, &format!("exec python3 {server} threads"));
    let p = Primary::builder(vec![start.display().to_string()]).arg("--ready-timeout").arg("6s").start();
    let old = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(100);
    let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let own_addr = own.local_addr().unwrap();
    drop(own);
    script(
        &start,
        &format!(
            "exec python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, \
             socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", {})); s.listen(); time.sleep(60)'",
            own_addr.port()
        ),
    );
    let events = EventStream::start(&p);
    let out = p.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("it never accepted on {} (fd 3)", p.addr()))
            && err.contains(&format!("it listens on a socket of its own instead: {own_addr} (pid ")),
        "{err}"
    );
    let log = p.log_text();
    let warning =
        log.lines().find(|l| l.contains(&format!("listens on {own_addr} itself"))).unwrap_or_else(|| panic!("{log}"));
    assert!(warning.contains("`uvicorn --fd 3`") && warning.contains(&format!("{} (fd 3)", p.addr())), "{warning}");
    // The reload ended at the new worker's ready deadline (it was killed then).
    let seen = events.until("exit", Duration::from_secs(20));
    assert!(seen.last().is_some_and(|e| e["event"] == "exit" && e["killed"] == "ready-timeout"), "{seen:?}");
    assert_eq!(p.worker_pids(), old, "the old workers were not touched");
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a reload to a server on the wrong address");
}
