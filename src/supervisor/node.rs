//! The supervisor's side of Node.js's cluster protocol ([`crate::node`]):
//! which socket answers a worker's `listen()`, when a cluster worker is
//! ready, and the staged stop (Node's `disconnect`, then the stop signal).
//!
//! A listen is answered with the `--listen` socket it matches (same port,
//! or same Unix path, or the inherited fd it names). A listen that no
//! `--listen` entry gives is bound on demand, as Node's own primary does,
//! so `hotswap run -w 2 -- node app.js` needs no `--listen` at all. Like
//! Node's primary, sockets for `listen(0)` are told apart by the listen's
//! index (a worker's second `listen(0)` gets a port of its own, and the
//! same one as every other worker's second). A socket is kept while any
//! worker holds it and released once none does and the pool is settled
//! (every slot ready, no reload running: a crash restart or a reload gets
//! the same socket back). At most [`MAX_PER_WORKER`] on-demand listens per
//! worker and [`MAX_ON_DEMAND`] sockets in all; more are refused with
//! `EMFILE`, as is any while file descriptors run low.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use serde_json::Value;

use super::Supervisor;
use crate::node::cluster::{self, FromNode, Query, Target};
use crate::sys::listeners::{ListenAddr, ListenSpec, Listener};
use crate::types::{ReadyVia, Timer, WorkerId, WorkerState};

/// How long a stopping Node worker may live on after it closed its channel
/// (all its servers drained) before it gets the stop signal: enough to exit
/// by itself, short for an app whose timers keep it alive.
pub const AFTER_DISCONNECT: Duration = Duration::from_millis(200);

/// How long after `online` a cluster worker of an app with its own
/// primary that asked for no socket is taken for ready: the guides'
/// apps whose primary serves (`@socket.io/sticky`, a ZeroMQ ROUTER) set
/// their workers up in the script's first synchronous run, which ends
/// before the worker reads its first message.
pub const NO_LISTEN_READY: Duration = Duration::from_millis(500);

/// On-demand listens one worker may hold at once.
pub const MAX_PER_WORKER: usize = 32;
/// Sockets bound on demand at once, for all workers.
pub const MAX_ON_DEMAND: usize = 128;

/// A socket bound for Node workers' listens that no `--listen` gave.
#[derive(Debug)]
pub struct Bound {
    pub target: Target,
    /// For `listen(0)`: which of a worker's listens on port 0 it serves
    /// ([`index_of`]).
    pub index: Option<u64>,
    pub listener: Listener,
    /// The workers it was given to, each with the key of its listen (a
    /// `close` names it).
    pub users: Vec<(WorkerId, String)>,
}

/// Sockets bound for Node workers' listens that no `--listen` gave.
#[derive(Debug, Default)]
pub struct OnDemand {
    pub sockets: Vec<Bound>,
    /// TLS servers' data (session-ticket keys) per socket: the first
    /// worker's, echoed to every later one, as Node's primary does.
    data: Vec<(String, Value)>,
}

/// Which on-demand socket a listen gets besides its target: for port 0
/// the listen's index (Node keys its handles by address, port, type, fd
/// and index, so two `listen(0)` calls get two sockets); for anything else
/// none, as one address can be bound once (a worker that closes its
/// server and listens again, with a new index, gets the same socket).
pub fn index_of(target: &Target, index: u64) -> Option<u64> {
    matches!(target, Target::Tcp { port: 0, .. }).then_some(index)
}

impl OnDemand {
    fn find(&self, target: &Target, index: Option<u64>) -> Option<usize> {
        self.sockets.iter().position(|b| b.target == *target && b.index == index)
    }

    /// On-demand listens `id` holds.
    fn held_by(&self, id: WorkerId) -> usize {
        self.sockets.iter().map(|b| b.users.iter().filter(|(w, _)| *w == id).count()).sum()
    }

    /// Whether `id` may get one more socket: `Err` says why not.
    fn admit(&self, id: WorkerId, new: bool) -> Result<(), String> {
        if self.held_by(id) >= MAX_PER_WORKER {
            return Err(format!("it already holds {MAX_PER_WORKER} sockets bound on demand (the most one worker may)"));
        }
        if new && self.sockets.len() >= MAX_ON_DEMAND {
            return Err(format!("{MAX_ON_DEMAND} sockets are bound on demand already (the most hotswap keeps)"));
        }
        Ok(())
    }

