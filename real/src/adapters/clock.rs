//! The `Clock` port on tokio's timer and the OS wall clock, with optional test-only clock
//! faults ([`ClockFaults`]) for live-cluster runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::env::{Clock, MonoTime, WallTime};
use futures::future::BoxFuture;
use futures::FutureExt;

/// The largest drift [`ClockFaults`] accepts (ppm either way): 10 %.
pub const DRIFT_PPM_LIMIT: i64 = 100_000;

/// Monotonic readings count from the clock's creation; the wall clock is the OS's. With
/// [`TokioClock::with_faults`] both are bent by a [`ClockFaults`].
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    faults: Option<Arc<ClockFaults>>,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock { origin: tokio::time::Instant::now(), faults: None }
    }
}

impl TokioClock {
    /// A clock whose readings and sleeps follow `faults` (a live run's clock faults; never
    /// used by `sandtable-server`).
    pub fn with_faults(faults: Arc<ClockFaults>) -> TokioClock {
        TokioClock { faults: Some(faults), ..TokioClock::default() }
    }

    fn real_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn os_wall_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

impl Clock for TokioClock {
    fn now(&self) -> MonoTime {
        let real = self.real_ns();
        MonoTime(self.faults.as_ref().map_or(real, |f| f.local_ns(real)))
    }

    fn wall_now(&self) -> WallTime {
        let os = os_wall_ms();
        WallTime(self.faults.as_ref().map_or(os, |f| f.wall_ms(self.real_ns(), os)))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        let real = self.faults.as_ref().map_or(d, |f| f.real_duration(d));
        tokio::time::sleep(real).boxed()
    }
}

/// One process's clock faults, set from outside while it runs (a live run's runner, through
/// `real cluster serve --clock-control FILE`): a wall-clock offset (skews and jumps) and a
/// drift of both clocks, as the simulator's node clocks have.
///
/// Inputs of [`ClockFaults::set`]: the process's real monotonic time (ns since its clock's
/// origin), the new offset (ms) and the new drift (ppm). The local monotonic clock runs at
/// `1 + ppm/10^6` of real time from the moment the drift is set, continuous across changes,
/// so it never goes backwards; the wall clock is the OS's plus the offset plus what the drift
/// has added so far. A sleep of `d` on the local clock lasts `d / (1 + ppm/10^6)` of real
/// time (at the drift when it starts: a change mid-sleep is not applied to it).
///
/// Not modelled: timers inside the ZooKeeper and Redis clients (they use tokio's time
/// directly, as they would on a host whose clock is wrong only for the application).
#[derive(Debug, Default)]
pub struct ClockFaults {
    state: Mutex<Drift>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Drift {
    offset_ms: i64,
    ppm: i64,
    /// Real and local time when the drift was last set.
    anchor_real_ns: u64,
    anchor_local_ns: u64,
}

impl Drift {
    fn local_ns(&self, real_ns: u64) -> u64 {
        let since = real_ns.saturating_sub(self.anchor_real_ns) as i128;
        let local = since + since * self.ppm as i128 / 1_000_000;
        self.anchor_local_ns.saturating_add(u64::try_from(local.max(0)).unwrap_or(u64::MAX))
    }
}

impl ClockFaults {
    /// Sets the offset and drift from real time `real_ns` on. `ppm` is clamped to
    /// ±[`DRIFT_PPM_LIMIT`].
    pub fn set(&self, real_ns: u64, offset_ms: i64, ppm: i64) {
        let mut st = engine::env::lock(&self.state);
        let local = st.local_ns(real_ns);
        *st = Drift {
            offset_ms,
            ppm: ppm.clamp(-DRIFT_PPM_LIMIT, DRIFT_PPM_LIMIT),
            anchor_real_ns: real_ns,
            anchor_local_ns: local,
        };
    }

    /// The current (offset ms, drift ppm).
    pub fn get(&self) -> (i64, i64) {
        let st = engine::env::lock(&self.state);
        (st.offset_ms, st.ppm)
    }

    /// The local monotonic time at real time `real_ns`.
    pub fn local_ns(&self, real_ns: u64) -> u64 {
        engine::env::lock(&self.state).local_ns(real_ns)
    }

    /// The local wall clock (ms) at real time `real_ns`, the OS's wall clock reading `os_ms`.
    pub fn wall_ms(&self, real_ns: u64, os_ms: i64) -> i64 {
        let st = *engine::env::lock(&self.state);
        let drifted_ms = (st.local_ns(real_ns) as i128 - real_ns as i128) / 1_000_000;
        os_ms.saturating_add(st.offset_ms).saturating_add(drifted_ms as i64)
    }

