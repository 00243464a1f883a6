//! `--metrics`'s address, with the `:PORT` shorthand for loopback.

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
