//! Each rule of a stop, without a process.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_first_request_begins_a_client_joins_a_signal_forces() {
    assert_eq!(request(false, false), Request::Begin, "SIGTERM");
    assert_eq!(request(false, true), Request::Begin, "hotswap stop");
    assert_eq!(request(true, true), Request::Join, "a second hotswap stop waits for the same end");
    assert_eq!(request(true, false), Request::Force, "a second SIGTERM kills");
}

#[test]
fn the_announcement_counts_workers() {
    assert_eq!(announce(1), "stopping 1 worker");
    assert_eq!(announce(0), "stopping 0 workers");
    assert_eq!(announce(4), "stopping 4 workers");
}

#[test]
fn systemd_is_given_the_longest_drain_plus_the_margin() {
    assert_eq!(budget([ms(500), ms(40_000), ms(3_000)], ms(30_000)), ms(40_000) + STOP_MARGIN);
    assert_eq!(budget([ms(500)], ms(30_000)), ms(30_000) + STOP_MARGIN, "the serving generation's at least");
    assert_eq!(budget([], ms(2_000)), ms(2_000) + STOP_MARGIN, "no worker");
}

#[test]
fn a_worker_ready_by_its_own_message_is_told_shutdown() {
    assert_eq!(Way::of(false, true, Some(ReadyVia::Ipc), ReadyMode::Ipc, true), Way::Ipc);
    assert_eq!(Way::of(false, true, Some(ReadyVia::Ipc), ReadyMode::Auto, true), Way::Ipc);
}

#[test]
fn a_worker_ready_another_way_gets_the_stop_signal() {
    for via in [ReadyVia::Accepting, ReadyVia::Notify, ReadyVia::Assumed] {
        assert_eq!(Way::of(false, true, Some(via), ReadyMode::Auto, true), Way::Signal, "{via}");
    }
}

#[test]
fn a_worker_whose_channel_closed_gets_the_stop_signal() {
    assert_eq!(Way::of(false, false, Some(ReadyVia::Ipc), ReadyMode::Ipc, true), Way::Signal);
    assert_eq!(Way::of(true, false, Some(ReadyVia::Cluster), ReadyMode::Auto, true), Way::Signal, "Node too");
}

#[test]
fn a_starting_worker_is_told_the_way_its_mode_says() {
    assert_eq!(Way::of(false, true, None, ReadyMode::Ipc, false), Way::Ipc);
    assert_eq!(Way::of(false, true, None, ReadyMode::IpcOrNotify, false), Way::Ipc);
    assert_eq!(Way::of(false, true, None, ReadyMode::Accepting, true), Way::Signal);
    assert_eq!(Way::of(false, true, None, ReadyMode::Notify, false), Way::Signal);
    assert_eq!(Way::of(false, true, None, ReadyMode::None, false), Way::Signal);
}

#[test]
fn under_auto_a_starting_worker_gets_shutdown_only_if_it_spoke_ipc() {
    assert_eq!(Way::of(false, true, None, ReadyMode::Auto, false), Way::Signal);
    assert_eq!(Way::of(false, true, None, ReadyMode::Auto, true), Way::Ipc);
}

#[test]
fn a_node_cluster_worker_is_disconnected_and_told_shutdown_if_it_said_ready() {
    assert_eq!(Way::of(true, true, Some(ReadyVia::Cluster), ReadyMode::Auto, true), Way::Node { shutdown: false });
    assert_eq!(Way::of(true, true, Some(ReadyVia::Ipc), ReadyMode::Auto, true), Way::Node { shutdown: true });
    assert_eq!(Way::of(true, true, None, ReadyMode::Accepting, false), Way::Node { shutdown: false });
}

#[test]
fn a_draining_worker_is_killed_at_its_timeout_and_a_node_one_signalled_halfway() {
    assert_eq!(deadlines(3, ms(30_000), false), vec![(ms(30_000), Timer::Shutdown(3))]);
    assert_eq!(
        deadlines(3, ms(30_000), true),
        vec![(ms(30_000), Timer::Shutdown(3)), (ms(15_000), Timer::StopSignal(3))]
    );
}

#[test]
fn a_worker_is_killed_at_its_deadline_only_if_still_stopping_and_once() {
    assert!(kill_at_deadline(WorkerState::Stopping, false));
    assert!(!kill_at_deadline(WorkerState::Stopping, true), "once");
    assert!(!kill_at_deadline(WorkerState::Ready, false));
    assert!(!kill_at_deadline(WorkerState::Starting, false));
}

#[test]
fn a_clean_stop_exits_0_and_tells_its_clients_done() {
    let stop = Stop::new(None);
    assert_eq!(stop.kills(), None);
    assert_eq!(stop.outcome(), (0, "stopped".to_string()));
    assert!(matches!(stop.reply(), Reply::Done { message } if message == "stopped"));
}

#[test]
fn a_forced_stop_exits_1() {
    let stop = Stop { forced: true, ..Stop::default() };
    assert_eq!(stop.outcome(), (1, "stopped".to_string()));
    assert!(matches!(stop.reply(), Reply::Error { error } if error == "stopped"));
}

#[test]
fn a_stop_that_had_to_kill_exits_1_and_says_what() {
    let one = Stop { killed: 1, ..Stop::default() };
    assert_eq!(one.outcome(), (1, "stopped, but 1 worker had to be killed instead of exiting by itself".into()));
    let two = Stop { killed: 2, ..Stop::default() };
    assert_eq!(two.kills().unwrap(), "2 workers had to be killed instead of exiting by itself");
    assert!(matches!(two.reply(), Reply::Error { .. }));
}

#[test]
fn adopted_processes_killed_are_counted_apart() {
    let a = Stop { adopted_killed: 1, ..Stop::default() };
    assert_eq!(
        a.kills().unwrap(),
        "1 adopted process (left by workers) had to be killed instead of exiting on --stop-signal"
    );
    let both = Stop { killed: 1, adopted_killed: 2, ..Stop::default() };
    assert_eq!(
        both.kills().unwrap(),
        "3 processes had to be killed instead of exiting by themselves: 1 worker (at --shutdown-timeout) \
         and 2 adopted processes (left by workers)"
    );
    assert_eq!(both.outcome().0, 1);
}

#[test]
fn a_client_that_asked_waits_for_the_end() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    assert_eq!(Stop::new(Some(tx)).waiters.len(), 1);
    assert!(Stop::new(None).waiters.is_empty());
}
