//! Faults and abuse: what production throws at a supervisor. Each case runs
//! real processes, most under real load.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

/// `(open fds, threads, RSS in KiB)` of a process.
fn footprint(pid: i32) -> (usize, u64, u64) {
    let fds = fd_count(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (fds, field("Threads:"), field("VmRSS:"))
}

/// Zombie children of `pid`.
fn zombies_of(pid: i32) -> Vec<i32> {
    let mut z = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let rest: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        if rest.len() > 2 && rest[0] == "Z" && rest[1] == pid.to_string() {
            z.push(child);
        }
    }
    z
}

/// A primary that answers a status request within this is responsive:
/// the stall these tests guard against (an event loop blocked by a flood
/// or a dead worker) lasts as long as its cause, many seconds. Generous,
/// because a loaded machine delays a healthy primary too (1 s flaked).
const RESPONSIVE: Duration = Duration::from_secs(5);

/// How long the primary takes to answer a status request, asked on its
/// control socket from here: what the primary does, without the start of a
/// `hotswap status` process (hundreds of ms on a loaded machine).
fn status_latency(p: &Primary) -> Duration {
    use std::io::{BufRead, Write};
    let t = Instant::now();
    let mut conn = std::os::unix::net::UnixStream::connect(&p.control).expect("connecting to the control socket");
    conn.write_all(b"{\"command\":\"status\"}\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(conn).read_line(&mut line).unwrap();
    let took = t.elapsed();
    assert!(line.contains("\"pid\""), "status did not answer: {line}");
    took
}

#[test]
fn a_worker_that_ignores_shutdown_is_killed_and_the_reload_completes() {
    let p = Primary::builder(rust_worker())
        .env("EXAMPLE_HANG_AFTER_DRAIN", "1")
        .arg("--shutdown-timeout")
        .arg("1s")
        .start();
    let old = p.worker_pids();
    let events = EventStream::start(&p);
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(100);
    let t = Instant::now();
    let out = p.reload();
    let took = t.elapsed();
    assert!(out.contains("2 old workers had to be killed at --shutdown-timeout"), "the reload says so: {out}");
    assert!(p.status()["last_reload"]["killed"] == 2, "{}", p.status());
    // Two workers, each killed at the 1 s timeout (one at a time).
    assert!(took >= Duration::from_secs(2), "each old worker waited its timeout: {took:?}");
    for pid in &old {
        assert!(process_gone(*pid), "{pid} survived its shutdown timeout");
    }
    let seen = events.until("reload-finished", Duration::from_secs(10));
    let killed: Vec<_> =
        killed_exits(&seen).iter().map(|e| (e["pid"].as_i64().unwrap() as i32, e["killed"].clone())).collect();
    let mut expected: Vec<_> = old.iter().map(|p| (*p, json!("shutdown-timeout"))).collect();
    let mut killed = killed;
    killed.sort_by_key(|k| k.0);
    expected.sort_by_key(|k| k.0);
    assert_eq!(killed, expected, "{seen:?}");
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a reload of workers that ignore shutdown");
    // A stop that has to kill them says so, and fails.
    let out = p.ctl(&["stop"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stopped, but 2 workers had to be killed"), "{err}");
    // And so does the primary's own exit status.
    let mut p = p;
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1), "{}", p.log_text());
}

/// SIGTERM (systemd's stop, `docker stop`) that ends with workers killed at
/// `--shutdown-timeout` is no clean stop: `hotswap run` exits 1, as
/// `hotswap stop` does for the same stop; a clean one exits 0.
#[test]
fn a_sigterm_stop_that_kills_workers_exits_1() {
    for (hang, code) in [(true, 1), (false, 0)] {
        let mut b = Primary::builder(rust_worker()).workers(1).arg("--shutdown-timeout").arg("1s");
        if hang {
            b = b.env("EXAMPLE_HANG_AFTER_DRAIN", "1");
        }
        let mut p = b.start();
        let events = EventStream::start(&p);
        let load = Load::start(Target::Tcp(p.addr()), 1, 1);
        load.wait_for_requests(50);
        // Some requests well before the stop (see `taken` below).
        std::thread::sleep(Duration::from_millis(300));
        let stop = Instant::now();
        p.signal(libc::SIGTERM);
        assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(code), "hang={hang}: {}", p.log_text());
        // Requests the worker had taken before the stop must be answered. One
        // sent in the last moment before it may still sit in the accept queue
        // when the worker stops accepting, and a stop refuses what is queued
        // then (the listener closes with the primary): 100 ms tells the two
        // apart (a failure 8 ms before the stop was seen on a loaded machine).
        let taken = stop - Duration::from_millis(100);
        let before: Vec<_> = load.finish().into_iter().filter(|r| r.sent < taken).collect();
        assert_no_failures(&before, "requests sent before the stop");
        let events = events.to_the_end(Duration::from_secs(10));
        let killed: Vec<_> = killed_exits(&events).iter().map(|e| e["killed"].clone()).collect();
        let expected = if hang { vec![json!("shutdown-timeout")] } else { vec![] };
        assert_eq!(killed, expected, "hang={hang}: {events:?}");
    }
}

