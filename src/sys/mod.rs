//! Operating-system mechanisms, each knowing nothing of events or of the
//! supervisor: they do one thing to the system and report back.
//!
//! - [`listeners`]: binding (or inheriting from systemd) the listening sockets.
//! - [`spawn`]: fork and exec a worker with exactly its fds and `LISTEN_PID`.
//! - [`guardian`]: the helper process that kills worker trees if the primary dies.
//! - [`sd_notify`]: telling systemd what the primary does.
//! - [`reap`]: collecting exited children by pid, and orphans.
//! - [`proc_stats`]: what a worker's process group uses (memory, CPU), from `/proc`.

pub mod guardian;
pub mod listeners;
pub mod proc_stats;
pub mod reap;
pub mod sd_notify;
pub mod spawn;
