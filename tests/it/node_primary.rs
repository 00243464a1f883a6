//! The app's own cluster primary runs (docs/node-primary.md): unchanged
//! apps in the clustering guides' patterns (tests/apps/node/) whose
//! primary counts, gathers logs, hands out tasks and broadcasts keep
//! doing so across rolling reloads under load, with no failed request;
//! a plain app and `--node-primary off` get no primary.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;

fn app(name: &str) -> Vec<String> {
    let path = root().join("tests/apps/node").join(name);
    assert!(path.exists(), "{} missing", path.display());
    vec!["node".into(), path.display().to_string()]
}

/// The pid of the app's primary, from hotswap's log.
fn primary_pid(log: &str) -> i32 {
    log.lines()
        .find_map(|l| l.split("the app's own cluster primary started (pid ").nth(1))
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the app's primary did not start:\n{log}"))
}

/// `key=N` (or `key = N`) in the last line of the primary's output that
/// has it, with that line's pid.
fn last_value(log: &str, key: &str) -> Option<(i32, u64)> {
    log.lines().rev().find_map(|l| {
        let label = l.strip_prefix('[')?.split(']').next()?;
        let pid: i32 = label.split_whitespace().last()?.parse().ok()?;
        let after = l.split(&format!("{key}=")).nth(1).or_else(|| l.split(&format!("{key} = ")).nth(1))?;
        Some((pid, after.split_whitespace().next()?.parse().ok()?))
    })
}

/// Two rolling reloads under keep-alive and new-connection load; returns
/// the requests answered. `between` runs after each reload.
fn two_reloads_under_load(p: &Primary, gap: Duration, mut between: impl FnMut(u64)) -> usize {
    let load = Load::paced(Target::Tcp(p.addr()), 3, 1, gap);
    load.wait_for_requests(100);
    for generation in 2..=3 {
        let out = p.reload();
        assert!(out.contains(&format!("generation {generation} serves (2 workers replaced)")), "{out}");
        load.wait_for_requests(100);
        between(generation);
    }
    let records = load.finish();
    assert_no_failures(&records, "load across reloads");
    records.len()
}

#[test]
fn the_docs_request_counter_counts_every_request_across_reloads() {
    let _alone = exclusive();
    let p = Primary::builder(app("request-counter.js")).workers(2).start();
    let primary = primary_pid(&p.log_text());
    let events = EventStream::start(&p);
    let mut seen = Vec::new();
    let served = two_reloads_under_load(&p, Duration::from_millis(2), |_| {
        wait_until(Duration::from_secs(10), "a numReqs line", || last_value(&p.log_text(), "numReqs").is_some());
        seen.push(last_value(&p.log_text(), "numReqs").unwrap().1);
    });
    // Every answered request was counted (± those in flight when the load
    // stopped: the count is printed every second).
    let counted = || last_value(&p.log_text(), "numReqs").map(|(_, n)| n as usize).unwrap_or(0);
    wait_until(Duration::from_secs(15), format_args!("numReqs to reach {served}"), || counted() >= served);
    let (pid, n) = last_value(&p.log_text(), "numReqs").unwrap();
    assert!(n as usize <= served + 8, "numReqs {n} for {served} requests answered");
    assert_eq!(pid, primary, "one primary all along: its count survived the reloads");
    // Printed once a second: two reloads may fall in the same second.
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen[0] > 0 && n > seen[0],
        "the count rises across reloads: {seen:?} then {n}"
    );
    assert!(killed_exits(&events.so_far()).is_empty(), "no worker was killed");
}

