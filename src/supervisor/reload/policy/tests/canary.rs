//! `--canary`: the first replacement serves beside the whole old
//! generation for its trial; its verdict decides whether the roll goes on.

use super::*;

fn canary(workers: u32, trial: Duration, surge: Option<Surge>) -> (Reload, mpsc::UnboundedReceiver<Reply>) {
    let (r, rx) = with_window(workers, Duration::ZERO, surge);
    (r.with_canary(Some(trial)), rx)
}

fn event_names(r: &mut Reload) -> Vec<String> {
    r.take_events().into_iter().map(|e| e.event).collect()
}

#[test]
fn a_canary_serves_beside_the_whole_old_generation_then_the_roll_goes_on() {
    let mut pool = Pool::ready(4);
    let (mut r, mut rx) = canary(4, 3 * SECOND, Some(Surge::Percent(100)));
    let first = r.begin_rolling(&pool.members);
    assert_eq!(first, Order::Start { slot: 0 });
    assert_eq!(obey(&mut r, &mut pool, first), Order::Wait, "one canary, whatever the surge");
    let c = pool.starting()[0];
    assert_eq!(pool.members.len(), 5, "capacity + 1");
    assert_eq!(event_names(&mut r), ["canary-started"]);
    pool.set(c, WorkerState::Ready);
    assert_eq!(r.on_ready(c, &pool.members), Order::Watch { worker: c, window: 3 * SECOND });
    assert_eq!(r.next(&pool.members), Order::Wait, "nothing more during the trial");
    assert_eq!(event_names(&mut r), ["canary-ready"]);
    assert!(pool.members.iter().all(|m| m.state == WorkerState::Ready), "no old worker retired");
    // The verdict: it passed, and the rest go at the surge asked for.
    let order = r.on_proven(c, &pool.members);
    assert_eq!(order, Order::Retire(1));
    assert_eq!(event_names(&mut r), ["canary-passed"]);
    assert_eq!(obey(&mut r, &mut pool, order), Order::Wait);
    assert_eq!(pool.starting().len(), 3, "the other three start at once: {:?}", pool.members);
    assert_eq!(run(&mut r, &mut pool, Order::Wait, 4), Order::Done);
    all_new(&pool, 4, 5);
    let done = r.finish(None);
    assert!(done.ok && done.message.contains("canary w5 passed 3s; 4 workers replaced"), "{}", done.message);
    let lines: Vec<String> = replies(&mut rx)
        .into_iter()
        .filter_map(|r| match r {
            Reply::Progress { message } => Some(message),
            _ => None,
        })
        .collect();
    assert!(lines.iter().any(|l| l.contains("canary w5 is ready") && l.contains("beside 4 old workers")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("canary w5 passed")), "{lines:?}");
}

#[test]
fn a_canary_that_exits_on_trial_fails_the_reload_and_leaves_the_old_generation_as_it_was() {
    let mut pool = Pool::ready(3);
    let (mut r, mut rx) = canary(3, 3 * SECOND, None);
    let first = r.begin_rolling(&pool.members);
    obey(&mut r, &mut pool, first);
    let c = pool.starting()[0];
    assert!(matches!(ready(&mut r, &mut pool, c), Order::Wait));
    pool.remove(c);
    assert_eq!(r.on_exit(c, &gone("[w4 g2 100]", Exit::Code(1)), &pool.members), ExitVerdict::Handled(Order::Fail));
    assert_eq!(event_names(&mut r), ["canary-started", "canary-ready", "canary-failed"]);
    let done = r.finish(None);
    assert!(!done.ok);
    assert!(done.message.contains("canary [w4 g2 100] exited with code 1"), "{}", done.message);
    assert!(done.message.contains("within --canary 3s"), "{}", done.message);
    assert!(r.take_events().is_empty(), "one verdict");
    assert_eq!(
        pool.members.iter().map(|m| (m.id, m.state)).collect::<Vec<_>>(),
        Pool::ready(3).members.iter().map(|m| (m.id, m.state)).collect::<Vec<_>>()
    );
    let progress: Vec<Reply> = replies(&mut rx);
    assert!(progress.iter().any(|p| matches!(p, Reply::Progress { message } if message.starts_with("canary failed"))));
}

#[test]
fn a_canary_that_never_gets_ready_fails_as_the_canary() {
    let mut pool = Pool::ready(2);
    let (mut r, _rx) = canary(2, SECOND, None);
    let first = r.begin_rolling(&pool.members);
    obey(&mut r, &mut pool, first);
    let c = pool.starting()[0];
    assert_eq!(r.on_not_ready(c, format!("w{c} was not ready within 1s")), Order::Fail);
    assert_eq!(event_names(&mut r), ["canary-started", "canary-failed"]);
    let done = r.finish(None);
    assert_eq!(done.abandon, vec![c]);
}

#[test]
fn a_canary_is_on_trial_for_the_longer_of_its_time_and_min_ready() {
    let mut pool = Pool::ready(2);
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut r = Reload::new(2, windowed(2, 5 * SECOND), vec![tx], None).with_canary(Some(SECOND));
    let (c, order) = first_ready(&mut r, &mut pool);
    assert_eq!(order, Order::Watch { worker: c, window: 5 * SECOND });
}

#[test]
fn a_canary_reload_that_fails_in_its_build_has_no_canary_verdict_but_says_so() {
    let (mut r, _rx) = canary(2, SECOND, None);
    let done = r.finish(Some("build `make` exited with code 2".into()));
    assert!(!done.ok);
    let events = r.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "canary-failed");
    assert_eq!(events[0].worker, None, "no canary was started");
}
