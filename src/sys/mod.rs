//! Operating-system mechanisms, each knowing nothing of events or of the
//! supervisor: they do one thing to the system and report back.
//!
//! - [`listeners`]: binding (or inheriting from systemd) the listening sockets.
//! - [`spawn`]: fork and exec a worker with exactly its fds and `LISTEN_PID`.
//! - [`guardian`]: the helper process that kills worker trees if the primary dies.
//! - [`sd_notify`]: telling systemd what the primary does.
//! - [`reap`]: collecting exited children by pid, and orphans.
//! - [`accepting`]: whether a worker's processes accept on the listening
//!   sockets, as seen in `/proc` (Linux).

#[cfg(target_os = "linux")]
pub mod accepting;
pub mod guardian;
pub mod listeners;
pub mod reap;
pub mod sd_notify;
pub mod spawn;
