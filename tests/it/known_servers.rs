//! Stock servers that hotswap recognises by their command, run as a user
//! would: their own config file, no `--stop-signal`, no `NGINX` variable.
//! hotswap picks the signal that drains each (SIGQUIT for nginx and
//! unicorn, whose SIGTERM stops at once) and hands the socket the way each
//! reads it (nginx: `NGINX=3;`; unicorn and puma: `LISTEN_FDS`), and 3 reloads under
//! keep-alive and new-connection load fail no request.

use crate::common::*;

/// A port free a moment ago: the server's own config names it, so hotswap
/// must listen on exactly that address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// 3 reloads under 2 keep-alive and 2 new-connection clients, with `deploy`
/// run before each (it writes the next generation's config); none failed,
/// the last generation answers, and each old worker got `signal`.
fn three_reloads_under_load(p: &Primary, deploy: impl Fn(u64), signal: &str) {
    let records = three_reloads(p, deploy, signal);
    assert_no_failures(&records, "load across 3 reloads");
    eprintln!("{}: {} requests, none failed", std::thread::current().name().unwrap_or("?"), records.len());
}

/// The reloads of [`three_reloads_under_load`], with what every request
/// got: the last generation answers, and each old worker got `signal`.
fn three_reloads(p: &Primary, deploy: impl Fn(u64), signal: &str) -> Vec<Record> {
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(200);
    for generation in 2..=4 {
        deploy(generation);
        p.reload();
        load.wait_for_requests(200);
    }
    let records = load.finish();
    assert_eq!(records.last().unwrap().result, Ok(4), "the newest generation answers");
    let log = p.log_text();
    assert_eq!(log.matches(&format!("stopping ({signal} sent)")).count(), 3, "each old worker got {signal}:\n{log}");
    records
}

fn nginx_conf(dir: &TempDir, port: u16, generation: u64) {
    let d = dir.0.display();
    let conf = format!(
        "worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log stderr notice;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           server {{\n\
             listen 127.0.0.1:{port};\n\
             location / {{ return 200 \"generation={generation}\\n\"; }}\n\
           }}\n\
         }}\n"
    );
    std::fs::write(dir.path("nginx.conf"), conf).unwrap();
}

/// nginx with the default `daemon on` and `master_process on` of its own
/// config: hotswap sets `NGINX=3;` (nginx then stays in the foreground and
/// keeps fd 3 for its `listen` of that address) and stops it with SIGQUIT.
#[test]
fn nginx_with_its_own_config_reloads_without_a_failed_request() {
    if !installed("nginx") {
        return;
    }
    let dir = TempDir::new("nginx");
    let port = free_port();
    nginx_conf(&dir, port, 1);
    let nginx = if std::path::Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
    let conf = dir.path("nginx.conf").display().to_string();
    let command = [nginx, "-e", "stderr", "-c", &conf].map(String::from).to_vec();
    let p = Primary::bare(command).arg("-l").arg(format!("127.0.0.1:{port}")).workers(1).start();
    let status = p.status();
    let server = status["server"].as_str().unwrap_or_default();
    assert!(server.starts_with("nginx recognised: stop signal SIGQUIT"), "{status}");
    assert!(server.contains("socket via NGINX=3;"), "{status}");
    assert!(p.log_text().contains("using inherited sockets from \"3;\""), "{}", p.log_text());
    // Its socket is non-blocking (O_NONBLOCK, 04000 in fdinfo's octal
    // flags): nginx never sets it on an inherited socket, and with two
    // masters on a blocking one a worker can block in accept() (#23).
    let fdinfo = std::fs::read_to_string(format!("/proc/{}/fdinfo/3", p.worker_pids()[0])).unwrap();
    let flags = fdinfo.lines().find_map(|l| l.strip_prefix("flags:")).map(str::trim).unwrap();
    assert!(u32::from_str_radix(flags, 8).unwrap() & 0o4000 != 0, "fd 3 of nginx is blocking: {fdinfo}");
    three_reloads_under_load(&p, |g| nginx_conf(&dir, port, g), "SIGQUIT");
}

