//! systemd integration: sd_notify from the primary, socket activation of the
//! primary, per-worker NOTIFY_SOCKET readiness, and existing systemd-style
//! apps (gunicorn, a `listenfd` Rust app, a Python sd_notify app) reloaded
//! under load.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
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
}

#[test]
fn the_primary_speaks_sd_notify() {
    let dir = TempDir::new("notify");
    let (mut sink, path) = NotifySink::bind(&dir);
    let p = Primary::builder(rust_worker()).env("NOTIFY_SOCKET", path).env("WATCHDOG_USEC", "200000").start();
    let ready = sink.expect(&["READY=1"], Duration::from_secs(5));
    assert!(ready.contains(&format!("MAINPID={}", p.pid())), "{ready}");
    assert!(ready.contains("STATUS=generation 1, 2/2 workers ready"), "{ready}");
    sink.expect(&["WATCHDOG=1"], Duration::from_secs(2));

    // SIGHUP and `hotswap reload` alike: RELOADING=1 with a fresh
    // MONOTONIC_USEC, then READY=1 when done.
    p.signal(libc::SIGHUP);
    let r = sink.expect(&["RELOADING=1"], Duration::from_secs(5));
    assert!(r.contains("MONOTONIC_USEC="), "{r}");
    sink.expect(&["EXTEND_TIMEOUT_USEC="], Duration::from_secs(5));
    let done = sink.expect(&["READY=1"], Duration::from_secs(10));
    assert!(done.contains("STATUS=generation 2, 2/2 workers ready; last reload ok"), "{done}");
    p.reload();
    sink.expect(&["RELOADING=1", "MONOTONIC_USEC="], Duration::from_secs(5));
    sink.expect(&["READY=1", "generation 3"], Duration::from_secs(5));
    p.ctl(&["stop"]);
    sink.expect(&["STOPPING=1"], Duration::from_secs(5));
}

#[test]
fn a_failed_reload_still_ends_with_ready() {
    let dir = TempDir::new("notify");
    let (mut sink, path) = NotifySink::bind(&dir);
    let start = dir.path("start.sh");
    script(&start, &format!("exec {}", rust_worker()[0]));
    let p = Primary::builder(vec![start.display().to_string()]).env("NOTIFY_SOCKET", path).start();
    sink.expect(&["READY=1"], Duration::from_secs(5));
    script(&start, "exit 1");
    assert!(!p.ctl(&["reload"]).status.success());
    sink.expect(&["RELOADING=1"], Duration::from_secs(5));
    let done = sink.expect(&["READY=1"], Duration::from_secs(5));
    assert!(done.contains("last reload FAILED"), "{done}");
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

/// Starts `hotswap run ARGS` the way systemd socket activation does: the
/// socket at fd 3, `LISTEN_PID` its own pid.
fn activated(fd: i32, names: &str, dir: &TempDir, args: &[String]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path("primary.log")).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$@\"")
        .arg("sh")
        .arg(HOTSWAP)
        .arg("run")
        .arg("--control")
        .arg(dir.path("control.sock"))
        .args(args)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", names)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set.
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn status_of(dir: &TempDir) -> Option<serde_json::Value> {
    let out =
        Command::new(HOTSWAP).args(["status", "--json", "--control"]).arg(dir.path("control.sock")).output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn socket_activation_survives_a_restart_of_hotswap_itself() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = TempDir::new("activate");
    let args: Vec<String> = ["-w", "2", "--"].iter().map(|s| s.to_string()).chain(rust_worker()).collect();
    let mut first = activated(listener.as_raw_fd(), "web", &dir, &args);
    assert!(
        wait_until(Duration::from_secs(10), || status_of(&dir).is_some_and(|s| Primary::ready_workers(&s).len() == 2))
    );
    let s = status_of(&dir).unwrap();
    assert_eq!(s["listeners"][0], addr.as_str(), "the inherited socket is used, not a new one");

    // New connections throughout: while hotswap is down they wait in the
    // kernel's queue (systemd, here the test, keeps the socket).
    let load = Load::start(Target::Tcp(addr.clone()), 0, 3);
    std::thread::sleep(Duration::from_millis(300));
    assert!(Command::new(HOTSWAP)
        .args(["stop", "--control"])
        .arg(dir.path("control.sock"))
        .status()
        .unwrap()
        .success());
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut second = activated(listener.as_raw_fd(), "web", &dir, &args);
    assert!(
        wait_until(Duration::from_secs(10), || status_of(&dir).is_some_and(|s| Primary::ready_workers(&s).len() == 2))
    );
    std::thread::sleep(Duration::from_millis(300));
    let records = load.finish();
    assert_no_failures(&records, "new connections across a restart of a socket-activated hotswap");
    let _ = second.kill();
    let _ = second.wait();
}

#[test]
fn inherited_sockets_match_listen_entries_by_name() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = TempDir::new("activate");
    // `web=` names the inherited socket; the address given does not matter.
    let args: Vec<String> =
        ["-l", "web=127.0.0.1:1", "-w", "1", "--"].iter().map(|s| s.to_string()).chain(rust_worker()).collect();
    let mut child = activated(listener.as_raw_fd(), "web", &dir, &args);
    assert!(
        wait_until(Duration::from_secs(10), || status_of(&dir).is_some_and(|s| Primary::ready_workers(&s).len() == 1))
    );
    assert_eq!(status_of(&dir).unwrap()["listeners"][0], addr.as_str());
    assert_eq!(get(&Target::Tcp(addr), "/").unwrap().status, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_inherited_fd_that_is_not_listening_is_refused_clearly() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("activate");
    let args: Vec<String> = ["-w", "1", "--", "true"].iter().map(|s| s.to_string()).collect();
    let mut child = activated(udp.as_raw_fd(), "web", &dir, &args);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(dir.path("primary.log")).unwrap();
    assert!(log.contains("inherited fd 3 (\"web\")") && log.contains("not a stream socket"), "{log}");

    let tcp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let mut child = activated(tcp.as_raw_fd(), "web", &dir, &args);
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let log = std::fs::read_to_string(dir.path("primary.log")).unwrap();
    assert!(log.contains("is not listening"), "{log}");
}

/// An app under reload with load on it: zero failed requests.
fn reloads_cleanly(p: &Primary, reloads: u32) {
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..reloads {
        p.reload();
        std::thread::sleep(Duration::from_millis(200));
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
    assert!(p.log_text().contains("ready in") && p.log_text().contains("(Notify)"), "{}", p.log_text());
    reloads_cleanly(&p, 3);
    assert!(p.log_text().contains("stopping (SIGTERM sent)"));
}

#[test]
fn rust_listenfd_app_reloads_with_ready_none() {
    let exe = std::path::Path::new(HOTSWAP).parent().unwrap().join("examples/listenfd-app");
    let p = Primary::builder(vec![exe.display().to_string()]).arg("--ready").arg("none").start();
    reloads_cleanly(&p, 3);
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
    let p = Primary::builder(cmd).workers(1).arg("--ready").arg("notify").start();
    reloads_cleanly(&p, 3);
}

#[test]
fn ready_delay_mode_waits_before_replacing() {
    let exe = std::path::Path::new(HOTSWAP).parent().unwrap().join("examples/listenfd-app");
    let p = Primary::builder(vec![exe.display().to_string()]).arg("--ready").arg("delay:300ms").workers(1).start();
    let t = Instant::now();
    p.reload();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(p.log_text().contains("(Assumed)"));
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
    assert!(p.log_text().contains("status: past the barrier"), "{}", p.log_text());
}
