//! Development mode: saved files become zero-downtime reloads, builds gate
//! them, and ignored paths and build outputs never trigger.

use std::time::{Duration, Instant};

use crate::common::*;

/// A project directory with a source file and a `.gitignore`.
fn project() -> TempDir {
    let dir = TempDir::new("watch");
    std::fs::create_dir_all(dir.path("app/src")).unwrap();
    std::fs::write(dir.path("app/src/main.txt"), "v1").unwrap();
    std::fs::write(dir.path("app/.gitignore"), "*.log\n").unwrap();
    dir
}

fn watching(dir: &TempDir, extra: &[&str]) -> Primary {
    let mut b = Primary::builder(rust_worker())
        .arg("--watch")
        .arg(dir.path("app").display().to_string())
        .arg("--watch-debounce")
        .arg("100ms");
    for a in extra {
        b = b.arg(*a);
    }
    b.start()
}

fn generation(p: &Primary) -> u64 {
    p.status()["generation"].as_u64().unwrap()
}

fn wait_generation(p: &Primary, g: u64, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let s = p.status();
        s["generation"] == g && !s["reloading"].as_bool().unwrap()
    })
}

fn settle() {
    std::thread::sleep(Duration::from_millis(800));
}

#[test]
fn saving_a_file_reloads_without_a_failed_request() {
    let dir = project();
    let p = watching(&dir, &[]);
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    std::thread::sleep(Duration::from_millis(200));
    for g in 2..=4 {
        let t = Instant::now();
        std::fs::write(dir.path("app/src/main.txt"), format!("v{g}")).unwrap();
        assert!(wait_generation(&p, g, Duration::from_secs(10)), "no reload to generation {g}\n{}", p.log_text());
        eprintln!("write -> generation {g} serving: {} ms", t.elapsed().as_millis());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_no_failures(&load.finish(), "load across watch-triggered reloads");
    assert!(p.log_text().contains("changed: "), "the changed file is named");
}

#[test]
fn a_burst_of_fifty_writes_gives_one_reload() {
    let dir = project();
    let p = watching(&dir, &[]);
    for i in 0..50 {
        std::fs::write(dir.path(&format!("app/src/f{}.txt", i % 7)), format!("{i}")).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(wait_generation(&p, 2, Duration::from_secs(10)));
    settle();
    assert_eq!(generation(&p), 2, "exactly one reload");
    assert!(!p.log_text().contains("reload to generation 3"));
}

#[test]
fn ignored_paths_never_reload() {
    let dir = project();
    let p = watching(&dir, &["--watch-ignore", "*.tmp"]);
    for rel in [
        "app/server.log",
        "app/.git/index",
        "app/node_modules/x.js",
        "app/target/out",
        "app/src/.main.txt.swp",
        "app/src/main.txt~",
        "app/x.tmp",
    ] {
        let path = dir.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "x").unwrap();
    }
    settle();
    assert_eq!(generation(&p), 1, "{}", p.log_text());
    assert!(!p.log_text().contains("reload to generation 2"));
}

#[test]
fn what_the_build_writes_does_not_trigger_a_loop() {
    let dir = project();
    // The build writes into the watched tree, next to the sources.
    let out = dir.path("app/out");
    let build = format!("mkdir -p {0} && date +%s%N > {0}/stamp && echo built", out.display());
    let p = watching(&dir, &["--build", &build]);
    std::fs::write(dir.path("app/src/main.txt"), "v2").unwrap();
    assert!(wait_generation(&p, 2, Duration::from_secs(10)), "{}", p.log_text());
    settle();
    settle();
    assert_eq!(generation(&p), 2, "the build's output triggered another reload:\n{}", p.log_text());
    let log = p.log_text();
    assert!(log.contains("[build] built"), "build output is shown, prefixed: {log}");
    assert!(log.contains("build finished in"), "{log}");
}

#[test]
fn a_failing_build_keeps_the_old_generation_serving() {
    let dir = project();
    // The build runs in hotswap's working directory: name the file in full.
    let build = format!("test -f {}/app/src/fixed || {{ echo 'error: syntax' >&2; exit 1; }}", dir.0.display());
    let p = watching(&dir, &["--build", &build]);
    let old = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(dir.path("app/src/main.txt"), "broken").unwrap();
    assert!(wait_until(Duration::from_secs(10), || p.status()["last_reload"]["ok"] == false));
    let s = p.status();
    let msg = s["last_reload"]["message"].as_str().unwrap();
    assert!(
        msg.contains("build") && msg.contains("exited with code 1") && msg.contains("no worker was touched"),
        "{msg}"
    );
    assert_eq!(p.worker_pids(), old);
    assert!(p.log_text().contains("[build] error: syntax"));

    // Fixing the code reloads. (A person's next save comes later than the
    // watcher's 100 ms window in which changes still count as the build's.)
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.path("app/src/fixed"), "yes").unwrap();
    assert!(wait_until(Duration::from_secs(10), || p.status()["last_reload"]["ok"] == true), "{}", p.log_text());
    std::thread::sleep(Duration::from_millis(200));
    assert_no_failures(&load.finish(), "load across a failed and a fixed build");
}

#[test]
fn a_save_during_the_build_builds_again_then_reloads_once() {
    let dir = project();
    let p = watching(&dir, &["--build", "sleep 0.6"]);
    std::fs::write(dir.path("app/src/main.txt"), "v2").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    std::fs::write(dir.path("app/src/main.txt"), "v3").unwrap();
    assert!(wait_generation(&p, 2, Duration::from_secs(10)), "{}", p.log_text());
    settle();
    assert_eq!(generation(&p), 2, "{}", p.log_text());
    assert!(p.log_text().contains("files changed meanwhile, building again"), "{}", p.log_text());
}

#[test]
fn reload_runs_the_build_unless_told_not_to() {
    let p = Primary::builder(rust_worker()).arg("--build").arg("echo building-now").start();
    p.reload();
    assert_eq!(p.log_text().matches("[build] building-now").count(), 1);
    let out = p.ctl(&["reload", "--no-build"]);
    assert!(out.status.success());
    assert_eq!(p.log_text().matches("[build] building-now").count(), 1);
    assert_eq!(generation(&p), 3);
}

#[test]
fn a_watched_directory_removed_and_recreated_is_watched_again() {
    let dir = project();
    let p = watching(&dir, &[]);
    std::fs::remove_dir_all(dir.path("app")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir_all(dir.path("app/src")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || p.log_text().contains("is back; watching it again")),
        "{}",
        p.log_text()
    );
    let g = generation(&p);
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(dir.path("app/src/main.txt"), "again").unwrap();
    assert!(wait_until(Duration::from_secs(10), || generation(&p) > g), "{}", p.log_text());
}

#[test]
fn watching_a_missing_path_is_a_clear_error() {
    let out = std::process::Command::new(HOTSWAP)
        .args(["run", "-l", "127.0.0.1:0", "--watch", "/nonexistent/hotswap", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--watch /nonexistent/hotswap: no such file or directory"));
}
