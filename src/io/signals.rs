//! Unix signals, turned into supervisor events.
//!
//! SIGHUP asks for a reload (systemd's `ExecReload=kill -HUP $MAINPID`),
//! SIGTERM and SIGINT for a graceful stop (a second one forces), SIGCHLD
//! tells the supervisor a child changed state so it reaps, SIGUSR2 asks for
//! a self-upgrade. The handlers are
//! installed before the first worker starts, so no child exit and no early
//! reload request is missed.

use anyhow::{Context, Result};
use futures_util::StreamExt;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;

use crate::types::Event;

pub fn start(events: mpsc::Sender<Event>) -> Result<()> {
    let mut signals =
        Signals::new([SIGHUP, SIGTERM, SIGINT, SIGCHLD, SIGUSR2]).context("installing signal handlers")?;
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            if events.send(Event::Signal(sig)).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}
