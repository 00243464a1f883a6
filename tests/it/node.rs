//! Unchanged Node.js apps (the cluster guide's app, Express, Fastify, an
//! https server, an app with two servers, a PM2 app, an app whose event loop
//! never empties) run as workers: reloaded under keep-alive and
//! new-connection load with no failed request, stopped gracefully, no line
//! of them changed. The apps are in tests/apps/node/.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// `--node auto`, the default, said out loud.
pub(crate) fn node(b: PrimaryBuilder) -> PrimaryBuilder {
    b.arg("--node").arg("auto")
}

pub(crate) fn app(name: &str) -> Vec<String> {
    let path = root().join("tests/apps/node").join(name);
    assert!(path.exists(), "{} missing", path.display());
    vec!["node".into(), path.display().to_string()]
}

/// Express, Fastify, NestJS and Next.js come from the npm registry
/// (`.ci/run` installs them).
pub(crate) fn installed(module: &str) -> bool {
    let there = root().join("tests/apps/node/node_modules").join(module).exists();
    if !there {
        assert!(std::env::var_os("CI").is_none(), "{module} is not installed in tests/apps/node (run .ci/run)");
        eprintln!("skipped: {module} is not installed in tests/apps/node (npm install there)");
    }
    there
}

/// The pid in an app's answer (`... pid=1234 ...`).
fn pid_of(body: &str) -> i32 {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix("pid="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pid= in {body:?}"))
}

/// `reloads` rolling reloads; after each, answers come from the new
/// workers only and no worker had to be killed. With `load`, keep-alive and
/// new-connection load runs throughout and no request may fail. Returns
/// the events seen meanwhile.
pub(crate) fn reloads(p: &Primary, reloads: u64, load: bool) -> Vec<serde_json::Value> {
    let target = Target::Tcp(p.addr());
    let events = EventStream::start(p);
    let load = load.then(|| Load::start(target.clone(), 4, 2));
    if let Some(l) = &load {
        l.wait_for_requests(100);
    }
    for i in 0..reloads {
        let out = p.reload();
        let generation = i + 2;
        assert!(out.contains(&format!("generation {generation} serves (2 workers replaced")), "{out}");
        let last = &p.status()["last_reload"];
        assert_eq!((last["generation"].as_u64(), last["killed"].as_u64()), (Some(generation), Some(0)), "{out}");
        let pids: HashSet<i32> = p.worker_pids().into_iter().collect();
        for _ in 0..6 {
            let a = get(&target, "/").expect("a request after the reload");
            assert!(pids.contains(&pid_of(&a.body)), "answer from {} after reload {}: {pids:?}", a.body, i + 1);
        }
        if let Some(l) = &load {
            l.wait_for_requests(50);
        }
    }
    if let Some(l) = load {
        assert_no_failures(&l.finish(), "load across reloads");
    }
    let events = events.so_far();
    let killed = killed_exits(&events);
    assert!(killed.is_empty(), "no worker was killed: {killed:?}");
    events
}

// Each app twice: without load (what it does), and under keep-alive and
// new-connection load (that no request fails).

fn node_app_reloads(name: &str, load: bool) {
    let _alone = exclusive();
    let p = node(Primary::builder(app(name)).env("APP_VERSION", "1")).start();
    reloads(&p, 5, load);
}

#[test]
fn the_cluster_guides_app_commonjs_reloads() {
    node_app_reloads("cluster-cjs.js", false);
}

#[test]
fn the_cluster_guides_app_commonjs_reloads_under_load() {
    node_app_reloads("cluster-cjs.js", true);
}

#[test]
fn the_cluster_guides_app_esm_reloads() {
    node_app_reloads("cluster-esm.mjs", false);
}

#[test]
fn the_cluster_guides_app_esm_reloads_under_load() {
    node_app_reloads("cluster-esm.mjs", true);
}

#[test]
fn an_express_app_reloads() {
    if installed("express") {
        node_app_reloads("express-app.js", false);
    }
}

#[test]
fn an_express_app_reloads_under_load() {
    if installed("express") {
        node_app_reloads("express-app.js", true);
    }
}

/// What the Node preload told the primary of its drain patch in each
/// worker (`status --json`): `(ok, skipped)`.
fn drain_patch(p: &Primary) -> Vec<Option<(bool, Option<String>)>> {
    p.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let list = w["preload"].as_array()?;
            let x = list.iter().find(|x| x["patch"] == "node:http.Server drain")?;
            Some((x["ok"] == true, x["skipped"].as_str().map(String::from)))
        })
        .collect()
}