    /// How long a local sleep of `d` lasts in real time.
    pub fn real_duration(&self, d: Duration) -> Duration {
        let ppm = engine::env::lock(&self.state).ppm;
        let ns = d.as_nanos() * 1_000_000 / (1_000_000 + ppm) as u128;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// Why a clock-control line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockControlError {
    #[error("clock control: expected `OFFSET_MS PPM`, got {0:?}")]
    Malformed(String),
    #[error("clock control: drift {0} ppm is outside ±{DRIFT_PPM_LIMIT}")]
    DriftOutOfRange(i64),
}

/// Parses a clock-control file's content: one line `OFFSET_MS PPM` (integers).
pub fn parse_clock_control(text: &str) -> Result<(i64, i64), ClockControlError> {
    let mut it = text.split_whitespace();
    let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
        return Err(ClockControlError::Malformed(text.trim().to_string()));
    };
    let (Ok(offset), Ok(ppm)) = (a.parse::<i64>(), b.parse::<i64>()) else {
        return Err(ClockControlError::Malformed(text.trim().to_string()));
    };
    if !(-DRIFT_PPM_LIMIT..=DRIFT_PPM_LIMIT).contains(&ppm) {
        return Err(ClockControlError::DriftOutOfRange(ppm));
    }
    Ok((offset, ppm))
}

/// How often a process re-reads its clock-control file.
pub const CLOCK_CONTROL_POLL: Duration = Duration::from_millis(50);

/// Follows `path` (written by the runner, replaced atomically): every
/// [`CLOCK_CONTROL_POLL`] it reads the file and applies a changed line to `faults`, at the
/// real time of `clock`. A missing file means no fault; a malformed line is logged and
/// ignored. Runs until the process exits.
pub fn follow_clock_control(path: std::path::PathBuf, clock: TokioClock, faults: Arc<ClockFaults>) {
    tokio::spawn(async move {
        let mut last: Option<(i64, i64)> = None;
        loop {
            let wanted = match std::fs::read_to_string(&path) {
                Ok(text) => match parse_clock_control(&text) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "ignored");
                        last
                    }
                },
                Err(_) => Some((0, 0)),
            };
            if wanted != last {
                if let Some((offset_ms, ppm)) = wanted {
                    faults.set(clock.real_ns(), offset_ms, ppm);
                    tracing::info!(offset_ms, ppm, "clock fault applied");
                }
                last = wanted;
            }
            tokio::time::sleep(CLOCK_CONTROL_POLL).await;
        }
    });
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

    #[test]
    fn drift_bends_the_local_clock_continuously_and_never_backwards() {
        let f = ClockFaults::default();
        assert_eq!(f.local_ns(5_000_000_000), 5_000_000_000, "no fault: local is real");
        f.set(1_000_000_000, 0, 20_000); // +2 % from 1 s
        assert_eq!(f.local_ns(2_000_000_000), 2_020_000_000);
        f.set(2_000_000_000, 0, -50_000); // then -5 %
        assert_eq!(f.local_ns(2_000_000_000), 2_020_000_000, "continuous at the change");
        assert_eq!(f.local_ns(3_000_000_000), 2_970_000_000);
        f.set(3_000_000_000, 0, 0);
        assert_eq!(f.local_ns(4_000_000_000), 3_970_000_000);
        // The wall clock carries the offset plus what the drift added.
        assert_eq!(f.wall_ms(4_000_000_000, 1_000_000), 1_000_000 - 30);
        f.set(4_000_000_000, 5_000, 0);
        assert_eq!(f.wall_ms(4_000_000_000, 1_000_000), 1_005_000 - 30);
        assert_eq!(f.get(), (5_000, 0));
    }

    #[test]
    fn a_fast_clock_sleeps_less_real_time_and_drift_is_clamped() {
        let f = ClockFaults::default();
        f.set(0, 0, 100_000);
        assert_eq!(f.real_duration(Duration::from_millis(1_100)), Duration::from_millis(1_000));
        f.set(0, 0, 5_000_000);
        assert_eq!(f.get().1, DRIFT_PPM_LIMIT);
    }

    #[test]
    fn clock_control_lines_parse_or_say_why_not() {
        assert_eq!(parse_clock_control("-2500 20000\n"), Ok((-2500, 20000)));
        assert_eq!(parse_clock_control("0 0"), Ok((0, 0)));
        assert!(matches!(parse_clock_control("12"), Err(ClockControlError::Malformed(_))));
        assert!(matches!(parse_clock_control("1 2 3"), Err(ClockControlError::Malformed(_))));
        assert!(matches!(parse_clock_control("a b"), Err(ClockControlError::Malformed(_))));
        assert_eq!(parse_clock_control("0 200000"), Err(ClockControlError::DriftOutOfRange(200_000)));
    }

    #[tokio::test]
    async fn a_clock_with_faults_follows_its_control_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("clock");
        let faults = Arc::new(ClockFaults::default());
        let clock = TokioClock::with_faults(faults.clone());
        follow_clock_control(path.clone(), clock.clone(), faults.clone());
        let before = clock.wall_now().0;
        std::fs::write(&path, "3600000 0").expect("write");
        tokio::time::sleep(CLOCK_CONTROL_POLL * 4).await;
        assert_eq!(faults.get(), (3_600_000, 0));
        assert!(clock.wall_now().0 - before >= 3_600_000);
    }
}
