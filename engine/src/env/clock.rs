//! The `Clock` port: monotonic time for timeouts, a wall clock for expiry stamps.

use std::future::Future;
use std::time::Duration;

use futures::future::{self, BoxFuture, Either};
use serde::{Deserialize, Serialize};

/// A point on this node's monotonic clock, in nanoseconds since an arbitrary origin.
///
/// Only differences between two `MonoTime`s of the same node mean anything. Under the
/// simulator the monotonic clock may *drift* (run slightly fast or slow) per node, so a
/// duration measured on one node is not exactly the same duration on another: protocols
/// that compare time across nodes must leave a margin for that (documented where they do).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MonoTime(pub u64);

impl std::ops::Add<Duration> for MonoTime {
    type Output = MonoTime;
    /// Saturating: adding to the far future stays there.
    fn add(self, d: Duration) -> MonoTime {
        self.saturating_add(d)
    }
}

impl MonoTime {
    pub fn from_nanos(n: u64) -> Self {
        MonoTime(n)
    }
    pub fn as_nanos(self) -> u64 {
        self.0
    }
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
    pub fn checked_add(self, d: Duration) -> Option<MonoTime> {
        u64::try_from(d.as_nanos()).ok().and_then(|n| self.0.checked_add(n)).map(MonoTime)
    }
    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> MonoTime {
        self.checked_add(d).unwrap_or(MonoTime(u64::MAX))
    }
}

/// A wall-clock reading: milliseconds since the Unix epoch, as this node believes it.
///
/// Wall clocks are *not* comparable across nodes: each may be skewed or jump (NTP steps,
/// the simulator's clock faults). Use them for expiry stamps judged by one node (e.g.
/// Redis TTLs are judged by the Redis node's clock) and for logs, never for ordering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WallTime(pub i64);

impl WallTime {
    pub fn as_millis(self) -> i64 {
        self.0
    }
    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> WallTime {
        WallTime(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// Returned by [`timeout`] when the deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// Time, as one node sees it.
pub trait Clock: Send + Sync {
    /// This node's monotonic clock. Never goes backwards; may drift per node under sim.
    fn now(&self) -> MonoTime;

    /// This node's wall clock. May be skewed and may jump, forwards or backwards.
    fn wall_now(&self) -> WallTime;

    /// Completes once `d` has passed on this node's monotonic clock.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;

    /// Completes once this node's monotonic clock reaches `deadline` (at once if past).
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        let d = deadline.saturating_since(self.now());
        self.sleep(d)
    }
}

/// Runs `fut` for at most `d` on `clock`; `Err(Elapsed)` if the deadline came first.
///
/// The future is dropped (cancelled) at the deadline. Ties go to the future: if both are
/// ready in the same poll the result wins.
pub async fn timeout<T>(clock: &dyn Clock, d: Duration, fut: impl Future<Output = T>) -> Result<T, Elapsed> {
    let fut = std::pin::pin!(fut);
    let sleep = clock.sleep(d);
    match future::select(fut, sleep).await {
        Either::Left((v, _)) => Ok(v),
        Either::Right(((), _)) => Err(Elapsed),
    }
}
