//! Fault plans: which faults hit which nodes when, derived from the seed before the run.
//!
//! A plan is data: printable (one line per fault), serialisable (JSON) and replayable. It has
//! two phases. During **chaos** (`0..heal_at_ms`) faults come and go; at `heal_at_ms` every
//! fault is repaired at once (partitions lifted, paused nodes resumed, killed nodes
//! restarted, loss/latency back to normal, clock skew and drift removed). Safety invariants
//! are checked over the whole run; liveness only after the heal, within
//! `liveness_bound_ms`.
//!
//! Faults stay inside what a healthy system must survive: at most one service outage at a
//! time, pauses and kills are bounded in length, and the heal phase always comes.

use std::collections::BTreeMap;
use std::fmt;

use engine::env::RandExt;
use serde::{Deserialize, Serialize};

use crate::scenario::Topology;
use crate::seed_rng::SeedRng;

/// One fault action. Node names are those of the scenario's topology (`zk`, `redis`, `client-3`...),
/// or a *role* of the scenario, `@lock-holder`: a fault aimed at a role hits the node playing
/// it when the fault applies ([`ScenarioRun::role`](crate::scenario::ScenarioRun::role)), and
/// is skipped if no node plays it then. Roles are how a seed pauses *the* lock holder or kills
/// *the* object's owner — Jepsen's targeted nemeses — rather than a node chosen blind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Cut every link between the two groups, both directions.
    Partition { a: Vec<String>, b: Vec<String> },
    /// Drop traffic from `from` to `to` only (asymmetric).
    PartitionOneWay { from: Vec<String>, to: Vec<String> },
    /// Cut the one link between two nodes, both directions.
    CutLink { a: String, b: String },
    /// Crash the node (its memory and tasks are gone; services keep what they persist).
    Kill { node: String },
    /// Freeze the node: no task runs, timers wait; peers see silence.
    Pause { node: String },
    /// Lose this fraction of packets network-wide (TCP retransmits: it shows as delay).
    PacketLoss { rate: f64 },
    /// Network-wide one-way latency range.
    Latency { min_ms: u64, max_ms: u64 },
    /// Set the node's wall-clock offset from true time.
    ClockSkew { node: String, offset_ms: i64 },
    /// Jump the node's wall clock (negative = backwards).
    ClockJump { node: String, delta_ms: i64 },
    /// Make the node's monotonic clock run fast (+) or slow (-), in parts per million.
    ClockDrift { node: String, ppm: i64 },
}

/// The role a fault's node field names (`@lock-holder` -> `lock-holder`), if it names one.
pub fn role_of(node: &str) -> Option<&str> {
    node.strip_prefix('@')
}

impl Fault {
    /// This fault with every node name passed through `resolve` (roles to the nodes playing
    /// them); `None` if `resolve` has no node for one of them.
    pub fn map_nodes(&self, mut resolve: impl FnMut(&str) -> Option<String>) -> Option<Fault> {
        let mut group = |v: &[String]| v.iter().map(|n| resolve(n)).collect::<Option<Vec<String>>>();
        Some(match self {
            Fault::Partition { a, b } => Fault::Partition { a: group(a)?, b: group(b)? },
            Fault::PartitionOneWay { from, to } => {
                Fault::PartitionOneWay { from: group(from)?, to: group(to)? }
            }
            Fault::CutLink { a, b } => {
                let mut both = group(&[a.clone(), b.clone()])?.into_iter();
                Fault::CutLink { a: both.next()?, b: both.next()? }
            }
            Fault::Kill { node } => Fault::Kill { node: group(std::slice::from_ref(node))?.pop()? },
            Fault::Pause { node } => Fault::Pause { node: group(std::slice::from_ref(node))?.pop()? },
            Fault::ClockSkew { node, offset_ms } => {
                Fault::ClockSkew { node: group(std::slice::from_ref(node))?.pop()?, offset_ms: *offset_ms }
            }
            Fault::ClockJump { node, delta_ms } => {
                Fault::ClockJump { node: group(std::slice::from_ref(node))?.pop()?, delta_ms: *delta_ms }
            }
            Fault::ClockDrift { node, ppm } => {
                Fault::ClockDrift { node: group(std::slice::from_ref(node))?.pop()?, ppm: *ppm }
            }
            Fault::PacketLoss { rate } => Fault::PacketLoss { rate: *rate },
            Fault::Latency { min_ms, max_ms } => Fault::Latency { min_ms: *min_ms, max_ms: *max_ms },
        })
    }

