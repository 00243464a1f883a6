//! `--balance slots|sticky`: one `SO_REUSEPORT` socket per worker slot, and
//! (sticky) a BPF program that sends each client address to one slot.
//! Real primaries, real workers, real clients bound to loopback source
//! addresses 127.0.0.2 ... 127.0.0.30 (all of 127/8 is loopback on Linux).

mod clients;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::*;
use clients::*;

#[test]
fn sticky_clients_keep_their_slot_through_three_reloads() {
    let p = Primary::builder(rust_worker())
        .workers(3)
        .arg("--balance")
        .arg("sticky")
        .arg("--metrics")
        .arg("127.0.0.1:0")
        .start();
    let to = tcp_addr(&p);
    let clients = Clients::start(&loopback_clients(), to, Duration::from_secs(10));
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    clients.wait_for(29 * 5);
    let before = assert_sticky(&clients.snapshot(), "before any reload");
    assert_eq!(before.len(), 29, "every client was served");
    let used: BTreeSet<u64> = before.values().copied().collect();
    assert_eq!(used, BTreeSet::from([0, 1, 2]), "29 addresses spread over the 3 slots: {before:?}");

    for i in 0..3 {
        let out = p.reload();
        assert!(out.contains(&format!("generation {} serves", i + 2)), "{out}");
        clients.wait_for(29 * 3);
    }
    clients.wait_for(29 * 3);
    let records = clients.finish();
    assert_all_served(&records, "sticky clients across 3 reloads");
    assert_no_failures(&load.finish(), "load across 3 reloads");
    let after = assert_sticky(&records, "before, during and after 3 reloads");
    assert_eq!(before, after, "each client kept its slot");
    // The last answers came from the newest generation: the slot is the
    // same, the worker is new.
    let last = records.iter().rev().find_map(|r| r.result.as_ref().ok()).unwrap();
    assert_eq!(last.generation, 4);
    let st = p.status();
    assert_eq!(st["balance"], "sticky", "{st}");
    assert!(String::from_utf8_lossy(&p.ctl(&["status"]).stdout).contains("balance:    sticky"));
    let metrics = get(&Target::Tcp(st["metrics"].as_str().unwrap().to_string()), "/metrics").unwrap().body;
    assert!(metrics.contains("balance=\"sticky\"} 1"), "{metrics}");
}

#[test]
fn shared_mode_sends_one_client_to_several_workers() {
    // What sticky fixes: with the shared socket, one client address reaches
    // whichever worker accepts first.
    let p = Primary::builder(rust_worker()).workers(3).start();
    let to = tcp_addr(&p);
    let clients = Clients::start(&loopback_clients()[..6], to, Duration::from_secs(10));
    clients.wait_for(6 * 40);
    let records = clients.finish();
    assert_all_served(&records, "shared");
    let per = slots_per_client(&records);
    assert!(per.values().any(|s| s.len() > 1), "with a shared socket some client reaches several slots: {per:?}");
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &records {
        *per_slot.entry(r.result.as_ref().unwrap().slot).or_default() += 1;
    }
    eprintln!("--balance shared, 3 workers, {} connections: per slot {per_slot:?}", records.len());
    assert_eq!(p.status()["balance"], "shared");
}

/// The pid and slot of each ready worker.
fn ready_slots(p: &Primary) -> BTreeMap<u64, i32> {
    Primary::ready_workers(&p.status())
        .iter()
        .map(|w| (w["slot"].as_u64().unwrap(), w["pid"].as_i64().unwrap() as i32))
        .collect()
}

/// Waits until the primary has replaced slot `slot`'s worker `victim` (its
/// replacement is starting): it has seen the crash.
fn crash_seen(p: &Primary, slot: u64, victim: i32) {
    wait_until(Duration::from_secs(10), "the crash seen by the primary", || {
        p.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["slot"] == slot && w["pid"].as_i64().unwrap() as i32 != victim)
    });
}

