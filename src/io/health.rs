//! `--health-check PATH`: an HTTP `GET PATH` sent to one starting worker,
//! whose answer decides whether it counts as ready.
//!
//! Every worker shares the listening socket, so a connection cannot be
//! addressed to one of them: the check connects to the listener, looks
//! whether a process of the worker's group accepted that very connection
//! ([`crate::sys::acceptors::accepted_by`]), and if another worker took it,
//! closes it unused (a connect and a close, harmless to any server) and
//! tries again. Once the worker took one, the request goes over it; 2xx and
//! 3xx pass, anything else is tried again (a warm-up may end) until
//! `--health-timeout`, and the last answer is the reason of the failure:
//! `GET /healthz answered 503 from w7`.
//!
//! All of it runs on a blocking thread, bounded by the timeout, and ends
//! in one [`Event::HealthChecked`]. Under `--balance sticky`, the kernel
//! picks the slot by the client's address: connections to a loopback
//! listener come from 127.0.0.x with a different x each time, so every
//! slot can be reached.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::types::{Event, WorkerId};

/// How long a connection is watched for the worker to accept it before it
/// is taken for another worker's.
const TAKEN_WITHIN: Duration = Duration::from_millis(150);
/// Between looks at whether the worker took it.
const LOOK_EVERY: Duration = Duration::from_millis(5);
/// Between two requests that got a failing answer.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// Where the check connects.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Target {
    /// The address to connect to for a listener bound to `addr`: the
    /// loopback address of its family for a wildcard one.
    pub fn tcp(addr: SocketAddr) -> Target {
        let ip = match addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Target::Tcp(SocketAddr::new(ip, addr.port()))
    }
}

/// One worker's check.
#[derive(Debug, Clone)]
pub struct Check {
    pub worker: WorkerId,
    /// `w7`: how the worker is named in the answer.
    pub name: String,
    /// The worker's process group.
    pub pgid: i32,
    pub target: Target,
    pub path: String,
    pub timeout: Duration,
    /// Connect from a different 127.0.0.x each time (`--balance sticky`).
    pub vary_source: bool,
}

/// Runs the check off the event loop; its verdict arrives as
/// [`Event::HealthChecked`]: what the worker answered, or why it failed.
pub fn start(check: Check, events: mpsc::Sender<Event>) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let worker = check.worker;
        let result = tokio::task::spawn_blocking(move || run(&check))
            .await
            .unwrap_or_else(|e| Err(format!("the health check stopped: {e}")));
        let _ = events.send(Event::HealthChecked { worker, result }).await;
    })
    .abort_handle()
}

/// The check itself (blocking, at most about `timeout`).
pub fn run(c: &Check) -> Result<String, String> {
    let started = Instant::now();
    let deadline = started + c.timeout;
    let (mut tried, mut others) = (0u32, 0u32);
    // The last answer the worker gave, else the last trouble: an attempt
    // that the deadline cut short must not hide a real answer.
    let (mut answered, mut last): (Option<String>, Option<String>) = (None, None);
    while Instant::now() < deadline {
        tried += 1;
        let conn = match connect(c, tried, deadline) {
            Ok(conn) => conn,
            Err(e) => {
                last = Some(format!("GET {} to {}: cannot connect to {}: {e}", c.path, c.name, describe(&c.target)));
                pause(RETRY_AFTER, deadline);
                continue;
            }
        };
        match taken(c.pgid, conn.as_fd(), deadline) {
            Ok(true) => {}
            Ok(false) => {
                others += 1;
                continue; // another worker's: closed unused
            }
            Err(e) => return Err(format!("GET {} to {}: cannot see which process accepted it: {e}", c.path, c.name)),
        }
        match ask(conn, c, deadline) {
            Ok(status) if (200..400).contains(&status) => {
                return Ok(format!(
                    "GET {} answered {status} from {} in {} ms",
                    c.path,
                    c.name,
                    started.elapsed().as_millis()
                ))
            }
            Ok(status) => answered = Some(format!("GET {} answered {status} from {}", c.path, c.name)),
            Err(e) => last = Some(format!("GET {} to {}: {e}", c.path, c.name)),
        }
        pause(RETRY_AFTER, deadline);
    }
    let within = humantime::format_duration(c.timeout);
    Err(match answered.or(last) {
        Some(why) => format!("{why} (health check, tried for --health-timeout {within})"),
        None => format!(
            "GET {} never reached {} within --health-timeout {within}: {others} of {tried} connections were \
             accepted by other workers (is it accepting?)",
            c.path, c.name
        ),
    })
}

fn pause(d: Duration, deadline: Instant) {
    std::thread::sleep(d.min(deadline.saturating_duration_since(Instant::now())));
}

