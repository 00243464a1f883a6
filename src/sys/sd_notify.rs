//! Telling systemd what the primary is doing (`sd_notify`), when
//! `NOTIFY_SOCKET` is set: `READY=1` once the first generation serves,
//! `RELOADING=1` with `MONOTONIC_USEC` on every reload request, `READY=1`
//! again when the reload ends (failed or not), `STATUS=` lines for
//! `systemctl status`, `STOPPING=1` with the time the stop may take,
//! `EXTEND_TIMEOUT_USEC` while a long reload runs, and `WATCHDOG=1` pings
//! when the unit sets `WatchdogSec=`.
//!
//! The shipped unit is `Type=notify` with `ExecReload=hotswap reload`
//! (systemd 252 and later). There `READY=1` reaches systemd before the
//! reply that ends `hotswap reload` is written (replies go through a
//! channel that the control task writes once the event loop's turn is
//! over), so the ExecReload process exits after systemd has seen the reload
//! end, and systemd takes the reload's outcome from its exit code: every
//! systemd from 252 on then leaves the reload state at that exit, with the
//! job failed if the reload failed. A reload nobody asked systemd for
//! (SIGHUP, `hotswap reload` by hand, a watched change) puts the unit in
//! the reloading state through `RELOADING=1` until `READY=1`. The same
//! messages serve `Type=notify-reload` units (253+; `MONOTONIC_USEC` is
//! what it checks), though there systemd cannot see a failed reload.
//!
//! The socket is connected once at start (an abstract `@name` works too) and
//! the variables are kept from the workers, which get their own.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use anyhow::{Context, Result};
use sd_notify::NotifyState;

#[derive(Debug, Default)]
pub struct Systemd {
    socket: Option<UnixDatagram>,
    target: String,
    watchdog: Option<Duration>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID`.
    pub fn from_env() -> Result<Systemd> {
        let mut n = Systemd::default();
        let watchdog_for_us =
            std::env::var("WATCHDOG_PID").map(|p| p.trim() == std::process::id().to_string()).unwrap_or(true);
        if watchdog_for_us {
            n.watchdog = std::env::var("WATCHDOG_USEC")
                .ok()
                .and_then(|u| u.parse::<u64>().ok())
                .filter(|u| *u > 0)
                .map(Duration::from_micros);
        }
        let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(n);
        };
        let target = target.to_string_lossy().into_owned();
        n.socket = Some(connect(&target).with_context(|| format!("NOTIFY_SOCKET={target}: cannot connect"))?);
        n.target = target;
        Ok(n)
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the unit's `WatchdogSec=`.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog).map(|d| d / 2)
    }

    pub fn send(&self, states: &[NotifyState<'_>]) {
        let Some(sock) = &self.socket else { return };
        let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) = sock.send(msg.as_bytes()) {
            tracing::warn!("sd_notify to {}: {e}", self.target);
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::MainPid(std::process::id()), NotifyState::Status(status)]);
    }

    pub fn reloading(&self, status: &str) {
        let mut states = vec![NotifyState::Reloading, NotifyState::Status(status)];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `STOPPING=1`, asking systemd to wait `may_take` before it kills
    /// (the workers' `--shutdown-timeout` and a margin): a unit's
    /// `TimeoutStopSec=` shorter than that would cut their drain short.
    pub fn stopping(&self, status: &str, may_take: Duration) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status), extend(may_take)]);
    }

    pub fn extend_timeout(&self, by: Duration) {
        self.send(&[extend(by)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// `EXTEND_TIMEOUT_USEC=` (at most `u32::MAX` microseconds, 71 minutes).
fn extend(by: Duration) -> NotifyState<'static> {
    NotifyState::ExtendTimeoutUsec(by.as_micros().min(u32::MAX as u128) as u32)
}

fn connect(target: &str) -> std::io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.connect_addr(&addr)?;
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = name;
            return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets exist only on Linux"));
        }
    } else {
        sock.connect(target)?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}
