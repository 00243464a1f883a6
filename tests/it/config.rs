//! `hotswap.toml`, the man pages and shell completions.

use std::process::Command;

use crate::common::*;

fn write_config(path: &std::path::Path, workers: u32, extra: &str) {
    let worker = rust_worker()[0].clone();
    std::fs::write(
        path,
        format!("listen = [\"127.0.0.1:0\"]\nworkers = {workers}\nready-timeout = \"10s\"\ncommand = [\"{worker}\"]\n{extra}"),
    )
    .unwrap();
}

#[test]
fn config_file_runs_and_is_reread_on_reload() {
    let dir = TempDir::new("cfg");
    let cfg = dir.path("hotswap.toml");
    write_config(&cfg, 2, "");
    let p = Primary::bare(vec![]).config(&cfg).workers(2).start();
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    // A broken file fails the reload and touches nothing.
    std::fs::write(&cfg, "workers = \"many\"\n").unwrap();
    let out = p.ctl(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workers") && err.contains("line 1"), "{err}");
    assert_eq!(p.status()["generation"], 1);
    write_config(&cfg, 2, "");
    p.reload();
    assert_eq!(p.status()["generation"], 3);
    assert_no_failures(&load.finish(), "load across config reloads");
}

#[test]
fn a_reload_applies_a_new_worker_count_from_the_file() {
    let dir = TempDir::new("cfg");
    let cfg = dir.path("hotswap.toml");
    write_config(&cfg, 2, "");
    // Without -w: the count comes from the file.
    let p = Primary::bare(vec![]).config(&cfg).workers(2).start();
    assert_eq!(p.status()["target_workers"], 2);
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);

    write_config(&cfg, 3, "");
    p.reload();
    let s = p.status();
    assert_eq!(Primary::ready_workers(&s).len(), 3, "{s}");
    assert_eq!(s["target_workers"], 3);

    write_config(&cfg, 1, "");
    let out = p.reload();
    assert!(out.contains("retired"), "{out}");
    let s = p.status();
    assert_eq!(s["workers"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["target_workers"], 1);

    // A listener change needs a restart, and says so.
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("127.0.0.1:0", "127.0.0.1:1")).unwrap();
    p.reload();
    let log = p.log_text();
    assert!(log.contains("changes to listen take effect only after a restart"), "{log}");
    assert_no_failures(&load.finish(), "load while the pool grows and shrinks");
}

#[test]
fn config_errors_name_the_key_and_line_and_exit_2() {
    let dir = TempDir::new("cfg");
    let cfg = dir.path("hotswap.toml");
    std::fs::write(&cfg, "workers = 2\nshutdown-timout = \"5s\"\n").unwrap();
    let out =
        Command::new(HOTSWAP).args(["run", "--config"]).arg(&cfg).arg("--control").arg(dir.path("c")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shutdown-timout") && err.contains("line 2"), "{err}");

    std::fs::write(&cfg, "listen = [\"127.0.0.1:0\"]\nready = \"eventually\"\ncommand = [\"true\"]\n").unwrap();
    let out =
        Command::new(HOTSWAP).args(["run", "--config"]).arg(&cfg).arg("--control").arg(dir.path("c")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ready") && err.contains("line 2") && err.contains("eventually"), "{err}");

    let out = Command::new(HOTSWAP).args(["run", "--config"]).arg(dir.path("missing.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn a_bare_number_in_the_file_is_seconds() {
    let dir = TempDir::new("cfg");
    let cfg = dir.path("hotswap.toml");
    // A worker that never says it is ready: the first generation fails once
    // `ready-timeout = 1` (one second, not one millisecond or an error) ends.
    std::fs::write(&cfg, "listen = [\"127.0.0.1:0\"]\nworkers = 1\nready-timeout = 1\ncommand = [\"sleep\", \"30\"]\n")
        .unwrap();
    let started = std::time::Instant::now();
    let out =
        Command::new(HOTSWAP).args(["run", "--config"]).arg(&cfg).arg("--control").arg(dir.path("c")).output().unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start") && err.contains("not ready"), "{err}");
    assert!(took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(10), "{took:?}: {err}");
}

#[test]
fn committed_man_pages_are_up_to_date() {
    let dir = TempDir::new("man");
    let out = Command::new(HOTSWAP).arg("manpages").arg(&dir.0).output().unwrap();
    assert!(out.status.success());
    let committed = root().join("man");
    let mut names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let fresh = std::fs::read_to_string(dir.0.join(&name)).unwrap();
        let old = std::fs::read_to_string(committed.join(&name)).unwrap_or_default();
        assert!(
            fresh == old,
            "man/{} is out of date: run `cargo run -- manpages man` and commit the result",
            name.to_string_lossy()
        );
    }
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(HOTSWAP).args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("hotswap") && text.contains("reload") && text.contains("listen"), "{shell}");
    }
    let out = Command::new(HOTSWAP).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
