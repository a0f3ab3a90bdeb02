//! Workload limits: how much of a scenario's workload a run does, for `shrink` and for
//! replaying a shrunk case.
//!
//! A [`Workload`] says how many client nodes run, how many operations each workload node
//! may issue, and how long the chaos phase and the whole run last. The default (every field
//! `None`) is the scenario as written: the runner then changes nothing, draws no extra
//! randomness and logs nothing extra, so a seed's trace hash stays what it was.
//!
//! Operations are counted by an [`OpBudget`] each workload node gets (in [`ClientCtx`] and
//! [`ServerCtx`], one budget per node, shared by its incarnations: a restarted client goes
//! on with what its predecessor left). Every scenario's workload loop calls
//! [`OpBudget::take`] where it issues its next operation (a request, a call, a flow of
//! requests: the scenario's own unit, named in its loop) and stops issuing once it returns
//! `false`. Liveness probes a scenario makes after the heal to judge progress are not
//! workload and take nothing.
//!
//! [`ClientCtx`]: crate::ClientCtx
//! [`ServerCtx`]: crate::ServerCtx

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::faults::{Fault, FaultPlan, TimedFault};
use crate::scenario::Topology;

/// Limits on a run's workload; `None` leaves the scenario's own value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Client nodes `client-0..client-{n-1}` (at most the topology's own count: the
    /// higher-numbered clients are left out, with every fault that names only them).
    #[serde(default)]
    pub clients: Option<usize>,
    /// Operations each workload node (a client, or a server that runs the workload) may
    /// issue; `None`: unlimited.
    #[serde(default)]
    pub ops_per_client: Option<u64>,
    /// Length of the chaos phase (the plan's `heal_at_ms`), at most the plan's own: faults
    /// starting later are left out, the others cut at the heal.
    #[serde(default)]
    pub chaos_ms: Option<u64>,
    /// Length of the run (the plan's `end_ms`), at least the chaos phase.
    #[serde(default)]
    pub run_ms: Option<u64>,
}

impl Workload {
    /// True if this changes nothing (the scenario as written).
    pub fn is_unlimited(&self) -> bool {
        *self == Workload::default()
    }

    /// The topology and plan of a run under these limits. Unlimited: both unchanged.
    /// Applying the same limits twice gives the same result as once.
    pub fn apply(&self, topology: &Topology, plan: &FaultPlan) -> (Topology, FaultPlan) {
        let mut topo = topology.clone();
        let mut plan = plan.clone();
        if let Some(n) = self.clients {
            if n < topo.clients {
                let gone: Vec<String> = (n..topo.clients).map(Topology::client_name).collect();
                topo.clients = n;
                plan.faults = plan.faults.into_iter().filter_map(|t| without_nodes(t, &gone)).collect();
            }
        }
        if let Some(chaos) = self.chaos_ms {
            if chaos < plan.heal_at_ms {
                plan.heal_at_ms = chaos;
                plan.faults.retain(|t| t.at_ms < chaos || (t.at_ms == chaos && t.duration_ms == 0));
                for t in &mut plan.faults {
                    t.duration_ms = t.duration_ms.min(chaos - t.at_ms);
                }
            }
        }
        if let Some(run) = self.run_ms {
            plan.end_ms = run;
        }
        plan.end_ms = plan.end_ms.max(plan.heal_at_ms);
        (topo, plan)
    }

    /// A fresh budget for one workload node under these limits.
    pub fn budget(&self) -> OpBudget {
        match self.ops_per_client {
            None => OpBudget::unlimited(),
            Some(n) => OpBudget::limited(n),
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<u64>| v.map_or_else(|| "as written".to_string(), |v| v.to_string());
        write!(
            f,
            "clients {}, ops per client {}, chaos {} ms, run {} ms",
            show(self.clients.map(|n| n as u64)),
            show(self.ops_per_client),
            show(self.chaos_ms),
            show(self.run_ms)
        )
    }
}

/// `t` without the nodes in `gone`: `None` if it named only such nodes (a kill, a pause, a
/// clock fault of a removed node, a link to one, a partition with a side left empty).
fn without_nodes(mut t: TimedFault, gone: &[String]) -> Option<TimedFault> {
    let is_gone = |n: &String| gone.contains(n);
    match &mut t.fault {
        Fault::Partition { a, b } | Fault::PartitionOneWay { from: a, to: b } => {
            a.retain(|n| !is_gone(n));
            b.retain(|n| !is_gone(n));
            if a.is_empty() || b.is_empty() {
                return None;
            }
        }
        Fault::CutLink { a, b } => {
            if is_gone(a) || is_gone(b) {
                return None;
            }
        }
        Fault::Kill { node }
        | Fault::Pause { node }
        | Fault::ClockSkew { node, .. }
        | Fault::ClockJump { node, .. }
        | Fault::ClockDrift { node, .. } => {
            if is_gone(node) {
                return None;
            }
        }
        Fault::PacketLoss { .. } | Fault::Latency { .. } => {}
    }
    Some(t)
}

/// The operations one workload node may still issue, shared by its incarnations (cheap to
/// clone). It also counts the operations issued, for `shrink`'s before/after numbers.
#[derive(Debug, Clone)]
pub struct OpBudget(Arc<BudgetInner>);

#[derive(Debug)]
struct BudgetInner {
    /// `None`: unlimited.
    limit: Option<u64>,
    issued: AtomicU64,
}

impl OpBudget {
    /// No limit: [`take`](Self::take) always says yes (and only counts).
    pub fn unlimited() -> OpBudget {
        OpBudget(Arc::new(BudgetInner { limit: None, issued: AtomicU64::new(0) }))
    }

