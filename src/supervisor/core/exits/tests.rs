//! Each rule of an exit, with fake workers and an injected clock.

use std::rc::Rc;

use super::*;
use crate::options::Settings;
use crate::supervisor::backoff::{STABLE_AFTER, START_FAILED_MIN};
use crate::types::Exit;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A worker of slot `slot` in `state` that crashed (exit code 1) after
/// `lived`, to be respawned.
fn crashed(id: WorkerId, slot: usize, state: WorkerState, lived: Duration) -> Exited<'static> {
    Exited {
        id,
        slot,
        state,
        respawn: true,
        lived,
        not_ready: None,
        gone: Gone { label: "[w1 g1 100]", how: Exit::Code(1), killed: false, hint: None },
    }
}

/// The state around the exit: serving, nothing stopping, no reload.
struct World {
    stopping: bool,
    ever_ready: bool,
    slots: Vec<CrashHistory>,
    reload: Option<Reload>,
    pool: Vec<Member>,
}

impl World {
    fn serving(slots: usize) -> World {
        World {
            stopping: false,
            ever_ready: true,
            slots: vec![CrashHistory::default(); slots],
            reload: None,
            pool: vec![],
        }
    }
    fn exit(&mut self, w: &Exited<'_>, now: Instant) -> Then {
        let around = Around {
            stopping: self.stopping,
            ever_ready: self.ever_ready,
            slots: &mut self.slots,
            reload: self.reload.as_mut(),
            pool: &self.pool,
        };
        on_exit(w, around, now)
    }
}

fn ready(id: WorkerId, slot: usize) -> Member {
    Member { id, slot, state: WorkerState::Ready }
}

#[test]
fn a_crash_restarts_its_slot_at_once_then_ever_later() {
    let mut world = World::serving(2);
    let now = Instant::now();
    let w = crashed(1, 1, WorkerState::Ready, ms(50));
    assert_eq!(world.exit(&w, now), Then::Respawn { slot: 1, delay: Duration::ZERO, streak: 1 });
    assert_eq!(world.exit(&w, now), Then::Respawn { slot: 1, delay: ms(100), streak: 2 });
    assert_eq!(world.exit(&w, now), Then::Respawn { slot: 1, delay: ms(200), streak: 3 });
    assert_eq!(world.slots[0].streak(), 0, "the other slot keeps its own history");
}

#[test]
fn a_crash_after_a_long_life_starts_a_new_streak() {
    let mut world = World::serving(1);
    let now = Instant::now();
    for _ in 0..4 {
        world.exit(&crashed(1, 0, WorkerState::Ready, ms(10)), now);
    }
    let long = crashed(1, 0, WorkerState::Ready, STABLE_AFTER);
    assert_eq!(world.exit(&long, now), Then::Respawn { slot: 0, delay: Duration::ZERO, streak: 1 });
}

#[test]
fn a_starting_worker_that_dies_is_a_crash_once_some_worker_was_ready() {
    let mut world = World::serving(1);
    let w = crashed(1, 0, WorkerState::Starting, ms(10));
    assert!(matches!(world.exit(&w, Instant::now()), Then::Respawn { slot: 0, .. }));
}

#[test]
fn a_worker_told_to_go_ends_its_slots_crash_streak() {
    let mut world = World::serving(1);
    let now = Instant::now();
    for _ in 0..5 {
        world.exit(&crashed(1, 0, WorkerState::Ready, ms(10)), now);
    }
    assert_eq!(world.slots[0].streak(), 5);
    let retired = Exited { respawn: false, ..crashed(2, 0, WorkerState::Stopping, ms(10)) };
    assert_eq!(world.exit(&retired, now), Then::Nothing);
    assert_eq!(world.slots[0].streak(), 0);
    // So the next crash is restarted at once, not after 30 s.
    assert_eq!(
        world.exit(&crashed(3, 0, WorkerState::Ready, ms(10)), now).clone(),
        Then::Respawn { slot: 0, delay: Duration::ZERO, streak: 1 }
    );
}

#[test]
fn a_retired_worker_is_not_made_good_whatever_its_state() {
    let mut world = World::serving(1);
    for state in [WorkerState::Starting, WorkerState::Ready, WorkerState::Stopping] {
        let w = Exited { respawn: false, ..crashed(1, 0, state, ms(10)) };
        assert_eq!(world.exit(&w, Instant::now()), Then::Nothing, "{state}");
    }
    assert_eq!(world.slots[0].streak(), 0, "no crash was counted");
}

#[test]
fn while_stopping_no_exit_is_restarted() {
    let mut world = World { stopping: true, ..World::serving(1) };
    for state in [WorkerState::Starting, WorkerState::Ready, WorkerState::Stopping] {
        let w = crashed(1, 0, state, ms(10));
        assert_eq!(world.exit(&w, Instant::now()), Then::StopMayBeDone, "{state}");
    }
    assert_eq!(world.slots[0].streak(), 0, "no backoff while stopping");
}

