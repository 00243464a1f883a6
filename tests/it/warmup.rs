//! `--warmup-nice`: a worker started while others serve runs at a lower
//! CPU priority until it is ready, then at the primary's; the first
//! generation starts at the primary's. Under load, with no failed request.

use std::time::Duration;

use crate::common::*;

/// The nice value of process `pid` (field 19 of /proc/PID/stat).
fn nice(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(16)?.parse().ok()
}

fn own_nice() -> i64 {
    nice(std::process::id() as i32).unwrap()
}

/// The pid of the worker that is starting, once there is one.
fn starting_pid(p: &Primary) -> i32 {
    let mut pid = 0;
    wait_until(Duration::from_secs(20), "a starting worker", || {
        let s = p.status();
        let w = s["workers"].as_array().unwrap().iter().find(|w| w["state"] == "starting").cloned();
        pid = w.map_or(0, |w| w["pid"].as_i64().unwrap() as i32);
        pid != 0
    });
    pid
}

#[test]
fn a_new_worker_warms_up_at_a_lower_priority_and_serves_at_the_primarys() {
    let base = own_nice();
    if base >= 10 {
        return; // the test itself runs niced: nothing to see
    }
    let p = Primary::builder(rust_worker())
        .workers(2)
        .env("EXAMPLE_STARTUP_MS", "1500")
        .arg("--warmup-nice")
        .arg("10")
        .start();
    for pid in p.worker_pids() {
        assert_eq!(nice(pid), Some(base), "the first generation starts at the primary's priority");
    }
    if p.log_text().contains("could not give them") {
        return; // no CAP_SYS_NICE here: workers start at the primary's priority
    }
    let load = Load::start(Target::Tcp(p.addr()), 2, 1);
    load.wait_for_requests(50);
    let reload = std::thread::scope(|s| {
        let r = s.spawn(|| p.reload());
        let pid = starting_pid(&p);
        assert_eq!(nice(pid), Some(10), "a new worker warms up at nice 10");
        wait_until(Duration::from_secs(20), "the new worker to be ready", || {
            Primary::ready_workers(&p.status()).iter().any(|w| w["pid"].as_i64() == Some(pid as i64))
        });
        wait_until(Duration::from_secs(5), "its priority back", || nice(pid) == Some(base));
        r.join().unwrap()
    });
    assert!(reload.contains("generation 2 serves"), "{reload}");
    assert_no_failures(&load.finish(), "load across a reload with warm-up priority");
}

#[test]
fn by_default_new_workers_start_at_the_primarys_priority() {
    let base = own_nice();
    let p = Primary::builder(rust_worker()).workers(1).env("EXAMPLE_STARTUP_MS", "1500").start();
    std::thread::scope(|s| {
        let r = s.spawn(|| p.reload());
        assert_eq!(nice(starting_pid(&p)), Some(base));
        r.join().unwrap();
    });
}
