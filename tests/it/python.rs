//! Unchanged Python ASGI servers under hotswap: uvicorn (httptools and h11),
//! gunicorn with uvicorn workers, and hypercorn, each through 5 reloads
//! under keep-alive and new-connection load with zero failed requests, with
//! no readiness flag (`--ready auto` sees them accept) and no delay guess.

use std::time::Duration;

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

fn start(command: Vec<String>) -> Primary {
    Primary::builder(command).arg("--ready-timeout").arg("60s").start()
}

#[test]
fn uvicorn_with_httptools_reloads_without_a_failed_request() {
    if installed("uvicorn") {
        reloads_cleanly(&start(uvicorn("httptools")), 3, "accepting");
    }
}

#[test]
fn uvicorn_with_h11_reloads_without_a_failed_request() {
    if installed("uvicorn") {
        reloads_cleanly(&start(uvicorn("h11")), 3, "accepting");
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
    if installed("gunicorn") && installed("uvicorn") {
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
        reloads_cleanly(&Primary::builder(cmd).workers(1).arg("--ready-timeout").arg("60s").start(), 3, "notify");
    }
}

#[test]
fn hypercorn_reloads_without_a_failed_request() {
    if installed("hypercorn") {
        let cmd = ["hypercorn", "--bind", "fd://3", "asgi_app:app"].map(String::from).to_vec();
        // The app is found through the primary's PYTHONPATH, which the
        // preload keeps behind its own directory.
        let p = Primary::builder(cmd).env("PYTHONPATH", app_dir()).arg("--ready-timeout").arg("60s").start();
        reloads_cleanly(&p, 3, "accepting");
    }
}

/// The patches the preload told the primary it made in each worker
/// (`status --json`): `(patch, ok, skipped)`.
fn preload_patches(p: &Primary) -> Vec<Vec<(String, bool, Option<String>)>> {
    p.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w["preload"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            let skipped = x["skipped"].as_str().map(String::from);
                            (x["patch"].as_str().unwrap().to_string(), x["ok"] == true, skipped)
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

const UVICORN_H11: [&str; 1] = ["uvicorn.protocols.http.h11_impl.H11Protocol"];

/// Rescue on (the default): uvicorn's drain patch still applies in every
/// worker (rescue alone lost 1 request in 12,883 to a reset here,
/// docs/rescue.md), `status` lists it, and no request of the keep-alive
/// load fails across 3 reloads. The reports are not the app speaking (the
/// workers stay ready by their accepts).
#[test]
fn with_rescue_on_uvicorns_patch_still_applies() {
    if !installed("uvicorn") {
        return;
    }
    let p = start(uvicorn("h11"));
    reloads_cleanly(&p, 3, "accepting");
    wait_until(Duration::from_secs(20), "every worker's patches reported", || {
        preload_patches(&p).iter().all(|w| UVICORN_H11.iter().all(|n| w.contains(&(n.to_string(), true, None))))
    });
    let text = String::from_utf8_lossy(&p.ctl(&["status"]).stdout).into_owned();
    assert!(text.contains("preload patches:") && text.contains(UVICORN_H11[0]), "{text}");
    assert!(!text.contains("NOT ") && !text.contains("skipped"), "{text}");
}

/// `--rescue off`: rescue does not cover the workers, so uvicorn's drain
/// patch applies in each (`status` lists it) and no request is lost.
#[test]
fn with_rescue_off_uvicorns_patch_applies() {
    if !installed("uvicorn") {
        return;
    }
    let p = Primary::builder(uvicorn("h11")).arg("--ready-timeout").arg("60s").arg("--rescue").arg("off").start();
    reloads_cleanly(&p, 3, "accepting");
    let want = [UVICORN_H11[0], "uvicorn.protocols.http.h11_impl.RequestResponseCycle"];
    wait_until(Duration::from_secs(20), "every worker's patches reported", || {
        preload_patches(&p).iter().all(|w| want.iter().all(|n| w.contains(&(n.to_string(), true, None))))
    });
    let text = String::from_utf8_lossy(&p.ctl(&["status"]).stdout).into_owned();
    assert!(text.contains("preload patches:") && text.contains(want[0]) && !text.contains("skipped"), "{text}");
}

/// A server version whose code the preload does not know (here a uvicorn
/// module whose protocol has no `shutdown`): the log says the patch did not
/// apply, `status` shows it, and the worker serves and reloads as before.
#[test]
fn a_patch_that_does_not_apply_is_logged_and_shown() {
    let dir = TempDir::new("preload-miss");
    let pkg = dir.path("uvicorn/protocols/http");
    std::fs::create_dir_all(&pkg).unwrap();
    for init in ["uvicorn", "uvicorn/protocols", "uvicorn/protocols/http"] {
        std::fs::write(dir.path(init).join("__init__.py"), "").unwrap();
    }
    std::fs::write(
        pkg.join("httptools_impl.py"),
        "class HttpToolsProtocol:\n    def data_received(self, data): pass\n",
    )
    .unwrap();
    let script = format!(
        "import runpy, uvicorn.protocols.http.httptools_impl; runpy.run_path({:?}, run_name='__main__')",
        fixture("stock_asyncio.py")
    );
    let p = Primary::builder(vec!["python3".into(), "-c".into(), script])
        .workers(1)
        .env("PYTHONPATH", dir.path("").display().to_string())
        .arg("--drain-patch")
        .arg("on")
        .start();
    let name = "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol";
    wait_until(Duration::from_secs(20), "the failed patch reported", || {
        preload_patches(&p).first().is_some_and(|w| w.contains(&(name.to_string(), false, None)))
    });
    let log = p.log_text();
    assert!(log.contains(&format!("the preload could not patch {name}")) && log.contains("has no shutdown"), "{log}");
    let text = String::from_utf8_lossy(&p.ctl(&["status"]).stdout).into_owned();
    assert!(text.contains(&format!("NOT {name}")), "{text}");
    assert!(p.reload().contains("serves"), "{}", p.log_text());
    assert_eq!(p.status()["workers"][0]["ready_via"], "accepting", "the report is not the app speaking");
}