#[test]
fn while_stopping_before_anything_was_ready_the_stop_still_wins() {
    let mut world = World { stopping: true, ever_ready: false, ..World::serving(1) };
    let w = crashed(1, 0, WorkerState::Starting, ms(10));
    assert_eq!(world.exit(&w, Instant::now()), Then::StopMayBeDone);
}

#[test]
fn the_first_generation_that_cannot_start_gives_up_with_the_hint() {
    let mut world = World { ever_ready: false, ..World::serving(1) };
    let w = Exited {
        gone: Gone { label: "[w1 g1 100]", how: Exit::Code(127), killed: false, hint: Some("it said nothing") },
        ..crashed(1, 0, WorkerState::Starting, ms(10))
    };
    assert_eq!(
        world.exit(&w, Instant::now()),
        Then::GiveUp(
            "the first generation cannot start: [w1 g1 100] exited with code 127 before it was ready: it said nothing"
                .into()
        )
    );
}

#[test]
fn the_first_generation_killed_at_its_ready_timeout_says_so() {
    let mut world = World { ever_ready: false, ..World::serving(1) };
    let w = Exited {
        not_ready: Some("[w1 g1 100] was not ready within 5s: it said nothing"),
        ..crashed(1, 0, WorkerState::Stopping, ms(5000))
    };
    let Then::GiveUp(why) = world.exit(&w, Instant::now()) else { panic!("gives up") };
    assert_eq!(why, "the first generation cannot start: [w1 g1 100] was not ready within 5s: it said nothing");
}

#[test]
fn an_exit_without_a_hint_says_only_how() {
    let mut world = World { ever_ready: false, ..World::serving(1) };
    let Then::GiveUp(why) = world.exit(&crashed(1, 0, WorkerState::Ready, ms(1)), Instant::now()) else {
        panic!("gives up")
    };
    assert_eq!(why, "the first generation cannot start: [w1 g1 100] exited with code 1 before it was ready");
}

#[test]
fn a_slot_the_pool_no_longer_has_is_not_restarted() {
    let mut world = World::serving(1);
    assert_eq!(world.exit(&crashed(1, 3, WorkerState::Ready, ms(1)), Instant::now()), Then::Nothing);
}

/// A reload of one ready worker (w1, slot 0) that has started w2.
fn reloading() -> World {
    let mut world = World::serving(1);
    world.pool = vec![ready(1, 0)];
    let mut settings = Settings::for_tests();
    settings.workers = 1;
    // No --min-ready window: an old worker is retired once its replacement is ready.
    settings.min_ready = Duration::ZERO;
    let mut reload = Reload::new(2, Rc::new(settings), Vec::new(), None);
    assert_eq!(reload.begin_rolling(&world.pool), Order::Start { slot: 0 });
    reload.started(2);
    world.pool.push(Member { id: 2, slot: 0, state: WorkerState::Starting });
    assert_eq!(reload.next(&world.pool), Order::Wait);
    world.reload = Some(reload);
    world
}

#[test]
fn a_reloads_new_worker_that_dies_before_it_is_ready_fails_the_reload() {
    let mut world = reloading();
    world.pool.retain(|m| m.id != 2);
    let w = crashed(2, 0, WorkerState::Starting, ms(30));
    assert_eq!(world.exit(&w, Instant::now()), Then::Reload(Order::Fail));
    let why = world.reload.as_ref().and_then(|r| r.failure()).unwrap_or_default().to_string();
    assert!(why.contains("exited with code 1 before it was ready"), "{why}");
    assert_eq!(world.slots[0].streak(), 0, "not a crash: no backoff");
}

#[test]
fn an_old_worker_the_reload_retired_is_the_reloads_business() {
    let mut world = reloading();
    world.pool[1].state = WorkerState::Ready;
    let reload = world.reload.as_mut().unwrap();
    assert_eq!(reload.on_ready(2, &world.pool), Order::Retire(1));
    world.pool[0].state = WorkerState::Stopping;
    assert_eq!(reload.next(&world.pool), Order::Wait);
    world.pool.retain(|m| m.id != 1);
    let old = Exited { respawn: false, ..crashed(1, 0, WorkerState::Stopping, ms(30)) };
    assert_eq!(world.exit(&old, Instant::now()), Then::Reload(Order::Done));
}

#[test]
fn a_crash_the_reload_does_not_account_for_is_restarted_as_usual() {
    let mut world = reloading();
    world.slots = vec![CrashHistory::default(); 2];
    let other = crashed(9, 1, WorkerState::Ready, ms(30));
    assert!(matches!(world.exit(&other, Instant::now()), Then::Respawn { slot: 1, .. }));
}

#[test]
fn the_backoff_of_a_crash_and_of_a_failed_start_add_up() {
    let mut world = World::serving(1);
    let now = Instant::now();
    world.exit(&crashed(1, 0, WorkerState::Ready, ms(1)), now);
    let retry = world.slots[0].start_failed("gone", now);
    assert_eq!(retry.delay, ms(100).max(START_FAILED_MIN));
    assert_eq!(
        world.exit(&crashed(2, 0, WorkerState::Ready, ms(1)), now),
        Then::Respawn { slot: 0, delay: ms(200), streak: 3 }
    );
}
