//! Signals at the worst moments: during the exec of a self-upgrade (when
//! the new image has no handlers yet), during a graceful stop, and the
//! copies that a process-group signal (GNU `timeout`) adds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// How many times the primary logged that it is handing over (the line
/// right before the exec).
fn handovers(p: &Primary) -> usize {
    p.log_text().matches("; handing over").count()
}

/// Starts `hotswap upgrade` on a thread and waits (polling the log as fast
/// as it can) until the primary is about to exec; the caller then signals
/// it inside the exec window. Returns the client, to join.
fn upgrade_until_exec(p: &Primary) -> std::thread::JoinHandle<std::process::Output> {
    let before = handovers(p);
    let control = p.control.clone();
    let client = std::thread::spawn(move || {
        Command::new(HOTSWAP).args(["upgrade", "--control"]).arg(&control).output().unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while handovers(p) == before {
        assert!(Instant::now() < deadline, "no handover within 20 s; log:\n{}", p.log_text());
        std::thread::sleep(Duration::from_micros(100));
    }
    client
}

#[test]
fn hup_and_usr2_during_the_exec_of_an_upgrade_keep_the_service_and_are_acted_on() {
    let mut p = Primary::builder(rust_worker()).start();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(50);
    for round in 1..=4 {
        let generation = p.generation();
        let upgrades = p.status()["upgrades"].as_u64().unwrap();
        let client = upgrade_until_exec(&p);
        // A burst of SIGHUP right around the exec (systemctl reload racing
        // hotswap upgrade): none may kill the primary, and the reload they
        // ask for happens (in the new image).
        for _ in 0..10 {
            p.signal(libc::SIGHUP);
            std::thread::sleep(Duration::from_micros(200));
        }
        let out = client.join().unwrap();
        assert!(p.running(), "round {round}: the primary died; log:\n{}", p.log_text());
        assert!(
            out.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        wait_until(Duration::from_secs(20), format!("round {round}: the reload asked by SIGHUP"), || {
            p.try_status().is_some_and(|s| s["generation"].as_u64().unwrap() > generation && s["reloading"] == false)
        });
        assert_eq!(p.status()["upgrades"].as_u64().unwrap(), upgrades + 1, "round {round}");
        assert_eq!(p.status()["pid"], p.pid());
        load.wait_for_requests(20);
    }
    // SIGUSR2 twice, 2 ms apart, and SIGUSR2 inside the exec window.
    for round in 1..=3 {
        let upgrades = p.status()["upgrades"].as_u64().unwrap();
        p.signal(libc::SIGUSR2);
        std::thread::sleep(Duration::from_millis(2));
        p.signal(libc::SIGUSR2);
        wait_until(Duration::from_secs(20), format!("round {round}: the SIGUSR2 upgrade"), || {
            p.try_status().is_some_and(|s| s["upgrades"].as_u64().unwrap() > upgrades)
        });
        let client = upgrade_until_exec(&p);
        p.signal(libc::SIGUSR2);
        let _ = client.join().unwrap();
        assert!(p.running(), "round {round}: the primary died; log:\n{}", p.log_text());
        // The SIGUSR2 sent during the exec is acted on: one more upgrade.
        wait_until(Duration::from_secs(20), format!("round {round}: the upgrade asked during the exec"), || {
            p.try_status().is_some_and(|s| s["upgrades"].as_u64().unwrap() >= upgrades + 3)
        });
        load.wait_for_requests(20);
    }
    assert_no_failures(&load.finish(), "load across upgrades hit by signals");
    // TERM still stops it gracefully.
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(0), "{}", p.log_text());
}

#[test]
fn a_term_during_the_exec_of_an_upgrade_stops_the_primary_gracefully() {
    for round in 1..=3 {
        let mut p = Primary::builder(rust_worker()).workers(1).start();
        let workers = p.worker_pids();
        let client = upgrade_until_exec(&p);
        p.signal(libc::SIGTERM);
        let _ = client.join().unwrap();
        let code = p.wait_exit(Duration::from_secs(20));
        assert_eq!(
            code,
            Some(0),
            "round {round}: a TERM during the exec must stop it gracefully; log:\n{}",
            p.log_text()
        );
        // Exit 0: the TERM was taken (the primary stopped) and not forced
        // (a forced stop exits 1).
        for pid in workers {
            wait_until(Duration::from_secs(5), format!("worker {pid} gone"), || process_gone(pid));
        }
    }
}

/// A shell worker (no IPC, `--ready none`) that takes about a second to
/// drain after SIGTERM.
fn slow_drainer() -> Vec<String> {
    vec!["sh".into(), "-c".into(), "trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1 & wait $!; done".into()]
}

#[test]
fn sighup_during_a_graceful_stop_starts_no_reload() {
    // Requests that take 1.5 s keep the workers draining.
    let mut p = Primary::builder(rust_worker()).env("EXAMPLE_RESPONSE_DELAY_MS", "1500").start();
    let target = Target::Tcp(p.addr());
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let t = target.clone();
            std::thread::spawn(move || get(&t, "/"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let events = EventStream::start(&p);
    p.signal(libc::SIGTERM);
    // The `stopping` event, not a status request: on a loaded machine a
    // `hotswap status` may start after the stop is over.
    let mut seen = events.until("stopping", Duration::from_secs(10));
    assert!(seen.last().is_some_and(|e| e["event"] == "stopping"), "the stop to begin: {seen:?}");
    for _ in 0..3 {
        p.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(0), "the stop must finish; log:\n{}", p.log_text());
    for (i, r) in in_flight.into_iter().enumerate() {
        let answer = r.join().unwrap();
        assert!(answer.as_ref().is_ok_and(|a| a.status == 200), "in-flight request {i}: {answer:?}");
    }
    let log = p.log_text();
    assert!(log.contains("SIGHUP ignored: the primary is stopping"), "{log}");
    seen.extend(events.to_the_end(Duration::from_secs(10)));
    let events = seen;
    let started: Vec<_> = events.iter().filter(|e| e["event"] == "fork" || e["event"] == "reload-started").collect();
    assert!(started.is_empty(), "a reload or a worker started during the stop: {started:?}");
    assert_eq!(events.iter().filter(|e| e["event"] == "exit").count(), 2, "{events:?}");
}

#[test]
fn the_process_group_copy_of_timeouts_term_does_not_force_the_stop() {
    // GNU timeout sends SIGTERM to hotswap, then to its whole process group.
    let runs: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                let dir = TempDir::new("timeout");
                let log = dir.path("primary.log");
                let logf = std::fs::File::create(&log).unwrap();
                // 5 s: 12 primaries start at once, and on a loaded machine
                // (load 28) one took over 2 s to take SIGTERM (it died of it).
                let status = Command::new("timeout")
                    .args(["--preserve-status", "-s", "TERM", "5"])
                    .arg(HOTSWAP)
                    .args(["run", "--control"])
                    .arg(dir.path("control.sock"))
                    .args(["-w", "2", "--ready", "none", "-l", "127.0.0.1:0", "--"])
                    .args(slow_drainer())
                    .env("HOTSWAP_LOG", "debug")
                    .stdin(Stdio::null())
                    .stdout(logf.try_clone().unwrap())
                    .stderr(logf)
                    .status()
                    .unwrap();
                (i, status, std::fs::read_to_string(&log).unwrap(), dir)
            })
        })
        .collect();
    for r in runs {
        let (i, status, log, _dir) = r.join().unwrap();
        // 0: neither forced nor any worker killed (either exits 1).
        assert_eq!(status.code(), Some(0), "run {i}: not a graceful stop:\n{log}");
        assert_eq!(log.matches("exited with code 0 after").count(), 2, "run {i}: both workers drain:\n{log}");
    }
}

