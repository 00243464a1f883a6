//! `hotswap start`, `restart` and `logs`: a primary in the background, as
//! PM2 runs apps.
//!
//! `start` runs `hotswap run` with the same arguments (plus `--name`) in a
//! session of its own (`setsid`: no controlling terminal, so closing the
//! terminal sends it no SIGHUP, which would reload it), stdin from
//! `/dev/null`, its stdout and stderr (its own log and every worker line)
//! into a pipe read by a log writer ([`log_writer`], `hotswap log-writer`,
//! detached the same way) that appends to `APP.log` in the registry of
//! names and rotates it at [`MAX_LOG`]. A pipe rather than the file itself:
//! the primary's writes never wait on a disk, the writer alone rotates, and
//! the primary's output thread keeps its bounded queue. `start` returns
//! once every worker of the first generation is ready (exit 0), or once the
//! primary exited (exit 1, with the end of the log: why it failed).
//!
//! How it was started (arguments, directory, environment) is kept in
//! `APP.json` (mode 0600), so that `restart` starts it again the same way.

use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::options::{AppName, Options, Settings};
use crate::types::wire::{Reply, Request, Status};

/// A log file is rotated once it holds this much (`APP.log` becomes
/// `APP.log.1`, and so on up to [`KEEP_LOGS`]).
pub const MAX_LOG: u64 = 10 * 1024 * 1024;
/// Rotated files kept besides the current one.
pub const KEEP_LOGS: u32 = 2;
/// Lines of the log shown when a start fails.
const TAIL_ON_FAILURE: usize = 30;

/// How a primary was started: what `restart` starts again.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    /// The arguments of `hotswap run`, `--name` included.
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    /// The primary's pid when it was started.
    pub pid: u32,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Record {
    pub fn read(name: &AppName) -> Result<Record> {
        let path = name.record();
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "{name} was not started with `hotswap start` (no {}); restart it the way it was started",
                path.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))
    }

    fn write(&self, name: &AppName) -> Result<()> {
        let path = name.record();
        let aside = path.with_extension("json.new");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&aside)
            .with_context(|| format!("writing {}", aside.display()))?;
        f.write_all(&serde_json::to_vec(self)?)?;
        std::fs::rename(&aside, &path).with_context(|| format!("writing {}", path.display()))
    }
}

