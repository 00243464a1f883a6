//! Each rule of a quiesce, with injected time and no process.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn conn(read: u64, written: u64) -> Standing {
    Standing { read, written, unread: 0, unsent: 0, since_sent: ms(0), since_recv: ms(0) }
}

fn held(in_flight: usize, stopped: bool) -> Seen {
    Seen::Held { in_flight, stopped }
}

fn h(caught: bool, ignored: bool, blocked: bool) -> Handling {
    Handling { caught, ignored, blocked }
}

#[test]
fn only_a_worker_that_dies_at_its_stop_signal_is_quiesced() {
    let none = Handling::default();
    assert!(applies(true, "SIGTERM", none, false, false), "Python's http.server, waitress");
    assert!(applies(true, "SIGINT", none, false, false));
    assert!(!applies(true, "SIGTERM", h(true, false, false), false, false), "a handler: it drains (or says so)");
    assert!(!applies(true, "SIGQUIT", h(false, true, false), false, false), "ignored: php -S and SIGQUIT");
    assert!(!applies(true, "SIGTERM", h(false, false, true), false, false), "blocked in every thread: sigwait");
    assert!(!applies(false, "SIGTERM", none, false, false), "told over IPC: it drains");
    assert!(!applies(true, "SIGWINCH", none, false, false), "ignored by default");
    assert!(!applies(true, "SIGCONT", none, false, false));
    assert!(!applies(true, "SIGTERM", none, false, true), "not while the primary stops");
}

#[test]
fn a_server_known_to_have_no_graceful_stop_is_quiesced_whatever_its_handler() {
    assert!(applies(true, "SIGTERM", h(true, false, false), true, false), "php -S in a request: its deferring handler");
    assert!(applies(true, "SIGINT", h(true, false, false), true, false), "php -S's SIGINT");
    assert!(!applies(true, "SIGQUIT", h(false, true, false), true, false), "ignored: it would never stop");
    assert!(!applies(false, "SIGTERM", none(), true, false));
    assert!(!applies(true, "SIGTERM", none(), true, true));
}

fn none() -> Handling {
    Handling::default()
}

#[test]
fn a_connection_not_touched_is_safe_only_with_rescue() {
    let c = Standing { unread: 18, ..conn(0, 0) };
    assert!(!in_flight(Some(&c), true), "its request waits in the socket: rescue passes it on");
    assert!(in_flight(Some(&c), false), "without rescue it dies with the worker");
    assert!(!in_flight(Some(&conn(0, 0)), true), "accepted, nothing came yet");
}

#[test]
fn a_request_read_or_an_answer_under_way_is_in_flight() {
    assert!(in_flight(Some(&conn(18, 0)), true), "read, not answered");
    assert!(in_flight(Some(&Standing { unread: 4, ..conn(14, 0) }), true), "read in part");
    let head_written = Standing { since_sent: ms(1), since_recv: ms(2), ..conn(18, 19) };
    assert!(in_flight(Some(&head_written), true), "its head written, its body not yet: not quiet for long");
    let unacked = Standing { unsent: 100, since_sent: ms(500), since_recv: ms(600), ..conn(18, 200) };
    assert!(in_flight(Some(&unacked), true), "the answer not all acknowledged");
    assert!(in_flight(None, true), "the kernel did not say");
}

#[test]
fn an_answered_connection_quiet_for_long_is_idle() {
    let idle = Standing { since_sent: IDLE, since_recv: IDLE + ms(1), ..conn(18, 200) };
    assert!(!in_flight(Some(&idle), true));
    assert!(!in_flight(Some(&idle), false), "an idle close, as any server's");
    let same_tick = Standing { since_recv: IDLE, ..idle };
    assert!(!in_flight(Some(&same_tick), true), "request and answer in the same tick");
    let next = Standing { since_recv: ms(10), ..idle };
    assert!(in_flight(Some(&next), true), "the client spoke after the answer: a next request read");
    let waiting = Standing { unread: 18, ..idle };
    assert!(in_flight(Some(&waiting), true), "a next request waits: looked at again, not guessed");
}

