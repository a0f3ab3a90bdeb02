//! Faults of a live run's services (`--service-fault-every`, needs `--net`): a ZooKeeper
//! member (the leader, a follower, or a quorum's worth), Redis or the MariaDB server
//! (`--mariadb`) killed, paused or cut off on its own host. I/O-free: the runner polls [`ServiceSchedule::step`] with the time and
//! whether the previous service fault is over, and carries the fault out (`backing.rs`):
//! which member leads is known only then, from the members' own answers.
//!
//! Inputs of [`ServiceSchedule::step`]: `now` (ns since the start of the run) and `idle` (no
//! service fault active or waiting for its target). Lengths and the follower picked come from
//! a generator forked from the run's seed.
//!
//! Rules:
//! - one service fault at a time: a slot (every `every` of the chaos phase) that comes while
//!   one lasts is skipped, so "the leader was killed, then isolated" happens in that order
//!   and a quorum is lost only by a fault that means to;
//! - the kinds come in turn, in the order given (`--service-faults zk-leader-kill,
//!   zk-leader-isolate` alternates the two), so every kind named is applied in a long
//!   enough run; with `rotate` (the default kinds, all a run's services allow) the first kind
//!   is drawn from the seed, so runs of a sweep with a few slots each cover every kind between
//!   them;
//! - a fault lasts [`FAULT_MIN_MS`] to `max` and ends at the heal at the latest.
//!
//! # Fault model
//! - **kill**: SIGKILL, then relaunched on its data directory at the fault's end (ZooKeeper's
//!   transaction log is written without fsync here, as the tests' ZooKeeper is: a killed
//!   member's process dies but the machine does not, so what it wrote is in the page cache);
//!   Redis is killed only if its topology keeps an fsync-always append-only file (without one
//!   a restart loses every key, which the `Kv` port does not promise to survive); MariaDB
//!   flushes its redo log at every commit, so a kill loses no committed transaction and the
//!   restart runs crash recovery;
//! - **pause**: SIGSTOP, SIGCONT at the end: connections stay open and nothing is answered;
//! - **isolate**: nftables rules in the service's namespace drop everything but loopback, both
//!   ways: the member is cut from the other members, the servers and the runner;
//! - **quorum loss**: the leader and one follower of a 3-member ensemble are killed (the last
//!   member cannot serve alone), then both relaunched.
//!
//! # Not modelled
//! Disk faults (a torn or lost transaction log), a member's clock, and the loss of the whole
//! machine (every process of a run shares this kernel's page cache).

use std::time::Duration;

use engine::env::RandExt;
use scenarios::seed_rng::SeedRng;

use super::netfaults::Rules;
use super::schedule::nanos;

/// The shortest service fault (ms).
pub const FAULT_MIN_MS: u64 = 1_000;

/// Which service a fault is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The ZooKeeper member that leads (or the only one).
    ZkLeader,
    /// A ZooKeeper member that follows.
    ZkFollower,
    /// The leader and a follower: a 3-member ensemble without a quorum.
    ZkQuorum,
    Redis,
    /// The MariaDB server of `--mariadb`.
    Sql,
}

/// What is done to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Kill,
    Pause,
    Isolate,
}

/// A kind of service fault, as named on the command line (`--service-faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceFaultKind {
    pub target: Target,
    pub action: Action,
}

impl ServiceFaultKind {
    pub const ALL: [ServiceFaultKind; 13] = [
        Self::new(Target::ZkLeader, Action::Kill),
        Self::new(Target::ZkLeader, Action::Pause),
        Self::new(Target::ZkLeader, Action::Isolate),
        Self::new(Target::ZkFollower, Action::Kill),
        Self::new(Target::ZkFollower, Action::Pause),
        Self::new(Target::ZkFollower, Action::Isolate),
        Self::new(Target::ZkQuorum, Action::Kill),
        Self::new(Target::Redis, Action::Kill),
        Self::new(Target::Redis, Action::Pause),
        Self::new(Target::Redis, Action::Isolate),
        Self::new(Target::Sql, Action::Kill),
        Self::new(Target::Sql, Action::Pause),
        Self::new(Target::Sql, Action::Isolate),
    ];

    pub const fn new(target: Target, action: Action) -> Self {
        ServiceFaultKind { target, action }
    }

