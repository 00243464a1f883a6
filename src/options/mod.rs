//! The settings of `hotswap run`, from flags and, optionally, a
//! `hotswap.toml` file (`--config`); flags override the file.
//!
//! Every option is declared once, in [`Options`]: clap derives the flag from
//! it and serde the config-file key, so a new option cannot exist in one
//! place and be forgotten in the other. [`Options::merge`] lays the flags
//! over the file without naming a single option, and [`Settings`] is the
//! resolved form, with defaults, that the supervisor uses (and that a
//! self-upgrade hands over).
//!
//! The file is read again on every reload, so a deploy can change the
//! command, the worker count, the timeouts and the readiness mode without a
//! restart. Listeners and the control socket are bound once: changing them
//! in the file is reported as needing a restart.
//!
//! [`Options`] and its merge live here; the resolved [`Settings`] in
//! `settings`, and each option's own value type in a module of its own.

mod command;
mod control;
mod log;
mod metrics_addr;
pub mod name;
mod node_mode;
mod parse;
mod ready;
mod rollout;
mod settings;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

pub use crate::types::balance::Balance;
pub use crate::types::listen::ListenSpec;
pub use crate::types::surge::Surge;
pub use control::{control_path, default_control_path};
pub use log::LogFormat;
pub use metrics_addr::MetricsAddr;
pub use name::AppName;
pub use node_mode::NodeMode;
pub use parse::{parse_duration, parse_env_var, parse_signal, parse_size, parse_socket_mode, parse_workers, OnOff};
pub use ready::ReadyMode;
pub use rollout::{HealthPath, WarmupNice};
pub use settings::{default_min_ready, Settings};

