//! The daily commands a PM2 user reaches for: names (`--name APP`, then
//! `hotswap reload APP`), `start` in the background, `ls`, `logs`, `scale`,
//! `restart`. Each runs the real binary in a runtime directory of its own
//! (`XDG_RUNTIME_DIR`), so the registry of names is the test's.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A private runtime directory, as `$XDG_RUNTIME_DIR` is.
fn xdg() -> TempDir {
    let d = TempDir::new("xdg");
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// `hotswap ARGS` with `XDG_RUNTIME_DIR=xdg` (no `HOTSWAP_CONTROL`), in
/// `cwd`; a command that hangs for 90 s fails the test.
fn hs_in(xdg: &Path, cwd: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(HOTSWAP)
        .args(args)
        .current_dir(cwd)
        .env("XDG_RUNTIME_DIR", xdg)
        .env_remove("HOTSWAP_CONTROL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`hotswap {}` hung", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn hs(xdg: &Path, args: &[&str]) -> Output {
    hs_in(xdg, &root(), args)
}

fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn a_name_finds_its_primary_is_refused_while_held_and_reclaimed_when_stale() {
    let x = xdg();
    let mut p = Primary::builder(rust_worker()).workers(1).named("web", &x.0).start();
    let st = json(&hs(&x.0, &["status", "web", "--json"]));
    assert_eq!(st["pid"].as_i64(), Some(p.pid() as i64));

    // A second primary of the same name is refused before it binds
    // anything, and the first serves on.
    let second = hs(&x.0, &["run", "--name", "web", "-w", "1", "-l", "127.0.0.1:0", "--", &rust_worker()[0]]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(text(&second).contains("the name \"web\" is taken"), "{}", text(&second));
    let addr = Target::Tcp(p.addr());
    assert_eq!(get(&addr, "/").unwrap().status, 200);

    ok(&hs(&x.0, &["reload", "web"]));
    assert_eq!(json(&hs(&x.0, &["status", "web", "--json"]))["generation"], 2);
    let nope = hs(&x.0, &["status", "nope"]);
    assert_eq!(nope.status.code(), Some(1));
    assert!(text(&nope).contains("no primary named nope"), "{}", text(&nope));

    // Killed: its socket stays behind, and the name is taken over.
    let workers = p.worker_pids();
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "the killed primary's workers gone", || {
        workers.iter().all(|w| process_gone(*w))
    });
    assert!(x.path("hotswap/web.sock").exists(), "a killed primary leaves its socket");
    let mut again = Primary::builder(rust_worker()).workers(1).named("web", &x.0).start();
    assert_eq!(json(&hs(&x.0, &["status", "web", "--json"]))["pid"].as_i64(), Some(again.pid() as i64));
    ok(&hs(&x.0, &["stop", "web"]));
    assert_eq!(again.wait_exit(Duration::from_secs(20)), Some(0));
}

/// Kills a detached primary when the test ends early (its guardian then
/// ends its workers).
struct Reap(i64);

impl Drop for Reap {
    fn drop(&mut self) {
        if std::thread::panicking() {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// The session id and controlling terminal (`tty_nr`) of a process.
fn session_and_tty(pid: i64) -> (i64, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (after[3].parse().unwrap(), after[4].parse().unwrap())
}

#[test]
fn start_detaches_waits_for_ready_and_survives_its_terminal_closing() {
    let x = xdg();
    let worker = rust_worker()[0].clone();
    // Under a real terminal (script's pty), which closes when the shell
    // ends: the kernel hangs up that terminal's session.
    let line = format!("{HOTSWAP} start --name app -w 2 -l 127.0.0.1:0 --min-ready 0 -- {worker}; echo start-exit=$?");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("XDG_RUNTIME_DIR", &x.0)
        .env_remove("HOTSWAP_CONTROL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = text(&out);
    assert!(said.contains("app started: pid") && said.contains("start-exit=0"), "{said}");
    let st = json(&hs(&x.0, &["status", "app", "--json"]));
    let pid = st["pid"].as_i64().unwrap();
    let _reap = Reap(pid);
    assert_eq!(Primary::ready_workers(&st).len(), 2, "start returned before the workers were ready: {st}");
    // Its own session, no terminal: the hangup never reached it.
    assert_eq!(session_and_tty(pid), (pid, 0));
    std::thread::sleep(Duration::from_millis(500));
    let after = json(&hs(&x.0, &["status", "app", "--json"]));
    assert_eq!((after["pid"].as_i64(), after["generation"].as_u64()), (Some(pid), Some(1)), "{after}");
    let addr = Target::Tcp(after["listeners"][0].as_str().unwrap().to_string());
    assert_eq!(get(&addr, "/").unwrap().status, 200);

    // Its output and its workers' are in the log file.
    let log = std::fs::read_to_string(x.path("hotswap/app.log")).unwrap();
    assert!(log.contains("[w1 g1 ") && log.contains("ready in"), "{log}");

    ok(&hs(&x.0, &["stop", "app"]));
    wait_until(Duration::from_secs(20), "the started primary gone", || process_gone(pid as i32));

    // A start that fails says why, from the worker's own output.
    let bad = hs(
        &x.0,
        &[
            "start",
            "--name",
            "bad",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            "echo 'SyntaxError: boom' >&2; exit 1",
        ],
    );
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("bad did not start") && text(&bad).contains("SyntaxError: boom"), "{}", text(&bad));
}

#[test]
fn the_log_writer_rotates_at_line_ends_and_keeps_two_old_files() {
    let d = TempDir::new("logw");
    let file = d.path("app.log");
    let mut child = Command::new(HOTSWAP)
        .args(["log-writer", "--max-size", "8000", "--keep", "2"])
        .arg(&file)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    for i in 0..1000 {
        use std::io::Write;
        writeln!(input, "line {i:04} {}", "x".repeat(80)).unwrap();
    }
    drop(input);
    assert!(child.wait().unwrap().success());
    let read = |p: &str| std::fs::read_to_string(d.path(p)).unwrap();
    for f in ["app.log", "app.log.1", "app.log.2"] {
        let t = read(f);
        assert!(t.len() <= 8000 && t.ends_with('\n') && t.starts_with("line "), "{f}: {} bytes", t.len());
    }
    assert!(!d.path("app.log.3").exists());
    assert!(read("app.log").trim_end().ends_with(&format!("line 0999 {}", "x".repeat(80))));
    let older = read("app.log.1");
    let last_of_older: u32 = older.lines().last().unwrap()[5..9].parse().unwrap();
    let first_of_newest: u32 = read("app.log").lines().next().unwrap()[5..9].parse().unwrap();
    assert_eq!(last_of_older + 1, first_of_newest, "no line lost at the rotation");
}

#[test]
fn ls_lists_every_primary_and_logs_reads_start_and_run_alike() {
    let x = xdg();
    let worker = rust_worker()[0].clone();
    ok(&hs(&x.0, &["start", "--name", "a", "-w", "2", "-l", "127.0.0.1:0", "--min-ready", "0", "--", &worker]));
    let a_pid = json(&hs(&x.0, &["status", "a", "--json"]))["pid"].as_i64().unwrap();
    let _reap = Reap(a_pid);
    // A foreground `run`, its output elsewhere.
    let mut b = Primary::builder(rust_worker()).workers(1).named("b", &x.0).start();
    ok(&hs(&x.0, &["reload", "a"]));

    let apps = json(&hs(&x.0, &["ls", "--json"]));
    let find = |n: &str| apps.as_array().unwrap().iter().find(|a| a["name"] == n).cloned().unwrap();
    let (a, bb) = (find("a"), find("b"));
    assert_eq!(
        (a["online"].as_bool(), a["pid"].as_i64(), a["generation"].as_u64()),
        (Some(true), Some(a_pid), Some(2))
    );
    assert_eq!((a["workers_ready"].as_u64(), a["workers"].as_u64()), (Some(2), Some(2)), "{a}");
    assert_eq!(a["last_reload"]["ok"], true, "{a}");
    assert!(a["memory_bytes"].as_u64().unwrap() > 1024 * 1024, "{a}");
    assert_eq!((bb["pid"].as_i64(), bb["generation"].as_u64()), (Some(b.pid() as i64), Some(1)), "{bb}");
    assert!(bb["last_reload"].is_null(), "{bb}");
    let table = ok(&hs(&x.0, &["ls"]));
    assert!(table.lines().any(|l| l.starts_with("a ") && l.contains("online") && l.contains("2/2")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("b ") && l.contains("1/1")), "{table}");

    // Past lines, from either kind of primary.
    let past = ok(&hs(&x.0, &["logs", "a", "-n", "1000"]));
    assert!(past.contains("[w1 g1 ") && past.contains("reload finished"), "{past}");
    assert!(ok(&hs(&x.0, &["logs", "b", "-n", "1000"])).contains("[w1 g1 "));
    assert_eq!(ok(&hs(&x.0, &["logs", "a", "-n", "2"])).lines().count(), 2);

    // Following b through a reload, until b stops.
    let follower = Command::new(HOTSWAP)
        .args(["logs", "b", "--follow", "--lines", "0"])
        .env("XDG_RUNTIME_DIR", &x.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    ok(&hs(&x.0, &["reload", "b"]));
    ok(&hs(&x.0, &["stop", "b"]));
    assert_eq!(b.wait_exit(Duration::from_secs(20)), Some(0));
    let followed = follower.wait_with_output().unwrap();
    assert!(followed.status.success(), "{}", text(&followed));
    let seen = String::from_utf8_lossy(&followed.stdout);
    assert!(seen.contains("[w2 g2 ") && seen.contains("reload finished") && seen.contains("stop requested"), "{seen}");
    assert!(!seen.contains("(generation 1, worker 1)"), "--lines 0 printed the past: {seen}");

    // A stopped started primary: its log file, and ls says stopped.
    ok(&hs(&x.0, &["stop", "a"]));
    wait_until(Duration::from_secs(20), "a gone", || process_gone(a_pid as i32));
    // (The log writer, a process of its own, writes the last lines a moment later.)
    wait_until(Duration::from_secs(10), "a's last line in its log", || {
        std::fs::read_to_string(x.path("hotswap/a.log")).is_ok_and(|l| l.trim_end().ends_with("stopped"))
    });
    let file = hs(&x.0, &["logs", "a", "-n", "3"]);
    assert!(ok(&file).contains("stopped") && text(&file).contains("not running"), "{}", text(&file));
    let table = ok(&hs(&x.0, &["ls"]));
    assert!(table.lines().any(|l| l.starts_with("a ") && l.contains("stopped")), "{table}");
    assert!(!table.contains("b "), "b ran with `run`: nothing left of it: {table}");
}

#[test]
fn scale_changes_the_pool_live_without_a_failed_request() {
    let p = Primary::builder(rust_worker()).workers(2).start();
    let target = Target::Tcp(p.addr());
    let first: Vec<i32> = p.worker_pids();
    let load = Load::start(target, 4, 2);
    load.wait_for_requests(100);
    let count = |s: &serde_json::Value| s["workers"].as_array().unwrap().len();

    let up = p.ctl(&["scale", "4"]);
    assert!(ok(&up).contains("scaled from 2 to 4 workers") && ok(&up).contains("4 workers ready"), "{}", text(&up));
    let st = p.status();
    assert_eq!((count(&st), Primary::ready_workers(&st).len(), st["generation"].as_u64()), (4, 4, Some(1)));
    assert!(first.iter().all(|pid| p.worker_pids().contains(pid)), "the workers that were there stay");
    load.wait_for_requests(200);

    // Down to one: three retired as a reload retires, under keep-alive load.
    let down = p.ctl(&["scale", "-3"]);
    assert!(ok(&down).contains("1 worker ready"), "{}", text(&down));
    assert_eq!(count(&p.status()), 1);
    load.wait_for_requests(200);
    ok(&p.ctl(&["scale", "+2"]));
    load.wait_for_requests(200);
    // A reload keeps the new size.
    p.reload();
    let st = p.status();
    assert_eq!((count(&st), st["target_workers"].as_u64(), st["generation"].as_u64()), (3, Some(3), Some(2)));
    load.wait_for_requests(200);
    assert_no_failures(&load.finish(), "scale 2 -> 4 -> 1 -> 3, then a reload");

    let bad = p.ctl(&["scale", "-5"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("from 1 to 4096"), "{}", text(&bad));
}

#[test]
fn restart_starts_it_again_with_the_same_arguments_directory_and_environment() {
    let x = xdg();
    let dir = TempDir::new("restart-cwd");
    let line = format!("echo \"cwd=$PWD foo=$FOO\"; exec {}", rust_worker()[0]);
    let start = Command::new(HOTSWAP)
        .args(["start", "--name", "r", "-w", "2", "-l", "127.0.0.1:0", "--", "sh", "-c", &line])
        .current_dir(&dir.0)
        .env("XDG_RUNTIME_DIR", &x.0)
        .env("FOO", "bar")
        .env_remove("HOTSWAP_CONTROL")
        .output()
        .unwrap();
    ok(&start);
    let first = json(&hs(&x.0, &["status", "r", "--json"]))["pid"].as_i64().unwrap();
    let _reap = Reap(first);

    // From elsewhere, without FOO.
    let again = hs(&x.0, &["restart", "r"]);
    assert!(ok(&again).contains("r started: pid"), "{}", text(&again));
    wait_until(Duration::from_secs(10), "the first primary gone", || process_gone(first as i32));
    let st = json(&hs(&x.0, &["status", "r", "--json"]));
    let second = st["pid"].as_i64().unwrap();
    let _reap2 = Reap(second);
    assert_ne!(second, first);
    assert_eq!((st["generation"].as_u64(), Primary::ready_workers(&st).len()), (Some(1), 2));
    let said = ok(&hs(&x.0, &["logs", "r", "-n", "1000"]));
    let expected = format!("cwd={} foo=bar", dir.0.display());
    assert!(said.contains(&expected), "{expected:?} not in:\n{said}");
    ok(&hs(&x.0, &["stop", "r"]));

    // A primary `start` did not start has nothing to restart from.
    let mut p = Primary::builder(rust_worker()).workers(1).named("plain", &x.0).start();
    let refused = hs(&x.0, &["restart", "plain"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("was not started with `hotswap start`"), "{}", text(&refused));
    assert!(p.running());
}

/// A Node app that answers with what it was given.
const ENV_APP: &str = "const http = require('http');
const cluster = require('cluster');
http.createServer((q, r) => r.end(`env=${process.env.NODE_ENV} greeting=${process.env.GREETING} \
cluster_worker=${cluster.isWorker} cwd=${process.cwd()}`)).listen(process.env.PORT || 3000);
";

#[test]
fn config_env_cwd_and_a_command_with_assignments_work_as_pm2_users_mean_them() {
    let app = TempDir::new("env-app");
    std::fs::write(app.path("server.js"), ENV_APP).unwrap();
    let conf_dir = TempDir::new("env-conf");
    for command in ["NODE_ENV=production node server.js", "env NODE_ENV=production node server.js"] {
        let conf = conf_dir.path("hotswap.toml");
        std::fs::write(
            &conf,
            format!(
                "workers = 1\ncommand = \"{command}\"\ncwd = \"{}\"\n\n[env]\nGREETING = \"hi there\"\n",
                app.0.display()
            ),
        )
        .unwrap();
        let p = Primary::builder(vec![]).workers(1).config(&conf).start();
        let answer = get(&Target::Tcp(p.addr()), "/").unwrap();
        let expected = format!("env=production greeting=hi there cluster_worker=true cwd={}", app.0.display());
        assert_eq!(answer.body, expected, "command {command:?}");
        // Node mode: ready when it listened, as Node's cluster says.
        assert_eq!(p.status()["workers"][0]["ready_via"], "cluster", "command {command:?}");
    }
}

#[test]
fn a_node_worker_that_dies_of_a_syntax_error_is_not_blamed_on_exclusive() {
    let x = xdg();
    let app = TempDir::new("syntax");
    std::fs::write(
        app.path("server.js"),
        "const http = require('http');\nhttp.createServer((q, r) => r.end('x')).listen(\n",
    )
    .unwrap();
    let out =
        hs_in(&x.0, &app.0, &["start", "--name", "broken", "-w", "1", "-l", "127.0.0.1:0", "--", "node", "server.js"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("SyntaxError"), "the worker's own words: {said}");
    assert!(said.contains("exited before it called server.listen()"), "{said}");
    assert!(!said.contains("exclusive"), "{said}");
}

#[test]
fn a_failed_start_shows_the_workers_lines_from_their_error_file() {
    let x = xdg();
    let dir = TempDir::new("start-errfile");
    // Lines of an earlier run are not this start's.
    std::fs::write(dir.path("err.log"), "an old line\n").unwrap();
    let out = hs_in(
        &x.0,
        &dir.0,
        &[
            "start",
            "--name",
            "errfile",
            "--error-file",
            "err.log",
            "-w",
            "1",
            "-l",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            "echo 'Error: Cannot find module express' >&2; exit 1",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    let (_, files) = said.split_once("the workers' stderr went to").unwrap_or_else(|| panic!("{said}"));
    assert!(files.contains("err.log; its end:") && files.contains("] Error: Cannot find module express"), "{said}");
    assert!(!files.contains("an old line"), "{said}");
}

#[test]
fn import_turns_an_ecosystem_file_into_a_config_that_runs() {
    let x = xdg();
    let app = TempDir::new("import");
    std::fs::write(app.path("server.js"), ENV_APP).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        app.path("ecosystem.config.js"),
        format!(
            "module.exports = {{ apps: [{{ name: 'shop', script: 'server.js', cwd: '{}', instances: 2, \
             exec_mode: 'cluster', env: {{ NODE_ENV: 'production', PORT: {port} }}, max_memory_restart: '300M', \
             kill_timeout: 3000, autorestart: true, cron_restart: '0 0 * * *', out_file: 'logs/out.log', \
             error_file: 'logs/err.log' }}] }};\n",
            app.0.display()
        ),
    )
    .unwrap();
    let out = hs_in(&x.0, &app.0, &["import", "ecosystem.config.js"]);
    let said = ok(&out);
    assert!(
        said.contains("not carried over: autorestart") && said.contains("not carried over: cron_restart"),
        "{said}"
    );
    let toml = std::fs::read_to_string(app.path("hotswap.toml")).unwrap();
    assert!(toml.contains("shutdown-timeout = \"3000ms\"") && toml.contains("max-memory = \"300M\""), "{toml}");
    assert!(toml.contains("out-file = \"logs/out.log\"") && toml.contains("error-file = \"logs/err.log\""), "{toml}");
    std::fs::create_dir(app.path("logs")).unwrap();
    // Again without --force: refused, the file kept.
    assert_eq!(hs_in(&x.0, &app.0, &["import", "ecosystem.config.js"]).status.code(), Some(1));

    // The config it wrote checks, starts and serves with what PM2 gave.
    ok(&hs_in(&x.0, &app.0, &["check", "-c", "hotswap.toml"]));
    let started = hs_in(&x.0, &app.0, &["start", "-c", "hotswap.toml", "--min-ready", "0"]);
    assert!(ok(&started).contains("shop started"), "{}", text(&started));
    let pid = json(&hs(&x.0, &["status", "shop", "--json"]))["pid"].as_i64().unwrap();
    let _reap = Reap(pid);
    assert!(app.path("logs/out.log").exists() && app.path("logs/err.log").exists());
    let answer = get(&Target::Tcp(format!("127.0.0.1:{port}")), "/").unwrap();
    assert!(
        answer.body.starts_with("env=production") && answer.body.contains("cluster_worker=true"),
        "{}",
        answer.body
    );
    ok(&hs(&x.0, &["stop", "shop"]));
}

#[test]
fn import_of_several_apps_writes_one_config_per_app() {
    let x = xdg();
    let app = TempDir::new("import-many");
    std::fs::write(app.path("server.js"), ENV_APP).unwrap();
    std::fs::write(
        app.path("ecosystem.config.js"),
        "module.exports = { apps: [\
         { name: 'api', script: 'server.js', instances: 2, env: { PORT: 3100 } },\
         { name: 'jobs', script: 'server.js', instances: 1, cron_restart: '0 0 * * *' }] };\n",
    )
    .unwrap();
    let said = ok(&hs_in(&x.0, &app.0, &["import", "ecosystem.config.js"]));
    assert!(
        said.contains("wrote hotswap-api.toml (app api)") && said.contains("wrote hotswap-jobs.toml (app jobs)"),
        "{said}"
    );
    assert!(said.contains("not carried over: cron_restart"), "{said}");
    assert!(!app.path("hotswap.toml").exists());
    let api = std::fs::read_to_string(app.path("hotswap-api.toml")).unwrap();
    let jobs = std::fs::read_to_string(app.path("hotswap-jobs.toml")).unwrap();
    assert!(api.contains("name = \"api\"") && api.contains("workers = 2") && api.contains("0.0.0.0:3100"), "{api}");
    assert!(jobs.contains("name = \"jobs\"") && jobs.contains("workers = 1"), "{jobs}");
    for f in ["hotswap-api.toml", "hotswap-jobs.toml"] {
        ok(&hs_in(&x.0, &app.0, &["check", "-c", f]));
    }
    // Again without --force: refused, nothing replaced.
    std::fs::write(app.path("hotswap-jobs.toml"), "# mine\n").unwrap();
    let again = hs_in(&x.0, &app.0, &["import", "ecosystem.config.js"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(app.path("hotswap-api.toml")).unwrap(), api);
}

/// Removes a directory on drop.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn ls_as_root_lists_the_systems_units_by_their_runtime_directories() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: not root (ls lists the system's units for root only)");
        return;
    }
    let x = xdg();
    // Where the packaged hotswap@.service puts instance NAME's socket.
    let name = format!("hsls{}", std::process::id());
    let run = std::path::PathBuf::from("/run/hotswap").join(&name);
    std::fs::create_dir_all(&run).unwrap();
    let _cleanup = RemoveDir(run.clone());
    let p = Primary::builder(rust_worker()).workers(1).control(&run.join("control.sock")).start();
    let apps = json(&hs(&x.0, &["ls", "--json"]));
    let unit = format!("hotswap@{name}");
    let found = apps.as_array().unwrap().iter().find(|a| a["name"] == unit.as_str()).cloned();
    let found = found.unwrap_or_else(|| panic!("{unit} not listed: {apps}"));
    assert_eq!((found["online"].as_bool(), found["pid"].as_i64()), (Some(true), Some(p.pid() as i64)), "{found}");
    assert_eq!((found["workers_ready"].as_u64(), found["workers"].as_u64()), (Some(1), Some(1)), "{found}");
    let table = ok(&hs(&x.0, &["ls"]));
    assert!(table.lines().any(|l| l.starts_with(&unit) && l.contains("online")), "{table}");
}

#[test]
fn ls_shows_the_cpu_rate_of_now_not_the_average_over_the_workers_life() {
    let x = xdg();
    // Busy at first (a second or two of CPU, however long a loaded
    // machine takes to give it), idle since.
    let busy_then_idle = "i=0; while (( i < 1000000 )); do (( i++ )); done; exec sleep 600";
    let p = Primary::builder(vec!["bash".into(), "-c".into(), busy_then_idle.into()])
        .workers(1)
        .arg("--ready")
        .arg("none")
        .named("cpu", &x.0)
        .start();
    let pid = p.worker_pids()[0];
    wait_until(Duration::from_secs(30), "the busy phase over", || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    std::thread::sleep(Duration::from_millis(1500));
    // The first look at its figures since it started: one sample alone
    // gives the average over its life.
    let apps = json(&hs(&x.0, &["ls", "--json"]));
    let app = apps.as_array().unwrap().iter().find(|a| a["name"] == "cpu").cloned().unwrap();
    let now = app["cpu_percent"].as_f64().unwrap();
    // Which is well above 0 (else the test tells nothing).
    let st = p.status();
    let w = &st["workers"][0];
    let life = w["cpu_seconds"].as_f64().unwrap() / st["uptime_secs"].as_f64().unwrap() * 100.0;
    assert!(life > 5.0, "the busy phase got too little CPU to tell the two apart: {st}");
    assert!(now < 2.0, "ls shows {now}% for an idle worker (its life's average is {life:.1}%): {app}");
}
