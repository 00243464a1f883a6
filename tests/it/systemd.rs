//! systemd integration: sd_notify from the primary, socket activation of the
//! primary, per-worker NOTIFY_SOCKET readiness, and existing systemd-style
//! apps (gunicorn, a `listenfd` Rust app, a Python sd_notify app) reloaded
//! under load.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// A stand-in for systemd's notify socket.
struct NotifySink {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySink {
    fn bind(dir: &TempDir) -> (NotifySink, String) {
        let path = dir.path("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        (NotifySink { sock, seen: vec![] }, path.display().to_string())
    }

    /// Waits for a datagram containing every one of `parts`.
    fn expect(&mut self, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(m) = self.seen.iter().find(|m| parts.iter().all(|p| m.contains(p))) {
            let m = m.clone();
            self.seen.retain(|x| *x != m);
            return m;
        }
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if parts.iter().all(|p| m.contains(p)) {
                    return m;
                }
                self.seen.push(m);
            }
        }
        panic!("no notification with {parts:?}; saw {:?}", self.seen);
    }

    /// Every datagram already in the socket, without waiting (and those
    /// read earlier and not matched yet), oldest first.
    fn queued_now(&mut self) -> Vec<String> {
        let mut all = std::mem::take(&mut self.seen);
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            all.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.sock.set_nonblocking(false).unwrap();
        all
    }
}

#[test]
fn the_primary_speaks_sd_notify() {
    let dir = TempDir::new("notify");
    let (mut sink, path) = NotifySink::bind(&dir);
    let p = Primary::builder(rust_worker()).env("NOTIFY_SOCKET", path).env("WATCHDOG_USEC", "200000").start();
    let ready = sink.expect(&["READY=1"], Duration::from_secs(30));
    assert!(ready.contains(&format!("MAINPID={}", p.pid())), "{ready}");
    assert!(ready.contains("STATUS=generation 1, 2/2 workers ready"), "{ready}");
    sink.expect(&["WATCHDOG=1"], Duration::from_secs(30));

    // SIGHUP and `hotswap reload` alike: RELOADING=1 with a fresh
    // MONOTONIC_USEC, then READY=1 when done.
    p.signal(libc::SIGHUP);
    let r = sink.expect(&["RELOADING=1"], Duration::from_secs(30));
    assert!(r.contains("MONOTONIC_USEC="), "{r}");
    sink.expect(&["EXTEND_TIMEOUT_USEC="], Duration::from_secs(30));
    let done = sink.expect(&["READY=1"], Duration::from_secs(30));
    assert!(done.contains("STATUS=generation 2, 2/2 workers ready; last reload ok"), "{done}");
    p.reload();
    sink.expect(&["RELOADING=1", "MONOTONIC_USEC="], Duration::from_secs(30));
    sink.expect(&["READY=1", "generation 3"], Duration::from_secs(30));
    assert!(p.ctl(&["stop"]).status.success());
    // systemd is asked to wait for the drain: --shutdown-timeout (30 s by
    // default) plus 10 s, whatever the unit's TimeoutStopSec=.
    sink.expect(&["STOPPING=1", "EXTEND_TIMEOUT_USEC=40000000"], Duration::from_secs(30));
}

