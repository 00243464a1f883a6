//! What turns the outside world into [`Event`](crate::types::Event)s for the
//! supervisor, each in its own task (or thread), so the event loop never
//! waits on a peer.
//!
//! - [`signals`]: Unix signals.
//! - [`control`]: the control socket's server side (`hotswap reload`, ...).
//! - [`ipc`]: each worker's newline-delimited JSON channel.
//! - [`worker_notify`]: each worker's own `NOTIFY_SOCKET` (`--ready notify`).
//! - [`output`]: workers' stdout and stderr, prefixed and passed through.
//! - [`log_files`]: `--out-file` and `--error-file`, reopened on SIGUSR1.
//! - [`log_format`]: the shape of every line written (`--log-format`).
//! - [`file_watch`]: development mode: changed files become reloads.
//! - [`build`]: the `--build` command run before a reload.
//! - [`metrics_endpoint`]: `--metrics`: the HTTP endpoint serving `/metrics` to Prometheus, rendered from the supervisor's snapshots.
//! - [`accepts`]: the looks at starting workers' accepts in `/proc`, on a thread of their own.
//! - [`usage`]: what workers use (memory, CPU), read from `/proc` off the event loop when asked.
//! - [`rescue`]: requests a retiring worker's graceful stop would lose on
//!   its idle keep-alive connections, passed to the serving generation (Linux).
//! - [`bind_intercept`]: answering the `bind` and `listen` calls of a
//!   worker's bind filter: its own bind of a `--listen` address gets
//!   hotswap's socket (Linux).
//! - [`last_lines`]: each worker's last lines, quoted when it never got ready.
//! - [`lines`]: newline framing, shared by every stream above.
//! - [`warnings`]: the per-worker rate limit on warnings a worker can cause.

pub mod accepts;
#[cfg(target_os = "linux")]
pub mod bind_intercept;
pub mod build;
pub mod control;
pub mod file_watch;
pub mod health;
pub mod ipc;
pub mod last_lines;
pub mod lines;
pub mod log_files;
pub mod log_format;
pub mod metrics_endpoint;
pub mod output;
#[cfg(target_os = "linux")]
pub mod rescue;
pub mod signals;
pub mod usage;
pub mod warnings;
pub mod worker_notify;