    /// True if the fault names a role (`@lock-holder`) anywhere instead of a node.
    pub fn is_aimed(&self) -> bool {
        let mut aimed = false;
        let _ = self.map_nodes(|n| {
            aimed |= role_of(n).is_some();
            Some(n.to_string())
        });
        aimed
    }

    /// What kind of fault this is (for weights and coverage counters).
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::PartitionOneWay { .. } => FaultKind::PartitionOneWay,
            Fault::CutLink { .. } => FaultKind::CutLink,
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::PacketLoss { .. } => FaultKind::PacketLoss,
            Fault::Latency { .. } => FaultKind::Latency,
            Fault::ClockSkew { .. } => FaultKind::ClockSkew,
            Fault::ClockJump { .. } => FaultKind::ClockJump,
            Fault::ClockDrift { .. } => FaultKind::ClockDrift,
        }
    }
}

/// The kinds of [`Fault`], in the order a plan draws them from (part of what a seed means:
/// reordering them changes every seed's plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Partition,
    PartitionOneWay,
    CutLink,
    Kill,
    Pause,
    ClockSkew,
    ClockJump,
    ClockDrift,
    PacketLoss,
    Latency,
}

impl FaultKind {
    /// Every kind, in draw order.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Partition,
        FaultKind::PartitionOneWay,
        FaultKind::CutLink,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::ClockSkew,
        FaultKind::ClockJump,
        FaultKind::ClockDrift,
        FaultKind::PacketLoss,
        FaultKind::Latency,
    ];

    /// Short name for counters and the JSON of a [`FaultSpace`] ("partition", "kill", ...).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneWay => "partition_one_way",
            FaultKind::CutLink => "cut_link",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::ClockSkew => "clock_skew",
            FaultKind::ClockJump => "clock_jump",
            FaultKind::ClockDrift => "clock_drift",
            FaultKind::PacketLoss => "packet_loss",
            FaultKind::Latency => "latency",
        }
    }

    /// The coverage probe the simulator hits when a fault of this kind takes effect (the
    /// fault injector's `probe!(name = kind.probe())` sites; `const` for that).
    pub const fn probe(self) -> &'static str {
        match self {
            FaultKind::Partition => "fault: partition applied",
            FaultKind::PartitionOneWay => "fault: one-way partition applied",
            FaultKind::CutLink => "fault: link cut",
            FaultKind::Kill => "fault: node killed",
            FaultKind::Pause => "fault: node paused",
            FaultKind::ClockSkew => "fault: clock skewed",
            FaultKind::ClockJump => "fault: clock jumped",
            FaultKind::ClockDrift => "fault: clock drifting",
            FaultKind::PacketLoss => "fault: packet loss on",
            FaultKind::Latency => "fault: latency raised",
        }
    }

    /// Relative weight of the kind when a scenario does not override it.
    pub fn default_weight(self) -> u32 {
        match self {
            FaultKind::Partition | FaultKind::Pause => 2,
            _ => 1,
        }
    }

    /// Whether `space` allows this kind at all (it names nodes for it, or allows network faults).
    pub fn allowed_in(self, space: &FaultSpace) -> bool {
        match self {
            FaultKind::Partition | FaultKind::PartitionOneWay | FaultKind::CutLink => {
                space.partition.len() >= 2
            }
            FaultKind::Kill => !space.kill.is_empty(),
            FaultKind::Pause => !space.pause.is_empty(),
            FaultKind::ClockSkew | FaultKind::ClockJump | FaultKind::ClockDrift => !space.clock.is_empty(),
            FaultKind::PacketLoss | FaultKind::Latency => space.network,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { a, b } => write!(f, "partition {} | {}", a.join(","), b.join(",")),
            Fault::PartitionOneWay { from, to } => {
                write!(f, "partition one-way {} -> {}", from.join(","), to.join(","))
            }
            Fault::CutLink { a, b } => write!(f, "cut link {a} <-> {b}"),
            Fault::Kill { node } => write!(f, "kill {node}"),
            Fault::Pause { node } => write!(f, "pause {node}"),
            Fault::PacketLoss { rate } => write!(f, "packet loss {:.0}%", rate * 100.0),
            Fault::Latency { min_ms, max_ms } => write!(f, "latency {min_ms}..{max_ms} ms"),
            Fault::ClockSkew { node, offset_ms } => write!(f, "clock skew {node} {offset_ms:+} ms"),
            Fault::ClockJump { node, delta_ms } => write!(f, "clock jump {node} {delta_ms:+} ms"),
            Fault::ClockDrift { node, ppm } => write!(f, "clock drift {node} {ppm:+} ppm"),
        }
    }
}

