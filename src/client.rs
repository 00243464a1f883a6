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
        Reply::Status(_) | Reply::Event(_) => {}
    })?;
    if !finished {
        eprintln!("hotswap: the primary closed the connection before the {what} finished");
    }
    Ok(code)
}

pub fn reload(path: &Path, no_build: bool, surge: Option<Surge>) -> anyhow::Result<ExitCode> {
    until_done(path, &Request::Reload { no_build, surge }, "reload")
}

pub fn upgrade(path: &Path) -> anyhow::Result<ExitCode> {
    until_done(path, &Request::Upgrade, "upgrade")
}

pub fn events(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    call(path, &Request::Events, |reply| {
        if let Reply::Event(ev) = reply {
            let line = if json { serde_json::to_string(&ev).expect("event serializes") } else { ev.render() };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn status(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::FAILURE;
    call(path, &Request::Status, |reply| match reply {
        Reply::Status(s) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&s).expect("status serializes"));
            } else {
                print!("{}", s.render());
            }
            code = ExitCode::SUCCESS;
        }
        Reply::Error { error } => eprintln!("hotswap: {error}"),
        _ => {}
    })?;
    Ok(code)
}

/// Succeeds when every worker exited by itself; a stop that had to kill a
/// worker, or was forced, says so and fails.
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
        Reply::Status(_) | Reply::Event(_) => {}
    })?;
    if code == ExitCode::SUCCESS && !told {
        // The primary exited before its last word reached us.
        println!("stopped");
    }
    Ok(code)
}

/// The client's side, blocking: used by the `reload`, `status` and `stop`
/// subcommands. Calls `on_reply` for each reply until the primary closes the
/// connection.
pub fn call(path: &Path, request: &Request, mut on_reply: impl FnMut(Reply)) -> Result<()> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach a hotswap primary at {}: {e} (is `hotswap run` running? pass --control or set HOTSWAP_CONTROL)",
            path.display()
        )
    })?;
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
    if let (Some(e), false) = (write_error, answered) {
        bail!("writing to {}: {e}", path.display());
    }
    Ok(())
}