#[test]
fn every_log_line_arrives_and_every_task_is_answered_across_reloads() {
    let _alone = exclusive();
    let p = Primary::builder(app("task-queue.js")).workers(2).start();
    // Paced: a debug build of hotswap carries some 3,000 messages a second
    // to the primary on a loaded 2-core machine (docs/node-primary.md); a
    // retiring worker's backlog past that is what it waits for.
    let served = two_reloads_under_load(&p, Duration::from_millis(2), |_| {});
    let log = || p.log_text();
    // Every request's log line reached the primary.
    wait_until(Duration::from_secs(15), format_args!("logs={served}"), || {
        last_value(&log(), "logs").is_some_and(|(_, n)| n as usize >= served)
    });
    let (_, logs) = last_value(&log(), "logs").unwrap();
    assert!(logs as usize <= served + 8, "logs={logs} for {served} requests answered");
    // Every task handed out was answered, once; none waits for long.
    let (_, created) = last_value(&log(), "created").unwrap();
    assert!(created > 200, "the primary made tasks: {created}");
    wait_until(Duration::from_secs(10), "every task created so far answered", || {
        last_value(&log(), "answered").is_some_and(|(_, a)| a >= created)
    });
    assert!(!log().contains("answered twice"), "{}", log());
    assert!(!log().contains("killing it"), "{}", log());
}

#[test]
fn broadcasts_reach_every_worker_including_a_reloads() {
    let _alone = exclusive();
    let p = Primary::builder(app("broadcast.js")).workers(2).start();
    let target = Target::Tcp(p.addr());
    let check = |what: &str| {
        let pids: HashSet<i32> = p.worker_pids().into_iter().collect();
        let mut heard = HashSet::new();
        wait_until(Duration::from_secs(20), format_args!("every worker {what} heard a tick"), || {
            if let Ok(a) = get(&target, "/") {
                let pid = a.body.split("pid=").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<i32>().ok());
                let ticks =
                    a.body.split("ticks=").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok());
                if let (Some(pid), Some(t)) = (pid, ticks) {
                    if t > 0 && a.body.contains("welcomed=true") {
                        heard.insert(pid);
                    }
                }
            }
            pids.is_subset(&heard)
        });
    };
    check("of the first generation");
    two_reloads_under_load(&p, Duration::ZERO, |g| check(&format!("of generation {g}")));
    // The app forks on every exit: each of those forks got the reload's
    // replacement; none waited for a worker, the pool did not grow.
    let log = p.log_text();
    assert_eq!(log.matches("(after disconnect: true); forking another").count(), 4, "{log}");
    assert!(!log.contains("called cluster.fork() with all"), "{log}");
    assert_eq!(p.worker_pids().len(), 2);
}

#[test]
fn plain_apps_and_node_primary_off_get_no_primary() {
    let _alone = exclusive();
    let plain = Primary::builder(app("timer-app.js")).workers(1).start();
    let cluster = Primary::builder(app("request-counter.js")).workers(1).arg("--node-primary").arg("off").start();
    for p in [&plain, &cluster] {
        get(&Target::Tcp(p.addr()), "/").expect("it serves");
        assert!(!p.log_text().contains("cluster primary"), "{}", p.log_text());
    }
}