/// A fault applied at `at_ms` and repaired after `duration_ms` (a kill is repaired by a
/// restart, a pause by a resume, a partition by reconnecting, loss/latency by the defaults).
/// Clock skew and drift last until the heal; a clock jump is instantaneous (`duration_ms` 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedFault {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub fault: Fault,
    /// For a fault aimed at a role: how long it may wait, from `at_ms`, for a node to play
    /// the role (a role played at moments, like "a server in the middle of a transaction");
    /// it applies at the first such moment, or is skipped when the wait runs out. 0: it
    /// applies at `at_ms` or is skipped ([`FaultSpaceBuilder::wait_for_role`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl TimedFault {
    /// `fault` at `at_ms` for `duration_ms`, applied then or skipped (no wait for a role).
    pub fn new(at_ms: u64, duration_ms: u64, fault: Fault) -> TimedFault {
        TimedFault { at_ms, duration_ms, fault, wait_ms: 0 }
    }
}

/// The whole plan of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    pub seed: u64,
    /// End of the chaos phase: every fault is repaired here.
    pub heal_at_ms: u64,
    /// The run ends here (heal phase = `heal_at_ms..end_ms`).
    pub end_ms: u64,
    /// Liveness must be observed within this long after the heal.
    pub liveness_bound_ms: u64,
    /// Sorted by `at_ms`.
    pub faults: Vec<TimedFault>,
    /// The part of the scenario's fault space this seed drew from (swarm testing); `None`
    /// for a plan written by hand or before swarms existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<Swarm>,
}

/// How one seed leans within its [`FaultSpace`]: swarm testing (Groce et al., "Swarm Testing",
/// ISSTA 2012), in the form that measured best here. Each seed picks a random non-empty
/// subset of the kinds the space allows and draws those [`SWARM_EMPHASIS`] times as often as
/// the others, and draws its fault count from the full range or its upper half; every kind
/// stays possible and every fault keeps the space's full length range. (Turning the other
/// kinds *off*, as the paper does, or shortening faults, lowered the catch rate of every
/// planted bug that needs a long pause at the right moment: docs/simulator.md.) One seed in
/// [`FULL_SPACE_ONE_IN`] uses the space unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Swarm {
    /// Kinds this seed emphasises, in draw order (a non-empty subset of those allowed; all of
    /// them for a seed that uses the space unchanged).
    pub kinds: Vec<FaultKind>,
    /// Fewest and most faults of this seed (within the space's `faults_min..=faults_max`).
    pub faults_min: u32,
    pub faults_max: u32,
    /// Longest pause, kill or partition of this seed (the space's `fault_ms_max`).
    pub fault_ms_max: u64,
}

/// One seed in this many draws the whole space (every allowed kind, full intensity) rather
/// than a swarm subset, so the "everything on" mix keeps its share of seeds.
pub const FULL_SPACE_ONE_IN: u64 = 8;

/// How many times as often a seed draws the kinds its swarm emphasises.
pub const SWARM_EMPHASIS: u32 = 4;

