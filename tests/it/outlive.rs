//! Processes that could outlive their worker or the primary: daemons of
//! workers (adopted by the primary as subreaper), the `--build` command's
//! children, and the guardian itself, killed or stopped.

use std::time::Duration;

use crate::common::*;

fn daemonizing(dir: &TempDir) -> PrimaryBuilder {
    Primary::builder(vec!["python3".into(), fixture("daemonize.py")])
        .env("DAEMON_DIR", dir.0.display().to_string())
        .arg("--shutdown-timeout")
        .arg("5s")
}

/// The daemon that worker `worker_pid` started, once it wrote its pid.
fn daemon_of(dir: &TempDir, worker_pid: i32) -> Option<i32> {
    std::fs::read_to_string(dir.path(&format!("daemon.{worker_pid}"))).ok()?.trim().parse().ok()
}

/// Every daemon started so far, oldest first.
fn all_daemons(dir: &TempDir) -> Vec<i32> {
    let mut found: Vec<(std::time::SystemTime, i32)> = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("daemon."))
        .filter_map(|e| {
            let pid = std::fs::read_to_string(e.path()).ok()?.trim().parse().ok()?;
            Some((e.metadata().ok()?.modified().ok()?, pid))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, pid)| pid).collect()
}

/// The current workers' daemons, once each is adopted by the primary (so
/// registered with the guardian).
fn adopted_daemons(p: &Primary, dir: &TempDir, n: usize) -> Vec<i32> {
    let mut daemons = Vec::new();
    wait_until(Duration::from_secs(10), format_args!("{n} daemons adopted"), || {
        let s = p.status();
        let pids: Vec<i32> =
            s["workers"].as_array().unwrap().iter().map(|w| w["pid"].as_i64().unwrap() as i32).collect();
        let adopted: Vec<i64> = s["adopted"].as_array().unwrap().iter().map(|a| a["pid"].as_i64().unwrap()).collect();
        daemons = pids.iter().filter_map(|w| daemon_of(dir, *w)).collect();
        daemons.len() == n && daemons.iter().all(|d| adopted.contains(&(*d as i64)))
    });
    daemons
}

#[track_caller]
fn assert_all_gone(pids: &[i32], what: &str) {
    for pid in pids {
        wait_until(Duration::from_secs(10), format_args!("daemon {pid} to go ({what})"), || process_gone(*pid));
    }
}

/// Children of `pid` that are zombies (exited, not reaped).
fn zombie_children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/stat"))
                .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        })
        .collect()
}

#[track_caller]
fn assert_port_free(addr: &str) {
    wait_until(Duration::from_secs(5), format_args!("{addr} to be free for a new primary"), || {
        std::net::TcpListener::bind(addr).is_ok()
    });
}

#[test]
fn a_daemonizing_workers_daemons_go_with_reloads_an_upgrade_and_stop() {
    let dir = TempDir::new("daemons");
    let mut p = daemonizing(&dir).start();
    let addr = p.addr();
    let first = adopted_daemons(&p, &dir, 2);
    let load = Load::start(Target::Tcp(addr.clone()), 0, 3);
    load.wait_for_requests(100);
    p.reload();
    assert_all_gone(&first, "their workers were replaced by a reload");
    let second = adopted_daemons(&p, &dir, 2);
    load.wait_for_requests(100);
    // What the primary adopted survives a self-upgrade.
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(p.status()["adopted"].as_array().unwrap().len(), 2, "{}", p.status());
    p.reload();
    assert_all_gone(&second, "replaced after the upgrade");
    let third = adopted_daemons(&p, &dir, 2);
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load on daemons across reloads and an upgrade");
    // Every daemon that ended was reaped: no zombies left with the primary.
    wait_until(Duration::from_secs(5), "no zombie children of the primary", || zombie_children(p.pid()).is_empty());
    let out = p.ctl(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    assert_all_gone(&third, "the primary stopped");
    assert_all_gone(&all_daemons(&dir), "the primary stopped");
    assert_port_free(&addr);
}

#[test]
fn a_crash_loop_of_a_daemonizing_worker_leaves_no_daemons() {
    let dir = TempDir::new("daemon-crash");
    let mut p = daemonizing(&dir).workers(1).env("CRASH_AFTER", "0.3").no_wait().start();
    wait_until(Duration::from_secs(20), "the primary to answer", || p.try_status().is_some());
    let addr = p.addr();
    wait_until(Duration::from_secs(60), "four crashes", || all_daemons(&dir).len() >= 4);
    // Every daemon but the newest one's belongs to a worker that is gone.
    let mut daemons = all_daemons(&dir);
    let _newest = daemons.pop();
    assert_all_gone(&daemons, "their workers crashed");
    let out = p.ctl(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    assert_all_gone(&all_daemons(&dir), "the primary stopped");
    assert_port_free(&addr);
    assert!(p.log_text().contains("adopted process"), "{}", p.log_text());
}

#[test]
fn sigkill_of_the_primary_takes_the_workers_daemons_along() {
    let dir = TempDir::new("daemon-kill");
    let mut p = daemonizing(&dir).start();
    let addr = p.addr();
    let daemons = adopted_daemons(&p, &dir, 2);
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5)).expect("the primary ends on SIGKILL");
    assert_all_gone(&daemons, "the primary was SIGKILLed");
    assert_port_free(&addr);
}

/// The guardian process of a primary.
pub(crate) fn guardian_of(primary: i32) -> Option<i32> {
    let children = std::fs::read_to_string(format!("/proc/{primary}/task/{primary}/children")).ok()?;
    children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()).find(|c| {
        std::fs::read(format!("/proc/{c}/cmdline"))
            .is_ok_and(|cmd| cmd.split(|b| *b == 0).nth(1) == Some(b"guardian".as_slice()))
            && !process_gone(*c)
    })
}

