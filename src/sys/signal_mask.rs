//! Which signals the primary holds back while it has no handler for them.
//!
//! `execve` resets every caught signal to its default action, and the
//! default action of SIGHUP, SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 is to terminate.
//! During a self-upgrade the new image installs its handlers only a moment
//! after the exec, so a `systemctl reload` or a Ctrl-C in that moment would
//! kill the primary and, through their parent-death signal, every worker.
//! The signal mask, unlike the handlers, survives `execve`: the old image
//! blocks these signals right before the exec, and the new one unblocks them
//! once its handlers are installed. A signal sent in between stays pending
//! and is delivered then, not lost.
//!
//! The mask is per thread. Helper threads are started with these signals
//! blocked (see [`blocked_while`]), so a signal is always taken by the main
//! thread, whose mask this module controls: while it blocks them, the
//! signals wait for it instead of being taken by a thread that the exec is
//! about to end.
//!
//! Workers never inherit a blocked mask: [`crate::sys::spawn`] empties the
//! mask and resets every disposition in the child before its exec, and so
//! does `std::process::Command` for the guardian and the `--build` command.

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

/// The signals whose default action would end the primary, plus SIGCHLD (so
/// a child's exit during the exec is noticed, not just reaped by chance).
pub fn held() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGCHLD] {
        set.add(sig);
    }
    set
}

/// Blocks [`held`] signals in the calling thread; returns the mask before.
pub fn block() -> SigSet {
    let mut old = SigSet::empty();
    // pthread_sigmask fails only on an invalid `how`.
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&held()), Some(&mut old));
    old
}

/// The calling thread's mask.
pub fn current() -> SigSet {
    SigSet::thread_get_mask().unwrap_or_else(|_| SigSet::empty())
}

/// Puts back a mask returned by [`block`] (an exec that failed).
pub fn restore(old: &SigSet) {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None);
}

/// Unblocks [`held`] signals in the calling thread: its handlers are in
/// place, and signals that came meanwhile are delivered now.
pub fn unblock() {
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&held()), None);
}

/// Runs `f` (which starts a thread) with [`held`] signals blocked, so the
/// thread it starts inherits a mask that keeps them for the main thread.
pub fn blocked_while<T>(f: impl FnOnce() -> T) -> T {
    let old = block();
    let out = f();
    restore(&old);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_restore_round_trip() {
        std::thread::spawn(|| {
            let before = SigSet::thread_get_mask().unwrap();
            let old = block();
            assert!(SigSet::thread_get_mask().unwrap().contains(Signal::SIGTERM));
            restore(&old);
            assert_eq!(SigSet::thread_get_mask().unwrap().contains(Signal::SIGTERM), before.contains(Signal::SIGTERM));
            let inherited = blocked_while(|| {
                std::thread::spawn(|| SigSet::thread_get_mask().unwrap().contains(Signal::SIGHUP)).join().unwrap()
            });
            assert!(inherited, "a thread started by blocked_while keeps the signals for the main thread");
            block();
            unblock();
            assert!(!SigSet::thread_get_mask().unwrap().contains(Signal::SIGHUP));
        })
        .join()
        .unwrap();
    }
}
