//! Fixed-bucket latency histograms (Prometheus's classic histogram).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default bucket upper bounds, in seconds: 0.5 ms to 10 s, for RPCs and service calls
/// (a ZooKeeper or Redis command on a LAN takes about a millisecond; RPC deadlines are
/// seconds).
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bounds must be finite, positive or zero, strictly increasing, and at least one.
pub(super) fn check_buckets(bounds: &[f64]) -> Result<(), &'static str> {
    if bounds.is_empty() {
        return Err("at least one bucket is needed");
    }
    if bounds.iter().any(|b| !b.is_finite() || *b < 0.0) {
        return Err("bucket bounds must be finite and not negative (+Inf is implied)");
    }
    if bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err("bucket bounds must be strictly increasing");
    }
    Ok(())
}

/// Values of one histogram series. Each bucket counts the observations `<=` its bound and
/// above the previous one; the last counts those above every bound (`+Inf`).
pub(super) struct HistCore {
    pub(super) bounds: Arc<[f64]>,
    buckets: Box<[AtomicU64]>,
    /// Exact sum in nanoseconds (no float rounding drift; overflows after 584 years).
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy of a histogram: `count` is the sum of `buckets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HistSnapshot {
    pub(super) buckets: Vec<u64>,
    pub(super) count: u64,
    pub(super) sum_nanos: u64,
}

impl HistCore {
    pub(super) fn new(bounds: Arc<[f64]>) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        HistCore { bounds, buckets, sum_nanos: AtomicU64::new(0) }
    }

    /// Index of the bucket for `d`: the first bound `>= d` in seconds.
    pub(super) fn bucket_of(bounds: &[f64], d: Duration) -> usize {
        let secs = d.as_secs_f64();
        bounds.partition_point(|b| *b < secs)
    }

    pub(super) fn observe(&self, d: Duration) {
        let i = Self::bucket_of(&self.bounds, d);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Saturating add: a wrapped sum would be worse than a stuck one.
        let _ = self
            .sum_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(s.saturating_add(nanos)));
    }

    pub(super) fn snapshot(&self) -> HistSnapshot {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let count = buckets.iter().sum();
        HistSnapshot { buckets, count, sum_nanos: self.sum_nanos.load(Ordering::Relaxed) }
    }
}