#[test]
fn a_crashed_slots_clients_are_served_elsewhere_until_it_is_back() {
    // The replacement takes 3 s to get ready: that long, its slot is dead.
    let p = Primary::builder(rust_worker())
        .workers(3)
        .arg("--balance")
        .arg("sticky")
        .env("EXAMPLE_STARTUP_MS", "3000")
        .start();
    let to = tcp_addr(&p);
    let clients = Clients::start(&loopback_clients(), to, Duration::from_secs(5));
    clients.wait_for(29 * 5);
    let before = assert_sticky(&clients.snapshot(), "before the crash");
    let pids = ready_slots(&p);
    let victim = pids[&1];
    let killed_at = Instant::now();
    unsafe { libc::kill(victim, libc::SIGKILL) };
    // While slot 1 is dead (its replacement starting), its clients' new
    // connections are served by the other slots. (Those that its socket
    // had queued before the primary left it out wait for the replacement:
    // the load's clients, checked below, had one each.) A connection that
    // waited on slot 1's socket would be answered by slot 1 once it is
    // back, or time out: no wall-clock bound is needed.
    crash_seen(&p, 1, victim);
    let of_slot_1: BTreeSet<IpAddr> = before.iter().filter(|(_, s)| **s == 1).map(|(c, _)| *c).collect();
    assert!(!of_slot_1.is_empty(), "{before:?}");
    for c in &of_slot_1 {
        let answer = get_from(*c, to, Duration::from_secs(3));
        assert!(answer.as_ref().is_ok_and(|s| s.slot != 1), "{c} while slot 1 is dead: {answer:?}");
    }
    // Slot 1 was dead all along (its replacement is still starting).
    assert!(!ready_slots(&p).contains_key(&1), "slot 1 is still starting");
    wait_until(Duration::from_secs(15), "slot 1 ready again", || {
        ready_slots(&p).get(&1).is_some_and(|pid| *pid != victim)
    });
    let back_at = Instant::now();
    clients.wait_for(29 * 5);
    let records = clients.finish();
    let (others, theirs): (Vec<Rec>, Vec<Rec>) = records.iter().cloned().partition(|r| !of_slot_1.contains(&r.client));
    assert_all_served(&others, "clients of the live slots");
    assert_eq!(assert_sticky(&others, "clients of the live slots").len(), 29 - of_slot_1.len());
    // The killed worker's own connections may fail (it died with them); no
    // request sent after the kill does (each has a 5 s timeout): those
    // queued on the dead slot's socket before the program left it out are
    // accepted by its replacement.
    let late: Vec<_> = theirs
        .iter()
        .filter(|r| r.sent > killed_at + Duration::from_millis(100) && r.result.is_err())
        .map(|r| (r.client, r.result.clone()))
        .collect();
    assert!(late.is_empty(), "requests of slot 1's clients failed after the crash: {late:?}");
    // ...and came back to it once it had a ready worker again.
    let after: Vec<Rec> = theirs.iter().filter(|r| r.sent > back_at + Duration::from_millis(100)).cloned().collect();
    assert_all_served(&after, "slot 1's clients after its restart");
    assert!(after.iter().all(|r| r.result.as_ref().unwrap().slot == 1));
}

fn write_config(path: &std::path::Path, workers: u32) {
    let worker = rust_worker()[0].clone();
    std::fs::write(
        path,
        format!(
            "listen = [\"127.0.0.1:0\"]\nworkers = {workers}\nbalance = \"sticky\"\nready-timeout = \"10s\"\ncommand = [\"{worker}\"]\n"
        ),
    )
    .unwrap();
}

