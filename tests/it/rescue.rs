//! Rescue: unchanged stock servers, with their own graceful stop (stop
//! accepting, close idle keep-alive connections at once, finish what is in
//! flight) and no hotswap code or preload, lose no request across reloads
//! under paced keep-alive load; with `--rescue off` they do.

use std::time::Duration;

use crate::common::*;

/// The asyncio server of tests/fixtures, written the stock way.
fn stock_asyncio() -> Vec<String> {
    vec!["python3".into(), fixture("stock_asyncio.py")]
}

/// What one run of `reloads` reloads under paced keep-alive load gave.
struct Run {
    failed: usize,
    total: usize,
    answers: Vec<String>,
    log: String,
}

/// `reloads` reloads of `p` under 4 keep-alive clients pausing `gap`
/// between requests.
fn reloads_under_paced_load(p: &Primary, reloads: usize, gap: Duration) -> Run {
    let load = Load::paced(Target::Tcp(p.addr()), 4, 0, gap);
    load.wait_for_requests(40);
    let mut answers = Vec::new();
    for _ in 0..reloads {
        answers.push(p.reload());
        load.wait_for_requests(40);
    }
    let records = load.finish();
    let failures: Vec<_> = records.iter().filter_map(|r| r.result.as_ref().err()).collect();
    if !failures.is_empty() {
        eprintln!("{} of {} failed, e.g. {:?}", failures.len(), records.len(), &failures[..failures.len().min(3)]);
    }
    Run { failed: failures.len(), total: records.len(), answers, log: p.log_text() }
}

fn start(command: Vec<String>, rescue: &str) -> Primary {
    Primary::builder(command).arg("--rescue").arg(rescue).arg("--ready").arg("accepting").start()
}

/// The fixture: 0 failed with rescue, at 2 ms and 20 ms between requests.
#[test]
fn stock_asyncio_loses_nothing_with_rescue() {
    for gap in [2, 20] {
        let p = start(stock_asyncio(), "on");
        let run = reloads_under_paced_load(&p, 3, Duration::from_millis(gap));
        assert_eq!(run.failed, 0, "{gap} ms: {} of {} failed; log:\n{}", run.failed, run.total, run.log);
        assert!(run.total > 100, "the load ran: {}", run.total);
        eprintln!("stock asyncio, rescue on, {gap} ms: 0 of {} failed; {:?}", run.total, run.answers);
    }
}

/// The same without rescue loses requests (the contrast the rescue closes).
#[test]
fn stock_asyncio_loses_requests_without_rescue() {
    let mut lost = 0;
    for gap in [2, 20] {
        let p = start(stock_asyncio(), "off");
        let run = reloads_under_paced_load(&p, 3, Duration::from_millis(gap));
        eprintln!("stock asyncio, rescue off, {gap} ms: {} of {} failed", run.failed, run.total);
        lost += run.failed;
    }
    assert!(lost > 0, "without rescue, a stock graceful stop loses requests");
}