/// Rescue on (the default): the preload's drain patch is left out (the
/// cluster protocol stays), `status` says why, and rescue alone loses no
/// request of the keep-alive load across 3 reloads.
#[test]
fn with_rescue_on_the_node_drain_patch_is_skipped_and_no_request_fails() {
    if installed("express") {
        let _alone = exclusive();
        let p = node(Primary::builder(app("express-app.js")).env("APP_VERSION", "1")).start();
        reloads(&p, 3, true);
        let skipped = Some((false, Some("rescue covers this worker".to_string())));
        wait_until(Duration::from_secs(20), "each worker's skipped drain patch reported", || {
            drain_patch(&p).iter().all(|w| *w == skipped)
        });
        let text = String::from_utf8_lossy(&p.ctl(&["status"]).stdout).into_owned();
        assert!(text.contains("node:http.Server drain skipped: rescue covers this worker"), "{text}");
    }
}

/// `--rescue off`: the drain patch applies in each worker and no request
/// of the keep-alive load fails across 3 reloads.
#[test]
fn with_rescue_off_the_node_drain_patch_applies_and_no_request_fails() {
    if installed("express") {
        let _alone = exclusive();
        let p =
            node(Primary::builder(app("express-app.js")).env("APP_VERSION", "1").arg("--rescue").arg("off")).start();
        reloads(&p, 3, true);
        wait_until(Duration::from_secs(20), "each worker's drain patch reported", || {
            drain_patch(&p).iter().all(|w| *w == Some((true, None)))
        });
    }
}

#[test]
fn a_fastify_app_reloads() {
    if installed("fastify") {
        node_app_reloads("fastify-app.js", false);
    }
}

#[test]
fn a_fastify_app_reloads_under_load() {
    if installed("fastify") {
        node_app_reloads("fastify-app.js", true);
    }
}

fn two_servers(load: bool) {
    let _alone = exclusive();
    let metrics = free_port();
    let p = node(Primary::builder(app("two-servers.js")).env("METRICS_PORT", metrics.to_string())).start();
    let m = Target::Tcp(format!("127.0.0.1:{metrics}"));
    assert!(get(&m, "/").unwrap().body.contains("http_requests_total"), "the metrics server answers");
    reloads(&p, 5, load);
    assert!(get(&m, "/").unwrap().body.contains("http_requests_total"), "the metrics port survived the reloads");
    let listeners = p.status()["listeners"].to_string();
    assert!(listeners.contains(&format!(":{metrics} (bound on demand")), "{listeners}");
}

#[test]
fn an_app_with_two_servers_reloads_and_keeps_its_metrics_port() {
    two_servers(false);
}

#[test]
fn an_app_with_two_servers_reloads_under_load() {
    two_servers(true);
}

fn timer_app(load: bool) {
    let _alone = exclusive();
    let mut p = node(Primary::builder(app("timer-app.js"))).start();
    reloads(&p, 5, load);
    let events = EventStream::start(&p);
    p.signal(libc::SIGTERM);
    // Exit 0 is a stop in which no worker had to be killed: not at the
    // 30 s --shutdown-timeout (which the 10 s wait could not reach anyway).
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    let events = events.to_the_end(Duration::from_secs(10));
    let exits: Vec<_> = events.iter().filter(|e| e["event"] == "exit").collect();
    assert_eq!(exits.len(), 2, "{events:?}");
    // Disconnected, and still running (its timer), each got the stop signal.
    assert!(exits.iter().all(|e| e["signal"] == "SIGTERM" && e.get("killed").is_none()), "{events:?}");
}

#[test]
fn an_app_whose_event_loop_never_empties_reloads_and_stops_fast() {
    timer_app(false);
}

