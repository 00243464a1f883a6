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

/// A package upgrade replaces the binary on disk; after `hotswap upgrade`
/// no process of the primary's runs the deleted old file, the guardian
/// included, and the guardian still protects the workers.
#[test]
fn after_an_upgrade_the_guardian_runs_the_new_binary() {
    let dir = TempDir::new("upgrade-guardian");
    let (mut p, bin) = primary_from_copy(&dir);
    let exe = |pid: i32| std::fs::read_link(format!("/proc/{pid}/exe")).unwrap().display().to_string();
    let old = crate::outlive::guardian_of(p.pid()).expect("a guardian");
    install(&bin);
    assert!(exe(old).ends_with("(deleted)"), "the old guardian runs the replaced file: {}", exe(old));
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{out:?}\n{}", p.log_text());
    let mut new = None;
    wait_until(Duration::from_secs(5), "a guardian other than the old one", || {
        new = crate::outlive::guardian_of(p.pid()).filter(|g| *g != old);
        new.is_some()
    });
    let new = new.unwrap();
    assert_eq!(exe(new), bin.display().to_string(), "the guardian runs the installed file");
    assert!(!exe(p.pid()).ends_with("(deleted)"), "{}", exe(p.pid()));
    wait_until(Duration::from_secs(5), "the old guardian to go", || process_gone(old));
    // It protects the workers: a SIGKILLed primary's workers go.
    let workers = p.worker_pids();
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5)).expect("the primary ends on SIGKILL");
    for w in workers {
        wait_until(Duration::from_secs(5), format_args!("worker {w} to go"), || process_gone(w));
    }
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
    let events = EventStream::start(&p);
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(100);
    let out = p.ctl(&["upgrade"]);
    let told = events.until("upgrade-failed", Duration::from_secs(5));
    assert!(
        told.iter().any(|e| e["event"] == "upgrade-failed" && e["message"].as_str().unwrap().contains("rolled back")),
        "{told:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", p.log_text());
    assert!(err.contains("HOTSWAP_TEST_FAIL_TAKEOVER is set") && err.contains("still running hotswap"), "{err}");
    let s = p.status();
    assert_eq!(s["upgrades"], 0, "a rollback is no upgrade");
    assert_eq!(s["pid"], p.pid());
    assert_eq!(p.worker_pids(), workers);
    wait_until(Duration::from_secs(5), "the rollback in the log", || {
        p.log_text().contains("upgrade failed and was rolled back")
    });
    assert_no_success_line(&p.log_text());
    p.reload();
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a rolled-back upgrade");
}

/// A rolled-back upgrade says nowhere that it upgraded.
fn assert_no_success_line(log: &str) {
    let claims: Vec<&str> = log.lines().filter(|l| l.contains("upgraded") || l.contains("upgrade done")).collect();
    assert!(claims.is_empty(), "a rolled-back upgrade logged success: {claims:#?}\n{log}");
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
    // Each upgrade is told, begun by the old image and finished by the new.
    let upgrades: Vec<&str> =
        seen.iter().map(|e| e["event"].as_str().unwrap()).filter(|e| e.starts_with("upgrade-")).collect();
    assert_eq!(upgrades, ["upgrade-started", "upgrade-finished", "upgrade-started", "upgrade-finished"], "{seen:?}");
}

