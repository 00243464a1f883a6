//! `--metrics ADDR`: `GET /metrics` in the Prometheus text format.
//! The endpoint only: what is counted, and the snapshot a scrape is
//! rendered from, is `supervisor::metrics`.
//!
//! Like the control socket, each connection is its own task on the
//! primary's one thread: it reads the request, asks the supervisor for a
//! [`Snapshot`] over the event channel (the supervisor answers at once, in
//! the middle of a reload too), renders it here and writes it. A scraper
//! cannot stall the primary: the request must arrive within
//! [`READ_TIMEOUT`] and fit in [`MAX_REQUEST`] bytes, the answer must be
//! taken within [`WRITE_TIMEOUT`], and at most [`MAX_CONNECTIONS`] are
//! open at once, [`MAX_PER_CLIENT`] from one address. Idle connections
//! cannot lock scrapers out ([`Table`]): when the table is full, a new
//! connection takes the place of the oldest one still waiting for its
//! request (of its own address first), so a scraper that sends its request
//! at once is served however many idle connections others hold open. One
//! request per connection.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::types::counters::{Histogram, Snapshot};
use crate::types::{Event, WorkerState};

/// Largest request head accepted, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request (a scraper sends it at
/// once).
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to read the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Connections open at once from one client address.
pub const MAX_PER_CLIENT: usize = 4;

/// The open connections, and which to drop for a new one.
#[derive(Debug, Default)]
pub struct Table {
    next: u64,
    conns: Vec<Conn>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    ip: IpAddr,
    since: Instant,
    /// Still waiting for its request (may be dropped for a newer one).
    waiting: bool,
    evict: Arc<Notify>,
}

/// Whether a new connection is taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Taken as `id`, after dropping the connections listed (oldest idle).
    Take { id: u64, evicted: Vec<u64> },
    /// Every place is taken by a connection being answered.
    Refuse,
}

impl Table {
    /// A connection from `ip` arrived: take it, if need be in the place of
    /// the oldest connection still waiting for its request (of `ip` when it
    /// has [`MAX_PER_CLIENT`] open, else of anyone).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> (Admit, Vec<Arc<Notify>>) {
        let mut evicted = Vec::new();
        let mut notify = Vec::new();
        let mut drop_oldest = |conns: &mut Vec<Conn>, of: Option<IpAddr>| -> bool {
            let oldest = conns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.waiting && of.is_none_or(|ip| c.ip == ip))
                .min_by_key(|(_, c)| c.since)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    let c = conns.remove(i);
                    evicted.push(c.id);
                    notify.push(c.evict);
                    true
                }
                None => false,
            }
        };
        if self.conns.iter().filter(|c| c.ip == ip).count() >= MAX_PER_CLIENT && !drop_oldest(&mut self.conns, Some(ip))
        {
            return (Admit::Refuse, notify);
        }
        if self.conns.len() >= MAX_CONNECTIONS && !drop_oldest(&mut self.conns, None) {
            return (Admit::Refuse, notify);
        }
        self.next += 1;
        let id = self.next;
        self.conns.push(Conn { id, ip, since: now, waiting: true, evict: Arc::new(Notify::new()) });
        (Admit::Take { id, evicted }, notify)
    }

    /// What tells connection `id` to give up its place.
    fn evict_signal(&self, id: u64) -> Option<Arc<Notify>> {
        self.conns.iter().find(|c| c.id == id).map(|c| c.evict.clone())
    }

    /// Connection `id` has sent its request: it keeps its place.
    pub fn answering(&mut self, id: u64) {
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
            c.waiting = false;
        }
    }

    /// Connection `id` is closed.
    pub fn remove(&mut self, id: u64) {
        self.conns.retain(|c| c.id != id);
    }
}

/// The primary's side: the bound socket (a copy, handed over on
/// self-upgrade so that the address, even a port 0 one, stays) and the task
/// that serves it.
pub struct Server {
    fd: OwnedFd,
    pub addr: SocketAddr,
}

impl Server {
    /// Binds `addr` and serves `/metrics` on it for the primary's life.
    pub fn bind(addr: SocketAddr, events: mpsc::Sender<Event>) -> Result<Server> {
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding --metrics {addr}"))?;
        Server::start(listener, events)
    }

