//! Rescue: unchanged stock servers, with their own graceful stop (stop
//! accepting, close idle keep-alive connections at once, finish what is in
//! flight) and no hotswap code or preload, lose no request across reloads
//! under paced keep-alive load; with `--rescue off` they do.

use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

/// The asyncio server of tests/fixtures, written the stock way.
fn stock_asyncio() -> Vec<String> {
    vec!["python3".into(), fixture("stock_asyncio.py")]
}

/// What one run of `reloads` reloads under paced keep-alive load gave.
pub(crate) struct Run {
    pub(crate) failed: usize,
    pub(crate) total: usize,
    answers: Vec<String>,
    pub(crate) log: String,
}

/// `reloads` reloads of `p` under 4 keep-alive clients pausing `gap`
/// between requests.
pub(crate) fn reloads_under_paced_load(p: &Primary, reloads: usize, gap: Duration) -> Run {
    let load = Load::paced(Target::Tcp(p.addr()), 4, 0, gap);
    load.wait_for_requests(40);
    let mut answers = Vec::new();
    for _ in 0..reloads {
        answers.push(p.reload());
        load.wait_for_requests(40);
    }
    let records = load.finish();
    let failures: Vec<_> = records.iter().filter_map(|r| r.result.as_ref().err()).collect();
    if !failures.is_empty() {
        eprintln!("{} of {} failed, e.g. {:?}", failures.len(), records.len(), &failures[..failures.len().min(3)]);
    }
    Run { failed: failures.len(), total: records.len(), answers, log: p.log_text() }
}

fn start(command: Vec<String>, rescue: &str, extra: &[&str]) -> Primary {
    let mut b = Primary::builder(command).arg("--rescue").arg(rescue).arg("--ready").arg("accepting");
    for a in extra {
        b = b.arg(*a);
    }
    b.start()
}

/// 3 reloads under load pacing 2 ms, then 20 ms: with rescue, no failure
/// but those the log shows the server read itself and dropped (no one can
/// answer those: Go's `Shutdown` closes a connection whose goroutine has
/// read a request but not yet marked it active, about 1 in 1,300 requests
/// at 2 ms on a quiet machine), and the reloads' answers count the requests
/// rescued. Then with
/// `--rescue off` at `off_gaps`: the failures, returned (and printed).
fn stock_server(name: &str, command: Vec<String>, extra: &[&str], off_gaps: &[u64]) -> usize {
    for gap in [2, 20] {
        let p = start(command.clone(), "on", extra);
        let run = reloads_under_paced_load(&p, 3, Duration::from_millis(gap));
        let read_by_worker =
            run.log.matches("closed it unanswered").count() + run.log.matches("may have read a request").count();
        assert!(
            run.failed <= read_by_worker,
            "{name}, {gap} ms: {} of {} failed, {read_by_worker} read by the server and dropped; log:\n{}",
            run.failed,
            run.total,
            run.log
        );
        assert!(run.total > 100, "the load ran: {}", run.total);
        let rescued = run.log.matches("rescue: passed on").count();
        let answered: usize = run.answers.iter().map(|a| rescued_in(a)).sum();
        assert!(answered <= rescued, "the answers count no more than was rescued: {:?}", run.answers);
        eprintln!(
            "{name}, rescue on, {gap} ms: {} of {} failed ({read_by_worker} read by the server and dropped; {rescued} \
             requests rescued, {answered} in the reloads' answers)",
            run.failed, run.total
        );
    }
    let mut lost = 0;
    for &gap in off_gaps {
        let p = start(command.clone(), "off", extra);
        let run = reloads_under_paced_load(&p, 3, Duration::from_millis(gap));
        assert!(!run.log.contains("rescue:"), "rescue is off: {}", run.log);
        eprintln!("{name}, rescue off, {gap} ms: {} of {} failed", run.failed, run.total);
        lost += run.failed;
    }
    lost
}

