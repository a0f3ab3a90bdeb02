//! Timers on the [`Clock`] port: iFun's `Timer::ExpireAt`, `ExpireAfter`,
//! `ExpireRepeatedly` and `Cancel`.
//!
//! Each timer is one task on the [`Spawn`] port that sleeps on the [`Clock`] port, so timers
//! run on virtual time under the simulator and on the runtime's clock on the real backend,
//! with no thread, no OS clock and no randomness of their own.
//!
//! # Semantics
//! - **One-shot** ([`Timer::expire_after`], [`Timer::expire_at`]): the callback runs once,
//!   when the clock reaches the deadline (at once if it is already past). Once it has started
//!   the timer is no longer pending: `cancel` returns `false` and does not stop it.
//! - **Repeating** ([`Timer::expire_repeatedly`]): with `start` the clock reading when the
//!   timer was created, tick `k` (k = 1, 2, ...) is due at `start + k × interval`. The next
//!   deadline comes from that schedule, never from when the previous callback ended, so a
//!   callback's running time does not accumulate as drift.
//! - **Overruns skip, they do not burst.** If, when the timer's task wakes, one or more
//!   later deadlines have already passed (a callback ran longer than the interval, the
//!   node was paused, the executor was busy), the timer fires **once**, late, for the
//!   latest passed deadline, counts the earlier ones as skipped ([`TimerStats::skipped`],
//!   plus a `warn` event), and then goes on at the next scheduled deadline (like tokio's
//!   `MissedTickBehavior::Skip`). A game loop sees one long frame instead of a burst of
//!   catch-up frames; it can read the real elapsed time from the `MonoTime` it is given.
//!   Example, interval 10 ms, first callback takes 35 ms: fires at 10 and 45 (tick 40,
//!   late; 20 and 30 skipped), then 50, 60, ...
//! - **Cancellation** ([`Timer::cancel`], [`Timer::cancel_all`], dropping the `Timer`):
//!   no callback *starts* after `cancel` returned `true`; a repeating timer's task is aborted,
//!   which also drops an async callback in progress at its next await point.
//! - Callbacks get the timer's id and this node's monotonic time when the timer fired
//!   (at or after the deadline).
//! - Ids are a per-`Timer` counter starting at 1, so a replayed simulation hands out the
//!   same ids in the same order (no global state: nothing leaks between simulated runs).
//!
//! A callback that wants to cancel its own timer should capture a `Weak<Timer>` (or the
//! `TimerId` and a flag the owner checks): an `Arc<Timer>` captured by one of its own
//! callbacks keeps the `Timer`, and so the timer, alive forever.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::env::{Clock, MonoTime, Spawn, TaskHandle};

/// Identifies one timer of one [`Timer`]; never reused by that `Timer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(u64);

impl TimerId {
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timer-{}", self.0)
    }
}

/// What a pending timer has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerStats {
    /// Callbacks started.
    pub fired: u64,
    /// Ticks of a repeating timer that were due while it was still busy or asleep past them,
    /// and were dropped rather than fired late (see the module doc).
    pub skipped: u64,
}

/// Schedules callbacks on a node's clock. Dropping it cancels all its timers.
///
/// Not `Clone`: one owner decides the timers' lifetime. Share it as `Arc<Timer>`.
pub struct Timer {
    clock: Arc<dyn Clock>,
    spawn: Arc<dyn Spawn>,
    registry: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    /// Last id handed out; ids start at 1.
    last_id: u64,
    /// Pending timers. A timer's task checks its entry before each firing, so removing the
    /// entry is what cancels; aborting the task only frees it sooner.
    pending: BTreeMap<TimerId, Entry>,
}

struct Entry {
    /// `None` for the instant between registering and spawning the task.
    task: Option<TaskHandle>,
    stats: TimerStats,
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // No callback runs under this lock, so a poisoned registry is still consistent.
    crate::env::lock(registry)
}

impl Timer {
    pub fn new(clock: Arc<dyn Clock>, spawn: Arc<dyn Spawn>) -> Self {
        Timer { clock, spawn, registry: Arc::default() }
    }

    /// Runs `f` once, `d` from now (iFun's `ExpireAfter`).
    pub fn expire_after(&self, d: Duration, f: impl FnOnce(TimerId, MonoTime) + Send + 'static) -> TimerId {
        self.expire_at(self.clock.now().saturating_add(d), f)
    }