    /// Takes over the socket the previous image served (self-upgrade).
    pub fn adopt(fd: OwnedFd, events: mpsc::Sender<Event>) -> Result<Server> {
        Server::start(std::net::TcpListener::from(fd), events)
    }

    fn start(listener: std::net::TcpListener, events: mpsc::Sender<Event>) -> Result<Server> {
        listener.set_nonblocking(true)?;
        let fd = listener.as_fd().try_clone_to_owned().context("duplicating the --metrics socket")?;
        let listener = TcpListener::from_std(listener).context("the --metrics socket")?;
        let addr = listener.local_addr()?;
        tracing::info!("metrics: serving http://{addr}/metrics");
        tokio::spawn(accept_loop(listener, events));
        Ok(Server { fd, addr })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

async fn accept_loop(listener: TcpListener, events: mpsc::Sender<Event>) {
    let table = Arc::new(Mutex::new(Table::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (admit, evict, signal) = {
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            let (admit, evict) = t.admit(peer.ip(), Instant::now());
            let signal = match &admit {
                Admit::Take { id, .. } => t.evict_signal(*id),
                Admit::Refuse => None,
            };
            (admit, evict, signal)
        };
        for n in evict {
            n.notify_one();
        }
        let id = match admit {
            Admit::Take { id, evicted } => {
                if !evicted.is_empty() {
                    tracing::debug!("metrics: dropped an idle connection for one from {}", peer.ip());
                }
                id
            }
            Admit::Refuse => {
                // Busy answering: say so if the socket takes it at once, never wait.
                let _ = stream.try_write(response(503, "too many metrics connections\n", false).as_bytes());
                tracing::debug!("metrics: {MAX_CONNECTIONS} connections being answered; one refused");
                continue;
            }
        };
        let (events, table) = (events.clone(), table.clone());
        tokio::spawn(async move {
            let evict = signal.unwrap_or_default();
            if let Err(e) = handle(stream, events, id, evict, &table).await {
                tracing::debug!("metrics connection: {e:#}");
            }
            table.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    events: mpsc::Sender<Event>,
    id: u64,
    evict: Arc<Notify>,
    table: &Mutex<Table>,
) -> Result<()> {
    let head = tokio::select! {
        head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)) => head,
        // A newer connection took its place while it sent nothing.
        () = evict.notified() => {
            let _ = stream.try_write(response(408, "no request yet; closed for a newer connection\n", false).as_bytes());
            return Ok(());
        }
    };
    table.lock().unwrap_or_else(|e| e.into_inner()).answering(id);
    let (code, body, head_only) = match head {
        Err(_) => (408, format!("no request within {} s\n", READ_TIMEOUT.as_secs()), false),
        Ok(Err(Bad::TooLarge)) => (431, format!("request head over {MAX_REQUEST} bytes\n"), false),
        Ok(Err(Bad::Malformed(why))) => (400, format!("{why}\n"), false),
        Ok(Ok(head)) => match route(&head) {
            Ok(head_only) => match snapshot(&events).await {
                Some(s) => (200, render(&s), head_only),
                None => (503, "the primary is not answering\n".to_string(), head_only),
            },
            Err((code, why)) => (code, why, false),
        },
    };
    let reply = response(code, &body, head_only);
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .context("writing the answer timed out")??;
    Ok(())
}

enum Bad {
    TooLarge,
    Malformed(String),
}

/// Reads up to the blank line that ends the head.
async fn read_head(stream: &mut TcpStream) -> Result<String, Bad> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.map_err(|e| Bad::Malformed(format!("unreadable request: {e}")))?;
        if n == 0 {
            return Err(Bad::Malformed("connection closed before the request was complete".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| Bad::Malformed("request head is not UTF-8".into()));
        }
        if buf.len() > MAX_REQUEST {
            return Err(Bad::TooLarge);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Checks the request line: `Ok(head_only)` for `GET`/`HEAD /metrics`,
/// else the status code and why.
pub fn route(head: &str) -> Result<bool, (u16, String)> {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, format!("malformed request line {:?}\n", truncate(line))));
    };
    if !version.starts_with("HTTP/1.") {
        return Err((400, format!("unsupported protocol {:?}\n", truncate(version))));
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Err((404, format!("no such path {:?}: metrics are at /metrics\n", truncate(path))));
    }
    match method {
        "GET" => Ok(false),
        "HEAD" => Ok(true),
        _ => Err((405, format!("method {:?} not allowed: use GET\n", truncate(method)))),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

async fn snapshot(events: &mpsc::Sender<Event>) -> Option<Box<Snapshot>> {
    let (tx, rx) = oneshot::channel();
    events.send(Event::Metrics { reply: tx }).await.ok()?;
    tokio::time::timeout(Duration::from_secs(5), rx).await.ok()?.ok()
}

fn response(code: u16, body: &str, head_only: bool) -> String {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let ctype = if code == 200 { "text/plain; version=0.0.4; charset=utf-8" } else { "text/plain; charset=utf-8" };
    let allow = if code == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{}",
        body.len(),
        if head_only { "" } else { body }
    )
}

/// The Prometheus text format (version 0.0.4) of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let (st, c) = (&s.status, &s.counters);
    let mut o = String::new();
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(&mut o, "hotswap_info", "gauge", "Always 1; the hotswap version and the --balance mode as labels.");
    let _ = writeln!(o, "hotswap_info{{version=\"{}\",balance=\"{}\"}} 1", escape(&st.version), escape(&st.balance));
    family(
        &mut o,
        "hotswap_start_time_seconds",
        "gauge",
        "When the primary started (Unix time), across self-upgrades.",
    );
    let _ = writeln!(o, "hotswap_start_time_seconds {}", st.started_at);
    family(&mut o, "hotswap_upgrades_total", "counter", "Self-upgrades of hotswap since the primary started.");
    let _ = writeln!(o, "hotswap_upgrades_total {}", st.upgrades);
    family(&mut o, "hotswap_serving_generation", "gauge", "The generation that serves (the last successful reload's).");
    let _ = writeln!(o, "hotswap_serving_generation {}", st.generation);
    family(&mut o, "hotswap_target_workers", "gauge", "How many workers the primary keeps.");
    let _ = writeln!(o, "hotswap_target_workers {}", st.target_workers);
    family(&mut o, "hotswap_workers", "gauge", "Workers by state.");
    for state in [WorkerState::Starting, WorkerState::Ready, WorkerState::Stopping] {
        let n = st.workers.iter().filter(|w| w.state == state).count();
        let _ = writeln!(o, "hotswap_workers{{state=\"{state}\"}} {n}");
    }
    family(&mut o, "hotswap_reload_in_progress", "gauge", "1 while a rolling reload runs.");
    let _ = writeln!(o, "hotswap_reload_in_progress {}", u8::from(st.reloading));
    if let Some(last) = &st.last_reload {
        family(
            &mut o,
            "hotswap_last_reload_success",
            "gauge",
            "1 if the last rolling reload succeeded, 0 if it failed.",
        );
        let _ = writeln!(o, "hotswap_last_reload_success {}", u8::from(last.ok));
        family(
            &mut o,
            "hotswap_last_reload_timestamp_seconds",
            "gauge",
            "When the last rolling reload ended (Unix time).",
        );
        let _ = writeln!(o, "hotswap_last_reload_timestamp_seconds {}", last.finished_at);
    }
    family(&mut o, "hotswap_reloads_total", "counter", "Rolling reloads by outcome.");
    let _ = writeln!(o, "hotswap_reloads_total{{result=\"ok\"}} {}", c.reloads_ok);
    let _ = writeln!(o, "hotswap_reloads_total{{result=\"failed\"}} {}", c.reloads_failed);
    family(
        &mut o,
        "hotswap_reload_duration_seconds",
        "histogram",
        "How long rolling reloads took, from request to outcome.",
    );
    histogram(&mut o, "hotswap_reload_duration_seconds", &c.reload_seconds);
    family(&mut o, "hotswap_worker_startup_seconds", "histogram", "How long workers took from start to ready.");
    histogram(&mut o, "hotswap_worker_startup_seconds", &c.startup_seconds);
    family(
        &mut o,
        "hotswap_worker_restarts_total",
        "counter",
        "Workers restarted after a crash, or replaced for staying above --max-memory.",
    );
    let _ = writeln!(o, "hotswap_worker_restarts_total{{reason=\"crash\"}} {}", c.restarts_crash);
    let _ = writeln!(o, "hotswap_worker_restarts_total{{reason=\"max-memory\"}} {}", c.restarts_max_memory);
    family(
        &mut o,
        "hotswap_worker_start_failures_total",
        "counter",
        "Worker starts that failed (the command could not be executed, fork failed); retried with the crash backoff.",
    );
    let _ = writeln!(o, "hotswap_worker_start_failures_total {}", c.start_failures);
    family(
        &mut o,
        "hotswap_rescued_requests_total",
        "counter",
        "Requests caught on keep-alive connections a retiring worker closed, answered by the serving generation.",
    );
    let _ = writeln!(o, "hotswap_rescued_requests_total {}", c.rescued_requests);
    family(
        &mut o,
        "hotswap_rescue_held_connections",
        "gauge",
        "Connections of retiring workers the primary holds (rescue).",
    );
    let _ = writeln!(o, "hotswap_rescue_held_connections {}", c.rescue_held);
    family(
        &mut o,
        "hotswap_rescue_given_up_total",
        "counter",
        "Held connections closed unrescued: over the cap, not an HTTP/1 request, TLS, HTTP/2, Upgrade, too large.",
    );
    let _ = writeln!(o, "hotswap_rescue_given_up_total {}", c.rescue_given_up);
    if let Some(max) = st.max_memory {
        family(&mut o, "hotswap_max_memory_bytes", "gauge", "--max-memory: the resident memory a worker may keep.");
        let _ = writeln!(o, "hotswap_max_memory_bytes {max}");
    }
    family(&mut o, "hotswap_worker_memory_bytes", "gauge", "Resident memory of each worker's process group.");
    for w in &st.workers {
        let _ = writeln!(o, "hotswap_worker_memory_bytes{{slot=\"{}\",worker=\"{}\"}} {}", w.slot, w.id, w.rss_bytes);
    }
    family(&mut o, "hotswap_worker_cpu_seconds_total", "counter", "CPU time used by each worker's process group.");
    for w in &st.workers {
        let _ = writeln!(
            o,
            "hotswap_worker_cpu_seconds_total{{slot=\"{}\",worker=\"{}\"}} {}",
            w.slot, w.id, w.cpu_seconds
        );
    }
    family(&mut o, "hotswap_worker_processes", "gauge", "Live processes in each worker's process group.");
    for w in &st.workers {
        let _ = writeln!(o, "hotswap_worker_processes{{slot=\"{}\",worker=\"{}\"}} {}", w.slot, w.id, w.processes);
    }
    family(
        &mut o,
        "hotswap_worker_ready_seconds",
        "gauge",
        "How long each ready worker took from start to ready; via: how it became ready (ipc, cluster, notify, \
         accepting, assumed), proof: what proved it takes connections (probe, accept, connection), when its \
         accepts counted.",
    );
    for w in &st.workers {
        let (Some(via), Some(ms)) = (&w.ready_via, w.ready_ms) else { continue };
        let _ = writeln!(
            o,
            "hotswap_worker_ready_seconds{{slot=\"{}\",worker=\"{}\",via=\"{via}\",proof=\"{}\"}} {}",
            w.slot,
            w.id,
            w.ready_proof.as_deref().unwrap_or(""),
            ms as f64 / 1000.0
        );
    }
    slots(&mut o, s);
    if let Some(p) = &s.primary {
        process(&mut o, p);
    }
    o
}

/// Per-slot series: the same names and labels across reloads (a slot's
/// worker changes, the slot does not), for dashboards and alerts. A slot
/// is summed over its workers (two during a reload: old and new).
fn slots(o: &mut String, s: &Snapshot) {
    let st = &s.status;
    let n = st.workers.iter().map(|w| w.slot + 1).max().unwrap_or(0).max(st.target_workers as usize);
    let sum = |slot: usize, f: &dyn Fn(&crate::types::wire::WorkerStatus) -> f64| -> f64 {
        st.workers.iter().filter(|w| w.slot == slot).map(f).sum()
    };
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(o, "hotswap_slot_ready", "gauge", "1 while a ready worker serves the slot.");
    for slot in 0..n {
        let ready = st.workers.iter().any(|w| w.slot == slot && w.state == WorkerState::Ready);
        let _ = writeln!(o, "hotswap_slot_ready{{slot=\"{slot}\"}} {}", u8::from(ready));
    }
    family(o, "hotswap_slot_memory_bytes", "gauge", "Resident memory of the slot's workers' process groups.");
    for slot in 0..n {
        let _ = writeln!(o, "hotswap_slot_memory_bytes{{slot=\"{slot}\"}} {}", sum(slot, &|w| w.rss_bytes as f64));
    }
    family(
        o,
        "hotswap_slot_cpu_seconds_total",
        "counter",
        "CPU time of the slot's workers' process groups; starts again when its worker is replaced (a counter reset).",
    );
    for slot in 0..n {
        let _ = writeln!(o, "hotswap_slot_cpu_seconds_total{{slot=\"{slot}\"}} {}", sum(slot, &|w| w.cpu_seconds));
    }
    family(o, "hotswap_slot_processes", "gauge", "Live processes in the slot's workers' process groups.");
    for slot in 0..n {
        let _ = writeln!(o, "hotswap_slot_processes{{slot=\"{slot}\"}} {}", sum(slot, &|w| f64::from(w.processes)));
    }
}

/// The primary's own figures, named as Prometheus client libraries name
/// them for the process they run in.
fn process(o: &mut String, p: &crate::types::counters::ProcessUsage) {
    let rows: [(&str, &str, &str, f64); 5] = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the primary (not its workers).",
            p.rss_bytes as f64,
        ),
        ("process_cpu_seconds_total", "counter", "CPU time of the primary (not its workers).", p.cpu_seconds),
        ("process_open_fds", "gauge", "Open file descriptors of the primary.", p.open_fds as f64),
        ("process_max_fds", "gauge", "The primary's limit on open file descriptors.", p.max_fds as f64),
        (
            "process_start_time_seconds",
            "gauge",
            "When the primary process started (Unix time; kept by self-upgrades).",
            p.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

fn histogram(o: &mut String, name: &str, h: &Histogram) {
    for (le, n) in h.cumulative() {
        let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_sum {}", h.sum);
    let _ = writeln!(o, "{name}_count {}", h.count());
}

/// A label value as the text format wants it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_or_head_of_metrics_is_served() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\nHost: x"), Ok(false));
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0"), Ok(false));
        assert_eq!(route("HEAD /metrics HTTP/1.1"), Ok(true));
        assert_eq!(route("GET / HTTP/1.1").unwrap_err().0, 404);
        assert_eq!(route("POST /metrics HTTP/1.1").unwrap_err().0, 405);
        assert_eq!(route("garbage").unwrap_err().0, 400);
        assert_eq!(route("GET /metrics SPDY/3").unwrap_err().0, 400);
        assert_eq!(route("").unwrap_err().0, 400);
    }

    #[test]
    fn idle_connections_make_room_for_new_ones() {
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = Table::default();
        let take = |t: &mut Table, ip, now| match t.admit(ip, now).0 {
            Admit::Take { id, evicted } => (id, evicted),
            Admit::Refuse => panic!("refused"),
        };
        // One client: its fifth connection replaces its own oldest idle one.
        for i in 0..4 {
            assert_eq!(take(&mut t, a, at(i)).1, Vec::<u64>::new());
        }
        assert_eq!(take(&mut t, a, at(10)).1, vec![1]);
        // Others fill the rest; then a newcomer replaces the oldest idle.
        for i in 0..4 {
            assert!(take(&mut t, b, at(20 + i)).1.is_empty());
        }
        assert_eq!(t.conns.len(), MAX_CONNECTIONS);
        let (_, evicted) = take(&mut t, "10.0.0.3".parse().unwrap(), at(30));
        assert_eq!(evicted, vec![2], "the oldest idle connection, whoever it is from");
        // Connections being answered keep their place.
        let ids: Vec<u64> = t.conns.iter().map(|c| c.id).collect();
        for id in &ids {
            t.answering(*id);
        }
        assert_eq!(t.admit(a, at(40)).0, Admit::Refuse);
        t.remove(ids[0]);
        assert!(matches!(t.admit(a, at(50)).0, Admit::Take { .. }));
    }

    #[test]
    fn a_response_says_its_length() {
        let r = response(404, "nope\n", false);
        assert!(
            r.starts_with("HTTP/1.1 404 Not Found\r\n") && r.contains("Content-Length: 5\r\n") && r.ends_with("nope\n")
        );
        assert!(response(200, "abc", true).ends_with("\r\n\r\n"));
    }
}
