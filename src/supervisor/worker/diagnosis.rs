//! Why a worker is not ready, as far as the primary can tell, and what
//! would help: for the log while it waits, and for the message of a
//! worker given up on.

use super::{Watch, Worker};
use crate::options::ReadyMode;
use crate::supervisor::core::life::Health;

/// A worker that runs and serves nothing, in words.
const SERVES_NOTHING: &str = "it serves nothing: it never listened on anything, neither on the sockets it inherits \
                              nor on one of its own";

impl Worker {
    /// Why it is not ready yet, as far as the primary can tell, and what
    /// would help: for the log while it waits and for the failure message.
    pub fn diagnosis(&self) -> String {
        self.diagnose(false)
    }

    /// [`Worker::diagnosis`] of a worker that exited before it was ready:
    /// what it did not do matters less than why it ended, which its own
    /// output says (a syntax error, a missing module or setting).
    pub fn exit_diagnosis(&self) -> String {
        self.diagnose(true)
    }

    fn diagnose(&self, exited: bool) -> String {
        // Asked of a starting worker (or one that exited while starting).
        let unwatched = Watch::default();
        let (accept, notified, health) = match self.life.starting() {
            Some(s) => (&s.accept, s.notified, s.health),
            None => (&unwatched, false, Health::Unchecked),
        };
        let accepts = || accept.describe();
        if let (Health::Checking(via), Some(path)) = (health, &self.settings.health_check) {
            return format!("it said it was ready ({via}) but has not passed its health check GET {path} yet");
        }
        match (&self.node, self.settings.ready) {
            (_, ReadyMode::Accepting) if accept.serves_nothing() => format!(
                "{}; {SERVES_NOTHING} (under --ready accepting, a worker is ready once it is seen accepting on the \
                 sockets it inherits, LISTEN_FDS from fd 3)",
                accepts()
            ),
            (_, ReadyMode::Accepting) => format!(
                "{}; if it accepts through io_uring or runs as another user, use --ready ipc, notify or delay:DUR",
                accepts()
            ),
            (Some(n), _) if n.awaiting_own => {
                "its servers listen, but it has not said 'ready' (process.send('ready')) \
                or {\"type\":\"listening\"} itself: earlier workers of this command said it (PM2's wait_ready), or \
                --ready ipc asks for it, so Node's cluster `listening` does not count"
                    .to_string()
            }
            (Some(n), _) if n.served == 0 && exited => "it is a Node.js cluster worker that exited before it called \
                server.listen(): its own output, above, says why (a syntax error, a missing module, a setting it \
                needs such as an environment variable)"
                .to_string(),
            (Some(n), _) if n.served == 0 => "it is a Node.js cluster worker that never called server.listen(): it \
                serves nothing (hotswap takes a Node.js worker as ready once a server of it listens, which Node's \
                cluster reports; an app that waits for something first, a database or a setting, or whose server \
                never starts, looks like this: its own output says which)"
                .to_string(),
            (Some(_), _) => "its server got its socket but has not reported listening yet".to_string(),
            (None, ReadyMode::Notify) => "it has not sent READY=1 on its NOTIFY_SOCKET (is it a systemd Type=notify \
                app? otherwise use --ready accepting, ipc, delay:DUR or none)"
                .to_string(),
            (None, ReadyMode::Auto) if notified && !self.spoke && accept.said_ready() => format!(
                "{} (under --ready auto, READY=1 counts once a process of the worker also accepts: a pre-fork \
                 master such as gunicorn's says READY=1 before its workers exist; if it accepts through io_uring, \
                 use --ready notify)",
                accepts()
            ),
            (None, ReadyMode::Auto) if notified && !self.spoke => {
                "it sent on its NOTIFY_SOCKET but never READY=1 (under --ready auto, a worker that speaks \
                 sd_notify is ready by READY=1 and accepting, not by accepting alone)"
                    .to_string()
            }
            (None, ReadyMode::Auto) if !self.spoke && accept.serves_nothing() => format!(
                "it said nothing on its IPC channel, sent nothing on its NOTIFY_SOCKET, and {}; {SERVES_NOTHING} \
                 (under --ready auto, a worker is ready once it is seen accepting on the sockets it inherits, \
                 LISTEN_FDS from fd 3, or once it says so: {{\"type\":\"listening\"}} on its IPC channel, READY=1 \
                 on its NOTIFY_SOCKET)",
                accepts()
            ),
            (None, ReadyMode::Auto) if !self.spoke => {
                format!("it said nothing on its IPC channel, sent nothing on its NOTIFY_SOCKET, and {}", accepts())
            }
            // It would have been ready by the clock alone: what it said
            // does not matter, why it ended does.
            (None, ReadyMode::Delay(_)) => format!(
                "under --ready {} it is ready once that time has passed, and it ended before: its own output above \
                 says why (a server that binds a --listen address itself fails with EADDRINUSE where bind \
                 interception is off or refused: docs/own-bind.md)",
                self.settings.ready
            ),
            (None, _) if !self.spoke => "it said nothing on its IPC channel (the fd in HOTSWAP_IPC_FD): a worker says \
                 {\"type\":\"listening\"} there when it serves; for an app that cannot, use --ready accepting \
                 (any server), --ready notify (systemd-style apps), --ready delay:DUR or --ready none"
                .to_string(),
            (None, _) => "it spoke on its IPC channel but never sent {\"type\":\"listening\"} or \"ready\"".to_string(),
        }
    }

    /// [`Worker::diagnosis`] and its last lines of output, for a worker
    /// given up on: what it wrote says more than what it did not do.
    pub fn diagnosis_quoting(&self) -> String {
        format!("{}{}", self.diagnosis(), self.held.last.quote())
    }
}
