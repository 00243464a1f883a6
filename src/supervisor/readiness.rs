//! The readiness rules, as pure functions of what the primary knows: no
//! process, no clock of their own, tested here. [`super::accepting`],
//! [`super::node`] and [`super::workers`] gather the facts and act on the
//! verdicts; `docs/protocol.md` ("When a worker is ready") says the same
//! in words.

use std::time::{Duration, Instant};

use crate::options::ReadyMode;
use crate::types::ReadyVia;

/// Under `--ready auto`: how long a worker must have been proven to take
/// connections, saying nothing on IPC or notify, before that makes it
/// ready (an app that accepts first and announces a moment later is ready
/// by its announcement).
pub const AUTO_SETTLE: Duration = Duration::from_millis(100);

/// The shortest interval between two probe connections to one worker.
pub const PROBE_FIRST: Duration = Duration::from_millis(20);
/// The longest: reached after 0.8 s of start-up. A long warm-up gets ten
/// probes a second, most of them taken by old workers (on a shared socket
/// every worker's event loop is woken and the first to `accept` takes it,
/// so a new worker wins about one in N+1).
pub const PROBE_LONGEST: Duration = Duration::from_millis(100);
/// Probes of one worker open at once.
pub const PROBES_OPEN: usize = 2;
/// Probes per worker, at most, over its whole start: past this it is judged
/// by the connections it takes from clients (or fails at
/// `--ready-timeout`).
pub const PROBES_MAX: u32 = 300;
/// A probe not taken by the worker is given up after this long (another
/// worker took it, or it waits in the queue of a worker still warming up:
/// closing it is harmless either way).
pub const PROBE_LIFE: Duration = Duration::from_secs(2);

/// What the looks so far found on the worker's listening sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not every socket is even waited on.
    Nothing,
    /// Every socket is waited on (epoll, poll, select), not every one
    /// proven taken from.
    Waiting,
    /// Every socket proven: a thread blocked in `accept`, a connection it
    /// took (a client's, or the primary's probe). Since then.
    Proven(Instant),
}

/// What the accepts rule needs to know of a starting worker.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub mode: ReadyMode,
    /// Under `auto`: it speaks sd_notify (or earlier workers of its command
    /// did), so it needs `READY=1` too.
    pub notify: bool,
    /// It sent `READY=1`.
    pub said_ready: bool,
    pub seen: Seen,
    pub now: Instant,
}

/// What to do about a starting worker judged by its accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ready(ReadyVia),
    /// Proven; ready by its accepts once it has said nothing for this
    /// much longer.
    Settle(Duration),
    /// Proven; ready once it sends `READY=1`.
    AwaitReady1,
    /// Look again.
    Look,
}

/// The accepts rule: `--ready accepting` takes a proven worker at once;
/// `auto` one that sent `READY=1` (if it speaks sd_notify) or that stays
/// silent for [`AUTO_SETTLE`]. A socket merely waited on proves nothing.
pub fn judge(f: &Facts) -> Verdict {
    let Seen::Proven(since) = f.seen else { return Verdict::Look };
    if f.mode != ReadyMode::Auto {
        return Verdict::Ready(ReadyVia::Accepting);
    }
    if f.notify {
        return if f.said_ready { Verdict::Ready(ReadyVia::Notify) } else { Verdict::AwaitReady1 };
    }
    let waited = f.now.saturating_duration_since(since);
    if waited >= AUTO_SETTLE {
        Verdict::Ready(ReadyVia::Accepting)
    } else {
        Verdict::Settle(AUTO_SETTLE - waited)
    }
}

/// What the probe rule needs to know.
#[derive(Debug, Clone, Copy)]
pub struct ProbeFacts {
    pub seen: Seen,
    /// Probes open now.
    pub open: usize,
    /// Probes made so far for this worker.
    pub made: u32,
    pub last: Option<Instant>,
    /// How long the worker has been starting.
    pub age: Duration,
    pub now: Instant,
}

