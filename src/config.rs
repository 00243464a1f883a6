//! Settings of `hotswap run`: from the command line and, optionally, a
//! `hotswap.toml` file (`--config`); flags override the file.
//!
//! The file is read again on every reload, so a deploy can change the
//! command, the worker count, the timeouts and the readiness mode without a
//! restart. Listeners and the control socket are bound once: changing them
//! in the file is reported as needing a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::cli::{parse_duration, RunArgs};
use crate::listeners::ListenSpec;

/// How a worker tells the primary it is ready to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// `{"type":"listening"}` (or `"ready"`) on the IPC channel.
    Ipc,
    /// `READY=1` on the worker's own `NOTIFY_SOCKET`, as for `Type=notify`.
    Notify,
    /// Whichever comes first.
    IpcOrNotify,
    /// Ready this long after it started: for apps that can say nothing.
    Delay(Duration),
    /// Ready as soon as it started.
    None,
}

impl std::str::FromStr for ReadyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ipc" => ReadyMode::Ipc,
            "notify" => ReadyMode::Notify,
            "ipc-or-notify" => ReadyMode::IpcOrNotify,
            "none" => ReadyMode::None,
            _ => match s.strip_prefix("delay:") {
                Some(d) => ReadyMode::Delay(parse_duration(d)?),
                None => {
                    return Err(format!(
                        "unknown readiness mode {s:?} (expected ipc, notify, ipc-or-notify, delay:DUR or none)"
                    ))
                }
            },
        })
    }
}

impl std::fmt::Display for ReadyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadyMode::Ipc => f.write_str("ipc"),
            ReadyMode::Notify => f.write_str("notify"),
            ReadyMode::IpcOrNotify => f.write_str("ipc-or-notify"),
            ReadyMode::Delay(d) => write!(f, "delay:{}ms", d.as_millis()),
            ReadyMode::None => f.write_str("none"),
        }
    }
}

/// Serde through `Display` and `FromStr`.
mod as_string {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    pub fn deserialize<'de, T: std::str::FromStr<Err = String>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

mod signal_name {
    use nix::sys::signal::Signal;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Signal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        super::parse_signal(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl ReadyMode {
    pub fn uses_notify(self) -> bool {
        matches!(self, ReadyMode::Notify | ReadyMode::IpcOrNotify)
    }
    pub fn uses_ipc(self) -> bool {
        matches!(self, ReadyMode::Ipc | ReadyMode::IpcOrNotify)
    }
}

/// Parses `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("no signal number {n}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<Signal>().map_err(|_| format!("unknown signal {s:?}"))
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
    pub backlog: i32,
    #[serde(with = "as_string")]
    pub ready: ReadyMode,
    #[serde(with = "signal_name")]
    pub stop_signal: Signal,
    pub config: Option<PathBuf>,
    /// Run through the shell before each reload (`--build`).
    pub build: Option<String>,
    pub watch: Vec<PathBuf>,
    pub watch_debounce: Duration,
    pub watch_ignore: Vec<String>,
}

/// `hotswap.toml`: every `run` option. Unknown keys and bad values are
/// errors that name the key and the line (values are parsed while the file
/// is read, so toml can point at them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    #[serde(default, deserialize_with = "de_listen")]
    pub listen: Option<Vec<ListenSpec>>,
    #[serde(default, deserialize_with = "de_workers")]
    pub workers: Option<u32>,
    pub control: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_duration")]
    pub ready_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub shutdown_timeout: Option<Duration>,
    pub backlog: Option<i32>,
    #[serde(default, deserialize_with = "de_ready")]
    pub ready: Option<ReadyMode>,
    #[serde(default, deserialize_with = "de_signal")]
    pub stop_signal: Option<Signal>,
    /// An array of arguments, or one string run by `/bin/sh -c 'exec ...'`.
    pub command: Option<CommandLine>,
    pub build: Option<String>,
    pub watch: Option<Vec<PathBuf>>,
    #[serde(default, deserialize_with = "de_duration")]
    pub watch_debounce: Option<Duration>,
    pub watch_ignore: Option<Vec<String>>,
}

fn de_with<'de, D: serde::Deserializer<'de>, T>(
    d: D,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map(Some).map_err(serde::de::Error::custom)
}
fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_with(d, parse_duration)
}
fn de_ready<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ReadyMode>, D::Error> {
    de_with(d, str::parse)
}
fn de_signal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Signal>, D::Error> {
    de_with(d, parse_signal)
}
fn de_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<ListenSpec>>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter().map(|s| s.parse().map_err(serde::de::Error::custom)).collect::<Result<_, _>>().map(Some)
}
fn de_workers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Args(Vec<String>),
    Shell(String),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.to_string().trim_end()))
    }
}