    /// A worker closed the server of `key`, or (`None`) is gone.
    pub fn forget(&mut self, id: WorkerId, key: Option<&str>) {
        for b in &mut self.sockets {
            b.users.retain(|(w, k)| !(*w == id && key.is_none_or(|key| key == k)));
        }
    }

    /// The last listen of `id` on `key` was not served after all.
    fn forget_last(&mut self, id: WorkerId, key: &str) {
        if let Some(b) = self.sockets.iter_mut().find(|b| b.users.iter().any(|(w, k)| *w == id && k == key)) {
            if let Some(i) = b.users.iter().rposition(|(w, k)| *w == id && k == key) {
                b.users.remove(i);
            }
        }
    }

    /// Closes the sockets no worker holds; returns their addresses.
    pub fn release_unused(&mut self) -> Vec<String> {
        let (gone, kept): (Vec<Bound>, Vec<Bound>) =
            std::mem::take(&mut self.sockets).into_iter().partition(|b| b.users.is_empty());
        self.sockets = kept;
        let names: Vec<String> = gone.iter().map(|b| b.listener.addr.to_string()).collect();
        self.data.retain(|(k, _)| !names.contains(k));
        names
    }

    /// Whether some socket has no worker left.
    pub fn has_unused(&self) -> bool {
        self.sockets.iter().any(|b| b.users.is_empty())
    }

    fn data_for(&mut self, socket: &str, offered: &Value) -> Value {
        if let Some((_, d)) = self.data.iter().find(|(k, _)| k == socket) {
            return d.clone();
        }
        if !offered.is_null() {
            self.data.push((socket.to_string(), offered.clone()));
        }
        offered.clone()
    }
}

impl Supervisor {
    pub(super) fn on_cluster(&mut self, id: WorkerId, msg: Value) {
        let Some(w) = self.workers.get(&id) else { return };
        let label = w.label();
        // The IPC reader passes on only cluster messages of cluster workers
        // that parse and that hotswap acts on; it logs the others,
        // rate-limited (see `crate::io::warnings`).
        if w.node().is_none() {
            return;
        }
        match cluster::parse(&msg) {
            Err(why) => tracing::debug!(worker = id, "{label} cluster message refused: {why}"),
            Ok(FromNode::Online) => {
                tracing::debug!(worker = id, "{label} is a Node.js cluster worker");
                self.tell_primary(crate::node::primary::to_primary::online(id));
                if self.app_primary.enabled && w.state() == WorkerState::Starting {
                    self.worker_timer(id, NO_LISTEN_READY, Timer::NoListenReady(id));
                }
            }
            Ok(FromNode::QueryServer(q)) => self.serve_listen(id, q),
            Ok(FromNode::Listening { port, .. }) => {
                let address = serde_json::json!({
                    "address": msg.get("address"), "port": msg.get("port"),
                    "addressType": msg.get("addressType"), "fd": msg.get("fd"),
                });
                self.tell_primary(crate::node::primary::to_primary::listening(id, address));
                let learned = self.looks.announcers.how(&w.settings().command);
                let Some(w) = self.workers.get_mut(&id) else { return };
                let Some(node) = w.node_mut() else { return };
                node.listening += 1;
                let all = node.listening >= node.served;
                tracing::debug!(
                    worker = id,
                    "{label} listening{}",
                    port.map(|p| format!(" on port {p}")).unwrap_or_default()
                );
                if !all {
                    return;
                }
                if super::readiness::cluster_listening_counts(w.settings().ready, learned) {
                    self.mark_ready(id, ReadyVia::Cluster);
                } else if w.state() == WorkerState::Starting {
                    let why = match learned {
                        Some(ReadyVia::Ipc) => "earlier workers of this command said 'ready' themselves (PM2's \
                            wait_ready), so it waits for its own"
                            .to_string(),
                        _ => format!(
                            "--ready {} waits for its own 'ready' or {{\"type\":\"listening\"}}",
                            w.settings().ready
                        ),
                    };
                    tracing::debug!(worker = id, "{label}: every server listens; {why}");
                    w.node_mut().expect("a cluster worker").awaiting_own = true;
                }
            }
            Ok(FromNode::Close { key }) => {
                tracing::debug!(worker = id, "{label} closed a server");
                if let Some(key) = key {
                    self.sockets.on_demand.forget(id, Some(&key));
                }
            }
            Ok(FromNode::Other(act)) => tracing::debug!(worker = id, "{label} cluster message {act:?} ignored"),
        }
    }