/// The name `start` gives a primary that has none: the stem of the script
/// an interpreter runs (`node server.js` -> `server`), else of the program
/// (`./api` -> `api`).
pub fn default_name(command: &[String]) -> AppName {
    const INTERPRETERS: &[&str] =
        &["node", "nodejs", "python", "python3", "ruby", "bun", "deno", "php", "perl", "sh", "bash", "env", "exec"];
    let words: Vec<&str> = match command {
        [sh, c, line] if sh == "/bin/sh" && c == "-c" => line.split_whitespace().collect(),
        _ => command.iter().map(String::as_str).collect(),
    };
    let stem = words
        .iter()
        .filter(|w| !w.starts_with('-') && !w.contains('='))
        .map(|w| Path::new(w).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
        .find(|s| !s.is_empty() && !INTERPRETERS.contains(&s.as_str()) && !s.starts_with("python"))
        .unwrap_or_default();
    let clean: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let clean = clean.trim_start_matches(['.', '-']);
    clean.chars().take(48).collect::<String>().parse().unwrap_or_else(|_| "app".parse().expect("a valid name"))
}

/// `hotswap start ARGS`: `args` are the arguments after `start`, exactly as
/// given (they become `hotswap run ARGS`).
pub fn start(flags: &Options, args: Vec<OsString>) -> Result<ExitCode> {
    let settings = match Settings::load(flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotswap: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if flags.control.is_some() && settings.name.is_none() {
        eprintln!(
            "hotswap: `start` finds its primary by name: give --name APP instead of --control (or unset HOTSWAP_CONTROL)"
        );
        return Ok(ExitCode::from(2));
    }
    let (name, args) = match &settings.name {
        Some(n) => (n.parse::<AppName>().map_err(anyhow::Error::msg)?, args),
        None => {
            let n = default_name(&settings.command);
            let mut with = vec![OsString::from("--name"), OsString::from(n.as_str())];
            with.extend(args);
            (n, with)
        }
    };
    let socket = name.socket();
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        bail!(
            "the name {:?} is taken: a running primary answers on its control socket (`hotswap restart {name}` or \
             `hotswap stop {name}`; or give this one another --name)",
            name.as_str()
        );
    }
    crate::sys::private_dir::ensure(
        &crate::options::name::dir(),
        "registry of names",
        crate::sys::private_dir::CONTROL_REMEDY,
    )?;
    let log = name.log();
    // Where the workers' lines go instead of the log, and how long each
    // file was before this start: a failure shows what came after.
    let worker_files = worker_files(&settings);
    let exe = std::env::current_exe().context("finding the hotswap binary")?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("making the log pipe")?;
    let writer = detached(Command::new(&exe).arg("log-writer").arg(&log))
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the log writer")?;
    let err_end = write.try_clone()?;
    let mut primary = detached(Command::new(&exe).arg("run").args(&args))
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(err_end))
        .spawn()
        .context("starting the primary")?;
    let record = Record {
        args,
        cwd: std::env::current_dir().unwrap_or_default(),
        env: std::env::vars_os().collect(),
        pid: primary.id(),
        log: log.clone(),
    };
    record.write(&name)?;
    // Until every worker of the first generation is ready, or the primary
    // gave up.
    loop {
        if let Some(exit) = primary.try_wait()? {
            wait_for_writer(writer, Duration::from_secs(2));
            eprintln!("hotswap: {name} did not start ({exit}); the end of {}:", log.display());
            for line in tail(&log, TAIL_ON_FAILURE) {
                eprintln!("  {line}");
            }
            for (what, path, from) in &worker_files {
                let lines = tail_from(path, *from, TAIL_ON_FAILURE);
                if !lines.is_empty() {
                    eprintln!("hotswap: the workers' {what} went to {}; its end:", path.display());
                    for line in lines {
                        eprintln!("  {line}");
                    }
                }
            }
            return Ok(ExitCode::FAILURE);
        }
        if let Some(st) = status(&socket) {
            let ready = st.workers.iter().filter(|w| w.state == crate::types::WorkerState::Ready).count() as u32;
            if ready >= st.target_workers {
                println!(
                    "{name} started: pid {}, generation {}, {ready} {} ready on {}",
                    st.pid,
                    st.generation,
                    crate::types::plural(ready as usize, "worker"),
                    st.listeners.join(", ")
                );
                println!("output: {} (hotswap logs {name})", log.display());
                return Ok(ExitCode::SUCCESS);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `hotswap restart APP`: stops it (gracefully, waiting), then starts it
/// again with the arguments, directory and environment of its `start`.
pub fn restart(name: &AppName) -> Result<ExitCode> {
    let record = Record::read(name)?;
    if std::os::unix::net::UnixStream::connect(name.socket()).is_ok() {
        let code = crate::client::stop(&name.socket())?;
        if code != ExitCode::SUCCESS {
            eprintln!("hotswap: {name}'s stop was not clean; starting it again anyway");
        }
        if std::os::unix::net::UnixStream::connect(name.socket()).is_ok() {
            anyhow::bail!("{name} answered its stop but still runs; not starting another");
        }
    }
    let exe = std::env::current_exe().context("finding the hotswap binary")?;
    let status = Command::new(exe)
        .arg("start")
        .args(&record.args)
        .current_dir(&record.cwd)
        .env_clear()
        .envs(record.env.iter().map(|(k, v)| (k, v)))
        .status()
        .context("running hotswap start")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `hotswap logs`: the last `lines` lines the primary wrote (its log and
/// its workers', as it wrote them), then with `follow` each new line until
/// the primary exits (exit 0) or this client is interrupted. From the
/// running primary over its control socket (`run` and `start` alike); a
/// primary that no longer runs but was started by `hotswap start` has its
/// log file read instead (with `follow`, exit 1: nothing more will come).
pub fn logs(path: &Path, log_file: Option<&Path>, lines: usize, follow: bool) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut any = false;
    let asked = crate::client::call(path, &Request::Logs { lines, follow }, |reply| match reply {
        Reply::Log { line } => {
            any = true;
            let _ = writeln!(out, "{line}");
            if follow {
                let _ = out.flush();
            }
        }
        Reply::Error { error } => eprintln!("hotswap: {error}"),
        _ => {}
    });
    match asked {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if !any => {
            let Some(file) = log_file.filter(|f| f.exists()) else { return Err(e) };
            eprintln!("hotswap: not running; the end of {}:", file.display());
            for line in tail(file, lines) {
                let _ = writeln!(out, "{line}");
            }
            Ok(if follow { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Err(e) => Err(e),
    }
}

/// A child in a session of its own: no controlling terminal, no SIGHUP
/// when the terminal closes, not in the shell's job control.
fn detached(cmd: &mut Command) -> &mut Command {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

fn wait_for_writer(mut writer: std::process::Child, bound: Duration) {
    let deadline = std::time::Instant::now() + bound;
    while std::time::Instant::now() < deadline {
        if !matches!(writer.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The primary's status, if it answers.
pub fn status(socket: &Path) -> Option<Status> {
    let mut got = None;
    crate::client::call(socket, &Request::Status, |r| {
        if let Reply::Status(s) = r {
            got = Some(*s);
        }
    })
    .ok()?;
    got
}

/// The last `n` lines of `path` and, if it holds fewer, of the rotated
/// files before it.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut files = vec![path.to_path_buf()];
    files.extend((1..=KEEP_LOGS).map(|i| rotated(path, i)));
    for file in files {
        if lines.len() >= n {
            break;
        }
        let Ok(mut f) = std::fs::File::open(&file) else { break };
        // The end is enough: at most 256 bytes a line on average.
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let from = len.saturating_sub((n as u64) * 256 + 4096);
        let _ = f.seek(std::io::SeekFrom::Start(from));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        let mut these: Vec<String> = text.lines().map(str::to_string).collect();
        if from > 0 && !these.is_empty() {
            these.remove(0);
        }
        let want = n - lines.len();
        let keep = these.split_off(these.len().saturating_sub(want));
        lines.splice(0..0, keep);
    }
    lines
}

/// The `out-file` and `error-file` (one entry when both name one path),
/// with what each stream is called and the file's length now.
fn worker_files(settings: &Settings) -> Vec<(&'static str, PathBuf, u64)> {
    let mut files: Vec<(&'static str, PathBuf, u64)> = Vec::new();
    for (what, path) in [("stdout", &settings.out_file), ("stderr", &settings.error_file)] {
        let Some(path) = path else { continue };
        match files.iter_mut().find(|f| &f.1 == path) {
            Some(f) => f.0 = "stdout and stderr",
            None => files.push((what, path.clone(), std::fs::metadata(path).map_or(0, |m| m.len()))),
        }
    }
    files
}

/// The last `n` lines written to `path` after its first `from` bytes.
fn tail_from(path: &Path, from: u64, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    let len = f.metadata().map_or(0, |m| m.len());
    // A file rotated meanwhile is read from its start.
    let from = if len < from { 0 } else { from };
    let at = from.max(len.saturating_sub((n as u64) * 256 + 4096));
    let _ = f.seek(std::io::SeekFrom::Start(at));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    // (Started inside a line: that one is cut.)
    let lines: Vec<String> = text.lines().skip(usize::from(at > from)).map(str::to_string).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// `APP.log.I`.
pub fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// `hotswap log-writer FILE`: appends its stdin to FILE until end of file,
/// rotating once FILE holds `max` bytes (at a line's end when there is one
/// in what was read): FILE.1 .. FILE.keep are the older ones.
pub fn log_writer(path: &Path, max: u64, keep: u32) -> Result<ExitCode> {
    let open = || {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))
    };
    let mut file = open()?;
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return Ok(ExitCode::SUCCESS),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the primary's output"),
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let room = max.saturating_sub(size) as usize;
            // Up to the last line end that fits; a line longer than the
            // room left is cut only when the file is empty.
            let cut = if chunk.len() <= room {
                chunk.len()
            } else {
                match chunk[..room].iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None if size == 0 => room.max(1),
                    None => 0,
                }
            };
            if cut > 0 {
                // A full disk loses lines, not the writer.
                let _ = file.write_all(&chunk[..cut]);
                size += cut as u64;
                chunk = &chunk[cut..];
            }
            if !chunk.is_empty() || size >= max {
                for i in (1..keep).rev() {
                    let _ = std::fs::rename(rotated(path, i), rotated(path, i + 1));
                }
                if keep > 0 {
                    let _ = std::fs::rename(path, rotated(path, 1));
                } else {
                    let _ = std::fs::remove_file(path);
                }
                file = open()?;
                size = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_from_the_command() {
        assert_eq!(default_name(&cmd(&["node", "server.js"])).as_str(), "server");
        assert_eq!(default_name(&cmd(&["./api"])).as_str(), "api");
        assert_eq!(default_name(&cmd(&["python3", "-m", "uvicorn", "app:app"])).as_str(), "uvicorn");
        assert_eq!(
            default_name(&cmd(&["/bin/sh", "-c", "exec NODE_ENV=production node dist/main.js"])).as_str(),
            "main"
        );
        assert_eq!(default_name(&cmd(&["node"])).as_str(), "app");
    }
}