#[test]
fn an_app_whose_event_loop_never_empties_reloads_under_load() {
    timer_app(true);
}

fn pm2_app(load: bool) {
    let _alone = exclusive();
    let mut p = node(Primary::builder(app("pm2-app.js")).arg("--stop-signal").arg("SIGINT")).start();
    let mut events = reloads(&p, 5, load);
    let stop = EventStream::start(&p);
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    events.extend(stop.to_the_end(Duration::from_secs(10)));
    let exits: Vec<_> = events.iter().filter(|e| e["event"] == "exit").collect();
    assert!(exits.len() >= 2, "{events:?}");
    let crashed: Vec<_> = exits.iter().filter(|e| e.get("code").is_some_and(|c| c != 0)).collect();
    assert!(crashed.is_empty(), "a send after the channel closed must not crash the app: {crashed:?}");
    let log = p.log_text();
    // The app's own error, had it been thrown.
    assert!(!log.contains("ERR_IPC_CHANNEL_CLOSED"), "{log}");
}

#[test]
fn a_pm2_app_reloads_and_its_late_process_send_does_not_crash_it() {
    pm2_app(false);
}

#[test]
fn a_pm2_app_reloads_under_load() {
    pm2_app(true);
}

#[test]
fn an_https_app_reloads_under_load() {
    let _alone = exclusive();
    let p = node(Primary::builder(app("https-app.js"))).start();
    let url = format!("https://{}/", p.addr());
    // A Node client (keep-alive agent and new connections) for TLS load.
    let client = Command::new("node")
        .arg(root().join("tests/apps/node/https-load.js"))
        .arg(&url)
        .arg("60")
        .arg(p.dir.path("reloads-done"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The load is flowing (a fixed wait was too short on a loaded machine).
    wait_until(Duration::from_secs(30), "the HTTPS load to flow", || p.dir.path("reloads-done.flowing").exists());
    for i in 0..5 {
        let out = p.reload();
        assert!(out.contains(&format!("generation {} serves", i + 2)), "{out}");
    }
    // The client stops by itself once it has seen every reload finish.
    std::fs::write(p.dir.path("reloads-done"), "").unwrap();
    let out = client.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the load client's JSON report");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["ok"].as_u64().unwrap() > 50, "{report}");
    assert!(report["pids"].as_array().unwrap().len() >= 4, "answers came from both generations: {report}");
}

#[test]
fn an_https_app_reloads() {
    let _alone = exclusive();
    let p = node(Primary::builder(app("https-app.js"))).start();
    for i in 0..5 {
        let out = p.reload();
        assert!(out.contains(&format!("generation {} serves (2 workers replaced)", i + 2)), "{out}");
        let body = Command::new("node")
            .args(["-e", "require('https').get(process.argv[1], {rejectUnauthorized: false}, r => { let b = ''; r.on('data', c => b += c); r.on('end', () => console.log(b)); })"])
            .arg(format!("https://{}/", p.addr()))
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&body.stdout).to_string();
        let pids: HashSet<i32> = p.worker_pids().into_iter().collect();
        assert!(body.contains("hello over TLS") && pids.contains(&pid_of(&body)), "{body} from {pids:?}");
    }
}

fn on_demand(load: bool) {
    let _alone = exclusive();
    let port = free_port();
    let p = node(Primary::bare(app("cluster-cjs.js")).env("PORT", port.to_string())).start();
    let listeners = p.status()["listeners"].to_string();
    assert!(listeners.contains(&format!(":{port} (bound on demand for a listen on :{port})")), "{listeners}");
    let target = Target::Tcp(format!("127.0.0.1:{port}"));
    let l = load.then(|| Load::start(target.clone(), 3, 2));
    for _ in 0..3 {
        p.reload();
        match &l {
            Some(l) => l.wait_for_requests(30),
            None => assert!(get(&target, "/").unwrap().body.contains("hello world")),
        }
    }
    if let Some(l) = l {
        assert_no_failures(&l.finish(), "on-demand socket across reloads");
    }
    assert!(p.log_text().contains(&format!("listens on :{port}, which no --listen gives")));
}

#[test]
fn without_listen_the_apps_own_port_is_bound_on_demand_and_kept_across_reloads() {
    on_demand(false);
}

#[test]
fn without_listen_the_on_demand_port_serves_through_reloads_under_load() {
    on_demand(true);
}

#[test]
fn npm_start_is_refused_with_the_command_to_run() {
    let out = Command::new(HOTSWAP)
        .current_dir(root().join("tests/apps/node"))
        .args(["run", "-l", "127.0.0.1:0", "--", "npm", "start"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`npm` runs your app in a child process"), "{err}");
    assert!(err.contains("-- node express-app.js"), "names the start script: {err}");
}

#[test]
fn node_workers_get_the_cluster_and_pm2_variables_and_others_do_not() {
    let dir = TempDir::new("node-env");
    let p = Primary::builder(probe()).probe_dir(&dir).start();
    for id in p.worker_ids() {
        let env = &probe_report(&dir, id)["env"];
        assert!(env["NODE_UNIQUE_ID"].is_null(), "a Python worker is no cluster worker: {env}");
        assert!(env["NODE_APP_INSTANCE"].is_null(), "{env}");
        assert!(env["HOTSWAP_WORKER_SLOT"].as_str().is_some(), "every worker gets its slot: {env}");
        // A TCP listener, copies allowed: rescue covers it (the preloads' drain patches are left out).
        assert_eq!(env["HOTSWAP_RESCUE"], "on", "{env}");
        assert_eq!(env["HOTSWAP_DRAIN_PATCH"], "auto", "{env}");
        assert_eq!(env["PORT"].as_str().unwrap(), p.addr().rsplit(':').next().unwrap());
    }
    // A Node worker's grandchildren see none of it.
    let out = node(Primary::builder(app("env-child.js")).workers(1)).start();
    let a = get(&Target::Tcp(out.addr()), "/").unwrap();
    let child: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert!(child["NODE_UNIQUE_ID"].is_null(), "{child}");
    assert!(child["NODE_CHANNEL_FD"].is_null(), "{child}");
    assert!(!child["NODE_OPTIONS"].as_str().unwrap_or("").contains("preload"), "{child}");
    assert_eq!(child["NODE_APP_INSTANCE"], "0", "the slot is the app's business, and its children may read it");
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The port in status's "(bound on demand for a listen on TARGET)" line.
fn on_demand_port(p: &Primary, target: &str) -> u16 {
    let s = p.status();
    let line = s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .find(|l| l.ends_with(&format!("(bound on demand for a listen on {target})")))
        .unwrap_or_else(|| panic!("no on-demand socket for {target}: {s}"))
        .to_string();
    line.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn listen_0_gets_one_port_that_every_worker_and_generation_shares() {
    let p = node(Primary::bare(app("listen-variants.js")).env("APP_LISTEN", "zero")).start();
    let port = on_demand_port(&p, ":0");
    let target = Target::Tcp(format!("127.0.0.1:{port}"));
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let a = get(&target, "/").unwrap();
        assert!(a.body.contains(&format!("port={port}")), "{}", a.body);
        seen.insert(pid_of(&a.body));
    }
    p.reload();
    assert_eq!(on_demand_port(&p, ":0"), port, "the same port after a reload");
    let pids: HashSet<i32> = p.worker_pids().into_iter().collect();
    assert!(pids.contains(&pid_of(&get(&target, "/").unwrap().body)));
}

#[test]
fn a_listen_on_localhost_gets_the_matching_listen_entry() {
    let p = node(Primary::builder(app("listen-variants.js")).env("APP_LISTEN", "localhost")).start();
    let a = get(&Target::Tcp(p.addr()), "/").unwrap();
    assert!(a.body.contains(&format!("port={}", p.addr().rsplit(':').next().unwrap())), "{}", a.body);
    assert!(!p.status()["listeners"].to_string().contains("on demand"), "no socket of its own was bound");
}

/// `exclusive: true` is Node's "not shared": each worker binds a socket of
/// its own, so hotswap hands nothing and binds nothing for it, while the
/// app's shared server still gets the `--listen` socket.
#[test]
fn an_exclusive_listen_is_the_apps_own_socket_and_not_shared() {
    let p = node(Primary::builder(app("listen-variants.js")).env("APP_LISTEN", "exclusive")).start();
    let target = Target::Tcp(p.addr());
    let mut own = std::collections::HashMap::new();
    for _ in 0..40 {
        let a = get(&target, "/").unwrap();
        let port: u16 = a
            .body
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("own="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no own= in {:?}", a.body));
        own.insert(pid_of(&a.body), port);
    }
    let pids: HashSet<i32> = p.worker_pids().into_iter().collect();
    assert_eq!(own.len(), 2, "both workers answered on the shared socket: {own:?}");
    let ports: HashSet<u16> = own.values().copied().collect();
    assert_eq!(ports.len(), 2, "each worker has a port of its own: {own:?}");
    for (pid, port) in &own {
        assert!(pids.contains(pid), "{pid} is a worker: {pids:?}");
        let a = get(&Target::Tcp(format!("127.0.0.1:{port}")), "/").unwrap();
        assert_eq!(pid_of(&a.body), *pid, "port {port} is worker {pid}'s own socket");
    }
    let listeners = p.status()["listeners"].to_string();
    assert!(!listeners.contains("on demand"), "nothing was bound for the exclusive listen: {listeners}");
}

#[test]
fn an_ipv6_listen_is_bound_on_demand() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        assert!(std::env::var_os("CI").is_none(), "no IPv6 loopback on this machine");
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let port = free_port();
    let p = node(Primary::bare(app("listen-variants.js")).env("APP_LISTEN", "ipv6").env("APP_PORT", port.to_string()))
        .start();
    let a = get(&Target::Tcp(format!("[::1]:{port}")), "/").unwrap();
    assert!(a.body.contains(&format!("port={port}")), "{}", a.body);
    assert_eq!(on_demand_port(&p, &format!("[::1]:{port}")), port);
}

#[test]
fn a_listen_that_cannot_be_served_is_an_error_in_the_app_and_a_line_naming_the_address() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut p = node(Primary::bare(app("listen-variants.js")).env("APP_PORT", port.to_string())).no_wait().start();
    // The app does not handle the server's 'error': it dies, and the first
    // generation cannot start.
    assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(1));
    let log = p.log_text();
    assert!(log.contains(&format!("cannot listen on :{port}")), "{log}");
    assert!(log.contains("EADDRINUSE"), "the app's own error says why: {log}");
}

#[test]
fn a_socket_bound_on_demand_survives_a_self_upgrade() {
    let _alone = exclusive();
    let port = free_port();
    let p = node(Primary::bare(app("cluster-cjs.js")).env("PORT", port.to_string())).start();
    let target = Target::Tcp(format!("127.0.0.1:{port}"));
    let load = Load::start(target.clone(), 2, 1);
    load.wait_for_requests(50);
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{out:?}");
    let listeners = p.status()["listeners"].to_string();
    assert!(listeners.contains(&format!("(bound on demand for a listen on :{port})")), "kept: {listeners}");
    // The next generation gets the very socket (binding it again would fail:
    // the workers hold it).
    let reloaded = p.reload();
    assert!(reloaded.contains("generation 2 serves"), "{reloaded}");
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load across an upgrade and a reload");
}

/// A runtime directory under a `XDG_RUNTIME_DIR` (or `TMPDIR`) with a space,
/// a double quote, a backslash and non-ASCII letters in its name: Node still
/// finds the preload named in `NODE_OPTIONS` (quoted and escaped as Node
/// splits it), which runs and takes itself out of `NODE_OPTIONS`, and the
/// workers reload under load with no failed request.
#[test]
fn odd_characters_in_the_runtime_directorys_path_reach_node_intact() {
    let dir = TempDir::new("odd");
    let odd = dir.path("a b\"c\\d ünï 😀");
    std::fs::create_dir(&odd).unwrap();
    let p = node(Primary::builder(app("env-child.js"))).env("XDG_RUNTIME_DIR", odd.display().to_string()).start();
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    p.reload();
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load through a reload");
    // What a child of the app sees: the preload ran and removed itself.
    let body = get(&Target::Tcp(p.addr()), "/").unwrap().body;
    assert!(body.contains("NODE_APP_INSTANCE") && !body.contains("NODE_OPTIONS"), "{body}");
}

/// `disconnect` once per worker, as Node's cluster says it: when the
/// worker's channel closes (after the cluster `disconnect` drained it),
/// before its `exit`.
#[test]
fn events_say_disconnect_once_per_node_worker() {
    let p = node(Primary::builder(app("cluster-cjs.js"))).workers(1).start();
    let events = EventStream::start(&p);
    let load = Load::start(Target::Tcp(p.addr()), 1, 1);
    load.wait_for_requests(30);
    p.reload();
    load.wait_for_requests(30);
    assert_no_failures(&load.finish(), "load through a reload");
    let seen = events.until("reload-finished", Duration::from_secs(10));
    let kinds: Vec<&str> = seen.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["reload-started", "fork", "online", "listening", "disconnect", "exit", "reload-finished"],
        "{seen:?}"
    );
    assert_eq!(seen[4]["worker"], seen[5]["worker"]);
}

/// The ports of every "(bound on demand for a listen on TARGET)" socket.
fn on_demand_ports(p: &Primary, target: &str) -> Vec<u16> {
    let s = p.status();
    s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .filter(|l| l.ends_with(&format!("(bound on demand for a listen on {target})")))
        .map(|l| l.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse().unwrap())
        .collect()
}

/// Two `listen(0)` in one worker get two ports, as in plain Node (keyed by
/// the listen's index, as Node's primary does): each server answers on
/// its own, in every worker, and after a reload (same two ports).
#[test]
fn two_listens_on_port_0_get_two_sockets() {
    let p = node(Primary::bare(app("listen-variants.js")).env("APP_LISTEN", "zero-twice")).start();
    let ports = on_demand_ports(&p, ":0");
    assert_eq!(ports.len(), 2, "two sockets for two listen(0): {}", p.status()["listeners"]);
    assert_ne!(ports[0], ports[1]);
    let answers = |port: u16| -> HashSet<String> {
        let target = Target::Tcp(format!("127.0.0.1:{port}"));
        (0..10)
            .map(|_| {
                let body = get(&target, "/").unwrap().body;
                assert!(body.contains(&format!("port={port}")), "port {port} answered by another server: {body}");
                body.split_whitespace().next().unwrap().to_string()
            })
            .collect()
    };
    let (a, b) = (answers(ports[0]), answers(ports[1]));
    assert_eq!(a.len(), 1, "one server answers each port: {a:?}");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_ne!(a, b, "the two ports are two servers");
    p.reload();
    let mut after = on_demand_ports(&p, ":0");
    let mut before = ports.clone();
    after.sort();
    before.sort();
    assert_eq!(after, before, "a reload's workers get the same two sockets");
    assert_eq!(answers(ports[0]), a);
    assert_eq!(answers(ports[1]), b);
}

/// A worker that asks for more addresses than it may hold gets `EMFILE`
/// for the rest (and says so), and the sockets are closed once no worker
/// holds them; the app's main server keeps serving.
#[test]
fn on_demand_sockets_are_bounded_per_worker_and_released_when_closed() {
    let p = node(Primary::builder(app("listen-variants.js")).env("APP_LISTEN", "many").env("APP_EXTRA", "40")).start();
    let body = get(&Target::Tcp(p.addr()), "/").unwrap().body;
    assert!(body.contains("extra_ok=32 extra_failed=8 errors=EMFILE"), "{body}");
    let log = p.log_text();
    assert!(log.contains("already holds 32 sockets bound on demand"), "{log}");
    // Every worker closed its extra servers: no worker holds the sockets.
    wait_until(Duration::from_secs(20), "the on-demand sockets to be closed", || on_demand_ports(&p, ":0").is_empty());
    let pid = p.pid();
    assert!(fd_count(pid) < 60, "the primary holds {} fds", fd_count(pid));
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    p.reload();
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "a reload of a worker that asked for too many sockets");
    wait_until(Duration::from_secs(20), "the on-demand sockets to be closed after the reload", || {
        on_demand_ports(&p, ":0").is_empty()
    });
}
