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

mod command;
mod log;
pub mod name;
mod parse;
mod ready;
mod rollout;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

pub use crate::types::balance::Balance;
pub use crate::types::listen::ListenSpec;
pub use crate::types::surge::Surge;
pub use log::LogFormat;
pub use name::AppName;
pub use parse::{parse_duration, parse_env_var, parse_signal, parse_size, parse_socket_mode, parse_workers, OnOff};
pub use ready::ReadyMode;
pub use rollout::{HealthPath, WarmupNice};

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

/// The resolved settings of a primary (serialized for self-upgrade).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub listen: Vec<ListenSpec>,
    pub command: Vec<String>,
    pub workers: u32,
    pub control_path: PathBuf,
    /// `--name`: the control socket is the name's (see [`name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub ready_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// New workers a reload may start at once (`--surge`); a reload request
    /// may override it.
    #[serde(default)]
    pub surge: Surge,
    pub backlog: i32,
    /// Mode of the Unix sockets bound for `--listen unix:`.
    #[serde(default = "default_socket_mode")]
    pub socket_mode: u32,
    #[serde(with = "parse::display")]
    pub ready: ReadyMode,
    #[serde(with = "parse::signal_name")]
    pub stop_signal: Signal,
    /// Whether `stop_signal` was given (`--stop-signal`, config
    /// `stop-signal`) rather than chosen for a recognised server.
    #[serde(default = "yes")]
    pub stop_signal_given: bool,
    /// `--min-ready` (a state handed over by an older hotswap gets this
    /// one's defaults, as a fresh start with the same command line would).
    #[serde(default = "default_min_ready")]
    pub min_ready: Duration,
    /// `--health-check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthPath>,
    /// `--health-timeout`.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: Duration,
    /// `--warmup-nice`.
    #[serde(default)]
    pub warmup_nice: WarmupNice,

    pub config: Option<PathBuf>,
    /// Run through the shell before each reload (`--build`).
    pub build: Option<String>,
    pub watch: Vec<PathBuf>,
    pub watch_debounce: Duration,
    pub watch_ignore: Vec<String>,
    /// Whether workers are Node.js cluster workers.
    #[serde(default)]
    pub node: NodeMode,
    /// Whether the app's own cluster primary runs too (`--node-primary`).
    #[serde(default)]
    pub node_primary: NodeMode,
    /// `--max-memory`, in bytes.
    #[serde(default)]
    pub max_memory: Option<u64>,
    /// `--metrics`: where `/metrics` is served.
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsAddr>,
    /// `--python`: the same three modes as `--node`.
    #[serde(default)]
    pub python: NodeMode,
    /// `--balance`: how connections reach the workers.
    #[serde(default)]
    pub balance: Balance,
    /// `--log-format`, resolved (`journald` detected).
    #[serde(default)]
    pub log_format: LogFormat,
    /// `--timestamps` on worker lines.
    #[serde(default)]
    pub timestamps: bool,
    /// `--rescue`: whether retiring workers' connections are held.
    #[serde(default = "yes")]
    pub rescue: bool,
    /// `--quiesce`: whether a retiring worker that does not drain is told
    /// to go only once it answers nothing.
    #[serde(default = "yes")]
    pub quiesce: bool,
    /// `--bind-intercept`.
    #[serde(default)]
    pub bind_intercept: NodeMode,
    /// `env`, and the command's leading `NAME=value` words.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// `cwd`: the workers' working directory, absolute.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// `--out-file`, absolute: where the workers' stdout lines go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_file: Option<PathBuf>,
    /// `--error-file`, absolute: where the workers' stderr lines go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_file: Option<PathBuf>,

    /// `--drain-patch`: when the uvicorn and Node.js drain patches apply.
    #[serde(default)]
    pub drain_patch: NodeMode,
}

fn yes() -> bool {
    true
}

/// `--metrics`: a TCP address; `:PORT` means loopback (127.0.0.1): the
/// counters are nobody else's business unless an address says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub std::net::SocketAddr);

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let full = if t.starts_with(':') { format!("127.0.0.1{t}") } else { t.to_string() };
        full.parse().map(MetricsAddr).map_err(|_| {
            format!("invalid metrics address {s:?} (expected IP:PORT, e.g. 127.0.0.1:9100, 0.0.0.0:9100, or :9100 for loopback)")
        })
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `--node`: whether workers are run as Node.js cluster workers; also
/// `--python`: whether Python workers get the drain preload, and
/// `--drain-patch`: when its drain patches apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeMode {
    /// When the command runs node (or a script whose `#!` line does).
    #[default]
    Auto,
    /// Always (the command is a wrapper hotswap cannot see through).
    On,
    /// Never: the worker gets only hotswap's own protocol.
    Off,
}