/// unicorn (pre-fork, `TCP_DEFER_ACCEPT` on its listener) with a rack app
/// that takes 20 ms per request and no `-l`: it takes fd 3 from
/// `LISTEN_FDS`, and SIGQUIT drains it (with SIGTERM, the old default, its
/// worker dies mid-request: that run failed requests).
#[test]
fn unicorn_reloads_without_a_failed_request() {
    if !installed("unicorn") {
        return;
    }
    let dir = TempDir::new("unicorn");
    let app = dir.path("config.ru");
    std::fs::write(&app, RACK_APP).unwrap();
    let command = ["unicorn", "-E", "none", app.to_str().unwrap()].map(String::from).to_vec();
    let p = Primary::builder(command).workers(1).arg("--ready-timeout").arg("30s").start();
    let status = p.status();
    let server = status["server"].as_str().unwrap_or_default();
    assert!(server.starts_with("unicorn recognised: stop signal SIGQUIT"), "{status}");
    assert!(p.log_text().contains("inherited addr=127.0.0.1:"), "{}", p.log_text());
    three_reloads_under_load(&p, |_| {}, "SIGQUIT");
}

/// The rack app of the Ruby servers: 20 ms per request, so that a stop
/// signal that does not drain shows.
const RACK_APP: &str = "body = \"generation=#{ENV['HOTSWAP_GENERATION']}\\n\"\n\
    run lambda { |env| sleep 0.02; [200, {'content-type' => 'text/plain', \
    'content-length' => body.bytesize.to_s}, [body]] }\n";

/// puma with its own defaults (single mode, its default environment and
/// threads) and the `-b` docs/servers.md names, equal to `-l`: it takes fd 3
/// from `LISTEN_FDS` for that bind, is proven to take connections (its
/// server thread waits in `select`, so by a probe or a client's
/// connection), and SIGTERM, its graceful stop, drains it. Every worker's
/// readiness is read from `listening` events; 3 reloads under load fail
/// nothing.
#[test]
fn puma_with_its_own_defaults_reloads_without_a_failed_request() {
    if !installed("puma") {
        return;
    }
    let dir = TempDir::new("puma");
    let app = dir.path("config.ru");
    std::fs::write(&app, RACK_APP).unwrap();
    let port = free_port();
    let bind = format!("tcp://127.0.0.1:{port}");
    let command = ["puma", "-b", &bind, app.to_str().unwrap()].map(String::from).to_vec();
    let p = Primary::bare(command)
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--ready-timeout")
        .arg("60s")
        .workers(1)
        .no_wait()
        .start();
    let proven = |via: &serde_json::Value, proof: &serde_json::Value, what: &str| {
        assert_eq!(via, "accepting", "{what}: ready by its accepts");
        assert!(matches!(proof.as_str(), Some("probe" | "connection")), "{what}: proven by {proof}");
    };
    let mut first = serde_json::Value::Null;
    wait_until(std::time::Duration::from_secs(90), "puma's first worker to be ready", || {
        first = p.try_status().and_then(|s| Primary::ready_workers(&s).first().cloned()).unwrap_or_default();
        !first.is_null()
    });
    proven(&first["ready_via"], &first["ready_proof"], "the first worker");
    let status = p.status();
    let server = status["server"].as_str().unwrap_or_default();
    assert!(server.starts_with("puma recognised: stop signal SIGTERM"), "{status}");
    assert!(p.log_text().contains(&format!("Activated {bind}")), "puma took fd 3 for its -b:\n{}", p.log_text());
    let events = EventStream::start(&p);
    three_reloads_under_load(&p, |_| {}, "SIGTERM");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(events.until("reload-finished", std::time::Duration::from_secs(60)));
    }
    let names: Vec<&str> = seen.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names.iter().filter(|e| **e == "reload-finished").count(), 3, "{names:?}");
    assert!(!names.contains(&"reload-failed"), "{names:?}");
    let listening: Vec<&serde_json::Value> = seen.iter().filter(|e| e["event"] == "listening").collect();
    assert_eq!(listening.len(), 3, "one new worker ready per reload: {seen:?}");
    for e in listening {
        proven(&e["via"], &e["proof"], &format!("worker {}", e["worker"]));
    }
    assert!(!p.log_text().contains("itself (pid"), "no listener of its own:\n{}", p.log_text());
}