    /// Answers a worker's `server.listen()` with a socket, or with an error
    /// the app's server emits.
    fn serve_listen(&mut self, id: WorkerId, q: Query) {
        let found = self.socket_for(id, &q);
        let Some(w) = self.workers.get_mut(&id) else { return };
        let label = w.label();
        let Some(node) = w.node_mut() else { return };
        node.seq += 1;
        let seq = node.seq;
        match found {
            Ok((fd, name)) => {
                node.served += 1;
                let data = self.sockets.on_demand.data_for(&name, &q.data);
                let reply = cluster::handle_reply(&q, &data, seq);
                tracing::debug!(worker = id, "{label} listen on {} gets {name}", q.target);
                if let Some(ch) = self.workers.get(&id).and_then(|w| w.ipc()) {
                    if !ch.send_handle(reply, fd) {
                        let why = format!(
                            "{} sockets already wait for it to acknowledge (it does not read its channel)",
                            crate::io::ipc::MAX_QUEUED_HANDLES
                        );
                        tracing::warn!(worker = id, "{label} cannot listen on {}: {why}", q.target);
                        self.sockets.on_demand.forget_last(id, &q.key);
                        ch.send(cluster::refusal(&q, libc::EMFILE, seq));
                    }
                }
            }
            Err((errno, why)) => {
                tracing::error!(worker = id, "{label} cannot listen on {}: {why}; its server gets the error", q.target);
                if let Some(ch) = self.workers.get(&id).and_then(|w| w.ipc()) {
                    ch.send(cluster::refusal(&q, errno, seq));
                }
            }
        }
    }

