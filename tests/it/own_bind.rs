//! Servers that bind their own port run unchanged under `-l` alone: a
//! worker's `bind` of the `-l` address gets hotswap's socket (the bind
//! filter, docs/own-bind.md); every other bind stays the program's own;
//! where the filter is refused the server fails as it always did, and the
//! log says why.

use std::net::TcpListener;
use std::time::Duration;

use crate::common::*;

/// A port free right now on 127.0.0.1, for servers whose port is fixed on
/// their command line.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `hotswap run -l 127.0.0.1:PORT -w 2 -- COMMAND`, and nothing more
/// (but `--quiesce off` under `QUIESCE=off`).
fn start(port: u16, command: Vec<String>) -> Primary {
    let mut b = Primary::bare(command).arg("-l").arg(format!("127.0.0.1:{port}"));
    if quiesce_off() {
        b = b.arg("--quiesce").arg("off");
    }
    started(b, 2)
}

/// Started, and its `n` workers ready: Python's start-up alone takes
/// seconds on a loaded machine, so a minute and a half is allowed.
fn started(b: PrimaryBuilder, n: usize) -> Primary {
    let mut p = b.workers(n as u32).no_wait().start();
    p.wait_ready(n, Duration::from_secs(90));
    p
}

/// 3 reloads under new-connection load: every reload serves, and each
/// worker was given hotswap's socket. Returns the records.
fn reloads_under_load(p: &Primary, port: u16) -> Vec<Record> {
    let load = Load::start(Target::Tcp(format!("127.0.0.1:{port}")), 0, 4);
    load.wait_for_requests(40);
    for _ in 0..3 {
        let answer = p.reload();
        assert!(answer.contains("serves (2 workers replaced)"), "{answer}; log:\n{}", p.log_text());
        load.wait_for_requests(40);
    }
    let records = load.finish();
    let log = p.log_text();
    let given = log.matches(&format!("it gets hotswap's socket 127.0.0.1:{port} (fd 3)")).count();
    assert_eq!(given, 8, "each of the 8 workers was given the socket; log:\n{log}");
    records
}

/// The Go fixture that binds its own port, built once per test run (the
/// build cache in target/, so CI builds it once).
fn go_own_bind() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = std::env::temp_dir().join(format!("hotswap-test-own-bind-go-{}", std::process::id()));
            let status = std::process::Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg("main.go")
                .current_dir(root().join("tests/fixtures/own_bind_go"))
                .env("GO111MODULE", "off")
                .env("GOCACHE", root().join("target/go-cache"))
                .status()
                .expect("go is not installed (.ci/run installs golang-go)");
            assert!(status.success(), "building tests/fixtures/own_bind_go");
            out.display().to_string()
        })
        .clone()
}

/// Python's `http.server` on a fixed port, as its docs run it, only `-l`
/// given. It has no graceful stop: SIGTERM (which it does not catch) ends
/// it with the responses its handler threads are writing (4 to 7 of 5,000
/// to 6,700 requests failed across 3 reloads before hotswap quiesced such
/// workers; `QUIESCE=off` runs it so). Each old worker is told to go only
/// once it answers nothing, held stopped meanwhile: 0 failed.
#[test]
fn python_http_server_on_a_fixed_port_reloads_without_a_failed_request() {
    let port = free_port();
    let command = ["python3", "-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"];
    let p = start(port, command.iter().map(|s| s.to_string()).collect());
    let records = reloads_under_load(&p, port);
    let failed = records.iter().filter(|r| r.result.is_err()).count();
    eprintln!("http.server: {failed} of {} requests failed", records.len());
    assert_quiesced(&p, 6);
    assert!(p.log_text().contains("does not drain (Python http.server has no graceful stop)"), "{}", p.log_text());
    assert_no_failures(&records, "reloads of Python's http.server");
}

/// Each of the `n` retired workers was quiesced and stopped when it
/// answered nothing (not given up on at the bound).
fn assert_quiesced(p: &Primary, n: usize) {
    if quiesce_off() {
        return;
    }
    let log = p.log_text();
    assert_eq!(log.matches(": does not drain (").count(), n, "{log}");
    assert_eq!(log.matches("answers nothing after").count(), n, "{log}");
    assert!(!log.contains("stopping it anyway"), "{log}");
}

