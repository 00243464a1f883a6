//! `--build` before the first generation: on a fresh checkout there is
//! nothing to run until the build has run, so the event loop waits for it
//! with a reduced set of answers (status and events served, stop honoured,
//! everything else refused with the reason).

use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;

use super::{let_replies_out, Supervisor, EXIT_DRAIN};
use crate::io::build::Build;
use crate::types::wire::{Reply, Request};
use crate::types::Event;

impl Supervisor {
    /// `--build` before the first generation: on a fresh checkout there is
    /// nothing to run yet. A build that fails starts nothing and ends the
    /// primary with the reason; a stop during it ends the primary at once.
    /// Status and events clients are served meanwhile; other requests are
    /// refused.
    pub(super) async fn first_build(&mut self, rx: &mut mpsc::Receiver<Event>) -> Result<Option<(i32, String)>> {
        use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
        let Some(cmd) = self.settings.build.clone() else { return Ok(None) };
        tracing::info!("building before the first start: {cmd}");
        let build = Build::start(&cmd, &self.output)?;
        self.guardian.protect(build.pid);
        let stopped = loop {
            let Some(event) = rx.recv().await else { break Some("the event channel closed".to_string()) };
            match event {
                Event::Signal(SIGCHLD) => {
                    if let Some((_, how)) = crate::sys::reap::exited(&[build.pid]).pop() {
                        let _ = nix::sys::signal::killpg(build.pid, nix::sys::signal::Signal::SIGKILL);
                        self.guardian.release(build.pid);
                        let took = format!("{:.1} s", build.started.elapsed().as_secs_f64());
                        if how == crate::types::Exit::Code(0) {
                            tracing::info!("build finished in {took}");
                            return Ok(None);
                        }
                        // Let the output forwarders pass on the build's last
                        // lines (the compiler's error) before the exit.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        anyhow::bail!("the first build `{cmd}` {how} after {took}; no worker was started");
                    }
                    // (The guardian's exit waits for the event loop.)
                    crate::sys::reap::orphans(&[build.pid, self.guardian.pid()], &self.foreign);
                }
                Event::Signal(sig @ (SIGTERM | SIGINT)) => {
                    break Some(format!("{} during the first build", if sig == SIGTERM { "SIGTERM" } else { "SIGINT" }))
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
        self.subscribers.close(&message, EXIT_DRAIN).await;
        let_replies_out().await;
        Ok(Some((0, message)))
    }
}
