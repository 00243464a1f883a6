//! Stop, crash restart and the primary's death, with real processes.

use std::time::{Duration, Instant};

use crate::common::*;

/// Opens `n` slow requests, lets the workers accept them, then runs `stop`;
/// every one of them must still be answered.
fn in_flight_requests_survive(stop: impl FnOnce(&mut Primary)) {
    let mut p = Primary::builder(rust_worker()).env("EXAMPLE_RESPONSE_DELAY_MS", "700").start();
    let pids = p.worker_pids();
    let target = Target::Tcp(p.addr());
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let t = target.clone();
            std::thread::spawn(move || get(&t, "/"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(250));
    let t = Instant::now();
    stop(&mut p);
    for r in requests {
        let a = r.join().unwrap().expect("an in-flight request failed during stop");
        assert_eq!(a.status, 200);
    }
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "log:\n{}", p.log_text());
    assert!(t.elapsed() < Duration::from_secs(5));
    for pid in pids {
        assert!(wait_until(Duration::from_secs(2), || process_gone(pid)), "worker {pid} outlived the primary");
    }
    assert!(!p.control.exists(), "the control socket is removed at exit");
}

#[test]
fn sigterm_stops_gracefully_and_finishes_in_flight_requests() {
    in_flight_requests_survive(|p| p.signal(libc::SIGTERM));
}

#[test]
fn sigint_stops_gracefully() {
    in_flight_requests_survive(|p| p.signal(libc::SIGINT));
}

#[test]
fn stop_command_returns_once_the_primary_has_exited() {
    in_flight_requests_survive(|p| {
        let out = p.ctl(&["stop"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("stopping 2 workers") && text.contains("stopped"), "{text}");
        // The connection closes when the primary's process ends.
        assert!(wait_until(Duration::from_millis(500), || process_gone(p.pid())));
    });
}

#[test]
fn a_second_sigterm_forces_the_stop() {
    let out = TempDir::new("probe");
    let mut p = Primary::builder(vec!["python3".into(), fixture("probe.py")])
        .env("PROBE_DIR", out.0.display().to_string())
        .env("PROBE_IGNORE_SHUTDOWN", "1")
        .start();
    let pids = p.worker_pids();
    p.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.child.try_wait().unwrap().is_none(), "the workers ignore shutdown; the primary waits");
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(1));
    for pid in pids {
        assert!(wait_until(Duration::from_secs(2), || process_gone(pid)));
    }
}

#[test]
fn reload_during_stop_is_refused() {
    let out = TempDir::new("probe");
    let p = Primary::builder(vec!["python3".into(), fixture("probe.py")])
        .env("PROBE_DIR", out.0.display().to_string())
        .env("PROBE_IGNORE_SHUTDOWN", "1")
        .arg("--shutdown-timeout")
        .arg("3s")
        .start();
    p.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    let r = p.ctl(&["reload"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("refused: the primary is stopping"));
}

#[test]
fn a_crashed_worker_is_replaced_and_counted() {
    let p = Primary::builder(rust_worker()).start();
    let before = p.status();
    let victim = before["workers"][0]["pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(victim, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(10), || {
        let s = p.status();
        let pids = p.worker_pids();
        Primary::ready_workers(&s).len() == 2 && !pids.contains(&victim)
    }));
    let s = p.status();
    let restarts: u64 = s["workers"].as_array().unwrap().iter().map(|w| w["restarts"].as_u64().unwrap()).sum();
    assert_eq!(restarts, 1, "{s}");
    assert!(p.log_text().contains("was killed by SIGKILL unexpectedly"));
    // Serving goes on without a failure.
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_no_failures(&load.finish(), "load after a crash restart");
}

#[test]
fn a_crash_loop_backs_off() {
    let out = TempDir::new("probe");
    let p = Primary::builder(vec!["python3".into(), fixture("probe.py")])
        .workers(1)
        .env("PROBE_DIR", out.0.display().to_string())
        .env("PROBE_EXIT_AFTER_MS", "50")
        .start();
    // While it backs off, status says so.
    assert!(
        wait_until(Duration::from_secs(3), || {
            let s = p.status();
            s["backoff"].as_array().is_some_and(|b| !b.is_empty() && b[0]["crashes_in_a_row"].as_u64() >= Some(2))
        }),
        "no backoff in status"
    );
    assert!(wait_until(Duration::from_secs(3), || String::from_utf8_lossy(&p.ctl(&["status"]).stdout)
        .contains("crash loop: slot 0 crashed")));
    std::thread::sleep(Duration::from_secs(2));
    let s = p.status();
    let restarts = s["workers"].as_array().unwrap().first().map_or(0, |w| w["restarts"].as_u64().unwrap());
    let starts = p.log_text().matches("started (slot 0)").count();
    // Without backoff this would be dozens of starts; with 0, 100, 200, 400,
    // 800 ms... between them it is a handful.
    assert!((3..=12).contains(&starts), "{starts} starts in 3s; status {s}");
    assert!(restarts >= 2 || starts >= 3, "{s}");
    assert!(p.log_text().contains("crashed 3 times in a row; restarting in 200 ms"), "{}", p.log_text());
}

#[test]
fn a_command_that_cannot_start_ends_the_primary_with_a_clear_error() {
    let mut p = Primary::builder(vec!["sh".into(), "-c".into(), "echo boom >&2; exit 3".into()]).no_wait().start();
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
    let log = p.log_text();
    assert!(
        log.contains("the first generation cannot start") && log.contains("exited with code 3 before it was ready"),
        "{log}"
    );
}

#[test]
fn killing_the_primary_takes_workers_and_their_children_along() {
    let dir = TempDir::new("orphans");
    // A worker with a child of its own: the shell stays, the sleep is its child.
    let start = dir.path("start.sh");
    script(&start, &format!("sleep 600 & echo $! > {}/child.$$; exec {}", dir.0.display(), rust_worker()[0]));
    let mut p = Primary::builder(vec![start.display().to_string()]).start();
    let workers = p.worker_pids();
    let children: Vec<i32> = workers
        .iter()
        .map(|w| std::fs::read_to_string(dir.path(&format!("child.{w}"))).unwrap().trim().parse().unwrap())
        .collect();
    assert!(children.iter().all(|c| !process_gone(*c)));
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    for pid in workers.iter().chain(&children) {
        assert!(
            wait_until(Duration::from_secs(5), || process_gone(*pid)),
            "process {pid} outlived a SIGKILLed primary"
        );
    }
}
