//! When things run out or go missing (issue 20): a worker command that
//! disappears, file-descriptor limits, on-demand sockets, idle `/metrics`
//! connections. Real primaries, real workers, real limits.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

/// The value of one sample (`name{labels}` exactly as written).
fn sample(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .parse()
        .unwrap()
}

fn scrape(addr: &str) -> String {
    let (code, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(code, 200, "{body}");
    body
}

// ------------------------------------------------- a command that is gone ----

/// A deploy removes the release directory, then a worker dies: its slot is
/// retried with the crash backoff (a few attempts, not hundreds a second),
/// the error is logged once, no worker id or restart is counted per
/// attempt, and the slot fills by itself once the command is back; a
/// reload then loses nothing.
#[test]
fn a_worker_command_that_is_gone_is_retried_with_backoff_and_comes_back() {
    let dir = TempDir::new("gone");
    let exe = dir.path("worker");
    copy_executable(std::path::Path::new(&rust_worker()[0]), &exe);
    let p = Primary::builder(vec![exe.display().to_string()]).arg("--metrics").arg("127.0.0.1:0").start();
    let metrics = p.status()["metrics"].as_str().unwrap().to_string();
    let events = EventStream::start(&p);
    let ids = p.worker_ids();
    std::fs::remove_file(&exe).unwrap();
    let victim = p.worker_pids()[0];
    unsafe { libc::kill(victim, libc::SIGKILL) };
    // Over 3 s the backoff allows the immediate restart and 100, 200, 400,
    // 800, 1600 ms after: at most 6 attempts (a busy loop made thousands).
    wait_until(Duration::from_secs(10), "a failed restart", || {
        sample(&scrape(&metrics), "hotswap_worker_start_failures_total") >= 1
    });
    std::thread::sleep(Duration::from_secs(3));
    let m = scrape(&metrics);
    let failed = sample(&m, "hotswap_worker_start_failures_total");
    let restarts = sample(&m, "hotswap_worker_restarts_total{reason=\"crash\"}");
    assert_eq!(restarts, 0, "a start that failed is no restart");
    assert!((2..=8).contains(&failed), "{failed} failed starts in about 3 s");
    let log = p.log_text();
    assert_eq!(log.matches("ERROR cannot restart slot").count(), 1, "one error line for one error:\n{log}");
    assert!(log.contains("worker: No such file or directory") || log.contains("command not found"), "{log}");

    // The command is back: the slot fills by itself, with the next id.
    copy_executable(std::path::Path::new(&rust_worker()[0]), &exe);
    wait_until(Duration::from_secs(40), "the slot to be ready again", || {
        Primary::ready_workers(&p.status()).len() == 2
    });
    let seen = events.until("listening", Duration::from_secs(10));
    let attempts = seen.iter().filter(|e| e["event"] == "start-failed").count() as u64;
    assert!(attempts >= failed, "every failed start is an event: {seen:?}");
    let now = p.worker_ids();
    let newest = *now.iter().max().unwrap();
    assert_eq!(
        newest,
        ids.iter().max().unwrap() + 1,
        "no worker id is used up by a failed start: {ids:?} then {now:?}"
    );
    assert_eq!(sample(&scrape(&metrics), "hotswap_worker_restarts_total{reason=\"crash\"}"), 1);
    assert!(p.log_text().contains("started again after"), "{}", p.log_text());

    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(100);
    p.reload();
    load.wait_for_requests(100);
    assert_no_failures(&load.finish(), "a reload after the command came back");
}

// ----------------------------------------------------- file descriptors ----

/// The primary started under `ulimit -Hn hard; ulimit -Sn soft`, as a shell
/// would leave it (`None` when this machine's hard limit is below `hard`).
fn under_nofile(b: PrimaryBuilder, soft: u64, hard: u64) -> Option<PrimaryBuilder> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_max < hard {
        assert!(std::env::var_os("CI").is_none(), "the hard RLIMIT_NOFILE is {} here, below {hard}", lim.rlim_max);
        eprintln!("skipped: the hard RLIMIT_NOFILE is {}, below {hard}", lim.rlim_max);
        return None;
    }
    let script = format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$@\"");
    Some(b.wrap(&["sh", "-c", &script, "sh"]))
}

