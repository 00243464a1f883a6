//! `--log-format`: how the primary writes its own log and its workers'
//! lines, and the default it picks under systemd.

use serde::{Deserialize, Serialize};

/// The shape of every line the primary writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: a timestamp and level on the primary's lines, worker
    /// lines behind `[wID gGEN PID]` (a timestamp too with `--timestamps`).
    #[default]
    Text,
    /// One JSON object per line, the primary's and every worker's, for log
    /// shippers: `time`, `level`, `message`, and `worker`, `pid`,
    /// `generation`, `stream` where they apply.
    Json,
    /// Text with a syslog priority prefix (`<3>` for errors) that journald
    /// reads, so `journalctl -p err` finds errors; no timestamp (the
    /// journal has its own).
    Journald,
}

impl LogFormat {
    /// The format when none is given: `journald` when stderr is the
    /// journal (systemd's `JOURNAL_STREAM` names stderr's device and inode,
    /// as `sd_journal_stream_fd` documents), else `text`.
    pub fn detect() -> LogFormat {
        if stderr_is_the_journal(std::env::var("JOURNAL_STREAM").ok().as_deref()) {
            LogFormat::Journald
        } else {
            LogFormat::Text
        }
    }
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`) is fd 2.
// (`st_dev` and `st_ino` are not u64 on every Unix.)
#[allow(clippy::unnecessary_cast)]
fn stderr_is_the_journal(journal_stream: Option<&str>) -> bool {
    use std::os::fd::AsFd;
    let Some((dev, ino)) = journal_stream.and_then(|v| v.trim().split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    nix::sys::stat::fstat(std::io::stderr().as_fd()).is_ok_and(|st| st.st_dev as u64 == dev && st.st_ino as u64 == ino)
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "journald" => Ok(LogFormat::Journald),
            _ => Err(format!("unknown log format {s:?} (expected text, json or journald)")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr() {
        use std::os::fd::AsFd;
        let st = nix::sys::stat::fstat(std::io::stderr().as_fd()).unwrap();
        assert!(stderr_is_the_journal(Some(&format!("{}:{}", st.st_dev, st.st_ino))));
        assert!(!stderr_is_the_journal(Some(&format!("{}:{}", st.st_dev, st.st_ino + 1))));
        assert!(!stderr_is_the_journal(Some("garbage")));
        assert!(!stderr_is_the_journal(None));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().unwrap_err().contains("text, json or journald"));
    }

    #[test]
    fn log_format_as_a_key_fixed_at_start() {
        use crate::options::{Options, Settings};
        let o = Options::from_toml("log-format = \"json\"\ntimestamps = true\ncommand = [\"a\"]\n").unwrap();
        assert_eq!((o.log_format, o.timestamps), (Some(LogFormat::Json), true));
        let err = Options::from_toml("log-format = \"xml\"\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("log-format"), "{err}");
        let s = Settings::resolve(o).unwrap();
        let mut new = s.clone();
        new.log_format = LogFormat::Text;
        assert_eq!(s.needs_restart(&new), vec!["log-format"]);
    }
}
