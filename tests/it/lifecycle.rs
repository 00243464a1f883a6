//! Stop, crash restart and the primary's death, with real processes.

use std::time::Duration;

use crate::common::*;

/// Opens 6 slow requests, waits for the workers to accept them, then runs
/// `stop`; every one of them must still be answered.
fn in_flight_requests_survive(stop: impl FnOnce(&mut Primary)) {
    let mut p = Primary::builder(rust_worker()).env("EXAMPLE_RESPONSE_DELAY_MS", "700").start();
    let pids = p.worker_pids();
    let target = Target::Tcp(p.addr());
    // An accepted connection is an fd in a worker.
    let held = || pids.iter().map(|w| fd_count(*w)).sum::<usize>();
    let idle = held();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let t = target.clone();
            std::thread::spawn(move || get(&t, "/"))
        })
        .collect();
    wait_until(Duration::from_secs(5), "the workers to accept the 6 requests", || held() >= idle + 6);
    stop(&mut p);
    for r in requests {
        let a = r.join().unwrap().expect("an in-flight request failed during stop");
        assert_eq!(a.status, 200);
    }
    // Exit 0: a clean stop, no worker killed at the 30 s --shutdown-timeout
    // (a stop that kills exits 1), so no wall-clock bound is needed.
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "log:\n{}", p.log_text());
    for pid in pids {
        wait_until(Duration::from_secs(2), format_args!("worker {pid} to go with the primary"), || process_gone(pid));
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
        wait_until(Duration::from_millis(500), "the primary's process to end", || process_gone(p.pid()));
    });
}

#[test]
fn a_second_sigterm_forces_the_stop() {
    let out = TempDir::new("probe");
    let mut p = Primary::builder(probe()).probe_dir(&out).env("PROBE_IGNORE_SHUTDOWN", "1").start();
    let pids = p.worker_pids();
    let events = EventStream::start(&p);
    let first = std::time::Instant::now();
    p.signal(libc::SIGTERM);
    // The first SIGTERM is taken (not merged with the second one).
    wait_until(Duration::from_secs(5), "the primary to be stopping", || p.status()["stopping"] == true);
    // Part of the scenario: for a while, nothing ends. (Longer than 1 s: a
    // copy from the same sender within 1 s counts as the same request;
    // signals::a_second_term_from_another_process_still_forces_the_stop
    // covers a second sender.)
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(first.elapsed()));
    assert!(p.running(), "the workers ignore shutdown; the primary waits");
    assert!(pids.iter().all(|w| !process_gone(*w)), "the workers ignore shutdown");
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(1));
    for pid in &pids {
        wait_until(Duration::from_secs(2), format_args!("worker {pid} to be killed"), || process_gone(*pid));
    }
    // Each worker's exit says why it was killed: the forced stop.
    let events = events.to_the_end(Duration::from_secs(10));
    let killed: Vec<_> =
        killed_exits(&events).iter().map(|e| (e["pid"].as_i64().unwrap() as i32, e["killed"].clone())).collect();
    let forced: Vec<_> = pids.iter().map(|p| (*p, serde_json::json!("forced-stop"))).collect();
    assert_eq!(killed.len(), 2, "{events:?}");
    assert!(forced.iter().all(|f| killed.contains(f)), "{events:?}");
}