#[test]
fn a_workers_own_children_go_with_it_on_reload_and_stop() {
    let dir = TempDir::new("tree");
    let start = dir.path("start.sh");
    script(&start, &format!("sleep 600 & echo $! > {}/child.$$; exec {}", dir.0.display(), rust_worker()[0]));
    let mut p = Primary::builder(vec![start.display().to_string()]).start();
    let child_of =
        |w: i32| -> i32 { std::fs::read_to_string(dir.path(&format!("child.{w}"))).unwrap().trim().parse().unwrap() };
    let first: Vec<i32> = p.worker_pids().into_iter().map(child_of).collect();
    assert!(first.iter().all(|c| !process_gone(*c)), "the grandchildren run: {first:?}");
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(100);
    p.reload();
    for c in &first {
        wait_until(Duration::from_secs(2), format_args!("grandchild {c} to go with its worker"), || process_gone(*c));
    }
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a reload of workers with children");
    let second: Vec<i32> = p.worker_pids().into_iter().map(child_of).collect();
    assert!(p.ctl(&["stop"]).status.success());
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
    for c in &second {
        wait_until(Duration::from_secs(2), format_args!("grandchild {c} to go with the stop"), || process_gone(*c));
    }
}

#[test]
fn an_output_flood_keeps_the_primary_responsive_and_small() {
    // It keeps both cores busy: alone, its latency bound measures hotswap,
    // and the other tests' timing is not its victim.
    let _alone = exclusive();
    let dir = TempDir::new("flood");
    let done = dir.path("done");
    let p = Primary::builder(vec!["python3".into(), fixture("flood.py")])
        .workers(1)
        .env("FLOOD_MB", "200")
        .env("FLOOD_DONE", done.display().to_string())
        .start();
    let (_, _, rss_before) = footprint(p.pid());
    let mut worst = Duration::ZERO;
    let mut peak = rss_before;
    while !done.exists() {
        worst = worst.max(status_latency(&p));
        peak = peak.max(footprint(p.pid()).2);
        // Part of the scenario: how often the flood is sampled.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(worst < RESPONSIVE, "status took {worst:?} during the flood");
    assert!(peak < rss_before + 16 * 1024, "RSS grew from {rss_before} KiB to {peak} KiB");
    // Its IPC channel is closed: it is stopped with SIGTERM, not left to
    // the timeout (its exit says SIGTERM, and no kill).
    let events = EventStream::start(&p);
    p.reload();
    let seen = events.until("exit", Duration::from_secs(20));
    let exit = seen.last().filter(|e| e["event"] == "exit").unwrap_or_else(|| panic!("no exit: {seen:?}"));
    assert!(exit["signal"] == "SIGTERM" && exit.get("killed").is_none(), "{seen:?}");
}

#[test]
fn random_sigkills_during_reloads_never_stall_the_primary() {
    let p = Primary::builder(rust_worker()).workers(3).start();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let kills = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Part of the scenario: a kill every 150 ms.
                std::thread::sleep(Duration::from_millis(150));
                let Some(s) = p.try_status() else { continue };
                let pids: Vec<i64> =
                    s["workers"].as_array().unwrap().iter().map(|w| w["pid"].as_i64().unwrap()).collect();
                if let Some(pid) = pids.get((n * 7) % pids.len().max(1)) {
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                }
                n += 1;
            }
            n
        });
        for _ in 0..8 {
            // A reload may fail when its new worker is the one killed; it
            // must end either way, with an answer.
            let out = p.ctl(&["reload"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() || err.contains("hotswap: reload failed: "), "{err}");
            assert!(status_latency(&p) < RESPONSIVE);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        killer.join().unwrap()
    });
    // How many land depends on how fast the reloads go; one proves the
    // reloads ran into kills (3 was asked once and seen to fail on a loaded CI machine).
    assert!(kills >= 1, "no kill during 8 reloads");
    p.reload();
    wait_until(Duration::from_secs(15), "3 ready workers after the kills", || {
        Primary::ready_workers(&p.status()).len() == 3
    });
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(200);
    assert_no_failures(&load.finish(), "load after the kills");
    assert!(zombies_of(p.pid()).is_empty());
}

