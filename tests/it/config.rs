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
    // The bounds are the point: 1 s, not 1 ms (under), nor a minute (over;
    // generous for a loaded machine).
    assert!(took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(30), "{took:?}: {err}");
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

/// `hotswap manpages .../man/man1`, as the README says after `cargo
/// install`: the file format's page goes to `man5`, where man looks.
#[test]
fn manpages_into_a_man_hierarchy_put_section_5_in_man5() {
    let dir = TempDir::new("man-tree");
    let out = Command::new(HOTSWAP).arg("manpages").arg(dir.path("man/man1")).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path("man/man1/hotswap-run.1").exists());
    assert!(dir.path("man/man5/hotswap.toml.5").exists());
    assert!(!dir.path("man/man1/hotswap.toml.5").exists());
}

/// Every page a page names (`hotswap\-run(1)`, `hotswap.toml(5)`) ships.
#[test]
fn the_man_pages_name_only_pages_that_ship() {
    let man = root().join("man");
    for e in std::fs::read_dir(&man).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replace("\\fB", "").replace("\\fR", "");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("hotswap") {
            rest = &rest[i..];
            let name: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || matches!(c, '\\' | '-' | '.')).collect();
            let after = &rest[name.len()..];
            rest = &rest["hotswap".len()..];
            let Some(section) = after.strip_prefix('(').and_then(|a| a.chars().next()) else { continue };
            if !matches!(section, '1' | '5') || !after[2..].starts_with(')') {
                continue;
            }
            let file = format!("{}.{section}", name.replace("\\-", "-"));
            assert!(man.join(&file).exists(), "{} names {file}, which does not ship", path.display());
        }
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

/// `hotswap check`: the config as `run` would take it, nothing started.
fn check(dir: &TempDir, toml: &str, flags: &[&str]) -> (Option<i32>, String, String) {
    let cfg = dir.path("check.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = Command::new(HOTSWAP).args(["check", "--config"]).arg(&cfg).args(flags).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_good_config_and_says_what_it_would_run() {
    let dir = TempDir::new("check");
    let worker = rust_worker()[0].clone();
    let (code, out, err) = check(
        &dir,
        &format!(
            "listen = [\"web=127.0.0.1:8080\"]\nworkers = 3\ncommand = \"exec {worker} --x\"\nmetrics = \":9100\"\n"
        ),
        &["--surge", "2"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("check.toml: ok"), "{out}");
    assert!(out.contains("workers: 3, surge 2"), "flags are laid over the file: {out}");
    assert!(out.contains("web=127.0.0.1:8080") && out.contains(&worker), "{out}");
    // The shipped example names /usr/bin/node: parsed as well.
    let out = Command::new(HOTSWAP)
        .args(["check", "--config"])
        .arg(root().join("contrib/systemd/example.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || err.contains("command not found: node"), "{err}");
}

#[test]
fn check_names_the_key_and_line_of_a_config_error_on_one_line() {
    let dir = TempDir::new("check");
    let (code, _, err) = check(&dir, "workers = 2\n\nwrokers = 3\ncommand = [\"true\"]\n", &[]);
    assert_eq!(code, Some(2));
    let first = err.lines().next().unwrap();
    assert!(first.contains("line 3") && first.contains("wrokers") && first.contains("unknown field"), "{err}");

    let (code, _, err) = check(&dir, "command = [\"true\"]\nready-timeout = \"soon\"\n", &[]);
    assert_eq!(code, Some(2));
    let first = err.lines().next().unwrap();
    assert!(first.contains("line 2") && first.contains("ready-timeout") && first.contains("soon"), "{err}");

    let (code, _, err) = check(&dir, "command = [\"true\"]\nlisten = [\"127.0.0.1:99999\"]\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("line 2") && err.contains("listen") && err.contains("127.0.0.1:99999"), "{err}");

    let (code, _, err) = check(&dir, "command = [\"true\"]\nmetrics = \"localhost\"\n", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("line 2") && err.contains("metrics address"), "{err}");

    // A flag as `run` takes it: a bad value is a usage error.
    let (code, _, err) = check(&dir, "command = [\"true\"]\n", &["--ready", "eventually"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn check_fails_for_a_command_that_cannot_run() {
    let dir = TempDir::new("check");
    let (code, _, err) = check(&dir, "command = \"no-such-program-here --port 1\"\n", &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("command not found: no-such-program-here"), "{err}");

    let plain = dir.path("not-executable.sh");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let (code, _, err) = check(&dir, &format!("command = [\"{}\"]\n", plain.display()), &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not executable"), "{err}");

    // With --build, the build may create it: not an error.
    let (code, out, _) = check(&dir, "command = [\"./target/app\"]\nbuild = \"make\"\n", &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--build may create it"), "{out}");
}
