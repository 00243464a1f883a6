//! Each change of a worker's state, without a process: the accept watch is
//! `()`, the time it took is given.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const PROBED: How = How::Probe { conn: 7 };

fn starting() -> Life<()> {
    Life::start(None)
}

fn ready(via: ReadyVia) -> Life<()> {
    let mut life = starting();
    assert!(life.ready(via, ms(120), Some(PROBED)).is_some());
    life
}

#[test]
fn a_new_worker_is_starting_and_would_be_replaced() {
    let life = Life::<()>::start(Some((10, 0)));
    assert_eq!(life.state(), WorkerState::Starting);
    assert!(life.respawn());
    assert_eq!((life.readiness(), life.killed(), life.not_ready()), (None, None, None));
    let s = life.starting().unwrap();
    assert_eq!((s.warm, s.notified, s.health), (Some((10, 0)), false, Health::Unchecked));
}

#[test]
fn getting_ready_records_how_and_how_long_and_gives_back_the_warm_up() {
    let mut life = Life::<()>::start(Some((10, 0)));
    let left = life.ready(ReadyVia::Accepting, ms(250), Some(PROBED)).expect("it was starting");
    assert_eq!(left.warm, Some((10, 0)), "its priority is given back by the caller");
    assert_eq!(life.state(), WorkerState::Ready);
    let r = life.readiness().unwrap();
    assert_eq!((r.via, r.took, r.proof()), (ReadyVia::Accepting, Some(ms(250)), Some(PROBED)));
    assert!(life.starting().is_none(), "nothing of its start is left");
    assert!(life.respawn());
}

#[test]
fn ready_twice_changes_nothing() {
    let mut life = ready(ReadyVia::Ipc);
    assert!(life.ready(ReadyVia::Notify, ms(999), None).is_none(), "it was not starting");
    let r = life.readiness().unwrap();
    assert_eq!((r.via, r.took), (ReadyVia::Ipc, Some(ms(120))));
}

#[test]
fn a_worker_ready_by_its_accepts_that_announces_later_is_ready_by_its_announcement() {
    let mut life = ready(ReadyVia::Accepting);
    assert!(life.ready(ReadyVia::Ipc, ms(999), None).is_none());
    let r = life.readiness().unwrap();
    assert_eq!(r.via, ReadyVia::Ipc, "it is stopped over IPC now");
    assert_eq!(r.took, Some(ms(120)), "it got ready when it did");
    assert_eq!(r.proof(), None, "its accepts no longer count");

    let mut life = ready(ReadyVia::Accepting);
    let _ = life.ready(ReadyVia::Notify, ms(999), None);
    assert_eq!(life.readiness().unwrap().proof(), Some(PROBED), "READY=1 and its accepts: the proof stands");
}

#[test]
fn the_proof_counts_only_for_a_worker_ready_by_its_accepts() {
    for (via, proof) in [
        (ReadyVia::Accepting, Some(PROBED)),
        (ReadyVia::Notify, Some(PROBED)),
        (ReadyVia::Ipc, None),
        (ReadyVia::Cluster, None),
        (ReadyVia::Assumed, None),
    ] {
        assert_eq!(ready(via).readiness().unwrap().proof(), proof, "{via:?}");
    }
}

#[test]
fn a_stopped_ready_worker_says_how_it_was_ready_and_is_not_replaced() {
    let mut life = ready(ReadyVia::Cluster);
    assert!(life.stop().is_none(), "nothing of a start to give back");
    assert_eq!(life.state(), WorkerState::Stopping);
    assert!(!life.respawn());
    assert_eq!(life.readiness().map(|r| r.via), Some(ReadyVia::Cluster), "status still says it");
    assert_eq!((life.killed(), life.not_ready()), (None, None));
}

#[test]
fn a_worker_stopped_while_starting_gives_back_its_warm_up() {
    let mut life = Life::<()>::start(Some((10, 0)));
    let left = life.stop().expect("it was starting");
    assert_eq!(left.warm, Some((10, 0)));
    assert_eq!(life.state(), WorkerState::Stopping);
    assert_eq!((life.readiness(), life.not_ready()), (None, None));
    assert!(!life.respawn());
}

#[test]
fn a_starting_worker_failed_and_stopped_says_why_at_its_exit() {
    let mut life = starting();
    life.fail("health check: 500".into());
    assert_eq!(life.not_ready(), Some("health check: 500"), "while it is told to go");
    assert_eq!(life.state(), WorkerState::Starting);
    let _ = life.stop();
    assert_eq!(life.not_ready(), Some("health check: 500"));
    assert!(!life.respawn(), "a reload's worker that drains is not replaced");
}

#[test]
fn a_ready_worker_cannot_be_given_a_reason_it_never_was() {
    let mut life = ready(ReadyVia::Ipc);
    life.fail("too late".into());
    assert_eq!(life.not_ready(), None);
    let _ = life.kill(Killed::ShutdownTimeout);
    assert_eq!(life.not_ready(), None);
}

#[test]
fn a_worker_killed_at_its_ready_deadline_is_replaced_and_says_why() {
    let mut life = Life::<()>::start(Some((10, 0)));
    life.fail("not ready within 1s".into());
    let k = life.kill(Killed::ReadyTimeout);
    assert!(k.signal, "the first kill signals");
    assert_eq!(k.left.map(|s| s.warm), Some(Some((10, 0))), "its priority is given back");
    assert_eq!(life.state(), WorkerState::Stopping);
    assert_eq!(life.killed(), Some(Killed::ReadyTimeout));
    assert_eq!(life.not_ready(), Some("not ready within 1s"));
    assert!(life.respawn(), "a crash, in effect: its slot starts again after the backoff");
}

