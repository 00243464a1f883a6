//! Unchanged Python ASGI servers under hotswap: uvicorn (httptools and h11),
//! gunicorn with uvicorn workers, and hypercorn, each through 5 reloads
//! under keep-alive and new-connection load with zero failed requests, with
//! no readiness flag (`--ready auto` sees them accept) and no delay guess.

use crate::accepting::reloads_cleanly;
use crate::common::*;

fn app_dir() -> String {
    root().join("tests/apps/python").display().to_string()
}

fn uvicorn(protocol: &str) -> Vec<String> {
    ["uvicorn", "--fd", "3", "--http", protocol, "--app-dir", &app_dir(), "--no-access-log", "asgi_app:app"]
        .map(String::from)
        .to_vec()
}

/// Skips (or, under CI, fails) when `program` is not installed.
fn have(program: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{program} is not installed (.ci/run installs it)");
        eprintln!("skipped: {program} is not installed");
    }
    found
}

fn start(command: Vec<String>) -> Primary {
    Primary::builder(command).arg("--ready-timeout").arg("60s").start()
}

#[test]
fn uvicorn_with_httptools_reloads_without_a_failed_request() {
    if have("uvicorn") {
        reloads_cleanly(&start(uvicorn("httptools")), 5, "accepting");
    }
}

#[test]
fn uvicorn_with_h11_reloads_without_a_failed_request() {
    if have("uvicorn") {
        reloads_cleanly(&start(uvicorn("h11")), 5, "accepting");
    }
}

/// gunicorn gives uvicorn its `keepalive`, 2 s by default, as the idle
/// time after which a keep-alive connection is closed: a client that sends
/// its next request just as that time runs out loses it, under any
/// supervisor and with no reload (94 of 300 requests with a 2 s gap between
/// requests, 0 with 1 s). A loaded machine can stall a test client that
/// long, so the test gives the longer keep-alive that deployments behind a
/// proxy use anyway: what it checks is the reloads.
#[test]
fn gunicorn_with_uvicorn_workers_reloads_without_a_failed_request() {
    if have("gunicorn") && have("uvicorn") {
        let cmd = [
            "gunicorn",
            "-k",
            "uvicorn.workers.UvicornWorker",
            "-w",
            "2",
            "--keep-alive",
            "75",
            "--chdir",
            &app_dir(),
            "asgi_app:app",
        ]
        .map(String::from)
        .to_vec();
        // gunicorn sends READY=1 on its NOTIFY_SOCKET as soon as it has
        // bound, before its workers accept: under auto it is ready once
        // they accept too.
        reloads_cleanly(&Primary::builder(cmd).workers(1).arg("--ready-timeout").arg("60s").start(), 5, "notify");
    }
}

#[test]
fn hypercorn_reloads_without_a_failed_request() {
    if have("hypercorn") {
        let cmd = ["hypercorn", "--bind", "fd://3", "asgi_app:app"].map(String::from).to_vec();
        // The app is found through the primary's PYTHONPATH, which the
        // preload keeps behind its own directory.
        let p = Primary::builder(cmd).env("PYTHONPATH", app_dir()).arg("--ready-timeout").arg("60s").start();
        reloads_cleanly(&p, 5, "accepting");
    }
}
