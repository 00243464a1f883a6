//! [`Settings`]: the options resolved, with their defaults, into what the
//! supervisor runs with. Serialized as is for a self-upgrade, so a field
//! added here needs a default for a state handed over by an older image.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::{
    command, default_control_path, parse, Balance, HealthPath, ListenSpec, LogFormat, MetricsAddr, NodeMode, Options,
    ReadyMode, Surge, WarmupNice,
};

/// The resolved settings of a primary (serialized for self-upgrade).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub listen: Vec<ListenSpec>,
    pub command: Vec<String>,
    pub workers: u32,
    pub control_path: PathBuf,
    /// `--name`: the control socket is the name's (see [`super::name`]).
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