impl Swarm {
    /// The swarm of `seed` within `space`: its own random stream (`fork("swarm")`), so the
    /// faults drawn afterwards depend only on the swarm and the seed.
    pub fn draw(seed: u64, space: &FaultSpace) -> Swarm {
        let rng = SeedRng::new(seed).fork("swarm");
        let allowed: Vec<FaultKind> = FaultKind::ALL.into_iter().filter(|k| k.allowed_in(space)).collect();
        let full = Swarm {
            kinds: allowed.clone(),
            faults_min: space.faults_min,
            faults_max: space.faults_max,
            fault_ms_max: space.fault_ms_max,
        };
        if allowed.len() <= 1 || rng.gen_range(0..FULL_SPACE_ONE_IN) == 0 {
            return full;
        }
        let mut kinds: Vec<FaultKind> = allowed.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
        if kinds.is_empty() {
            kinds.push(*rng.choose(&allowed).expect("allowed is not empty"));
        }
        // Intensity: the full range, or its upper half.
        let (lo, hi) = (space.faults_min, space.faults_max);
        let mid = lo + (hi - lo) / 2;
        let (faults_min, faults_max) = if rng.gen_bool(0.5) { (lo, hi) } else { (mid, hi) };
        Swarm { kinds, faults_min, faults_max, fault_ms_max: space.fault_ms_max }
    }
}

impl fmt::Display for Swarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        write!(
            f,
            "swarm: emphasis {}; {}..={} faults, each up to {} ms",
            kinds.join(","),
            self.faults_min,
            self.faults_max,
            self.fault_ms_max
        )
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fault plan (seed {}): chaos 0..{} ms, heal at {} ms, end {} ms, liveness bound {} ms",
            self.seed, self.heal_at_ms, self.heal_at_ms, self.end_ms, self.liveness_bound_ms
        )?;
        if let Some(swarm) = &self.swarm {
            writeln!(f, "  {swarm}")?;
        }
        for t in &self.faults {
            let wait = if t.wait_ms > 0 {
                format!(" (waits up to {} ms for its role)", t.wait_ms)
            } else {
                String::new()
            };
            if t.duration_ms > 0 {
                writeln!(f, "  {:>6} ms  +{:>5} ms  {}{wait}", t.at_ms, t.duration_ms, t.fault)?;
            } else {
                writeln!(f, "  {:>6} ms            {}{wait}", t.at_ms, t.fault)?;
            }
        }
        write!(f, "  {:>6} ms            heal all", self.heal_at_ms)
    }
}

/// What faults a scenario allows, and how hard to hit. Scenarios build it with
/// [`FaultSpace::builder`] over their topology's node groups ([`Nodes`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpace {
    /// Nodes that may be killed (and restarted).
    pub kill: Vec<String>,
    /// Nodes that may be paused.
    pub pause: Vec<String>,
    /// Nodes that may be partitioned from others.
    pub partition: Vec<String>,
    /// Nodes whose clocks may be skewed, jumped and drifted.
    pub clock: Vec<String>,
    /// Network-wide packet loss and latency changes allowed.
    pub network: bool,
    /// Length of the chaos phase.
    pub chaos_ms: u64,
    /// Length of the heal phase.
    pub heal_ms: u64,
    pub liveness_bound_ms: u64,
    /// Number of faults in the chaos phase is drawn from this range.
    pub faults_min: u32,
    pub faults_max: u32,
    /// Longest fault (pause, kill, partition) in ms.
    pub fault_ms_max: u64,
    /// Largest clock skew or jump, in ms.
    pub clock_ms_max: i64,
    /// Largest monotonic drift, in ppm.
    pub drift_ppm_max: i64,
    /// Relative weights of fault kinds overriding [`FaultKind::default_weight`], to aim a
    /// scenario's chaos at the faults its invariants are about.
    #[serde(default)]
    pub weights: BTreeMap<FaultKind, u32>,
    /// Roles a fault of a kind may be aimed at instead of a node (`@role` in the plan; see
    /// [`Fault`]): one such fault in [`ROLE_AIM_ONE_IN`] is. Node faults (kill, pause, clock)
    /// and partitions ([`FaultSpaceBuilder::aim`]); the role's nodes must be among those the
    /// kind may hit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<FaultKind, Vec<String>>,
    /// How long an aimed fault of a kind lasts, `(min_ms, max_ms)`, where the scenario names a
    /// window ([`FaultSpaceBuilder::aim_lasting`]); other faults last up to
    /// [`FaultSpace::fault_ms_max`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aimed_ms: BTreeMap<FaultKind, (u64, u64)>,
    /// How long an aimed fault of a kind may wait for a node to play its role
    /// ([`FaultSpaceBuilder::wait_for_role`], [`TimedFault::wait_ms`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aimed_wait_ms: BTreeMap<FaultKind, u64>,
}