#[test]
fn a_busy_worker_is_looked_at_again_and_a_quiet_one_stopped_then_told() {
    let t0 = Instant::now();
    let mut q = Quiescing::default();
    assert_eq!(q.begin(1, t0), TICK);
    assert!(q.knows(1) && !q.frozen(1));
    assert_eq!(q.look(1, held(2, false), false, t0 + ms(5)), Step::Again(TICK));
    assert_eq!(q.look(1, held(0, false), false, t0 + ms(10)), Step::Freeze);
    assert!(q.frozen(1));
    assert_eq!(q.look(1, held(0, false), false, t0 + ms(11)), Step::Again(FREEZE_TICK), "threads still running");
    assert_eq!(
        q.look(1, held(0, true), false, t0 + ms(12)),
        Step::Go { frozen: true, in_flight: 0, waited: ms(12), gave_up: false }
    );
    assert!(!q.knows(1), "done");
    assert!(q.frozen(1), "stopped until the shell has signalled it");
    q.gone(1);
    assert!(!q.frozen(1));
}

#[test]
fn a_request_taken_between_the_looks_lets_it_go_on() {
    let t0 = Instant::now();
    let mut q = Quiescing::default();
    q.begin(1, t0);
    assert_eq!(q.look(1, held(0, false), false, t0 + ms(5)), Step::Freeze);
    assert_eq!(q.look(1, held(1, true), false, t0 + ms(6)), Step::Thaw(TICK));
    assert!(!q.frozen(1));
    assert_eq!(q.look(1, held(1, false), false, t0 + ms(11)), Step::Again(TICK));
}

#[test]
fn threads_that_do_not_stop_in_time_let_it_go_on() {
    let t0 = Instant::now();
    let mut q = Quiescing::default();
    q.begin(1, t0);
    assert_eq!(q.look(1, held(0, false), false, t0), Step::Freeze);
    assert_eq!(q.look(1, held(0, false), false, t0 + FREEZE_MAX - ms(1)), Step::Again(FREEZE_TICK));
    assert_eq!(q.look(1, held(0, false), false, t0 + FREEZE_MAX), Step::Thaw(TICK));
}

#[test]
fn a_worker_never_quiet_is_told_at_the_bound() {
    let t0 = Instant::now();
    let mut q = Quiescing::default();
    q.begin(1, t0);
    assert_eq!(q.look(1, held(3, false), false, t0 + MAX - ms(1)), Step::Again(TICK));
    assert_eq!(
        q.look(1, held(3, false), false, t0 + MAX),
        Step::Go { frozen: false, in_flight: 3, waited: MAX, gave_up: true }
    );
    // Frozen at the bound: told, then let go on.
    q.begin(2, t0);
    assert_eq!(q.look(2, held(0, false), false, t0 + MAX - ms(1)), Step::Freeze);
    assert_eq!(
        q.look(2, held(0, false), false, t0 + MAX),
        Step::Go { frozen: true, in_flight: 0, waited: MAX, gave_up: true }
    );
}

#[test]
fn a_stop_of_the_primary_or_an_unseen_worker_tells_it_at_once() {
    let t0 = Instant::now();
    let mut q = Quiescing::default();
    q.begin(1, t0);
    assert_eq!(q.look(1, held(0, false), false, t0 + ms(5)), Step::Freeze);
    assert_eq!(
        q.look(1, held(2, false), true, t0 + ms(6)),
        Step::Go { frozen: true, in_flight: 2, waited: ms(6), gave_up: false }
    );
    q.begin(2, t0);
    assert_eq!(
        q.look(2, Seen::Unknown, false, t0 + ms(5)),
        Step::Go { frozen: false, in_flight: 0, waited: ms(5), gave_up: true }
    );
}

#[test]
fn a_worker_not_known_begins_now_and_one_gone_is_forgotten() {
    let t0 = Instant::now();
    let mut q = Quiescing::default();
    assert!(!q.knows(7), "after a self-upgrade");
    assert_eq!(q.look(7, held(1, false), false, t0), Step::Again(TICK));
    assert!(q.knows(7));
    q.gone(7);
    assert!(!q.knows(7));
}

#[test]
fn before_a_self_upgrade_every_stopped_worker_is_let_go_on() {
    let t0 = Instant::now();
    let mut q = Quiescing::default();
    q.begin(1, t0);
    q.begin(2, t0);
    q.begin(3, t0);
    assert_eq!(q.look(1, held(0, false), false, t0), Step::Freeze);
    assert_eq!(q.look(2, held(0, false), false, t0), Step::Freeze);
    assert!(matches!(q.look(2, held(0, true), false, t0), Step::Go { frozen: true, .. }));
    let mut thawed = q.thaw_all();
    thawed.sort();
    assert_eq!(thawed, vec![1, 2]);
    assert!(!q.frozen(1) && !q.frozen(2) && !q.frozen(3));
    assert!(q.knows(1), "its looks go on");
    assert_eq!(q.look(1, held(0, false), false, t0 + ms(5)), Step::Freeze);
}
