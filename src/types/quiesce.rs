//! What a retiring worker's connections say, shared by the look at them
//! ([`crate::sys::quiesce`]) and the decision on them
//! ([`crate::supervisor`]'s core `quiesce`).

use std::time::Duration;

/// Where one accepted connection stands, as the kernel counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Bytes the worker has read from it.
    pub read: u64,
    /// Bytes the worker has written to it (acknowledged or not).
    pub written: u64,
    /// Bytes waiting to be read.
    pub unread: u32,
    /// Bytes written and not yet acknowledged by the client.
    pub unsent: u32,
    /// Since the last data sent, and received (jiffies: 4 ms at `HZ=250`).
    pub since_sent: Duration,
    pub since_recv: Duration,
}

/// What a look at a quiescing worker saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The worker's connections: how many have a request in flight, and
    /// whether every thread of it is stopped.
    Held { in_flight: usize, stopped: bool },
    /// Its connections could not be looked at (no right to copy them, or
    /// `/proc` refused): it is told to go as it is.
    Unknown,
}
