//! The command line: every subcommand and flag, in one place.
//!
//! Kept apart from `main.rs` so that the man page and shell completions can be
//! generated from the very same definitions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use nix::sys::signal::Signal;

use crate::config::ReadyMode;
use crate::listeners::ListenSpec;

const AFTER_HELP: &str = "\
Signals (to the primary): SIGHUP reloads; SIGUSR2 upgrades hotswap itself in place; SIGTERM or SIGINT stop gracefully, a second one kills the workers.

Environment: HOTSWAP_CONTROL (control socket path), HOTSWAP_CONFIG (config file), HOTSWAP_LOG (log level, e.g. debug). \
Under systemd: NOTIFY_SOCKET, WATCHDOG_USEC, LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID (socket activation).

Exit status: 0 on a graceful stop or success; 1 on failure (a failed reload, no primary to talk to, a first generation that cannot start); 2 on a usage or config error.

Workers get their sockets at fd 3.. (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), an IPC channel (HOTSWAP_IPC_FD, NODE_CHANNEL_FD), HOTSWAP_WORKER_ID and HOTSWAP_GENERATION; \
the protocol is in docs/protocol.md.";

/// Zero-downtime hot-reload supervisor for network services.
///
/// The primary binds the listening sockets once and runs N workers (any
/// program) on them; `hotswap reload` replaces the workers one by one without
/// refusing a connection.
#[derive(Debug, Parser)]
#[command(name = "hotswap", version, propagate_version = true, after_long_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// `run`'s arguments are large, and parsed once.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the primary in the foreground, supervising COMMAND as N workers.
    Run(RunArgs),
    /// Start a rolling reload and wait until the new generation serves.
    Reload(ReloadArgs),
    /// Show listeners, generation and workers of a running primary.
    Status(StatusArgs),
    /// Stop a running primary gracefully; returns once it has exited.
    Stop(ControlArgs),
    /// Re-execute the running primary from its binary on disk (after a
    /// deploy of a new hotswap), keeping its pid, sockets and workers.
    Upgrade(ControlArgs),
    /// Internal: run by the primary on a new binary before a self-upgrade;
    /// reads the state on stdin and says whether it can take it over.
    #[command(hide = true)]
    UpgradeCheck,
    /// Stream the primary's lifecycle events (fork, online, listening,
    /// disconnect, exit, reload-started/finished/failed) as they happen.
    Events(StatusArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Internal: write the man pages into DIR (they are committed in man/).
    #[command(hide = true)]
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Internal: the helper that kills worker process trees if the primary
    /// dies (see the guardian module).
    #[command(hide = true)]
    Guardian,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Address to listen on: `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`,
    /// `unix:/run/app.sock`, optionally named: `web=127.0.0.1:8080` (the name
    /// becomes the fd's `LISTEN_FDNAMES` entry). Repeatable; port 0 picks a
    /// free port. Under socket activation (`LISTEN_FDS`), entries are matched
    /// to the inherited sockets by name or address; with none, all are used.
    #[arg(short, long = "listen", value_name = "ADDR")]
    pub listen: Vec<ListenSpec>,

    /// Number of workers [default: number of CPUs].
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub workers: Option<u32>,

    /// A `hotswap.toml` with any of these options (flags override it). It is
    /// read again on every reload.
    #[arg(short = 'c', long, value_name = "PATH", env = "HOTSWAP_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub control: ControlArgs,

    /// How long a new worker may take to report ready (`500ms`, `10s`, `2m`)
    /// [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub ready_timeout: Option<Duration>,

    /// How long a worker may take to drain after `shutdown` before SIGKILL
    /// [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,

    /// How a worker says it is ready: `ipc` (the `listening` message),
    /// `notify` (`READY=1` on its `NOTIFY_SOCKET`), `ipc-or-notify`,
    /// `delay:DUR` (ready after DUR), `none` (ready at once) [default: ipc].
    #[arg(long, value_name = "MODE")]
    pub ready: Option<ReadyMode>,

    /// Signal that stops a worker that did not become ready over IPC (and
    /// so may not read it) [default: SIGTERM].
    #[arg(long, value_name = "SIGNAL", value_parser = crate::config::parse_signal)]
    pub stop_signal: Option<Signal>,

    /// Watch this file or directory (recursively; repeatable) and reload when
    /// something in it changes. `.gitignore`/`.ignore` files are honoured;
    /// `.git/`, `target/`, `node_modules/` and editor swap files never count.
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<PathBuf>,

    /// Wait until changes stop for this long before reloading [default: 200ms].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub watch_debounce: Option<Duration>,

    /// Changes to paths matching this glob never reload (repeatable), e.g.
    /// `*.log`, `dist`.
    #[arg(long, value_name = "GLOB")]
    pub watch_ignore: Vec<String>,

    /// A shell command run before every reload (`hotswap reload`, SIGHUP or a
    /// watched change); if it fails, no worker is touched.
    #[arg(long, value_name = "CMD")]
    pub build: Option<String>,

    /// Listen backlog of each TCP and Unix listener [default: 1024].
    #[arg(long, value_name = "N")]
    pub backlog: Option<i32>,

    /// The worker command and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[cfg(test)]
impl RunArgs {
    pub fn default_for_tests() -> RunArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            run: RunArgs,
        }
        Wrap::parse_from(["hotswap"]).run
    }
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
pub struct ReloadArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Skip the `--build` command for this reload.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Print JSON (`status`: one object; `events`: one object per line).
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
