//! Parsing option values, for flags (clap `value_parser`s) and for the
//! config file (serde `with` modules) alike, so a value means the same in
//! both places.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parses `500ms`, `10s`, `2m`, `1h 30m`; a bare number (`30`, `1.5`) means
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        if let Ok(secs) = s.parse::<f64>() {
            return Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 10s, 2m)"))
}

/// A config file error on one line: where (line and column, counted from
/// 1, and the text of that line) and what. toml's own message spans
/// several lines, which a journal or a deploy tool's output cuts apart.
pub fn one_line_error(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    let what = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(at) = span.map(|s| s.start.min(text.len())) else { return what };
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[start..at].chars().count() + 1;
    let source = text[start..].lines().next().unwrap_or("").trim();
    let source: String = if source.chars().count() > 80 {
        source.chars().take(77).chain("...".chars()).collect()
    } else {
        source.to_string()
    };
    format!("line {line}, column {column} ({source}): {what}")
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

/// Parses a worker count: `1` to `4096`, or `max` (one per CPU).
pub fn parse_workers(s: &str) -> Result<u32, String> {
    if s.trim() == "max" {
        return Ok(cpus());
    }
    match s.trim().parse::<u32>() {
        Ok(n @ 1..=4096) => Ok(n),
        Ok(0) => Err("must be at least 1".into()),
        Ok(_) => Err("at most 4096".into()),
        Err(_) => Err(format!("invalid worker count {s:?} (a number, or max for one per CPU)")),
    }
}

/// Parses a Unix socket's file mode in octal: `0660`, `660`, `0o660`.
pub fn parse_socket_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim().trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => Err(format!("invalid socket mode {s:?}: octal permission bits, e.g. 0660 or 0600")),
    }
}

/// Parses a memory size: bytes (`1048576`), or a number with `K`, `M`, `G`
/// or `T` (powers of 1024, as PM2's `max_memory_restart` and `ps` mean
/// them; `MB`, `MiB` and lower case are the same), e.g. `512M`, `1.5G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("invalid size {s:?} (expected bytes, or a number with K, M, G or T: 512M, 1.5G)")),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?} (expected e.g. 512M, 1G or bytes)"))?;
    let bytes = n * mult as f64;
    if !(1.0..=(u64::MAX / 2) as f64).contains(&bytes) {
        return Err(format!("size {s:?} out of range (at least 1 byte)"));
    }
    Ok(bytes as u64)
}

/// How many CPUs this process may use.
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// A string or a number in the file, as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    String(String),
    Number(u64),
    Float(f64),
}

impl Text {
    fn into_string(self) -> String {
        match self {
            Text::String(s) => s,
            Text::Number(n) => n.to_string(),
            Text::Float(f) => f.to_string(),
        }
    }
}

/// A switch: `on` or `off` (`--rescue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnOff(pub bool);

impl std::str::FromStr for OnOff {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(OnOff(true)),
            "off" => Ok(OnOff(false)),
            _ => Err(format!("{s:?} is neither on nor off")),
        }
    }
}

impl std::fmt::Display for OnOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 { "on" } else { "off" })
    }
}

/// `Option<T>` through `Display` and `FromStr` (a number is read as text).
pub mod text {
    use super::*;
    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: std::str::FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        Text::deserialize(d)?.into_string().parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// `T` through `Display` and `FromStr` (the resolved settings).
pub mod display {
    use super::*;
    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    pub fn deserialize<'de, T: std::str::FromStr<Err = String>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `Option<Duration>`: `"500ms"`, `"2m"`, or a bare number of seconds.
pub mod duration {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        parse_duration(&Text::deserialize(d)?.into_string()).map(Some).map_err(serde::de::Error::custom)
    }
}

/// `Option<u32>` socket mode: a string of octal digits only (a TOML number
/// would be read in decimal, or as `0o` octal: too easy to get wrong).
pub mod socket_mode {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(m) => s.serialize_str(&format!("{m:04o}")),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match Text::deserialize(d)? {
            Text::String(m) => parse_socket_mode(&m).map(Some).map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom("give the mode as a string of octal digits, e.g. \"0660\"")),
        }
    }
}

/// `Option<Signal>` by name or number.
pub mod signal {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<Signal>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|sig| sig.as_str()).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Signal>, D::Error> {
        parse_signal(&Text::deserialize(d)?.into_string()).map(Some).map_err(serde::de::Error::custom)
    }
}

/// `Signal` by name (the resolved settings).
pub mod signal_name {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Signal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        parse_signal(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `Option<u32>` worker count: a number from 1 to 4096, or `"max"`.
pub mod workers {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        parse_workers(&Text::deserialize(d)?.into_string()).map(Some).map_err(serde::de::Error::custom)
    }
}

/// `Option<u64>` memory size: `"512M"`, or a bare number of bytes.
pub mod size {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        parse_size(&Text::deserialize(d)?.into_string()).map(Some).map_err(serde::de::Error::custom)
    }
}

/// The worker command: an array of arguments, or one string run by
/// `/bin/sh -c 'exec ...'`.
pub mod command {
    use super::*;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum CommandLine {
        Args(Vec<String>),
        Shell(String),
    }
    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match CommandLine::deserialize(d)? {
            CommandLine::Args(a) if !a.is_empty() => Ok(a),
            CommandLine::Shell(s) if !s.trim().is_empty() => Ok(super::super::command::from_string(&s)),
            _ => Err(serde::de::Error::custom("`command` is empty")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn worker_counts() {
        assert_eq!(parse_workers("4").unwrap(), 4);
        assert_eq!(parse_workers("max").unwrap(), cpus());
        assert!(parse_workers("0").unwrap_err().contains("at least 1"));
        assert!(parse_workers("5000").is_err());
        assert!(parse_workers("many").unwrap_err().contains("max"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("64 MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("100kb").unwrap(), 100 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").unwrap_err().contains("512M"));
        assert!(parse_size("12Q").unwrap_err().contains("512M"));
        assert!(parse_size("0").unwrap_err().contains("at least"));
        assert!(parse_size("").is_err());
        assert!(parse_size("-5M").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGINT").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("quit").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("SIGNOPE").is_err());
    }
}

/// `env`: `KEY=VALUE` on the command line.
pub fn parse_env_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid environment variable {s:?} (expected KEY=VALUE)")),
    }
}

/// `env` in the config file: a table of strings (`env = { NODE_ENV =
/// "production" }`, or an `[env]` section); numbers and booleans are
/// written as text.
pub mod env_table {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, val) in v {
            m.serialize_entry(k, val)?;
        }
        m.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        let map = std::collections::BTreeMap::<String, Text>::deserialize(d)?;
        map.into_iter()
            .map(|(k, v)| {
                let v = v.into_string();
                if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                    Err(serde::de::Error::custom(format!("env: invalid variable {k:?}")))
                } else {
                    Ok((k, v))
                }
            })
            .collect()
    }
}