/// `QUIESCE=off` in the test's environment runs the servers above with
/// `--quiesce off`: what they lose without it.
fn quiesce_off() -> bool {
    std::env::var("QUIESCE").is_ok_and(|v| v == "off")
}

/// Go's `ListenAndServe(":PORT")`: a dual-stack `[::]:PORT` bind, given
/// the `-l 127.0.0.1:PORT` socket.
#[test]
fn go_listen_and_serve_reloads_without_a_failed_request() {
    let port = free_port();
    let p = start(port, vec![go_own_bind(), format!(":{port}")]);
    let records = reloads_under_load(&p, port);
    assert_no_failures(&records, "reloads of Go's ListenAndServe");
    eprintln!("{} requests, 0 failed", records.len());
    assert!(p.log_text().contains(&format!("binds [::]:{port} itself")), "{}", p.log_text());
    // Go's runtime catches SIGTERM (the fixture drains on it): not quiesced.
    assert!(!p.log_text().contains("does not drain"), "{}", p.log_text());
}

/// A bind of a port hotswap does not listen on is the program's own: its
/// clients reach it there, and hotswap's listeners are unchanged.
#[test]
fn a_bind_of_another_port_stays_the_programs_own() {
    let (port, own) = (free_port(), free_port());
    let p = Primary::bare(vec![go_own_bind(), format!("127.0.0.1:{port}")])
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .env("OWN_ADDR", format!("127.0.0.1:{own}"));
    let p = started(p, 1);
    let target = Target::Tcp(format!("127.0.0.1:{own}"));
    let mut answer = Err(String::new());
    wait_until(Duration::from_secs(10), "the server's own port answers", || {
        answer = get(&target, "/");
        answer.is_ok()
    });
    assert_eq!(answer.unwrap().body, "own\n");
    assert!(get(&Target::Tcp(format!("127.0.0.1:{port}")), "/").unwrap().body.starts_with("generation=1"));
    let log = p.log_text();
    assert!(!log.contains(&format!("binds 127.0.0.1:{own}")), "{log}");
    let listeners = p.status()["listeners"].to_string();
    assert!(!listeners.contains(&own.to_string()), "{listeners}");
}

/// seccomp(2) refused (a container's seccomp profile): a warning that
/// names the worker and the reason, and the server fails as without
/// hotswap's help (`EADDRINUSE`), nothing worse: the first generation
/// cannot start, the primary exits 1.
#[test]
fn a_refused_filter_is_said_and_the_server_fails_as_before() {
    let port = free_port();
    let mut p = Primary::bare(vec!["python3".into(), "-m".into(), "http.server".into(), port.to_string()])
        .wrap(&["python3", &fixture("deny_syscall.py"), "seccomp"])
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .no_wait()
        .start();
    assert_eq!(p.wait_exit(Duration::from_secs(90)), Some(1), "log:\n{}", p.log_text());
    let log = p.log_text();
    assert!(log.contains("runs without bind interception (installing a seccomp filter was refused"), "{log}");
    let warning = log.lines().find(|l| l.contains("runs without bind interception")).unwrap();
    assert!(warning.contains("WARN") && warning.contains("[w1 g1"), "{warning}");
    assert!(log.contains("Address already in use"), "the server's own error: {log}");
    assert!(log.contains("the first generation cannot start"), "{log}");
}

/// `--bind-intercept on` where it is refused: the worker does not start,
/// and the reason is the error.
#[test]
fn a_refused_filter_under_on_is_an_error() {
    let port = free_port();
    let mut p = Primary::bare(vec!["sleep".into(), "60".into()])
        .wrap(&["python3", &fixture("deny_syscall.py"), "seccomp"])
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--bind-intercept")
        .arg("on")
        .no_wait()
        .start();
    assert_eq!(p.wait_exit(Duration::from_secs(90)), Some(1), "log:\n{}", p.log_text());
    let log = p.log_text();
    assert!(log.contains("--bind-intercept on: [w1 g1"), "{log}");
    assert!(log.contains("installing a seccomp filter was refused"), "{log}");
}