/// What systemd sees of a reload asked by the shipped unit's
/// `ExecReload=hotswap reload`: `RELOADING=1` (with `MONOTONIC_USEC`), then
/// `READY=1` already in systemd's socket when `hotswap reload` exits, with
/// that exit code saying how the reload went. Any systemd from 252 on
/// leaves the reload state at that exit and fails the job on exit 1.
#[test]
fn a_reload_asked_over_the_control_socket_ends_with_ready_before_the_client_exits() {
    let dir = TempDir::new("notify");
    let (mut sink, path) = NotifySink::bind(&dir);
    let start = dir.path("start.sh");
    script(&start, &format!("exec {}", rust_worker()[0]));
    let p = Primary::builder(vec![start.display().to_string()]).env("NOTIFY_SOCKET", path).start();
    sink.expect(&["READY=1"], Duration::from_secs(30));
    sink.queued_now();

    let sequence = |sink: &mut NotifySink| -> Vec<String> {
        sink.queued_now().into_iter().filter(|m| m.contains("READY=1") || m.contains("RELOADING=1")).collect()
    };
    assert!(p.ctl(&["reload"]).status.success());
    let seen = sequence(&mut sink);
    assert_eq!(seen.len(), 2, "RELOADING=1 then READY=1, before `hotswap reload` exited: {seen:?}");
    assert!(seen[0].contains("RELOADING=1") && seen[0].contains("MONOTONIC_USEC="), "{seen:?}");
    assert!(seen[1].contains("READY=1") && seen[1].contains("last reload ok"), "{seen:?}");

    script(&start, "exit 1");
    let out = p.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "a failed reload fails ExecReload");
    let seen = sequence(&mut sink);
    assert_eq!(seen.len(), 2, "RELOADING=1 then READY=1, before `hotswap reload` exited: {seen:?}");
    assert!(seen[0].contains("RELOADING=1"), "{seen:?}");
    assert!(seen[1].contains("READY=1") && seen[1].contains("last reload FAILED"), "{seen:?}");
}

#[test]
fn an_abstract_notify_socket_works() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("hotswap-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _p = Primary::builder(rust_worker()).env("NOTIFY_SOCKET", format!("@{name}")).start();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).expect("READY=1 on the abstract socket");
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            break;
        }
    }
}

#[test]
fn an_unreachable_notify_socket_is_a_clear_error() {
    let dir = TempDir::new("notify");
    let out = Command::new(HOTSWAP)
        .args(["run", "-l", "127.0.0.1:0", "--control"])
        .arg(dir.path("c.sock"))
        .args(["--", "true"])
        .env("NOTIFY_SOCKET", dir.path("missing.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOTIFY_SOCKET=") && err.contains("cannot connect"), "{err}");
}

#[test]
fn socket_activation_survives_a_restart_of_hotswap_itself() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let activated = || Primary::bare(rust_worker()).inherit(listener.as_raw_fd(), "web").start();
    let mut first = activated();
    assert_eq!(first.addr(), addr, "the inherited socket is used, not a new one");

    // New connections throughout: while hotswap is down they wait in the
    // kernel's queue (systemd, here the test, keeps the socket).
    let load = Load::start(Target::Tcp(addr.clone()), 0, 3);
    load.wait_for_requests(50);
    assert!(first.ctl(&["stop"]).status.success());
    assert_eq!(first.wait_exit(Duration::from_secs(10)), Some(0));
    // Part of the scenario: hotswap stays down for a while.
    std::thread::sleep(Duration::from_millis(300));
    let second = activated();
    assert_eq!(second.addr(), addr);
    load.wait_for_requests(50);
    let records = load.finish();
    assert_no_failures(&records, "new connections across a restart of a socket-activated hotswap");
}

#[test]
fn inherited_sockets_match_listen_entries_by_name() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // `web=` names the inherited socket; the address given does not matter.
    let p = Primary::bare(rust_worker())
        .arg("-l")
        .arg("web=127.0.0.1:1")
        .workers(1)
        .inherit(listener.as_raw_fd(), "web")
        .start();
    assert_eq!(p.status()["listeners"], serde_json::json!([addr]));
    assert_eq!(get(&Target::Tcp(addr), "/").unwrap().status, 200);
}

#[test]
fn an_inherited_fd_that_is_not_listening_is_refused_clearly() {
    let refused = |fd| {
        let mut p = Primary::bare(vec!["true".into()]).workers(1).inherit(fd, "web").no_wait().start();
        assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1));
        p.log_text()
    };
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let log = refused(udp.as_raw_fd());
    assert!(log.contains("inherited fd 3 (\"web\")") && log.contains("not a stream socket"), "{log}");

    let tcp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let log = refused(tcp.as_raw_fd());
    assert!(log.contains("inherited fd 3 (\"web\")") && log.contains("is not listening"), "{log}");
}

/// An app under reload with load on it: zero failed requests.
fn reloads_cleanly(p: &Primary, reloads: u32) {
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(100);
    for _ in 0..reloads {
        p.reload();
        load.wait_for_requests(100);
    }
    let records = load.finish();
    assert_no_failures(&records, "load across reloads");
    let last = records.last().unwrap().result.clone().unwrap();
    assert_eq!(last, u64::from(reloads) + 1, "the newest generation answers");
}