#[test]
fn sticky_pool_shrinks_and_grows_by_config_without_a_stranded_client() {
    let dir = TempDir::new("bal");
    let cfg = dir.path("hotswap.toml");
    write_config(&cfg, 3);
    let p = Primary::bare(vec![]).config(&cfg).workers(3).start();
    let to = tcp_addr(&p);
    let clients = Clients::start(&loopback_clients(), to, Duration::from_secs(5));
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    clients.wait_for(29 * 4);

    write_config(&cfg, 2);
    let out = p.reload();
    assert!(out.contains("retired"), "{out}");
    assert_eq!(p.status()["target_workers"], 2);
    let shrunk = Instant::now();
    clients.wait_for(29 * 4);
    // Long enough for a connection stranded on slot 2's socket to show.
    std::thread::sleep(Duration::from_secs(2));

    write_config(&cfg, 3);
    let growing = Instant::now();
    p.reload();
    let grown = Instant::now();
    assert_eq!(ready_slots(&p).len(), 3);
    clients.wait_for(29 * 4);
    let records = clients.finish();
    assert_all_served(&records, "clients across 3 -> 2 -> 3 workers");
    let slowest = records.iter().max_by_key(|r| r.took).unwrap();
    assert!(slowest.took < Duration::from_millis(1500), "no connection waits: {slowest:?}");
    assert_no_failures(&load.finish(), "load across 3 -> 2 -> 3 workers");

    let two: Vec<Rec> = records.iter().filter(|r| r.sent > shrunk && r.sent < growing).cloned().collect();
    let on_two = assert_sticky(&two, "with 2 workers");
    assert!(on_two.values().all(|s| *s < 2), "{on_two:?}");
    assert_eq!(on_two.values().collect::<BTreeSet<_>>().len(), 2, "{on_two:?}");
    let three: Vec<Rec> = records.iter().filter(|r| r.sent > grown).cloned().collect();
    let on_three = assert_sticky(&three, "with 3 workers again");
    assert_eq!(on_three.values().collect::<BTreeSet<_>>().len(), 3, "{on_three:?}");
    assert!(
        p.log_text().contains("slot 2 is left out of the balance"),
        "the shrinking pool left slot 2 out first:\n{}",
        p.log_text()
    );
}

#[test]
fn sticky_clients_keep_their_slot_through_three_self_upgrades_and_a_reload_after() {
    let dir = TempDir::new("bal-up");
    let bin = dir.path("hotswap");
    copy_executable(std::path::Path::new(HOTSWAP), &bin);
    let p = Primary::builder(rust_worker()).binary(&bin).workers(3).arg("--balance").arg("sticky").start();
    let to = tcp_addr(&p);
    let clients = Clients::start(&loopback_clients(), to, Duration::from_secs(10));
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    clients.wait_for(29 * 4);
    let before = assert_sticky(&clients.snapshot(), "before the upgrades");
    let mut fds = 0;
    for i in 1..=3 {
        copy_executable(std::path::Path::new(HOTSWAP), &bin);
        let out = p.ctl(&["upgrade"]);
        assert!(out.status.success(), "upgrade {i}: {}\n{}", String::from_utf8_lossy(&out.stderr), p.log_text());
        clients.wait_for(29 * 3);
        if i == 1 {
            // (The first upgrade opens what every image keeps, e.g. the
            // previous binary's handle.)
            fds = settled("open fds", || fd_count(p.pid()));
        }
    }
    poll_until(Duration::from_secs(10), || fd_count(p.pid()) == fds);
    assert_eq!(fd_count(p.pid()), fds, "the slot sockets were handed over, not bound again");
    // New workers of the new image get the same slot sockets.
    p.reload();
    clients.wait_for(29 * 4);
    let records = clients.finish();
    assert_all_served(&records, "sticky clients across 3 upgrades and a reload");
    assert_no_failures(&load.finish(), "load across 3 upgrades and a reload");
    assert_eq!(assert_sticky(&records, "across 3 upgrades and a reload"), before);
    assert_eq!(records.last().unwrap().result.as_ref().unwrap().generation, 2);
}

