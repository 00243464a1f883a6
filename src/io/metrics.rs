//! `--metrics ADDR`: `GET /metrics` in the Prometheus text format.
//!
//! Like the control socket, each connection is its own task on the
//! primary's one thread: it reads the request, asks the supervisor for a
//! [`Snapshot`] over the event channel (the supervisor answers at once, in
//! the middle of a reload too), renders it here and writes it. A scraper
//! cannot stall the primary: the request must arrive within
//! [`READ_TIMEOUT`] and fit in [`MAX_REQUEST`] bytes, the answer must be
//! taken within [`WRITE_TIMEOUT`], and at most [`MAX_CONNECTIONS`] are
//! served at once (more are closed at once). One request per connection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::types::counters::{Histogram, Snapshot};
use crate::types::{Event, WorkerState};

/// Largest request head accepted, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Busy: say so if the socket takes it at once, never wait.
            let _ = stream.try_write(response(503, "too many metrics connections\n", false).as_bytes());
            tracing::debug!("metrics: {MAX_CONNECTIONS} connections open; one refused");
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, events).await {
                tracing::debug!("metrics connection: {e:#}");
            }
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, events: mpsc::Sender<Event>) -> Result<()> {
    let (code, body, head_only) = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => (408, "no request within 5 s\n".to_string(), false),
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
    o
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
    fn a_response_says_its_length() {
        let r = response(404, "nope\n", false);
        assert!(
            r.starts_with("HTTP/1.1 404 Not Found\r\n") && r.contains("Content-Length: 5\r\n") && r.ends_with("nope\n")
        );
        assert!(response(200, "abc", true).ends_with("\r\n\r\n"));
    }
}