#[test]
fn python_sd_notify_app_is_ready_by_notify_and_stopped_by_sigterm() {
    let app = root().join("contrib/apps/python-notify/app.py").display().to_string();
    let p = Primary::builder(vec!["python3".into(), app]).arg("--ready").arg("notify").start();
    let s = p.status();
    assert!(Primary::ready_workers(&s).iter().all(|w| w["ready_via"] == "notify"), "{s}");
    reloads_cleanly(&p, 3);
    assert!(p.log_text().contains("stopping (SIGTERM sent)"));
}

/// The `listenfd` crate's README app (tokio), unchanged: ready by the
/// default readiness (its listener is in tokio's epoll set), drained on
/// SIGTERM, 5 reloads under keep-alive and new-connection load.
#[test]
fn rust_listenfd_app_reloads_without_a_failed_request() {
    let exe = std::path::Path::new(HOTSWAP).parent().unwrap().join("examples/listenfd-app");
    let p = Primary::builder(vec![exe.display().to_string()]).start();
    crate::accepting::reloads_cleanly(&p, 3, "accepting");
    assert!(p.log_text().contains("listenfd-app: drained"), "{}", p.log_text());
}

#[test]
fn gunicorn_reloads_under_load() {
    let app_dir = root().join("contrib/apps/gunicorn");
    let cmd = vec![
        "gunicorn".into(),
        "--chdir".into(),
        app_dir.display().to_string(),
        "-w".into(),
        "2".into(),
        "--graceful-timeout".into(),
        "10".into(),
        "app:app".into(),
    ];
    // The default readiness (auto): gunicorn says READY=1 before its sync
    // workers accept; it is ready once they do.
    let p = Primary::builder(cmd).workers(1).start();
    crate::accepting::reloads_cleanly(&p, 3, "notify");
}

#[test]
fn ready_delay_mode_waits_before_replacing() {
    let exe = std::path::Path::new(HOTSWAP).parent().unwrap().join("examples/listenfd-app");
    let p = Primary::builder(vec![exe.display().to_string()]).arg("--ready").arg("delay:300ms").workers(1).start();
    let t = Instant::now();
    p.reload();
    assert!(t.elapsed() >= Duration::from_millis(300));
    let s = p.status();
    assert!(Primary::ready_workers(&s).iter().all(|w| w["ready_via"] == "assumed"), "{s}");
}

#[test]
fn fds_sent_on_a_workers_notify_socket_are_closed() {
    // sd_notify_barrier() waits for the receiver to close the fd it sends.
    let p = Primary::builder(vec!["python3".into(), fixture("barrier.py")])
        .workers(1)
        .arg("--ready")
        .arg("notify")
        .arg("--ready-timeout")
        .arg("10s")
        .start();
    wait_until(Duration::from_secs(5), "STATUS=past the barrier in the log", || {
        p.log_text().contains("status: past the barrier")
    });
}

/// The service a socket unit activates: `Service=`, or its own name.
fn activated_service(socket_unit: &str, text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Service="))
        .map(|s| s.trim().replace("%i", ""))
        .unwrap_or_else(|| socket_unit.replace(".socket", ".service"))
}