    /// A copy of the socket for `target`, and its name; or an errno and why.
    /// Under `--balance slots|sticky` a `--listen` address gets the
    /// worker's slot socket, as its fd 3 is; sockets bound on demand stay
    /// shared.
    pub(super) fn socket_for(&mut self, id: WorkerId, q: &Query) -> Result<(OwnedFd, String), (i32, String)> {
        let target = &q.target;
        let dup_fd = |fd: BorrowedFd<'_>, addr: &ListenAddr| -> Result<(OwnedFd, String), (i32, String)> {
            crate::sys::fd_limit::room(1).map_err(|why| (libc::EMFILE, why))?;
            let fd = fd.try_clone_to_owned().map_err(|e| (e.raw_os_error().unwrap_or(libc::EMFILE), e.to_string()))?;
            nonblocking(&fd).map_err(|e| (e as i32, format!("making {addr} non-blocking: {e}")))?;
            Ok((fd, addr.to_string()))
        };
        let dup = |l: &Listener| dup_fd(l.as_fd(), &l.addr);
        let slot = self.workers.get(&id).map_or(0, |w| w.slot());
        let of_slot = self.sockets.slot_sockets.borrowed(&self.sockets.listeners, slot);
        if let Target::Fd(n) = target {
            return match usize::try_from(n - 3)
                .ok()
                .and_then(|i| Some((of_slot.get(i)?, self.sockets.listeners.get(i)?)))
            {
                Some((fd, l)) => dup_fd(*fd, &l.addr),
                None => Err((
                    libc::EBADF,
                    format!("fd {n} is not one of the {} sockets it was given", self.sockets.listeners.len()),
                )),
            };
        }
        if let Some(i) = self.sockets.listeners.iter().position(|l| matches(target, &l.addr)) {
            return dup_fd(of_slot[i], &self.sockets.listeners[i].addr);
        }
        let index = index_of(target, q.index);
        let existing = self.sockets.on_demand.find(target, index);
        self.sockets.on_demand.admit(id, existing.is_none()).map_err(|why| (libc::EMFILE, why))?;
        if existing.is_none() {
            crate::sys::fd_limit::room(2).map_err(|why| (libc::EMFILE, why))?;
        }
        if let Some(i) = existing {
            let found = dup(&self.sockets.on_demand.sockets[i].listener)?;
            self.sockets.on_demand.sockets[i].users.push((id, q.key.clone()));
            return Ok(found);
        }
        let label = self.workers.get(&id).map(|w| w.label()).unwrap_or_default();
        let listener = bind(target, self.settings.backlog).map_err(|e| {
            let errno = e.downcast_ref::<std::io::Error>().and_then(|io| io.raw_os_error()).unwrap_or(libc::EADDRINUSE);
            (errno, format!("{e:#}"))
        })?;
        // Its first server, on a port the app picked itself, while
        // hotswap's go unserved: most often PORT different, or not read.
        let port_hint = match (target, self.workers.get(&id)) {
            (Target::Tcp { port, .. }, Some(w)) if w.node().is_some_and(|n| n.served == 0) => {
                super::port_hint::hint(w.settings(), &self.sockets.listeners, *port)
            }
            _ => None,
        };
        match port_hint {
            Some(hint) => tracing::warn!(
                worker = id,
                "{label} listens on {target}, which no --listen gives: hotswap bound {} for it, and keeps it while a \
                 worker holds it; clients of the --listen address do not reach it: {hint}",
                listener.addr
            ),
            None => tracing::info!(
                worker = id,
                "{label} listens on {target}, which no --listen gives: hotswap bound {} for it, and keeps it while a \
                 worker holds it",
                listener.addr
            ),
        }
        let found = dup(&listener)?;
        self.sockets.on_demand.sockets.push(Bound {
            target: target.clone(),
            index,
            listener,
            users: vec![(id, q.key.clone())],
        });
        Ok(found)
    }

    /// Closes the on-demand sockets no worker holds, once the pool is
    /// settled: every slot has a ready worker, none starts, no reload
    /// runs. (Until then a replacement may still ask for one: a crash
    /// restart, or a reload's new worker, gets the same socket back.)
    pub(super) fn release_unused_sockets(&mut self) {
        if !self.sockets.on_demand.has_unused()
            || self.reloads.running.is_some()
            || self.stop.is_some()
            || self.workers.values().any(|w| w.state() == WorkerState::Starting)
            || self.ready_count() < self.settings.workers as usize
        {
            return;
        }
        for addr in self.sockets.on_demand.release_unused() {
            tracing::info!("closed {addr}, bound on demand for a Node listen: no worker holds it any more");
        }
    }

    /// A stopping worker closed its channel: a Node worker has drained its
    /// servers; it gets the stop signal if it does not exit by itself.
    pub(super) fn after_disconnect(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get(&id) {
            if w.node().is_some() && w.state() == WorkerState::Stopping {
                self.worker_timer(id, AFTER_DISCONNECT, Timer::StopSignal(id));
            }
        }
    }

    /// [`NO_LISTEN_READY`] after a worker of an app with its own primary
    /// came online: if it asked for no socket (the primary serves and
    /// hands it connections or work), it is ready.
    pub(super) fn on_no_listen_deadline(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else { return };
        let learned = self.looks.announcers.how(&w.settings().command);
        // `seq` counts the answers to its listens, refused ones too.
        let asked = w.node().is_some_and(|n| n.served > 0 || n.seq > 0 || n.awaiting_own);
        let starting = w.state() == WorkerState::Starting;
        if !super::readiness::no_listen_makes_ready(starting, asked, w.settings().ready, learned) {
            return;
        }
        tracing::info!(
            worker = id,
            "{} is online and listens on nothing: its app's primary serves for it; ready",
            w.label()
        );
        self.mark_ready(id, ReadyVia::Cluster);
    }

    pub(super) fn on_stop_signal_deadline(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        if w.state() == WorkerState::Stopping && !w.killed() && w.signal_stop() {
            tracing::info!(worker = id, "{} still running; {} sent", w.label(), w.settings().stop_signal);
        }
    }
}