/// A tiny worker: it writes the soft fd limit it got, then sleeps (ready at
/// once, stopped by SIGTERM).
fn sleeper(dir: &TempDir) -> Vec<String> {
    let body = format!("ulimit -Sn > {}/limit-$HOTSWAP_WORKER_ID; exec sleep 1000", dir.0.display());
    vec!["sh".into(), "-c".into(), body]
}

/// Under the common soft limit of 1024 (hard 4096), `-w 200` needs some
/// 1,200 fds: the primary raises its soft limit, starts all 200, replaces
/// them all at once (`--surge 100%`, 400 workers for a moment), and stops;
/// each worker gets the soft limit of 1024 it would have had without
/// hotswap.
#[test]
fn two_hundred_workers_and_a_full_surge_under_a_soft_limit_of_1024() {
    let out = TempDir::new("nofile");
    let b = Primary::builder(sleeper(&out)).workers(200).arg("--ready").arg("none").no_wait();
    let Some(b) = under_nofile(b, 1024, 4096) else { return };
    let mut p = b.start();
    p.wait_ready(200, Duration::from_secs(120));
    assert!(p.log_text().contains("raised the soft file-descriptor limit from 1024 to 4096"));
    let pid = p.status()["pid"].as_i64().unwrap() as i32;
    let fds = fd_count(pid);
    assert!(fds > 1024, "the primary holds {fds} fds for 200 workers: more than the soft limit it was given");
    wait_until(Duration::from_secs(20), "worker 1 to write its limit", || out.path("limit-1").exists());
    assert_eq!(
        std::fs::read_to_string(out.path("limit-1")).unwrap().trim(),
        "1024",
        "a worker gets the original limit"
    );
    let r = p.ctl(&["reload", "--surge", "100%"]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success() && text.contains("generation 2 serves (200 workers replaced)"), "{text}{r:?}");
    let stop = p.ctl(&["stop"]);
    assert!(stop.status.success(), "{stop:?}");
    assert_eq!(p.wait_exit(Duration::from_secs(30)), Some(0), "{}", p.log_text());
}

/// When fds run low anyway (soft = hard = 320, 20 workers: about 9 fds of
/// the primary's each, 2 of them the bind filter's; without the reserve,
/// at 256, the surge ran into `EMFILE` after 9 replacements), a
/// reload that would need more is refused with a clear error, and the
/// reserve keeps `status` and `hotswap stop` working.
#[test]
fn when_fds_run_low_new_workers_are_refused_and_stop_still_works() {
    let out = TempDir::new("nofile-low");
    let b = Primary::builder(sleeper(&out)).workers(20).arg("--ready").arg("none").no_wait();
    let Some(b) = under_nofile(b, 320, 320) else { return };
    let mut p = b.start();
    p.wait_ready(20, Duration::from_secs(60));
    let r = p.ctl(&["reload", "--surge", "100%"]);
    let text = format!("{}{}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
    assert!(!r.status.success(), "{text}");
    assert!(text.contains("too few file descriptors left"), "{text}");
    // Every control connection still gets through.
    for _ in 0..20 {
        assert_eq!(Primary::ready_workers(&p.status()).len(), 20);
    }
    let stop = p.ctl(&["stop"]);
    assert!(stop.status.success(), "{stop:?}\n{}", p.log_text());
    assert_eq!(p.wait_exit(Duration::from_secs(30)), Some(0));
}

// ------------------------------------------------------- metrics slowloris ----

/// Idle connections (16 of them, twice the connections served at once)
/// lock no scraper out: 20 of 20 scrapes answer 200 while they are held
/// open, and the ones held long enough are closed by the primary. And
/// `--metrics :PORT` is loopback only.
#[test]
fn idle_metrics_connections_do_not_lock_scrapers_out() {
    let p = Primary::builder(rust_worker()).workers(1).arg("--metrics").arg(":0").start();
    let addr = p.status()["metrics"].as_str().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "`:PORT` binds loopback only: {addr}");
    let idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..20 {
        let (code, body) = http(&addr, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
        assert_eq!(code, 200, "scrape {i} with 16 idle connections open: {body}");
    }
    // Each idle connection is closed: dropped for a newer one, or at the
    // read deadline (408).
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        let text = String::from_utf8_lossy(&rest);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
}