#[test]
fn every_shipped_service_has_its_socket_and_the_units_verify() {
    let units = root().join("contrib/systemd");
    let mut services = Vec::new();
    let mut pairs = Vec::new();
    for e in std::fs::read_dir(&units).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".service") {
            services.push(name);
        } else if name.ends_with(".socket") {
            let text = std::fs::read_to_string(units.join(&name)).unwrap();
            pairs.push((name.clone(), activated_service(&name, &text)));
        }
    }
    services.sort();
    for service in &services {
        assert!(
            pairs.iter().any(|(_, s)| s == service),
            "no socket unit in contrib/systemd activates {service}: {pairs:?}"
        );
    }
    for (socket, service) in &pairs {
        assert!(services.contains(service), "{socket} activates {service}, which is not shipped");
    }

    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        // Straight to stderr, past the test harness's capture, so the skip shows.
        #[allow(clippy::explicit_write)]
        writeln!(
            std::io::stderr(),
            "systemd::every_shipped_service_has_its_socket_and_the_units_verify: systemd-analyze verify skipped: \
             systemd-analyze is not installed"
        )
        .unwrap();
        return;
    };
    let version: u32 =
        String::from_utf8_lossy(&version.stdout).split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // The units as installed, with ExecStart= and ExecReload= pointing at
    // this build (the shipped units name `hotswap`, found in systemd's PATH).
    let dir = TempDir::new("units");
    for (socket, service) in &pairs {
        for unit in [socket, service] {
            let text = std::fs::read_to_string(units.join(unit))
                .unwrap()
                .replace("ExecStart=hotswap ", &format!("ExecStart={HOTSWAP} "))
                .replace("ExecReload=hotswap ", &format!("ExecReload={HOTSWAP} "));
            std::fs::write(dir.path(unit), text).unwrap();
        }
    }
    for (socket, service) in &pairs {
        let instance = |u: &str| dir.path(&u.replace("@.", "@myapp.")).display().to_string();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(instance(socket))
            .arg(instance(service))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "systemd-analyze verify {socket} {service} (systemd {version}): {said}");
        // verify loads the machine's units too: what it says of another
        // package's unit file (unicorn's, installed for the tests) is not ours.
        let ours = dir.0.display().to_string();
        let said: Vec<&str> = said.lines().filter(|l| !l.starts_with('/') || l.starts_with(&ours)).collect();
        assert!(said.is_empty(), "systemd {version} warns about {socket} + {service}: {said:#?}");

        // The hardening keeps its score (3.0 as shipped, running as root).
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(instance(service))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score = text
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for ")?.1.split_once(": ")?.1.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok());
        match score {
            Some(score) => {
                assert!(score <= 3.5, "systemd-analyze security {service}: exposure {score}, was 3.0:\n{text}")
            }
            None => {
                #[allow(clippy::explicit_write)]
                writeln!(std::io::stderr(), "systemd-analyze security scored nothing (systemd {version}): {text}")
                    .unwrap();
            }
        }
    }
}

/// The shipped service works on systemd 252 (Debian 12) as well as later
/// ones, whatever systemd this machine has: no key that 252 does not know,
/// a reload whose failure systemd sees, one runtime directory per instance,
/// and a stop timeout that leaves room for the workers' drain.
#[test]
fn the_shipped_service_suits_systemd_252_and_later() {
    let text = std::fs::read_to_string(root().join("contrib/systemd/hotswap@.service")).unwrap();
    let keys: Vec<(&str, &str)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let value = |key: &str| keys.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    for (k, v) in &keys {
        assert!(*k != "ReloadSignal" && *v != "notify-reload", "{k}={v} needs systemd 253");
    }
    assert_eq!(value("Type"), Some("notify"));
    let control = |cmd: &str| {
        let line = value(cmd).unwrap_or_else(|| panic!("no {cmd}="));
        line.split_once("--control ").map(|(_, rest)| rest.split_whitespace().next().unwrap().to_string())
    };
    let exec_reload = value("ExecReload").expect("ExecReload=");
    assert!(exec_reload.starts_with("hotswap reload "), "{exec_reload}");
    assert_eq!(control("ExecStart"), control("ExecReload"), "ExecReload= reaches the primary ExecStart= runs");
    assert_eq!(value("RuntimeDirectory"), Some("hotswap/%i"));
    assert!(
        control("ExecStart").unwrap().starts_with("/run/hotswap/%i/"),
        "the control socket is in the instance's own directory"
    );
    let stop = humantime::parse_duration(value("TimeoutStopSec").unwrap()).unwrap_or_else(|_| {
        Duration::from_secs(value("TimeoutStopSec").unwrap().parse().expect("TimeoutStopSec in seconds"))
    });
    let default = hotswap::options::Settings::resolve(hotswap::options::Options {
        command: vec!["x".into()],
        ..Default::default()
    })
    .unwrap();
    assert!(
        stop >= default.shutdown_timeout + Duration::from_secs(10),
        "TimeoutStopSec={stop:?} leaves no room for --shutdown-timeout {:?} + 10 s",
        default.shutdown_timeout
    );
}