/// `rescued N requests` in a reload's answer.
fn rescued_in(answer: &str) -> usize {
    answer.split("rescued ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The fixture: 0 failed with rescue; it reliably loses requests without.
#[test]
fn stock_asyncio_loses_nothing_with_rescue_and_requests_without() {
    let lost = stock_server("stock asyncio", stock_asyncio(), &[], &[2, 20]);
    assert!(lost > 0, "without rescue, a stock graceful stop loses requests");
}

/// Go net/http with `Server.Shutdown` on SIGTERM.
#[test]
fn go_net_http_loses_nothing_with_rescue() {
    stock_server("Go net/http", vec![go_server()], &[], &[2]);
}

/// The Go fixture, built once per test run.
fn go_server() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = std::env::temp_dir().join(format!("hotswap-test-stock-go-{}", std::process::id()));
            let status = std::process::Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg("main.go")
                .current_dir(root().join("tests/fixtures/stock_go"))
                .env("GO111MODULE", "off")
                .status()
                .expect("go is not installed (.ci/run installs golang-go)");
            assert!(status.success(), "building tests/fixtures/stock_go");
            out.display().to_string()
        })
        .clone()
}

/// aiohttp's own graceful stop (SIGTERM), no preload. aiohttp drops what
/// arrives on a connection once its shutdown has begun (`data_received`
/// returns early under `_force_close`): those requests were read by the
/// worker, and no one can answer them. Every failure must be one of those
/// (the log names each), never one the rescue could have answered.
#[test]
fn aiohttp_loses_only_what_it_read_itself() {
    if std::process::Command::new("python3").args(["-c", "import aiohttp"]).status().map_or(true, |s| !s.success()) {
        panic!("aiohttp is not installed (.ci/run installs it)");
    }
    let command = vec!["python3".into(), fixture("stock_aiohttp.py")];
    for (rescue, gap) in [("on", 2), ("on", 20), ("off", 2)] {
        let p = start(command.clone(), rescue, &["--python", "off"]);
        let run = reloads_under_paced_load(&p, 3, Duration::from_millis(gap));
        let read_by_worker =
            run.log.matches("closed it unanswered").count() + run.log.matches("may have read a request").count();
        eprintln!(
            "aiohttp, rescue {rescue}, {gap} ms: {} of {} failed ({read_by_worker} read by aiohttp and dropped)",
            run.failed, run.total
        );
        if rescue == "on" {
            assert!(
                run.failed <= read_by_worker,
                "aiohttp, {gap} ms: {} failed, {read_by_worker} explained; log:\n{}",
                run.failed,
                run.log
            );
        }
    }
}