#[test]
fn node_cluster_workers_get_their_slot_socket_and_clients_stick() {
    let _alone = exclusive();
    let app = root().join("tests/apps/node/cluster-cjs.js").display().to_string();
    let p = Primary::builder(vec!["node".into(), app]).workers(2).arg("--balance").arg("sticky").start();
    let to = tcp_addr(&p);
    let slot_of = |p: &Primary| -> HashMap<u64, u64> {
        Primary::ready_workers(&p.status())
            .iter()
            .map(|w| (w["pid"].as_u64().unwrap(), w["slot"].as_u64().unwrap()))
            .collect()
    };
    // Each client's requests reach one worker: per client address, the
    // slot of the worker that answered, over 5 requests.
    let rounds = |p: &Primary| -> BTreeMap<IpAddr, BTreeSet<u64>> {
        let slots = slot_of(p);
        let mut m: BTreeMap<IpAddr, BTreeSet<u64>> = BTreeMap::new();
        for c in loopback_clients() {
            for _ in 0..5 {
                let body = body_from(c, to, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{c}: {e}"));
                let pid = field(&body, "pid").unwrap_or_else(|| panic!("no pid in {body:?}"));
                m.entry(c).or_default().insert(slots[&pid]);
            }
        }
        m
    };
    let before = rounds(&p);
    assert!(before.values().all(|s| s.len() == 1), "{before:?}");
    let used: BTreeSet<u64> = before.values().flatten().copied().collect();
    assert_eq!(used, BTreeSet::from([0, 1]), "both workers get clients: {before:?}");
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    load.wait_for_requests(50);
    p.reload();
    load.wait_for_requests(50);
    assert_no_failures(&load.finish(), "load across a reload of Node cluster workers");
    assert_eq!(rounds(&p), before, "each client reaches its slot's new worker");
}

#[test]
fn an_ipv6_listener_is_sticky_too() {
    let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !v6 {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let p = Primary::bare(rust_worker()).arg("-l").arg("[::1]:0").workers(3).arg("--balance").arg("sticky").start();
    let to: SocketAddr = p.addr().parse().unwrap();
    assert!(to.is_ipv6());
    // ::1 is the only IPv6 loopback address: one client address, so every
    // connection of it reaches one slot, and the kernel's own hash of the
    // connections (--balance slots) would spread them.
    let clients = Clients::start(&[IpAddr::from(std::net::Ipv6Addr::LOCALHOST); 4], to, Duration::from_secs(10));
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    clients.wait_for(100);
    p.reload();
    clients.wait_for(100);
    let records = clients.finish();
    assert_all_served(&records, "IPv6 clients across a reload");
    assert_no_failures(&load.finish(), "IPv6 load across a reload");
    assert_sticky(&records, "IPv6 clients");
    let slots: BTreeSet<u64> = records.iter().map(|r| r.result.as_ref().unwrap().slot).collect();
    assert_eq!(slots.len(), 1, "{slots:?}");
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_are_hashed_by_their_ipv4_address() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("skipped: no IPv6");
        return;
    }
    let p = Primary::bare(rust_worker()).arg("-l").arg("[::]:0").workers(3).arg("--balance").arg("sticky").start();
    let port = p.addr().parse::<SocketAddr>().unwrap().port();
    // IPv4 clients of a dual-stack socket: their packets' network header is
    // IPv4, which the program tells by the version nibble.
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let clients = Clients::start(&loopback_clients(), to, Duration::from_secs(10));
    clients.wait_for(29 * 5);
    let records = clients.finish();
    assert_all_served(&records, "IPv4 clients of [::]");
    let per = assert_sticky(&records, "IPv4 clients of [::]");
    assert_eq!(per.values().collect::<BTreeSet<_>>().len(), 3, "{per:?}");
}

/// The inode of the socket at `fd` of process `pid` (`socket:[N]`).
fn socket_inode(pid: i32, fd: i32) -> String {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    link.display().to_string()
}

#[test]
fn slots_give_each_worker_its_own_socket_and_a_share_of_connections() {
    let p = Primary::builder(rust_worker()).workers(3).arg("--balance").arg("slots").start();
    let to = tcp_addr(&p);
    let inodes = |p: &Primary| -> BTreeMap<u64, String> {
        Primary::ready_workers(&p.status())
            .iter()
            .map(|w| (w["slot"].as_u64().unwrap(), socket_inode(w["pid"].as_i64().unwrap() as i32, 3)))
            .collect()
    };
    let before = inodes(&p);
    assert_eq!(before.len(), 3);
    assert_eq!(before.values().collect::<BTreeSet<_>>().len(), 3, "a socket per slot: {before:?}");
    // One client address, many connections: the kernel's hash of each
    // connection spreads them over every slot.
    let clients = Clients::start(&loopback_clients()[..3], to, Duration::from_secs(10));
    let load = Load::start(Target::Tcp(p.addr()), 2, 2);
    clients.wait_for(600);
    p.reload();
    clients.wait_for(300);
    let records = clients.finish();
    assert_all_served(&records, "slots clients across a reload");
    assert_no_failures(&load.finish(), "load across a reload under --balance slots");
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &records {
        *per_slot.entry(r.result.as_ref().unwrap().slot).or_default() += 1;
    }
    let (most, least) = (per_slot.values().max().unwrap(), per_slot.values().min().unwrap());
    eprintln!("--balance slots, 3 workers, {} connections: per slot {per_slot:?}", records.len());
    assert_eq!(per_slot.len(), 3, "{per_slot:?}");
    assert!(*least * 3 >= *most, "every slot gets a share: {per_slot:?}");
    // Slot k's new worker got slot k's socket: the same inode at its fd 3.
    assert_eq!(inodes(&p), before, "after a reload each slot's worker has the same socket");
    assert_eq!(p.status()["balance"], "slots");
}

#[test]
fn socket_activation_without_reuseport_is_refused_with_what_to_change() {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut p = Primary::bare(rust_worker())
        .workers(2)
        .arg("--balance")
        .arg("sticky")
        .inherit(listener.as_raw_fd(), "web")
        .no_wait()
        .start();
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1), "{}", p.log_text());
    let log = p.log_text();
    assert!(
        log.contains("--balance sticky needs SO_REUSEPORT")
            && log.contains("ReusePort=yes")
            && log.contains("or drop --balance"),
        "{log}"
    );
}