/// The interval between probes: 20 ms at first, an eighth of the worker's
/// age later, at most [`PROBE_LONGEST`].
pub fn probe_interval(age: Duration) -> Duration {
    (age / 8).clamp(PROBE_FIRST, PROBE_LONGEST)
}

/// Whether to open a probe connection now: only to a worker that waits on
/// every socket without having been seen taking from each, within the
/// bounds of rate and count.
pub fn probe_now(f: &ProbeFacts) -> bool {
    f.seen == Seen::Waiting
        && f.open < PROBES_OPEN
        && f.made < PROBES_MAX
        && f.last.is_none_or(|t| f.now.saturating_duration_since(t) >= probe_interval(f.age))
}

/// Whether an open probe the worker was not seen holding is given up:
/// older than [`PROBE_LIFE`], or looked for while every accept queue of its
/// address was empty (someone took it: an old worker; or the new one just
/// after the look passed it, which costs one probe).
pub fn probe_given_up(age: Duration, looks: u32, queues_empty: Option<bool>) -> bool {
    age >= PROBE_LIFE || (looks >= 1 && queues_empty == Some(true))
}

/// Whether Node's cluster `listening` (every server the worker asked for
/// listens) makes a cluster worker ready: only under `auto`, and only while
/// its command's workers have not said `"ready"`/`listening` themselves
/// (PM2's `wait_ready`: then that is what counts, from the start of every
/// later worker). `--ready ipc` means the worker's own message, always.
pub fn cluster_listening_counts(mode: ReadyMode, learned: Option<ReadyVia>) -> bool {
    mode == ReadyMode::Auto && learned != Some(ReadyVia::Ipc)
}

/// Whether a starting cluster worker of an app with its own primary is
/// ready [`super::node::NO_LISTEN_READY`] after `online`: only if it asked
/// for no socket (its primary serves for it), and only where Node's
/// `listening` would count (not under `--ready ipc`, nor once its
/// command's workers said `'ready'` themselves).
pub fn no_listen_makes_ready(starting: bool, asked: bool, mode: ReadyMode, learned: Option<ReadyVia>) -> bool {
    starting && !asked && cluster_listening_counts(mode, learned)
}