/// The coverage probe a fault aimed at a role hits when a node plays it.
pub const PROBE_AIMED: &str = "fault: aimed at a role's node";

/// The coverage probe a fault waiting for its role hits when it applies at the role's moment,
/// after waiting ([`TimedFault::wait_ms`]).
pub const PROBE_WAITED: &str = "fault: applied at its role's moment after a wait";

/// One node fault in this many is aimed at one of the scenario's roles for its kind (when it
/// has any) rather than at a node drawn blind.
pub const ROLE_AIM_ONE_IN: u64 = 2;

/// Longest wait of an aimed fault for its role's moment ([`FaultSpaceBuilder::wait_for_role`]).
pub const ROLE_WAIT_MAX_MS: u64 = 5_000;

impl FaultSpace {
    /// No faults at all (for baselines and smoke tests).
    pub fn none(chaos_ms: u64, heal_ms: u64) -> Self {
        FaultSpace {
            kill: vec![],
            pause: vec![],
            partition: vec![],
            clock: vec![],
            network: false,
            chaos_ms,
            heal_ms,
            liveness_bound_ms: heal_ms,
            faults_min: 0,
            faults_max: 0,
            fault_ms_max: 0,
            clock_ms_max: 0,
            drift_ppm_max: 0,
            weights: BTreeMap::new(),
            roles: BTreeMap::new(),
            aimed_ms: BTreeMap::new(),
            aimed_wait_ms: BTreeMap::new(),
        }
    }

    /// The role targets a plan over this space may name (`@lock-holder`, ...), for
    /// [`FaultPlan::validate`] beside the topology's node names.
    pub fn role_targets(&self) -> Vec<String> {
        let mut v: Vec<String> = self.roles.values().flatten().map(|r| format!("@{r}")).collect();
        v.sort();
        v.dedup();
        v
    }

    /// A space over `topology`'s nodes with a chaos phase of `chaos_ms` and a heal phase of
    /// `heal_ms`, and no faults until the builder's methods allow some.
    pub fn builder(topology: &Topology, chaos_ms: u64, heal_ms: u64) -> FaultSpaceBuilder<'_> {
        FaultSpaceBuilder { topology, space: FaultSpace::none(chaos_ms, heal_ms) }
    }

    /// Weight of a fault kind: the override if any, else its default.
    pub fn weight(&self, kind: FaultKind) -> u32 {
        self.weights.get(&kind).copied().unwrap_or_else(|| kind.default_weight())
    }
}

impl FaultPlan {
    /// Draws a plan from `seed` within `space`: first the seed's [`Swarm`] (which kinds, how
    /// many faults, how long), then the faults within it. Pure: the same seed and space give
    /// the same plan.
    pub fn generate(seed: u64, space: &FaultSpace) -> FaultPlan {
        let swarm = Swarm::draw(seed, space);
        let mut plan = FaultPlan::generate_within(seed, space, &swarm);
        plan.swarm = Some(swarm);
        plan
    }

