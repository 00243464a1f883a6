//! The client side of the control socket: `hotswap reload`, `upgrade`,
//! `status`, `stop` and `events`, each one request and its replies printed
//! (the protocol is in [`crate::types::wire`]).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::types::surge::Surge;
use crate::types::wire::{Reply, Request};

/// Sends a request that ends in `done` or `error` (reload, upgrade),
/// printing progress; success only when it says `done`.
fn until_done(path: &Path, request: &Request, what: &str) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::FAILURE;
    let mut finished = false;
    call(path, request, |reply| match reply {
        Reply::Progress { message } => println!("{message}"),
        Reply::Done { message } => {
            println!("{message}");
            code = ExitCode::SUCCESS;
            finished = true;
        }
        Reply::Error { error } => {
            eprintln!("hotswap: {what} failed: {}", error.trim_start_matches(&format!("{what} failed: ")));
            finished = true;
        }
        Reply::Status(_) | Reply::Event(_) | Reply::Log { .. } => {}
    })?;
    if !finished {
        eprintln!("hotswap: the primary closed the connection before the {what} finished");
    }
    Ok(code)
}

pub fn reload(
    path: &Path,
    no_build: bool,
    surge: Option<Surge>,
    canary: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let canary_ms = canary.map(|d| d.as_millis() as u64);
    until_done(path, &Request::Reload { no_build, surge, canary_ms }, "reload")
}

/// `hotswap logs --reopen`: the primary opens its out and error files
/// again by path (SIGUSR1's work, without finding its pid).
pub fn reopen(path: &Path) -> anyhow::Result<ExitCode> {
    until_done(path, &Request::Reopen, "reopen")
}

pub fn upgrade(path: &Path) -> anyhow::Result<ExitCode> {
    until_done(path, &Request::Upgrade, "upgrade")
}

/// Exit status of `hotswap events` when the stream ended without the
/// primary's last word: the primary was killed or crashed, or dropped this
/// client because it fell too far behind.
pub const EVENTS_LOST: u8 = 3;

/// Prints each event until the primary stops. Exits 0 once the primary said
/// it stopped (every event was delivered), [`EVENTS_LOST`] when the stream
/// ended early, 1 when no primary answers (or it refused the request).
///
/// A connection that closes before any line came is asked again (up to
/// `RETRIES` times, as `status` is): the primary re-executing itself (a
/// self-upgrade, or its rollback) closes a connection it had accepted but
/// not yet subscribed, and the new image takes the next one, so a client
/// that connects during an upgrade follows the new image. Asking again
/// repeats no event (none came). Once subscribed, a client goes over to the
/// new image with the primary's other clients, and hears
/// `upgrade-started` and `upgrade-finished` (or `upgrade-failed`).
pub fn events(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut end: Option<Result<(), String>> = None;
    let mut on_reply = |reply| match reply {
        Reply::Event(ev) => {
            let line = if json { serde_json::to_string(&ev).expect("event serializes") } else { ev.render() };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        Reply::Done { .. } => end = Some(Ok(())),
        Reply::Error { error } => end = Some(Err(error)),
        Reply::Progress { .. } | Reply::Status(_) | Reply::Log { .. } => {}
    };
    let mut attempt = 0;
    loop {
        match call_once(path, &Request::Events, &mut on_reply, attempt > 0) {
            Ok(Answer::Closed) if attempt < RETRIES => {
                attempt += 1;
                std::thread::sleep(RETRY_PAUSE);
            }
            Ok(_) => break,
            // Subscribed once, then no primary to ask again: it is gone.
            Err(_) if attempt > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(match end {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(error)) => {
            eprintln!("hotswap: {error}");
            // Dropped for falling behind, or refused outright.
            if error.starts_with("dropped:") {
                ExitCode::from(EVENTS_LOST)
            } else {
                ExitCode::FAILURE
            }
        }
        None => {
            eprintln!(
                "hotswap: the connection to the primary was lost (it was killed or crashed); events may be missing"
            );
            ExitCode::from(EVENTS_LOST)
        }
    })
}

pub fn status(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::FAILURE;
    let mut said = false;
    call(path, &Request::Status, |reply| match reply {
        Reply::Status(s) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&s).expect("status serializes"));
            } else {
                print!("{}", s.render());
            }
            code = ExitCode::SUCCESS;
        }
        Reply::Error { error } => {
            eprintln!("hotswap: {error}");
            said = true;
        }
        _ => {}
    })?;
    if code == ExitCode::FAILURE && !said {
        eprintln!("hotswap: the primary closed the connection without answering");
    }
    Ok(code)
}

