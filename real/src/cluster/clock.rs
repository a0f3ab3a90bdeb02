//! The run's true time, shared by every process of a live-cluster run.
//!
//! Histories (clients, in the runner) and acting evidence (servers, in their own processes)
//! are compared in one time line, so every process reads the same clock: Linux's
//! `CLOCK_MONOTONIC`, which is system-wide (one machine), never jumps with NTP or
//! `date -s`, and keeps counting across a server's kill and restart. The runner reads it
//! once at the start (the epoch) and hands the value to every server it spawns.

use std::sync::Arc;

use scenarios::history::TimeSource;

/// `CLOCK_MONOTONIC` now, in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported on
    // Linux, so the call cannot fail with these arguments.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// True time of a run: ns since its epoch on the machine's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    epoch_ns: u64,
}

impl RunClock {
    /// A run starting now.
    pub fn start() -> Self {
        Self { epoch_ns: monotonic_ns() }
    }
    /// The clock of a run that started at `epoch_ns` (in another process of the run).
    pub fn from_epoch(epoch_ns: u64) -> Self {
        Self { epoch_ns }
    }
    pub fn epoch_ns(&self) -> u64 {
        self.epoch_ns
    }
    /// ns since the epoch.
    pub fn now_ns(&self) -> u64 {
        monotonic_ns().saturating_sub(self.epoch_ns)
    }
    /// The clock as the scenarios' time source.
    pub fn source(&self) -> TimeSource {
        let c = *self;
        Arc::new(move || c.now_ns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_clocks_with_one_epoch_agree_across_instances() {
        let a = RunClock::start();
        let b = RunClock::from_epoch(a.epoch_ns());
        let (t1, t2, t3) = (a.now_ns(), b.now_ns(), a.now_ns());
        assert!(t1 <= t2 && t2 <= t3, "{t1} {t2} {t3}");
        assert!(t3 < 1_000_000_000, "a fresh run is under a second old: {t3}");
    }
}