    /// Draws the faults of `seed` from `space` as `swarm` leans.
    fn generate_within(seed: u64, space: &FaultSpace, swarm: &Swarm) -> FaultPlan {
        let rng = SeedRng::new(seed).fork("fault-plan");
        // Aimed faults' windows draw from a stream of their own, so a window changes no other
        // draw of the plan.
        let window_rng = SeedRng::new(seed).fork("aimed-window");
        let all = FaultKind::ALL.into_iter().filter(|k| k.allowed_in(space)).count();
        let mut kinds: Vec<FaultKind> = Vec::new();
        for kind in FaultKind::ALL.into_iter().filter(|k| k.allowed_in(space)) {
            let leaning = swarm.kinds.len() < all && swarm.kinds.contains(&kind);
            let weight = space.weight(kind) * if leaning { SWARM_EMPHASIS } else { 1 };
            for _ in 0..weight {
                kinds.push(kind);
            }
        }
        let mut faults = Vec::new();
        if !kinds.is_empty() && swarm.faults_max > 0 {
            let n = rng.gen_range(u64::from(swarm.faults_min)..u64::from(swarm.faults_max) + 1);
            for _ in 0..n {
                let kind = *rng.choose(&kinds).expect("non-empty");
                let at_ms = rng.gen_range(0..space.chaos_ms.max(1));
                let max_len = swarm.fault_ms_max.max(200);
                // Every fault ends by the heal.
                let room_ms = space.chaos_ms - at_ms.min(space.chaos_ms);
                let duration_ms = rng.gen_range(200..max_len + 1).min(room_ms);
                let pick = |v: &Vec<String>| rng.choose(v).expect("non-empty").clone();
                // A node fault's target: a role's, or a node drawn blind. Scenarios without
                // roles draw nothing extra, so their plans are what they were before roles.
                let role = |kind: FaultKind| match space.roles.get(&kind) {
                    Some(roles) if !roles.is_empty() && rng.gen_range(0..ROLE_AIM_ONE_IN) == 0 => {
                        Some(format!("@{}", rng.choose(roles).expect("non-empty")))
                    }
                    _ => None,
                };
                let aim = |kind: FaultKind, v: &Vec<String>| role(kind).unwrap_or_else(|| pick(v));
                // A partition aimed at a role: the role's node on one side, every other
                // partitionable node on the other (the injector drops the role's node there).
                let aimed = |kind: FaultKind| role(kind).map(|r| (vec![r], space.partition.clone()));
                let fault = match kind {
                    FaultKind::Partition => {
                        let (a, b) = aimed(kind).unwrap_or_else(|| split_groups(&rng, &space.partition));
                        Fault::Partition { a, b }
                    }
                    FaultKind::PartitionOneWay => {
                        let (from, to) = aimed(kind).unwrap_or_else(|| split_groups(&rng, &space.partition));
                        Fault::PartitionOneWay { from, to }
                    }
                    FaultKind::CutLink => {
                        let (a, b) = two_distinct(&rng, &space.partition);
                        Fault::CutLink { a, b }
                    }
                    FaultKind::Kill => Fault::Kill { node: aim(kind, &space.kill) },
                    FaultKind::Pause => Fault::Pause { node: aim(kind, &space.pause) },
                    FaultKind::ClockSkew => Fault::ClockSkew {
                        node: aim(kind, &space.clock),
                        offset_ms: signed(&rng, space.clock_ms_max),
                    },
                    FaultKind::ClockJump => Fault::ClockJump {
                        node: aim(kind, &space.clock),
                        delta_ms: signed(&rng, space.clock_ms_max),
                    },
                    FaultKind::ClockDrift => Fault::ClockDrift {
                        node: aim(kind, &space.clock),
                        ppm: signed(&rng, space.drift_ppm_max),
                    },
                    FaultKind::PacketLoss => Fault::PacketLoss { rate: rng.gen_range(1..31) as f64 / 100.0 },
                    FaultKind::Latency => {
                        let min_ms = rng.gen_range(1..50);
                        Fault::Latency { min_ms, max_ms: min_ms + rng.gen_range(1..200) }
                    }
                };
                let duration_ms = match fault {
                    Fault::ClockJump { .. } => 0,
                    Fault::ClockSkew { .. } | Fault::ClockDrift { .. } => space.chaos_ms - at_ms,
                    _ => match space.aimed_ms.get(&kind) {
                        Some(&(min_ms, max_ms)) if fault.is_aimed() => {
                            window_rng.gen_range(min_ms..max_ms + 1).min(room_ms)
                        }
                        _ => duration_ms,
                    },
                };
                let wait_ms = match space.aimed_wait_ms.get(&kind) {
                    Some(&w) if fault.is_aimed() => w,
                    _ => 0,
                };
                faults.push(TimedFault { at_ms, duration_ms, fault, wait_ms });
            }
        }
        faults.sort_by_key(|t| t.at_ms);
        FaultPlan {
            seed,
            heal_at_ms: space.chaos_ms,
            end_ms: space.chaos_ms + space.heal_ms,
            liveness_bound_ms: space.liveness_bound_ms,
            faults,
            swarm: None,
        }
    }

