//! The `Clock` port on tokio's timer and the OS wall clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::env::{Clock, MonoTime, WallTime};
use futures::future::BoxFuture;
use futures::FutureExt;

/// Monotonic readings count from the clock's creation; the wall clock is the OS's.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock { origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> MonoTime {
        MonoTime(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn wall_now(&self) -> WallTime {
        let ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        WallTime(ms)
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(d).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_advance_the_monotonic_clock() {
        let c = TokioClock::default();
        let a = c.now();
        c.sleep(Duration::from_millis(20)).await;
        assert!(c.now().saturating_since(a) >= Duration::from_millis(20));
        assert!(c.wall_now().0 > 1_700_000_000_000);
    }
}
