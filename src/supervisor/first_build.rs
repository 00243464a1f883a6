//! `--build` before the first generation: on a fresh checkout there is
//! nothing to run until the build has run, so the event loop waits for it
//! with a reduced set of answers (status and events served, stop honoured,
//! a reload builds again, an upgrade is refused with the reason).

use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;

use super::{let_replies_out, Supervisor, EXIT_DRAIN};
use crate::io::build::Build;
use crate::types::wire::{Reply, ReplyTx, Request};
use crate::types::Event;

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
    pub(super) async fn first_build(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<Option<(i32, String)>> {
        use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};
        let Some(cmd) = self.settings.build.clone() else { return Ok(None) };
        tracing::info!("building before the first start: {cmd}");
        let mut build = Build::start(&cmd, &self.output)?;
        self.guardian.protect(build.pid);
        // A reload was asked during the running build; who waits for it.
        let mut again = false;
        let mut waiters: Vec<ReplyTx> = Vec::new();
        let stopped = loop {
            let Some(event) = rx.recv().await else { break Some("the event channel closed".to_string()) };
            match event {
                Event::Signal(SIGCHLD) => {
                    if let Some((_, how)) = crate::sys::reap::exited(&[build.pid]).pop() {
                        let _ = nix::sys::signal::killpg(build.pid, nix::sys::signal::Signal::SIGKILL);
                        self.guardian.release(build.pid);
                        let took = format!("{:.1} s", build.started.elapsed().as_secs_f64());
                        let outcome = if how == crate::types::Exit::Code(0) {
                            format!("finished in {took}")
                        } else {
                            format!("{how} after {took}")
                        };
                        if again {
                            again = false;
                            tracing::info!(
                                "the first build {outcome}; building again: a reload was asked during it: {cmd}"
                            );
                            for w in &waiters {
                                let _ = w.send(Reply::Progress { message: format!("building again: {cmd}") });
                            }
                            build = Build::start(&cmd, &self.output)?;
                            self.guardian.protect(build.pid);
                            continue;
                        }
                        if how == crate::types::Exit::Code(0) {
                            tracing::info!("build {outcome}");
                            for w in waiters.drain(..) {
                                let _ = w.send(Reply::Done {
                                    message: format!("the first build {outcome}; the first generation starts from it"),
                                });
                            }
                            return Ok(None);
                        }
                        let why = format!("the first build `{cmd}` {outcome}; no worker was started");
                        for w in waiters.drain(..) {
                            let _ = w.send(Reply::Error { error: why.clone() });
                        }
                        // Let the output forwarders pass on the build's last
                        // lines (the compiler's error) before the exit.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        anyhow::bail!("{why}");
                    }
                    // (The guardian's exit waits for the event loop.)
                    crate::sys::reap::orphans(&[build.pid, self.guardian.pid()], &self.foreign);
                }
                Event::Signal(sig @ (SIGTERM | SIGINT)) => {
                    break Some(format!("{} during the first build", if sig == SIGTERM { "SIGTERM" } else { "SIGINT" }))
                }
                Event::Signal(SIGHUP) => {
                    tracing::info!("SIGHUP during the first build: building again when it ends");
                    again = true;
                }
                Event::Signal(SIGUSR2) => tracing::warn!("SIGUSR2 ignored: no self-upgrade during the first build"),
                Event::Control { request: Request::Reload { no_build: false, .. }, reply, .. } => {
                    tracing::info!("reload requested during the first build: building again when it ends");
                    let _ = reply.send(Reply::Progress {
                        message: "the first build is running; building again when it ends".into(),
                    });
                    again = true;
                    waiters.push(reply);
                }
                Event::Control { request: Request::Reload { no_build: true, .. }, reply, .. } => {
                    let _ = reply.send(Reply::Done {
                        message: "no worker has started yet: the first generation starts when the running build ends"
                            .into(),
                    });
                }
                Event::Control { request: Request::Stop, reply, .. } => {
                    let _ = reply.send(Reply::Done { message: "stopped during the first build".into() });
                    break Some("stop requested during the first build".into());
                }
                Event::Control { request: Request::Status | Request::Events, .. } => self.handle(event),
                Event::Control { reply, .. } => {
                    let _ = reply.send(Reply::Error {
                        error: "refused: the first build is running; no worker has started yet".into(),
                    });
                }
                _ => {}
            }
        };
        build.kill();
        self.guardian.release(build.pid);
        let why = stopped.unwrap_or_default();
        tracing::info!("{why}: build stopped, no worker was started");
        let message = format!("stopped ({why})");
        for w in waiters.drain(..) {
            let _ = w.send(Reply::Error { error: format!("the primary stopped during the first build ({why})") });
        }
        self.subscribers.close(&message, EXIT_DRAIN).await;
        let_replies_out().await;
        Ok(Some((0, message)))
    }
}