#[test]
fn only_the_first_kill_signals_and_its_reason_stands() {
    let mut life = ready(ReadyVia::Ipc);
    let _ = life.stop();
    let first = life.kill(Killed::ShutdownTimeout);
    assert!(first.signal && first.left.is_none());
    let again = life.kill(Killed::ForcedStop);
    assert!(!again.signal);
    assert_eq!(life.killed(), Some(Killed::ShutdownTimeout));
    assert!(!life.respawn(), "killed after it was told to go: still not replaced");
    assert_eq!(life.readiness().map(|r| r.via), Some(ReadyVia::Ipc));
}

#[test]
fn a_killed_worker_told_to_go_keeps_why_it_was_killed() {
    let mut life = starting();
    let _ = life.kill(Killed::ReadyTimeout);
    assert!(life.respawn());
    assert!(life.stop().is_none());
    assert_eq!(life.killed(), Some(Killed::ReadyTimeout));
    assert!(!life.respawn());
}

#[test]
fn retiring_a_stopping_worker_ends_its_replacement() {
    // A reload that fails gives up its new worker killed at its deadline.
    let mut life = starting();
    let _ = life.kill(Killed::Abandoned);
    assert!(life.respawn());
    life.retire();
    assert!(!life.respawn());
    assert_eq!(life.killed(), Some(Killed::Abandoned));
}

#[test]
fn retire_leaves_a_starting_or_ready_worker_as_it_is() {
    let mut life = starting();
    life.retire();
    assert_eq!((life.state(), life.respawn()), (WorkerState::Starting, true));
    let mut life = ready(ReadyVia::Ipc);
    life.retire();
    assert_eq!((life.state(), life.respawn()), (WorkerState::Ready, true));
}

#[test]
fn a_stopping_worker_never_becomes_ready() {
    let mut life = starting();
    let _ = life.stop();
    assert!(life.ready(ReadyVia::Ipc, ms(5), None).is_none());
    assert_eq!((life.state(), life.readiness()), (WorkerState::Stopping, None));
}

#[test]
fn stopping_twice_keeps_the_first_stop() {
    let mut life = ready(ReadyVia::Notify);
    let _ = life.stop();
    assert!(life.stop().is_none());
    assert_eq!(life.readiness().map(|r| r.via), Some(ReadyVia::Notify));
}

/// Every life, written to the handover's fields and read back (with `said_ready`
/// standing for the watch).
#[test]
fn the_handover_record_reads_back_every_state() {
    let mut with_warm = Life::<bool>::start(Some((10, 0)));
    let s = with_warm.starting_mut().unwrap();
    (s.notified, s.accept, s.health) = (true, true, Health::Checking(ReadyVia::Notify));
    let mut lives = vec![with_warm, Life::<bool>::start(None)];
    let mut r = Life::<bool>::start(None);
    let _ = r.ready(ReadyVia::Accepting, ms(1500), Some(PROBED));
    lives.push(r);
    let mut stopped = Life::<bool>::start(None);
    let _ = stopped.ready(ReadyVia::Ipc, ms(7), None);
    let _ = stopped.stop();
    let _ = stopped.kill(Killed::ShutdownTimeout);
    lives.push(stopped);
    let mut killed = Life::<bool>::start(None);
    let _ = killed.kill(Killed::ReadyTimeout);
    lives.push(killed);
    for life in &lives {
        let record = life.record(|said| *said);
        let back = Life::from_record(&record, |said| said);
        assert_eq!(back.record(|said| *said), record, "{life:?}");
        assert_eq!(back.state(), life.state());
        assert_eq!(back.readiness().map(|r| (r.via, r.took)), life.readiness().map(|r| (r.via, r.took)));
        assert_eq!((back.killed(), back.respawn()), (life.killed(), life.respawn()));
    }
    let r = lives[0].record(|said| *said);
    assert_eq!((r.state, r.notified, r.said_ready, r.ready_via), (WorkerState::Starting, true, true, None));
    let back = Life::from_record(&r, |said| said);
    let s = back.starting().unwrap();
    assert_eq!((s.health, s.warm), (Health::Unchecked, None), "a running check and the warm-up are not carried");
    let r = lives[2].record(|said| *said);
    assert_eq!((r.ready_via, r.ready_ms, r.killed, r.respawn), (Some(ReadyVia::Accepting), Some(1500), false, true));
    assert_eq!(Life::from_record(&r, |said| said).readiness().unwrap().proof(), None, "looks start again");
    let r = lives[3].record(|said| *said);
    assert_eq!(
        (r.state, r.ready_via, r.killed, r.killed_for),
        (WorkerState::Stopping, Some(ReadyVia::Ipc), true, Some(Killed::ShutdownTimeout))
    );
    assert!(!r.respawn);
}

#[test]
fn an_older_images_record_is_read_as_it_meant() {
    let old = Record {
        state: WorkerState::Stopping,
        ready_via: None,
        ready_ms: None,
        respawn: false,
        killed: true,
        killed_for: None,
        notified: false,
        said_ready: false,
    };
    let life = Life::<()>::from_record(&old, |_| ());
    assert_eq!(life.killed(), Some(Killed::ShutdownTimeout), "killed without why");
    let ready = Record { state: WorkerState::Ready, killed: false, respawn: true, ..old };
    let r = *Life::<()>::from_record(&ready, |_| ()).readiness().unwrap();
    assert_eq!((r.via, r.took), (ReadyVia::Assumed, None), "ready without how or how long");
}