#[test]
fn a_stop_signal_copied_to_the_process_group_by_its_sender_counts_once() {
    // What `timeout` does, with the two copies 100 ms apart so that the
    // primary surely handles the first before the second arrives: one
    // shell sends SIGTERM to hotswap, then to its own process group.
    let dir = TempDir::new("group-term");
    let log = dir.path("primary.log");
    let logf = std::fs::File::create(&log).unwrap();
    let status = {
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .arg("-c")
            .arg(
                // Once both workers serve (a fixed 1.5 s was too short at
                // load 24), as `timeout` does for a primary that runs.
                "\"$@\" & p=$!; trap '' TERM; \
                 i=0; until \"$1\" status --control \"$4\" 2>/dev/null | grep -q '2 ready of 2' || [ $i -ge 300 ]; \
                 do i=$((i+1)); sleep 0.1; done; \
                 kill -TERM $p; sleep 0.1; kill -TERM 0; wait $p; echo \"exit $?\"",
            )
            .arg("sh")
            .arg(HOTSWAP)
            .args(["run", "--control"])
            .arg(dir.path("control.sock"))
            .args(["-w", "2", "--ready", "none", "-l", "127.0.0.1:0", "--"])
            .args(slow_drainer())
            .env("HOTSWAP_LOG", "debug")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .status()
            .unwrap()
    };
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log}");
    // 0: neither forced nor any worker killed (either exits 1).
    assert!(log.contains("exit 0"), "not a graceful stop:\n{log}");
    assert!(log.contains("again within 1000 ms"), "{log}");
    assert_eq!(log.matches("exited with code 0 after").count(), 2, "both workers drain:\n{log}");
}

