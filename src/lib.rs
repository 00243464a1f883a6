//! hotswap: a zero-downtime hot-reload supervisor for network services.
//!
//! A long-lived primary binds the listening sockets once and runs N workers
//! (any program) on them; a reload replaces the workers, one at a time or
//! up to `--surge` at once, each old one only once its replacement is
//! ready, so capacity never drops and no connection is refused. The crate is laid out
//! so that dependencies point one way, from the bottom of this list to the
//! top:
//!
//! - [`types`]: the vocabulary (worker ids and states, the [`Event`]s the
//!   supervisor hears, the control protocol's wire types). Depends on
//!   nothing else here.
//! - [`node`]: Node.js's cluster protocol and what an unchanged Node app
//!   needs (wrapper detection, the drain preload). Depends on nothing else.
//! - [`python`]: what unchanged Python servers need (the drain preload for
//!   uvicorn). Depends on nothing else.
//! - [`servers`]: the stock servers hotswap recognises by their command
//!   (nginx, unicorn, php-fpm, lighttpd, puma, gunicorn...) and their
//!   habits: the signal that drains each, the variable each reads its
//!   inherited sockets from. Depends on [`types`] alone.
//! - [`options`]: every `hotswap run` option, declared once for the command
//!   line and the config file, resolved into [`options::Settings`].
//! - [`sys`]: operating-system mechanisms that know nothing of events:
//!   binding listeners (and, for `--balance`, a `SO_REUSEPORT` socket per
//!   worker slot with the BPF program that picks one), fork and exec, the guardian process, `sd_notify`,
//!   reaping, directories no other user can write, the runtime directory
//!   (held open, checked before each spawn, locked), what a process group
//!   uses (`/proc`), nice values (`--warmup-nice`), the seccomp filter
//!   that gives a worker's own `bind` of a `--listen` address hotswap's
//!   socket (`--bind-intercept`, with its address rules), and what a
//!   retiring worker that does not drain holds and does with its stop
//!   signal, with `SIGSTOP` while that is looked at (`--quiesce`).
//! - [`io`]: what turns the outside world into [`Event`]s: signals, the
//!   control socket, each worker's IPC channel and notify socket, worker
//!   output, file watching, the `--build` command, `/metrics`, reading
//!   what workers use (memory, CPU) off the event loop, `--health-check`
//!   requests to one worker, and the answers to a worker's bind filter.
//! - [`handover`]: the state and file descriptors handed from one image of
//!   the primary to the next in a self-upgrade.
//! - [`supervisor`]: the event loop, sole owner of all state: the worker
//!   pool, reloads (their policy in [`supervisor::reload::policy`], with the
//!   `--min-ready` window and canaries), health checks, warm-up priority, which
//!   slots are live for `--balance`, exits
//!   and crash backoff, processes workers leave behind (adopted as
//!   subreaper), stop, status (with what workers use), the `--max-memory`
//!   check, event subscribers, self-upgrade, and the phases of its one
//!   event loop (the first `--build`, serving, ending). Its state is a
//!   score of fields at most (the layout test counts them), each a
//!   concern, most of them a group owned by the one file that changes it.
//!   Inside it, a functional core (`supervisor/core/`: a worker's life as
//!   an enum whose states carry their own data, exits, stop, memory
//!   replacement, balance, the quiesce of workers that do not drain, every
//!   pending timer) decides from state, event and time without touching a
//!   process, socket or `/proc`, and the rest of the folder is the shell
//!   that gathers facts and carries the decisions out.
//! - [`cli`] and [`client`]: the command line, and the subcommands that talk
//!   to a running primary; [`check`]: `hotswap check`, a configuration
//!   validated as `run` would start it; [`manual`]: the man pages, the
//!   config file's `hotswap.toml(5)` among them, generated from the same
//!   definitions; [`daemon`]: `hotswap start` and
//!   `restart`, a primary in the background with its output in rotated
//!   files; [`apps`]: `hotswap ls`; [`import`]: a PM2 ecosystem file as a
//!   `hotswap.toml`.
//!
//! `docs/protocol.md` is the contract with workers; `docs/guarantees.md` what
//! hotswap promises.

pub mod apps;
pub mod check;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod handover;
pub mod import;
pub mod io;
pub mod manual;
pub mod node;
pub mod options;
pub mod python;
pub mod servers;
pub mod supervisor;
pub mod sys;
pub mod types;

pub use types::Event;
