//! A starting worker that listens on a socket of its own instead of the
//! one hotswap gives it (the usual first-run mistake): looked up in the
//! socket tables on the scanner's thread, and said once per socket with
//! what to change (`PORT`, the server's own flag, or the wrapper that
//! forked it).

use std::time::{Duration, Instant};

use super::Supervisor;
use crate::types::WorkerId;

/// How long a starting worker may hold a listening socket of its own (an
/// admin or metrics port opened first) before hotswap says so.
pub(super) const OWN_LISTENER_GRACE: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Says once, for each listening socket of its own that a worker not
    /// yet accepting on hotswap's sockets holds, that it serves the wrong
    /// socket and what to change (the usual first-run mistake).
    pub(super) fn look_for_own_listeners(&mut self, id: WorkerId, others: &[(i32, u64)]) {
        let Some(watch) = self.workers.get_mut(&id).and_then(|w| w.accept_watch_mut()) else { return };
        let new: Vec<(i32, u64)> = others.iter().filter(|o| !watch.looked_up.contains(&o.1)).copied().collect();
        let recently = watch.last_lookup.is_some_and(|t| t.elapsed() < OWN_LISTENER_GRACE);
        if new.is_empty() || recently || watch.looked_up.len() >= 4 * crate::types::accepts::MAX_OTHERS {
            return;
        }
        watch.last_lookup = Some(Instant::now());
        watch.looked_up.extend(new.iter().map(|o| o.1));
        // The next look reads the socket tables, on the scanner's thread
        // (they can be megabytes: every socket of the network namespace).
        watch.own_ask = Some((new[0].0, new.iter().map(|o| o.1).collect()));
    }

    /// What the scanner found in the socket tables: each listening socket
    /// of its own is said once.
    pub(super) fn on_own_listeners(&mut self, id: WorkerId, found: &[(i32, String)]) {
        let ours: Vec<String> =
            self.sockets.listeners.iter().enumerate().map(|(i, l)| format!("{} (fd {})", l.addr, 3 + i)).collect();
        let per_slot = self.sockets.slot_sockets.per_slot();
        let hotswaps: Vec<String> = self.sockets.listeners.iter().map(|l| l.addr.to_string()).collect();
        let addrs: Vec<_> = self.sockets.listeners.iter().map(|l| l.addr.clone()).collect();
        let Some(w) = self.workers.get_mut(&id) else { return };
        let label = w.label();
        let server = w.settings().server();
        for (pid, addr) in found {
            if per_slot && hotswaps.contains(addr) {
                // A SO_REUSEPORT server under --balance without the bind
                // filter: it joined the group hotswap's slot sockets are in.
                tracing::warn!(
                    worker = id,
                    "{label} bound {addr} itself with SO_REUSEPORT (pid {pid}) and joined the group of hotswap's \
                     slot sockets for that address: the connections the kernel gives its slot's socket are never \
                     answered. Bind interception, which would give its bind the slot's socket, is off or was \
                     refused (docs/own-bind.md): allow it, or make the server use the socket it inherits (fd 3), \
                     or drop --balance",
                );
                if let Some(watch) = w.accept_watch_mut() {
                    watch.own.push(format!("{addr} (pid {pid}, in hotswap's SO_REUSEPORT group)"));
                }
                continue;
            }
            if let Some(r) = server.as_ref().filter(|r| r.server.is_control_socket(&r.args, addr)) {
                // Not a port it serves (gunicorn's `gunicornc` socket).
                tracing::debug!(worker = id, "{label}: {addr} is {}'s own control socket", r.server.name());
                continue;
            }
            let fix = match server.as_ref().and_then(|r| r.server.own_listener_fix(&addrs)) {
                Some(fix) => format!("{fix}; see docs/servers.md"),
                None => "for example `uvicorn --fd 3`, `hypercorn --bind fd://3`; gunicorn and systemd-aware \
                         servers do it by themselves; see docs/workers.md and docs/servers.md"
                    .to_string(),
            };
            // Forked by a wrapper, it ignored fd 3 whatever its PORT.
            let wrapper = super::super::port_hint::forked_by_a_wrapper(*pid, w.pid().as_raw());
            let port = match wrapper {
                Some(_) => None,
                None => super::super::port_hint::hint_for_addr(w.settings(), &self.sockets.listeners, addr),
            };
            tracing::warn!(
                worker = id,
                "{label} listens on {addr} itself (pid {pid}) and not on the socket hotswap gives it, {}: clients of \
                 that address do not reach it. Make the server use the socket it inherits (LISTEN_FDS, fd 3) \
                 instead of binding its own: {fix}{}",
                ours.join(" and "),
                match (&wrapper, &port) {
                    (Some(w), _) => format!(". {w}"),
                    (None, Some(p)) => format!(". PORT: {p}"),
                    (None, None) => String::new(),
                },
            );
            if let Some(watch) = w.accept_watch_mut() {
                watch.own.push(format!("{addr} (pid {pid})"));
                if watch.port_hint.is_none() {
                    watch.port_hint = wrapper.or(port);
                }
            }
        }
    }
}