impl std::str::FromStr for NodeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(NodeMode::Auto),
            "on" => Ok(NodeMode::On),
            "off" => Ok(NodeMode::Off),
            _ => Err(format!("unknown mode {s:?} (expected auto, on or off)")),
        }
    }
}

impl std::fmt::Display for NodeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeMode::Auto => "auto",
            NodeMode::On => "on",
            NodeMode::Off => "off",
        })
    }
}

impl Settings {
    /// The flags laid over the config file they name (if any), with the
    /// defaults for what neither gives.
    pub fn load(flags: &Options) -> Result<Settings> {
        let file = match &flags.config {
            Some(p) => Options::from_file(p)?,
            None => Options::default(),
        };
        let s = Settings::resolve(flags.clone().merge(file)?)?;
        // Whatever the mode: a wrapper keeps the channel from the app.
        let here = std::env::current_dir().unwrap_or_default();
        let cwd = s.cwd.as_ref().map_or(here.clone(), |d| here.join(d));
        crate::node::check_wrapper(&s.command, &cwd).map_err(anyhow::Error::msg)?;
        for p in &s.watch {
            if !p.exists() {
                bail!("--watch {}: no such file or directory", p.display());
            }
        }
        Ok(s)
    }

    /// Fills in the defaults; refuses values that are well-formed but cannot
    /// work.
    pub fn resolve(o: Options) -> Result<Settings> {
        if o.command.is_empty() {
            bail!("no worker command: give one after `--`, or `command` in a config file");
        }
        if o.health_timeout == Some(Duration::ZERO) {
            bail!("--health-timeout (health-timeout) must be more than 0: it is how long a new worker has to pass --health-check");
        }
        if o.ready_timeout == Some(Duration::ZERO) {
            bail!(
                "--ready-timeout (ready-timeout) must be more than 0: it is how long a new worker may take to get \
                 ready (default 30s; for workers that say nothing, use --ready none or delay:DUR)"
            );
        }
        if let (Some(n), Some(c)) = (&o.name, &o.control) {
            bail!(
                "--name {n} and --control {} (or HOTSWAP_CONTROL) both say where the control socket is: give one",
                c.display()
            );
        }
        let balance = o.balance.unwrap_or_default();
        #[cfg(not(target_os = "linux"))]
        if balance.per_slot() {
            bail!("--balance {balance} needs Linux (SO_REUSEPORT groups with a BPF program); use --balance shared");
        }
        let workers = o.workers.unwrap_or_else(parse::cpus);
        if balance.per_slot() && workers as usize > crate::types::MAX_SLOTS {
            {
                let n = workers;
                bail!(
                    "--balance {balance} handles at most {} workers (a classic BPF program has at most 4096 \
                     instructions); got -w {n}",
                    crate::types::MAX_SLOTS
                );
            }
        }
        for g in &o.watch_ignore {
            globset::Glob::new(g).map_err(|e| anyhow::anyhow!("--watch-ignore (watch-ignore) {g:?}: {e}"))?;
        }
        // A recognised server's draining signal, unless one was given.
        let stop_signal = o
            .stop_signal
            .or_else(|| crate::servers::recognise(&o.command).map(|r| r.server.stop_signal()))
            .unwrap_or(Signal::SIGTERM);
        let (command, mut env) = command::split_env(o.command);
        // The `env` option wins over the command's words.
        env.extend(o.env);
        if let Some(dir) = &o.cwd {
            if !dir.is_dir() {
                bail!("cwd {}: no such directory", dir.display());
            }
        }
        // Absolute now: SIGUSR1 and a self-upgrade open them again by path.
        let here = std::env::current_dir().unwrap_or_default();
        let out_file = o.out_file.map(|p| here.join(p));
        let error_file = o.error_file.map(|p| here.join(p));
        // Absolute too: a relative program (`../node_modules/.bin/next`) is
        // looked for and exec'ed from it, after the worker changed to it.
        let cwd = o.cwd.map(|d| here.join(d));
        Ok(Settings {
            out_file,
            error_file,
            listen: o.listen,
            command,
            env,
            cwd,
            workers,
            control_path: match (&o.name, o.control) {
                (_, Some(c)) => c,
                (Some(n), None) => n.socket(),
                (None, None) => default_control_path(),
            },
            name: o.name.map(|n| n.to_string()),
            ready_timeout: o.ready_timeout.unwrap_or(Duration::from_secs(30)),
            shutdown_timeout: o.shutdown_timeout.unwrap_or(Duration::from_secs(30)),
            surge: o.surge.unwrap_or_default(),
            backlog: o.backlog.unwrap_or(1024),
            socket_mode: o.socket_mode.unwrap_or_else(default_socket_mode),
            ready: o.ready.unwrap_or(ReadyMode::Auto),
            min_ready: o.min_ready.unwrap_or_else(default_min_ready),
            health_check: o.health_check,
            health_timeout: o.health_timeout.unwrap_or_else(default_health_timeout),
            warmup_nice: o.warmup_nice.unwrap_or_default(),

            stop_signal,
            stop_signal_given: o.stop_signal.is_some(),
            config: o.config,
            build: o.build.filter(|b| !b.trim().is_empty()),
            watch: o.watch,
            watch_debounce: o.watch_debounce.unwrap_or(Duration::from_millis(200)),
            watch_ignore: o.watch_ignore,
            node: o.node.unwrap_or_default(),
            node_primary: o.node_primary.unwrap_or_default(),
            max_memory: o.max_memory,
            metrics: o.metrics,
            python: o.python.unwrap_or_default(),
            balance,
            log_format: o.log_format.unwrap_or_else(LogFormat::detect),
            timestamps: o.timestamps,
            rescue: o.rescue.is_none_or(|r| r.0),
            quiesce: o.quiesce.is_none_or(|r| r.0),
            bind_intercept: o.bind_intercept.unwrap_or_default(),
            drain_patch: o.drain_patch.unwrap_or_default(),
        })
    }

