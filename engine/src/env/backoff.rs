//! Retry pacing: one randomised exponential backoff for every retry loop of the engine.

use std::time::Duration;

use super::rand::{Rand, RandExt};

/// Doublings after which the cap stops growing, whatever `max` is (keeps `1 << n` in range).
const DOUBLINGS_MAX: u32 = 20;

/// Randomised exponential backoff: attempt `n` waits a time drawn uniformly from the upper
/// half of `min × 2^n`, capped at `max`.
///
/// The jitter is one draw from the [`Rand`] port per call (so a simulated run replays), and
/// nothing else is drawn: a retry loop that switches to this type keeps its trace hash.
/// By default the upper end is excluded (`[cap/2, cap)`, the account and cluster retry loops);
/// [`Backoff::cap_inclusive`] includes it (`[cap/2, cap]`, the RPC client's reconnects).
///
/// ```
/// # use std::time::Duration;
/// # use engine::env::Backoff;
/// const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// assert_eq!(RETRY.cap(0), Duration::from_millis(100));
/// assert_eq!(RETRY.cap(3), Duration::from_millis(800));
/// assert_eq!(RETRY.cap(30), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    inclusive: bool,
}

impl Backoff {
    /// Attempt 0 waits up to `min`; each attempt doubles that, up to `max`.
    ///
    /// # Panics
    /// If `min > max` (a programming error; constants are checked at compile time).
    pub const fn new(min: Duration, max: Duration) -> Self {
        assert!(min.as_nanos() <= max.as_nanos(), "backoff min above max");
        Backoff { min, max, inclusive: false }
    }

    /// Draws from `[cap/2, cap]` instead of `[cap/2, cap)`.
    pub const fn cap_inclusive(self) -> Self {
        Backoff { inclusive: true, ..self }
    }

    pub const fn min(&self) -> Duration {
        self.min
    }

    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The longest wait of attempt `attempt`: `min × 2^attempt`, at most `max`.
    pub fn cap(&self, attempt: u32) -> Duration {
        self.min.saturating_mul(1 << attempt.min(DOUBLINGS_MAX)).min(self.max)
    }

    /// The wait before retry number `attempt` (0-based), with jitter from `rand`. Whole
    /// milliseconds; a cap under 2 ms counts as 2 ms so the range is never empty.
    pub fn delay(&self, attempt: u32, rand: &dyn Rand) -> Duration {
        let cap_ms = u64::try_from(self.cap(attempt).as_millis()).unwrap_or(u64::MAX).max(2);
        let end = if self.inclusive { cap_ms.saturating_add(1) } else { cap_ms };
        Duration::from_millis(rand.gen_range(cap_ms / 2..end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Returns the values it is given, in order.
    struct Script(Vec<u64>, AtomicU64);
    impl Rand for Script {
        fn next_u64(&self) -> u64 {
            self.0[self.1.fetch_add(1, Ordering::Relaxed) as usize]
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_cap_doubles_from_min_and_stops_at_max() {
        let b = Backoff::new(100 * MS, 5000 * MS);
        let caps: Vec<u128> = (0..8).map(|a| b.cap(a).as_millis()).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.cap(u32::MAX), 5000 * MS, "no overflow on absurd attempts");
    }

    #[test]
    fn delays_cover_the_upper_half_and_exclude_the_cap_unless_inclusive() {
        // u64::MAX is the largest draw: it lands on the last value of the range.
        let top = Script(vec![u64::MAX; 4], AtomicU64::new(0));
        let b = Backoff::new(100 * MS, 5000 * MS);
        assert_eq!(b.delay(0, &top), 99 * MS);
        assert_eq!(b.cap_inclusive().delay(0, &top), 100 * MS);
        let bottom = Script(vec![0; 2], AtomicU64::new(0));
        assert_eq!(b.delay(2, &bottom), 200 * MS);
        assert_eq!(b.cap_inclusive().delay(2, &bottom), 200 * MS);
    }

    #[test]
    fn a_sub_millisecond_cap_still_gives_a_valid_range() {
        let top = Script(vec![u64::MAX], AtomicU64::new(0));
        let b = Backoff::new(Duration::from_micros(10), Duration::from_micros(10));
        assert_eq!(b.delay(0, &top), MS);
    }

    #[test]
    fn each_delay_draws_exactly_once() {
        let r = Script(vec![1, 2, 3], AtomicU64::new(0));
        let b = Backoff::new(20 * MS, 500 * MS).cap_inclusive();
        b.delay(0, &r);
        b.delay(9, &r);
        assert_eq!(r.1.load(Ordering::Relaxed), 2);
    }
}