/// Every `hotswap run` option: a flag (clap) and a config-file key (serde,
/// kebab-case), declared once. `None` or empty means "not given".
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// Address to listen on: `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`,
    /// `unix:/run/app.sock`, optionally named: `web=127.0.0.1:8080` (the name
    /// becomes the fd's `LISTEN_FDNAMES` entry). Repeatable; port 0 picks a
    /// free port. Under socket activation (`LISTEN_FDS`), entries are matched
    /// to the inherited sockets by name or address; with none, all are used.
    #[arg(short, long = "listen", value_name = "ADDR")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<ListenSpec>,

    /// Number of workers, or `max` for one per CPU [default: max].
    #[arg(short, long, value_name = "N", value_parser = parse_workers)]
    #[serde(default, with = "parse::workers", skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,

    /// A `hotswap.toml` with any of these options (flags override it). It is
    /// read again on every reload.
    #[arg(short = 'c', long, value_name = "PATH", env = "HOTSWAP_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Control socket of the primary [default: $HOTSWAP_CONTROL, else
    /// $XDG_RUNTIME_DIR/hotswap.sock, /run/hotswap.sock for root,
    /// /tmp/hotswap-UID/hotswap.sock otherwise].
    #[arg(long, value_name = "PATH", env = "HOTSWAP_CONTROL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<PathBuf>,

    /// Name this primary, so that `hotswap reload APP`, `status APP`, `stop
    /// APP`, `events APP`, `logs APP` find it without `--control` (its
    /// control socket is `APP.sock` in this user's runtime directory:
    /// `$XDG_RUNTIME_DIR/hotswap/`, else `/tmp/hotswap-UID/`). A name a
    /// running primary holds is refused; `hotswap ls` lists them.
    #[arg(long, value_name = "APP")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub name: Option<AppName>,

    /// How long a new worker may take to report ready (`500ms`, `10s`, `2m`)
    /// [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    #[serde(default, with = "parse::duration", skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<Duration>,

    /// How long a worker may take to drain after `shutdown` before SIGKILL
    /// [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    #[serde(default, with = "parse::duration", skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Duration>,

    /// How many new-generation workers a reload may start beyond the N
    /// serving, as a count or a percentage of N (rounded up): `1` replaces
    /// one worker at a time, `100%` starts every replacement at once. Each
    /// extra worker costs memory until the old worker it replaces has
    /// exited; at most N+SURGE workers run during a reload [default: 1].
    #[arg(long, value_name = "N|P%")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge: Option<Surge>,

    /// How a worker says it is ready: `accepting` (a process of the worker
    /// is seen taking connections on every listening socket, in /proc: a
    /// thread blocked in accept, a connection it accepted, or the primary's
    /// probe connection taken; any server, no code), `ipc` (the worker's own
    /// `listening` message or `'ready'`), `notify` (`READY=1` on its
    /// `NOTIFY_SOCKET`), `ipc-or-notify`, `delay:DUR` (ready after DUR),
    /// `none` (ready at once), `auto` (its own IPC `listening`/`'ready'`, or Node's `listening` unless the app says `'ready'`; `READY=1` once it also takes connections; taking connections for a worker that says nothing; see docs/protocol.md) [default: auto].
    #[arg(long, value_name = "MODE")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyMode>,

    /// How long each new worker of a reload must stay ready before the old
    /// worker it replaces is retired (Kubernetes' `minReadySeconds`): a new
    /// worker that exits or stops being ready within it fails the reload,
    /// and no further old worker is retired. Costs this much per worker
    /// replaced (per `--surge` batch); `0` retires at once [default: 1s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    #[serde(default, with = "parse::duration", skip_serializing_if = "Option::is_none")]
    pub min_ready: Option<Duration>,

    /// Before a new worker counts as ready, `GET PATH` sent to that worker
    /// (over a connection it accepted itself) must answer 2xx or 3xx; it is
    /// retried until `--health-timeout`. A failure fails the reload with
    /// the answer (`GET /healthz answered 503 from w7`) [default: none].
    #[arg(long, value_name = "PATH")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthPath>,

    /// How long a new worker has, once it says it is ready, to pass
    /// `--health-check` [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    #[serde(default, with = "parse::duration", skip_serializing_if = "Option::is_none")]
    pub health_timeout: Option<Duration>,

    /// The nice value a new worker starts at (1 to 19), so that its
    /// warm-up takes CPU from the workers serving only when they leave
    /// some; once ready, its processes and threads get the primary's
    /// priority back (those that changed their own nice keep theirs).
    /// Can slow a reload a lot on a machine whose other processes keep
    /// every core busy; `off`: start at the primary's priority
    /// [default: off].
    #[arg(long, value_name = "N|off")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub warmup_nice: Option<WarmupNice>,

    /// Signal that stops a worker that did not become ready over IPC (and
    /// so may not read it) [default: the one that drains a server hotswap
    /// recognises by its command (nginx, unicorn, php-fpm: SIGQUIT;
    /// lighttpd: SIGINT; see docs/servers.md), else SIGTERM].
    #[arg(long, value_name = "SIGNAL", value_parser = parse_signal)]
    #[serde(default, with = "parse::signal", skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Signal>,

    /// Watch this file or directory (recursively; repeatable) and reload when
    /// something in it changes. `.gitignore`/`.ignore` files are honoured;
    /// `.git/`, `target/`, `node_modules/` and editor swap files never count.
    #[arg(long, value_name = "PATH")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<PathBuf>,

    /// Wait until changes stop for this long before reloading [default: 200ms].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    #[serde(default, with = "parse::duration", skip_serializing_if = "Option::is_none")]
    pub watch_debounce: Option<Duration>,

    /// Changes to paths matching this glob never reload (repeatable), e.g.
    /// `*.log`, `dist`.
    #[arg(long, value_name = "GLOB")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_ignore: Vec<String>,

    /// A shell command run before the first workers start and before every
    /// reload (`hotswap reload`, SIGHUP or a watched change); if it fails, no
    /// worker is touched (a failed first build exits 1; a reload asked
    /// during the first build runs it again when it ends).
    #[arg(long, value_name = "CMD")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,

    /// Run Node.js workers as cluster workers (`NODE_UNIQUE_ID`), so that
    /// unchanged cluster, Express and PM2 apps get their sockets from
    /// hotswap, are ready when they listen and are stopped as Node's own
    /// cluster stops them: `auto` (when the command runs node), `on`, `off`
    /// [default: auto].
    #[arg(long, value_name = "MODE")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeMode>,

    /// Also run the app's own cluster primary branch (`cluster.isPrimary`),
    /// as one long-lived child whose `cluster.fork()` is answered with
    /// hotswap's workers and whose messages go to and from them through
    /// hotswap (docs/node-primary.md): `auto` (when the command's script
    /// imports `cluster` and calls `fork`), `on`, `off` [default: auto].
    #[arg(long, value_name = "MODE")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub node_primary: Option<NodeMode>,

    /// Replace a worker whose process group stays above this much resident
    /// memory (checked every 2 s; above on 2 checks in a row): a new worker
    /// starts in its slot and is ready before the old one is told to drain.
    /// `512M`, `1G`, or bytes [default: no limit].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, with = "parse::size", skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (`127.0.0.1:9100`;
    /// `:9100` is loopback only, `0.0.0.0:9100` every address). Bound once,
    /// at start.
    #[arg(long, value_name = "ADDR")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsAddr>,

    /// Give Python workers hotswap's preload (a `sitecustomize` module put
    /// first on `PYTHONPATH`) that makes uvicorn drain keep-alive
    /// connections without losing requests: `auto` (when the command runs
    /// python, uvicorn, gunicorn or hypercorn), `on`, `off` [default: auto].
    #[arg(long, value_name = "MODE")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub python: Option<NodeMode>,

    /// Listen backlog of each TCP and Unix listener [default: 1024].
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<i32>,

    /// File mode of the Unix sockets hotswap binds for `--listen unix:PATH`
    /// (octal, as systemd's `SocketMode=`), whatever the umask; who may
    /// connect is then up to this and the directory's permissions. In the
    /// config file a string: `socket-mode = "0660"` [default: 0666].
    #[arg(long, value_name = "MODE", value_parser = parse_socket_mode)]
    #[serde(default, with = "parse::socket_mode", skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<u32>,

    /// How new TCP connections reach the workers: `shared` (one socket every
    /// worker accepts on), `slots` (one `SO_REUSEPORT` socket per worker
    /// slot, the kernel's hash of the connection picks one), `sticky` (one
    /// socket per slot, and each client IP address always reaches the same
    /// slot, across reloads: for session and Socket.IO apps). Linux only for
    /// `slots` and `sticky`; Unix sockets stay shared. Fixed at start
    /// [default: shared].
    #[arg(long, value_name = "MODE")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,

    /// How the primary writes its log and its workers' lines: `text`,
    /// `json` (one object per line: time, level, message, worker, pid,
    /// generation, stream), `journald` (syslog `<N>` priorities, so
    /// `journalctl -p err` finds errors) [default: journald when stderr is
    /// the journal (`JOURNAL_STREAM`), else text]. Fixed at start.
    #[arg(long, value_name = "FORMAT")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,

    /// Start each worker line with the time, in the text format (json has
    /// it always, the journal keeps its own).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timestamps: bool,

    /// Rescue the requests a retiring worker's graceful stop would lose on
    /// idle keep-alive connections (TCP listeners, Linux): the primary holds
    /// copies of its connections while it stops, and a request caught on
    /// one it closed goes to the serving generation with `Connection:
    /// close` (docs/guarantees.md, "Rescue"): `on`, `off` [default: on].
    #[arg(long, value_name = "on|off")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub rescue: Option<OnOff>,

    /// Before a retiring worker that does not drain (its stop signal is not
    /// caught, so it ends it at once: Python's `http.server`, `php -S`) is
    /// signalled, wait until it answers no request, and stop it (SIGSTOP)
    /// while that is made sure of, at most 5 s (Linux; docs/own-bind.md):
    /// `on`, `off` [default: on]. A worker with a handler for its stop
    /// signal is never touched.
    #[arg(long, value_name = "on|off")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<OnOff>,

    /// Give a worker that binds a `--listen` address itself (Go's
    /// `ListenAndServe(":8080")`, `python3 -m http.server 8080`) hotswap's
    /// socket instead of `EADDRINUSE`, through a seccomp filter on its
    /// `bind` and `listen` calls (Linux 5.9, x86-64 or aarch64). Unless
    /// the primary runs as root, the filter needs `no_new_privs`: the
    /// worker cannot gain privileges through setuid or file capabilities.
    /// `auto`: with a TCP listener, for workers that are not Node.js
    /// cluster workers, where the kernel allows it (a refusal is a
    /// warning); `on`: always, a refusal is an error; `off`: never
    /// (docs/own-bind.md) [default: auto].
    #[arg(long, value_name = "MODE")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub bind_intercept: Option<NodeMode>,

    /// An environment variable for the workers, `KEY=VALUE` (repeatable).
    /// In the config file a table: `env = { NODE_ENV = "production" }` or
    /// an `[env]` section. Leading `NAME=value` words of the command (and a
    /// leading `env NAME=value ...`) are set the same way.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env_var)]
    #[serde(default, with = "parse::env_table", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,

    /// The workers' working directory [default: the primary's].
    #[arg(long, value_name = "DIR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,

    /// Append the workers' stdout lines (prefixed as on hotswap's stdout)
    /// to this file instead of hotswap's stdout, as PM2's `out_file`. The
    /// primary opens it (created with mode 0640 in an existing directory)
    /// and opens it again on SIGUSR1, after logrotate moved it. Relative to
    /// the primary's working directory. The primary's own log stays on its
    /// stderr.
    #[arg(long, value_name = "PATH")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_file: Option<PathBuf>,

    /// Append the workers' stderr lines to this file instead of hotswap's
    /// stderr, as PM2's `error_file` (opened as `--out-file` is; the same
    /// path as `--out-file` makes one file of both).
    #[arg(long, value_name = "PATH")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_file: Option<PathBuf>,

    /// The drain patches of the Node.js and uvicorn preloads (`--node`,
    /// `--python`): `auto` applies Node's drain of `http` servers only to
    /// workers that rescue does not cover (`--rescue off`, no TCP
    /// listener, `pidfd_getfd` refused) and uvicorn's always, `on` both
    /// always, `off` neither (docs/rescue.md) [default: auto]. hypercorn's
    /// patch and Node's drain of `https` servers apply either way (beyond
    /// rescue).
    #[arg(long, value_name = "MODE")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub drain_patch: Option<NodeMode>,

    /// The worker command and its arguments (in the file: an array of
    /// arguments, or one string: plain words run directly, leading `NAME=value` words set in the environment; a string with shell syntax is run by `/bin/sh -c 'exec ...'`).
    #[arg(last = true, value_name = "COMMAND")]
    #[serde(default, with = "parse::command", skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

impl Options {
    /// Reads a `hotswap.toml`. Unknown keys and bad values are errors that
    /// name the key and the line (values are parsed while the file is read,
    /// so toml can point at them).
    pub fn from_file(path: &Path) -> Result<Options> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Options::from_toml(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// Parses a config file's text; an error is one line that names the
    /// line, the column and the line's text (`line 2, column 1 (wrokers =
    /// 3): unknown field ...`).
    pub fn from_toml(text: &str) -> Result<Options, String> {
        toml::from_str(text).map_err(|e| parse::one_line_error(text, e.span(), e.message()))
    }

    /// `self` (the flags) laid over `file`: every option given as a flag
    /// wins, the others come from the file. Done on the serialized form, so
    /// no option is named here.
    pub fn merge(self, file: Options) -> Result<Options> {
        let config = self.config.clone();
        let (serde_json::Value::Object(flags), serde_json::Value::Object(mut merged)) =
            (serde_json::to_value(&self)?, serde_json::to_value(&file)?)
        else {
            bail!("options serialize as maps");
        };
        // Unset options are skipped when serialized: what is there was given.
        merged.extend(flags);
        let mut out: Options = serde_json::from_value(serde_json::Value::Object(merged))?;
        out.config = config;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