    /// Its name on the command line and in counters.
    pub fn name(self) -> &'static str {
        match (self.target, self.action) {
            (Target::ZkLeader, Action::Kill) => "zk-leader-kill",
            (Target::ZkLeader, Action::Pause) => "zk-leader-pause",
            (Target::ZkLeader, Action::Isolate) => "zk-leader-isolate",
            (Target::ZkFollower, Action::Kill) => "zk-follower-kill",
            (Target::ZkFollower, Action::Pause) => "zk-follower-pause",
            (Target::ZkFollower, Action::Isolate) => "zk-follower-isolate",
            (Target::ZkQuorum, Action::Kill) => "zk-quorum-loss",
            (Target::ZkQuorum, _) => "zk-quorum-other",
            (Target::Redis, Action::Kill) => "redis-kill",
            (Target::Redis, Action::Pause) => "redis-pause",
            (Target::Redis, Action::Isolate) => "redis-isolate",
            (Target::Sql, Action::Kill) => "sql-kill",
            (Target::Sql, Action::Pause) => "sql-pause",
            (Target::Sql, Action::Isolate) => "sql-isolate",
        }
    }

    /// The kind named `s`, or a message listing the names.
    pub fn parse(s: &str) -> Result<ServiceFaultKind, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("unknown service fault {s:?} (known: {})", names.join(", "))
        })
    }

    /// Whether it aims at ZooKeeper.
    pub fn is_zk(self) -> bool {
        matches!(self.target, Target::ZkLeader | Target::ZkFollower | Target::ZkQuorum)
    }

    /// Whether it needs more than one ZooKeeper member (a follower to aim at).
    pub fn needs_ensemble(self) -> bool {
        matches!(self.target, Target::ZkFollower | Target::ZkQuorum)
    }
}

/// The rules that cut a service's host from everything but itself (loopback), both ways.
pub fn isolation_rules() -> Rules {
    Rules { input: vec!["iifname != \"lo\" drop".into()], output: vec!["oifname != \"lo\" drop".into()] }
}

/// What the schedule may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceScheduleConfig {
    pub every: Duration,
    /// Longest fault (at least [`FAULT_MIN_MS`]).
    pub max: Duration,
    /// The kinds, taken in turn (non-empty).
    pub kinds: Vec<ServiceFaultKind>,
    /// Start the turn at a kind drawn from the seed instead of the first.
    pub rotate: bool,
    /// No fault at or after this time (ns); every fault has ended by then.
    pub heal_ns: u64,
}

/// A service fault to carry out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceFaultPlan {
    pub kind: ServiceFaultKind,
    /// How long it lasts once applied (the runner ends it at the heal at the latest).
    pub for_ns: u64,
    /// Which follower, among those answering when it is applied (`pick % followers`).
    pub pick: u64,
}

/// The service-fault plan of one run, drawn as it goes (see the module documentation).
#[derive(Debug)]
pub struct ServiceSchedule {
    config: ServiceScheduleConfig,
    rng: SeedRng,
    next_ns: u64,
    turn: usize,
}

impl ServiceSchedule {
    pub fn new(seed: u64, config: ServiceScheduleConfig) -> Self {
        assert!(!config.kinds.is_empty(), "a service-fault schedule needs at least one kind");
        let next_ns = nanos(config.every);
        let rng = SeedRng::new(seed).fork("live-services");
        let turn = if config.rotate { rng.gen_range(0..config.kinds.len() as u64) as usize } else { 0 };
        ServiceSchedule { config, rng, next_ns, turn }
    }

    /// The fault to start at `now`, if a slot has come and the last fault is over (`idle`).
    pub fn step(&mut self, now: u64, idle: bool) -> Option<ServiceFaultPlan> {
        if self.next_ns > now || now >= self.config.heal_ns {
            return None;
        }
        while self.next_ns <= now {
            self.next_ns += nanos(self.config.every).max(1);
        }
        if !idle {
            return None;
        }
        let kind = self.config.kinds[self.turn % self.config.kinds.len()];
        self.turn += 1;
        let max_ms = u64::try_from(self.config.max.as_millis()).unwrap_or(u64::MAX).max(FAULT_MIN_MS);
        let len_ns = self.rng.gen_range(FAULT_MIN_MS..max_ms + 1) * 1_000_000;
        let pick = self.rng.gen_range(0..u64::MAX);
        Some(ServiceFaultPlan { kind, for_ns: len_ns.min(self.config.heal_ns - now), pick })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kinds: &[ServiceFaultKind]) -> ServiceScheduleConfig {
        ServiceScheduleConfig {
            every: Duration::from_secs(5),
            max: Duration::from_secs(4),
            kinds: kinds.to_vec(),
            rotate: false,
            heal_ns: 30_000_000_000,
        }
    }

