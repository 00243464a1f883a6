//! Shared test harness: a real `hotswap` primary, real worker programs and a
//! real HTTP load client on 127.0.0.1 (or a Unix socket).
//!
//! In parts: [`primary`] (a running primary, its builder and its event
//! stream), [`load`] (the HTTP load client and its records), [`machine`]
//! (a test's share of the machine, or the whole of it); here, what every
//! test reaches for: paths, worker commands, fixtures, waiting and
//! processes.

pub mod load;
pub mod machine;
pub mod primary;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use load::*;
pub use machine::*;
pub use primary::*;

pub const HOTSWAP: &str = env!("CARGO_BIN_EXE_hotswap");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Rust example worker, built by `cargo test` with the examples.
pub fn rust_worker() -> Vec<String> {
    let exe = Path::new(HOTSWAP).parent().unwrap().join("examples/http-worker");
    assert!(exe.exists(), "{} missing: run the tests with `cargo test`, which builds the examples", exe.display());
    vec![exe.display().to_string()]
}

pub fn node_worker() -> Vec<String> {
    vec!["node".into(), root().join("contrib/workers/node/worker.js").display().to_string()]
}

pub fn python_worker() -> Vec<String> {
    vec!["python3".into(), root().join("contrib/workers/python/worker.py").display().to_string()]
}

pub fn fixture(name: &str) -> String {
    root().join("tests/fixtures").join(name).display().to_string()
}

/// Whether `program` is installed (on `PATH`, or in /usr/sbin): a test of
/// a real server skips without it, except under CI (`CI` set), where
/// `.ci/run` installs it and a missing program fails the test.
pub fn installed(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program} || test -x /usr/sbin/{program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{program} is not installed (.ci/run installs it)");
        eprintln!("skipped: {program} is not installed");
    }
    found
}

/// The probe worker (`tests/fixtures/probe.py`): it reports its pid, fds and
/// environment, sends what `PROBE_SEND` says and records what it receives.
/// Give it a directory with [`PrimaryBuilder::probe_dir`].
pub fn probe() -> Vec<String> {
    vec!["python3".into(), fixture("probe.py")]
}

/// What probe worker `id` reported at start (`worker-<id>.json`).
pub fn probe_report(dir: &TempDir, id: u64) -> Value {
    let path = dir.path(&format!("worker-{id}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The messages probe worker `id` has received so far (`inbox-<id>.jsonl`),
/// `{"eof":true}` last once its channel closed.
pub fn probe_inbox(dir: &TempDir, id: u64) -> Vec<Value> {
    std::fs::read_to_string(dir.path(&format!("inbox-{id}.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A fresh private directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "hotswap-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it holds; false if it still does not after `timeout`.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until `f` holds; fails the test, saying what it waited for, if it
/// still does not after `timeout`. (A [`Primary`] dropped by the failure
/// prints its log.)
#[track_caller]
pub fn wait_until(timeout: Duration, what: impl std::fmt::Display, f: impl FnMut() -> bool) {
    if !poll_until(timeout, f) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// When the primary logged `line` (its UTC timestamp), in seconds: for
/// comparing the times of two lines of one log, which is what the primary
/// did, whatever the test's own thread was scheduled to see.
pub fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let d: Vec<f64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<f64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (&[y, mo, day], &[h, mi, sec]) = (d.as_slice(), t.as_slice()) else { return None };
    // Days counted roughly (a month as 31 days): exact within a month.
    Some((((y * 12.0 + mo) * 31.0 + day) * 24.0 + h) * 3600.0 + mi * 60.0 + sec)
}

/// The times of the primary's log lines that contain `what`, in order.
pub fn log_times(log: &str, what: &str) -> Vec<f64> {
    log.lines().filter(|l| l.contains(what)).filter_map(log_time).collect()
}

/// Open fds of a process.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The value `f` settles on: unchanged in repeated reads for 300 ms (a
/// primary that has just answered a client may still hold its connection).
#[track_caller]
pub fn settled<T: PartialEq + std::fmt::Debug>(what: &str, mut f: impl FnMut() -> T) -> T {
    let mut last = f();
    let mut since = Instant::now();
    wait_until(Duration::from_secs(10), format_args!("{what} to settle"), || {
        let now = f();
        if now != last {
            last = now;
            since = Instant::now();
        }
        since.elapsed() >= Duration::from_millis(300)
    });
    last
}

/// Sockets that a process holds more than one fd of (`socket:[inode]`).
pub fn doubled_sockets(pid: i32) -> HashSet<String> {
    let mut fds: HashMap<String, usize> = HashMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let target = target.to_string_lossy().into_owned();
            if target.starts_with("socket:") {
                *fds.entry(target).or_default() += 1;
            }
        }
    }
    fds.into_iter().filter(|(_, n)| *n > 1).map(|(s, _)| s).collect()
}

/// The parent pid of a process.
pub fn ppid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Gone means no such process, or a zombie (PID 1 here may never reap).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let after = stat.rsplit_once(')').map(|(_, r)| r.trim_start()).unwrap_or("");
            after.starts_with('Z') || after.starts_with('X')
        }
    }
}

/// Writes an executable shell script (replacing the file, not rewriting it).
pub fn script(path: &Path, body: &str) {
    let tmp = path.with_extension("new-script");
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(&tmp)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("#!/bin/sh\n{body}\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "writing {}", tmp.display());
    std::fs::rename(&tmp, path).unwrap();
}

/// Copies an executable to `to` (a new file renamed over any old one).
pub fn copy_executable(from: &Path, to: &Path) {
    let tmp = to.with_extension("new-copy");
    assert!(Command::new("cp").arg(from).arg(&tmp).status().unwrap().success(), "copying {}", from.display());
    std::fs::rename(&tmp, to).unwrap();
}

// Why `script` and `copy_executable` leave the writing to a child process:
// while this process holds a file open for writing, a process that another
// test's thread forks inherits that fd until it execs, and running the file
// then fails with "Text file busy" (ETXTBSY). A file written by a child
// process has no writer left once that child has exited.

/// One HTTP request on a new connection: (status code, body).
pub fn http(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}