/// A server that binds with `SO_REUSEPORT` under `--balance slots` gets
/// its slot's socket, so connections the kernel gives that slot are
/// served (without the filter it would join hotswap's group with a socket
/// of its own and leave the slot's socket unserved).
#[test]
fn a_reuseport_server_under_balance_slots_gets_its_slot_socket() {
    let port = free_port();
    let server = format!(
        "import http.server, socketserver, sys\n\
         class S(http.server.ThreadingHTTPServer):\n    allow_reuse_port = True\n\
         S(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()\n"
    );
    let p = Primary::bare(vec!["python3".into(), "-c".into(), server.clone()])
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--balance")
        .arg("slots");
    let p = started(p, 2);
    let log = p.log_text();
    assert_eq!(log.matches("it gets hotswap's socket").count(), 2, "{log}");
    let target = Target::Tcp(format!("127.0.0.1:{port}"));
    for i in 0..40 {
        let a = get(&target, "/").unwrap_or_else(|e| panic!("request {i}: {e}; log:\n{}", p.log_text()));
        assert_eq!(a.status, 200);
    }
    drop(p);
    // Without the filter it joins the group with a socket of its own: the
    // log says what that does and what to do.
    let port = free_port();
    let server = server.replace(&format!("{}", server_port(&server)), &port.to_string());
    let p = Primary::bare(vec!["python3".into(), "-c".into(), server])
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--balance")
        .arg("slots")
        .arg("--bind-intercept")
        .arg("off")
        .no_wait()
        .start();
    wait_until(Duration::from_secs(60), "the warning about the SO_REUSEPORT group", || {
        p.log_text().contains("and joined the group of hotswap's slot sockets")
    });
    assert!(p.log_text().contains("Bind interception, which would give its bind the slot's socket, is off"));
}

/// The port in the server's script (`('127.0.0.1', PORT)`).
fn server_port(script: &str) -> u16 {
    script.split("'127.0.0.1', ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap()
}

/// With the filter off, the server fails as it always did (`EADDRINUSE`),
/// and under `--ready delay:` the failure does not recommend `--ready
/// delay:` (it did): it points at the server's own output and at bind
/// interception.
#[test]
fn without_the_filter_the_bind_fails_and_the_delay_error_says_why() {
    let port = free_port();
    let mut p = Primary::bare(vec!["python3".into(), "-m".into(), "http.server".into(), port.to_string()])
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--bind-intercept")
        .arg("off")
        .arg("--ready")
        .arg("delay:90s")
        .no_wait()
        .start();
    assert_eq!(p.wait_exit(Duration::from_secs(90)), Some(1), "log:\n{}", p.log_text());
    let log = p.log_text();
    assert!(log.contains("Address already in use"), "{log}");
    let error = log.lines().find(|l| l.contains("the first generation cannot start")).unwrap();
    assert!(!error.contains("use --ready") && !error.contains("--ready delay:DUR"), "{error}");
    assert!(error.contains("ended before: its own output above says why"), "{error}");
    assert!(error.contains("docs/own-bind.md"), "{error}");
}

/// A self-upgrade hands the filter over: a worker started before it that
/// binds after it is answered by the new image (its bind of the `-l`
/// address gets hotswap's socket, its bind of another port is its own),
/// rather than failing with `ENOSYS` or hanging.
#[test]
fn binds_after_a_self_upgrade_are_answered_by_the_new_image() {
    let (port, own) = (free_port(), free_port());
    let dir = TempDir::new("own-bind-upgrade");
    let trigger = dir.path("bind-now");
    let server = format!(
        "import http.server, os, threading, time\n\
         H = http.server.SimpleHTTPRequestHandler\n\
         def serve(addr):\n    s = http.server.ThreadingHTTPServer(addr, H)\n    \
         threading.Thread(target=s.serve_forever, daemon=True).start()\n\
         serve(('127.0.0.1', {port}))\n\
         while not os.path.exists({trigger:?}): time.sleep(0.05)\n\
         serve(('127.0.0.1', {port}))\n\
         serve(('127.0.0.1', {own}))\n\
         print('bound after the upgrade', flush=True)\n\
         time.sleep(600)\n"
    );
    let p = Primary::bare(vec!["python3".into(), "-c".into(), server]).arg("-l").arg(format!("127.0.0.1:{port}"));
    let p = started(p, 1);
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stderr), p.log_text());
    std::fs::write(&trigger, b"").unwrap();
    wait_until(Duration::from_secs(30), "the binds after the upgrade", || {
        p.log_text().contains("bound after the upgrade")
    });
    let log = p.log_text();
    assert_eq!(log.matches(&format!("it gets hotswap's socket 127.0.0.1:{port}")).count(), 2, "{log}");
    assert_eq!(get(&Target::Tcp(format!("127.0.0.1:{own}")), "/").unwrap().status, 200);
    assert_eq!(get(&Target::Tcp(format!("127.0.0.1:{port}")), "/").unwrap().status, 200);
}

