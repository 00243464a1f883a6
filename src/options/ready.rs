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
    /// A process of the worker's group accepts on every `--listen` socket,
    /// as seen in `/proc`: for any server, with no line of code.
    Accepting,
    /// The sign the worker gives: IPC or Node's cluster `listening`;
    /// `READY=1` once a process of the worker also accepts (a pre-fork
    /// master says it before its workers accept); accepting for a worker
    /// that says nothing (see `docs/protocol.md`).
    Auto,
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
            "accepting" => ReadyMode::Accepting,
            "auto" => ReadyMode::Auto,
            "none" => ReadyMode::None,
            _ => match s.strip_prefix("delay:") {
                Some(d) => ReadyMode::Delay(parse_duration(d)?),
                None => {
                    return Err(format!(
                        "unknown readiness mode {s:?} (expected auto, accepting, ipc, notify, ipc-or-notify, delay:DUR or none)"
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
            ReadyMode::Accepting => f.write_str("accepting"),
            ReadyMode::Auto => f.write_str("auto"),
            ReadyMode::Delay(d) => write!(f, "delay:{}ms", d.as_millis()),
            ReadyMode::None => f.write_str("none"),
        }
    }
}

impl ReadyMode {
    pub fn uses_notify(self) -> bool {
        matches!(self, ReadyMode::Notify | ReadyMode::IpcOrNotify | ReadyMode::Auto)
    }
    pub fn uses_ipc(self) -> bool {
        matches!(self, ReadyMode::Ipc | ReadyMode::IpcOrNotify | ReadyMode::Auto)
    }
    /// Whether the primary looks in `/proc` for the worker's accepts.
    pub fn uses_accepting(self) -> bool {
        matches!(self, ReadyMode::Accepting | ReadyMode::Auto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_modes() {
        assert_eq!("ipc".parse::<ReadyMode>().unwrap(), ReadyMode::Ipc);
        for mode in ["auto", "accepting", "ipc", "notify", "ipc-or-notify", "none", "delay:250ms"] {
            assert_eq!(mode.parse::<ReadyMode>().unwrap().to_string(), mode);
        }
        assert_eq!("delay:250ms".parse::<ReadyMode>().unwrap(), ReadyMode::Delay(Duration::from_millis(250)));
        assert!("sometimes".parse::<ReadyMode>().unwrap_err().contains("unknown readiness mode"));
        assert!("delay:x".parse::<ReadyMode>().is_err());
    }
}