    /// Runs `f` once, when this node's monotonic clock reaches `deadline` (iFun's `ExpireAt`).
    pub fn expire_at(
        &self,
        deadline: MonoTime,
        f: impl FnOnce(TimerId, MonoTime) + Send + 'static,
    ) -> TimerId {
        self.expire_at_async(deadline, move |id, now| {
            f(id, now);
            std::future::ready(())
        })
    }

    /// [`Timer::expire_after`] with an async callback.
    pub fn expire_after_async<F, Fut>(&self, d: Duration, f: F) -> TimerId
    where
        F: FnOnce(TimerId, MonoTime) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.expire_at_async(self.clock.now().saturating_add(d), f)
    }

    /// [`Timer::expire_at`] with an async callback.
    pub fn expire_at_async<F, Fut>(&self, deadline: MonoTime, f: F) -> TimerId
    where
        F: FnOnce(TimerId, MonoTime) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.register();
        let (clock, registry) = (self.clock.clone(), self.registry.clone());
        self.start(id, async move {
            clock.sleep_until(deadline).await;
            let now = clock.now();
            // Claim the firing: from here on the timer is no longer pending.
            if lock(&registry).pending.remove(&id).is_none() {
                return; // cancelled
            }
            f(id, now).await;
        })
    }

    /// Runs `f` every `interval`, first one `interval` from now (iFun's `ExpireRepeatedly`).
    /// See the module doc for the schedule and how overruns are skipped.
    ///
    /// # Panics
    /// If `interval` is zero (a programming error: it would fire without end at one instant).
    pub fn expire_repeatedly(
        &self,
        interval: Duration,
        mut f: impl FnMut(TimerId, MonoTime) + Send + 'static,
    ) -> TimerId {
        self.expire_repeatedly_async(interval, move |id, now| {
            f(id, now);
            std::future::ready(())
        })
    }

    /// [`Timer::expire_repeatedly`] with an async callback. The next tick is not started
    /// before the callback's future completes; ticks that fall due meanwhile are skipped.
    ///
    /// # Panics
    /// If `interval` is zero.
    pub fn expire_repeatedly_async<F, Fut>(&self, interval: Duration, mut f: F) -> TimerId
    where
        F: FnMut(TimerId, MonoTime) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        assert!(!interval.is_zero(), "a repeating timer needs a non-zero interval");
        let interval_ns = interval.as_nanos();
        let start = self.clock.now();
        let id = self.register();
        let (clock, registry) = (self.clock.clone(), self.registry.clone());
        self.start(id, async move {
            let mut tick: u64 = 1;
            loop {
                clock.sleep_until(tick_deadline(start, interval_ns, tick)).await;
                let now = clock.now();
                // The latest tick already due; never below `tick` (trust the clock's wake-up).
                let due = ticks_due(start, interval_ns, now).max(tick);
                let skipped = due - tick;
                tick = due;
                {
                    let mut reg = lock(&registry);
                    let Some(entry) = reg.pending.get_mut(&id) else { return }; // cancelled
                    entry.stats.skipped += skipped;
                    entry.stats.fired += 1;
                }
                if skipped > 0 {
                    tracing::warn!(timer = %id, skipped, "repeating timer overran; skipped ticks");
                }
                f(id, now).await;
                tick = tick.saturating_add(1);
            }
        })
    }

    /// Cancels a pending timer. `true` if it was pending (its callback will not start
    /// again); `false` if unknown, already cancelled, or a one-shot that already fired.
    pub fn cancel(&self, id: TimerId) -> bool {
        let entry = lock(&self.registry).pending.remove(&id);
        match entry {
            None => false,
            Some(e) => {
                // Outside the lock: an executor may drop the task's future right here.
                if let Some(task) = e.task {
                    task.abort();
                }
                true
            }
        }
    }

    /// Cancels every pending timer; returns how many there were.
    pub fn cancel_all(&self) -> usize {
        let pending = std::mem::take(&mut lock(&self.registry).pending);
        let n = pending.len();
        for (_, e) in pending {
            if let Some(task) = e.task {
                task.abort();
            }
        }
        n
    }

    /// Counters of a pending timer; `None` once it is cancelled or (one-shot) fired.
    pub fn stats(&self, id: TimerId) -> Option<TimerStats> {
        lock(&self.registry).pending.get(&id).map(|e| e.stats)
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        lock(&self.registry).pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves the next id, pending, before its task exists (so the task, which checks
    /// its entry before firing, can never miss it).
    fn register(&self) -> TimerId {
        let mut reg = lock(&self.registry);
        reg.last_id += 1;
        let id = TimerId(reg.last_id);
        reg.pending.insert(id, Entry { task: None, stats: TimerStats::default() });
        id
    }

    fn start(&self, id: TimerId, fut: impl Future<Output = ()> + Send + 'static) -> TimerId {
        let task = self.spawn.spawn(&id.to_string(), Box::pin(fut));
        if let Some(entry) = lock(&self.registry).pending.get_mut(&id) {
            entry.task = Some(task);
        }
        // Otherwise it was cancelled (or fired) already; the detached task checks its entry
        // before any firing and ends on its own.
        id
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer").field("pending", &self.len()).finish_non_exhaustive()
    }
}

/// `start + tick × interval`, saturating at the far future.
fn tick_deadline(start: MonoTime, interval_ns: u128, tick: u64) -> MonoTime {
    let t = u128::from(start.as_nanos()).saturating_add(interval_ns.saturating_mul(u128::from(tick)));
    MonoTime::from_nanos(u64::try_from(t).unwrap_or(u64::MAX))
}

/// The last tick due at `now`: `floor((now - start) / interval)`.
fn ticks_due(start: MonoTime, interval_ns: u128, now: MonoTime) -> u64 {
    let elapsed = u128::from(now.as_nanos().saturating_sub(start.as_nanos()));
    u64::try_from(elapsed / interval_ns).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    //! Driven by `engine::testing`'s manual clock (moves only when the test or a callback
    //! moves it) and single-threaded executor (polls ready tasks in wake order). `advance`
    //! jumps from one sleeper's deadline to the next, as madsim does.

    use super::*;
    use crate::testing::{Executor, ManualClock};

    const MS: u64 = 1_000_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at_ms(n: u64) -> MonoTime {
        MonoTime::from_nanos(n * MS)
    }

    /// Moves `clock` forward to `ns` nanoseconds (never back).
    fn set(clock: &ManualClock, ns: u64) {
        clock.advance_to(MonoTime::from_nanos(ns));
    }

    fn now_ns(clock: &ManualClock) -> u64 {
        clock.now().as_nanos()
    }

    struct Harness {
        clock: ManualClock,
        exec: Executor,
    }

    impl Harness {
        fn new() -> Self {
            Harness { clock: ManualClock::new(), exec: Executor::new() }
        }
        fn timer(&self) -> Timer {
            Timer::new(Arc::new(self.clock.clone()), self.exec.spawner())
        }
        /// Runs everything due, stepping virtual time from deadline to deadline up to
        /// `now + d`.
        fn advance(&self, d: Duration) {
            let target = now_ns(&self.clock) + u64::try_from(d.as_nanos()).unwrap();
            loop {
                self.exec.run_until_stalled();
                match self.clock.next_deadline().map(MonoTime::as_nanos) {
                    Some(t) if t <= target => set(&self.clock, t),
                    _ => break,
                }
            }
            set(&self.clock, target);
            self.exec.run_until_stalled();
        }
    }

    /// A shared log of `(timer, fired at ms)` that callbacks append to.
    type Log = Arc<Mutex<Vec<(TimerId, u64)>>>;

    fn recorder(log: &Log) -> impl FnMut(TimerId, MonoTime) + Send + 'static {
        let log = log.clone();
        move |id, t| log.lock().unwrap().push((id, t.as_nanos() / MS))
    }

    fn times(log: &Log) -> Vec<u64> {
        log.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }

    #[test]
    fn expire_after_fires_once_at_the_deadline() {
        let h = Harness::new();
        let timer = h.timer();
        let log = Log::default();
        h.advance(ms(5));
        let id = timer.expire_after(ms(10), recorder(&log));
        assert_eq!(timer.len(), 1);
        h.advance(ms(9));
        assert!(times(&log).is_empty());
        h.advance(ms(1));
        assert_eq!(*log.lock().unwrap(), [(id, 15)]);
        h.advance(ms(100));
        assert_eq!(times(&log), [15]);
        assert!(timer.is_empty());
        assert_eq!(h.exec.live_tasks(), 0);
    }

    #[test]
    fn expire_at_fires_at_the_instant_and_at_once_when_past() {
        let h = Harness::new();
        let timer = h.timer();
        let log = Log::default();
        timer.expire_at(at_ms(42), recorder(&log));
        h.advance(ms(50));
        assert_eq!(times(&log), [42]);
        // A deadline in the past fires on the next turn, at the current time.
        timer.expire_at(at_ms(10), recorder(&log));
        assert_eq!(times(&log), [42], "never inline in the caller");
        h.advance(Duration::ZERO);
        assert_eq!(times(&log), [42, 50]);
    }

    #[test]
    fn async_one_shot_runs_its_future_to_completion() {
        let h = Harness::new();
        let timer = h.timer();
        let log = Log::default();
        let (log2, clock) = (log.clone(), h.clock.clone());
        let id = timer.expire_after_async(ms(10), move |id, t| async move {
            clock.sleep(ms(5)).await;
            log2.lock().unwrap().push((id, t.as_nanos() / MS));
            log2.lock().unwrap().push((id, clock.now().as_nanos() / MS));
        });
        h.advance(ms(12));
        assert!(times(&log).is_empty());
        assert!(!timer.cancel(id), "a started one-shot is no longer pending");
        h.advance(ms(10));
        assert_eq!(times(&log), [10, 15]);
    }

    #[test]
    fn repeating_cadence_does_not_drift() {
        let h = Harness::new();
        let timer = h.timer();
        let log = Log::default();
        h.advance(ms(3));
        // Each callback "works" for 4 ms of virtual time; deadlines must not shift by it.
        let mut record = recorder(&log);
        let clock = h.clock.clone();
        let id = timer.expire_repeatedly(ms(10), move |id, t| {
            record(id, t);
            set(&clock, now_ns(&clock) + 4 * MS);
        });
        h.advance(ms(60));
        assert_eq!(times(&log), [13, 23, 33, 43, 53, 63]);
        assert_eq!(timer.stats(id), Some(TimerStats { fired: 6, skipped: 0 }));
    }

    #[test]
    fn async_repeating_cadence_does_not_drift() {
        let h = Harness::new();
        let timer = h.timer();
        let log = Log::default();
        let clock = Arc::new(h.clock.clone());
        let log2 = log.clone();
        timer.expire_repeatedly_async(ms(10), move |_, t| {
            let (clock, log) = (clock.clone(), log2.clone());
            async move {
                clock.sleep(ms(7)).await;
                log.lock().unwrap().push((TimerId(0), t.as_nanos() / MS));
            }
        });
        // Each callback logs its firing time after 7 ms of work: the one fired at 40 logs at 47.
        h.advance(ms(48));
        assert_eq!(times(&log), [10, 20, 30, 40]);
    }

    #[test]
    fn overrun_skips_missed_ticks_instead_of_bursting() {
        let h = Harness::new();
        let timer = h.timer();
        let log = Log::default();
        let clock = Arc::new(h.clock.clone());
        let log2 = log.clone();
        let mut n = 0;
        // The first callback takes 35 ms: the ticks due at 20, 30 and 40 pass while it runs.
        let id = timer.expire_repeatedly_async(ms(10), move |id, t| {
            n += 1;
            let (clock, log) = (clock.clone(), log2.clone());
            async move {
                log.lock().unwrap().push((id, t.as_nanos() / MS));
                if n == 1 {
                    clock.sleep(ms(35)).await;
                }
            }
        });
        h.advance(ms(70));
        // At 45 the ticks due at 20 and 30 are skipped and the one due at 40 fires, once,
        // late; then the schedule goes on at 50, not at 45 + 10.
        assert_eq!(times(&log), [10, 45, 50, 60, 70]);
        assert_eq!(timer.stats(id), Some(TimerStats { fired: 5, skipped: 2 }));
    }

    #[test]
    fn late_wakeup_fires_once_for_the_latest_due_tick() {
        let h = Harness::new();
        let timer = h.timer();
        let log = Log::default();
        let id = timer.expire_repeatedly(ms(10), recorder(&log));
        h.advance(ms(10));
        // The node stalls: time jumps 37 ms without the executor running (ticks 20, 30, 40
        // pass; 40 is the latest due at 47).
        set(&h.clock, 47 * MS);
        h.advance(ms(13));
        assert_eq!(times(&log), [10, 47, 50, 60]);
        assert_eq!(timer.stats(id), Some(TimerStats { fired: 4, skipped: 2 }));
    }

    #[test]
    fn cancel_before_firing_prevents_the_callback() {
        let h = Harness::new();
        let timer = h.timer();
        let log = Log::default();
        let once = timer.expire_after(ms(10), recorder(&log));
        let fired = timer.expire_after(ms(1), recorder(&log));
        h.advance(ms(5));
        assert!(timer.cancel(once));
        assert!(!timer.cancel(once), "second cancel is a no-op");
        assert!(!timer.cancel(fired), "already fired");
        assert!(!timer.cancel(TimerId(999)));
        h.advance(ms(100));
        assert_eq!(*log.lock().unwrap(), [(fired, 1)]);
        assert_eq!(h.exec.live_tasks(), 0, "the cancelled task was aborted");
    }

    #[test]
    fn cancel_stops_a_repeating_timer() {
        let h = Harness::new();
        let timer = h.timer();
        let log = Log::default();
        let id = timer.expire_repeatedly(ms(10), recorder(&log));
        h.advance(ms(25));
        assert!(timer.cancel(id));
        assert_eq!(timer.stats(id), None);
        h.advance(ms(100));
        assert_eq!(times(&log), [10, 20]);
        assert_eq!(h.exec.live_tasks(), 0);
    }

    #[test]
    fn repeating_timer_can_cancel_itself() {
        let h = Harness::new();
        let timer = Arc::new(h.timer());
        let log = Log::default();
        let weak = Arc::downgrade(&timer);
        let mut record = recorder(&log);
        let mut n = 0;
        timer.expire_repeatedly(ms(10), move |id, t| {
            record(id, t);
            n += 1;
            if n == 3 {
                assert!(weak.upgrade().unwrap().cancel(id));
            }
        });
        h.advance(ms(100));
        assert_eq!(times(&log), [10, 20, 30]);
        assert!(timer.is_empty());
        assert_eq!(h.exec.live_tasks(), 0);
    }

    #[test]
    fn cancel_all_and_drop_cancel_everything() {
        let h = Harness::new();
        let log = Log::default();
        let timer = h.timer();
        timer.expire_after(ms(10), recorder(&log));
        timer.expire_repeatedly(ms(3), recorder(&log));
        assert_eq!(timer.cancel_all(), 2);
        assert_eq!(timer.cancel_all(), 0);

        let timer = h.timer();
        timer.expire_at(at_ms(10), recorder(&log));
        timer.expire_repeatedly(ms(3), recorder(&log));
        timer.expire_after_async(ms(1), |_, _| async {});
        drop(timer);
        h.advance(ms(100));
        assert!(log.lock().unwrap().is_empty());
        assert_eq!(h.exec.live_tasks(), 0);
    }

    #[test]
    fn ids_are_a_deterministic_counter() {
        let h = Harness::new();
        let (a, b) = (h.timer(), h.timer());
        let ids_a: Vec<u64> = (0..3).map(|_| a.expire_after(ms(1), |_, _| {}).as_u64()).collect();
        let ids_b: Vec<u64> = (0..3).map(|_| b.expire_repeatedly(ms(1), |_, _| {}).as_u64()).collect();
        assert_eq!(ids_a, [1, 2, 3]);
        assert_eq!(ids_b, [1, 2, 3], "per Timer, not global");
        a.cancel(TimerId(2));
        assert_eq!(a.expire_after(ms(1), |_, _| {}).to_string(), "timer-4", "never reused");
    }

    #[test]
    #[should_panic(expected = "non-zero interval")]
    fn zero_interval_is_rejected() {
        Harness::new().timer().expire_repeatedly(Duration::ZERO, |_, _| {});
    }

    #[test]
    fn schedule_arithmetic_saturates() {
        let far = MonoTime::from_nanos(u64::MAX - 5);
        assert_eq!(tick_deadline(far, 10, 1), MonoTime::from_nanos(u64::MAX));
        assert_eq!(tick_deadline(MonoTime::default(), u128::MAX, u64::MAX), MonoTime::from_nanos(u64::MAX));
        assert_eq!(ticks_due(at_ms(3), 10 * u128::from(MS), at_ms(42)), 3);
        assert_eq!(ticks_due(at_ms(50), 10, at_ms(3)), 0);
    }
}