/// A JDK app as they are commonly written: `HttpServer.create` on a fixed
/// port (the JDK binds it itself: an IPv6 socket, dual-stack, bound to
/// `[::]:PORT`), a small thread pool, and a shutdown hook that calls
/// `server.stop(2)`, the app's own graceful stop on SIGTERM (it closes the
/// listener, lets exchanges in progress finish for up to 2 s, then closes
/// the rest).
const JDK_APP: &str = r#"import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.concurrent.Executors;

public class App {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        byte[] body = ("generation=" + System.getenv("HOTSWAP_GENERATION") + "\n").getBytes();
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/", exchange -> {
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.setExecutor(Executors.newFixedThreadPool(4));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(2)));
        server.start();
        System.out.println("listening on " + server.getAddress());
    }
}
"#;

/// The directory of the compiled [`JDK_APP`] (`javac` once per test run),
/// or None where the JDK is not installed (a failure under CI).
fn jdk_app() -> Option<String> {
    if !installed("javac") || !installed("java") {
        return None;
    }
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hotswap-test-own-bind-jdk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("App.java"), JDK_APP).unwrap();
        let status = std::process::Command::new("javac").arg("App.java").current_dir(&dir).status().unwrap();
        assert!(status.success(), "javac App.java in {}", dir.display());
        dir.display().to_string()
    });
    Some(dir.clone())
}

/// `java -cp DIR App PORT` under `hotswap run -l 127.0.0.1:PORT -w N`,
/// `--ready-timeout 60s` (a JVM's start-up on a loaded machine).
fn jdk_primary(dir: &str, port: u16) -> PrimaryBuilder {
    Primary::bare(vec!["java".into(), "-cp".into(), dir.into(), "App".into(), port.to_string()])
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--ready-timeout")
        .arg("60s")
}

/// Each worker's fd that its bind named is hotswap's socket: the same
/// socket (inode) as its fd 3, and the worker was seen ready by taking
/// connections on it.
fn assert_workers_hold_hotswaps_socket(p: &Primary) {
    let status = p.status();
    for w in Primary::ready_workers(&status) {
        let pid = w["pid"].as_i64().unwrap();
        assert_eq!(w["ready_via"], "accepting", "{w}");
        let fd = |n: &str| std::fs::read_link(format!("/proc/{pid}/fd/{n}")).ok();
        let ours = fd("3").unwrap_or_else(|| panic!("worker {pid} has no fd 3"));
        let named = p
            .log_text()
            .lines()
            .find(|l| l.contains(&format!(" {pid}] binds ")))
            .and_then(|l| l.split(", fd ").nth(1)?.split(')').next().map(str::to_string))
            .unwrap_or_else(|| panic!("no bind of worker {pid} in the log:\n{}", p.log_text()));
        assert_eq!(fd(&named).as_ref(), Some(&ours), "worker {pid}: its fd {named} is hotswap's socket");
    }
}

