//! The primary's phases, in the one event loop: building, serving, ending.
//!
//! With `--build`, the primary first builds: on a fresh checkout there is
//! nothing to run until the build has run. The loop then hands every event
//! to [`Supervisor::while_building`] first, which answers with a reduced
//! set (status, events and metrics served, stop honoured, a reload builds
//! again, an upgrade refused with the reason); the first generation starts
//! when the build succeeds. Why in the loop rather than a loop of its own:
//! one place receives events, so none is lost or handled twice between two
//! loops, and the exit is the same whatever phase it comes in.
//!
//! Whatever ends the primary (a stop done, a first generation that cannot
//! start, a stop or failure of the first build) says how with
//! [`Supervisor::end_with`]; the loop ends after that event
//! ([`Supervisor::end`]: events clients and the workers' output written
//! out first).

use std::time::Duration;

use anyhow::Result;

use super::{Supervisor, EXIT_DRAIN};
use crate::io::build::Build;
use crate::types::wire::{Reply, ReplyTx, Request};
use crate::types::Event;

/// What the primary does: build the first generation's code, serve, or
/// end. The loop consults it for each event ([`Supervisor::handle`]) and
/// after it (an ending ends the loop). Changed here alone: building from
/// the start (with `--build`) until the first build succeeds, then
/// serving, and ending once [`Supervisor::end_with`] says how.
pub(super) enum Phase {
    Building(FirstBuild),
    Serving,
    /// The loop ends after this event (the events the upgrade hand-over
    /// drains are still handled).
    Ending(Ending),
}

impl Phase {
    /// Whether the loop ends after this event.
    pub(super) fn ending(&self) -> bool {
        matches!(self, Phase::Ending(_))
    }

    /// How the loop ends, if it does now.
    pub(super) fn take_ending(&mut self) -> Option<Ending> {
        match std::mem::replace(self, Phase::Serving) {
            Phase::Ending(ending) => Some(ending),
            other => {
                *self = other;
                None
            }
        }
    }
}

/// How the primary ends, once the event loop should end.
pub(super) enum Ending {
    /// The process exit code and why. `quote`: the last lines of the
    /// worker whose exit made the primary give up, as quoted in `message`
    /// then: quoted again once its output is read to the end.
    Exit { code: i32, message: String, quote: Option<(String, crate::io::last_lines::LastLines)> },
    /// The primary fails with `error` (a first build that failed, a first
    /// generation that cannot start), after `linger` (for the output
    /// forwarders to pass on the last lines).
    Fail { error: anyhow::Error, linger: std::time::Duration },
}

/// The first build under way.
pub(super) struct FirstBuild {
    cmd: String,
    build: Build,
    /// A reload was asked during the running build: it runs again.
    again: bool,
    /// The `hotswap reload` clients waiting for the last build.
    waiters: Vec<ReplyTx>,
}

/// How long a failed first build's last lines (the compiler's error) have
/// to reach the output before the primary exits.
const LAST_LINES: Duration = Duration::from_millis(300);

impl Supervisor {
    /// `--build` before the first generation: on a fresh checkout there is
    /// nothing to run yet. A build that fails starts nothing and ends the
    /// primary with the reason; a stop during it ends the primary at once.
    /// Status and events clients are served meanwhile.
    ///
    /// A reload asked during it (SIGHUP, `hotswap reload`) is not lost: the
    /// operator wants the newest code, which the running build may have
    /// missed, so the build runs again once the running one ends (whatever
    /// that one's outcome: only the last build counts), as often as reloads
    /// keep coming; several asked during one build make one more build.
    /// `hotswap reload` is answered when the last build ends: `done` when it
    /// succeeded (the first generation then starts from it), else the
    /// failure. `reload --no-build` is answered at once: the first
    /// generation starts after the running build in any case.
    pub(super) fn begin_first_build(&mut self, cmd: &str) -> Result<()> {
        tracing::info!("building before the first start: {cmd}");
        let build = Build::start(cmd, &self.io.output)?;
        self.io.guardian.protect(build.pid);
        self.phase = Phase::Building(FirstBuild { cmd: cmd.to_string(), build, again: false, waiters: Vec::new() });
        Ok(())
    }

