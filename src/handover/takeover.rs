//! The new image's side of the handover: reading the state it was started
//! with, owning its fds, and, when it cannot serve, giving everything back
//! to the old image ([`Handback`], the rollback). All or nothing, so that a
//! failure part-way through loses no fd.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use super::check::check_state;
use super::exec::{exec, set_cloexec, write_memfd};
use super::state::{Inherited, State};
use super::{FAIL_TAKEOVER_ENV, ROLLBACK_ENV, STATE_ENV};
use crate::types::wire::Reply;

/// A handover taken: the state, its fds, what to give back if the new
/// image cannot serve, and (after a rollback) why the upgrade failed.
pub struct TakeOver {
    pub state: State,
    pub inherited: Inherited,
    pub handback: Handback,
    pub rollback: Option<String>,
}

/// A handover that could not be taken: what to give back, and why.
pub struct Refused {
    pub handback: Option<Handback>,
    pub why: String,
}

/// What a new image keeps until it serves, to give everything back to the
/// old one: the state as it came, and a copy of every fd it names (the
/// originals may be closed by a failure part-way through the adoption).
/// Dropped (closing the copies) once the new image serves.
pub struct Handback {
    text: String,
    /// Original fd number -> its copy. Empty: the originals are untouched.
    copies: Vec<(RawFd, OwnedFd)>,
    /// This image is itself a rollback: it gives up instead of going back
    /// and forth.
    is_rollback: bool,
}

impl Handback {
    /// Copies every fd of `state` (close-on-exec) before any is taken.
    fn copy_fds(&mut self, state: &State) -> Result<()> {
        use nix::fcntl::{fcntl, FcntlArg};
        let mut fds = state.fds();
        fds.retain(|fd| *fd != state.exe_fd);
        for fd in fds {
            if fd < 0 {
                anyhow::bail!("the state names fd {fd}");
            }
            // SAFETY: borrowed for this one fcntl; an fd that is not open
            // makes it fail with EBADF, reported as such.
            let copy = fcntl(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, FcntlArg::F_DUPFD_CLOEXEC(3))
                .with_context(|| format!("handed-over fd {fd}"))?;
            // SAFETY: F_DUPFD_CLOEXEC just returned this new fd, owned by nobody else.
            self.copies.push((fd, unsafe { OwnedFd::from_raw_fd(copy) }));
        }
        Ok(())
    }

    /// Re-executes the previous image's executable with the same state,
    /// the fds renumbered to the copies. Returns only on failure.
    pub fn rollback(&self, why: &str) -> anyhow::Error {
        if self.is_rollback {
            // Not back and forth: a rolled-back image that fails gives up.
            return anyhow!("cannot take over from the previous image: {why}");
        }
        let mut state: State = match serde_json::from_str(&self.text) {
            Ok(s) => s,
            Err(e) => return anyhow!("cannot take over from the previous image: {why} (and its state: {e})"),
        };
        let copies: std::collections::HashMap<RawFd, RawFd> =
            self.copies.iter().map(|(fd, copy)| (*fd, std::os::fd::AsRawFd::as_raw_fd(copy))).collect();
        state.renumber(|fd| copies.get(&fd).copied().unwrap_or(fd));
        // Closed by this image already; nothing for the old one to close.
        state.new_exe_fd = None;
        let memfd = match serde_json::to_vec(&state).map_err(anyhow::Error::from).and_then(|b| write_memfd(&b)) {
            Ok(m) => m,
            Err(e) => return e.context(format!("rolling back after: {why}")),
        };
        let mut pass = state.fds();
        pass.retain(|fd| *fd != state.exe_fd);
        pass.push(std::os::fd::AsRawFd::as_raw_fd(&memfd));
        for fd in &pass {
            let _ = set_cloexec(*fd, false);
        }
        let memfd_raw = std::os::fd::AsRawFd::as_raw_fd(&memfd);
        let err = exec((state.exe_fd, &state.exe), &state.argv, memfd_raw, Some(why), state.holds_signals);
        for fd in &pass {
            let _ = set_cloexec(*fd, true);
        }
        err.context(format!("rolling back after: {why}"))
    }
}