/// Node accepts on a listening handle until `EAGAIN`, and does not set
/// `O_NONBLOCK` on a handle it receives (Node's own primary creates its
/// sockets non-blocking). On a blocking socket its last `accept` waits for
/// the next connection with the whole event loop stalled: requests it had
/// accepted, and its channel, go unanswered until then (seen as 10 s
/// stalls under load, and a worker deaf to `disconnect` once traffic
/// stops). The flag belongs to the socket, which every worker shares; all
/// workers of one primary run the same command, and a Node worker that
/// listens on fd 3 by itself sets it just the same.
fn nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// Whether a `--listen` socket bound at `addr` serves a listen on `target`.
fn matches(target: &Target, addr: &ListenAddr) -> bool {
    match (target, addr) {
        (Target::Tcp { host, port }, ListenAddr::Tcp(sa)) => {
            *port != 0
                && sa.port() == *port
                && match host {
                    None => true,
                    Some(h) => *h == sa.ip() || h.is_unspecified() || sa.ip().is_unspecified(),
                }
        }
        (Target::Unix(p), ListenAddr::Unix(q)) => p == q,
        _ => false,
    }
}

/// Binds a socket for a listen no `--listen` gave. Like Node: no host means
/// every address (`::`, with IPv4 mapped, or `0.0.0.0` without IPv6).
fn bind(target: &Target, backlog: i32) -> anyhow::Result<Listener> {
    let spec = |addr| ListenSpec { name: None, addr };
    match target {
        Target::Tcp { host: Some(h), port } => {
            Listener::bind(&spec(ListenAddr::Tcp(SocketAddr::new(*h, *port))), backlog)
        }
        Target::Tcp { host: None, port } => {
            let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), *port);
            Listener::bind(&spec(ListenAddr::Tcp(any6)), backlog).or_else(|_| {
                let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port);
                Listener::bind(&spec(ListenAddr::Tcp(any4)), backlog)
            })
        }
        Target::Unix(p) => Listener::bind(&spec(ListenAddr::Unix(p.clone())), backlog),
        Target::Fd(n) => anyhow::bail!("fd {n} is not a socket hotswap gave"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_match_listen_entries_by_port_or_path() {
        let any = |port| Target::Tcp { host: None, port };
        let at = |h: &str, port| Target::Tcp { host: Some(h.parse().unwrap()), port };
        let tcp = |s: &str| ListenAddr::Tcp(s.parse().unwrap());
        assert!(matches(&any(8080), &tcp("127.0.0.1:8080")));
        assert!(matches(&at("127.0.0.1", 8080), &tcp("0.0.0.0:8080")));
        assert!(matches(&at("0.0.0.0", 8080), &tcp("127.0.0.1:8080")));
        assert!(!matches(&at("127.0.0.2", 8080), &tcp("127.0.0.1:8080")));
        assert!(!matches(&any(8081), &tcp("127.0.0.1:8080")));
        assert!(!matches(&any(0), &tcp("127.0.0.1:0")), "listen(0) gets a port of its own");
        assert!(matches(&Target::Unix("/a".into()), &ListenAddr::Unix("/a".into())));
        assert!(!matches(&Target::Unix("/a".into()), &tcp("127.0.0.1:80")));
    }

    #[test]
    fn listens_on_port_0_are_told_apart_by_index() {
        let zero = Target::Tcp { host: None, port: 0 };
        assert_eq!(index_of(&zero, 1), Some(1));
        assert_ne!(index_of(&zero, 0), index_of(&zero, 1));
        assert_eq!(index_of(&Target::Tcp { host: None, port: 3000 }, 1), None, "one address, one socket");
        assert_eq!(index_of(&Target::Unix("/a".into()), 2), None);
    }

    #[test]
    fn tls_data_of_the_first_worker_is_echoed() {
        let mut od = OnDemand::default();
        assert_eq!(od.data_for("s", &Value::Null), Value::Null);
        let first = serde_json::json!({"ticketKeys": "aa"});
        assert_eq!(od.data_for("s", &first), first);
        assert_eq!(od.data_for("s", &serde_json::json!({"ticketKeys": "bb"})), first);
    }
}