/// The JDK's `HttpServer` on a fixed port, no flags but `-l` (and a ready
/// timeout for the JVM): its dual-stack `[::]:PORT` bind gets hotswap's
/// IPv4 socket, the JVM serves it (its `getsockname` and `accept` see IPv4
/// addresses on a socket it made as IPv6), and its own graceful stop on
/// SIGTERM (`server.stop(2)` in a shutdown hook) loses nothing across 3
/// reloads.
#[test]
fn jdk_http_server_on_a_fixed_port_reloads_without_a_failed_request() {
    let Some(dir) = jdk_app() else { return };
    let port = free_port();
    let p = started(jdk_primary(&dir, port), 2);
    assert_workers_hold_hotswaps_socket(&p);
    assert!(p.log_text().contains(&format!("binds [::]:{port} itself")), "{}", p.log_text());
    let records = reloads_under_load(&p, port);
    assert_no_failures(&records, "reloads of the JDK's HttpServer");
    assert_workers_hold_hotswaps_socket(&p);
    assert!(records.iter().any(|r| r.result == Ok(4)), "generation 4 answered");
    // Its shutdown hook catches SIGTERM: not quiesced.
    assert!(!p.log_text().contains("does not drain"), "{}", p.log_text());
    eprintln!("JDK HttpServer: {} requests, 0 failed", records.len());
}

/// Without the filter the JVM's bind fails as it always did
/// (`java.net.BindException: Address already in use`): what the test above
/// depends on is the interception.
#[test]
fn jdk_http_server_without_the_filter_fails_to_bind() {
    let Some(dir) = jdk_app() else { return };
    let port = free_port();
    let mut p = jdk_primary(&dir, port).arg("--bind-intercept").arg("off").workers(1).no_wait().start();
    assert_eq!(p.wait_exit(Duration::from_secs(90)), Some(1), "log:\n{}", p.log_text());
    let log = p.log_text();
    assert!(log.contains("java.net.BindException: Address already in use"), "{log}");
    assert!(log.contains("the first generation cannot start"), "{log}");
}

/// PHP's built-in server, `php -S 127.0.0.1:PORT -t DIR` (`-q` keeps its
/// access log, 3 lines per request, out of hotswap's log), only `-l`
/// given. It has no graceful stop: SIGTERM (hotswap's default, which it
/// does not catch) ends it at once, SIGINT ends its event loop and closes
/// the connections it holds, SIGQUIT is ignored. Before hotswap quiesced
/// such workers a response it was writing as it died was cut: 2 to 3 of
/// 13,000 to 20,000 requests across 3 reloads (`QUIESCE=off`). Now each
/// old worker is told to go only once it answers nothing: 0 failed.
#[test]
fn php_builtin_server_on_a_fixed_port_reloads_without_a_failed_request() {
    if !installed("php") {
        return;
    }
    let dir = TempDir::new("own-bind-php");
    std::fs::write(dir.path("index.php"), "<?php echo 'generation=', getenv('HOTSWAP_GENERATION'), \"\\n\";\n")
        .unwrap();
    let port = free_port();
    let docroot = dir.0.display().to_string();
    let command = ["php", "-q", "-S", &format!("127.0.0.1:{port}"), "-t", &docroot];
    let p = start(port, command.iter().map(|s| s.to_string()).collect());
    assert_workers_hold_hotswaps_socket(&p);
    let records = reloads_under_load(&p, port);
    let failed: Vec<_> = records.iter().filter_map(|r| r.result.as_ref().err()).collect();
    eprintln!("php -S: {} of {} requests failed: {failed:?}", failed.len(), records.len());
    assert!(records.iter().any(|r| r.result == Ok(4)), "generation 4 answered");
    assert_workers_hold_hotswaps_socket(&p);
    assert_quiesced(&p, 6);
    assert!(
        p.log_text().contains("php -S recognised: stop signal SIGTERM (it has no graceful stop"),
        "{}",
        p.log_text()
    );
    assert_no_failures(&records, "reloads of php -S");
}

/// Debian's Jetty 9.4 launcher (package `jetty9`).
const JETTY_HOME: &str = "/usr/share/jetty9";

