//! Clock faults of a live run (`--clock-faults-every`): when which server's clock is skewed,
//! jumps or drifts. I/O-free: the runner polls [`ClockSchedule::step`] with the time and
//! writes each [`ClockEvent`] to the server's clock-control file, which the server process
//! follows (`real cluster serve --clock-control FILE`, [`crate::adapters::ClockFaults`]).
//!
//! Inputs of [`ClockSchedule::step`]: `now` (ns since the start of the run). Choices come from
//! a generator forked from the run's seed.
//!
//! Rules, as the simulator's clock faults:
//! - a fault every `every` during the chaos phase, at most one per step, on a random server;
//! - `skew`: the wall clock's offset is set to ±1..=`offset_max_ms`;
//! - `jump`: the offset moves by ±1..=`offset_max_ms` at once;
//! - `drift`: both clocks run ±1..=`drift_ppm_max` ppm fast or slow from now on;
//! - at the heal every server's clock is set right (offset 0, no drift): one event each for
//!   the servers that had a fault.
//!
//! A fault stays until the next fault of that server or the heal, and a restarted server's
//! new incarnation reads the same file, so it keeps its host's clock.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::env::RandExt;
use scenarios::faults::signed;
use scenarios::seed_rng::SeedRng;

use super::schedule::nanos;

/// A kind of clock fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClockFaultKind {
    Skew,
    Jump,
    Drift,
}

impl ClockFaultKind {
    pub const ALL: [ClockFaultKind; 3] = [ClockFaultKind::Skew, ClockFaultKind::Jump, ClockFaultKind::Drift];

    pub fn name(self) -> &'static str {
        match self {
            ClockFaultKind::Skew => "skew",
            ClockFaultKind::Jump => "jump",
            ClockFaultKind::Drift => "drift",
        }
    }
}

/// What the schedule may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockScheduleConfig {
    pub servers: usize,
    pub every: Duration,
    /// Largest skew or jump (ms), at least 1.
    pub offset_max_ms: i64,
    /// Largest drift (ppm), at least 1.
    pub drift_ppm_max: i64,
    /// No fault at or after this time (ns); every clock is set right then.
    pub heal_ns: u64,
}

/// Server `server`'s clock is now `offset_ms` off and drifts `ppm` (`kind` is `None` for the
/// heal's reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockEvent {
    pub server: usize,
    pub kind: Option<ClockFaultKind>,
    pub offset_ms: i64,
    pub ppm: i64,
}

/// The clock-fault plan of one run, drawn as it goes (see the module documentation).
#[derive(Debug)]
pub struct ClockSchedule {
    config: ClockScheduleConfig,
    rng: SeedRng,
    next_ns: u64,
    /// Servers whose clock is off -> (offset ms, ppm).
    off: BTreeMap<usize, (i64, i64)>,
    healed: bool,
}

impl ClockSchedule {
    pub fn new(seed: u64, config: ClockScheduleConfig) -> Self {
        assert!(config.servers > 0, "a clock schedule needs servers");
        let next_ns = nanos(config.every);
        ClockSchedule {
            config,
            rng: SeedRng::new(seed).fork("live-clock"),
            next_ns,
            off: BTreeMap::new(),
            healed: false,
        }
    }

    /// What to write at `now` (ns since the start of the run).
    pub fn step(&mut self, now: u64) -> Vec<ClockEvent> {
        if now >= self.config.heal_ns {
            if self.healed {
                return Vec::new();
            }
            self.healed = true;
            let off = std::mem::take(&mut self.off);
            return off
                .into_keys()
                .map(|server| ClockEvent { server, kind: None, offset_ms: 0, ppm: 0 })
                .collect();
        }
        if self.next_ns > now {
            return Vec::new();
        }
        while self.next_ns <= now {
            self.next_ns += nanos(self.config.every).max(1);
        }
        let server = self.rng.gen_range(0..self.config.servers as u64) as usize;
        let kind = *self.rng.choose(&ClockFaultKind::ALL).expect("three kinds");
        let (mut offset_ms, mut ppm) = self.off.get(&server).copied().unwrap_or((0, 0));
        match kind {
            ClockFaultKind::Skew => offset_ms = signed(&self.rng, self.config.offset_max_ms),
            ClockFaultKind::Jump => offset_ms += signed(&self.rng, self.config.offset_max_ms),
            ClockFaultKind::Drift => ppm = signed(&self.rng, self.config.drift_ppm_max),
        }
        self.off.insert(server, (offset_ms, ppm));
        vec![ClockEvent { server, kind: Some(kind), offset_ms, ppm }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClockScheduleConfig {
        ClockScheduleConfig {
            servers: 3,
            every: Duration::from_secs(1),
            offset_max_ms: 10_000,
            drift_ppm_max: 20_000,
            heal_ns: 12_000_000_000,
        }
    }

    fn run(seed: u64) -> Vec<(u64, ClockEvent)> {
        let mut s = ClockSchedule::new(seed, config());
        let mut out = Vec::new();
        for t in (0..=20_000u64).step_by(50) {
            out.extend(s.step(t * 1_000_000).into_iter().map(|e| (t, e)));
        }
        out
    }

    #[test]
    fn one_fault_a_period_within_bounds_then_every_clock_set_right_at_the_heal() {
        let events = run(4);
        let faults: Vec<_> = events.iter().filter(|(_, e)| e.kind.is_some()).collect();
        assert_eq!(faults.len(), 11, "at 1..=11 s: {events:?}");
        for (t, e) in &faults {
            assert!(*t < 12_000);
            assert!(e.server < 3);
            assert!(e.ppm.abs() <= 20_000);
        }
        let resets: Vec<_> = events.iter().filter(|(_, e)| e.kind.is_none()).collect();
        assert!(!resets.is_empty());
        for (t, e) in &resets {
            assert_eq!(*t, 12_000);
            assert_eq!((e.offset_ms, e.ppm), (0, 0));
        }
        let touched: std::collections::BTreeSet<usize> = faults.iter().map(|(_, e)| e.server).collect();
        assert_eq!(resets.len(), touched.len(), "one reset per server that had a fault");
    }

    #[test]
    fn every_kind_is_drawn() {
        let mut s = ClockSchedule::new(4, ClockScheduleConfig { heal_ns: u64::MAX, ..config() });
        let mut seen = std::collections::BTreeMap::new();
        for t in 1..=300u64 {
            for e in s.step(t * 1_000_000_000) {
                *seen.entry(e.kind.expect("a fault")).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen.values().all(|n| *n >= 60), "{seen:?}");
    }

    #[test]
    fn a_jump_moves_the_offset_and_the_same_seed_gives_the_same_plan() {
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
        let mut s = ClockSchedule::new(1, ClockScheduleConfig { servers: 1, ..config() });
        let mut last = 0;
        for t in 1..12u64 {
            for e in s.step(t * 1_000_000_000) {
                match e.kind {
                    Some(ClockFaultKind::Jump) => {
                        let d = (e.offset_ms - last).abs();
                        assert!((1..=10_000).contains(&d), "{e:?} after {last}");
                    }
                    Some(ClockFaultKind::Skew) => assert!((1..=10_000).contains(&e.offset_ms.abs())),
                    _ => {}
                }
                last = e.offset_ms;
            }
        }
    }
}
