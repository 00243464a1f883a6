//! The command line: every subcommand and flag, in one place.
//!
//! Kept apart from `main.rs` so that the man page and shell completions can be
//! generated from the very same definitions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::listeners::ListenSpec;

/// Zero-downtime hot-reload supervisor for network services.
///
/// The primary binds the listening sockets once and runs N workers (any
/// program) on them; `hotswap reload` replaces the workers one by one without
/// refusing a connection.
#[derive(Debug, Parser)]
#[command(name = "hotswap", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the primary in the foreground, supervising COMMAND as N workers.
    Run(RunArgs),
    /// Start a rolling reload and wait until the new generation serves.
    Reload(ControlArgs),
    /// Show listeners, generation and workers of a running primary.
    Status(StatusArgs),
    /// Stop a running primary gracefully; returns once it has exited.
    Stop(ControlArgs),
    /// Internal: the helper that kills worker process trees if the primary
    /// dies (see the guardian module).
    #[command(hide = true)]
    Guardian,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to listen on: `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`,
    /// `unix:/run/app.sock`, optionally named: `web=127.0.0.1:8080` (the name
    /// becomes the fd's `LISTEN_FDNAMES` entry). Repeatable; port 0 picks a
    /// free port.
    #[arg(short, long = "listen", value_name = "ADDR", required = true)]
    pub listen: Vec<ListenSpec>,

    /// Number of workers [default: number of CPUs].
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub workers: Option<u32>,

    #[command(flatten)]
    pub control: ControlArgs,

    /// How long a new worker may take to report ready (`500ms`, `10s`, `2m`).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// How long a worker may take to drain after `shutdown` before SIGKILL.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Listen backlog of each TCP and Unix listener.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub backlog: i32,

    /// The worker command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ControlArgs {
    /// Control socket of the primary [default: $HOTSWAP_CONTROL, else
    /// $XDG_RUNTIME_DIR/hotswap.sock, /run/hotswap.sock for root,
    /// /tmp/hotswap-UID/hotswap.sock otherwise].
    #[arg(long, value_name = "PATH", env = "HOTSWAP_CONTROL")]
    pub control: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `500ms`, `10s`, `2m`, `1h 30m`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 10s, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }
}
