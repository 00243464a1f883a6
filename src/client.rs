//! The client side of the control socket: `hotswap reload`, `upgrade`,
//! `status`, `stop` and `events`, each one request and its replies printed.

use std::path::Path;
use std::process::ExitCode;

use crate::control::{self, Reply, Request};

/// Sends a request that ends in `done` or `error` (reload, upgrade),
/// printing progress; success only when it says `done`.
fn until_done(path: &Path, request: &Request, what: &str) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::FAILURE;
    let mut finished = false;
    control::request(path, request, |reply| match reply {
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

pub fn reload(path: &Path, no_build: bool) -> anyhow::Result<ExitCode> {
    until_done(path, &Request::Reload { no_build }, "reload")
}

pub fn upgrade(path: &Path) -> anyhow::Result<ExitCode> {
    until_done(path, &Request::Upgrade, "upgrade")
}

pub fn events(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    control::request(path, &Request::Events, |reply| {
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
    control::request(path, &Request::Status, |reply| match reply {
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

pub fn stop(path: &Path) -> anyhow::Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    control::request(path, &Request::Stop, |reply| match reply {
        Reply::Progress { message } | Reply::Done { message } => println!("{message}"),
        Reply::Error { error } => {
            eprintln!("hotswap: {error}");
            code = ExitCode::FAILURE;
        }
        Reply::Status(_) | Reply::Event(_) => {}
    })?;
    if code == ExitCode::SUCCESS {
        println!("stopped");
    }
    Ok(code)
}