#[test]
fn socket_activation_with_reuseport_joins_the_inherited_group() {
    use std::os::fd::AsRawFd;
    // What systemd makes of a .socket unit with ReusePort=yes.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    s.listen(128).unwrap();
    let to = s.local_addr().unwrap().as_socket().unwrap();
    let p =
        Primary::bare(rust_worker()).workers(3).arg("--balance").arg("sticky").inherit(s.as_raw_fd(), "web").start();
    assert_eq!(p.status()["listeners"], serde_json::json!([to.to_string()]));
    let clients = Clients::start(&loopback_clients(), to, Duration::from_secs(10));
    clients.wait_for(29 * 4);
    p.reload();
    clients.wait_for(29 * 4);
    let records = clients.finish();
    assert_all_served(&records, "clients of an inherited ReusePort socket");
    let per = assert_sticky(&records, "clients of an inherited ReusePort socket");
    assert_eq!(per.values().collect::<BTreeSet<_>>().len(), 3, "slots 1 and 2 joined the inherited group: {per:?}");
}

#[test]
fn under_slots_no_new_connection_waits_on_a_dead_slot() {
    // The replacement takes 3 s to get ready: that long, slot 1 is dead,
    // and the kernel's own hash would send a third of the connections to
    // its socket, where they would wait for it.
    let p = Primary::builder(rust_worker())
        .workers(3)
        .arg("--balance")
        .arg("slots")
        .env("EXAMPLE_STARTUP_MS", "3000")
        .start();
    let to = tcp_addr(&p);
    let victim = ready_slots(&p)[&1];
    unsafe { libc::kill(victim, libc::SIGKILL) };
    crash_seen(&p, 1, victim);
    // A connection that waited on the dead slot's socket would be answered
    // by slot 1 once it is back (or time out): the slots say it, not a
    // wall-clock bound.
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    for _ in 0..60 {
        let answer = get_from(IpAddr::from([127, 0, 0, 2]), to, Duration::from_secs(3));
        let slot = answer.as_ref().map(|s| s.slot).unwrap_or_else(|e| panic!("while slot 1 is dead: {e}"));
        *per_slot.entry(slot).or_default() += 1;
    }
    // Slot 1 was dead all along (its replacement is still starting).
    assert!(!ready_slots(&p).contains_key(&1), "slot 1 is still starting");
    assert!(!per_slot.contains_key(&1), "{per_slot:?}");
    assert_eq!(per_slot.len(), 2, "the live slots share the connections: {per_slot:?}");
    // Once slot 1 is back, the kernel's hash spreads over all three again.
    wait_until(Duration::from_secs(15), "slot 1 ready again", || ready_slots(&p).contains_key(&1));
    let mut after: BTreeSet<u64> = BTreeSet::new();
    for _ in 0..60 {
        after.insert(get_from(IpAddr::from([127, 0, 0, 2]), to, Duration::from_secs(3)).unwrap().slot);
    }
    assert_eq!(after, BTreeSet::from([0, 1, 2]));
}