/// What `auto` keeps of how a command's workers announce readiness, given
/// what it knew and what a worker just did: the first announcement wins,
/// except that the worker's own message overrides Node's cluster
/// `listening` (a PM2 app listens first and says `'ready'` later).
pub fn learned(known: Option<ReadyVia>, now: ReadyVia) -> Option<ReadyVia> {
    if !matches!(now, ReadyVia::Ipc | ReadyVia::Notify | ReadyVia::Cluster) {
        return known;
    }
    match known {
        None => Some(now),
        Some(ReadyVia::Cluster) if now == ReadyVia::Ipc => Some(ReadyVia::Ipc),
        Some(k) => Some(k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(mode: ReadyMode, seen: Seen, now: Instant) -> Facts {
        Facts { mode, notify: false, said_ready: false, seen, now }
    }

    #[test]
    fn a_socket_in_an_epoll_set_is_not_ready_until_proven() {
        let now = Instant::now();
        for mode in [ReadyMode::Accepting, ReadyMode::Auto] {
            assert_eq!(judge(&facts(mode, Seen::Nothing, now)), Verdict::Look);
            assert_eq!(judge(&facts(mode, Seen::Waiting, now)), Verdict::Look, "{mode}");
        }
        assert_eq!(judge(&facts(ReadyMode::Accepting, Seen::Proven(now), now)), Verdict::Ready(ReadyVia::Accepting));
    }

    #[test]
    fn auto_takes_a_proven_silent_worker_after_it_settled() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            judge(&facts(ReadyMode::Auto, Seen::Proven(t0), at(30))),
            Verdict::Settle(Duration::from_millis(70))
        );
        assert_eq!(judge(&facts(ReadyMode::Auto, Seen::Proven(t0), at(100))), Verdict::Ready(ReadyVia::Accepting));
    }

    #[test]
    fn a_notify_worker_needs_ready_1_and_proof() {
        let now = Instant::now();
        let f = |said_ready, seen| Facts { mode: ReadyMode::Auto, notify: true, said_ready, seen, now };
        assert_eq!(judge(&f(true, Seen::Waiting)), Verdict::Look, "READY=1 and an epoll registration");
        assert_eq!(judge(&f(false, Seen::Proven(now))), Verdict::AwaitReady1);
        assert_eq!(judge(&f(true, Seen::Proven(now))), Verdict::Ready(ReadyVia::Notify));
    }

    #[test]
    fn probes_go_only_to_a_waiting_worker_within_their_bounds() {
        let now = Instant::now();
        let base = ProbeFacts { seen: Seen::Waiting, open: 0, made: 0, last: None, age: Duration::ZERO, now };
        assert!(probe_now(&base));
        assert!(!probe_now(&ProbeFacts { seen: Seen::Nothing, ..base }), "nothing waits: nothing to probe");
        assert!(!probe_now(&ProbeFacts { seen: Seen::Proven(now), ..base }), "already proven");
        assert!(!probe_now(&ProbeFacts { open: PROBES_OPEN, ..base }));
        assert!(!probe_now(&ProbeFacts { made: PROBES_MAX, ..base }));
        let just = ProbeFacts { last: Some(now - Duration::from_millis(10)), ..base };
        assert!(!probe_now(&just), "20 ms apart at least");
        let old = ProbeFacts { age: Duration::from_secs(10), last: Some(now - Duration::from_millis(90)), ..base };
        assert!(!probe_now(&old), "a long warm-up gets a probe every 100 ms");
        assert!(probe_now(&ProbeFacts { last: Some(now - PROBE_LONGEST), ..old }));
        // The rate alone: 10 a second after the first 0.8 s (and
        // PROBES_MAX caps the count whatever the timeout).
        let mut t = Duration::ZERO;
        let mut n = 0;
        while t < Duration::from_secs(30) {
            t += probe_interval(t);
            n += 1;
        }
        assert!((290..=320).contains(&n), "{n} probes in 30 s");
    }

    #[test]
    fn a_probe_taken_by_someone_else_is_given_up() {
        assert!(!probe_given_up(Duration::from_millis(50), 0, Some(true)), "not looked for yet");
        assert!(probe_given_up(Duration::from_millis(50), 1, Some(true)));
        assert!(!probe_given_up(Duration::from_millis(500), 5, Some(false)), "still queued");
        assert!(!probe_given_up(Duration::from_millis(500), 5, None), "unknown (a Unix socket)");
        assert!(probe_given_up(PROBE_LIFE, 0, None));
    }

    #[test]
    fn pm2_wait_ready_overrides_node_cluster_listening() {
        assert!(cluster_listening_counts(ReadyMode::Auto, None));
        assert!(no_listen_makes_ready(true, false, ReadyMode::Auto, None));
        assert!(!no_listen_makes_ready(true, true, ReadyMode::Auto, None), "it listens: ready when it does");
        assert!(!no_listen_makes_ready(false, false, ReadyMode::Auto, None), "already ready or stopping");
        assert!(!no_listen_makes_ready(true, false, ReadyMode::Ipc, None), "--ready ipc waits for 'ready'");
        assert!(!no_listen_makes_ready(true, false, ReadyMode::Auto, Some(ReadyVia::Ipc)));
        assert!(cluster_listening_counts(ReadyMode::Auto, Some(ReadyVia::Cluster)));
        assert!(!cluster_listening_counts(ReadyMode::Auto, Some(ReadyVia::Ipc)), "its workers say 'ready'");
        for mode in [ReadyMode::Ipc, ReadyMode::IpcOrNotify, ReadyMode::Notify, ReadyMode::Accepting] {
            assert!(!cluster_listening_counts(mode, None), "{mode}: the worker's own message only");
        }
        // The first worker listens (cluster), then says 'ready': learned.
        let k = learned(None, ReadyVia::Cluster);
        assert_eq!(k, Some(ReadyVia::Cluster));
        assert_eq!(learned(k, ReadyVia::Ipc), Some(ReadyVia::Ipc));
        assert_eq!(learned(Some(ReadyVia::Ipc), ReadyVia::Cluster), Some(ReadyVia::Ipc), "never back");
        assert_eq!(learned(Some(ReadyVia::Notify), ReadyVia::Ipc), Some(ReadyVia::Notify));
        assert_eq!(learned(None, ReadyVia::Accepting), None);
        assert_eq!(learned(None, ReadyVia::Assumed), None);
    }

    #[test]
    fn accepting_takes_a_proven_worker_whatever_it_said_on_notify() {
        let now = Instant::now();
        let f =
            |said_ready| Facts { mode: ReadyMode::Accepting, notify: true, said_ready, seen: Seen::Proven(now), now };
        assert_eq!(judge(&f(false)), Verdict::Ready(ReadyVia::Accepting), "READY=1 is not needed");
        assert_eq!(judge(&f(true)), Verdict::Ready(ReadyVia::Accepting), "nor does it make it notify-ready");
    }

    #[test]
    fn auto_settles_exactly_at_its_settling_time_and_never_before() {
        let t0 = Instant::now();
        let just_before = t0 + AUTO_SETTLE - Duration::from_millis(1);
        assert_eq!(
            judge(&facts(ReadyMode::Auto, Seen::Proven(t0), just_before)),
            Verdict::Settle(Duration::from_millis(1))
        );
        assert_eq!(
            judge(&facts(ReadyMode::Auto, Seen::Proven(t0), t0 + AUTO_SETTLE)),
            Verdict::Ready(ReadyVia::Accepting)
        );
        // A proof timed after the look (clocks read in another order) waits
        // the whole settling time, never a negative one.
        assert_eq!(
            judge(&facts(ReadyMode::Auto, Seen::Proven(t0 + Duration::from_millis(5)), t0)),
            Verdict::Settle(AUTO_SETTLE)
        );
    }

    #[test]
    fn the_probe_interval_grows_with_the_workers_age_within_its_bounds() {
        assert_eq!(probe_interval(Duration::ZERO), PROBE_FIRST);
        assert_eq!(probe_interval(Duration::from_millis(160)), PROBE_FIRST);
        assert_eq!(probe_interval(Duration::from_millis(400)), Duration::from_millis(50));
        assert_eq!(probe_interval(Duration::from_millis(800)), PROBE_LONGEST);
        assert_eq!(probe_interval(Duration::from_secs(600)), PROBE_LONGEST);
    }

    #[test]
    fn a_probe_that_is_old_enough_is_given_up_even_unlooked_for() {
        assert!(!probe_given_up(PROBE_LIFE - Duration::from_millis(1), 0, Some(false)));
        assert!(probe_given_up(PROBE_LIFE, 0, Some(false)), "queued or not");
    }

    #[test]
    fn node_cluster_listening_never_counts_under_delay_or_none() {
        for mode in [ReadyMode::None, ReadyMode::Delay(Duration::from_secs(1))] {
            assert!(!cluster_listening_counts(mode, None), "{mode}");
        }
    }

    #[test]
    fn the_first_announcement_learned_wins_over_later_ones() {
        assert_eq!(learned(None, ReadyVia::Notify), Some(ReadyVia::Notify));
        assert_eq!(learned(Some(ReadyVia::Notify), ReadyVia::Cluster), Some(ReadyVia::Notify));
        assert_eq!(learned(Some(ReadyVia::Cluster), ReadyVia::Notify), Some(ReadyVia::Cluster));
        assert_eq!(learned(Some(ReadyVia::Ipc), ReadyVia::Assumed), Some(ReadyVia::Ipc), "assumed is no announcement");
    }
}