#[test]
fn an_upgrade_during_a_ready_delay_keeps_the_delay() {
    // The worker is assumed ready 2 s after its start; an upgrade in
    // between must carry that over (and the 4 s ready deadline with the
    // time it has left), not leave it waiting until it is killed as never
    // ready.
    let mut p = Primary::builder(rust_worker())
        .workers(1)
        .arg("--ready")
        .arg("delay:2s")
        .arg("--ready-timeout")
        .arg("4s")
        .no_wait()
        .start();
    wait_until(Duration::from_secs(10), "the control socket", || p.try_status().is_some());
    let started = std::time::Instant::now();
    let events = EventStream::start(&p);
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stderr), p.log_text());
    let s = p.status();
    assert_eq!(s["workers"][0]["state"], "starting", "still within the delay: {s}");
    let pid = p.worker_pids()[0];
    wait_until(Duration::from_secs(5), "the delayed ready after the upgrade", || {
        p.try_status().is_some_and(|s| Primary::ready_workers(&s).len() == 1)
    });
    // Ready by the delay (assumed), not by anything later.
    let seen = events.until("listening", Duration::from_secs(5));
    let ready = seen.last().filter(|e| e["event"] == "listening").unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!((&ready["pid"], &ready["via"]), (&serde_json::json!(pid), &serde_json::json!("assumed")), "{seen:?}");
    // Past its 4 s ready deadline (from its start), it still serves.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    assert!(p.running(), "{}", p.log_text());
    assert_eq!(p.worker_pids(), vec![pid], "the healthy worker was killed:\n{}", p.log_text());
    let exits: Vec<_> = events.so_far().into_iter().filter(|e| e["event"] == "exit").collect();
    assert!(exits.is_empty(), "{exits:?}");
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load after the delayed ready");
}

#[test]
fn an_upgrade_during_a_crash_backoff_restarts_the_slot_when_it_is_due() {
    let dir = TempDir::new("backoff");
    // Slot 1 crashes at start while its flag file exists.
    let worker = dir.path("worker.sh");
    script(
        &worker,
        &format!("[ -e \"{}/crash-$HOTSWAP_WORKER_SLOT\" ] && exit 3\nexec {}", dir.0.display(), rust_worker()[0]),
    );
    let p = Primary::builder(vec![worker.display().to_string()]).start();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(50);
    std::fs::write(dir.path("crash-1"), "").unwrap();
    let slot1 = |s: &serde_json::Value| -> Option<i32> {
        s["workers"].as_array().unwrap().iter().find(|w| w["slot"] == 1).map(|w| w["pid"].as_i64().unwrap() as i32)
    };
    // Its worker exits (drained, so no request fails) and restarts crash.
    unsafe { libc::kill(slot1(&p.status()).unwrap(), libc::SIGTERM) };
    // Crash loop: 0, 100, 200, 400, 800, 1600 ms, ...
    let mut due = 0;
    wait_until(Duration::from_secs(20), "a backoff of a second or more", || {
        let s = p.status();
        due = s["backoff"].as_array().unwrap().iter().map(|b| b["restart_in_ms"].as_u64().unwrap()).max().unwrap_or(0);
        due >= 1000
    });
    std::fs::remove_file(dir.path("crash-1")).unwrap();
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stderr), p.log_text());
    let s = p.status();
    assert_eq!(s["upgrades"], 1);
    let backoff = s["backoff"].as_array().unwrap();
    assert!(
        backoff.iter().any(|b| b["slot"] == 1 && b["restart_in_ms"].as_u64().unwrap() > 0),
        "the backoff was carried over: {s}"
    );
    wait_until(Duration::from_millis(due + 5000), "slot 1 filled again after its backoff", || {
        p.try_status().is_some_and(|s| Primary::ready_workers(&s).len() == 2 && slot1(&s).is_some())
    });
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across an upgrade during a crash backoff");
}

/// A "new release" of hotswap in which `--backlog` is now `--backlog-size`
/// (an option the real binary does not know): a wrapper script that
/// renames it in the command line it runs with and, when `in_check`, in the
/// primary's command line that `upgrade-check` reads from the state.
fn renaming_release(bin: &Path, in_check: bool) {
    let real = HOTSWAP;
    let check = if in_check {
        // The state holds each argument as its bytes: `--backlog`, then `-size`.
        let (old, new) = ("45,45,98,97,99,107,108,111,103", "45,45,98,97,99,107,108,111,103,45,115,105,122,101");
        format!("{{ sed 's/\\[{old}\\]/[{new}]/' | {real} upgrade-check; exit $?; }}")
    } else {
        format!("exec {real} upgrade-check")
    };
    std::fs::remove_file(bin).unwrap();
    script(
        bin,
        &format!(
            "[ \"$1\" = upgrade-check ] && {check}\n\
             for a in \"$@\"; do shift; [ \"$a\" = --backlog ] && a=--backlog-size; set -- \"$@\" \"$a\"; done\n\
             exec {real} \"$@\""
        ),
    );
}