impl Settings {
    /// Flags first, then the file, then the defaults.
    pub fn resolve(args: &RunArgs, file: FileConfig) -> Result<Settings> {
        let listen = if args.listen.is_empty() { file.listen.unwrap_or_default() } else { args.listen.clone() };
        let command = if !args.command.is_empty() {
            args.command.clone()
        } else {
            match file.command {
                Some(CommandLine::Args(a)) if !a.is_empty() => a,
                Some(CommandLine::Shell(s)) if !s.trim().is_empty() => {
                    vec!["/bin/sh".into(), "-c".into(), format!("exec {s}")]
                }
                Some(_) => bail!("config: key `command` is empty"),
                None => {
                    bail!("no worker command: give one after `--`, or `command` in a config file")
                }
            }
        };
        let workers = args
            .workers
            .or(file.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        Ok(Settings {
            listen,
            command,
            workers,
            control_path: crate::control::resolve(args.control.control.clone().or(file.control)),
            ready_timeout: args.ready_timeout.or(file.ready_timeout).unwrap_or(Duration::from_secs(30)),
            shutdown_timeout: args.shutdown_timeout.or(file.shutdown_timeout).unwrap_or(Duration::from_secs(30)),
            backlog: args.backlog.or(file.backlog).unwrap_or(1024),
            ready: args.ready.or(file.ready).unwrap_or(ReadyMode::Ipc),
            stop_signal: args.stop_signal.or(file.stop_signal).unwrap_or(Signal::SIGTERM),
            config: args.config.clone(),
            build: args.build.clone().or(file.build).filter(|b| !b.trim().is_empty()),
            watch: if args.watch.is_empty() { file.watch.unwrap_or_default() } else { args.watch.clone() },
            watch_debounce: args.watch_debounce.or(file.watch_debounce).unwrap_or(Duration::from_millis(200)),
            watch_ignore: if args.watch_ignore.is_empty() {
                file.watch_ignore.unwrap_or_default()
            } else {
                args.watch_ignore.clone()
            },
        })
    }

    /// Loads the config file named by the flags (if any) and resolves.
    pub fn load(args: &RunArgs) -> Result<Settings> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let s = Settings::resolve(args, file)?;
        for p in &s.watch {
            if !p.exists() {
                bail!("--watch {}: no such file or directory", p.display());
            }
        }
        Ok(s)
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
        if self.watch != new.watch || self.watch_ignore != new.watch_ignore || self.watch_debounce != new.watch_debounce
        {
            v.push("watch");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_modes() {
        assert_eq!("ipc".parse::<ReadyMode>().unwrap(), ReadyMode::Ipc);
        assert_eq!("delay:250ms".parse::<ReadyMode>().unwrap(), ReadyMode::Delay(Duration::from_millis(250)));
        assert!("sometimes".parse::<ReadyMode>().unwrap_err().contains("unknown readiness mode"));
        assert!("delay:x".parse::<ReadyMode>().is_err());
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let cfg: FileConfig = toml::from_str(include_str!("../contrib/systemd/example.toml")).unwrap();
        assert_eq!(cfg.workers, Some(4));
        assert_eq!(cfg.ready, Some(ReadyMode::Ipc));
    }

    #[test]
    fn settings_round_trip_through_json() {
        let toml = "listen = [\"web=127.0.0.1:0\", \"unix:/tmp/x.sock\"]\ncommand = [\"a\", \"b\"]\nready = \"delay:1500ms\"\nstop-signal = \"INT\"\n";
        let args = crate::cli::RunArgs::default_for_tests();
        let s = Settings::resolve(&args, toml::from_str(toml).unwrap()).unwrap();
        let back: Settings = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.listen, s.listen);
        assert_eq!(back.ready, ReadyMode::Delay(Duration::from_millis(1500)));
        assert_eq!(back.stop_signal, Signal::SIGINT);
        assert_eq!(back.command, vec!["a", "b"]);
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGINT").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("quit").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("SIGNOPE").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_line() {
        let err = toml::from_str::<FileConfig>("workers = 2\nwrokers = 3\n").unwrap_err().to_string();
        assert!(err.contains("wrokers") && err.contains("line 2"), "{err}");
        let err = toml::from_str::<FileConfig>("workers = \"two\"\n").unwrap_err().to_string();
        assert!(err.contains("workers") && err.contains("line 1"), "{err}");
        let err = toml::from_str::<FileConfig>("workers = 1\nready-timeout = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("ready-timeout") && err.contains("line 2") && err.contains("soon"), "{err}");
        let err = toml::from_str::<FileConfig>("listen = [\"nowhere\"]\n").unwrap_err().to_string();
        assert!(err.contains("listen") && err.contains("nowhere"), "{err}");
        let err = toml::from_str::<FileConfig>("workers = 0\n").unwrap_err().to_string();
        assert!(err.contains("at least 1"), "{err}");
        let ok: FileConfig =
            toml::from_str("command = \"node app.js\"\nready = \"delay:1s\"\nstop-signal = \"INT\"\n").unwrap();
        assert_eq!(ok.ready, Some(ReadyMode::Delay(Duration::from_secs(1))));
        assert_eq!(ok.stop_signal, Some(Signal::SIGINT));
    }
}
