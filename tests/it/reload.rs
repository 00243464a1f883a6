//! Rolling reloads under real load: zero failed requests, and after each
//! reload every answer comes from the new generation.

use std::time::{Duration, Instant};

use crate::common::*;

/// Runs `reloads` reloads of `command` under keep-alive and new-connection
/// load and checks every request.
fn zero_downtime(command: Vec<String>, reloads: u64, unix: bool) {
    let dir = TempDir::new("zd");
    let sock = dir.path("app.sock");
    let mut b = if unix {
        Primary::bare(command).arg("-l").arg(format!("unix:{}", sock.display()))
    } else {
        Primary::builder(command)
    };
    b = b.env("EXAMPLE_STARTUP_MS", "50");
    let p = b.start();
    let target = if unix { Target::Unix(sock.clone()) } else { Target::Tcp(p.addr()) };
    let load = Load::start(target, 4, 2);
    load.wait_for_requests(100);
    // (started at, finished at, generation now serving)
    let mut marks: Vec<(Instant, Instant, u64)> = Vec::new();
    for i in 0..reloads {
        let started = Instant::now();
        let out = p.reload();
        let generation = i + 2;
        assert!(out.contains(&format!("generation {generation} serves (2 workers replaced)")), "{out}");
        assert_eq!(out.matches("replaced [w").count(), 2, "a line per replaced worker: {out}");
        marks.push((started, Instant::now(), generation));
        let st = p.status();
        assert_eq!(st["generation"], generation);
        let workers = st["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2);
        assert!(workers.iter().all(|w| w["generation"] == generation && w["state"] == "ready"), "{st}");
        // Requests in this generation's window, checked below.
        load.wait_for_requests(100);
    }
    let records = load.finish();
    assert_no_failures(&records, "load across reloads");
    // Every request sent after a reload finished (and before the next one
    // started) was answered by that reload's generation.
    for (i, (_, done, generation)) in marks.iter().enumerate() {
        let next = marks.get(i + 1).map(|m| m.0);
        let window: Vec<_> = records.iter().filter(|r| r.sent > *done && next.is_none_or(|n| r.sent < n)).collect();
        assert!(!window.is_empty(), "no requests after reload {}", i + 1);
        for r in window {
            assert_eq!(r.result.as_ref().unwrap(), generation, "answer from an old generation after reload {}", i + 1);
        }
    }
}

#[test]
fn rust_worker_ten_reloads_under_load() {
    zero_downtime(rust_worker(), 10, false);
}

#[test]
fn node_worker_ten_reloads_under_load() {
    zero_downtime(node_worker(), 10, false);
}

#[test]
fn python_worker_reloads_under_load() {
    zero_downtime(python_worker(), 5, false);
}

#[test]
fn unix_socket_listener_reloads_under_load() {
    zero_downtime(rust_worker(), 3, true);
}

#[test]
fn two_listeners_reload_under_load_on_both() {
    let dir = TempDir::new("two");
    let sock = dir.path("app.sock");
    let p = Primary::builder(rust_worker()).arg("-l").arg(format!("admin=unix:{}", sock.display())).start();
    let tcp = Load::start(Target::Tcp(p.addr()), 2, 1);
    let unix = Load::start(Target::Unix(sock.clone()), 2, 1);
    tcp.wait_for_requests(50);
    unix.wait_for_requests(50);
    for _ in 0..3 {
        p.reload();
        tcp.wait_for_requests(50);
        unix.wait_for_requests(50);
    }
    assert_no_failures(&tcp.finish(), "TCP load across reloads");
    assert_no_failures(&unix.finish(), "Unix-socket load across reloads");
}

#[test]
fn sighup_reloads_under_load() {
    let p = Primary::builder(rust_worker()).start();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(100);
    p.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "generation 2 to serve alone", || {
        let s = p.status();
        s["generation"] == 2
            && s["reloading"] == false
            && s["workers"].as_array().unwrap().len() == 2
            && Primary::ready_workers(&s).iter().filter(|w| w["generation"] == 2).count() == 2
    });
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a SIGHUP reload");
}