/// A primary on a TCP port and a Unix socket, with `--backlog` on its
/// command line, run from a copy of the binary.
fn primary_with_unix_socket(dir: &TempDir) -> (Primary, PathBuf, PathBuf) {
    let bin = dir.path("hotswap");
    install(&bin);
    let sock = dir.path("app.sock");
    let p = Primary::builder(rust_worker())
        .binary(&bin)
        .arg("-l")
        .arg(format!("unix:{}", sock.display()))
        .arg("--backlog")
        .arg("128")
        .start();
    (p, bin, sock)
}

/// After a failed upgrade: same pid, same workers, no upgrade counted, both
/// sockets (and their files) serve, and a reload still works.
fn assert_untouched(p: &Primary, workers: &[i32], sock: &Path) {
    let s = p.status();
    assert_eq!(s["upgrades"], 0, "{s}");
    assert_eq!(s["pid"], p.pid());
    assert_eq!(p.worker_pids(), workers, "the workers were not kept");
    assert!(sock.exists(), "the Unix socket file was removed");
    assert!(p.control.exists(), "the control socket file was removed");
    assert_eq!(get(&Target::Unix(sock.to_path_buf()), "/").unwrap().status, 200);
    p.reload();
    assert_eq!(get(&Target::Unix(sock.to_path_buf()), "/").unwrap().status, 200);
}

#[test]
fn an_upgrade_to_a_binary_that_rejects_the_command_line_is_refused_by_the_check() {
    let dir = TempDir::new("upgrade");
    let (p, bin, sock) = primary_with_unix_socket(&dir);
    let workers = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(50);
    renaming_release(&bin, true);
    let out = p.ctl(&["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", p.log_text());
    assert!(
        err.contains("rejects the primary's command line")
            && err.contains("--backlog-size")
            && err.contains("still running"),
        "{err}"
    );
    assert!(!p.log_text().contains("handing over"), "the check must refuse before any exec");
    assert_untouched(&p, &workers, &sock);
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a refused upgrade");
}

#[test]
fn a_new_image_that_rejects_the_command_line_rolls_back() {
    let dir = TempDir::new("upgrade");
    let (p, bin, sock) = primary_with_unix_socket(&dir);
    let workers = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(50);
    // The check passes; the exec'd image fails to parse its argv.
    renaming_release(&bin, false);
    let out = p.ctl(&["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", p.log_text());
    assert!(
        err.contains("the new binary rejects the command line")
            && err.contains("--backlog-size")
            && err.contains("still running"),
        "{err}"
    );
    wait_until(Duration::from_secs(5), "the rollback in the log", || {
        p.log_text().contains("upgrade failed and was rolled back")
    });
    assert_no_success_line(&p.log_text());
    assert_untouched(&p, &workers, &sock);
    // And a good binary upgrades as usual afterwards.
    install(&bin);
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), p.log_text());
    assert_eq!(p.status()["upgrades"], 1);
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a rolled-back upgrade");
}

#[test]
fn a_new_image_that_fails_after_adopting_the_workers_rolls_back() {
    // The testing aid makes the new image fail at the latest point before it
    // serves: everything taken (fds, socket files, workers) goes back.
    let dir = TempDir::new("upgrade");
    let bin = dir.path("hotswap");
    install(&bin);
    let sock = dir.path("app.sock");
    let p = Primary::builder(rust_worker())
        .binary(&bin)
        .arg("-l")
        .arg(format!("unix:{}", sock.display()))
        .env("HOTSWAP_TEST_FAIL_TAKEOVER", "adopt")
        .start();
    let workers = p.worker_pids();
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(50);
    let mut events = EventStream::start(&p);
    let out = p.ctl(&["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", p.log_text());
    assert!(err.contains("HOTSWAP_TEST_FAIL_TAKEOVER=adopt") && err.contains("still running"), "{err}");
    assert!(p.log_text().contains("upgrade failed and was rolled back"), "{}", p.log_text());
    assert_no_success_line(&p.log_text());
    assert_untouched(&p, &workers, &sock);
    assert!(events.connected(), "the events client survived the rollback");
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "load across a rollback after adoption");
}

