//! `--surge`: reloads that start several new workers at once, under real
//! keep-alive and new-connection load. The pool's size during a reload is
//! counted from `hotswap events`, which the primary emits in the order it
//! acts: every worker it forks, every one that got ready, told to stop or
//! exited, so no moment is missed between two samples.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// How many workers a reload ran at most, and how few were ready at the
/// least, replayed from its events; `before` are the workers (all ready)
/// when the events began.
struct Replay {
    most_running: usize,
    fewest_ready: usize,
    /// Workers forked during the reload.
    forked: Vec<(u64, i32)>,
}

fn replay(before: &[u64], events: &[Value]) -> Replay {
    let mut running: BTreeSet<u64> = before.iter().copied().collect();
    let mut ready = running.clone();
    let mut r = Replay { most_running: running.len(), fewest_ready: ready.len(), forked: Vec::new() };
    for e in events {
        let Some(w) = e["worker"].as_u64() else { continue };
        match e["event"].as_str().unwrap() {
            "fork" => {
                running.insert(w);
                r.forked.push((w, e["pid"].as_i64().unwrap() as i32));
            }
            "listening" => {
                ready.insert(w);
            }
            // Told to stop: it serves no new connection from now on.
            "disconnect" => {
                ready.remove(&w);
            }
            "exit" => {
                running.remove(&w);
                ready.remove(&w);
            }
            _ => {}
        }
        r.most_running = r.most_running.max(running.len());
        r.fewest_ready = r.fewest_ready.min(ready.len());
    }
    r
}