#[test]
fn reloads_asked_during_a_reload_are_queued_and_joined() {
    // Each reload takes some 3 s (two workers, 1.5 s each to start): room
    // for the next clients to start and be heard while the first runs.
    let p = Primary::builder(rust_worker()).env("EXAMPLE_STARTUP_MS", "1500").start();
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    let reload = || {
        let control = p.control.clone();
        std::thread::spawn(move || {
            std::process::Command::new(HOTSWAP).arg("reload").arg("--control").arg(&control).output().unwrap()
        })
    };
    // The first runs, the second is queued behind it, the third joins the
    // queued one.
    let mut clients = vec![reload()];
    wait_until(Duration::from_secs(20), "the first reload to run", || p.status()["reloading"] == true);
    clients.push(reload());
    wait_until(Duration::from_secs(20), "the second reload to be queued", || p.status()["reload_queued"] == true);
    clients.push(reload());
    // The third is heard while the second still waits (on the primary's
    // clock: before the first reload finished).
    wait_until(Duration::from_secs(20), "the third request", || {
        p.log_text().matches("reload queued behind the running one").count() >= 2
    });
    for c in clients {
        let out = c.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let log = p.log_text();
    let queued = log_times(&log, "reload queued behind the running one");
    let finished = log_times(&log, "reload finished in");
    assert!(queued.len() == 2 && queued[1] < finished[0], "the third came after the first reload:\n{log}");
    // One running reload, one queued that the third request joined.
    let s = p.status();
    assert_eq!(s["generation"], 3, "{s}");
    assert_no_failures(&load.finish(), "load across queued reloads");
}

/// A deploy that swaps the script the command points at.
fn swappable(dir: &TempDir) -> (std::path::PathBuf, Vec<String>) {
    let start = dir.path("start.sh");
    script(&start, &format!("exec {}", rust_worker()[0]));
    (start.clone(), vec![start.display().to_string()])
}

#[test]
fn broken_deploy_that_exits_keeps_the_old_generation_serving() {
    let dir = TempDir::new("deploy");
    let (start, cmd) = swappable(&dir);
    let p = Primary::builder(cmd).start();
    let old = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(100);

    script(&start, "echo 'config error: cannot start' >&2; exit 3");
    let out = p.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exited with code 3 before it was ready"), "{err}");
    assert!(err.contains("keep serving"), "{err}");
    let s = p.status();
    assert_eq!(s["last_reload"]["ok"], false, "{s}");
    assert!(s["last_reload"]["message"].as_str().unwrap().contains("exited with code 3"));
    assert_eq!(s["generation"], 1);
    assert_eq!(p.worker_pids(), old, "the old workers were not touched");
    // Through the output thread, so not at once.
    wait_until(Duration::from_secs(5), "the worker's stderr in the log", || {
        p.log_text().contains("config error: cannot start")
    });

    // Fixing the deploy makes the next reload work.
    script(&start, &format!("exec {}", rust_worker()[0]));
    p.reload();
    assert_eq!(p.status()["generation"], 3);
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a failed and a fixed deploy");
}

#[test]
fn broken_deploy_that_never_gets_ready_fails_at_the_timeout() {
    let dir = TempDir::new("deploy");
    let (start, cmd) = swappable(&dir);
    let p = Primary::builder(cmd).arg("--ready-timeout").arg("1s").start();
    let old = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(100);

    script(&start, "exec sleep 600");
    let events = EventStream::start(&p);
    let out = p.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("was not ready within 1s"), "{err}");
    assert_eq!(p.worker_pids(), old, "the old workers were not touched");
    // The stuck worker was killed at its ready deadline.
    let seen = events.until("exit", Duration::from_secs(20));
    let exit = seen.last().filter(|e| e["event"] == "exit").unwrap_or_else(|| panic!("no exit: {seen:?}"));
    assert_eq!(exit["killed"], "ready-timeout", "{seen:?}");
    let stuck = exit["pid"].as_i64().unwrap() as i32;
    assert!(!old.contains(&stuck), "{seen:?}");
    wait_until(Duration::from_secs(3), format_args!("stuck worker {stuck} to be gone"), || process_gone(stuck));
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a deploy that never got ready");
}

/// A reload that waits on a slow worker says why to the `hotswap reload`
/// that waits, not only in the primary's log; traffic goes on meanwhile.
#[test]
fn a_reload_waiting_on_a_slow_worker_tells_the_client_why() {
    let dir = TempDir::new("slow");
    let start = dir.path("start.sh");
    let delay = dir.path("delay");
    std::fs::write(&delay, "0").unwrap();
    script(&start, &format!("sleep \"$(cat {})\"\nexec {}", delay.display(), rust_worker()[0]));
    let p = Primary::builder(vec![start.display().to_string()]).workers(1).start();
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    // Not ready for 7 s: the 5 s hint comes first.
    std::fs::write(&delay, "7").unwrap();
    let out = p.ctl(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("waiting: [w2 g2 ") && said.contains("not ready after 5 s"), "{said}");
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load through a slow reload");
}
