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
