//! A `--listen` address as the user wrote it: `[NAME=]ADDR`, where ADDR is
//! `127.0.0.1:8080`, `[::1]:8080`, `:8080` or `unix:/path`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Name given to a listener without one, as systemd does.
pub const DEFAULT_NAME: &str = "unknown";

/// One `--listen` argument: `[NAME=]ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub name: Option<String>,
    pub addr: ListenAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // A name never contains ':' (systemd forbids it in LISTEN_FDNAMES), so
        // `=` before any ':' separates a name; `unix:/a=b` keeps its path.
        let (name, addr) = match s.split_once('=') {
            Some((name, addr)) if !name.contains(':') && !name.contains('/') => {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(format!("invalid listener name {name:?}: use printable ASCII without ':'"));
                }
                (Some(name.to_string()), addr)
            }
            _ => (None, s),
        };
        let addr = if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, as in unix:/run/app.sock".into());
            }
            ListenAddr::Unix(PathBuf::from(path))
        } else if let Ok(sa) = addr.parse::<SocketAddr>() {
            ListenAddr::Tcp(sa)
        } else if let Some(port) = addr.strip_prefix(':') {
            let port: u16 = port.parse().map_err(|_| format!("invalid port in {addr:?}"))?;
            ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], port)))
        } else if addr.parse::<u16>().is_ok() {
            return Err(format!(
                "invalid listen address {addr:?}: a port needs an address: :{addr} (every interface) or \
                 127.0.0.1:{addr} (this host only)"
            ));
        } else {
            let mut found = addr.to_socket_addrs().map_err(|e| {
                format!("invalid listen address {addr:?}: {e} (expected 127.0.0.1:8080, [::1]:8080 or unix:/path)")
            })?;
            ListenAddr::Tcp(found.next().ok_or_else(|| format!("{addr:?} resolves to no address"))?)
        };
        Ok(ListenSpec { name, addr })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n}={}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl serde::Serialize for ListenSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ListenSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(sa) => write!(f, "{sa}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}