#[test]
fn a_unix_listener_stays_shared_under_sticky() {
    let dir = TempDir::new("bal-unix");
    let sock = dir.path("app.sock");
    let p = Primary::builder(rust_worker())
        .workers(2)
        .arg("--balance")
        .arg("sticky")
        .arg("-l")
        .arg(format!("admin=unix:{}", sock.display()))
        .start();
    assert!(
        p.log_text().contains("stays shared by every worker (Unix sockets have no SO_REUSEPORT)"),
        "{}",
        p.log_text()
    );
    let unix = Load::start(Target::Unix(sock.clone()), 2, 2);
    let clients = Clients::start(&loopback_clients()[..8], tcp_addr(&p), Duration::from_secs(10));
    unix.wait_for_requests(100);
    p.reload();
    unix.wait_for_requests(100);
    clients.wait_for(40);
    assert_no_failures(&unix.finish(), "Unix listener under sticky across a reload");
    let records = clients.finish();
    assert_all_served(&records, "TCP clients next to a Unix listener");
    assert_sticky(&records, "TCP clients next to a Unix listener");
    // Both workers got both sockets: the TCP one of their slot, the Unix one shared.
    for w in Primary::ready_workers(&p.status()) {
        let pid = w["pid"].as_i64().unwrap() as i32;
        assert!(socket_inode(pid, 3).starts_with("socket:"));
        assert!(socket_inode(pid, 4).starts_with("socket:"));
    }
}

#[test]
fn a_config_reload_keeps_the_balance_mode_and_says_it_needs_a_restart() {
    let dir = TempDir::new("bal-cfg");
    let cfg = dir.path("hotswap.toml");
    write_config(&cfg, 2);
    let p = Primary::bare(vec![]).config(&cfg).workers(2).start();
    let text = std::fs::read_to_string(&cfg).unwrap().replace("balance = \"sticky\"", "balance = \"shared\"");
    std::fs::write(&cfg, text).unwrap();
    p.reload();
    assert!(p.log_text().contains("changes to balance take effect only after a restart"), "{}", p.log_text());
    assert_eq!(p.status()["balance"], "sticky");
    let clients = Clients::start(&loopback_clients()[..8], tcp_addr(&p), Duration::from_secs(5));
    clients.wait_for(40);
    let records = clients.finish();
    assert_all_served(&records, "after the reload");
    assert_sticky(&records, "after a reload that asked for shared");
}

#[test]
fn scale_under_balance_slots_fails_no_request() {
    let p = Primary::builder(rust_worker()).workers(2).arg("--balance").arg("slots").start();
    let load = Load::start(Target::Tcp(p.addr()), 4, 2);
    load.wait_for_requests(100);
    let count = |s: &serde_json::Value| s["workers"].as_array().unwrap().len();
    for (step, workers) in [("4", 4), ("-3", 1), ("+2", 3)] {
        let out = p.ctl(&["scale", step]);
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "scale {step}: {said}");
        let st = p.status();
        assert_eq!((count(&st), Primary::ready_workers(&st).len()), (workers, workers), "scale {step}: {st}");
        // Every slot's socket is served again before the next step.
        load.wait_for_requests(200);
    }
    p.reload();
    load.wait_for_requests(200);
    assert_eq!(p.status()["balance"], "slots");
    assert_no_failures(&load.finish(), "--balance slots: scale 2 -> 4 -> 1 -> 3, then a reload");
}