/// gunicorn 25.1 and later open a control socket of their own
/// (`$XDG_RUNTIME_DIR/gunicorn.ctl`) before their workers accept: a worker
/// slow to start (here, an app that takes 30 s to import) has its other
/// listening sockets looked up, and this one must not be warned about as
/// if gunicorn listened there instead of on fd 3.
#[test]
fn gunicorns_own_control_socket_is_not_named_as_a_port_it_serves() {
    if !installed("gunicorn") {
        return;
    }
    let dir = TempDir::new("gunicorn");
    std::fs::write(
        dir.path("slow_app.py"),
        "import time\ntime.sleep(30)\n\
         def app(environ, start_response):\n    \
         start_response('200 OK', [('Content-Length', '3')])\n    return [b'ok\\n']\n",
    )
    .unwrap();
    let d = dir.0.display().to_string();
    let command = ["gunicorn", "--chdir", &d, "-w", "1", "slow_app:app"].map(String::from).to_vec();
    let p = Primary::builder(command).workers(1).env("XDG_RUNTIME_DIR", &d).no_wait().start();
    let looked = format!("unix:{d}/gunicorn.ctl is gunicorn's own control socket");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    let mut log = p.log_text();
    while !log.contains(&looked) && !log.contains("itself (pid") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        log = p.log_text();
    }
    if !log.contains("Control socket listening") {
        eprintln!("skipped: this gunicorn opens no control socket (before 25.1)");
        return;
    }
    assert!(!log.contains("itself (pid"), "no warning about gunicorn's control socket:\n{log}");
    assert!(log.contains(&looked), "its listening sockets were looked up:\n{log}");
}

/// `hotswap check` says what a recognised server gets, and that an
/// explicit `--stop-signal` wins; the command is seen through `env`.
#[test]
fn check_says_what_a_recognised_server_gets_and_an_explicit_signal_wins() {
    let check = |extra: &[&str]| {
        let out = std::process::Command::new(HOTSWAP)
            .args(["check", "-l", "127.0.0.1:8080"])
            .args(extra)
            .args(["--", "env", "RACK_ENV=production", "unicorn", "-c", "unicorn.rb"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = check(&[]);
    assert!(text.contains("server:  unicorn recognised: stop signal SIGQUIT (its graceful stop"), "{text}");
    let text = check(&["--stop-signal", "TERM"]);
    assert!(text.contains("stop signal SIGTERM (--stop-signal; unicorn drains on SIGQUIT"), "{text}");
}

/// A Caddyfile serving `generation=N` on `port` for any host (the load
/// sends `Host: test`, which caddy answers with an empty 200 when no site
/// matches), with caddy's admin endpoint off (the old and the new caddy of
/// a reload would both bind its `localhost:2019`).
fn caddyfile(dir: &TempDir, port: u16, generation: u64) {
    let conf = format!("{{\n  admin off\n}}\nhttp://:{port} {{\n  respond \"generation={generation}\n\" 200\n}}\n");
    std::fs::write(dir.path("Caddyfile"), conf).unwrap();
}

/// caddy 2.6 (Debian 12's) binds its port itself (`[::]:PORT`) and takes
/// no inherited socket: bind interception gives it hotswap's, it says
/// `READY=1` (it is systemd-aware) and is proven to accept, and SIGTERM,
/// its graceful stop, drains it. Its own Caddyfile, no flag but `-l`.
/// Go's `Shutdown` may close a keep-alive connection whose request its
/// goroutine has just read (docs/rescue.md): every failed request must be
/// one of those, which the log names (`may have read a request`, `closed
/// it unanswered`), never one rescue could have answered.
#[test]
fn caddy_binding_its_own_port_reloads_without_a_failed_request() {
    if !installed("caddy") {
        return;
    }
    let dir = TempDir::new("caddy");
    let port = free_port();
    caddyfile(&dir, port, 1);
    let conf = dir.path("Caddyfile").display().to_string();
    let command = ["caddy", "run", "--config", &conf, "--adapter", "caddyfile"].map(String::from).to_vec();
    let p = Primary::bare(command)
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--ready-timeout")
        .arg("60s")
        .workers(1)
        .start();
    let status = p.status();
    let server = status["server"].as_str().unwrap_or_default();
    assert!(server.starts_with("caddy recognised: stop signal SIGTERM"), "{status}");
    let worker = &Primary::ready_workers(&status)[0];
    assert_eq!(worker["ready_via"], "notify", "READY=1, and proven to accept: {worker}");
    let log = p.log_text();
    assert!(log.contains(&format!("it gets hotswap's socket 127.0.0.1:{port} (fd 3)")), "{log}");
    let records = three_reloads(&p, |g| caddyfile(&dir, port, g), "SIGTERM");
    let failed: Vec<&Record> = records.iter().filter(|r| r.result.is_err()).collect();
    let log = p.log_text();
    let read_by_caddy = log.matches("may have read a request").count() + log.matches("closed it unanswered").count();
    assert!(failed.len() <= read_by_caddy, "{} failed, {read_by_caddy} read by caddy: {failed:?}", failed.len());
    eprintln!("caddy: {} of {} requests failed, each one caddy had read", failed.len(), records.len());
}
