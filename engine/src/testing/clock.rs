//! [`ManualClock`]: time that moves only when the test says so.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::env::{lock, Clock, MonoTime, WallTime};

/// A [`Clock`] for tests: monotonic and wall time start where the test puts them and only
/// move when it calls [`advance`](ManualClock::advance) or [`advance_to`](ManualClock::advance_to);
/// a [`sleep`](Clock::sleep) completes once time has been moved to or past its deadline (its
/// task is woken then). [`next_deadline`](ManualClock::next_deadline) says where the next
/// pending sleep ends, so a harness can jump there instead of stepping in small increments.
///
/// The wall clock moves with the monotonic one (whole milliseconds) unless the test jumps it
/// with [`set_wall`](ManualClock::set_wall), as an NTP step would. Clones share one time.
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    now_ns: u64,
    /// Wall time (ms) at monotonic `wall_set_ns`.
    wall_ms: i64,
    wall_set_ns: u64,
    /// Pending sleeps by (deadline ns, sleep id).
    sleepers: BTreeMap<(u64, u64), Waker>,
    next_sleep: u64,
}

impl Inner {
    fn wall(&self) -> WallTime {
        let since_ms = (self.now_ns - self.wall_set_ns) / 1_000_000;
        WallTime(self.wall_ms.saturating_add(i64::try_from(since_ms).unwrap_or(i64::MAX)))
    }
}

impl ManualClock {
    /// Monotonic time 0, wall time 0 (the Unix epoch).
    pub fn new() -> Self {
        ManualClock::default()
    }

    /// Monotonic time 0, wall time `wall`.
    pub fn with_wall(wall: WallTime) -> Self {
        let c = ManualClock::new();
        c.set_wall(wall);
        c
    }

    /// Moves both clocks forward by `d` and wakes every sleep due by then.
    pub fn advance(&self, d: Duration) {
        let to = self.now().saturating_add(d);
        self.advance_to(to);
    }

    /// Moves time forward to `t` (a `t` in the past changes nothing: monotonic time never goes
    /// back) and wakes every sleep due by then.
    pub fn advance_to(&self, t: MonoTime) {
        let due: Vec<Waker> = {
            let mut st = lock(&self.inner);
            st.now_ns = st.now_ns.max(t.as_nanos());
            let first_later = (st.now_ns.saturating_add(1), 0);
            let later = st.sleepers.split_off(&first_later);
            std::mem::replace(&mut st.sleepers, later).into_values().collect()
        };
        // Outside the lock: a woken task may be polled inline by some executors.
        due.into_iter().for_each(Waker::wake);
    }

    /// Jumps the wall clock to `wall` (forwards or backwards); monotonic time is unaffected.
    pub fn set_wall(&self, wall: WallTime) {
        let mut st = lock(&self.inner);
        st.wall_ms = wall.as_millis();
        st.wall_set_ns = st.now_ns;
    }

    /// Where the earliest pending sleep ends, if any sleep is pending.
    pub fn next_deadline(&self) -> Option<MonoTime> {
        lock(&self.inner).sleepers.keys().next().map(|(d, _)| MonoTime::from_nanos(*d))
    }

    /// Number of pending sleeps.
    pub fn sleepers(&self) -> usize {
        lock(&self.inner).sleepers.len()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> MonoTime {
        MonoTime::from_nanos(lock(&self.inner).now_ns)
    }

    fn wall_now(&self) -> WallTime {
        lock(&self.inner).wall()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        let deadline = self.now().saturating_add(d).as_nanos();
        Box::pin(Sleep { clock: self.inner.clone(), deadline, id: None })
    }
}

/// A pending [`ManualClock::sleep`]; deregisters itself when dropped.
struct Sleep {
    clock: Arc<Mutex<Inner>>,
    deadline: u64,
    /// Set once registered in `sleepers`.
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let clock = self.clock.clone();
        let mut st = lock(&clock);
        if st.now_ns >= self.deadline {
            if let Some(id) = self.id.take() {
                st.sleepers.remove(&(self.deadline, id));
            }
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                st.next_sleep += 1;
                st.next_sleep
            }
        };
        self.id = Some(id);
        st.sleepers.insert((self.deadline, id), cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(&self.clock).sleepers.remove(&(self.deadline, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_sleep_completes_only_once_time_reaches_its_deadline() {
        let c = ManualClock::new();
        let mut s = c.sleep(10 * MS);
        assert!(s.as_mut().now_or_never().is_none());
        assert_eq!(c.next_deadline(), Some(MonoTime::from_nanos(10_000_000)));
        c.advance(9 * MS);
        assert!(s.as_mut().now_or_never().is_none());
        c.advance(MS);
        assert!(s.as_mut().now_or_never().is_some());
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_dropped_sleep_leaves_no_deadline_behind() {
        let c = ManualClock::new();
        let mut s = c.sleep(MS);
        assert!(s.as_mut().now_or_never().is_none());
        assert_eq!(c.sleepers(), 1);
        drop(s);
        assert_eq!(c.sleepers(), 0);
    }

    #[test]
    fn wall_time_follows_monotonic_time_until_it_is_jumped() {
        let c = ManualClock::with_wall(WallTime(1_000));
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.wall_now(), WallTime(2_500));
        c.set_wall(WallTime(0));
        c.advance(5 * MS);
        assert_eq!(c.wall_now(), WallTime(5));
        c.advance_to(MonoTime::from_nanos(0));
        assert_eq!(c.now(), MonoTime::from_nanos(1_505_000_000), "never backwards");
    }
}
