//! The fault schedule of a live-cluster run: when to SIGKILL, restart, SIGSTOP and SIGCONT
//! which server. I/O-free: the runner polls [`Schedule::step`] with the time and which
//! servers have a running process, carries out the [`Action`]s it returns, and tells it
//! nothing else. Every choice (which server, how long a pause, how long until a restart)
//! comes from a generator forked from the run's seed, so the same seed and the same inputs
//! give the same actions.
//!
//! Inputs of [`Schedule::step`]: `now` (ns since the start of the run), which servers are up
//! (have a running process, paused or not) and which exited on their own since the last
//! step.
//!
//! Rules:
//! - a kill comes every `kill_every`, a pause every `pause_every`, both only before the heal;
//! - a kill picks among the servers that are up (a paused one too: SIGKILL ends it), a pause
//!   among those up and not paused;
//! - a killed server restarts [`RESTART_DELAY_MS`] later, or at the heal if that is sooner;
//! - a pause lasts 100 ms to `pause_max`, and ends at the heal at the latest;
//! - a server that exited on its own restarts at once (also after the heal: that is the
//!   runner keeping the cluster whole, not a fault).
//!
//! So from the heal on the schedule only ever restarts servers that exited on their own.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use engine::env::RandExt;
use scenarios::seed_rng::SeedRng;

/// A killed server restarts after a random delay in this range (ms), or at the heal.
pub const RESTART_DELAY_MS: Range<u64> = 500..3_000;
/// The shortest pause (ms).
pub const PAUSE_MIN_MS: u64 = 100;

/// What the runner should do to server `server` (an index in the topology's servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL its running process.
    Kill { server: usize },
    /// Start a new incarnation (it has no running process).
    Restart { server: usize },
    /// SIGSTOP it; the schedule resumes it after `for_ns`.
    Pause { server: usize, for_ns: u64 },
    /// SIGCONT it.
    Resume { server: usize },
}

/// What the schedule may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    pub servers: usize,
    pub kill_every: Option<Duration>,
    pub pause_every: Option<Duration>,
    /// Longest pause (at least [`PAUSE_MIN_MS`]).
    pub pause_max: Duration,
    /// No kill or pause at or after this time (ns); every fault is repaired by then.
    pub heal_ns: u64,
}

/// The kill/pause state machine of one run (see the module documentation).
#[derive(Debug)]
pub struct Schedule {
    config: ScheduleConfig,
    rng: SeedRng,
    next_kill_ns: Option<u64>,
    next_pause_ns: Option<u64>,
    /// Killed or exited servers -> when they restart (ns).
    restarts: BTreeMap<usize, u64>,
    /// Paused servers -> when they resume (ns).
    paused: BTreeMap<usize, u64>,
}

impl Schedule {
    pub fn new(seed: u64, config: ScheduleConfig) -> Self {
        Schedule {
            config,
            rng: SeedRng::new(seed).fork("live-schedule"),
            next_kill_ns: config.kill_every.map(nanos),
            next_pause_ns: config.pause_every.map(nanos),
            restarts: BTreeMap::new(),
            paused: BTreeMap::new(),
        }
    }

    /// Whether server `i` is paused (by this schedule) right now.
    pub fn is_paused(&self, i: usize) -> bool {
        self.paused.contains_key(&i)
    }

    /// The actions due at `now`: `up[i]` says whether server `i` has a running process,
    /// `exited` lists the servers whose process exited on its own since the last step.
    pub fn step(&mut self, now: u64, up: &[bool], exited: &[usize]) -> Vec<Action> {
        debug_assert_eq!(up.len(), self.config.servers);
        let mut actions = Vec::new();
        for &i in exited {
            self.paused.remove(&i);
            self.restarts.insert(i, now);
        }
        let healing = now >= self.config.heal_ns;
        if let (Some(due), Some(every)) = (self.next_pause_ns, self.config.pause_every) {
            if now >= due && !healing {
                let candidates: Vec<usize> =
                    (0..up.len()).filter(|i| up[*i] && !self.paused.contains_key(i)).collect();
                if let Some(&server) = self.rng.choose(&candidates) {
                    let max_ms = millis(self.config.pause_max).max(PAUSE_MIN_MS);
                    let len = self.rng.gen_range(PAUSE_MIN_MS..max_ms + 1) * 1_000_000;
                    let until = (now + len).min(self.config.heal_ns);
                    self.paused.insert(server, until);
                    actions.push(Action::Pause { server, for_ns: until - now });
                }
                self.next_pause_ns = Some(due + nanos(every));
            }
        }
        let wake: Vec<usize> = self.paused.iter().filter(|(_, at)| **at <= now).map(|(i, _)| *i).collect();
        for server in wake {
            self.paused.remove(&server);
            actions.push(Action::Resume { server });
        }
        if let (Some(due), Some(every)) = (self.next_kill_ns, self.config.kill_every) {
            if now >= due && !healing {
                let candidates: Vec<usize> = (0..up.len()).filter(|i| up[*i]).collect();
                if let Some(&server) = self.rng.choose(&candidates) {
                    self.paused.remove(&server); // SIGKILL ends a stopped process too
                    let delay = self.rng.gen_range(RESTART_DELAY_MS) * 1_000_000;
                    self.restarts.insert(server, (now + delay).min(self.config.heal_ns));
                    actions.push(Action::Kill { server });
                }
                self.next_kill_ns = Some(due + nanos(every));
            }
        }
        let due: Vec<usize> = self.restarts.iter().filter(|(_, at)| **at <= now).map(|(i, _)| *i).collect();
        for server in due {
            self.restarts.remove(&server);
            actions.push(Action::Restart { server });
        }
        actions
    }
}

