//! `--warmup-nice`: a worker started while others serve (a reload, a crash
//! restart, a `--max-memory` replacement) starts at a lower CPU priority
//! and gets the primary's back once ready ([`crate::sys::priority`]).
//!
//! Why: on a machine with few cores, a new worker's start-up (Node loading
//! its modules, a JIT warming up) competes with the workers serving, and
//! their latency shows it. At nice 10 it gets about a tenth of a core's
//! share against a busy worker at 0, and all of an idle core; and a tenth
//! against *any* busy process at 0, which is why it is off by default
//! (see [`crate::options::WarmupNice`]).
//!
//! Not for the first generation (nothing serves yet: a lower priority would
//! only slow the start), and not when the primary could not give the
//! priority back (no `CAP_SYS_NICE`, `RLIMIT_NICE` too low): then once, a
//! warning says so.

use std::sync::atomic::{AtomicBool, Ordering};

use super::Supervisor;
use crate::options::{Settings, WarmupNice};
use crate::sys::priority;
use crate::types::WorkerId;

static WARNED: AtomicBool = AtomicBool::new(false);

impl Supervisor {
    /// The nice value a worker started now begins at, and the primary's.
    pub(super) fn warmup_nice(&self, settings: &Settings) -> Option<(i32, i32)> {
        let WarmupNice::Nice(n) = settings.warmup_nice else { return None };
        if self.ready_count() == 0 {
            return None;
        }
        let original = priority::current();
        if n <= original {
            return None;
        }
        if !priority::can_restore(original) {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "--warmup-nice {n}: new workers start at the primary's priority, since it could not give them \
                     nice {original} back once ready (that needs CAP_SYS_NICE, or RLIMIT_NICE of at least {}); \
                     --warmup-nice off silences this",
                    20 - original
                );
            }
            return None;
        }
        Some((n, original))
    }

    /// `id` is ready: its threads get the primary's priority back.
    pub(super) fn end_warmup(&mut self, id: WorkerId, warm: i32, original: i32) {
        let Some(w) = self.workers.get(&id) else { return };
        match priority::restore_group(w.pid().as_raw(), warm, original) {
            Ok(n) => tracing::debug!(worker = id, "{} back at nice {original} ({n} threads)", w.label()),
            Err(e) => tracing::warn!(worker = id, "{} keeps nice {warm}: setting it back failed: {e}", w.label()),
        }
    }
}
