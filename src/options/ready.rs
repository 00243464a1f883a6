//! How a worker tells the primary it is ready: `--ready MODE`.

use std::time::Duration;

use super::parse_duration;

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

impl ReadyMode {
    pub fn uses_notify(self) -> bool {
        matches!(self, ReadyMode::Notify | ReadyMode::IpcOrNotify)
    }
    pub fn uses_ipc(self) -> bool {
        matches!(self, ReadyMode::Ipc | ReadyMode::IpcOrNotify)
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
}