    /// Checks a plan read from a file: known node names (and `@role` targets, when `nodes`
    /// lists them: [`FaultSpace::role_targets`]), faults inside the chaos phase, sane rates. A
    /// clear message for the first problem found.
    pub fn validate(&self, nodes: &[String]) -> Result<(), String> {
        if self.heal_at_ms > self.end_ms {
            return Err(format!("heal_at_ms {} is after end_ms {}", self.heal_at_ms, self.end_ms));
        }
        let check = |n: &String| {
            if nodes.contains(n) {
                Ok(())
            } else {
                Err(format!("unknown node {n:?} (nodes: {})", nodes.join(", ")))
            }
        };
        for (i, t) in self.faults.iter().enumerate() {
            if t.at_ms + t.duration_ms > self.heal_at_ms {
                return Err(format!("fault {i} ({}) runs past the heal at {} ms", t.fault, self.heal_at_ms));
            }
            if t.wait_ms > 0 && !t.fault.is_aimed() {
                return Err(format!("fault {i} ({}) waits for a role but is aimed at none", t.fault));
            }
            if t.wait_ms > ROLE_WAIT_MAX_MS {
                return Err(format!("fault {i}: wait_ms {} is over {ROLE_WAIT_MAX_MS}", t.wait_ms));
            }
            match &t.fault {
                Fault::Partition { a, b } | Fault::PartitionOneWay { from: a, to: b } => {
                    if a.is_empty() || b.is_empty() {
                        return Err(format!("fault {i}: a partition needs two non-empty groups"));
                    }
                    a.iter().chain(b).try_for_each(check)?;
                }
                Fault::CutLink { a, b } => {
                    check(a)?;
                    check(b)?;
                }
                Fault::Kill { node }
                | Fault::Pause { node }
                | Fault::ClockSkew { node, .. }
                | Fault::ClockJump { node, .. }
                | Fault::ClockDrift { node, .. } => check(node)?,
                Fault::PacketLoss { rate } => {
                    if !(0.0..1.0).contains(rate) {
                        return Err(format!("fault {i}: packet loss rate {rate} not in [0, 1)"));
                    }
                }
                Fault::Latency { min_ms, max_ms } => {
                    if min_ms >= max_ms {
                        return Err(format!("fault {i}: latency range {min_ms}..{max_ms} is empty"));
                    }
                }
            }
        }
        if self.faults.windows(2).any(|w| w[0].at_ms > w[1].at_ms) {
            return Err("faults must be sorted by at_ms".into());
        }
        Ok(())
    }

    /// Number of faults of each kind (for coverage counters).
    pub fn kinds(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut m = std::collections::BTreeMap::new();
        for t in &self.faults {
            *m.entry(t.fault.kind().name()).or_insert(0) += 1;
        }
        m
    }
}

/// A value in ±1..=`max` (at least ±1), either sign equally likely.
pub fn signed(rng: &SeedRng, max: i64) -> i64 {
    let max = max.max(1) as u64;
    let v = rng.gen_range(1..max + 1) as i64;
    if rng.gen_bool(0.5) {
        v
    } else {
        -v
    }
}

fn two_distinct(rng: &SeedRng, nodes: &[String]) -> (String, String) {
    let i = rng.gen_range(0..nodes.len() as u64) as usize;
    let mut j = rng.gen_range(0..nodes.len() as u64 - 1) as usize;
    if j >= i {
        j += 1;
    }
    (nodes[i].clone(), nodes[j].clone())
}

/// Splits `nodes` into two non-empty groups: usually one node against the rest.
fn split_groups(rng: &SeedRng, nodes: &[String]) -> (Vec<String>, Vec<String>) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    if rng.gen_bool(0.6) {
        let i = rng.gen_range(0..nodes.len() as u64) as usize;
        for (k, n) in nodes.iter().enumerate() {
            if k == i {
                a.push(n.clone())
            } else {
                b.push(n.clone())
            }
        }
    } else {
        for n in nodes {
            if rng.gen_bool(0.5) {
                a.push(n.clone())
            } else {
                b.push(n.clone())
            }
        }
        if a.is_empty() {
            a.push(b.remove(0));
        }
        if b.is_empty() {
            b.push(a.remove(0));
        }
    }
    (a, b)
}

#[path = "faults_builder.rs"]
mod builder;
pub use builder::FaultSpaceBuilder;

#[cfg(test)]
#[path = "faults_tests.rs"]
mod tests;
