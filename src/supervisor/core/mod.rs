//! The supervisor's functional core: its decisions as functions of state,
//! event and time that return what to do, with no process, socket, signal
//! or `/proc` in sight (the layout test checks that no file here names
//! one). The shell, the rest of [`super`], gathers the facts (a worker's
//! state, a reading of `/proc`, the clock), asks the core, and carries the
//! answer out: it spawns, signals, writes replies and arms timers.
//!
//! Each file is one concern, with its unit tests (fake workers, injected
//! time):
//! - [`balance`]: `--balance`'s live slots, and a slot given up before
//!   its worker is told to go.
//! - [`exits`]: what a worker's exit means (a crash to restart after the
//!   backoff, the reload's business, the end of a stop, a first
//!   generation that cannot start).
//! - [`life`]: a worker's life, starting, ready or stopping, each state
//!   with what holds only in it, and the changes between them.
//! - [`memory`]: `--max-memory`: which worker to replace and when
//!   (checks in a row, the biggest first, never during a reload).
//! - [`quiesce`]: a retiring worker that does not drain (its stop signal
//!   ends it at once) is stopped, and told to go, at a moment it answers
//!   nothing.
//! - [`stop`]: what a stop request does, how a worker is asked to drain
//!   and when it is killed, and how the stop went (exit code, message).
//! - [`timers`]: every pending deadline and every task a worker owns, in
//!   one place: cancelled with their worker, handed over on self-upgrade.
//!
//! The reload ([`super::reload::policy`]), the crash backoff
//! ([`super::backoff`]) and the readiness rules (`super::readiness`) were
//! pure before this folder existed and keep their places; the core uses
//! the first two.

pub mod balance;
pub mod exits;
pub mod life;
pub mod memory;
pub mod quiesce;
pub mod stop;
pub mod timers;
