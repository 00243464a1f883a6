//! Taking over from the previous image in a self-upgrade: the state and
//! fds it handed over become a [`Supervisor`] that serves on, and anything
//! that fails before it serves hands everything back ([`Handback`]), so a
//! bad new binary never costs a worker or a socket.

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use super::{Origin, Supervisor, PRELOADS};
use crate::handover::{Handback, Inherited, State};
use crate::io::control;
use crate::options::Options;
use crate::sys::guardian::Guardian;
use crate::sys::runtime_dir::{self, RuntimeDir};
use crate::sys::sd_notify::Systemd;
use crate::sys::slots::SlotSockets;
use crate::types::wire::Reply;

/// Runs a primary that the previous image handed over (self-upgrade). Any
/// failure before it serves gives everything back to the previous image
/// ([`Handback::rollback`], an exec: nothing here is dropped, so no socket
/// file is removed); it returns only if that too fails.
pub async fn resume(
    flags: Options,
    origin: Origin,
    state: State,
    mut fds: Inherited,
    rollback: Option<String>,
    handback: Handback,
) -> Result<(i32, String)> {
    let give_back = |e: anyhow::Error| -> anyhow::Error { handback.rollback(&format!("{e:#}")) };
    let (tx, mut rx) = mpsc::channel(1024);
    if let Err(e) = crate::io::signals::start(tx.clone()) {
        return Err(give_back(e));
    }
    // (Kept across execve; set again for an image started by an older one.)
    if let Err(e) = crate::sys::reap::become_subreaper().context("becoming a child subreaper") {
        return Err(give_back(e));
    }
    let systemd = match Systemd::from_env() {
        Ok(s) => s,
        Err(e) => return Err(give_back(e)),
    };
    let control = match control::Server::adopt(fds.control, &state.settings.control_path, tx.clone()) {
        Ok(c) => c,
        Err(e) => return Err(give_back(e)),
    };
    let metrics =
        match fds.metrics.take().map(|fd| crate::io::metrics_endpoint::Server::adopt(fd, tx.clone())).transpose() {
            Ok(m) => m,
            Err(e) => return Err(give_back(e)),
        };
    let guardian = Guardian::adopt(
        state.guardian_pid,
        fds.guardian,
        state.guardian_groups.clone(),
        state.guardian_backlog.clone(),
    );
    // The previous image's directory: workers' NOTIFY_SOCKETs point into it.
    let runtime = match &state.runtime_dir {
        Some(dir) => match RuntimeDir::adopt(dir, fds.runtime_lock.take(), PRELOADS) {
            Ok(d) => Ok(d),
            // Gone (a temp cleaner) or tampered with: a new one serves the
            // next workers; running ones keep what they have.
            Err(e) => {
                tracing::warn!("{e:#}; using a new runtime directory");
                RuntimeDir::create(&runtime_dir::base(), PRELOADS)
            }
        },
        // From an image that used TMPDIR/hotswap-PID: keep it when it is ours.
        None => {
            let legacy = std::env::temp_dir().join(format!("hotswap-{}", std::process::id()));
            match RuntimeDir::adopt(&legacy, None, PRELOADS) {
                Ok(d) => Ok(d),
                Err(_) => RuntimeDir::create(&runtime_dir::base(), PRELOADS),
            }
        }
    };
    let runtime = match runtime {
        Ok(d) => d,
        Err(e) => return Err(give_back(e)),
    };
    let listeners = std::mem::take(&mut fds.listeners);
    let mut sup = match Supervisor::new(
        flags,
        origin,
        state.settings.clone(),
        listeners,
        systemd,
        control,
        guardian,
        tx,
        runtime,
    ) {
        Ok(s) => s,
        Err(e) => return Err(give_back(e)),
    };
    sup.metrics.server = metrics;
    let slot_sockets = std::mem::take(&mut fds.slot_sockets);
    match SlotSockets::adopt(state.settings.balance, &sup.sockets.listeners, slot_sockets, state.settings.backlog) {
        // The program belongs to the groups and stays attached; the first
        // event rebuilds it from this image's live set anyway.
        Ok(s) => sup.sockets.slot_sockets = s,
        Err(e) => return Err(give_back(e.context("taking over the slot sockets"))),
    }
    let node_workers: Vec<_> =
        state.workers.iter().filter(|w| w.node.is_some()).map(|w| (w.id, String::new())).collect();
    sup.sockets.on_demand.sockets = std::mem::take(&mut fds.on_demand)
        .into_iter()
        .map(|s| super::node::Bound {
            target: s.target,
            index: s.index,
            users: s.users.unwrap_or_else(|| node_workers.clone()),
            listener: s.listener,
        })
        .collect();
    sup.io.subscribers.adopt(std::mem::take(&mut fds.subscribers), &sup.io.events.clone());
    let mut adopted = sup.adopt(&state, std::mem::take(&mut fds.workers), rollback.is_none());
    // Fault injection for the rollback test: a new image that fails after
    // adopting the workers, the latest point before it serves.
    if adopted.is_ok()
        && rollback.is_none()
        && std::env::var_os(crate::handover::FAIL_TAKEOVER_ENV).is_some_and(|v| v == "adopt")
    {
        adopted = Err(anyhow::anyhow!("{}=adopt is set", crate::handover::FAIL_TAKEOVER_ENV));
    }
    if let Err(e) = adopted {
        return Err(give_back(e.context("adopting the workers")));
    }
    // Serving: this image is now in charge of the socket files, and the
    // copies kept for a rollback go.
    drop(handback);
    sup.io.control.own_path();
    #[cfg(target_os = "linux")]
    sup.rescue_resume();
    for l in sup.sockets.listeners.iter_mut().chain(sup.sockets.on_demand.sockets.iter_mut().map(|b| &mut b.listener)) {
        if let Some((_, path)) = fds.owned_paths.iter().find(|(fd, _)| *fd == l.raw_fd()) {
            l.owned_path = Some(path.clone());
        }
    }
    sup.given.runtime.own();
    if rollback.is_none() {
        // The guardian adopted from the previous image runs the previous
        // binary, which a package upgrade has deleted (and whose pages it
        // keeps): this image starts its own, told every group, and the old
        // one goes.
        match sup.io.guardian.restart() {
            Ok(()) => tracing::debug!("guardian process {} started from this image", sup.io.guardian.pid()),
            Err(e) => tracing::warn!("the previous image's guardian stays: starting one from this image: {e:#}"),
        }
    }
    // Logged only now that this image serves (a failure before this point
    // hands back: nothing may say it upgraded), and before the client hears
    // it, so the log already says so.
    let version = env!("CARGO_PKG_VERSION");
    match &rollback {
        None => tracing::info!(
            "upgraded from hotswap {} to {version}: pid {} kept, {} workers adopted",
            state.from_version,
            std::process::id(),
            sup.workers.len()
        ),
        Some(why) => tracing::error!(
            "upgrade failed and was rolled back: {why}; still running hotswap {version}: pid {} kept, {} workers taken back",
            std::process::id(),
            sup.workers.len()
        ),
    }
    match &rollback {
        None => sup.io.subscribers.say(
            "upgrade-finished",
            format!(
                "upgraded hotswap {} to {version}: pid {} and {} workers kept",
                state.from_version,
                std::process::id(),
                sup.workers.len()
            ),
        ),
        Some(why) => {
            sup.io.subscribers.say("upgrade-failed", format!("{why}; rolled back: still running hotswap {version}"))
        }
    }
    if let Some(conn) = fds.reply.take() {
        let reply = match &rollback {
            None => Reply::Done {
                message: format!(
                    "upgraded hotswap {} to {version}: pid {} and {} workers kept",
                    state.from_version,
                    std::process::id(),
                    sup.workers.len()
                ),
            },
            Some(why) => Reply::Error { error: format!("upgrade failed: {why}; still running hotswap {version}") },
        };
        crate::handover::answer(conn, &reply);
    }
    let result = sup.serve_on(&mut rx).await;
    sup.end_orphans();
    sup.io.guardian.dismiss();
    result
}