/// `hotswap status` and `hotswap reload` asked while the primary execs
/// itself are answered: a deploy script's reload never fails because an
/// upgrade ran at the same moment (the client asks again when the old
/// image's exec closed its connection before any answer).
#[test]
fn control_requests_during_upgrades_are_all_answered() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = TempDir::new("upgrade");
    let (p, bin) = primary_from_copy(&dir);
    let load = Load::start(Target::Tcp(p.addr()), 3, 1);
    load.wait_for_requests(50);
    let done = AtomicBool::new(false);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let (statuses, reloads) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|i| {
                let (p, done, failures) = (&p, &done, &failures);
                s.spawn(move || {
                    let mut answered = 0;
                    while !done.load(Ordering::Relaxed) {
                        // One client in eight reloads; the others ask for the status.
                        let args: &[&str] = if i == 0 { &["reload"] } else { &["status", "--json"] };
                        let out = p.ctl(args);
                        let (stdout, stderr) =
                            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                        let ok = out.status.success()
                            && if i == 0 {
                                stdout.contains("generation")
                            } else {
                                serde_json::from_str::<serde_json::Value>(&stdout).is_ok_and(|v| v["pid"] == p.pid())
                            };
                        if ok {
                            answered += 1;
                            if i == 0 {
                                // Room for the upgrades, which a running reload refuses.
                                std::thread::sleep(Duration::from_millis(300));
                            }
                        } else {
                            failures.lock().unwrap().push(format!("{}: {stdout}{stderr}", args[0]));
                        }
                    }
                    answered
                })
            })
            .collect();
        // Three upgrades; one asked while a reload runs is refused (and asked again).
        let mut upgrades = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while upgrades < 3 && std::time::Instant::now() < deadline {
            install(&bin);
            let out = p.ctl(&["upgrade"]);
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                upgrades += 1;
            } else {
                assert!(err.contains("reload"), "an upgrade failed for another reason than a reload: {err}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        done.store(true, Ordering::Relaxed);
        assert_eq!(upgrades, 3, "three upgrades within 90 s:\n{}", p.log_text());
        let answered: Vec<usize> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        (answered[1..].iter().sum::<usize>(), answered[0])
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} control requests failed during upgrades:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(statuses >= 10 && reloads >= 2, "too few requests to tell: {statuses} statuses, {reloads} reloads");
    assert_eq!(p.status()["upgrades"], 3);
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load across upgrades with reloads and status requests");
}

/// The file that passed `upgrade-check` is the one executed: a release
/// whose path is replaced between the check and the exec (here by its own
/// check, before it answers, so always in that window) still upgrades to the
/// file checked, and the primary goes on serving. (Looking the path up
/// again executed the replacement, which exits: the primary was gone.)
#[test]
fn the_file_checked_is_the_file_executed() {
    let dir = TempDir::new("swap");
    let (p, bin) = primary_from_copy(&dir);
    let broken = dir.path("broken");
    script(&broken, "echo 'not the file that was checked' >&2; exit 7");
    script(
        &bin,
        &format!(
            "if [ \"$1\" = upgrade-check ]; then {HOTSWAP} upgrade-check; rc=$?; mv -f {} {}; exit $rc; fi\n\
             exec {HOTSWAP} \"$@\"",
            broken.display(),
            bin.display()
        ),
    );
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    use std::os::unix::fs::MetadataExt;
    let checked = std::fs::metadata(&bin).map(|m| (m.dev(), m.ino())).unwrap();
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&bin).unwrap().contains("not the file"), "the path was swapped");
    // The script's handles, left open for its interpreter, are closed.
    let held: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| (m.dev(), m.ino()) == checked))
        .map(|e| e.file_name())
        .collect();
    assert!(held.is_empty(), "the new image still holds the script: fds {held:?}");
    let s = p.status();
    assert_eq!((s["upgrades"].as_u64(), s["pid"].as_i64()), (Some(1), Some(p.pid() as i64)), "{s}");
    p.reload();
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load through an upgrade whose file was swapped");
}
