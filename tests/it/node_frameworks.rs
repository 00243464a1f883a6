//! Node.js frameworks that bring their own server start-up, run unchanged:
//! a NestJS app (its first-steps app, `enableShutdownHooks()` as its docs
//! advise) and a Next.js app run by `next start`, each reloaded under
//! keep-alive and new-connection load with no failed request. Express and
//! Fastify are in `node`. The apps are in tests/apps/node/.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use crate::common::*;
use crate::node::{app, node, reloads};

/// Each worker was seen ready as a Node cluster worker (its server
/// listened), and each worker that left ended by itself or by SIGTERM: told
/// to go by Node's cluster `disconnect`, it gets the stop signal 200 ms after
/// its channel closed if its event loop stays alive (NestJS's shutdown
/// hooks then close the app and end it by that signal); never by SIGKILL
/// (`reloads` checks that) nor with an error.
fn ready_by_cluster_and_ended_cleanly(p: &Primary, events: &[serde_json::Value]) {
    for w in p.status()["workers"].as_array().unwrap() {
        assert_eq!(w["ready_via"], "cluster", "{w}");
    }
    let exits: Vec<_> = events.iter().filter(|e| e["event"] == "exit").collect();
    assert!(exits.len() >= 6, "the old workers' exits were seen: {events:?}");
    for e in exits {
        assert!(e["code"] == 0 || e["signal"] == "SIGTERM", "ended by itself or by the stop signal: {e}");
    }
}

#[test]
fn a_nestjs_app_reloads_under_load() {
    if crate::node::installed("@nestjs/core") {
        let p = node(Primary::builder(app("nest-app.mjs")).env("APP_VERSION", "1")).start();
        let events = reloads(&p, 3, true);
        ready_by_cluster_and_ended_cleanly(&p, &events);
    }
}

/// `next build` of tests/apps/node/next-app, unless it has a build (`.ci/run`
/// makes it once, as a deploy would).
fn next_build(app: &Path) {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if app.join(".next/BUILD_ID").exists() {
        return;
    }
    eprintln!("building {} (next build)", app.display());
    let out = Command::new(root().join("tests/apps/node/node_modules/.bin/next"))
        .arg("build")
        .current_dir(app)
        .env("NEXT_TELEMETRY_DISABLED", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "next build: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a Next.js user writes first, `npm start` in the app's directory, is
/// refused with the command to run instead; that very command, with only
/// `-l` and `-w` added, runs the app, which reloads under load.
#[test]
fn a_nextjs_app_reloads_under_load() {
    if !crate::node::installed("next") {
        return;
    }
    let dir = root().join("tests/apps/node/next-app");
    next_build(&dir);
    // The app's directory as a user gives it, relative to where hotswap runs.
    assert_eq!(std::env::current_dir().unwrap(), root());
    let refused = Command::new(HOTSWAP)
        .current_dir(&dir)
        .args(["run", "-l", "127.0.0.1:0", "--", "npm", "start"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    let instead = err
        .split("`hotswap run ... -- ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no command to run instead: {err}"));
    assert_eq!(instead, "../node_modules/.bin/next start", "{err}");
    let command = instead.split_whitespace().map(String::from).collect();
    // No `-p`: `next start` reads the port from PORT, which hotswap sets.
    let p = node(Primary::builder(command))
        .arg("--cwd")
        .arg("tests/apps/node/next-app")
        .env("APP_VERSION", "1")
        .env("NEXT_TELEMETRY_DISABLED", "1")
        .start();
    let events = reloads(&p, 3, true);
    ready_by_cluster_and_ended_cleanly(&p, &events);
}
