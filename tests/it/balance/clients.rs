//! The clients of the balance tests: one thread per loopback source
//! address, each making requests on new connections, and what they saw.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::*;

/// What a worker answered: its slot, pid and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Served {
    pub(super) slot: u64,
    pub(super) pid: u64,
    pub(super) generation: u64,
}

pub(super) fn field(body: &str, name: &str) -> Option<u64> {
    body.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// One GET on a new connection from `src`, with `timeout` for connect and
/// every read: the answer's slot, pid and generation.
pub(super) fn get_from(src: IpAddr, to: SocketAddr, timeout: Duration) -> Result<Served, String> {
    let body = body_from(src, to, timeout)?;
    match (field(&body, "slot"), field(&body, "pid"), field(&body, "generation")) {
        (Some(slot), Some(pid), Some(generation)) => Ok(Served { slot, pid, generation }),
        _ => Err(format!("unexpected body {body:?}")),
    }
}

/// One GET on a new connection from `src`: the body of a 200 answer.
pub(super) fn body_from(src: IpAddr, to: SocketAddr, timeout: Duration) -> Result<String, String> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None).map_err(|e| format!("socket: {e}"))?;
    s.bind(&SocketAddr::new(src, 0).into()).map_err(|e| format!("bind {src}: {e}"))?;
    s.connect_timeout(&to.into(), timeout).map_err(|e| format!("connect: {e}"))?;
    let mut c: std::net::TcpStream = s.into();
    c.set_read_timeout(Some(timeout)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    c.read_to_string(&mut text).map_err(|e| format!("read: {e}"))?;
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("answer {:?}", text.lines().next().unwrap_or("")));
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Node answers in chunks: the chunk-size lines are no `key=value`.
    Ok(body.to_string())
}

#[derive(Debug, Clone)]
pub(super) struct Rec {
    pub(super) client: IpAddr,
    pub(super) sent: Instant,
    pub(super) took: Duration,
    pub(super) result: Result<Served, String>,
}

/// One thread per client address, each making requests on new
/// connections until stopped.
pub(super) struct Clients {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    records: Arc<Mutex<Vec<Rec>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Clients {
    pub(super) fn start(addrs: &[IpAddr], to: SocketAddr, timeout: Duration) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let records = Arc::new(Mutex::new(Vec::new()));
        let threads = addrs
            .iter()
            .map(|&client| {
                let (stop, made, records) = (stop.clone(), made.clone(), records.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let result = get_from(client, to, timeout);
                        let failed = result.is_err();
                        records.lock().unwrap().push(Rec { client, sent, took: sent.elapsed(), result });
                        made.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(if failed { 20 } else { 5 }));
                    }
                })
            })
            .collect();
        Clients { stop, made, records, threads }
    }

    #[track_caller]
    pub(super) fn wait_for(&self, n: usize) {
        let target = self.made.load(Ordering::Relaxed) + n;
        wait_until(Duration::from_secs(30), format_args!("{n} more client requests"), || {
            self.made.load(Ordering::Relaxed) >= target
        });
    }

    pub(super) fn snapshot(&self) -> Vec<Rec> {
        self.records.lock().unwrap().clone()
    }

    pub(super) fn finish(self) -> Vec<Rec> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let mut r = std::mem::take(&mut *self.records.lock().unwrap());
        r.sort_by_key(|r| r.sent);
        r
    }
}

pub(super) fn loopback_clients() -> Vec<IpAddr> {
    (2..=30).map(|i| IpAddr::from([127, 0, 0, i])).collect()
}

pub(super) fn tcp_addr(p: &Primary) -> SocketAddr {
    p.addr().parse().unwrap()
}

/// The slots each client reached (successful answers only).
pub(super) fn slots_per_client(records: &[Rec]) -> BTreeMap<IpAddr, BTreeSet<u64>> {
    let mut m: BTreeMap<IpAddr, BTreeSet<u64>> = BTreeMap::new();
    for r in records {
        if let Ok(s) = &r.result {
            m.entry(r.client).or_default().insert(s.slot);
        }
    }
    m
}

#[track_caller]
pub(super) fn assert_all_served(records: &[Rec], what: &str) {
    let failed: Vec<_> = records.iter().filter(|r| r.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} client requests failed, e.g. {:?}",
        failed.len(),
        records.len(),
        failed.iter().take(5).map(|r| (r.client, r.result.clone())).collect::<Vec<_>>()
    );
}

/// Each client reaches exactly one slot; returns that map.
#[track_caller]
pub(super) fn assert_sticky(records: &[Rec], what: &str) -> HashMap<IpAddr, u64> {
    let per = slots_per_client(records);
    let moved: Vec<_> = per.iter().filter(|(_, s)| s.len() != 1).collect();
    assert!(moved.is_empty(), "{what}: clients that reached more than one slot: {moved:?}");
    per.into_iter().map(|(c, s)| (c, *s.iter().next().unwrap())).collect()
}
