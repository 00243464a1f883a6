//! A real `hotswap run` for a test ([`Primary`], started by
//! [`PrimaryBuilder`] and killed with its workers on drop), and a `hotswap
//! events --json` client on it ([`EventStream`]).

use std::io::{BufRead, BufReader, Read};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

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
