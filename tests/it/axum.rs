//! An axum app with `listenfd`, as Rust users write it (the crate's
//! README), built from the crates registry (tests/fixtures/axum_listenfd):
//! it serves the inherited fd 3. As the README has it, it has no graceful
//! stop (SIGTERM, which tokio does not catch unless asked, ends it at
//! once): hotswap quiesces each old worker, and no request fails. With
//! axum's documented `with_graceful_shutdown` on SIGTERM it drains by
//! itself and is left alone; hyper's own shutdown then loses a few new
//! connections (see its test).

use std::time::Duration;

use crate::common::*;

/// The fixture, built once per test run into target/fixtures (CI builds it
/// once: axum, hyper and tokio take about 30 s of CPU).
fn axum_app() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = root().join("tests/fixtures/axum_listenfd");
            let target = root().join("target/fixtures");
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--target-dir"])
                .arg(&target)
                .current_dir(&dir)
                .status()
                .expect("running cargo");
            assert!(status.success(), "building tests/fixtures/axum_listenfd");
            target.join("debug/axum-listenfd").display().to_string()
        })
        .clone()
}

/// `KEEP_ALIVE=N` in the test's environment adds N keep-alive clients to
/// the load (docs/servers.md has their figures; see the module's note).
fn keep_alive() -> usize {
    std::env::var("KEEP_ALIVE").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `-w 2`, 3 reloads under new-connection load, none of which killed an
/// old worker; returns the primary and the records.
fn three_reloads(graceful: bool) -> (Primary, Vec<Record>) {
    let mut p = Primary::builder(vec![axum_app()])
        .workers(2)
        .env("GRACEFUL", if graceful { "1" } else { "0" })
        .no_wait()
        .start();
    p.wait_ready(2, Duration::from_secs(60));
    let load = Load::start(Target::Tcp(p.addr()), keep_alive(), 4);
    load.wait_for_requests(40);
    for _ in 0..3 {
        let answer = p.reload();
        assert!(answer.contains("serves (2 workers replaced)"), "{answer}; log:\n{}", p.log_text());
        assert_eq!(p.status()["last_reload"]["killed"], 0, "no old worker killed; log:\n{}", p.log_text());
        load.wait_for_requests(40);
    }
    let records = load.finish();
    (p, records)
}

#[test]
fn axum_as_the_listenfd_readme_has_it_reloads_without_a_failed_request() {
    let (p, records) = three_reloads(false);
    eprintln!("axum (no graceful stop): {} requests", records.len());
    assert_no_failures(&records, "reloads of the axum app without a graceful stop");
    let log = p.log_text();
    // SIGTERM is not caught: each of the 6 old workers was quiesced, and
    // told to go once it answered nothing (not at the 5 s bound).
    assert_eq!(log.matches("does not drain (SIGTERM is not caught").count(), 6, "{log}");
    assert!(!log.contains("stopping it anyway"), "{log}");
}

/// With axum's graceful shutdown, hyper closes at once every connection
/// it has accepted but not yet read a request from (hyperium/hyper#3808,
/// open): a new connection the old worker took in its last milliseconds
/// fails, reset or closed without an answer, which nothing outside the
/// server can undo (its FIN is sent). 2 to 4 of about 5,000 per 3 reloads
/// on a quiet machine, 0 under heavy load. The test bounds them (one per
/// client per retired worker) and asserts their kind; anything else (a
/// refused connection, a hang, an error status) fails it.
#[test]
fn axum_with_its_graceful_shutdown_drains_by_itself() {
    let (p, records) = three_reloads(true);
    let failed: Vec<&String> = records.iter().filter_map(|r| r.result.as_ref().err()).collect();
    eprintln!("axum (graceful shutdown): {} of {} requests failed", failed.len(), records.len());
    assert!(failed.len() <= 4 * 6, "more than one per client per retired worker: {failed:?}");
    assert!(
        failed.iter().all(|e| e.contains("reset by peer") || e.contains("closed before a response")),
        "only connections hyper closed unread: {failed:?}"
    );
    let log = p.log_text();
    assert!(!log.contains("does not drain"), "it catches SIGTERM: not quiesced; log:\n{log}");
}