    /// At most `n` operations.
    pub fn limited(n: u64) -> OpBudget {
        OpBudget(Arc::new(BudgetInner { limit: Some(n), issued: AtomicU64::new(0) }))
    }

    /// Takes one operation: `true` if the workload may issue it (counted), `false` once the
    /// budget is spent (then the workload stops issuing operations).
    pub fn take(&self) -> bool {
        let issued = &self.0.issued;
        match self.0.limit {
            None => {
                issued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(limit) => issued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1))
                .is_ok(),
        }
    }

    /// True while [`take`](Self::take) would say yes (takes nothing).
    pub fn left(&self) -> bool {
        self.0.limit.is_none_or(|limit| self.issued() < limit)
    }

    /// Operations taken so far.
    pub fn issued(&self) -> u64 {
        self.0.issued.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{Fault, TimedFault};

    fn topo() -> Topology {
        Topology { zookeeper: true, redis: None, sql: None, servers: vec![], clients: 4 }
    }

    fn plan() -> FaultPlan {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t = TimedFault::new;
        FaultPlan {
            seed: 1,
            heal_at_ms: 10_000,
            end_ms: 20_000,
            liveness_bound_ms: 5_000,
            faults: vec![
                t(100, 2_000, Fault::Kill { node: "client-3".into() }),
                t(200, 9_000, Fault::Partition { a: names(&["client-2"]), b: names(&["zk", "client-0"]) }),
                t(300, 0, Fault::ClockJump { node: "client-0".into(), delta_ms: 5 }),
                t(4_000, 6_000, Fault::ClockSkew { node: "zk".into(), offset_ms: 5 }),
                t(8_000, 1_000, Fault::Pause { node: "zk".into() }),
            ],
            swarm: None,
        }
    }

    #[test]
    fn an_unlimited_workload_changes_neither_topology_nor_plan() {
        let (t, p) = Workload::default().apply(&topo(), &plan());
        assert_eq!((t, p), (topo(), plan()));
    }

    #[test]
    fn fewer_clients_drop_the_faults_that_name_only_removed_clients() {
        let w = Workload { clients: Some(2), ..Workload::default() };
        let (t, p) = w.apply(&topo(), &plan());
        assert_eq!(t.clients, 2);
        let shown: Vec<String> = p.faults.iter().map(|f| f.fault.to_string()).collect();
        assert_eq!(shown, ["clock jump client-0 +5 ms", "clock skew zk +5 ms", "pause zk"]);
        assert_eq!(w.apply(&t, &p), (t.clone(), p.clone()), "applying twice changes nothing more");
        let nodes = t.node_names();
        assert_eq!(p.validate(&nodes), Ok(()));
    }

    #[test]
    fn a_shorter_chaos_phase_cuts_faults_at_the_heal_and_drops_later_ones() {
        let w = Workload { chaos_ms: Some(5_000), run_ms: Some(9_000), ..Workload::default() };
        let (_, p) = w.apply(&topo(), &plan());
        assert_eq!((p.heal_at_ms, p.end_ms), (5_000, 9_000));
        assert_eq!(p.faults.len(), 4);
        assert!(p.faults.iter().all(|t| t.at_ms + t.duration_ms <= 5_000), "{p}");
        let nodes: Vec<String> = topo().node_names();
        assert_eq!(p.validate(&nodes), Ok(()));
    }

    #[test]
    fn a_budget_says_no_once_spent_and_counts_what_it_gave() {
        let b = OpBudget::limited(2);
        let shared = b.clone();
        assert!(b.take() && shared.take());
        assert!(!b.left() && !b.take() && !shared.take());
        assert_eq!(b.issued(), 2);
        let u = OpBudget::unlimited();
        assert!((0..1_000).all(|_| u.take()) && u.left());
        assert_eq!(u.issued(), 1_000);
    }
}
