//! The command line: every subcommand and its flags. `hotswap run`'s flags
//! are [`Options`], declared once for the command line and the config file.
//!
//! Kept apart from `main.rs` so that the man page and shell completions can be
//! generated from the very same definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::options::Options;

const AFTER_HELP: &str = "\
Signals (to the primary): SIGHUP reloads; SIGUSR2 upgrades hotswap itself in place; SIGUSR1 reopens --out-file and --error-file; SIGTERM or SIGINT stop gracefully, a second one kills the workers \
(a copy of the same signal from the same sending process within 1 s, as GNU timeout sends to the process group, counts once).

Environment: HOTSWAP_CONTROL (control socket path), HOTSWAP_CONFIG (config file), HOTSWAP_LOG (log level, e.g. debug). \
Under systemd: NOTIFY_SOCKET, WATCHDOG_USEC, LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID (socket activation).

Exit status: 0 on a graceful stop or success; 1 on failure (a failed reload, no primary to talk to, a first generation that cannot start, an unsafe control socket directory; for `run`, also a stop that had to kill a worker at --shutdown-timeout or an adopted process, or a forced stop); 2 on a usage or config error (including nothing to listen on and --ready-timeout 0).

Access: only the primary's own user and root can control it (the primary checks its clients' credentials, and clients check the primary's); the control socket's directory must belong to that user or root and be writable by no one else. Workers get HOTSWAP_CONTROL, so a worker can reload, stop or upgrade its primary.

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
    Run(Options),
    /// Check a configuration as `hotswap run` would start it, and start
    /// nothing (as `nginx -t`): the config file parses and every key is
    /// known, every value and flag is valid, the addresses parse, the
    /// command is found on PATH and executable. Takes the same flags as
    /// `run`.
    ///
    /// Exit status: 0 with a short summary; 2 for a bad flag or config
    /// value, printed on one line with the key and the line of the file; 1
    /// for a command that cannot run. It binds nothing, so it can check a
    /// new config beside the primary that runs the old one.
    Check(Options),
    /// Start the primary in the background, detached from the terminal
    /// (closing it neither reloads nor stops it), with the same arguments
    /// as `run`; its output and its workers' go to APP.log in the registry
    /// of names (rotated at 10 MiB, two old files kept; `hotswap logs
    /// APP`). Without --name, the name is the script's or program's
    /// (`node server.js` -> `server`).
    ///
    /// Returns once every worker of the first generation is ready (exit
    /// 0), or once the primary gave up (exit 1, with the end of its log:
    /// why); 2 for a bad flag or config value.
    Start(Options),
    /// Stop a primary `hotswap start` started, gracefully, then start it
    /// again with the same arguments, directory and environment (a new
    /// primary: listeners are bound again, so connections are refused in
    /// between; `reload` is the zero-downtime way).
    Restart(NameArgs),
    /// Change how many workers a running primary keeps, live: `N`, `+N`
    /// or `-N` (`hotswap scale web 4`, `hotswap scale +2` for the default
    /// primary). New workers start with the serving generation; the ones
    /// that go are retired as a reload retires old workers (drained, killed
    /// only at --shutdown-timeout). No restart, no refused connection. The
    /// new size holds across reloads, as `-w N` would, until the primary
    /// stops. Refused while a reload runs.
    ///
    /// Waits until the pool has the new size, every worker ready (exit 0);
    /// 1 when refused or when that takes longer than --ready-timeout plus
    /// --shutdown-timeout (60 s by default).
    Scale(ScaleArgs),
    /// Write a hotswap.toml from a PM2 ecosystem file (evaluated with
    /// node), and say what could not be carried over. A file of several
    /// apps gives one config per app, named for it (hotswap-NAME.toml).
    Import {
        /// The ecosystem file (`ecosystem.config.js`, or JSON).
        file: PathBuf,
        /// Where to write [default: hotswap.toml]; with several apps, the
        /// files go beside it as STEM-NAME.toml.
        #[arg(short, long, value_name = "PATH", default_value = "hotswap.toml")]
        output: PathBuf,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// List every primary of this user: the named ones (`--name`,
    /// `start`), stopped ones `start` started, and the unnamed one at the
    /// default control socket if it runs (for root, also the system's
    /// `hotswap@NAME` units running); with pid, status, generation,
    /// workers ready of how many, the workers' CPU, the memory of the
    /// primary and its workers, uptime and the last reload.
    Ls {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Print what a primary wrote, its own log and every worker line with
    /// its `[wID gGEN PID]` prefix: the last N lines (of the last 1000 it
    /// keeps in memory), then with --follow each new one as it is written.
    /// Works for `run` and `start` alike, over the control socket; a
    /// stopped primary that `start` started has its log file read.
    Logs(LogsArgs),
    /// Start a rolling reload and wait until the new generation serves.
    Reload(ReloadArgs),
    /// Show listeners, generation and workers of a running primary, with each
    /// worker's resident memory and CPU use (its whole process group, read
    /// from /proc when asked).
    Status(StatusArgs),
    /// Stop a running primary gracefully; returns once it has exited.
    ///
    /// Exit status: 0 once every worker exited by itself; 1 when no primary
    /// answers, when a worker had to be killed (at --shutdown-timeout, or by
    /// a forced stop) or an adopted process (a worker's daemon) had to be
    /// killed after --stop-signal, with how many, or when the connection
    /// closed before the primary said how the stop went (it was killed).
    Stop(ControlArgs),
    /// Re-execute the running primary from its binary on disk (after a
    /// deploy of a new hotswap), keeping its pid, sockets and workers.
    Upgrade(ControlArgs),
    /// Internal: run by the primary on a new binary before a self-upgrade;
    /// reads the state on stdin and says whether it can take it over.
    #[command(hide = true)]
    UpgradeCheck,
    /// Stream the primary's lifecycle events (fork, online, listening,
    /// disconnect, exit, reload-started/finished/failed, max-memory,
    /// max-memory-replaced/failed, start-failed, upgrade-started/finished/failed)
    /// as they happen; the stream goes on across self-upgrades.
    ///
    /// Exit status: 0 when the primary stopped (every event, the last exits
    /// included, was printed); 1 when no primary answers; 3 when the stream
    /// was cut short: the primary was killed or crashed, or dropped this
    /// client because it fell more than 256 events behind (the reason is
    /// printed on stderr).
    Events(StatusArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (hotswap.1, hotswap-run.1, ...) into DIR.
    ///
    /// `cargo install` installs no man page: `hotswap manpages
    /// /usr/local/share/man/man1` then makes `man hotswap` work. (The .deb
    /// package ships them.)
    Manpages {
        /// The directory to write into, created if missing.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Internal: the helper that kills worker process trees if the primary
    /// dies (see the guardian module).
    #[command(hide = true)]
    Guardian,
    /// Internal: appends stdin to FILE, rotating it (`hotswap start`'s log).
    #[command(hide = true)]
    LogWriter {
        file: PathBuf,
        #[arg(long, default_value_t = crate::daemon::MAX_LOG)]
        max_size: u64,
        #[arg(long, default_value_t = crate::daemon::KEEP_LOGS)]
        keep: u32,
    },
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `[APP] COUNT`: the primary's name (optional) and `N`, `+N` or `-N`.
    #[arg(value_name = "[APP] COUNT", num_args = 1..=2, required = true, allow_negative_numbers = true)]
    pub args: Vec<String>,
    /// Control socket of the primary, when it has no name [default: as
    /// for `status`].
    #[arg(long, value_name = "PATH", env = "HOTSWAP_CONTROL")]
    pub control: Option<PathBuf>,
    /// How long to wait for the new size [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = crate::options::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Keep printing new lines until the primary exits.
    #[arg(short, long)]
    pub follow: bool,
    /// How many past lines to print first.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 50)]
    pub lines: usize,
    /// Print nothing: ask the primary to open --out-file and --error-file
    /// again by path, as SIGUSR1 does (for logrotate's postrotate). Exits 1
    /// if it has neither or one could not be opened.
    #[arg(long, conflicts_with_all = ["follow", "lines"])]
    pub reopen: bool,
}

#[derive(Debug, Args, Clone)]
pub struct NameArgs {
    /// The primary's name (`--name`, or the one `start` gave it).
    #[arg(value_name = "APP")]
    pub app: crate::options::AppName,
}

#[derive(Debug, Args, Clone)]
pub struct ControlArgs {
    /// The primary's name (`--name`), instead of `--control`.
    #[arg(value_name = "APP")]
    pub app: Option<crate::options::AppName>,
    /// Control socket of the primary [default: $HOTSWAP_CONTROL, else
    /// $XDG_RUNTIME_DIR/hotswap.sock, /run/hotswap.sock for root,
    /// /tmp/hotswap-UID/hotswap.sock otherwise].
    #[arg(long, value_name = "PATH", env = "HOTSWAP_CONTROL")]
    pub control: Option<PathBuf>,
}

impl ControlArgs {
    /// The control socket to talk to: the name's (a name wins over
    /// `HOTSWAP_CONTROL`, which a worker has in its environment), else
    /// `--control`, else the default.
    pub fn path(&self) -> PathBuf {
        match &self.app {
            Some(app) => app.socket(),
            None => crate::options::control_path(self.control.clone()),
        }
    }
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Skip the `--build` command for this reload.
    #[arg(long)]
    pub no_build: bool,
    /// New workers this reload may start at once, instead of the primary's
    /// `--surge`: a count, or a percentage of the pool (`100%`: all at once).
    #[arg(long, value_name = "N|P%")]
    pub surge: Option<crate::types::surge::Surge>,
    /// A canary reload: start one new worker, let it serve real traffic
    /// beside the whole old generation for DUR (one worker more than N, no
    /// old worker retired), and go on only if it did not exit, stayed ready
    /// (and passed `--health-check`); otherwise the reload fails and the old
    /// generation is left exactly as it was.
    #[arg(long, value_name = "DUR", value_parser = crate::options::parse_duration)]
    pub canary: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Print JSON (`status`: one object; `events`: one object per line).
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