/// Succeeds when every worker exited by itself; a stop that had to kill a
/// worker, or was forced, says so and fails; so does a connection that
/// closed before the primary said how the stop went (it was killed).
pub fn stop(path: &Path) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    let mut told = false;
    call(path, &Request::Stop, |reply| match reply {
        Reply::Progress { message } => println!("{message}"),
        Reply::Done { message } => {
            println!("{message}");
            told = true;
        }
        Reply::Error { error } => {
            eprintln!("hotswap: {error}");
            code = ExitCode::FAILURE;
        }
        Reply::Status(_) | Reply::Event(_) | Reply::Log { .. } => {}
    })?;
    if code == ExitCode::SUCCESS && !told {
        eprintln!("hotswap: the connection to the primary closed before it said how the stop went (was it killed?)");
        code = ExitCode::FAILURE;
    }
    // The stop is answered before the primary exits (it writes out its last
    // lines first), and until it has, its control socket takes connections:
    // a `start` of the same name right after would find it taken. Return
    // once it is gone, as `hotswap stop` promises.
    let deadline = std::time::Instant::now() + STOP_EXIT_WAIT;
    while std::os::unix::net::UnixStream::connect(path).is_ok() {
        if std::time::Instant::now() >= deadline {
            eprintln!("hotswap: the primary answered its stop but still runs after {STOP_EXIT_WAIT:?}");
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(code)
}

/// How long `hotswap stop` waits, once the stop is answered, for the
/// primary to exit (it writes out its last lines, for at most a second or
/// two).
const STOP_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many times `status` and `reload` are asked again when the primary
/// closed the connection without any answer (see [`call`]).
const RETRIES: u32 = 5;
/// The pause before asking again: the new image accepts once it serves.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The client's side, blocking: used by the `reload`, `status` and `stop`
/// subcommands. Calls `on_reply` for each reply until the primary closes the
/// connection.
///
/// A self-upgrade execs the primary in place: connections the old image
/// had accepted but not answered close (requests still waiting in the
/// socket's backlog are taken by the new image, which keeps the listening
/// socket). `status` and `reload` asked at that moment are sent again, up
/// to `RETRIES` times, when the connection closed before any answer and
/// the socket still accepts: asking either twice is harmless (a reload the
/// old image began holds the exec back until it is over and answered), so
/// a deploy script's `hotswap reload` never fails because an upgrade ran
/// at the same moment. `stop` and `upgrade` are never sent twice; `events`
/// asks again in the same case, by its own loop ([`events`]).
pub fn call(path: &Path, request: &Request, mut on_reply: impl FnMut(Reply)) -> Result<()> {
    let again = matches!(request, Request::Status | Request::Reload { .. });
    let mut attempt = 0;
    loop {
        match call_once(path, request, &mut on_reply, attempt > 0)? {
            Answer::Closed if again && attempt < RETRIES => {
                attempt += 1;
                std::thread::sleep(RETRY_PAUSE);
            }
            Answer::Closed | Answer::Answered => return Ok(()),
        }
    }
}

/// `hotswap scale`: asks for the new size, then waits (polling status)
/// until the primary keeps that many workers, all ready, and the retired
/// ones are gone.
pub fn scale(path: &Path, to: crate::types::wire::ScaleTo, timeout: std::time::Duration) -> Result<ExitCode> {
    let mut answer: Option<Result<String, String>> = None;
    call(path, &Request::Scale { to }, |reply| match reply {
        Reply::Done { message } => answer = Some(Ok(message)),
        Reply::Error { error } => answer = Some(Err(error)),
        _ => {}
    })?;
    match answer {
        None => bail!("the primary closed the connection before it answered"),
        Some(Err(e)) => {
            eprintln!("hotswap: scale failed: {e}");
            return Ok(ExitCode::FAILURE);
        }
        Some(Ok(m)) => println!("{m}"),
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut st = None;
        call(path, &Request::Status, |r| {
            if let Reply::Status(s) = r {
                st = Some(s)
            }
        })?;
        if let Some(st) = st {
            let ready = st.workers.iter().filter(|w| w.state == crate::types::WorkerState::Ready).count();
            if st.workers.len() == st.target_workers as usize && ready == st.workers.len() {
                println!("{ready} {} ready", crate::types::plural(ready, "worker"));
                return Ok(ExitCode::SUCCESS);
            }
            if std::time::Instant::now() > deadline {
                eprintln!(
                    "hotswap: after {} s, {ready} of {} workers ready ({} running); see `hotswap status`",
                    timeout.as_secs(),
                    st.target_workers,
                    st.workers.len()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The app name whose control socket `path` is, if it is one.
pub fn named(path: &Path) -> Option<String> {
    let dir = crate::options::name::dir();
    let stem = path.file_name()?.to_str()?.strip_suffix(".sock")?;
    (path.parent() == Some(dir.as_path()) && stem.parse::<crate::options::AppName>().is_ok()).then(|| stem.to_string())
}

/// How one connection ended.
enum Answer {
    /// With at least one reply.
    Answered,
    /// Closed (or reset) before any reply.
    Closed,
}

fn call_once(path: &Path, request: &Request, on_reply: &mut impl FnMut(Reply), retry: bool) -> Result<Answer> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        let again = if retry { " (asked again after the primary closed the connection without answering)" } else { "" };
        if let Some(name) = named(path) {
            return anyhow::anyhow!("no primary named {name} answers ({e}{again}; `hotswap ls` lists the running ones)");
        }
        anyhow::anyhow!(
            "cannot reach a hotswap primary at {}: {e}{again} (is `hotswap run` running? pass --control or set HOTSWAP_CONTROL)",
            path.display()
        )
    })?;
    check_server(&stream, path)?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    // A refusal may come before the request is read; it is still answered.
    let write_error = stream.write_all(line.as_bytes()).err();
    let mut answered = false;
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(l) => l,
            // The primary exiting mid-reply (stop) resets the connection.
            Err(_) => break,
        };
        match serde_json::from_str::<Reply>(&line) {
            Ok(reply) => {
                answered = true;
                on_reply(reply)
            }
            Err(e) => bail!("unexpected reply from the primary: {e}: {line}"),
        }
    }
    if answered {
        return Ok(Answer::Answered);
    }
    if let Some(e) = write_error {
        // Closed before the request was even read: the same as no answer.
        if !matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) {
            bail!("writing to {}: {e}", path.display());
        }
    }
    Ok(Answer::Closed)
}

