//! Self-upgrade's handover: what one image of the primary passes to the
//! next (state by value, sockets and pipes by fd), and the exec itself.
//! The supervisor's half (snapshot, check, adoption) is
//! `supervisor/upgrade.rs`.
//!
//! Self-upgrade re-executes the primary in place from its binary on disk,
//! keeping its pid, its sockets and its running workers.
//!
//! The pid must stay: systemd's `MAINPID` and every worker's parent (and
//! parent-death signal) hang on it, so fork-and-exec schemes are out. The
//! handover is checked before the old image lets go:
//! 1. `NEW upgrade-check` runs first (the file opened once, run as
//!    `/proc/self/fd/N`) with the state on its stdin: the new
//!    binary must start, parse the state and agree on [`STATE_FORMAT`],
//!    within [`CHECK_TIMEOUT`]. Any failure ends the upgrade there; nothing
//!    changed. Its answer declares what its side of the handover can do
//!    ([`CheckAnswer`], [`HANDOVER_LEVEL`]); the old image relies on
//!    nothing more ([`capabilities`]).
//! 2. The state (settings, workers, generations, restart counters, last
//!    reload, adopted orphans of workers, the guardian's groups) is written
//!    to a memfd; close-on-exec is cleared on exactly the
//!    listeners, the control socket, the `--metrics` socket, the guardian's
//!    pipe, every worker's IPC
//!    end and output pipes, the memfd, the waiting client's connection, the
//!    `hotswap events` clients' connections, the runtime directory's lock
//!    and a handle on the old executable; then `fexecve` in place of the
//!    new binary's file as opened for the check (never its path looked up
//!    again: a deploy that swaps the path in between changes nothing).
//!    The check also parses the primary's command line (the argv the exec
//!    will pass) with the new binary's parser: a release that dropped or
//!    renamed an option in use is refused here.
//! 2. The signals whose default action is to terminate (SIGHUP, SIGTERM,
//!    SIGINT, SIGUSR2) are blocked right before the exec and unblocked by
//!    the new image once its handlers are installed
//!    ([`crate::sys::signal_mask`]): one sent meanwhile waits, then is
//!    acted on by the new image. If the exec fails, the mask is restored.
//! 3. The new image adopts all of it by pid (it is still every worker's
//!    parent) and answers the client. Any failure before it serves (its
//!    command line, reading the state, an fd that is not what the state
//!    says, the control socket, a worker) re-executes the old executable
//!    from that handle with the same state (a rollback), and the old
//!    version answers that the upgrade failed. To make that possible the
//!    handover is all or nothing: the new image first duplicates every fd
//!    it was handed ([`Handback`]) and gives those copies back, so an fd
//!    closed part-way through is not lost; and it takes charge of the Unix
//!    socket files (listeners, control socket) only once it serves, so a
//!    failure part-way through removes none of them.
//!
//! Only a running reload or stop refuses an upgrade (try again after it).
//! Every pending deadline (crash-restart backoff, `--ready delay:`, ready
//! and shutdown deadlines) is carried over with the time it has left.
//! What is lost: an IPC message partly read when the image changes. Worker
//! output is not: what the output readers hold goes over in the state, and
//! the writer's queue is written out before the exec (for at most
//! [`FLUSH_BEFORE_EXEC`]: a stderr that nobody reads must not hold the
//! upgrade).

//!
//! The module is in four parts: [`state`] (what crosses the exec, and its
//! fds owned again), [`mod@exec`] (the exec and the fd flags around it),
//! [`takeover`] (the new image's side: taking the state, or giving it
//! back) and [`check`] (`upgrade-check`: the new binary's answer and what
//! the old image reads from it).

use std::time::Duration;

pub mod check;
pub mod exec;
pub mod state;
pub mod takeover;

pub use check::{answer_summary, capabilities, check_main, check_state, Capabilities, CheckAnswer};
pub use exec::{exec, set_cloexec, write_memfd};
pub use state::{
    AdoptedSnapshot, Inherited, ListenerSnapshot, OnDemandSocket, State, TimerSnapshot, WorkerFds, WorkerSnapshot,
};
pub use takeover::{answer, give_back_early, rollback, take_over, Handback, Refused, TakeOver};

/// Version of [`State`]; an image refuses a state of another version.
pub const STATE_FORMAT: u32 = 1;
/// The fd of the memfd holding the state, for the next image.
pub const STATE_ENV: &str = "HOTSWAP_UPGRADE_STATE";
/// Set when a new image gave the state back: why.
pub const ROLLBACK_ENV: &str = "HOTSWAP_UPGRADE_ROLLBACK";
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// What this binary's side of the handover can do, as a level that only
/// grows (each level includes the ones below), answered by `upgrade-check`
/// in its [`CheckAnswer`] line. The old image reads it from the new binary
/// with [`capabilities`] and relies on nothing the new one did not declare.
/// - 1: unblocks the signals held across the exec once its handlers are
///   installed ([`HOLDS_SIGNALS_SINCE`]).
pub const HANDOVER_LEVEL: u32 = 1;
/// The level from which a new image unblocks held signals: the old image
/// holds them only for such a binary, as an older one would never unblock
/// them.
pub const HOLDS_SIGNALS_SINCE: u32 = 1;
/// How images before the [`CheckAnswer`] line said level 1, in their one
/// human line. Still said by this one, for those older images upgrading to
/// it (they search for it), and searched for, as a fallback, in the answer
/// of a binary that has no [`CheckAnswer`] line.
pub const HOLDS_SIGNALS: &str = "unblocks held signals";
/// How long the output writer may take to write out its queue before exec.
pub const FLUSH_BEFORE_EXEC: Duration = Duration::from_secs(2);
/// Testing aid: when set, a new image refuses the handover (and the old one
/// takes it back), so the rollback path can be exercised for real.
pub const FAIL_TAKEOVER_ENV: &str = "HOTSWAP_TEST_FAIL_TAKEOVER";