/// POSTs caught in the instant of the close are answered once: every body
/// the server counted, it counted once, and every answered one is counted.
#[test]
fn a_caught_post_is_answered_once() {
    let dir = TempDir::new("post");
    let count = dir.path("count");
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let p = Primary::builder(stock_asyncio())
        .arg("--ready")
        .arg("accepting")
        .arg("--metrics")
        .arg(&metrics)
        .env("COUNT_FILE", count.display().to_string())
        .start();
    let addr = p.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || post_loop(&addr, c, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        p.reload();
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results: Vec<(Vec<String>, Vec<String>)> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let served = std::fs::read_to_string(&count).unwrap();
    let mut seen = std::collections::HashMap::new();
    for line in served.lines() {
        *seen.entry(line.to_string()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "served twice: {twice:?}");
    let (answered, failed): (usize, usize) = results.iter().fold((0, 0), |a, r| (a.0 + r.0.len(), a.1 + r.1.len()));
    for (ok, _) in &results {
        for body in ok {
            assert_eq!(seen.get(body), Some(&1), "{body} was answered but not counted once");
        }
    }
    let log = p.log_text();
    let rescued = log.matches("rescue: passed on").count();
    eprintln!("POSTs: {answered} answered, {failed} failed, {} served, {rescued} rescued", seen.len());
    assert_eq!(failed, 0, "failed: {:?}", results.iter().flat_map(|r| r.1.iter()).take(5).collect::<Vec<_>>());
    assert!(rescued > 0, "some POSTs were caught in the close and rescued; log:\n{log}");
    // /metrics counts them, and holds nothing once the exchanges are over.
    let metric = |name: &str| -> u64 {
        let body = get(&Target::Tcp(metrics.clone()), "/metrics").unwrap().body;
        let line =
            body.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {body}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(metric("hotswap_rescued_requests_total"), rescued as u64);
    wait_until(Duration::from_secs(30), "no connection held", || metric("hotswap_rescue_held_connections") == 0);
}

/// POSTs `c-N` on one keep-alive connection, 2 ms apart, until `stop`:
/// (bodies answered, errors).
fn post_loop(addr: &str, c: usize, stop: &std::sync::atomic::AtomicBool) -> (Vec<String>, Vec<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    let mut conn: Option<BufReader<std::net::TcpStream>> = None;
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let body = format!("{c}-{n}");
        if conn.is_none() {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            conn = Some(BufReader::new(s));
        }
        let r = conn.as_mut().unwrap();
        let req = format!("POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let result = (|| -> Result<bool, String> {
            r.get_mut().write_all(req.as_bytes()).map_err(|e| e.to_string())?;
            let mut line = String::new();
            if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("closed before an answer".into());
            }
            let (mut len, mut close) = (0, false);
            loop {
                let mut h = String::new();
                r.read_line(&mut h).map_err(|e| e.to_string())?;
                let h = h.trim_end().to_ascii_lowercase();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                close |= h == "connection: close";
            }
            let mut b = vec![0; len];
            r.read_exact(&mut b).map_err(|e| e.to_string())?;
            Ok(close)
        })();
        match result {
            Ok(close) => {
                ok.push(body);
                if close {
                    conn = None;
                }
            }
            Err(e) => {
                failed.push(format!("{body}: {e}"));
                conn = None;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (ok, failed)
}

/// A retiring worker killed mid-answer (at --shutdown-timeout): the client
/// sees its connection end, with the half answer and nothing more; the
/// rescue does not hold it open for its grace, nor pass anything on.
#[test]
fn a_worker_killed_mid_answer_leaves_the_half_answer_ended() {
    use std::io::{Read, Write};
    let mut p = Primary::builder(stock_asyncio())
        .workers(1)
        .arg("--ready")
        .arg("accepting")
        .arg("--shutdown-timeout")
        .arg("1s")
        .start();
    let mut c = std::net::TcpStream::connect(p.addr()).unwrap();
    c.write_all(b"GET /half HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(&[b'x'; 50]) {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let old = p.worker_pids()[0];
    let events = EventStream::start(&p);
    let reload = std::thread::spawn({
        let control = p.control.clone();
        move || std::process::Command::new(HOTSWAP).args(["reload", "--control"]).arg(control).output().unwrap()
    });
    // Well under the rescue's 10 s grace.
    c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let end = c.read(&mut buf);
    assert!(
        matches!(end, Ok(0)) || end.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection ended: {end:?}; log:\n{}",
        p.log_text()
    );
    assert!(process_gone(old));
    let out = reload.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = events.until("exit", Duration::from_secs(10));
    let exit = seen.last().filter(|e| e["event"] == "exit");
    assert!(exit.is_some_and(|e| e["pid"] == old && e["killed"] == "shutdown-timeout"), "{seen:?}");
    let log = p.log_text();
    assert!(!log.contains("rescue: passed on"), "nothing was passed on: {log}");
    p.wait_ready(1, Duration::from_secs(20));
}

/// pidfd_getfd refused (a seccomp profile): reloads work as without rescue,
/// and the log says once, at start-up (the primary's probe), that rescue
/// is off; its workers are told so (`HOTSWAP_RESCUE=off`), so that the
/// preloads' drain patches apply.
#[test]
fn rescue_refused_by_seccomp_says_so_and_reloads_as_before() {
    let p = Primary::builder(stock_asyncio())
        .wrap(&["python3", &fixture("deny_syscall.py"), "pidfd_getfd"])
        .arg("--ready")
        .arg("accepting")
        .start();
    let run = reloads_under_paced_load(&p, 3, Duration::from_millis(2));
    assert_eq!(run.answers.len(), 3);
    assert!(run.answers.iter().all(|a| a.contains("serves (2 workers replaced)")), "{:?}", run.answers);
    let said = run.log.matches("rescue: off").count();
    assert_eq!(said, 1, "said once: {}", run.log);
    assert!(run.log.contains("this primary may not copy file descriptors (pidfd_getfd"), "{}", run.log);
    eprintln!("rescue refused: {} of {} failed, as without rescue", run.failed, run.total);
}

/// nginx's graceful stop (SIGQUIT), two nginx masters (one per hotswap
/// worker) on the shared listener. The fixture makes the listener
/// non-blocking, as nginx's own binary upgrade hands it over: given a
/// blocking one, an nginx worker that lost a connection to the other
/// nginx blocks in `accept()` until the next new connection, and its
/// keep-alive clients time out (seen as 10 s stalls, 1 to 9 per 20
/// reloads, rescue on or off; rescue made them visible, as clients keep
/// their connections and new ones come seldom).
#[test]
fn nginx_loses_nothing_with_rescue() {
    let command = vec!["python3".into(), fixture("stock_nginx.py")];
    stock_server("nginx", command, &["--stop-signal", "SIGQUIT"], &[2]);
}

/// waitress, whose stop is SIGTERM's default action (an exit): the idle
/// connections it held when it ended are rescued, as its stop signal ended
/// it. A request it had read when it ended is lost with it (no graceful
/// stop: 0 to 3 per run at 2 ms), and the log says so for each; with
/// `--rescue off` every connection loses its next request.
#[test]
fn waitress_loses_only_what_it_had_read_when_it_exited() {
    if std::process::Command::new("python3").args(["-c", "import waitress"]).status().map_or(true, |s| !s.success()) {
        panic!("waitress is not installed (.ci/run installs it)");
    }
    let lost =
        stock_server("waitress", vec!["python3".into(), fixture("stock_waitress.py")], &["--python", "off"], &[2]);
    assert!(lost > 0, "without rescue, waitress's exit loses requests");
}

/// Many idle keep-alive clients during a reload: the primary holds no more
/// than its cap (a quarter of its fd limit, at most 4096), says so once,
/// and its memory stays bounded (measured: printed). By default 2,000
/// clients against a cap of 1,024 (the fd limit set to 4,096, which the
/// primary inherits); `RESCUE_IDLE_CLIENTS=10000` runs that many with the
/// fd limit raised to the hard one (cap 4,096), fewer where it does not
/// allow, said in the output.
#[test]
fn many_idle_clients_are_held_up_to_the_cap() {
    use std::io::{BufRead, BufReader, Read, Write};
    let _alone = exclusive();
    let wanted: Option<usize> = std::env::var("RESCUE_IDLE_CLIENTS").ok().and_then(|v| v.parse().ok());
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let original = lim;
    unsafe {
        lim.rlim_cur = if wanted.is_some() { lim.rlim_max.min(1 << 20) } else { lim.rlim_max.min(4096) };
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let soft = lim.rlim_cur as usize;
    let n = wanted.unwrap_or(2000).min(soft.saturating_sub(1000));
    let cap = (soft / 4).min(4096);
    eprintln!("idle clients: {n} (fd limit {soft}); the primary's cap: {cap}");
    // The primary raises its soft limit to the hard one (issue 20): its
    // hard limit is the one that sets its cap, so it gets `soft` as both.
    let limit = format!("ulimit -n {soft} && exec \"$@\"");
    let p = Primary::builder(stock_asyncio())
        .wrap(&["sh", "-c", &limit, "sh"])
        .workers(1)
        .arg("--ready")
        .arg("accepting")
        .start();
    let addr = p.addr();
    let rss = |what: &str| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with(what)).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before_rss = rss("VmRSS:");
    let before_fds = fd_count(p.pid());
    let mut conns = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(500) {
        let mut fresh: Vec<TcpStream> =
            (0..500.min(n - batch * 500)).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        for c in &mut fresh {
            c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        }
        for c in fresh {
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut r = BufReader::new(c);
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            conns.push(r.into_inner());
        }
    }
    // Sampled while the reload runs and after: the most fds the primary had.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = p.pid();
    let sampler = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(fd_count(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        }
    });
    let answer = p.reload();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let most_fds = sampler.join().unwrap();
    let hwm = rss("VmHWM:");
    let log = p.log_text();
    eprintln!(
        "{n} idle clients: primary fds {before_fds} before, at most {most_fds} during the reload; RSS {before_rss} kB \
         before, peak {hwm} kB; reload: {}",
        answer.lines().last().unwrap_or("")
    );
    assert!(most_fds <= before_fds + cap + 64, "held no more than the cap: {most_fds} fds");
    if n > cap {
        assert_eq!(log.matches("holding the most connections it may").count(), 1, "said once:\n{log}");
    }
    drop(conns);
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &original) };
    assert!(hwm < before_rss + 128 * 1024, "the primary's memory stays bounded: {before_rss} kB -> {hwm} kB");
}

/// A self-upgrade of hotswap while the rescue holds connections, and a
/// reload after it: no request of the paced load fails; a held idle
/// connection is closed cleanly (end of file) at the exec, as its worker
/// would have closed it.
#[test]
fn a_self_upgrade_closes_what_is_held_cleanly_and_loses_nothing() {
    use std::io::{Read, Write};
    let p = start(stock_asyncio(), "on", &[]);
    let load = Load::paced(Target::Tcp(p.addr()), 4, 0, Duration::from_millis(2));
    load.wait_for_requests(40);
    let mut idle = TcpStream::connect(p.addr()).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    assert!(idle.read(&mut buf).unwrap() > 0);
    p.reload();
    let out = p.ctl(&["upgrade"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    idle.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "the held idle connection ends cleanly");
    load.wait_for_requests(40);
    p.reload();
    load.wait_for_requests(40);
    let records = load.finish();
    assert_no_failures(&records, "reload, upgrade, reload under paced keep-alive load");
}

/// SIGTERM of the primary while the rescue holds connections: the primary
/// stops as it does without rescue (it does not wait out the grace), and a
/// held idle connection ends cleanly.
#[test]
fn a_stop_closes_what_is_held_and_does_not_wait_for_it() {
    use std::io::{Read, Write};
    let mut p = start(stock_asyncio(), "on", &[]);
    let mut idle = TcpStream::connect(p.addr()).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    assert!(idle.read(&mut buf).unwrap() > 0);
    p.reload();
    p.signal(libc::SIGTERM);
    // Well under the rescue's 10 s grace.
    assert_eq!(p.wait_exit(Duration::from_secs(8)), Some(0), "{}", p.log_text());
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "the held idle connection ends cleanly");
}

/// A worker whose graceful stop half-closes its idle keep-alive
/// connections (`shutdown(SHUT_WR)`: lighttpd's and Apache's lingering
/// close) and exits without reading what came after: its client has its end
/// of file, so a request it wrote after that is one it saw fail. Rescue
/// must not pass it on (the new generation would run a request its client
/// takes for failed, and may send again); it closes it and says why.
#[test]
fn a_request_written_after_the_workers_half_close_is_not_passed_on() {
    use std::io::{Read, Write};
    let dir = TempDir::new("half-close");
    let requests = dir.path("requests.log");
    let p = Primary::builder(vec!["python3".into(), fixture("half_close.py")])
        .workers(1)
        .env("REQUEST_LOG", requests.display().to_string())
        .start();
    let mut client = TcpStream::connect(p.addr()).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    client.write_all(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains("generation=1\n") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "closed before its first answer");
        got.extend_from_slice(&buf[..n]);
    }
    let reload = std::thread::scope(|s| {
        let reload = s.spawn(|| p.reload());
        // The old worker's stop: its FIN reaches the client, which, as a
        // client that does not look before it writes, sends its next
        // request all the same.
        assert_eq!(client.read(&mut buf).unwrap(), 0, "the worker's half-close, an end of file");
        client.write_all(b"GET /after-the-fin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        reload.join().unwrap()
    });
    assert!(reload.contains("generation 2 serves"), "{reload}");
    wait_until(Duration::from_secs(20), "rescue to decide", || {
        let log = p.log_text();
        log.contains("closed, not passed on") || log.contains("rescue: passed on a request")
    });
    let asked = std::fs::read_to_string(&requests).unwrap();
    assert!(!asked.contains("/after-the-fin"), "passed on to the new generation:\n{asked}");
    assert!(p.log_text().contains("its worker shut a connection down"), "{}", p.log_text());
}