/// A line of JSON from a child's stdout, read on a thread so that a hang
/// fails the test instead of stalling it.
fn json_lines(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

#[test]
fn the_socketio_cluster_example_serves_from_its_primary_across_reloads() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let _alone = exclusive();
    // The guide's example: the primary listens (sticky's setupMaster) and
    // hands every connection to a worker; the workers listen on nothing.
    let p = Primary::builder(app("socketio-cluster.js")).workers(2).start();
    let log = p.log_text();
    let primary = primary_pid(&log);
    wait_until(Duration::from_secs(10), "the primary to listen", || {
        p.log_text().contains("the app's cluster primary listens on")
    });
    const CLIENTS: u64 = 12;
    let mut client = Command::new("node")
        .arg(root().join("tests/apps/node/socketio-broadcast-client.js"))
        .args(["--url", &format!("http://{}", p.addr()), "--clients", &CLIENTS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let said = json_lines(client.stdout.take().unwrap());
    let mut stdin = client.stdin.take().unwrap();
    let next = |what: &str| {
        said.recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| panic!("the Socket.IO clients said nothing of {what}:\n{}", p.log_text()))
    };
    assert_eq!(next("connecting")["connected"], CLIENTS, "every client connects");
    let mut round = |n: u64| {
        writeln!(stdin, "round {n}").unwrap();
        let r = next(&format!("round {n}"));
        assert_eq!(r["received"], CLIENTS, "round {n}: io.emit reaches every client: {r}\n{}", p.log_text());
        r
    };
    // The clients are on both workers: the news crossed from one worker to
    // the other's clients through the primary (the cluster adapter).
    assert_eq!(round(1)["workers"], 2);
    // Plain HTTP through the primary's sticky routing all along.
    let load = Load::paced(Target::Tcp(p.addr()), 2, 2, Duration::from_millis(2));
    load.wait_for_requests(100);
    for generation in 2..=3 {
        let old = p.worker_pids();
        let out = p.reload();
        assert!(out.contains(&format!("generation {generation} serves (2 workers replaced)")), "{out}");
        // The retired workers' clients reconnect through the primary.
        wait_until(Duration::from_secs(20), "the retired workers to exit", || old.iter().all(|&pid| process_gone(pid)));
        load.wait_for_requests(100);
        round(generation);
    }
    let records = load.finish();
    assert_no_failures(&records, "HTTP through the primary across reloads");
    drop(stdin);
    let done = next("the end");
    // A handshake may fail, and be retried by the client, only as sticky
    // itself lets it: a request of a session that sticky's primary does not
    // know (yet) goes to another worker (docs/node-primary.md, "Not done
    // yet"). Nothing else: no reset, no lost connection.
    let errors = done["connectErrorTexts"].as_array().unwrap();
    assert!(
        errors.iter().all(|e| e.as_str().unwrap().contains("Session ID unknown")),
        "no handshake failed but for sticky's session race: {done}"
    );
    let _ = client.wait();
    let log = p.log_text();
    assert_eq!(log.matches("the app's own cluster primary started").count(), 1, "one primary all along:\n{log}");
    assert!(!log.contains(&format!("(pid {primary}) exited")), "{log}");
    assert!(!log.contains("no worker can take it"), "{log}");
}

/// A port free now (the app binds it itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_zeromq_pool_answers_every_request_across_reloads() {
    use std::process::{Command, Stdio};
    let _alone = exclusive();
    let (front, back) = (free_port(), free_port());
    // The primary binds its ROUTERs itself (libzmq's own bind): it lives
    // through every reload, so its ports stay bound.
    let p = Primary::builder(app("zmq-pool.js"))
        .workers(2)
        .env("ZMQ_PORT", front.to_string())
        .env("ZMQ_BACKEND_PORT", back.to_string())
        .start();
    let primary = primary_pid(&p.log_text());
    let mut client = Command::new("node")
        .arg(root().join("tests/apps/node/zmq-client.js"))
        .args(["--endpoint", &format!("tcp://127.0.0.1:{front}"), "--clients", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let said = json_lines(client.stdout.take().unwrap());
    let stdin = client.stdin.take().unwrap();
    // Answers flowing (the client says every 100).
    let answers = || said.recv_timeout(Duration::from_secs(60)).expect("the ZeroMQ clients report");
    answers();
    for generation in 2..=3 {
        let out = p.reload();
        assert!(out.contains(&format!("generation {generation} serves (2 workers replaced)")), "{out}");
        answers();
    }
    drop(stdin);
    let done = loop {
        let v = answers();
        if v.get("sent").is_some() {
            break v;
        }
    };
    let _ = client.wait();
    assert_eq!(done["lost"], 0, "every request answered: {done}\n{}", p.log_text());
    assert!(done["answered"].as_u64().unwrap() >= 300, "{done}");
    // Old and new workers answered (2 per generation).
    assert!(done["pids"].as_array().unwrap().len() >= 4, "{done}");
    let log = p.log_text();
    assert_eq!(log.matches("the app's own cluster primary started").count(), 1, "one primary all along:\n{log}");
    assert!(!log.contains(&format!("(pid {primary}) exited")), "{log}");
}