/// Refuses a server that runs as another user (root excepted): in a
/// directory another user could write, that user may have put their own
/// socket where the primary's should be, and would answer `stop` with
/// `stopped` while the real primary runs on. Root also accepts the user who
/// decides what is at that path (a primary of a unit's `User=` in its
/// `RuntimeDirectory=`), so `sudo hotswap reload --control ...` works.
#[cfg(target_os = "linux")]
fn check_server(stream: &std::os::unix::net::UnixStream, path: &Path) -> Result<()> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let me = nix::unistd::geteuid().as_raw();
    let peer = getsockopt(stream, PeerCredentials)
        .map_err(|e| anyhow::anyhow!("reading the credentials of the server at {}: {e}", path.display()))?;
    let expected = peer.uid() == me || peer.uid() == 0 || (me == 0 && path_authority(path) == Some(peer.uid()));
    if !expected {
        bail!(
            "refusing the server at {}: it runs as uid {} (pid {}), not as this user (uid {me}) or root; another \
             user may have put it there: check that path's directory, or pass --control with the right path",
            path.display(),
            peer.uid(),
            peer.pid()
        );
    }
    Ok(())
}

/// The one user (besides root) who decides what socket is at `path`: the
/// owner of its directory, or in a sticky directory (`/tmp`) the owner of
/// the socket file; none when others may write the directory.
#[cfg(target_os = "linux")]
fn path_authority(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let meta = std::fs::symlink_metadata(dir).ok()?;
    match (meta.mode() & 0o022 != 0, meta.mode() & 0o1000 != 0) {
        (false, _) => Some(meta.uid()),
        (true, true) => std::fs::symlink_metadata(path).ok().map(|m| m.uid()),
        (true, false) => None,
    }
}

/// Elsewhere the directory's own checks (the primary's side) stand alone.
#[cfg(not(target_os = "linux"))]
fn check_server(_stream: &std::os::unix::net::UnixStream, _path: &Path) -> Result<()> {
    Ok(())
}
