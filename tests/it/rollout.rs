//! A new release replaces the working one only once it has proven that it
//! serves: `--min-ready` (each new worker stays ready for a window before
//! its old worker is retired), canary reloads (`hotswap reload --canary`)
//! and `--health-check`. Each broken release is deployed under keep-alive
//! and new-connection load, which must see no failed request, and the old
//! generation must serve on untouched; the release is the Python example
//! worker told to misbehave (`EXAMPLE_HEALTH_STATUS`,
//! `EXAMPLE_EXIT_AFTER_READY_MS`) through the config file, which every
//! reload reads again.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// Writes the config: two Python workers, with `env` set for the release.
fn release(path: &Path, env: &[&str]) {
    let worker = root().join("contrib/workers/python/worker.py").display().to_string();
    let mut cmd: Vec<String> = vec!["env".into()];
    cmd.extend(env.iter().map(|e| e.to_string()));
    cmd.extend(["python3".into(), worker]);
    let quoted: Vec<String> = cmd.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        path,
        format!(
            "listen = [\"127.0.0.1:0\"]\nworkers = 2\nready-timeout = \"20s\"\ncommand = [{}]\n",
            quoted.join(", ")
        ),
    )
    .unwrap();
}

/// A primary running the good release from a config file, with `args`.
fn primary(dir: &TempDir, args: &[&str]) -> Primary {
    let cfg = dir.path("hotswap.toml");
    release(&cfg, &[]);
    let mut b = Primary::bare(vec![]).config(&cfg).workers(2);
    for a in args {
        b = b.arg(*a);
    }
    if args.contains(&"--min-ready") {
        b = b.min_ready(None);
    }
    b.start()
}

/// `hotswap reload ARGS`: (success, stdout, stderr).
fn reload(p: &Primary, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["reload"];
    all.extend_from_slice(args);
    let out = p.ctl(&all);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The pids of the ready workers.
fn ready_pids(p: &Primary) -> Vec<i32> {
    Primary::ready_workers(&p.status()).iter().map(|w| w["pid"].as_i64().unwrap() as i32).collect()
}

/// The events about these workers named `kind`.
fn about<'a>(events: &'a [Value], workers: &[u64], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind && e["worker"].as_u64().is_some_and(|w| workers.contains(&w))).collect()
}

/// The release that drains and exits 1 a second after it is ready fails
/// the reload within `--min-ready 2s` with no old worker retired; the same
/// with `--canary 3s`, the old generation untouched; a good release then
/// passes a canary.
#[test]
fn a_release_that_exits_soon_after_it_is_ready_fails_the_reload_and_retires_no_old_worker() {
    let dir = TempDir::new("minready");
    let p = primary(&dir, &["--min-ready", "2s"]);
    let old = p.worker_ids();
    let old_pids = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 2);
    load.wait_for_requests(100);
    let events = EventStream::start(&p);
    release(&dir.path("hotswap.toml"), &["EXAMPLE_EXIT_AFTER_READY_MS=1000"]);
    let (ok, out, err) = reload(&p, &[]);
    assert!(!ok, "the reload fails: {out}{err}");
    assert!(err.contains("exited with code 1") && err.contains("after it was ready (within --min-ready 2s)"), "{err}");
    assert!(err.contains("failed after replacing 0 workers"), "{err}");
    let seen = events.until("reload-failed", Duration::from_secs(30));
    assert!(about(&seen, &old, "disconnect").is_empty(), "no old worker was told to go: {seen:?}");
    assert_eq!(p.worker_pids(), old_pids, "the old workers serve on");

    // A canary of the same release: one new worker beside both old ones.
    let (ok, out, err) = reload(&p, &["--canary", "3s"]);
    assert!(!ok, "the canary fails: {out}{err}");
    assert!(out.contains("canary w") && out.contains("serves beside 2 old workers"), "progress: {out}");
    assert!(err.contains("canary [w") && err.contains("within --canary 3s"), "{err}");
    let seen = events.until("reload-failed", Duration::from_secs(30));
    let kinds: Vec<&str> =
        seen.iter().filter_map(|e| e["event"].as_str()).filter(|k| k.starts_with("canary")).collect();
    assert_eq!(kinds, ["canary-started", "canary-ready", "canary-failed"], "{seen:?}");
    assert!(about(&seen, &old, "disconnect").is_empty(), "no old worker was told to go: {seen:?}");
    let forked = seen.iter().filter(|e| e["event"] == "fork").count();
    assert_eq!(forked, 1, "one canary, nothing else started: {seen:?}");
    assert_eq!(p.worker_pids(), old_pids, "the old generation exactly as it was");

    // The fixed release passes its canary and replaces both.
    release(&dir.path("hotswap.toml"), &[]);
    let (ok, out, err) = reload(&p, &["--canary", "1s"]);
    assert!(ok, "{out}{err}\n{}", p.log_text());
    assert!(out.contains("passed 1s; 2 workers replaced"), "{out}");
    let seen = events.until("reload-finished", Duration::from_secs(30));
    assert!(seen.iter().any(|e| e["event"] == "canary-passed"), "{seen:?}");
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load across broken and good releases");
    assert!(p.worker_ids().iter().all(|w| !old.contains(w)));
}

/// `--health-check /healthz`: a release answering 503 fails the reload
/// with that answer, the old generation serving on; a healthy one passes.
#[test]
fn a_release_whose_health_check_fails_is_not_taken_for_ready() {
    let dir = TempDir::new("health");
    let p = primary(&dir, &["--health-check", "/healthz", "--health-timeout", "2s"]);
    let old_pids = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 2);
    load.wait_for_requests(100);
    release(&dir.path("hotswap.toml"), &["EXAMPLE_HEALTH_STATUS=503"]);
    let (ok, out, err) = reload(&p, &[]);
    assert!(!ok, "{out}{err}");
    assert!(err.contains("GET /healthz answered 503") && err.contains(" from w"), "{err}");
    assert_eq!(ready_pids(&p), old_pids, "the old workers serve on");
    assert!(p.log_text().contains("GET /healthz answered 503"), "the reason is logged too");
    release(&dir.path("hotswap.toml"), &[]);
    let (ok, out, err) = reload(&p, &["--canary", "1s"]);
    assert!(ok, "{out}{err}\n{}", p.log_text());
    assert!(p.log_text().contains("GET /healthz answered 200"), "{}", p.log_text());
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load across a failed health check");
}