/// Reads the handed-over state (started with [`STATE_ENV`]), owning the
/// memfd; None when this is no handover.
fn incoming() -> Option<Result<(String, Option<String>), String>> {
    let fd: RawFd = std::env::var(STATE_ENV).ok()?.parse().ok()?;
    let why_rollback = std::env::var(ROLLBACK_ENV).ok();
    // Single-threaded still: the environment may be edited.
    std::env::remove_var(STATE_ENV);
    std::env::remove_var(ROLLBACK_ENV);
    let mut text = String::new();
    // SAFETY: STATE_ENV names the memfd the previous image opened for this
    // one and handed over; nothing else in this process owns that fd.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    Some(match f.read_to_string(&mut text) {
        Ok(_) => Ok((text, why_rollback)),
        Err(e) => Err(format!("reading the handed-over state: {e}")),
    })
}

/// What `main` does when started with [`STATE_ENV`]: read the state and
/// own its fds. On failure the caller rolls back with [`rollback`].
pub fn take_over() -> Option<Result<TakeOver, Refused>> {
    let (text, why_rollback) = match incoming()? {
        Ok(x) => x,
        Err(why) => return Some(Err(Refused { handback: None, why })),
    };
    let mut handback = Handback { text, copies: Vec::new(), is_rollback: why_rollback.is_some() };
    let state: State = match check_state(&handback.text) {
        Ok(s) => s,
        Err(why) => return Some(Err(Refused { handback: Some(handback), why })),
    };
    // Fault injection for the rollback test: a new image that refuses.
    if std::env::var_os(FAIL_TAKEOVER_ENV).is_some_and(|v| v != "adopt") && why_rollback.is_none() {
        let why = format!("{FAIL_TAKEOVER_ENV} is set");
        return Some(Err(Refused { handback: Some(handback), why }));
    }
    if let Err(e) = handback.copy_fds(&state) {
        // Nothing taken: the originals go back as they are.
        handback.copies.clear();
        return Some(Err(Refused { handback: Some(handback), why: format!("{e:#}") }));
    }
    // SAFETY: the state was read from the memfd the previous image wrote,
    // so its fds are the ones it handed over, owned by nobody here yet.
    match unsafe { state.take_fds() } {
        Ok(inherited) => Some(Ok(TakeOver { state, inherited, handback, rollback: why_rollback })),
        Err(e) => Some(Err(Refused { handback: Some(handback), why: format!("{e:#}") })),
    }
}

/// A new image that fails before it could even read its command line
/// (a release that rejects an option the primary runs with): if this is a
/// handover, give everything back to the previous image. None when it is
/// not a handover; else the error of a rollback that could not be done.
pub fn give_back_early(why: &str) -> Option<anyhow::Error> {
    let handback = match incoming()? {
        Ok((text, why_rollback)) => Handback { text, copies: Vec::new(), is_rollback: why_rollback.is_some() },
        Err(e) => return Some(anyhow!("{why}; and {e}")),
    };
    Some(handback.rollback(why))
}

/// The new image could not take over: give everything back to the old one.
pub fn rollback(r: Refused) -> anyhow::Error {
    match r.handback {
        Some(h) => h.rollback(&r.why),
        None => anyhow!("cannot take over from the previous image: {}", r.why),
    }
}

/// Answers the `hotswap upgrade` client on the connection handed over.
pub fn answer(conn: OwnedFd, reply: &Reply) {
    let mut stream = std::os::unix::net::UnixStream::from(conn);
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if let Ok(mut line) = serde_json::to_string(reply) {
        line.push('\n');
        let _ = stream.write_all(line.as_bytes());
    }
}