/// `d` in ns, saturating (shared by the live runs' schedules).
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const POLL: u64 = 50 * MS;

    fn config() -> ScheduleConfig {
        ScheduleConfig {
            servers: 3,
            kill_every: Some(Duration::from_secs(2)),
            pause_every: Some(Duration::from_millis(1_500)),
            pause_max: Duration::from_secs(4),
            heal_ns: 30_000 * MS,
        }
    }

    /// Drives a schedule the way the runner does, with servers that obey every action, and
    /// returns every action with its time.
    fn drive(seed: u64, config: ScheduleConfig, end: u64) -> Vec<(u64, Action)> {
        let mut s = Schedule::new(seed, config);
        let mut up = vec![true; config.servers];
        let mut log = Vec::new();
        let mut now = 0;
        while now < end {
            now += POLL;
            for a in s.step(now, &up, &[]) {
                match a {
                    Action::Kill { server } => {
                        assert!(up[server], "killed {server}, which was down");
                        up[server] = false;
                    }
                    Action::Restart { server } => {
                        assert!(!up[server], "restarted {server}, which was up");
                        up[server] = true;
                    }
                    Action::Pause { .. } | Action::Resume { .. } => {}
                }
                log.push((now, a));
            }
        }
        log
    }

    #[test]
    fn the_same_seed_gives_the_same_actions() {
        let a = drive(7, config(), 40_000 * MS);
        assert_eq!(a, drive(7, config(), 40_000 * MS));
        assert!(a.len() > 20, "{a:?}");
        assert_ne!(a, drive(8, config(), 40_000 * MS));
    }

    #[test]
    fn it_never_kills_pauses_or_delays_a_repair_past_the_heal() {
        for seed in 0..50 {
            let log = drive(seed, config(), 60_000 * MS);
            for (t, a) in &log {
                if *t > config().heal_ns {
                    panic!("seed {seed}: {a:?} at {t} after the heal");
                }
                if let Action::Pause { for_ns, .. } = a {
                    assert!(t + for_ns <= config().heal_ns, "seed {seed}: pause past the heal");
                }
            }
        }
    }

    #[test]
    fn it_never_pauses_a_paused_server_and_resumes_every_pause() {
        for seed in 0..50 {
            let mut paused = [false; 3];
            for (_, a) in drive(seed, config(), 40_000 * MS) {
                match a {
                    Action::Pause { server, .. } => {
                        assert!(!paused[server], "seed {seed}: paused {server} twice");
                        paused[server] = true;
                    }
                    Action::Resume { server } => {
                        assert!(paused[server], "seed {seed}: resumed {server}, which was not paused");
                        paused[server] = false;
                    }
                    // A SIGKILL ends the pause with the process.
                    Action::Kill { server } => paused[server] = false,
                    Action::Restart { .. } => {}
                }
            }
            assert_eq!(paused, [false; 3], "seed {seed}: a pause outlived the run");
        }
    }

    #[test]
    fn a_killed_server_restarts_within_the_delay_bounds_or_at_the_heal() {
        let heal = config().heal_ns;
        for seed in 0..50 {
            let log = drive(seed, config(), 40_000 * MS);
            let mut restarts = 0;
            for (i, (t, a)) in log.iter().enumerate() {
                let Action::Kill { server } = a else { continue };
                let restart = log[i..]
                    .iter()
                    .find(|(_, b)| *b == Action::Restart { server: *server })
                    .map(|(t, _)| *t)
                    .unwrap_or_else(|| panic!("seed {seed}: {server} never restarted"));
                let delay = restart - t;
                // Polled every 50 ms: a restart comes at the first poll at or after its time.
                let earliest = (RESTART_DELAY_MS.start * MS).min(heal - t);
                assert!(delay >= earliest, "seed {seed}: restarted after {delay} ns");
                assert!(delay < RESTART_DELAY_MS.end * MS + POLL, "seed {seed}: restarted after {delay} ns");
                assert!(restart <= heal, "seed {seed}: restart after the heal");
                restarts += 1;
            }
            assert!(restarts > 5, "seed {seed}: only {restarts} kills");
        }
    }

    #[test]
    fn a_server_that_exits_on_its_own_restarts_at_once_even_after_the_heal() {
        let mut s = Schedule::new(1, ScheduleConfig { kill_every: None, pause_every: None, ..config() });
        let after_heal = config().heal_ns + 5 * POLL;
        assert_eq!(s.step(after_heal, &[true, false, true], &[1]), vec![Action::Restart { server: 1 }]);
        assert_eq!(s.step(after_heal + POLL, &[true, true, true], &[]), vec![]);
    }

    #[test]
    fn without_servers_up_nothing_is_killed_or_paused() {
        let mut s = Schedule::new(3, config());
        for k in 1..100 {
            assert_eq!(s.step(k * POLL, &[false, false, false], &[]), vec![]);
        }
    }
}
