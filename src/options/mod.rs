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

mod parse;
mod ready;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

pub use crate::types::balance::Balance;
pub use crate::types::listen::ListenSpec;
pub use crate::types::surge::Surge;
pub use parse::{parse_duration, parse_signal, parse_size, parse_socket_mode, parse_workers, OnOff};
pub use ready::ReadyMode;

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
    /// accepts on every listening socket, seen in /proc: any server, no
    /// code), `ipc` (the `listening` message), `notify` (`READY=1` on its
    /// `NOTIFY_SOCKET`), `ipc-or-notify`, `delay:DUR` (ready after DUR),
    /// `none` (ready at once), `auto` (IPC or Node's `listening`; `READY=1` once it also accepts; accepting for a worker that says nothing; see docs/protocol.md) [default: auto].
    #[arg(long, value_name = "MODE")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyMode>,

    /// Signal that stops a worker that did not become ready over IPC (and
    /// so may not read it) [default: SIGTERM].
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

    /// Replace a worker whose process group stays above this much resident
    /// memory (checked every 2 s; above on 2 checks in a row): a new worker
    /// starts in its slot and is ready before the old one is told to drain.
    /// `512M`, `1G`, or bytes [default: no limit].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, with = "parse::size", skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (`127.0.0.1:9100`,
    /// `:9100` for every address). Bound once, at start.
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

    /// Rescue the requests a retiring worker's graceful stop would lose on
    /// idle keep-alive connections (TCP listeners, Linux): the primary holds
    /// copies of its connections while it stops, and a request caught on
    /// one it closed goes to the serving generation with `Connection:
    /// close` (docs/guarantees.md, "Rescue"): `on`, `off` [default: on].
    #[arg(long, value_name = "on|off")]
    #[serde(default, with = "parse::text", skip_serializing_if = "Option::is_none")]
    pub rescue: Option<OnOff>,

    /// The worker command and its arguments (in the file: an array of
    /// arguments, or one string run by `/bin/sh -c 'exec ...'`).
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

    pub fn from_toml(text: &str) -> Result<Options, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
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
    pub config: Option<PathBuf>,
    /// Run through the shell before each reload (`--build`).
    pub build: Option<String>,
    pub watch: Vec<PathBuf>,
    pub watch_debounce: Duration,
    pub watch_ignore: Vec<String>,
    /// Whether workers are Node.js cluster workers.
    #[serde(default)]
    pub node: NodeMode,
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
    /// `--rescue`: whether retiring workers' connections are held.
    #[serde(default = "yes")]
    pub rescue: bool,
}

fn yes() -> bool {
    true
}

