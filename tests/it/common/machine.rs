//! The machine is shared by the tests running at once: every [`Primary`]
//! takes a share of it, and a test that saturates it, or whose outcome
//! hangs on tight timing, takes it whole ([`exclusive`]).

use std::sync::{Condvar, Mutex};

struct Gate {
    /// Primaries of tests that share the machine.
    shared: usize,
    exclusive: bool,
    /// A test waits for the machine to itself: no new shares.
    waiting: bool,
}

static GATE: Mutex<Gate> = Mutex::new(Gate { shared: 0, exclusive: false, waiting: false });
static GATE_TURN: Condvar = Condvar::new();

thread_local! {
    /// Shares and exclusive use taken on this (test) thread.
    static HELD: std::cell::Cell<(usize, bool)> = const { std::cell::Cell::new((0, false)) };
}

fn gate() -> std::sync::MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The machine to one test alone, until dropped. For a test that saturates
/// it (the 200 MB output flood keeps both cores busy for some 20 s), and for
/// those whose outcome hangs on the watcher's 100 ms windows (debounce, and
/// the grace after a build in which changes count as its output): the
/// watcher times a change when it handles it, so on a machine busy with
/// another test's reloads an event handled late is a change made late. It
/// waits until no other test's primary runs; their new primaries wait for
/// it. Every [`Primary`] takes a share of the machine.
#[must_use]
pub struct Exclusive(());

pub fn exclusive() -> Exclusive {
    let mut g = gate();
    g.waiting = true;
    while g.exclusive || g.shared > 0 {
        g = GATE_TURN.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    g.waiting = false;
    g.exclusive = true;
    HELD.set((HELD.get().0, true));
    Exclusive(())
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        HELD.set((HELD.get().0, false));
        gate().exclusive = false;
        GATE_TURN.notify_all();
    }
}

/// A [`Primary`]'s share of the machine.
pub(super) struct Share(bool);

pub(super) fn share() -> Share {
    let (shares, exclusive) = HELD.get();
    if exclusive {
        return Share(false);
    }
    let mut g = gate();
    // A test that already holds a share goes on: the one waiting waits for it.
    while g.exclusive || (g.waiting && shares == 0) {
        g = GATE_TURN.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    g.shared += 1;
    HELD.set((shares + 1, exclusive));
    Share(true)
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.0 {
            let (shares, exclusive) = HELD.get();
            HELD.set((shares.saturating_sub(1), exclusive));
            gate().shared -= 1;
            GATE_TURN.notify_all();
        }
    }
}