    /// The server the command runs, if hotswap knows its habits.
    pub fn server(&self) -> Option<crate::servers::Recognised> {
        crate::servers::recognise(&self.command)
    }

    /// What hotswap chose for a recognised server and why (the start-up
    /// log and `status`).
    pub fn server_choice(&self, listeners: &[crate::types::listen::ListenAddr]) -> Option<String> {
        let r = self.server()?;
        Some(crate::servers::describe(&r, self.stop_signal_given.then_some(self.stop_signal), listeners))
    }

    /// What a reload may not change; named so the operator knows to restart.
    pub fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.listen != new.listen {
            v.push("listen");
        }
        if self.control_path != new.control_path {
            v.push(if self.name != new.name { "name" } else { "control" });
        }
        if self.backlog != new.backlog {
            v.push("backlog");
        }
        if self.socket_mode != new.socket_mode {
            v.push("socket-mode");
        }
        if self.metrics != new.metrics {
            v.push("metrics");
        }
        if self.balance != new.balance {
            v.push("balance");
        }
        if self.log_format != new.log_format || self.timestamps != new.timestamps {
            v.push("log-format");
        }
        if self.out_file != new.out_file {
            v.push("out-file");
        }
        if self.error_file != new.error_file {
            v.push("error-file");
        }
        if self.watch != new.watch || self.watch_ignore != new.watch_ignore || self.watch_debounce != new.watch_debounce
        {
            v.push("watch");
        }
        v
    }

    /// Settings as a test needs them: one worker running `true`.
    #[cfg(test)]
    pub fn for_tests() -> Settings {
        Settings::resolve(Options { command: vec!["true".into()], workers: Some(1), ..Options::default() })
            .expect("resolves")
    }
}

/// `--min-ready`'s default: a second is cheap next to a broken release
/// that the old generation would no longer cover (see docs/guarantees.md).
pub fn default_min_ready() -> Duration {
    Duration::from_secs(1)
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Unix listening sockets are reachable by every local user unless
/// `--socket-mode` says otherwise, as under systemd (`SocketMode=0666`) and
/// as a TCP port on 127.0.0.1 is: the directory is where to restrict access.
fn default_socket_mode() -> u32 {
    0o666
}

/// The control socket's path when neither `--control` nor
/// `HOTSWAP_CONTROL` names one: `$XDG_RUNTIME_DIR/hotswap.sock`,
/// `/run/hotswap.sock` for root, else `/tmp/hotswap-UID/hotswap.sock`.
pub fn default_control_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("hotswap.sock");
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        PathBuf::from("/run/hotswap.sock")
    } else {
        PathBuf::from(format!("/tmp/hotswap-{uid}/hotswap.sock"))
    }
}

/// `--control`, else the default.
pub fn control_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(default_control_path)
}

#[cfg(test)]
mod tests;