#[test]
fn a_sighup_storm_gives_one_running_and_one_queued_reload() {
    // Each reload takes at least 4 s (a 4 s start-up), so that the storm
    // (50 signals 20 ms apart, some 1 s; longer when this thread is held
    // back) fits in the first one; the log says whether it did.
    let p = Primary::builder(rust_worker()).workers(1).env("EXAMPLE_STARTUP_MS", "4000").start();
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    for _ in 0..50 {
        p.signal(libc::SIGHUP);
        // Part of the scenario: a storm, not one coalesced signal.
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until(Duration::from_secs(40), "the queued reload to finish at generation 3", || {
        let s = p.status();
        s["reloading"] == false && s["generation"] == 3
    });
    // Part of the scenario: nothing more happens in the next second.
    std::thread::sleep(Duration::from_millis(1000));
    let s = p.status();
    let log = p.log_text();
    // Every SIGHUP the primary handled came during the first reload (the
    // precondition of the scenario, on the primary's clock).
    let heard = log_times(&log, "SIGHUP: reload requested");
    let first_done = log_times(&log, "reload finished in");
    assert!(!heard.is_empty() && !first_done.is_empty(), "{log}");
    assert!(heard.last() < first_done.first(), "the storm outlasted the first reload:\n{log}");
    assert!(log.contains("reload queued behind the running one"), "{log}");
    assert_eq!(s["generation"], 3, "50 SIGHUPs: exactly one running and one queued reload");
    assert_eq!((s["reloading"].as_bool(), s["reload_queued"].as_bool()), (Some(false), Some(false)), "{s}");
    assert_no_failures(&load.finish(), "load across a SIGHUP storm");
}

#[test]
fn stop_during_a_reload_stops_cleanly() {
    let mut p = Primary::builder(rust_worker()).env("EXAMPLE_STARTUP_MS", "1000").start();
    let pids = p.worker_pids();
    let control = p.control.clone();
    let reload = std::thread::spawn(move || {
        std::process::Command::new(HOTSWAP).args(["reload", "--control"]).arg(&control).output().unwrap()
    });
    wait_until(Duration::from_secs(5), "the reload to start", || p.status()["reloading"] == true);
    let out = p.ctl(&["stop"]);
    assert!(out.status.success());
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
    let r = reload.join().unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("cancelled: the primary is stopping"));
    for pid in pids {
        assert!(process_gone(pid), "worker {pid} outlived the stop");
    }
}

#[test]
fn many_reloads_leak_no_fds_threads_memory_or_zombies() {
    // The short version; `contrib/bench/soak.sh` runs 1000.
    let p = Primary::builder(rust_worker()).workers(1).start();
    for _ in 0..10 {
        p.reload();
    }
    let counts = |pid| {
        let (fds, threads, _) = footprint(pid);
        (fds, threads)
    };
    let (fds, threads) = settled("open fds and threads", || counts(p.pid()));
    let (_, _, rss) = footprint(p.pid());
    for _ in 0..50 {
        p.reload();
    }
    // The last reload's client connection may still be open for a moment.
    // A thread of tokio's blocking pool (status reads /proc there) ends
    // after 10 s idle, which a loaded machine's 50 reloads can outlast:
    // fewer threads is no leak.
    poll_until(Duration::from_secs(10), || {
        let (f, t) = counts(p.pid());
        f == fds && t <= threads
    });
    let (fds2, threads2, rss2) = footprint(p.pid());
    assert_eq!(fds2, fds, "open fds");
    assert!(threads2 <= threads, "threads grew from {threads} to {threads2}");
    assert!(rss2 <= rss + 512, "RSS grew from {rss} KiB to {rss2} KiB over 50 reloads");
    assert!(zombies_of(p.pid()).is_empty(), "zombies: {:?}", zombies_of(p.pid()));
    assert_eq!(p.status()["generation"], 61);
}

