//! Measurements of rescue beside the preloads and with more stock servers,
//! not run by default (`-- --ignored --nocapture`): they print failed
//! counts for docs/rescue.md and assert nothing.

use std::time::Duration;

use crate::common::*;
use crate::rescue::reloads_under_paced_load;

/// Measurement, not run by default (`cargo test --test it measure_preloads
/// -- --ignored --nocapture`; `MEASURE_ONLY=hypercorn` picks cases): the
/// servers hotswap ships a drain preload for, with the preload off and on,
/// rescue on and off; 3 reloads of 1 worker under 4 keep-alive clients
/// pacing 2 ms and 20 ms. Prints the failed counts (docs/rescue.md has them).
#[test]
#[ignore]
fn measure_preloads_off_with_rescue() {
    let app_dir = root().join("tests/apps/python").display().to_string();
    let uvicorn = |http: &str| -> Vec<String> {
        ["uvicorn", "--fd", "3", "--http", http, "--app-dir", &app_dir, "--no-access-log", "asgi_app:app"]
            .map(String::from)
            .to_vec()
    };
    let hypercorn = ["hypercorn", "--bind", "fd://3", "--root-path", "", "asgi_app:app"].map(String::from).to_vec();
    let node = "const s = require('http').createServer((q, r) => r.end('generation=' + \
                process.env.HOTSWAP_GENERATION + '\\n')).listen({fd: 3}); \
                process.on('SIGTERM', () => s.close());";
    let cluster = root().join("tests/apps/node/cluster-cjs.js").display().to_string();
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        ("uvicorn httptools, preload off", uvicorn("httptools"), vec!["--python", "off"]),
        ("uvicorn httptools, preload on", uvicorn("httptools"), vec!["--python", "on"]),
        ("uvicorn h11, preload off", uvicorn("h11"), vec!["--python", "off"]),
        ("uvicorn h11, preload on", uvicorn("h11"), vec!["--python", "on"]),
        ("hypercorn, preload off", hypercorn.clone(), vec!["--python", "off"]),
        ("hypercorn, preload on", hypercorn, vec!["--python", "on"]),
        (
            "node http fd 3, server.close(), no preload",
            vec!["node".into(), "-e".into(), node.into()],
            vec!["--node", "off"],
        ),
        ("node cluster app, --node on (drain preload)", vec!["node".into(), cluster], vec!["--node", "on"]),
    ];
    measure(cases);
}

/// Measurement, not run by default (`cargo test --test it measure_waitress
/// -- --ignored --nocapture`): waitress (its stop is SIGTERM's default,
/// an exit) and daphne (Twisted's stop on SIGTERM), unchanged, rescue on
/// and off, as [`measure_preloads_off_with_rescue`].
#[test]
#[ignore]
fn measure_waitress_and_daphne() {
    let waitress = "import os, socket, waitress\n\
                    body = ('generation=%s\\n' % os.environ['HOTSWAP_GENERATION']).encode()\n\
                    def app(env, start):\n    start('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n\
                    waitress.serve(app, sockets=[socket.socket(fileno=3)], _quiet=True)";
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        ("waitress", vec!["python3".into(), "-c".into(), waitress.into()], vec![]),
        (
            "daphne",
            ["daphne", "--fd", "3", "--proxy-headers", "asgi_app:app"].map(String::from).to_vec(),
            vec!["--python", "off"],
        ),
    ];
    measure(cases);
}

/// Runs each case (name, command, extra arguments) with rescue on and
/// off, 2 and 20 ms between requests, and prints the failed counts.
fn measure(cases: Vec<(&str, Vec<String>, Vec<&str>)>) {
    let app_dir = root().join("tests/apps/python").display().to_string();
    let only = std::env::var("MEASURE_ONLY").unwrap_or_default();
    for (name, command, extra) in cases.into_iter().filter(|c| c.0.contains(&only)) {
        for rescue in ["on", "off"] {
            for gap in [2, 20] {
                let mut b = Primary::builder(command.clone())
                    .workers(1)
                    .arg("--rescue")
                    .arg(rescue)
                    .arg("--ready-timeout")
                    .arg("60s")
                    .env("PYTHONPATH", app_dir.clone());
                for a in &extra {
                    b = b.arg(*a);
                }
                let mut p = b.no_wait().start();
                p.wait_ready(1, Duration::from_secs(120));
                let run = reloads_under_paced_load(&p, 3, Duration::from_millis(gap));
                let read = run.log.matches("closed it unanswered").count()
                    + run.log.matches("may have read a request").count();
                eprintln!(
                    "MEASURE {name}, rescue {rescue}, {gap} ms: {} of {} failed ({read} read by the server and dropped)",
                    run.failed, run.total
                );
            }
        }
    }
}
