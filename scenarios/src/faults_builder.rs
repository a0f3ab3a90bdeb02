//! [`FaultSpaceBuilder`]: how scenarios declare their [`FaultSpace`] over their topology's
//! node groups (which kinds, how hard, aimed at which roles, with which windows and waits).

use super::{FaultKind, FaultSpace, ROLE_WAIT_MAX_MS};
use crate::scenario::{Nodes, Topology};

/// Builds a [`FaultSpace`] from node groups of a topology. Node lists keep the order of the
/// groups as given (and each group's order in the topology): plans draw nodes by position,
/// so the order is part of what a seed means.
#[derive(Debug, Clone)]
pub struct FaultSpaceBuilder<'a> {
    pub(super) topology: &'a Topology,
    pub(super) space: FaultSpace,
}

impl FaultSpaceBuilder<'_> {
    fn resolve(&self, groups: &[Nodes]) -> Vec<String> {
        groups.iter().flat_map(|g| self.topology.nodes(*g)).collect()
    }

    /// Nodes of `groups` may be killed (and restarted).
    pub fn kill(mut self, groups: &[Nodes]) -> Self {
        self.space.kill = self.resolve(groups);
        self
    }

    /// Nodes of `groups` may be paused.
    pub fn pause(mut self, groups: &[Nodes]) -> Self {
        self.space.pause = self.resolve(groups);
        self
    }

    /// Nodes of `groups` may be partitioned from each other (needs at least two nodes).
    pub fn partition(mut self, groups: &[Nodes]) -> Self {
        self.space.partition = self.resolve(groups);
        self
    }

    /// Clocks of `groups` may be skewed or jumped by up to `max_ms` and drift by up to
    /// `drift_ppm_max`.
    pub fn clock(mut self, groups: &[Nodes], max_ms: i64, drift_ppm_max: i64) -> Self {
        self.space.clock = self.resolve(groups);
        self.space.clock_ms_max = max_ms;
        self.space.drift_ppm_max = drift_ppm_max;
        self
    }

    /// Network-wide packet loss and latency changes are allowed.
    pub fn network(mut self) -> Self {
        self.space.network = true;
        self
    }

    /// Liveness must show within this long after the heal (default: the heal phase).
    pub fn liveness_bound_ms(mut self, ms: u64) -> Self {
        self.space.liveness_bound_ms = ms;
        self
    }

    /// `min..=max` faults in the chaos phase, each (pause, kill, partition) up to `longest_ms`.
    pub fn faults(mut self, min: u32, max: u32, longest_ms: u64) -> Self {
        self.space.faults_min = min;
        self.space.faults_max = max;
        self.space.fault_ms_max = longest_ms;
        self
    }

    /// Draw `kind` with relative weight `weight` instead of its default.
    pub fn weight(mut self, kind: FaultKind, weight: u32) -> Self {
        self.space.weights.insert(kind, weight);
        self
    }

    /// Aim one [`ROLE_AIM_ONE_IN`] of the faults of `kind` at one of `roles` instead of a node
    /// drawn blind: a node fault (kill, pause, clock) hits the role's node; a partition
    /// isolates it from every other partitionable node (Jepsen's "isolate the primary"), a
    /// one-way partition silences it towards them.
    pub fn aim(mut self, kind: FaultKind, roles: &[&str]) -> Self {
        assert!(
            !matches!(kind, FaultKind::CutLink | FaultKind::PacketLoss | FaultKind::Latency),
            "only node faults and partitions can be aimed at a role"
        );
        self.space.roles.insert(kind, roles.iter().map(|r| r.to_string()).collect());
        self
    }

    /// [`aim`](Self::aim), with the aimed faults lasting `min_ms..=max_ms` (drawn uniformly)
    /// rather than up to the space's longest: Jepsen's "pause the primary past the timeout
    /// that reassigns its work, short of the one that fences it". Blind faults of the kind
    /// keep the space's lengths.
    pub fn aim_lasting(self, kind: FaultKind, roles: &[&str], min_ms: u64, max_ms: u64) -> Self {
        assert!(
            0 < min_ms && min_ms <= max_ms && max_ms <= self.space.fault_ms_max,
            "an aimed fault's window lies within the space's fault lengths"
        );
        let mut b = self.aim(kind, roles);
        b.space.aimed_ms.insert(kind, (min_ms, max_ms));
        b
    }

    /// Faults of `kind` aimed at a role no node plays at their instant wait up to `wait_ms`
    /// for one, and apply at that moment (a role played at moments: "the server in the middle
    /// of a transaction"). The waits draw nothing: plans keep their instants and faults.
    pub fn wait_for_role(mut self, kind: FaultKind, wait_ms: u64) -> Self {
        assert!(self.space.roles.contains_key(&kind), "only a kind aimed at roles waits for one");
        assert!(0 < wait_ms && wait_ms <= ROLE_WAIT_MAX_MS, "a role wait is 1..={ROLE_WAIT_MAX_MS} ms");
        self.space.aimed_wait_ms.insert(kind, wait_ms);
        self
    }

    pub fn build(self) -> FaultSpace {
        self.space
    }
}
