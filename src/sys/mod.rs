//! Operating-system mechanisms, each knowing nothing of events or of the
//! supervisor: they do one thing to the system and report back.
//!
//! - [`listeners`]: binding (or inheriting from systemd) the listening sockets.
//! - [`slots`]: one `SO_REUSEPORT` socket per worker slot (`--balance`), and
//!   [`reuseport`]: the BPF program that picks a slot for each connection.
//! - [`spawn`]: fork and exec a worker with exactly its fds and `LISTEN_PID`.
//! - [`fd_limit`]: the file-descriptor budget: the soft limit raised at
//!   start (workers get the original back), and a reserve kept for control.
//! - [`guardian`]: the helper process that kills worker trees if the primary dies.
//! - [`sd_notify`]: telling systemd what the primary does.
//! - [`reap`]: collecting exited children by pid, and orphans; becoming a
//!   child subreaper and reading what /proc says of a child.
//! - [`private_dir`]: directories no other user can write (control socket,
//!   runtime directory).
//! - [`runtime_dir`]: the primary's runtime directory (notify sockets,
//!   preloads), held open, checked before each spawn, locked for the
//!   primary's life; and the cleanup of a killed primary's.
//! - [`signal_mask`]: holding back signals while no handler is installed
//!   (across the exec of a self-upgrade).
//! - [`priority`]: nice values, for workers that warm up at a lower priority.
//! - [`proc_stats`]: what a worker's process group uses (memory, CPU), from `/proc`.
//! - [`acceptors`]: which of a worker's processes accept on the listening
//!   sockets, as seen in `/proc` (Linux): the kernel's side of
//!   `--ready accepting`, whose rule is the supervisor's.
//! - [`pidfd`]: copies of another process's fds (Linux).
//! - [`bind_intercept`]: the seccomp filter that gives a worker's own
//!   `bind` of a `--listen` address hotswap's socket (Linux 5.9).
//! - [`quiesce`]: what a retiring worker does with its stop signal, where
//!   its connections stand, and freezing it while that is looked at (Linux).
//! - [`rescue`]: copies of a retiring worker's connections, and whether it
//!   still holds them (Linux).
//! - [`sock_diag`]: the namespace's listening sockets, by netlink (Linux).

#[cfg(target_os = "linux")]
pub mod acceptors;
#[cfg(target_os = "linux")]
pub mod bind_intercept;
pub mod fd_limit;
pub mod guardian;
pub mod listeners;
#[cfg(target_os = "linux")]
pub mod pidfd;
pub mod priority;
pub mod private_dir;
pub mod proc_stats;
#[cfg(target_os = "linux")]
pub mod quiesce;
pub mod reap;
#[cfg(target_os = "linux")]
pub mod rescue;
#[cfg(target_os = "linux")]
pub mod reuseport;
pub mod runtime_dir;
pub mod sd_notify;
pub mod signal_mask;
pub mod slots;
#[cfg(target_os = "linux")]
pub mod sock_diag;
pub mod spawn;
