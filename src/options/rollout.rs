//! The values of the options that decide when a new release has proven
//! itself (`--health-check`) and how quietly it warms up (`--warmup-nice`).

use serde::{Deserialize, Serialize};

/// `--health-check PATH`: the request path a new worker must answer with
/// 2xx or 3xx before it counts as ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HealthPath(String);

impl HealthPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for HealthPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // It goes into a request line as it is: no room for a second line.
        if !s.starts_with('/') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "invalid health-check path {s:?}: a request path such as /healthz (starting with /, no spaces)"
            ));
        }
        Ok(HealthPath(s.to_string()))
    }
}

impl std::fmt::Display for HealthPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `--warmup-nice N|off`: the nice value a new worker starts at, until it
/// is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WarmupNice {
    /// Workers start at the primary's own priority.
    Off,
    /// Workers start at this nice value (1 to 19), and get the primary's
    /// back once ready.
    Nice(i32),
}

/// Off by default: measured on a saturated machine (other processes at nice
/// 0 using every core), a worker warming up at nice 10 took 21 to 30 s to
/// start where the same worker at nice 0 took 8 s (hypercorn), so reloads
/// slowed 3x and came near `--ready-timeout`; the latency gain did not show
/// above that machine's noise (contrib/bench/warmup.md). Where the
/// machine's CPU is the workers' own, `--warmup-nice 10` is the setting to
/// try.
pub const DEFAULT_WARMUP_NICE: WarmupNice = WarmupNice::Off;

impl Default for WarmupNice {
    fn default() -> Self {
        DEFAULT_WARMUP_NICE
    }
}

impl std::str::FromStr for WarmupNice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "0" => Ok(WarmupNice::Off),
            t => match t.parse::<i32>() {
                Ok(n @ 1..=19) => Ok(WarmupNice::Nice(n)),
                _ => Err(format!("invalid warm-up nice value {s:?} (expected 1 to 19, or off)")),
            },
        }
    }
}

impl std::fmt::Display for WarmupNice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WarmupNice::Off => f.write_str("off"),
            WarmupNice::Nice(n) => write!(f, "{n}"),
        }
    }
}