    fn kind(name: &str) -> ServiceFaultKind {
        ServiceFaultKind::parse(name).unwrap()
    }

    #[test]
    fn kinds_come_in_turn_in_the_order_given_one_per_slot_and_none_at_the_heal() {
        let mut s = ServiceSchedule::new(1, config(&[kind("zk-leader-kill"), kind("zk-leader-isolate")]));
        let mut got = Vec::new();
        for t in (0..=40_000u64).step_by(50) {
            if let Some(p) = s.step(t * 1_000_000, true) {
                got.push((t, p.kind.name()));
                assert!(p.for_ns >= FAULT_MIN_MS * 1_000_000 || t * 1_000_000 + p.for_ns == 30_000_000_000);
                assert!(t * 1_000_000 + p.for_ns <= 30_000_000_000, "ends by the heal");
            }
        }
        assert_eq!(
            got,
            vec![
                (5_000, "zk-leader-kill"),
                (10_000, "zk-leader-isolate"),
                (15_000, "zk-leader-kill"),
                (20_000, "zk-leader-isolate"),
                (25_000, "zk-leader-kill"),
            ]
        );
    }

    #[test]
    fn rotating_runs_start_at_a_kind_drawn_from_the_seed_and_then_keep_the_order() {
        let first = |seed| {
            let c = ServiceScheduleConfig { rotate: true, ..config(&ServiceFaultKind::ALL) };
            let mut s = ServiceSchedule::new(seed, c);
            let k: Vec<ServiceFaultKind> = (0..=30_000u64)
                .step_by(100)
                .filter_map(|t| s.step(t * 1_000_000, true))
                .map(|p| p.kind)
                .collect();
            let at = ServiceFaultKind::ALL.iter().position(|x| *x == k[0]).expect("a known kind");
            for (i, kind) in k.iter().enumerate() {
                assert_eq!(*kind, ServiceFaultKind::ALL[(at + i) % ServiceFaultKind::ALL.len()]);
            }
            at
        };
        let starts: std::collections::BTreeSet<usize> = (0..40).map(first).collect();
        assert!(starts.len() >= 8, "40 seeds start at {starts:?}");
        assert_eq!(first(7), first(7));
    }

    #[test]
    fn a_slot_that_comes_while_a_fault_lasts_is_skipped_not_queued() {
        let mut s = ServiceSchedule::new(2, config(&[kind("redis-pause")]));
        assert!(s.step(5_000_000_000, false).is_none(), "busy at the slot");
        assert!(s.step(6_000_000_000, true).is_none(), "the slot is gone");
        assert!(s.step(10_000_000_000, true).is_some());
    }

    #[test]
    fn the_same_seed_gives_the_same_lengths_and_picks() {
        let plan = |seed| {
            let mut s = ServiceSchedule::new(seed, config(&ServiceFaultKind::ALL));
            (0..=30_000u64).step_by(100).filter_map(|t| s.step(t * 1_000_000, true)).collect::<Vec<_>>()
        };
        assert_eq!(plan(4), plan(4));
        assert_ne!(plan(4), plan(5));
    }

    #[test]
    fn names_parse_and_follower_and_quorum_faults_need_an_ensemble() {
        for k in ServiceFaultKind::ALL {
            assert_eq!(ServiceFaultKind::parse(k.name()), Ok(k));
        }
        assert!(kind("zk-follower-pause").needs_ensemble() && kind("zk-quorum-loss").needs_ensemble());
        assert!(!kind("zk-leader-kill").needs_ensemble() && !kind("redis-kill").is_zk());
        assert!(!kind("sql-isolate").is_zk() && !kind("sql-kill").needs_ensemble());
        let e = ServiceFaultKind::parse("zk-kill").unwrap_err();
        assert!(e.contains("zk-leader-kill") && e.contains("sql-isolate"), "{e}");
    }

    #[test]
    fn isolation_keeps_only_loopback() {
        let r = isolation_rules();
        assert_eq!(r.input, vec!["iifname != \"lo\" drop"]);
        assert_eq!(r.output, vec!["oifname != \"lo\" drop"]);
    }
}