#[test]
fn a_second_term_from_another_process_still_forces_the_stop() {
    let mut p =
        Primary::builder(slow_drainer()).arg("--ready").arg("none").arg("--shutdown-timeout").arg("20s").start();
    let kill = |pid: i32| assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let events = EventStream::start(&p);
    kill(p.pid());
    wait_until(Duration::from_secs(5), "the stop to begin", || p.status()["stopping"] == true);
    kill(p.pid()); // another `kill`, another process: a real second request
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(1), "{}", p.log_text());
    let events = events.to_the_end(Duration::from_secs(10));
    let killed: Vec<_> = killed_exits(&events).iter().map(|e| e["killed"].clone()).collect();
    assert_eq!(killed, vec![serde_json::json!("forced-stop"); 2], "every worker killed by the forced stop: {events:?}");
}

/// A `/proc/PID/status` signal set (`SigBlk`, `SigIgn`) as a bit mask.
fn sigset(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn after_upgrades_the_primary_takes_signals_and_workers_start_with_a_clean_mask() {
    let p = Primary::builder(vec!["sleep".into(), "1000".into()]).workers(1).arg("--ready").arg("none").start();
    let first = p.worker_pids()[0];
    // Even when the primary itself was started with a signal ignored (a
    // Rust program's posix_spawn leaves glibc's signal 32 ignored).
    assert_eq!(sigset(first, "SigIgn:"), 0, "the first worker inherited ignored signals");
    assert_eq!(sigset(first, "SigBlk:"), 0, "the first worker inherited a blocked mask");
    for _ in 0..2 {
        let out = p.ctl(&["upgrade"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The new image unblocked what the exec held.
    let held = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGUSR2, libc::SIGCHLD];
    let blocked = sigset(p.pid(), "SigBlk:");
    for sig in held {
        assert_eq!(blocked & (1 << (sig - 1)), 0, "signal {sig} still blocked in the primary ({blocked:x})");
    }
    // A worker started by the new image: nothing blocked, nothing ignored.
    p.reload();
    let worker = p.worker_pids()[0];
    assert_eq!(sigset(worker, "SigBlk:"), 0, "the worker inherited a blocked mask");
    assert_eq!(sigset(worker, "SigIgn:"), 0, "the worker inherited ignored signals");
}
