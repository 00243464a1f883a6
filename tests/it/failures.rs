//! What a failure summary says: the worker's own last lines, `PORT` when
//! it listens on a port of its own, and that it serves nothing when it
//! never listened, each from a real `hotswap run` that gives up (exit 1)
//! and a real `hotswap reload` that fails.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// `hotswap run -w 1 -l 127.0.0.1:0 --ready-timeout 2s -- COMMAND` in `cwd`,
/// which must give up: its summary line (`hotswap: ...`, the last of its
/// stderr) and everything it wrote.
fn gives_up(cwd: &std::path::Path, command: &[&str]) -> (String, String) {
    gives_up_within("2s", cwd, command)
}

/// [`gives_up`] with this `--ready-timeout`.
fn gives_up_within(timeout: &str, cwd: &std::path::Path, command: &[&str]) -> (String, String) {
    let dir = TempDir::new("fail");
    let o = Command::new(HOTSWAP)
        .arg("run")
        .arg("--control")
        .arg(dir.path("c.sock"))
        .args(["-w", "1", "-l", "127.0.0.1:0", "--ready-timeout", timeout, "--"])
        .args(command)
        .current_dir(cwd)
        .env_remove("HOTSWAP_CONTROL")
        .env_remove("PORT")
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{all}");
    let summary = String::from_utf8_lossy(&o.stderr)
        .lines()
        .rfind(|l| l.starts_with("hotswap: "))
        .unwrap_or_else(|| panic!("no summary line: {all}"))
        .to_string();
    (summary, all)
}

#[test]
fn a_node_worker_that_never_listens_serves_nothing_and_is_quoted() {
    let app = TempDir::new("idle-node");
    std::fs::write(
        app.path("server.js"),
        "console.log('waiting for the database at db:5432');\nsetInterval(() => {}, 1000);\n",
    )
    .unwrap();
    let (summary, all) = gives_up(&app.0, &["node", "server.js"]);
    assert!(summary.contains("the first generation cannot start"), "{all}");
    assert!(summary.contains("never called server.listen(): it serves nothing"), "{summary}");
    assert!(summary.contains("its last output: \"waiting for the database at db:5432\""), "{summary}");
    assert!(!summary.contains("exclusive"), "{summary}");
}

#[test]
fn a_worker_that_never_listens_on_anything_is_told_how_readiness_is_judged() {
    // (Its sockets are looked up in the socket tables after a second.)
    let (summary, _) = gives_up_within("4s", &root(), &["sh", "-c", "echo idling here; exec sleep 60"]);
    assert!(summary.contains("it serves nothing: it never listened on anything"), "{summary}");
    assert!(summary.contains("under --ready auto, a worker is ready once it is seen accepting"), "{summary}");
    assert!(summary.contains("its last output: \"idling here\""), "{summary}");
}

#[test]
fn a_worker_on_a_port_of_its_own_is_told_about_port() {
    if !installed("python3") {
        eprintln!("skipped: no python3");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    // Its own listener is looked up once it has held it a second (python
    // starts slowly on a loaded machine): time enough for that.
    let (summary, _) = gives_up_within("6s", &root(), &["python3", "-m", "http.server", "--bind", "127.0.0.1", &port]);
    assert!(!summary.contains("serves nothing"), "{summary}");
    assert!(summary.contains(&format!("it listens on a socket of its own instead: 127.0.0.1:{port}")), "{summary}");
    assert!(summary.contains("hotswap gave it PORT=") && summary.contains("it does not read PORT"), "{summary}");
}

/// A server that follows systemd's protocol (fd 3 only when `LISTEN_PID`
/// is its own pid, as `sd_listen_fds` and Rust's `listenfd`), forked by a
/// wrapper: it binds its own port, and the summary says why (the wrapper),
/// not `PORT`.
#[test]
fn a_server_forked_by_a_wrapper_is_told_about_listen_pid() {
    if !installed("python3") {
        eprintln!("skipped: no python3");
        return;
    }
    let (summary, all) = gives_up_within("6s", &root(), &["sh", "-c", "python3 tests/fixtures/listen_pid.py; true"]);
    assert!(all.contains("LISTEN_PID mine: False"), "the fixture saw LISTEN_PID not its own: {all}");
    assert!(summary.contains("it listens on a socket of its own instead: 127.0.0.1:"), "{summary}");
    assert!(summary.contains("is not the process hotswap started") && summary.contains("LISTEN_PID="), "{summary}");
    assert!(summary.contains("make the wrapper `exec` it"), "{summary}");
    assert!(!summary.contains("it does not read PORT"), "PORT is not the cause here: {summary}");
}

#[test]
fn a_worker_that_dies_at_start_is_quoted_in_the_summary() {
    let (summary, _) = gives_up(
        &root(),
        &["sh", "-c", "echo 'Traceback (most recent call last):' >&2; echo \"KeyError: 'DATABASE_URL'\" >&2; exit 1"],
    );
    assert!(summary.contains("exited with code 1 before it was ready"), "{summary}");
    assert!(
        summary.contains(r#"its last output: "Traceback (most recent call last):" "KeyError: 'DATABASE_URL'""#),
        "{summary}"
    );
}

/// A Node.js app that listens on `PORT`, or 3000 without one.
const PORT_APP: &str = "require('http').createServer((q, r) => r.end('x')).listen(process.env.PORT || 3000);\n";

#[test]
fn a_node_worker_given_another_port_is_warned_about_port() {
    let app = TempDir::new("port-node");
    std::fs::write(app.path("server.js"), PORT_APP).unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = Primary::builder(vec!["node".into(), app.path("server.js").display().to_string()])
        .workers(1)
        .env("PORT", other.to_string())
        .start();
    wait_until(Duration::from_secs(20), "the warning", || p.log_text().contains("which no --listen gives"));
    let log = p.log_text();
    let line = log.lines().find(|l| l.contains("which no --listen gives")).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("it listens on its PORT, {other} (from hotswap's own environment, passed on)")),
        "{line}"
    );
}

#[test]
fn a_failed_reload_answers_with_the_new_workers_last_lines_under_load() {
    let dir = TempDir::new("reload-fail");
    let start = dir.path("start.sh");
    script(&start, &format!("exec {}", rust_worker()[0]));
    let p = Primary::builder(vec![start.display().to_string()]).workers(2).arg("--ready-timeout").arg("4s").start();
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    // The new command waits on something that never comes.
    script(&start, "echo 'connecting to redis at 10.0.0.9:6379'\nexec sleep 60");
    let out = p.ctl(&["reload"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("it serves nothing"), "{said}");
    assert!(said.contains("its last output: \"connecting to redis at 10.0.0.9:6379\""), "{said}");
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "a reload that fails");
}