/// Jetty 9.4 (Debian's `jetty9`) set up as its docs say: a jetty.base whose
/// `start.ini` enables the `http` and `deploy` modules and names the port
/// (`--add-to-start=http,deploy`, then `jetty.http.port=PORT`), one static
/// webapp, and the stock launcher with only `-l` and a ready timeout for
/// the JVM. Its connector binds `[::]:PORT` itself (no host given): bind
/// interception gives it hotswap's socket, it is seen accepting, and 2
/// reloads of 1 worker under keep-alive and new-connection load each
/// succeed (during each, the old and the new JVM both hold the socket),
/// every old worker exiting on its SIGTERM (no SIGKILL). One worker: a JVM
/// start is seconds, and CI's time counts.
///
/// Not 0 failed: Jetty 9.4's graceful stop itself fails requests that
/// come during it (docs/servers.md, "Jetty"): it answers 503 to a request
/// on a connection it holds, then closes its connections, each with a
/// `shutdown(SHUT_WR)` first (the JDK's close of a registered channel), so
/// a keep-alive client that wrote its next request as the end of file
/// came sees the connection close unanswered: beyond rescue (rescue.md).
/// So each failure must be one of those (a 503, or a connection closed or
/// reset before the answer), and at most once per client per old worker:
/// never a refused connection or a wait for an answer (hotswap's socket
/// lost, or not served), and never a run of failures.
#[test]
fn jetty_binding_its_own_port_reloads_under_load() {
    let start_jar = format!("{JETTY_HOME}/start.jar");
    if !std::path::Path::new(&start_jar).exists() || !installed("java") {
        assert!(std::env::var_os("CI").is_none(), "Jetty is not installed (.ci/run installs jetty9)");
        eprintln!("skipped: no Jetty ({start_jar}) or no java");
        return;
    }
    let base = TempDir::new("own-bind-jetty");
    let port = free_port();
    std::fs::write(base.path("start.ini"), format!("--module=http\n--module=deploy\njetty.http.port={port}\n"))
        .unwrap();
    std::fs::create_dir_all(base.path("webapps/root")).unwrap();
    std::fs::write(base.path("webapps/root/index.html"), "hello from jetty\n").unwrap();
    let command = vec![
        "java".to_string(),
        "-jar".into(),
        start_jar,
        format!("jetty.home={JETTY_HOME}"),
        format!("jetty.base={}", base.0.display()),
    ];
    let b = Primary::bare(command).arg("-l").arg(format!("127.0.0.1:{port}")).arg("--ready-timeout").arg("90s");
    let p = started(b, 1);
    let server = p.status()["server"].as_str().unwrap_or_default().to_string();
    assert!(server.starts_with("Jetty recognised: stop signal SIGTERM (its graceful stop"), "{server}");
    assert!(server.contains("gets hotswap's socket") && !server.contains("NOTE"), "{server}");
    assert_workers_hold_hotswaps_socket(&p);
    assert!(p.log_text().contains(&format!("binds [::]:{port} itself")), "{}", p.log_text());

    let events = EventStream::start(&p);
    let (keep_alive, fresh, reloads) = (2, 2, 2);
    let load = Load::start(Target::Tcp(format!("127.0.0.1:{port}")), keep_alive, fresh);
    load.wait_for_requests(100);
    for _ in 0..reloads {
        p.reload();
        load.wait_for_requests(100);
    }
    let records = load.finish();
    let seen = events.so_far();
    let named = |name: &str| seen.iter().filter(|e| e["event"] == name).count();
    assert_eq!(named("reload-finished"), reloads, "{seen:?}");
    assert_eq!(named("reload-failed"), 0, "{seen:?}");
    let exits: Vec<_> = seen.iter().filter(|e| e["event"] == "exit").collect();
    assert_eq!(exits.len(), reloads, "each old worker exited: {seen:?}");
    assert!(killed_exits(&seen).is_empty(), "each old worker exited on its SIGTERM: {exits:?}");
    let status = p.status();
    assert_eq!(status["generation"], 1 + reloads as u64, "{status}");
    assert_eq!(Primary::ready_workers(&status).len(), 1, "{status}");
    assert_workers_hold_hotswaps_socket(&p);

    let failed: Vec<&String> = records.iter().filter_map(|r| r.result.as_ref().err()).collect();
    eprintln!("Jetty: {} of {} requests failed: {failed:?}", failed.len(), records.len());
    assert!(records.len() > 200, "the load made only {} requests", records.len());
    let jettys = |e: &&&String| {
        e.as_str() == "HTTP 503"
            || e.starts_with("read: connection closed before a response")
            || e.starts_with("read: Connection reset by peer")
    };
    assert!(failed.iter().all(|e| jettys(&e)), "a failure that is not Jetty's stop: {failed:?}");
    let bound = (keep_alive + fresh) * reloads;
    assert!(failed.len() <= bound, "{} failed, more than once per client per old worker: {failed:?}", failed.len());
}
