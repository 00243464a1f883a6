//! The load client: continuous HTTP requests over keep-alive and fresh
//! connections ([`Load`]), each recorded, so a test can assert that a
//! reload failed none of them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// Where the load client connects.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(String),
    Unix(PathBuf),
}

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

impl Target {
    fn connect(&self) -> std::io::Result<Box<dyn Conn>> {
        let c: Box<dyn Conn> = match self {
            Target::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Target::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                Box::new(s)
            }
        };
        Ok(c)
    }
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub close: bool,
    /// The `X-Hotswap-Worker` header of the example workers.
    pub worker_header: Option<u64>,
}

impl Answer {
    pub fn generation(&self) -> u64 {
        field(&self.body, "generation")
    }
    pub fn worker(&self) -> u64 {
        self.worker_header.unwrap_or_else(|| field(&self.body, "worker"))
    }
}

fn field(body: &str, name: &str) -> u64 {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn exchange(conn: &mut Box<dyn Conn>, path: &str, keep_alive: bool) -> Result<Answer, String> {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{}\r\n", if keep_alive { "" } else { "Connection: close\r\n" });
    conn.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(conn);
    let mut status_line = String::new();
    match reader.read_line(&mut status_line) {
        Ok(0) => return Err("read: connection closed before a response".into()),
        Err(e) => return Err(format!("read: {e}")),
        Ok(_) => {}
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line {status_line:?}"))?;
    let mut len = None;
    let mut chunked = false;
    let mut worker_header = None;
    // HTTP/1.0 closes unless it says keep-alive.
    let mut close = status_line.starts_with("HTTP/1.0");
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_err(|e| format!("read headers: {e}"))? == 0 {
            return Err("read: closed inside headers".into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok(),
            "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
            "connection" => close = !v.trim().eq_ignore_ascii_case("keep-alive"),
            "x-hotswap-worker" => worker_header = v.trim().parse().ok(),
            _ => {}
        }
    }
    let mut body = vec![0u8; len.unwrap_or(0)];
    reader.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
    // Without a length, a response that closes its connection ends at the
    // close (PHP's built-in server answers so).
    if len.is_none() && !chunked && close {
        reader.read_to_end(&mut body).map_err(|e| format!("read body to its end: {e}"))?;
    }
    // Node answers `res.end(body)` without a length in chunks.
    while chunked {
        let mut size = String::new();
        reader.read_line(&mut size).map_err(|e| format!("read chunk size: {e}"))?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        let mut chunk = vec![0u8; n + 2];
        reader.read_exact(&mut chunk).map_err(|e| format!("read chunk: {e}"))?;
        body.extend_from_slice(&chunk[..n]);
        chunked = n > 0;
    }
    if !reader.buffer().is_empty() {
        return Err("unexpected bytes after the response".into());
    }
    Ok(Answer { status, body: String::from_utf8_lossy(&body).into_owned(), close, worker_header })
}

/// One GET on a new connection.
pub fn get(target: &Target, path: &str) -> Result<Answer, String> {
    let mut c = target.connect().map_err(|e| format!("connect: {e}"))?;
    exchange(&mut c, path, false)
}

/// A record of one request made by the load client.
#[derive(Debug, Clone)]
pub struct Record {
    pub sent: Instant,
    pub result: Result<u64, String>,
}

/// Continuous HTTP load: `keep_alive` connections that reuse their socket
/// and `fresh` ones that open a new connection per request.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    records: Arc<Mutex<Vec<Record>>>,
    /// Requests made so far, answered or failed.
    made: Arc<AtomicUsize>,
}

impl Load {
    pub fn start(target: Target, keep_alive: usize, fresh: usize) -> Load {
        Load::paced(target, keep_alive, fresh, Duration::ZERO)
    }

    /// As [`start`](Self::start), each client pausing `gap` after every
    /// answer: a keep-alive connection then sits idle for `gap` between
    /// requests, as a real client's does (and a server's graceful stop
    /// closes it in one of those pauses).
    pub fn paced(target: Target, keep_alive: usize, fresh: usize, gap: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let made = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for i in 0..keep_alive + fresh {
            let (stop, records, target, made) = (stop.clone(), records.clone(), target.clone(), made.clone());
            let ka = i < keep_alive;
            threads.push(std::thread::spawn(move || {
                let mut conn: Option<Box<dyn Conn>> = None;
                let mut local = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(240);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let sent = Instant::now();
                    if conn.is_none() {
                        match target.connect() {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                local.push(Record { sent, result: Err(format!("connect: {e}")) });
                                made.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        }
                    }
                    let c = conn.as_mut().unwrap();
                    let result = match exchange(c, "/", ka) {
                        Ok(a) if a.status == 200 => {
                            if a.close || !ka {
                                conn = None;
                            }
                            Ok(a.generation())
                        }
                        Ok(a) => {
                            conn = None;
                            Err(format!("HTTP {}", a.status))
                        }
                        Err(e) => {
                            conn = None;
                            Err(format!("{e} (after {} ms)", sent.elapsed().as_millis()))
                        }
                    };
                    local.push(Record { sent, result });
                    made.fetch_add(1, Ordering::Relaxed);
                    if !gap.is_zero() {
                        std::thread::sleep(gap);
                    }
                    if local.len() >= 256 {
                        records.lock().unwrap().append(&mut local);
                    }
                }
                records.lock().unwrap().append(&mut local);
            }));
        }
        Load { stop, threads, records, made }
    }

    /// Requests made so far, answered or failed.
    pub fn count(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }

    /// Waits until the load has made `n` more requests: before a reload,
    /// that the load is flowing (keep-alive connections open on the old
    /// workers); after one, that the new workers have been asked.
    #[track_caller]
    pub fn wait_for_requests(&self, n: usize) {
        let target = self.count() + n;
        wait_until(Duration::from_secs(30), format_args!("{n} more requests of the load"), || self.count() >= target);
    }

    /// Stops the load and returns every record, in send order.
    pub fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let mut r = std::mem::take(&mut *self.records.lock().unwrap());
        r.sort_by_key(|r| r.sent);
        r
    }
}

/// Asserts no request failed, with the failures listed if some did.
pub fn assert_no_failures(records: &[Record], what: &str) {
    let failures: Vec<_> = records.iter().filter_map(|r| r.result.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} requests failed, e.g. {:?}",
        failures.len(),
        records.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(records.len() > 50, "{what}: the load made only {} requests", records.len());
}
