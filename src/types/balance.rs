//! `--balance MODE`: how new connections are spread over the workers.
//! With the vocabulary because the sockets below it ([`crate::sys::slots`])
//! act on it, and the status reports it.

use serde::{Deserialize, Serialize};

/// How new connections on a TCP `--listen` address reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// One socket shared by every worker: whichever accepts first gets the
    /// connection.
    #[default]
    Shared,
    /// One `SO_REUSEPORT` socket per worker slot; the kernel's hash of the
    /// connection picks the slot.
    Slots,
    /// One socket per slot, and a BPF program that hashes the client's IP
    /// address to a slot: a client always reaches the same slot.
    Sticky,
}

impl Balance {
    /// Whether each slot gets a socket of its own.
    pub fn per_slot(self) -> bool {
        self != Balance::Shared
    }
}

impl std::str::FromStr for Balance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "shared" => Ok(Balance::Shared),
            "slots" => Ok(Balance::Slots),
            "sticky" => Ok(Balance::Sticky),
            _ => Err(format!("unknown balance mode {s:?} (expected shared, slots or sticky)")),
        }
    }
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Balance::Shared => "shared",
            Balance::Slots => "slots",
            Balance::Sticky => "sticky",
        })
    }
}