fn describe(t: &Target) -> String {
    match t {
        Target::Tcp(a) => a.to_string(),
        Target::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// A connection to the listener.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
        }
    }
}

fn connect(c: &Check, attempt: u32, deadline: Instant) -> std::io::Result<Conn> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    match &c.target {
        Target::Unix(path) => Ok(Conn::Unix(UnixStream::connect(path)?)),
        Target::Tcp(addr) => {
            let socket = socket2::Socket::new(socket2::Domain::for_address(*addr), socket2::Type::STREAM, None)?;
            if let (true, IpAddr::V4(ip)) = (c.vary_source, addr.ip()) {
                if ip.is_loopback() {
                    let x = 1 + (attempt % 250) as u8;
                    socket.bind(&SocketAddr::from(([127, 0, 0, x], 0)).into())?;
                }
            }
            socket.connect_timeout(&(*addr).into(), left)?;
            Ok(Conn::Tcp(socket.into()))
        }
    }
}

/// Whether the worker's group accepted `conn` within [`TAKEN_WITHIN`].
fn taken(pgid: i32, conn: BorrowedFd<'_>, deadline: Instant) -> std::io::Result<bool> {
    let until = (Instant::now() + TAKEN_WITHIN).min(deadline);
    loop {
        if crate::sys::acceptors::accepted_by(pgid, conn)? {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(LOOK_EVERY);
    }
}

/// Sends the request; the answer's status code.
fn ask(conn: Conn, c: &Check, deadline: Instant) -> Result<u16, String> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let host = match &c.target {
        Target::Tcp(a) => a.to_string(),
        Target::Unix(_) => "localhost".to_string(),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hotswap-health-check\r\nConnection: close\r\n\r\n",
        c.path
    );
    let status_line = match conn {
        Conn::Tcp(mut s) => {
            s.set_read_timeout(Some(left)).and_then(|_| s.set_write_timeout(Some(left))).map_err(|e| e.to_string())?;
            s.write_all(request.as_bytes()).map_err(|e| format!("sending the request: {e}"))?;
            read_status_line(&mut BufReader::new(s))?
        }
        Conn::Unix(mut s) => {
            s.set_read_timeout(Some(left)).and_then(|_| s.set_write_timeout(Some(left))).map_err(|e| e.to_string())?;
            s.write_all(request.as_bytes()).map_err(|e| format!("sending the request: {e}"))?;
            read_status_line(&mut BufReader::new(s))?
        }
    };
    parse_status(&status_line)
}

fn read_status_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    match std::io::Read::take(r, 1024).read_line(&mut line) {
        Ok(0) => Err("the connection was closed without an answer".into()),
        Ok(_) => Ok(line),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Err("no answer within --health-timeout".into())
        }
        Err(e) => Err(format!("reading the answer: {e}")),
    }
}

/// `HTTP/1.1 503 Service Unavailable` -> 503.
fn parse_status(line: &str) -> Result<u16, String> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP answer: {:?}", line.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 503 Service Unavailable\r\n"), Ok(503));
        assert_eq!(parse_status("HTTP/1.0 302 Found\r\n"), Ok(302));
        assert!(parse_status("SSH-2.0-OpenSSH_9.6\r\n").unwrap_err().contains("not an HTTP answer"));
    }

    #[test]
    fn a_wildcard_listener_is_reached_over_loopback() {
        let t = Target::tcp("0.0.0.0:8080".parse().unwrap());
        assert!(matches!(t, Target::Tcp(a) if a == "127.0.0.1:8080".parse().unwrap()));
        let t = Target::tcp("[::]:80".parse().unwrap());
        assert!(matches!(t, Target::Tcp(a) if a == "[::1]:80".parse().unwrap()));
    }

    /// This very process is the "worker": it accepts the check's
    /// connection and answers 503, then 200.
    #[test]
    fn the_check_reaches_its_worker_and_reports_its_answers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let answers = ["503 Service Unavailable", "200 OK"];
        let server = std::thread::spawn(move || {
            for status in answers {
                let (mut s, _) = l.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                assert_eq!(line, "GET /healthz HTTP/1.1\r\n");
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap();
            }
        });
        let check = Check {
            worker: 7,
            name: "w7".into(),
            pgid: nix::unistd::getpgrp().as_raw(),
            target: Target::tcp(addr),
            path: "/healthz".into(),
            timeout: Duration::from_secs(20),
            vary_source: false,
        };
        let verdict = run(&check);
        server.join().unwrap();
        match verdict {
            Err(e) if e.contains("cannot see which process") => {} // no pidfd_getfd here
            v => assert!(v.as_ref().is_ok_and(|m| m.starts_with("GET /healthz answered 200 from w7")), "{v:?}"),
        }
    }
}
