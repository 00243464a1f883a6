//! Shared test harness: a real `hotswap` primary, real worker programs and a
//! real HTTP load client on 127.0.0.1 (or a Unix socket).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// A running `hotswap run`, killed (with its workers) on drop.
pub struct Primary {
    pub child: Child,
    pub control: PathBuf,
    pub log: PathBuf,
    pub dir: TempDir,
    /// Released after the primary and its workers are gone (last field).
    _share: Share,
}

pub struct PrimaryBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    command: Vec<String>,
    workers: u32,
    workers_flag: bool,
    wait: bool,
    binary: PathBuf,
    control: Option<PathBuf>,
    inherit: Option<(RawFd, String)>,
    log: Option<PathBuf>,
    wrapper: Vec<String>,
    /// `--min-ready` unless the test gives its own: `0` by default.
    min_ready: Option<String>,
    /// `--name` instead of `--control`, in this runtime directory.
    name: Option<(String, PathBuf)>,
}

impl PrimaryBuilder {
    /// Keeps `--min-ready` at hotswap's default (1 s per replaced worker)
    /// or sets it. Every other test runs with `--min-ready 0`: the window
    /// would add a second per worker to some 300 reloads of the suite, and
    /// it has tests of its own (`proven`).
    pub fn min_ready(mut self, value: Option<&str>) -> Self {
        self.min_ready = value.map(str::to_string);
        self
    }
    /// Sends the primary's stdout and stderr to this file instead of one in
    /// its own directory.
    pub fn log_to(mut self, path: &Path) -> Self {
        self.log = Some(path.to_path_buf());
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn workers(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }
    /// Do not wait for the workers to be ready.
    pub fn no_wait(mut self) -> Self {
        self.wait = false;
        self
    }
    /// `--config PATH`, without `-w`: the file says how many workers;
    /// [`workers`](Self::workers) still says how many to wait for.
    pub fn config(mut self, path: &Path) -> Self {
        self.args.extend(["--config".into(), path.display().to_string()]);
        self.workers_flag = false;
        self
    }
    /// Sets `PROBE_DIR` for the [`probe`] worker.
    pub fn probe_dir(self, dir: &TempDir) -> Self {
        self.env("PROBE_DIR", dir.0.display().to_string())
    }
    /// Runs this executable instead of the one cargo built (a copy that a
    /// test replaces, say).
    pub fn binary(mut self, path: &Path) -> Self {
        self.binary = path.to_path_buf();
        self
    }
    /// Uses this control socket instead of a fresh one in the primary's own
    /// directory.
    pub fn control(mut self, path: &Path) -> Self {
        self.control = Some(path.to_path_buf());
        self
    }
    /// Starts the primary the way systemd socket activation does: `fd` (which
    /// the caller keeps open) as fd 3, `LISTEN_FDS=1`, `LISTEN_FDNAMES=name`
    /// and `LISTEN_PID` the primary's own pid.
    pub fn inherit(mut self, fd: RawFd, name: &str) -> Self {
        self.inherit = Some((fd, name.into()));
        self
    }
    /// Starts the primary under a wrapper command (`unshare --pid --fork`,
    /// say): `WRAPPER... hotswap run ...`. The [`Primary`]'s child is then
    /// the wrapper, which must end when it is killed.
    pub fn wrap(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }
    /// `--name NAME` instead of `--control`, with `XDG_RUNTIME_DIR=xdg`:
    /// the control socket is `xdg/hotswap/NAME.sock`.
    pub fn named(mut self, name: &str, xdg: &Path) -> Self {
        self.name = Some((name.into(), xdg.to_path_buf()));
        self.env("XDG_RUNTIME_DIR", xdg.display().to_string())
    }
    pub fn start(self) -> Primary {
        let share = share();
        let dir = TempDir::new("p");
        let control = match &self.name {
            Some((name, xdg)) => xdg.join("hotswap").join(format!("{name}.sock")),
            None => self.control.clone().unwrap_or_else(|| dir.path("control.sock")),
        };
        let log = self.log.clone().unwrap_or_else(|| dir.path("primary.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = match &self.inherit {
            None if !self.wrapper.is_empty() => {
                let mut c = Command::new(&self.wrapper[0]);
                c.args(&self.wrapper[1..]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
            // The shell's pid is the primary's once it execs.
            Some(_) => {
                let mut c = Command::new("sh");
                c.args(["-c", "LISTEN_PID=$$ exec \"$@\"", "sh"]).arg(&self.binary);
                c
            }
        };
        cmd.arg("run");
        match &self.name {
            Some((name, _)) => cmd.arg("--name").arg(name),
            None => cmd.arg("--control").arg(&control),
        };
        if self.workers_flag {
            cmd.arg("-w").arg(self.workers.to_string());
        }
        cmd.args(&self.args);
        if let Some(m) = &self.min_ready {
            cmd.arg("--min-ready").arg(m);
        }
        if !self.command.is_empty() {
            cmd.arg("--").args(&self.command);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.env("HOTSWAP_LOG", "debug");
        cmd.stdin(Stdio::null()).stdout(logf.try_clone().unwrap()).stderr(logf);
        if let Some((fd, name)) = &self.inherit {
            use std::os::unix::process::CommandExt;
            let fd = *fd;
            cmd.env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", name);
            unsafe {
                cmd.pre_exec(move || {
                    // dup2 onto itself would leave close-on-exec set.
                    if fd == 3 {
                        if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("starting hotswap");
        let mut p = Primary { child, control, log, dir, _share: share };
        if self.wait {
            p.wait_ready(self.workers as usize, Duration::from_secs(20));
        }
        p
    }
}

impl Primary {
    /// `hotswap run -l 127.0.0.1:0 -w 2 -- COMMAND`, waiting for the workers
    /// to be ready.
    pub fn builder(command: Vec<String>) -> PrimaryBuilder {
        Self::bare(command).arg("-l").arg("127.0.0.1:0")
    }
    /// A builder without the default TCP listener.
    pub fn bare(command: Vec<String>) -> PrimaryBuilder {
        PrimaryBuilder {
            args: vec![],
            env: vec![],
            command,
            workers: 2,
            workers_flag: true,
            wait: true,
            binary: PathBuf::from(HOTSWAP),
            control: None,
            inherit: None,
            log: None,
            wrapper: vec![],
            min_ready: Some("0".into()),
            name: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `hotswap ARGS --control <ours>`; a command that hangs fails the
    /// test (with the primary's log) instead of hanging the suite.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut child = Command::new(HOTSWAP)
            .args(args)
            .arg("--control")
            .arg(&self.control)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read while it runs: a status of 200 workers is more than a pipe holds.
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("`hotswap {}` hung for 60 s; log:\n{}", args.join(" "), self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
    }

    /// `hotswap status --json`; `None` while the primary does not answer
    /// (not up yet, or gone).
    pub fn try_status(&self) -> Option<Value> {
        let out = self.ctl(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `hotswap status --json`, which must answer.
    pub fn status(&self) -> Value {
        self.try_status().unwrap_or_else(|| panic!("status failed; log:\n{}", self.log_text()))
    }

    /// The generation serving now.
    pub fn generation(&self) -> u64 {
        self.status()["generation"].as_u64().unwrap()
    }

    /// The first TCP listener's address.
    pub fn addr(&self) -> String {
        let s = self.status();
        s["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .find(|l| !l.starts_with("unix:"))
            .expect("a TCP listener")
    }

    pub fn ready_workers(s: &Value) -> Vec<Value> {
        s["workers"].as_array().unwrap().iter().filter(|w| w["state"] == "ready").cloned().collect()
    }

    pub fn wait_ready(&mut self, n: usize, timeout: Duration) {
        let ok = poll_until(timeout, || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("primary exited early ({st}); log:\n{}", self.log_text());
            }
            self.try_status().is_some_and(|s| {
                let all = s["workers"].as_array().unwrap().len();
                Self::ready_workers(&s).len() == n && all == n
            })
        });
        assert!(ok, "{n} workers not ready in time; log:\n{}", self.log_text());
    }

    /// `hotswap reload`, asserting success.
    pub fn reload(&self) -> String {
        let out = self.ctl(&["reload"]);
        assert!(
            out.status.success(),
            "reload failed: {}{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn worker_pids(&self) -> Vec<i32> {
        self.status()["workers"].as_array().unwrap().iter().map(|w| w["pid"].as_i64().unwrap() as i32).collect()
    }

    pub fn worker_ids(&self) -> Vec<u64> {
        self.status()["workers"].as_array().unwrap().iter().map(|w| w["id"].as_u64().unwrap()).collect()
    }

    /// Whether the primary's process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the primary to exit; its exit code (-1 when a signal ended it).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.wait_exit_status(timeout).map(|st| st.code().unwrap_or(-1))
    }

    /// Waits for the primary to exit; how it ended.
    pub fn wait_exit_status(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        poll_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- primary log ----\n{}", self.log_text());
        }
    }
}

/// A `hotswap events --json` client, read on a thread; killed on drop.
pub struct EventStream {
    child: Child,
    rx: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl EventStream {
    pub fn start(p: &Primary) -> EventStream {
        let before = doubled_sockets(p.pid());
        let mut child = Command::new(HOTSWAP)
            .args(["events", "--json", "--control"])
            .arg(&p.control)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        // Nothing answers a subscription, but the primary keeps a second fd on
        // an events client's connection (to hand it over on self-upgrade),
        // taken just before the request goes to the supervisor: once it has
        // one, requests made from now on are handled after the subscription.
        wait_until(Duration::from_secs(10), "the primary to take the events subscription", || {
            doubled_sockets(p.pid()).difference(&before).next().is_some()
        });
        EventStream { child, rx }
    }

    /// Events received until one named `last` (included), or `timeout`.
    pub fn until(&self, last: &str, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(e) = self.rx.recv_timeout(Duration::from_millis(100)) {
                let done = e["event"] == last;
                seen.push(e);
                if done {
                    break;
                }
            }
        }
        seen
    }

    /// The events received so far, without waiting.
    pub fn so_far(&self) -> Vec<serde_json::Value> {
        self.rx.try_iter().collect()
    }

    /// Every event until the client exits (the primary stopped: it prints
    /// every event up to the last `exit`, then ends), at most `timeout`.
    pub fn to_the_end(&self, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(e) => seen.push(e),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        seen
    }

    /// Whether the client is still connected (has not exited).
    pub fn connected(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `exit` events among `events` of workers hotswap killed (their
/// `killed` says why: `shutdown-timeout`, `ready-timeout`...).
pub fn killed_exits(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["event"] == "exit" && e.get("killed").is_some()).collect()
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

// ---------------------------------------------------------------- load ----

/// Where the load client connects.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(String),
    Unix(PathBuf),
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

impl Target {
    fn connect(&self) -> std::io::Result<Box<dyn Conn>> {
        let c: Box<dyn Conn> = match self {
            Target::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Target::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                Box::new(s)
            }
        };
        Ok(c)
    }
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub close: bool,
    /// The `X-Hotswap-Worker` header of the example workers.
    pub worker_header: Option<u64>,
}

impl Answer {
    pub fn generation(&self) -> u64 {
        field(&self.body, "generation")
    }
    pub fn worker(&self) -> u64 {
        self.worker_header.unwrap_or_else(|| field(&self.body, "worker"))
    }
}

fn field(body: &str, name: &str) -> u64 {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn exchange(conn: &mut Box<dyn Conn>, path: &str, keep_alive: bool) -> Result<Answer, String> {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{}\r\n", if keep_alive { "" } else { "Connection: close\r\n" });
    conn.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(conn);
    let mut status_line = String::new();
    match reader.read_line(&mut status_line) {
        Ok(0) => return Err("read: connection closed before a response".into()),
        Err(e) => return Err(format!("read: {e}")),
        Ok(_) => {}
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line {status_line:?}"))?;
    let mut len = None;
    let mut chunked = false;
    let mut worker_header = None;
    // HTTP/1.0 closes unless it says keep-alive.
    let mut close = status_line.starts_with("HTTP/1.0");
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_err(|e| format!("read headers: {e}"))? == 0 {
            return Err("read: closed inside headers".into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok(),
            "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
            "connection" => close = !v.trim().eq_ignore_ascii_case("keep-alive"),
            "x-hotswap-worker" => worker_header = v.trim().parse().ok(),
            _ => {}
        }
    }
    let mut body = vec![0u8; len.unwrap_or(0)];
    reader.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
    // Without a length, a response that closes its connection ends at the
    // close (PHP's built-in server answers so).
    if len.is_none() && !chunked && close {
        reader.read_to_end(&mut body).map_err(|e| format!("read body to its end: {e}"))?;
    }
    // Node answers `res.end(body)` without a length in chunks.
    while chunked {
        let mut size = String::new();
        reader.read_line(&mut size).map_err(|e| format!("read chunk size: {e}"))?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        let mut chunk = vec![0u8; n + 2];
        reader.read_exact(&mut chunk).map_err(|e| format!("read chunk: {e}"))?;
        body.extend_from_slice(&chunk[..n]);
        chunked = n > 0;
    }
    if !reader.buffer().is_empty() {
        return Err("unexpected bytes after the response".into());
    }
    Ok(Answer { status, body: String::from_utf8_lossy(&body).into_owned(), close, worker_header })
}

/// One GET on a new connection.
pub fn get(target: &Target, path: &str) -> Result<Answer, String> {
    let mut c = target.connect().map_err(|e| format!("connect: {e}"))?;
    exchange(&mut c, path, false)
}

/// A record of one request made by the load client.
#[derive(Debug, Clone)]
pub struct Record {
    pub sent: Instant,
    pub result: Result<u64, String>,
}

/// Continuous HTTP load: `keep_alive` connections that reuse their socket
/// and `fresh` ones that open a new connection per request.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    records: Arc<Mutex<Vec<Record>>>,
    /// Requests made so far, answered or failed.
    made: Arc<AtomicUsize>,
}

impl Load {
    pub fn start(target: Target, keep_alive: usize, fresh: usize) -> Load {
        Load::paced(target, keep_alive, fresh, Duration::ZERO)
    }

    /// As [`start`](Self::start), each client pausing `gap` after every
    /// answer: a keep-alive connection then sits idle for `gap` between
    /// requests, as a real client's does (and a server's graceful stop
    /// closes it in one of those pauses).
    pub fn paced(target: Target, keep_alive: usize, fresh: usize, gap: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let made = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for i in 0..keep_alive + fresh {
            let (stop, records, target, made) = (stop.clone(), records.clone(), target.clone(), made.clone());
            let ka = i < keep_alive;
            threads.push(std::thread::spawn(move || {
                let mut conn: Option<Box<dyn Conn>> = None;
                let mut local = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(240);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let sent = Instant::now();
                    if conn.is_none() {
                        match target.connect() {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                local.push(Record { sent, result: Err(format!("connect: {e}")) });
                                made.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        }
                    }
                    let c = conn.as_mut().unwrap();
                    let result = match exchange(c, "/", ka) {
                        Ok(a) if a.status == 200 => {
                            if a.close || !ka {
                                conn = None;
                            }
                            Ok(a.generation())
                        }
                        Ok(a) => {
                            conn = None;
                            Err(format!("HTTP {}", a.status))
                        }
                        Err(e) => {
                            conn = None;
                            Err(format!("{e} (after {} ms)", sent.elapsed().as_millis()))
                        }
                    };
                    local.push(Record { sent, result });
                    made.fetch_add(1, Ordering::Relaxed);
                    if !gap.is_zero() {
                        std::thread::sleep(gap);
                    }
                    if local.len() >= 256 {
                        records.lock().unwrap().append(&mut local);
                    }
                }
                records.lock().unwrap().append(&mut local);
            }));
        }
        Load { stop, threads, records, made }
    }

    /// Requests made so far, answered or failed.
    pub fn count(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }

    /// Waits until the load has made `n` more requests: before a reload,
    /// that the load is flowing (keep-alive connections open on the old
    /// workers); after one, that the new workers have been asked.
    #[track_caller]
    pub fn wait_for_requests(&self, n: usize) {
        let target = self.count() + n;
        wait_until(Duration::from_secs(30), format_args!("{n} more requests of the load"), || self.count() >= target);
    }

    /// Stops the load and returns every record, in send order.
    pub fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let mut r = std::mem::take(&mut *self.records.lock().unwrap());
        r.sort_by_key(|r| r.sent);
        r
    }
}

/// Asserts no request failed, with the failures listed if some did.
pub fn assert_no_failures(records: &[Record], what: &str) {
    let failures: Vec<_> = records.iter().filter_map(|r| r.result.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} requests failed, e.g. {:?}",
        failures.len(),
        records.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(records.len() > 50, "{what}: the load made only {} requests", records.len());
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

// ------------------------------------------------------------- machine ----

struct Gate {
    /// Primaries of tests that share the machine.
    shared: usize,
    exclusive: bool,
    /// A test waits for the machine to itself: no new shares.
    waiting: bool,
}

static GATE: Mutex<Gate> = Mutex::new(Gate { shared: 0, exclusive: false, waiting: false });
static GATE_TURN: Condvar = Condvar::new();

thread_local! {
    /// Shares and exclusive use taken on this (test) thread.
    static HELD: std::cell::Cell<(usize, bool)> = const { std::cell::Cell::new((0, false)) };
}

fn gate() -> std::sync::MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The machine to one test alone, until dropped. For a test that saturates
/// it (the 200 MB output flood keeps both cores busy for some 20 s), and for
/// those whose outcome hangs on the watcher's 100 ms windows (debounce, and
/// the grace after a build in which changes count as its output): the
/// watcher times a change when it handles it, so on a machine busy with
/// another test's reloads an event handled late is a change made late. It
/// waits until no other test's primary runs; their new primaries wait for
/// it. Every [`Primary`] takes a share of the machine.
#[must_use]
pub struct Exclusive(());

pub fn exclusive() -> Exclusive {
    let mut g = gate();
    g.waiting = true;
    while g.exclusive || g.shared > 0 {
        g = GATE_TURN.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    g.waiting = false;
    g.exclusive = true;
    HELD.set((HELD.get().0, true));
    Exclusive(())
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        HELD.set((HELD.get().0, false));
        gate().exclusive = false;
        GATE_TURN.notify_all();
    }
}

/// A [`Primary`]'s share of the machine.
struct Share(bool);

fn share() -> Share {
    let (shares, exclusive) = HELD.get();
    if exclusive {
        return Share(false);
    }
    let mut g = gate();
    // A test that already holds a share goes on: the one waiting waits for it.
    while g.exclusive || (g.waiting && shares == 0) {
        g = GATE_TURN.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    g.shared += 1;
    HELD.set((shares + 1, exclusive));
    Share(true)
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.0 {
            let (shares, exclusive) = HELD.get();
            HELD.set((shares.saturating_sub(1), exclusive));
            gate().shared -= 1;
            GATE_TURN.notify_all();
        }
    }
}

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
