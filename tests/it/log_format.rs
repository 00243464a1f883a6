//! `--log-format`: the primary's lines and every worker line as JSON
//! objects, or with syslog priorities for journald (chosen by itself when
//! stderr is the journal), and `--timestamps` on worker lines in text.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// A worker that says something on stdout (once with a priority prefix of
/// its own) and on stderr, then serves; `fail` makes the next start fail.
fn talkative_worker(dir: &TempDir) -> std::path::PathBuf {
    let start = dir.path("start.sh");
    script(
        &start,
        &format!(
            "[ -e {fail} ] && {{ echo 'cannot start' >&2; exit 1; }}\necho hello-out\necho '<3>bad thing'\necho \
             hello-err >&2\nexec {worker}",
            fail = dir.path("fail").display(),
            worker = rust_worker()[0]
        ),
    );
    start
}

/// Runs a primary with `flags` and `env`: starts, one good reload, one
/// failed reload, stop; gives back its log.
fn run_through(flags: &[&str], env: &[(&str, String)], log: Option<&std::path::Path>) -> (String, i32) {
    let dir = TempDir::new("logfmt");
    let start = talkative_worker(&dir);
    let mut b = Primary::builder(vec![start.display().to_string()]).workers(1);
    for f in flags {
        b = b.arg(*f);
    }
    for (k, v) in env {
        b = b.env(k, v.clone());
    }
    if let Some(log) = log {
        b = b.log_to(log);
    }
    let mut p = b.start();
    let pid = p.worker_pids()[0];
    p.reload();
    std::fs::write(dir.path("fail"), "").unwrap();
    assert!(!p.ctl(&["reload"]).status.success());
    assert!(p.ctl(&["stop"]).status.success());
    assert_eq!(p.wait_exit(Duration::from_secs(30)), Some(0));
    (p.log_text(), pid)
}

#[test]
fn json_is_one_object_per_line_for_the_primary_and_every_worker_line() {
    let (log, pid) = run_through(&["--log-format", "json"], &[], None);
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{log}")))
        .collect();
    for l in &lines {
        assert!(l["time"].as_str().is_some_and(|t| log_time(t).is_some()), "{l}");
        assert!(l["level"].is_string() && l["message"].is_string() && l["source"].is_string(), "{l}");
    }
    let worker_line = |msg: &str| {
        lines
            .iter()
            .find(|l| l["source"] == "worker" && l["message"] == msg)
            .unwrap_or_else(|| panic!("no worker line {msg:?}:\n{log}"))
            .clone()
    };
    let out = worker_line("hello-out");
    assert_eq!(out["stream"], "stdout");
    assert_eq!(out["level"], "info");
    assert_eq!(out["worker"], 1);
    assert_eq!(out["pid"], pid);
    assert_eq!(out["generation"], 1);
    let err = worker_line("hello-err");
    assert_eq!(err["stream"], "stderr");
    assert_eq!(err["level"], "warn");
    assert_eq!(worker_line("bad thing")["level"], "error", "the worker's own <3> prefix");
    assert!(lines.iter().any(|l| l["source"] == "worker" && l["generation"] == 2), "generation 2's lines:\n{log}");
    // The primary's own, with the event's fields.
    let ready = lines
        .iter()
        .find(|l| l["source"] == "hotswap" && l["message"].as_str().unwrap().contains("ready in"))
        .unwrap_or_else(|| panic!("no ready line:\n{log}"));
    assert_eq!(ready["level"], "info");
    assert_eq!(ready["worker"], 1);
    assert!(
        lines.iter().any(|l| l["source"] == "hotswap"
            && l["level"] == "error"
            && l["message"].as_str().unwrap().contains("reload")),
        "the failed reload is an error:\n{log}"
    );
}

#[test]
fn journald_is_chosen_when_stderr_is_the_journal_and_prefixes_priorities() {
    let dir = TempDir::new("journal");
    let log = dir.path("journal.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    // systemd's JOURNAL_STREAM names stderr's device and inode.
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let (text, _) = run_through(&[], &[("JOURNAL_STREAM", stream)], Some(&log));
    for l in text.lines().filter(|l| !l.is_empty()) {
        let b = l.as_bytes();
        assert!(b.len() > 3 && b[0] == b'<' && b[1].is_ascii_digit() && b[2] == b'>', "no priority: {l:?}\n{text}");
    }
    let line = |what: &str| {
        text.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no line with {what:?}:\n{text}")).to_string()
    };
    assert!(line("hello-out").starts_with("<6>[w1 g1 "), "stdout is info");
    assert!(line("hello-err").starts_with("<4>[w1 g1 "), "stderr is warning");
    assert!(line("bad thing").starts_with("<3>[w1 g1 "), "the worker's own priority");
    // The worker's own line (the failed reload's message quotes it too, and
    // may come first).
    assert!(line("] cannot start").starts_with("<4>[w"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("<3>reload") && l.contains("failed")),
        "journalctl -p err finds the failed reload:\n{text}"
    );

    // Another stream (the journal was not stderr): text, and --timestamps
    // puts the time in front of worker lines.
    let (text, _) = run_through(&["--timestamps"], &[("JOURNAL_STREAM", "1:1".into())], None);
    let hello = text.lines().find(|l| l.contains("hello-out")).unwrap();
    assert!(!hello.starts_with('<'), "{text}");
    assert!(log_time(hello).is_some() && hello.contains(" [w1 g1 "), "{hello}");
}
