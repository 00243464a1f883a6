//! The `auto`/`on`/`off` mode shared by `--node`, `--node-primary`,
//! `--python`, `--drain-patch` and `--bind-intercept`.

use serde::{Deserialize, Serialize};

/// `--node`: whether workers are run as Node.js cluster workers; also
/// `--python`: whether Python workers get the drain preload, and
/// `--drain-patch`: when its drain patches apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeMode {
    /// When the command runs node (or a script whose `#!` line does).
    #[default]
    Auto,
    /// Always (the command is a wrapper hotswap cannot see through).
    On,
    /// Never: the worker gets only hotswap's own protocol.
    Off,
}

impl std::str::FromStr for NodeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(NodeMode::Auto),
            "on" => Ok(NodeMode::On),
            "off" => Ok(NodeMode::Off),
            _ => Err(format!("unknown mode {s:?} (expected auto, on or off)")),
        }
    }
}

impl std::fmt::Display for NodeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeMode::Auto => "auto",
            NodeMode::On => "on",
            NodeMode::Off => "off",
        })
    }
}
