//! iFun's execution-time statistics: count, mean, standard deviation and maximum, all time
//! and over the last minute.
//!
//! Means and variances use Welford's online update and Chan et al.'s pairwise merge, never
//! `sum of squares − square of sum` (which cancels catastrophically for millisecond
//! latencies with a small spread). The last minute is [`WINDOW_SECONDS`] one-second slots
//! keyed by the `Clock` port's monotonic second; a slot is reused (reset) when its second
//! comes round again, and a read merges the slots of the last [`WINDOW_SECONDS`] seconds.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::lock;
use crate::env::MonoTime;

/// Seconds covered by `last1min`.
pub const WINDOW_SECONDS: u64 = 60;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Count, mean, sum of squared deviations and maximum of a set of samples (seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean (Welford's `M2`).
    pub m2: f64,
    pub max: f64,
}

impl Moments {
    /// Adds one sample (Welford).
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        if self.count == 1 || x > self.max {
            self.max = x;
        }
    }

    /// Adds every sample of `other` (Chan et al.'s parallel merge).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * na * nb / n;
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Population standard deviation; 0 for fewer than two samples, never NaN.
    pub fn stdev(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let var = (self.m2 / self.count as f64).max(0.0);
        let s = var.sqrt();
        if s.is_finite() {
            s
        } else {
            0.0
        }
    }

    /// iFun's four fields. Empty sets give zeros.
    pub fn to_json(&self) -> Value {
        let clean = |x: f64| if x.is_finite() { x } else { 0.0 };
        json!({
            "execution_count": self.count,
            "execution_time_mean_in_sec": if self.count == 0 { 0.0 } else { clean(self.mean) },
            "execution_time_stdev_in_sec": self.stdev(),
            "execution_time_max_in_sec": if self.count == 0 { 0.0 } else { clean(self.max) },
        })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The monotonic second this slot holds (meaningful while `m.count > 0`).
    second: u64,
    m: Moments,
}

struct State {
    all: Moments,
    window: [Slot; WINDOW_SECONDS as usize],
}

/// Execution-time statistics of one kind of command.
pub struct LatencyProfile {
    st: Mutex<State>,
}

impl Default for LatencyProfile {
    fn default() -> Self {
        LatencyProfile {
            st: Mutex::new(State {
                all: Moments::default(),
                window: [Slot::default(); WINDOW_SECONDS as usize],
            }),
        }
    }
}

impl std::fmt::Debug for LatencyProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyProfile").field("all", &lock(&self.st).all).finish()
    }
}

/// A read of a [`LatencyProfile`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProfileSnapshot {
    pub all_time: Moments,
    pub last1min: Moments,
}

impl ProfileSnapshot {
    /// `{"all_time": {...}, "last1min": {...}}`.
    pub fn to_json(&self) -> Value {
        json!({ "all_time": self.all_time.to_json(), "last1min": self.last1min.to_json() })
    }
}

impl LatencyProfile {
    /// Records one command that took `d` and finished at `now`.
    pub fn record(&self, now: MonoTime, d: Duration) {
        let x = d.as_secs_f64();
        let second = now.as_nanos() / NANOS_PER_SEC;
        let mut st = lock(&self.st);
        st.all.push(x);
        let slot = &mut st.window[(second % WINDOW_SECONDS) as usize];
        if slot.second != second || slot.m.count == 0 {
            *slot = Slot { second, m: Moments::default() };
        }
        slot.m.push(x);
    }

    /// All-time statistics and those of the commands finished in the last
    /// [`WINDOW_SECONDS`] seconds before `now` (the current second included).
    pub fn snapshot(&self, now: MonoTime) -> ProfileSnapshot {
        let second = now.as_nanos() / NANOS_PER_SEC;
        let st = lock(&self.st);
        let mut last = Moments::default();
        // Slots in order of their second, so the merge (and its rounding) is reproducible.
        let mut slots: Vec<&Slot> = st
            .window
            .iter()
            .filter(|s| s.m.count > 0 && s.second <= second && second - s.second < WINDOW_SECONDS)
            .collect();
        slots.sort_by_key(|s| s.second);
        for s in slots {
            last.merge(&s.m);
        }
        ProfileSnapshot { all_time: st.all, last1min: last }
    }
}