#[test]
fn an_abusive_ipc_channel_is_closed_and_a_flood_stays_bounded() {
    let out = TempDir::new("abuse");
    // Ready first, then 150 bad lines: the channel is closed after 100.
    let send = json!(["{\"type\":\"listening\"}\n", "REPEAT:150:{nope\n"]);
    let p = Primary::builder(probe())
        .workers(1)
        .probe_dir(&out)
        .env("PROBE_SEND", send.to_string())
        .env("PROBE_READY", "none")
        .start();
    wait_until(Duration::from_secs(5), "the abusive channel to be closed", || {
        p.log_text().contains("closing the channel after 100 refused messages")
    });
    wait_until(Duration::from_secs(5), "the worker to see its channel closed", || {
        probe_inbox(&out, 1).contains(&json!({"eof": true}))
    });
    // (The worker then exits on its EOF, and its replacement starts over.)
    let log = p.log_text();
    let refused = log.lines().filter(|l| l.contains("[w1 g1 ") && l.contains("IPC: refused a message")).count();
    // Rate-limited: a burst of 10, then 2 a second, the rest summed up. The
    // rate's share is counted over the time the primary took to read the
    // 150 lines (from its log: long on a loaded machine), not a fixed one.
    let times = log_times(&log, "IPC: refused a message");
    let span = times.last().zip(times.first()).map_or(0.0, |(l, f)| l - f);
    let most = 10 + (2.0 * span).ceil() as usize + 1;
    assert!(
        (10..=most).contains(&refused),
        "the burst of refusals is logged: {refused} in {span:.2} s (at most {most})"
    );
    assert!(
        log.lines().any(|l| l.contains("[w1 g1 ") && l.contains("more warnings like this suppressed")),
        "the rest are summed up:\n{log}"
    );
    assert!(status_latency(&p) < RESPONSIVE);

    // A flood of valid broadcasts to a worker that never reads: bounded.
    let out2 = TempDir::new("flood");
    let send = json!([
        "{\"type\":\"listening\"}\n",
        "REPEAT:50000:{\"type\":\"broadcast\",\"data\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n"
    ]);
    let p2 = Primary::builder(probe())
        .probe_dir(&out2)
        .env("PROBE_SEND", send.to_string())
        .env("PROBE_READY", "none")
        .start();
    // The bound on what is queued for a worker is reached...
    wait_until(Duration::from_secs(20), "the outgoing queue bound to drop a message", || {
        p2.log_text().contains("does not read its channel")
    });
    // ...and holds while the flood goes on (part of the scenario: 2 s of it).
    let mut peak = 0;
    let flooded = Instant::now();
    while flooded.elapsed() < Duration::from_secs(2) {
        peak = peak.max(footprint(p2.pid()).2);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(peak < 40 * 1024, "primary RSS {peak} KiB during a broadcast flood");
    assert!(status_latency(&p2) < RESPONSIVE);
}

#[test]
fn a_stale_control_socket_is_replaced_and_a_bad_listen_path_is_named() {
    let dir = TempDir::new("stale");
    let stale = dir.path("control.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    // Ready means it answers status on that socket.
    let p = Primary::builder(rust_worker()).workers(1).control(&stale).start();
    assert_eq!(p.status()["pid"], p.pid(), "the primary took over the stale control socket");
    drop(p);

    let out = std::process::Command::new(HOTSWAP)
        .args(["run", "-l", "unix:/nonexistent-dir/app.sock", "--control"])
        .arg(dir.path("c2.sock"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("binding unix:/nonexistent-dir/app.sock"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