#[test]
fn reload_during_stop_is_refused() {
    let out = TempDir::new("probe");
    let p = Primary::builder(probe())
        .probe_dir(&out)
        .env("PROBE_IGNORE_SHUTDOWN", "1")
        .arg("--shutdown-timeout")
        .arg("3s")
        .start();
    let workers = p.worker_pids();
    p.signal(libc::SIGTERM);
    wait_until(Duration::from_secs(5), "the primary to be stopping", || p.status()["stopping"] == true);
    let r = p.ctl(&["reload"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("refused: the primary is stopping"));
    let s = p.status();
    assert_eq!(s["generation"], 1, "{s}");
    assert_eq!(p.worker_pids(), workers, "no worker was started");
}

#[test]
fn a_crashed_worker_is_replaced_and_counted() {
    let p = Primary::builder(rust_worker()).start();
    let before = p.status();
    let victim = before["workers"][0]["pid"].as_i64().unwrap() as i32;
    let events = EventStream::start(&p);
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait_until(Duration::from_secs(10), "2 ready workers, without the killed one", || {
        let s = p.status();
        let ready = Primary::ready_workers(&s);
        ready.len() == 2 && !ready.iter().any(|w| w["pid"] == victim)
    });
    let s = p.status();
    let restarts: u64 = s["workers"].as_array().unwrap().iter().map(|w| w["restarts"].as_u64().unwrap()).sum();
    assert_eq!(restarts, 1, "{s}");
    // Its exit says SIGKILL, and that hotswap did not send it (no `killed`).
    let exit = events.until("exit", Duration::from_secs(10)).pop().filter(|e| e["event"] == "exit");
    let exit = exit.expect("an exit event");
    assert_eq!((&exit["pid"], &exit["signal"]), (&serde_json::json!(victim), &serde_json::json!("SIGKILL")), "{exit}");
    assert!(exit.get("killed").is_none(), "{exit}");
    // Serving goes on without a failure.
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(200);
    assert_no_failures(&load.finish(), "load after a crash restart");
}

#[test]
fn a_crash_loop_backs_off() {
    let out = TempDir::new("probe");
    let p = Primary::builder(probe()).workers(1).probe_dir(&out).env("PROBE_EXIT_AFTER_MS", "50").start();
    // While it backs off, status says so. (Generous deadlines: each start
    // is a Python process, slow on a loaded machine.)
    wait_until(Duration::from_secs(20), "a backoff in status", || {
        let s = p.status();
        s["backoff"].as_array().is_some_and(|b| !b.is_empty() && b[0]["crashes_in_a_row"].as_u64() >= Some(2))
    });
    wait_until(Duration::from_secs(20), "the crash loop in the status table", || {
        String::from_utf8_lossy(&p.ctl(&["status"]).stdout).contains("crash loop: slot 0 crashed")
    });
    wait_until(Duration::from_secs(30), "six starts", || p.log_text().matches("started (slot 0)").count() >= 6);
    // What status counts, as starts so far: a running worker's restarts
    // plus its first start, or (in backoff) the crashes in a row, as every
    // start crashed.
    let starts_counted = |s: &serde_json::Value| -> Option<u64> {
        match s["workers"].as_array().unwrap().first() {
            Some(w) => Some(w["restarts"].as_u64().unwrap() + 1),
            None => s["backoff"].as_array().unwrap().first().map(|b| b["crashes_in_a_row"].as_u64().unwrap()),
        }
    };
    let mut s = p.status();
    wait_until(Duration::from_secs(10), "a worker or a backoff in status", || {
        s = p.status();
        starts_counted(&s).is_some()
    });
    let counted = starts_counted(&s).unwrap();
    // The primary logs synchronously: every start it counted is in the log.
    let log = p.log_text();
    let starts = log_times(&log, "started (slot 0)");
    assert!(
        counted >= 3 && counted <= starts.len() as u64,
        "status counts {counted} starts, the log {}: {s}",
        starts.len()
    );
    // The backoff, read from the primary's own clock (the log), so that a
    // slow machine only makes the gaps longer: the first restart is
    // immediate, then each waits 100 ms, 200 ms, 400 ms... after the crash.
    // Without backoff the gaps would be the worker's 50 ms life alone.
    let crashes = log_times(&log, "unexpectedly");
    for (k, pair) in starts.windows(2).enumerate() {
        let delay = if k == 0 { 0.0 } else { 0.1 * f64::from(1u32 << (k - 1).min(8)) };
        // From the crash before this start (logged when it was reaped).
        let crash = crashes.iter().copied().rfind(|c| *c >= pair[0] && *c <= pair[1]);
        let crash = crash.unwrap_or_else(|| panic!("no crash logged between starts {k} and {}:\n{log}", k + 1));
        assert!(
            pair[1] - crash >= delay - 0.002,
            "start {} came {:.3} s after the crash, before its backoff of {delay} s:\n{log}",
            k + 1,
            pair[1] - crash
        );
    }
    assert!(log.contains("crashed 3 times in a row; restarting in 200 ms"), "{log}");
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
    let ended = p.wait_exit_status(Duration::from_secs(5)).expect("the primary ends on SIGKILL");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&ended), Some(libc::SIGKILL), "{ended:?}");
    for pid in workers.iter().chain(&children) {
        wait_until(Duration::from_secs(5), format_args!("process {pid} to go with the SIGKILLed primary"), || {
            process_gone(*pid)
        });
    }
}