/// A worker with a child of its own (a `sleep` in the worker's group, which
/// only the guardian ends if the primary is SIGKILLed); the children's pids.
fn worker_with_children(dir: &TempDir) -> Vec<String> {
    let start = dir.path("start.sh");
    script(&start, &format!("sleep 600 & echo $! > {}/child.$$; exec {}", dir.0.display(), rust_worker()[0]));
    vec![start.display().to_string()]
}

fn children_of_workers(p: &Primary, dir: &TempDir) -> Vec<i32> {
    p.worker_pids()
        .iter()
        .map(|w| std::fs::read_to_string(dir.path(&format!("child.{w}"))).unwrap().trim().parse().unwrap())
        .collect()
}

#[test]
fn a_killed_guardian_is_replaced_and_still_ends_the_workers_trees() {
    let dir = TempDir::new("guardian-kill");
    let mut p = Primary::builder(worker_with_children(&dir)).start();
    let old = guardian_of(p.pid()).expect("a guardian");
    unsafe { libc::kill(old, libc::SIGKILL) };
    let mut new = None;
    wait_until(Duration::from_secs(5), "a new guardian, logged", || {
        new = guardian_of(p.pid()).filter(|g| *g != old);
        new.is_some() && p.log_text().contains("started a new guardian process")
    });
    let children = children_of_workers(&p, &dir);
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5)).expect("the primary ends on SIGKILL");
    for c in children {
        wait_until(Duration::from_secs(5), format_args!("the workers' child {c} to go"), || process_gone(c));
    }
}

#[test]
fn a_stopped_guardian_never_blocks_the_primary_and_is_replaced() {
    let dir = TempDir::new("guardian-stop");
    let mut p = Primary::builder(worker_with_children(&dir)).workers(1).start();
    let old = guardian_of(p.pid()).expect("a guardian");
    unsafe { libc::kill(old, libc::SIGSTOP) };
    for _ in 0..200 {
        let out = p.ctl(&["reload"]);
        assert!(out.status.success(), "{out:?}");
    }
    assert!(p.try_status().is_some(), "the primary answers after 200 reloads");
    wait_until(Duration::from_secs(5), "the stopped guardian to be replaced", || {
        p.log_text().contains(&format!("the guardian process {old} is stopped; replacing it"))
    });
    let children = children_of_workers(&p, &dir);
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5)).expect("the primary ends on SIGKILL");
    for c in &children {
        wait_until(Duration::from_secs(5), format_args!("the worker's child {c} to go"), || process_gone(*c));
    }
    // (Without the fix the old guardian is still there, stopped.)
    unsafe { libc::kill(old, libc::SIGKILL) };
}

#[test]
fn sigkill_of_the_primary_ends_a_running_build_and_its_children() {
    let dir = TempDir::new("build-kill");
    let pidfile = dir.path("build-child.pid");
    // The first build (before the workers start) does nothing; the reload's
    // starts a child and waits for it.
    let build = format!(
        "if [ -f {go} ]; then sleep 600 & echo $! > {pid}; wait; fi",
        go = dir.path("go").display(),
        pid = pidfile.display()
    );
    let mut p = Primary::builder(rust_worker()).arg("--build").arg(build).start();
    std::fs::write(dir.path("go"), "").unwrap();
    let mut client = std::process::Command::new(HOTSWAP)
        .args(["reload", "--control"])
        .arg(&p.control)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = 0;
    wait_until(Duration::from_secs(10), "the build's child", || {
        child = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        child > 0
    });
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5)).expect("the primary ends on SIGKILL");
    wait_until(Duration::from_secs(5), format_args!("the build's child {child} to go"), || process_gone(child));
    let _ = client.wait();
}

/// A stop that had to kill adopted processes (daemons that ignore the stop
/// signal) says how many, with the workers, and `hotswap stop` fails, as it
/// does for a worker that had to be killed.
#[test]
fn a_stop_counts_the_adopted_processes_it_had_to_kill() {
    let dir = TempDir::new("daemon-stubborn");
    let start = dir.path("start.sh");
    // Each worker leaves a daemon (its own session, its parent gone) that
    // ignores SIGTERM, then becomes the HTTP worker.
    script(
        &start,
        &format!(
            "( setsid sh -c 'trap \"\" TERM; echo $$ > {}/daemon.'$$'; exec sleep 600' & )\nexec {}",
            dir.0.display(),
            rust_worker()[0]
        ),
    );
    let mut p = Primary::builder(vec![start.display().to_string()]).arg("--shutdown-timeout").arg("1s").start();
    wait_until(Duration::from_secs(10), "2 daemons adopted", || p.status()["adopted"].as_array().unwrap().len() == 2);
    let daemons = all_daemons(&dir);
    assert_eq!(daemons.len(), 2, "{daemons:?}");
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    let stop = std::time::Instant::now();
    let out = p.ctl(&["stop"]);
    let records = load.finish();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{err}\n{}", String::from_utf8_lossy(&out.stdout), p.log_text());
    assert!(
        err.contains("stopped, but 2 adopted processes (left by workers) had to be killed"),
        "{err}\n{}",
        p.log_text()
    );
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1), "a graceful stop, but not a clean one");
    assert!(p.log_text().contains("stopped, but 2 adopted processes"), "{}", p.log_text());
    assert_all_gone(&daemons, "killed at the stop's deadline");
    let before: Vec<_> = records.iter().filter(|r| r.sent < stop).cloned().collect();
    assert_no_failures(&before, "requests sent before the stop");
}