/// A reload of `n` workers with `surge` (the `--surge` flag of `run`, or of
/// `reload` with `per_reload`) under load: zero failed requests, never
/// fewer than `n` ready, and exactly `n + width` workers at the peak (so
/// `width` did start at once, and no more).
fn reload_with_surge(n: u32, surge: &str, width: usize, per_reload: bool) {
    let mut b = Primary::builder(rust_worker()).workers(n).env("EXAMPLE_STARTUP_MS", "300");
    if !per_reload {
        b = b.arg("--surge").arg(surge);
    }
    let p = b.start();
    let load = Load::start(Target::Tcp(p.addr()), 3, 2);
    load.wait_for_requests(100);
    let before = p.worker_ids();
    let events = EventStream::start(&p);
    let out = if per_reload {
        let out = p.ctl(&["reload", "--surge", surge]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        p.reload()
    };
    let pace = if width == 1 { "one at a time".to_string() } else { format!("up to {width} at a time") };
    assert!(out.contains(&pace), "the reload says how many at once: {out}");
    assert!(out.contains(&format!("generation 2 serves ({n} workers replaced)")), "{out}");
    let seen = events.until("reload-finished", Duration::from_secs(30));
    assert_eq!(seen.last().map(|e| e["event"].clone()), Some("reload-finished".into()), "{seen:?}");
    let r = replay(&before, &seen);
    assert_eq!(r.forked.len(), n as usize, "one new worker per old one: {seen:?}");
    assert!(r.fewest_ready >= n as usize, "only {} workers ready at one point (N = {n}): {seen:?}", r.fewest_ready);
    assert_eq!(r.most_running, n as usize + width, "workers running at the peak, N = {n}, surge {surge}: {seen:?}");
    load.wait_for_requests(100);
    let s = p.status();
    assert_eq!(s["generation"], 2);
    assert!(s["workers"].as_array().unwrap().iter().all(|w| w["generation"] == 2), "{s}");
    assert_no_failures(&load.finish(), &format!("load across a reload with surge {surge}"));
}

#[test]
fn surge_1_replaces_one_worker_at_a_time_under_load() {
    reload_with_surge(4, "1", 1, false);
}

#[test]
fn surge_2_starts_two_new_workers_at_once_under_load() {
    reload_with_surge(4, "2", 2, false);
}

#[test]
fn surge_n_starts_every_new_worker_at_once_under_load() {
    reload_with_surge(4, "100%", 4, false);
}

#[test]
fn reload_surge_overrides_the_primarys_for_one_reload() {
    // The primary replaces one at a time; this reload all three at once.
    reload_with_surge(3, "3", 3, true);
}

#[test]
fn the_override_lasts_one_reload() {
    let p = Primary::builder(rust_worker()).workers(2).start();
    let out = p.ctl(&["reload", "--surge", "2"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to 2 at a time (surge 2)"));
    let out = p.reload();
    assert!(out.contains("one at a time (surge 1)"), "the next reload is back to --surge: {out}");
}

#[test]
fn surge_0_is_a_usage_error() {
    let out = std::process::Command::new(HOTSWAP)
        .args(["run", "-l", "127.0.0.1:0", "--surge", "0", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--surge") && err.contains("at least 1"), "{err}");
    let out = std::process::Command::new(HOTSWAP).args(["reload", "--surge", "150%"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("more than 100%"), "{err}");
}

#[test]
fn a_new_worker_that_fails_with_surge_n_leaves_the_old_generation_whole() {
    let dir = TempDir::new("surge-fail");
    let start = dir.path("start.sh");
    let worker = rust_worker()[0].clone();
    script(&start, &format!("exec {worker}"));
    let p = Primary::builder(vec![start.display().to_string()]).workers(4).arg("--surge").arg("4").start();
    let old = p.worker_pids();
    let before = p.worker_ids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 2);
    load.wait_for_requests(100);
    let events = EventStream::start(&p);

    // The deploy is broken in slot 2; the other three take their time.
    script(
        &start,
        &format!(
            "if [ \"$HOTSWAP_WORKER_SLOT\" = 2 ]; then echo 'slot 2: bad config' >&2; exit 3; fi\n\
             EXAMPLE_STARTUP_MS=2000 exec {worker}"
        ),
    );
    let out = p.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exited with code 3 before it was ready"), "{err}");
    assert!(err.contains("failed after replacing 0 workers"), "{err}");
    assert!(err.contains("3 new workers still starting were stopped"), "{err}");
    let seen = events.until("reload-failed", Duration::from_secs(30));
    let r = replay(&before, &seen);
    assert_eq!(r.forked.len(), 4, "all four started at once: {seen:?}");
    assert!(r.fewest_ready >= 4, "{seen:?}");
    for (w, pid) in &r.forked {
        wait_until(Duration::from_secs(5), format_args!("new worker w{w} (pid {pid}) to be gone"), || {
            process_gone(*pid)
        });
    }
    let s = p.status();
    assert_eq!(s["generation"], 1);
    assert_eq!(s["last_reload"]["ok"], false, "{s}");
    assert_eq!(p.worker_pids(), old, "the old generation is whole");

    // Fixed, the next reload with surge N replaces all four.
    script(&start, &format!("exec {worker}"));
    let out = p.reload();
    assert!(out.contains("4 workers replaced"), "{out}");
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a failed and a fixed reload with surge 4");
}

#[test]
fn surge_n_reloads_in_about_one_start_up_time() {
    // Timing: the machine to this test alone.
    let _alone = exclusive();
    const STARTUP_MS: u64 = 500;
    let p = Primary::builder(rust_worker()).workers(4).env("EXAMPLE_STARTUP_MS", STARTUP_MS.to_string()).start();
    let took = |surge: &str| {
        let out = p.ctl(&["reload", "--surge", surge]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        p.status()["last_reload"]["duration_ms"].as_u64().unwrap()
    };
    let one = took("1");
    let all = took("4");
    assert!(one >= 4 * STARTUP_MS, "surge 1 starts the four one after another: {one} ms");
    // At once: less than half of what surge 1 took (both measured by the
    // primary, one after the other: a busy machine slows both).
    assert!(2 * all < one, "surge 4 starts them at once: {all} ms (surge 1: {one} ms)");
}