    /// An event during the first build: handled here, or given back to be
    /// handled as always (status, events, metrics).
    pub(super) fn while_building(&mut self, event: Event) -> Option<Event> {
        use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};
        let Phase::Building(fb) = &mut self.phase else { return Some(event) };
        match event {
            Event::Signal(SIGCHLD) => {
                let pid = fb.build.pid;
                match crate::sys::reap::exited(&[pid]).pop() {
                    Some((_, how)) => self.first_build_exited(how),
                    // (The guardian's exit waits for the serving loop.)
                    None => {
                        crate::sys::reap::orphans(&[pid, self.io.guardian.pid()], &self.upgrade.foreign);
                    }
                }
            }
            Event::Signal(sig @ (SIGTERM | SIGINT)) => {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                self.stop_first_build(format!("{name} during the first build"));
            }
            Event::Signal(SIGHUP) => {
                tracing::info!("SIGHUP during the first build: building again when it ends");
                fb.again = true;
            }
            Event::Signal(SIGUSR2) => tracing::warn!("SIGUSR2 ignored: no self-upgrade during the first build"),
            Event::Control { request: Request::Reload { no_build: false, .. }, reply, .. } => {
                tracing::info!("reload requested during the first build: building again when it ends");
                let _ = reply.send(Reply::Progress {
                    message: "the first build is running; building again when it ends".into(),
                });
                fb.again = true;
                fb.waiters.push(reply);
            }
            Event::Control { request: Request::Reload { no_build: true, .. }, reply, .. } => {
                let _ = reply.send(Reply::Done {
                    message: "no worker has started yet: the first generation starts when the running build ends"
                        .into(),
                });
            }
            Event::Control { request: Request::Stop, reply, .. } => {
                let _ = reply.send(Reply::Done { message: "stopped during the first build".into() });
                self.stop_first_build("stop requested during the first build".into());
            }
            Event::Control { request: Request::Status | Request::Events, .. }
            | Event::Subscribe { .. }
            | Event::SubscriberLeft
            | Event::Metrics { .. } => return Some(event),
            Event::Control { reply, .. } => {
                let _ = reply.send(Reply::Error {
                    error: "refused: the first build is running; no worker has started yet".into(),
                });
            }
            _ => {}
        }
        None
    }

    /// The first build exited (`how`): build again, serve, or fail.
    fn first_build_exited(&mut self, how: crate::types::Exit) {
        let Phase::Building(fb) = &mut self.phase else { return };
        let _ = nix::sys::signal::killpg(fb.build.pid, nix::sys::signal::Signal::SIGKILL);
        self.io.guardian.release(fb.build.pid);
        let took = format!("{:.1} s", fb.build.started.elapsed().as_secs_f64());
        let outcome = if how == crate::types::Exit::Code(0) {
            format!("finished in {took}")
        } else {
            format!("{how} after {took}")
        };
        let cmd = fb.cmd.clone();
        if std::mem::take(&mut fb.again) {
            tracing::info!("the first build {outcome}; building again: a reload was asked during it: {cmd}");
            for w in &fb.waiters {
                let _ = w.send(Reply::Progress { message: format!("building again: {cmd}") });
            }
            match Build::start(&cmd, &self.io.output) {
                Ok(build) => {
                    self.io.guardian.protect(build.pid);
                    fb.build = build;
                }
                Err(error) => self.end_with(Ending::Fail { error, linger: Duration::ZERO }),
            }
            return;
        }
        let waiters = std::mem::take(&mut fb.waiters);
        if how == crate::types::Exit::Code(0) {
            tracing::info!("build {outcome}");
            for w in waiters {
                let _ = w.send(Reply::Done {
                    message: format!("the first build {outcome}; the first generation starts from it"),
                });
            }
            self.phase = Phase::Serving;
            if let Err(error) = self.start_serving() {
                self.end_with(Ending::Fail { error, linger: Duration::ZERO });
            }
            return;
        }
        let why = format!("the first build `{cmd}` {outcome}; no worker was started");
        for w in waiters {
            let _ = w.send(Reply::Error { error: why.clone() });
        }
        // The output forwarders pass on the build's last lines (the
        // compiler's error) before the exit.
        self.end_with(Ending::Fail { error: anyhow::anyhow!("{why}"), linger: LAST_LINES });
    }

    /// A stop during the first build (`why`): it ends, nothing starts.
    fn stop_first_build(&mut self, why: String) {
        let Phase::Building(fb) = &mut self.phase else { return };
        fb.build.kill();
        self.io.guardian.release(fb.build.pid);
        tracing::info!("{why}: build stopped, no worker was started");
        for w in fb.waiters.drain(..) {
            let _ = w.send(Reply::Error { error: format!("the primary stopped during the first build ({why})") });
        }
        self.end_with(Ending::Exit { code: 0, message: format!("stopped ({why})"), quote: None });
    }

    /// The loop ends after this event, so.
    pub(super) fn end_with(&mut self, ending: Ending) {
        self.phase = Phase::Ending(ending);
    }

    /// The loop ends. Every events client gets every event, then `done`;
    /// the workers' last lines of output are read to the end (main then
    /// waits for them to be written). A first generation that cannot
    /// start: read first, so that the message quotes the worker's last
    /// lines all.
    pub(super) async fn end(&mut self, ending: Ending) -> Result<(i32, String)> {
        let (code, mut message, quote) = match ending {
            Ending::Exit { code, message, quote } => (code, message, quote),
            Ending::Fail { error, linger } => {
                tokio::time::sleep(linger).await;
                self.io.control.replies_written(EXIT_DRAIN).await;
                return Err(error);
            }
        };
        let mut drained = false;
        if let Some((said, last)) = quote {
            drained = self.io.output.drain(EXIT_DRAIN).await;
            let now = last.quote();
            if now != said && message.contains(&said) {
                message = message.replacen(&said, &now, 1);
            }
        }
        self.io.subscribers.close(&message, EXIT_DRAIN).await;
        if !drained && !self.io.output.drain(EXIT_DRAIN).await {
            tracing::debug!("worker output still open {} ms after the last exit", EXIT_DRAIN.as_millis());
        }
        // The control connections write their last replies (`hotswap stop`
        // waits for how the stop went).
        if !self.io.control.replies_written(EXIT_DRAIN).await {
            tracing::debug!("control replies still unwritten {} ms after the exit began", EXIT_DRAIN.as_millis());
        }
        Ok((code, message))
    }
}