/// `--metrics`: a TCP address; `:PORT` means every address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub std::net::SocketAddr);

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let full = if t.starts_with(':') { format!("0.0.0.0{t}") } else { t.to_string() };
        full.parse()
            .map(MetricsAddr)
            .map_err(|_| format!("invalid metrics address {s:?} (expected IP:PORT, e.g. 127.0.0.1:9100, or :9100)"))
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `--node`: whether workers are run as Node.js cluster workers; also
/// `--python`: whether Python workers get the drain preload.
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
        let cwd = std::env::current_dir().unwrap_or_default();
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
        if o.ready_timeout == Some(Duration::ZERO) {
            bail!(
                "--ready-timeout (ready-timeout) must be more than 0: it is how long a new worker may take to get \
                 ready (default 30s; for workers that say nothing, use --ready none or delay:DUR)"
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
        Ok(Settings {
            listen: o.listen,
            command: o.command,
            workers,
            control_path: o.control.unwrap_or_else(default_control_path),
            ready_timeout: o.ready_timeout.unwrap_or(Duration::from_secs(30)),
            shutdown_timeout: o.shutdown_timeout.unwrap_or(Duration::from_secs(30)),
            surge: o.surge.unwrap_or_default(),
            backlog: o.backlog.unwrap_or(1024),
            socket_mode: o.socket_mode.unwrap_or_else(default_socket_mode),
            ready: o.ready.unwrap_or(ReadyMode::Auto),
            stop_signal: o.stop_signal.unwrap_or(Signal::SIGTERM),
            config: o.config,
            build: o.build.filter(|b| !b.trim().is_empty()),
            watch: o.watch,
            watch_debounce: o.watch_debounce.unwrap_or(Duration::from_millis(200)),
            watch_ignore: o.watch_ignore,
            node: o.node.unwrap_or_default(),
            max_memory: o.max_memory,
            metrics: o.metrics,
            python: o.python.unwrap_or_default(),
            balance,
            rescue: o.rescue.is_none_or(|r| r.0),
        })
    }

    /// What a reload may not change; named so the operator knows to restart.
    pub fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.listen != new.listen {
            v.push("listen");
        }
        if self.control_path != new.control_path {
            v.push("control");
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
mod tests {
    use super::*;

    fn flags(argv: &[&str]) -> Options {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            run: Options,
        }
        Wrap::parse_from(std::iter::once("hotswap").chain(argv.iter().copied())).run
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let cfg = Options::from_toml(include_str!("../../contrib/systemd/example.toml")).unwrap();
        assert_eq!(cfg.workers, Some(4));
        assert_eq!(cfg.ready, Some(ReadyMode::Ipc));
    }

    #[test]
    fn flags_override_the_file_option_by_option() {
        let file = Options::from_toml(
            "workers = 4\nready-timeout = \"5s\"\ncommand = \"node app.js\"\nlisten = [\"127.0.0.1:1\"]\n",
        )
        .unwrap();
        let merged = flags(&["-w", "2", "--stop-signal", "INT", "-c", "x.toml"]).merge(file).unwrap();
        assert_eq!(merged.workers, Some(2), "the flag wins");
        assert_eq!(merged.ready_timeout, Some(Duration::from_secs(5)), "the file fills in");
        assert_eq!(merged.stop_signal, Some(Signal::SIGINT));
        assert_eq!(merged.command, vec!["/bin/sh", "-c", "exec node app.js"]);
        assert_eq!(merged.listen.len(), 1);
        assert_eq!(merged.config, Some(PathBuf::from("x.toml")));
        let s = Settings::resolve(merged).unwrap();
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30), "the default");
        let with_cmd = flags(&["--", "a", "b"]).merge(Options::from_toml("command = [\"c\"]").unwrap()).unwrap();
        assert_eq!(with_cmd.command, vec!["a", "b"]);
    }

    #[test]
    fn settings_round_trip_through_json() {
        let toml = "listen = [\"web=127.0.0.1:0\", \"unix:/tmp/x.sock\"]\ncommand = [\"a\", \"b\"]\nready = \"delay:1500ms\"\nstop-signal = \"INT\"\n";
        let s = Settings::resolve(Options::from_toml(toml).unwrap()).unwrap();
        let back: Settings = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.listen, s.listen);
        assert_eq!(back.ready, ReadyMode::Delay(Duration::from_millis(1500)));
        assert_eq!(back.stop_signal, Signal::SIGINT);
        assert_eq!(back.command, vec!["a", "b"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_line() {
        let err = Options::from_toml("workers = 2\nwrokers = 3\n").unwrap_err();
        assert!(err.contains("wrokers") && err.contains("line 2"), "{err}");
        let err = Options::from_toml("workers = \"two\"\n").unwrap_err();
        assert!(err.contains("workers") && err.contains("line 1"), "{err}");
        let err = Options::from_toml("workers = 1\nready-timeout = \"soon\"\n").unwrap_err();
        assert!(err.contains("ready-timeout") && err.contains("line 2") && err.contains("soon"), "{err}");
        let err = Options::from_toml("listen = [\"nowhere\"]\n").unwrap_err();
        assert!(err.contains("listen") && err.contains("nowhere"), "{err}");
        let err = Options::from_toml("workers = 0\n").unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        let err = Options::from_toml("command = \" \"\n").unwrap_err();
        assert!(err.contains("command") && err.contains("empty"), "{err}");
        let ok =
            Options::from_toml("command = \"node app.js\"\nready = \"delay:1s\"\nstop-signal = \"INT\"\n").unwrap();
        assert_eq!(ok.ready, Some(ReadyMode::Delay(Duration::from_secs(1))));
        assert_eq!(ok.stop_signal, Some(Signal::SIGINT));
    }

    #[test]
    fn surge_as_a_flag_or_a_key_count_or_percentage() {
        assert_eq!(Options::from_toml("surge = 3\n").unwrap().surge, Some(Surge::Count(3)));
        assert_eq!(Options::from_toml("surge = \"50%\"\n").unwrap().surge, Some(Surge::Percent(50)));
        let err = Options::from_toml("workers = 2\nsurge = 0\n").unwrap_err();
        assert!(err.contains("surge") && err.contains("line 2") && err.contains("at least 1"), "{err}");
        let merged = flags(&["--surge", "100%"]).merge(Options::from_toml("surge = 2\n").unwrap()).unwrap();
        assert_eq!(merged.surge, Some(Surge::Percent(100)), "the flag wins");
        let s = Settings::resolve(flags(&["--", "app"])).unwrap();
        assert_eq!(s.surge, Surge::Count(1), "one at a time by default");
        let old_state = serde_json::to_value(&s).unwrap().as_object().unwrap().clone();
        let mut without = old_state.clone();
        without.remove("surge");
        let back: Settings = serde_json::from_value(serde_json::Value::Object(without)).unwrap();
        assert_eq!(back.surge, Surge::Count(1), "a state handed over by an older hotswap has no surge");
    }

    #[test]
    fn balance_as_a_flag_or_a_key() {
        assert_eq!(Options::from_toml("balance = \"sticky\"\n").unwrap().balance, Some(Balance::Sticky));
        let err = Options::from_toml("workers = 2\nbalance = \"round-robin\"\n").unwrap_err();
        assert!(err.contains("balance") && err.contains("line 2") && err.contains("shared, slots or sticky"), "{err}");
        let merged =
            flags(&["--balance", "slots"]).merge(Options::from_toml("balance = \"sticky\"\n").unwrap()).unwrap();
        assert_eq!(merged.balance, Some(Balance::Slots), "the flag wins");
        let s = Settings::resolve(flags(&["--", "app"])).unwrap();
        assert_eq!(s.balance, Balance::Shared, "shared by default");
        let mut old_state = serde_json::to_value(&s).unwrap().as_object().unwrap().clone();
        old_state.remove("balance");
        let back: Settings = serde_json::from_value(serde_json::Value::Object(old_state)).unwrap();
        assert_eq!(back.balance, Balance::Shared, "a state handed over by an older hotswap has no balance");
        let err = Settings::resolve(flags(&["-w", "2000", "--balance", "sticky", "--", "app"])).unwrap_err();
        assert!(err.to_string().contains("at most 1024 workers"), "{err}");
        assert!(Settings::resolve(flags(&["-w", "2000", "--", "app"])).is_ok(), "shared has no such limit");
        let mut new = s.clone();
        new.balance = Balance::Sticky;
        assert_eq!(s.needs_restart(&new), vec!["balance"]);
    }

    #[test]
    fn a_bare_number_in_the_file_is_seconds() {
        let ok = Options::from_toml("ready-timeout = 7\nshutdown-timeout = \"2\"\nwatch-debounce = 0.25\n").unwrap();
        assert_eq!(ok.ready_timeout, Some(Duration::from_secs(7)));
        assert_eq!(ok.shutdown_timeout, Some(Duration::from_secs(2)));
        assert_eq!(ok.watch_debounce, Some(Duration::from_millis(250)));
    }

    #[test]
    fn values_that_cannot_work_are_refused_naming_the_option() {
        let resolve = |toml: &str| {
            Settings::resolve(Options::from_toml(&format!("command = [\"a\"]\n{toml}")).unwrap())
                .map_err(|e| e.to_string())
        };
        let err = resolve("ready-timeout = 0").unwrap_err();
        assert!(err.contains("--ready-timeout") && err.contains("more than 0"), "{err}");
        let err = resolve("watch-ignore = [\"src/[\"]").unwrap_err();
        assert!(err.contains("--watch-ignore") && err.contains("src/["), "{err}");
        assert_eq!(resolve("").unwrap().socket_mode, 0o666);
        assert_eq!(resolve("socket-mode = \"0660\"").unwrap().socket_mode, 0o660);
        let err = Options::from_toml("socket-mode = 660").unwrap_err();
        assert!(err.contains("socket-mode") && err.contains("\"0660\""), "{err}");
        let err = Options::from_toml("socket-mode = \"0999\"").unwrap_err();
        assert!(err.contains("socket-mode") && err.contains("octal"), "{err}");
    }
}
