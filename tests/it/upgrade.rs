//! Self-upgrade under load: the primary re-executes in place, keeping its
//! pid, sockets and workers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

/// Installs the hotswap binary at `path` the way a deploy does: a new file
/// renamed over the old one.
fn install(path: &Path) {
    copy_executable(Path::new(HOTSWAP), path);
}

/// A primary run from a copy of the binary, so the test can replace it.
fn primary_from_copy(dir: &TempDir) -> (Primary, PathBuf) {
    let bin = dir.path("hotswap");
    install(&bin);
    (Primary::builder(rust_worker()).binary(&bin).start(), bin)
}

#[test]
fn five_upgrades_under_load_keep_every_worker_and_connection() {
    let dir = TempDir::new("upgrade");
    let (p, bin) = primary_from_copy(&dir);
    let workers = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 4, 2);
    load.wait_for_requests(100);
    for i in 1..=5 {
        install(&bin); // a new file on disk each time
        let out = p.ctl(&["upgrade"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "upgrade {i}: {text}{}\n{}", String::from_utf8_lossy(&out.stderr), p.log_text());
        assert!(text.contains(&format!("pid {} and 2 workers kept", p.pid())), "{text}");
        let s = p.status();
        assert_eq!(s["upgrades"], i);
        assert_eq!(s["pid"], p.pid());
        assert_eq!(p.worker_pids(), workers, "the workers were not restarted");
        load.wait_for_requests(100);
    }
    // The adopted workers still reload and serve.
    p.reload();
    assert_eq!(p.status()["generation"], 2);
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across five self-upgrades and a reload");
    let s = p.status();
    assert!(s["started_at"].as_u64().unwrap() <= s["image_started_at"].as_u64().unwrap());
    assert!(String::from_utf8_lossy(&p.ctl(&["status"]).stdout).contains("upgraded 5 times"));
}

#[test]
fn sigusr2_upgrades_too() {
    let p = Primary::builder(rust_worker()).workers(1).start();
    let workers = p.worker_pids();
    p.signal(libc::SIGUSR2);
    wait_until(Duration::from_secs(10), "the SIGUSR2 upgrade", || p.try_status().is_some_and(|s| s["upgrades"] == 1));
    assert_eq!(p.worker_pids(), workers);
    assert_eq!(p.status()["pid"], p.pid());
}

#[test]
fn a_broken_new_binary_fails_the_upgrade_and_changes_nothing() {
    let dir = TempDir::new("upgrade");
    let (p, bin) = primary_from_copy(&dir);
    let workers = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);

    // A binary that exits at once.
    std::fs::remove_file(&bin).unwrap();
    script(&bin, "echo 'this is not hotswap' >&2; exit 1");
    let out = p.ctl(&["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed the check") && err.contains("this is not hotswap") && err.contains("still running"),
        "{err}"
    );

    // One that cannot be executed at all.
    install(&bin);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = p.ctl(&["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot run") && err.contains("ermission denied"), "{err}");

    // A missing one.
    std::fs::remove_file(&bin).unwrap();
    let out = p.ctl(&["upgrade"]);
    assert_eq!(out.status.code(), Some(1));

    let s = p.status();
    assert_eq!(s["upgrades"], 0);
    assert_eq!(p.worker_pids(), workers);
    p.reload();
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across failed upgrades");
}

#[test]
fn upgrades_leak_no_fds() {
    let p = Primary::builder(rust_worker()).workers(2).start();
    for _ in 0..5 {
        assert!(p.ctl(&["upgrade"]).status.success());
    }
    let before = settled("open fds", || fd_count(p.pid()));
    for _ in 0..45 {
        let out = p.ctl(&["upgrade"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The last upgrade's client connection may still be open for a moment.
    poll_until(Duration::from_secs(10), || fd_count(p.pid()) == before);
    assert_eq!(fd_count(p.pid()), before, "open fds after 50 upgrades");
    assert_eq!(p.status()["upgrades"], 50);
}

#[test]
fn an_upgrade_during_a_reload_is_refused() {
    let p = Primary::builder(rust_worker()).workers(1).env("EXAMPLE_STARTUP_MS", "800").start();
    let control = p.control.clone();
    let reload = std::thread::spawn(move || {
        std::process::Command::new(HOTSWAP).args(["reload", "--control"]).arg(&control).output().unwrap()
    });
    wait_until(Duration::from_secs(5), "the reload to start", || p.status()["reloading"] == true);
    let out = p.ctl(&["upgrade"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a reload is running"));
    assert!(reload.join().unwrap().status.success());
    assert!(p.ctl(&["upgrade"]).status.success());
}

#[test]
fn a_new_image_that_cannot_take_over_hands_back_to_the_old_one() {
    // The testing aid makes every new image refuse the handover; the old
    // executable then takes everything back and answers the client.
    let p = Primary::builder(rust_worker()).env("HOTSWAP_TEST_FAIL_TAKEOVER", "1").start();
    let workers = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(100);
    let out = p.ctl(&["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", p.log_text());
    assert!(err.contains("HOTSWAP_TEST_FAIL_TAKEOVER is set") && err.contains("still running hotswap"), "{err}");
    let s = p.status();
    assert_eq!(s["upgrades"], 0, "a rollback is no upgrade");
    assert_eq!(s["pid"], p.pid());
    assert_eq!(p.worker_pids(), workers);
    assert!(p.log_text().contains("upgrade failed and was rolled back"));
    p.reload();
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a rolled-back upgrade");
}

#[test]
fn an_events_stream_goes_on_across_upgrades() {
    let p = Primary::builder(rust_worker()).workers(1).start();
    let mut events = EventStream::start(&p);
    for _ in 0..2 {
        assert!(p.ctl(&["upgrade"]).status.success());
    }
    p.reload();
    let seen = events.until("reload-finished", Duration::from_secs(3));
    assert!(seen.iter().any(|e| e["event"] == "reload-finished"), "events after two upgrades: {seen:?}");
    assert!(events.connected(), "the events client is still connected");
}
