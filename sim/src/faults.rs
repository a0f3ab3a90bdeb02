//! Applies a [`FaultPlan`] to a running simulation: partitions through madsim's network
//! clogs, kill/restart and pause/resume through madsim's node handles, packet loss and
//! latency through the network config, clock faults through the run's [`ClockControl`].
//!
//! Every application is a trace event (`fault` lines), so the trace shows exactly what hit
//! when. Overlapping partitions are reference-counted per directed link, so lifting one
//! never lifts another that still holds. A fault aimed at a node that is down (killed or
//! paused by an earlier fault) is skipped and traced as such. A fault aimed at a role
//! (`@lock-holder`) hits the node the scenario says plays it at that moment, and is skipped
//! (traced) if none does.

use std::collections::BTreeMap;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use scenarios::faults::{role_of, Fault, FaultKind, FaultPlan};

use crate::adapters::ClockControl;
use crate::chart::{ChartTap, FaultEvent};

/// Default simulated one-way latency (madsim's own default).
pub const DEFAULT_LATENCY: std::ops::Range<Duration> = Duration::from_millis(1)..Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Up,
    Paused,
    Killed,
}

/// The injector's view of the cluster.
pub struct Injector {
    handle: Handle,
    clocks: ClockControl,
    nodes: BTreeMap<String, NodeId>,
    state: BTreeMap<String, NodeState>,
    clogged: BTreeMap<(NodeId, NodeId), u32>,
    /// Faults applied, by kind (coverage).
    pub applied: BTreeMap<&'static str, u64>,
    /// The SQL instances' nodes ([`Injector::with_sql_nodes`]).
    sql_nodes: Vec<String>,
    /// Faults applied that hit a SQL instance's node (killed, paused, partitioned, clock), by
    /// kind (coverage: the runner reports them as `faults.{kind}_sql`).
    pub applied_sql: BTreeMap<&'static str, u64>,
    /// Where applications and repairs are noted when the run is charted.
    chart: Option<ChartTap>,
    /// Who plays a role now ([`Injector::with_roles`]).
    roles: Option<Roles>,
}

/// The node playing a role now (the scenario run's [`scenarios::ScenarioRun::role`]).
pub type Roles = Box<dyn Fn(&str) -> Option<String>>;

/// What to undo when a fault's duration ends.
enum Undo {
    Links(Vec<(NodeId, NodeId)>),
    Restart(String),
    Resume(String),
    Loss,
    Latency,
    Nothing,
}

impl Injector {
    pub fn new(handle: Handle, clocks: ClockControl, nodes: BTreeMap<String, NodeId>) -> Self {
        let state = nodes.keys().map(|n| (n.clone(), NodeState::Up)).collect();
        Injector {
            handle,
            clocks,
            nodes,
            state,
            clogged: BTreeMap::new(),
            applied: BTreeMap::new(),
            sql_nodes: Vec::new(),
            applied_sql: BTreeMap::new(),
            chart: None,
            roles: None,
        }
    }

    /// Resolves faults aimed at roles with `roles` (without it, such faults are skipped).
    pub fn with_roles(mut self, roles: Roles) -> Self {
        self.roles = Some(roles);
        self
    }

    /// `fault` with its roles replaced by the nodes playing them now; `Err(why not)` if a role
    /// has no node or a partition is left with an empty side.
    fn resolve(&self, fault: &Fault) -> Result<Fault, String> {
        let mut missing = None;
        let resolved = fault.map_nodes(|n| match role_of(n) {
            None => Some(n.to_string()),
            Some(role) => {
                let node = self.roles.as_ref().and_then(|r| r(role)).filter(|n| self.nodes.contains_key(n));
                if node.is_none() {
                    missing.get_or_insert_with(|| role.to_string());
                }
                node
            }
        });
        let mut fault = resolved.ok_or_else(|| format!("no node plays @{}", missing.unwrap_or_default()))?;
        // A partition aimed at a role names the role's node on its side and every node on the
        // other: the node stays on the role's side only.
        if let Fault::Partition { a, b } | Fault::PartitionOneWay { from: a, to: b } = &mut fault {
            b.retain(|n| !a.contains(n));
            if b.is_empty() {
                return Err("a side is left empty".to_string());
            }
        }
        Ok(fault)
    }

    /// Notes every fault applied, skipped and repaired on `chart` (`None`: nowhere).
    pub fn with_chart(mut self, chart: Option<ChartTap>) -> Self {
        self.chart = chart;
        self
    }

    fn note(&self, event: FaultEvent) {
        if let Some(c) = &self.chart {
            c.fault(event);
        }
    }

    /// Counts the faults that hit these nodes (the SQL instances) in [`Injector::applied_sql`].
    pub fn with_sql_nodes(mut self, nodes: Vec<String>) -> Self {
        self.sql_nodes = nodes;
        self
    }

    /// Whether `fault` names one of the SQL nodes.
    fn hits_sql(&self, fault: &Fault) -> bool {
        let sql = |n: &String| self.sql_nodes.contains(n);
        match fault {
            Fault::Partition { a, b } | Fault::PartitionOneWay { from: a, to: b } => {
                a.iter().chain(b).any(sql)
            }
            Fault::CutLink { a, b } => sql(a) || sql(b),
            Fault::Kill { node }
            | Fault::Pause { node }
            | Fault::ClockSkew { node, .. }
            | Fault::ClockJump { node, .. }
            | Fault::ClockDrift { node, .. } => sql(node),
            Fault::PacketLoss { .. } | Fault::Latency { .. } => false,
        }
    }

    fn id(&self, name: &str) -> NodeId {
        *self.nodes.get(name).unwrap_or_else(|| panic!("fault plan names unknown node {name:?}"))
    }

    fn clog(&mut self, links: &[(NodeId, NodeId)]) {
        let net = NetSim::current();
        for &(a, b) in links {
            let c = self.clogged.entry((a, b)).or_insert(0);
            if *c == 0 {
                net.clog_link(a, b);
            }
            *c += 1;
        }
    }

    fn unclog(&mut self, links: &[(NodeId, NodeId)]) {
        let net = NetSim::current();
        for l in links {
            if let Some(c) = self.clogged.get_mut(l) {
                *c -= 1;
                if *c == 0 {
                    self.clogged.remove(l);
                    net.unclog_link(l.0, l.1);
                }
            }
        }
    }

    fn links(&self, from: &[String], to: &[String], both: bool) -> Vec<(NodeId, NodeId)> {
        let mut v = Vec::new();
        for a in from {
            for b in to {
                v.push((self.id(a), self.id(b)));
                if both {
                    v.push((self.id(b), self.id(a)));
                }
            }
        }
        v
    }

    /// Applies plan entry `index` (for the chart).
    fn apply(&mut self, index: usize, planned: &Fault, duration_ms: u64) -> Undo {
        let fault = match self.resolve(planned) {
            Ok(f) => f,
            Err(why) => {
                tracing::info!(target: "sim::faults", "skip: {planned} ({why})");
                self.note(FaultEvent::Skipped { fault: planned.clone() });
                return Undo::Nothing;
            }
        };
        if &fault != planned {
            engine::probe!(name = scenarios::faults::PROBE_AIMED);
        }
        let fault = &fault;
        let net = NetSim::current();
        let undo = match fault {
            Fault::Partition { a, b } => {
                let l = self.links(a, b, true);
                self.clog(&l);
                Undo::Links(l)
            }
            Fault::PartitionOneWay { from, to } => {
                let l = self.links(from, to, false);
                self.clog(&l);
                Undo::Links(l)
            }
            Fault::CutLink { a, b } => {
                let l = self.links(std::slice::from_ref(a), std::slice::from_ref(b), true);
                self.clog(&l);
                Undo::Links(l)
            }
            Fault::Kill { node } => {
                if self.state[node] != NodeState::Up {
                    tracing::info!(target: "sim::faults", "skip: kill {node} (not up)");
                    self.note(FaultEvent::Skipped { fault: fault.clone() });
                    return Undo::Nothing;
                }
                self.handle.kill(self.id(node));
                self.state.insert(node.clone(), NodeState::Killed);
                Undo::Restart(node.clone())
            }
            Fault::Pause { node } => {
                if self.state[node] != NodeState::Up {
                    tracing::info!(target: "sim::faults", "skip: pause {node} (not up)");
                    self.note(FaultEvent::Skipped { fault: fault.clone() });
                    return Undo::Nothing;
                }
                self.handle.pause(self.id(node));
                self.state.insert(node.clone(), NodeState::Paused);
                Undo::Resume(node.clone())
            }
            Fault::PacketLoss { rate } => {
                net.update_config(|c| c.packet_loss_rate = *rate);
                Undo::Loss
            }
            Fault::Latency { min_ms, max_ms } => {
                net.update_config(|c| {
                    c.send_latency = Duration::from_millis(*min_ms)..Duration::from_millis(*max_ms)
                });
                Undo::Latency
            }
            Fault::ClockSkew { node, offset_ms } => {
                self.clocks.set_skew(node, *offset_ms);
                Undo::Nothing
            }
            Fault::ClockJump { node, delta_ms } => {
                self.clocks.jump(node, *delta_ms);
                Undo::Nothing
            }
            Fault::ClockDrift { node, ppm } => {
                self.clocks.set_drift(node, *ppm);
                Undo::Nothing
            }
        };
        *self.applied.entry(fault.kind().name()).or_insert(0) += 1;
        probe_applied(fault.kind());
        if self.hits_sql(fault) {
            engine::probe!("fault: a SQL instance hit");
            *self.applied_sql.entry(fault.kind().name()).or_insert(0) += 1;
        }
        if fault == planned {
            tracing::info!(target: "sim::faults", "fault: {fault}");
        } else {
            tracing::info!(target: "sim::faults", "fault: {fault} (aimed: {planned})");
        }
        self.note(FaultEvent::Applied { index, fault: fault.clone(), duration_ms });
        undo
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Links(l) => {
                self.unclog(&l);
                tracing::info!(target: "sim::faults", "repair: reconnect {} link(s)", l.len());
            }
            Undo::Restart(node) => self.restart(&node),
            Undo::Resume(node) => self.resume(&node),
            Undo::Loss => {
                NetSim::current().update_config(|c| c.packet_loss_rate = 0.0);
                tracing::info!(target: "sim::faults", "repair: packet loss off");
            }
            Undo::Latency => {
                NetSim::current().update_config(|c| c.send_latency = DEFAULT_LATENCY);
                tracing::info!(target: "sim::faults", "repair: latency back to default");
            }
            Undo::Nothing => {}
        }
    }

    fn restart(&mut self, node: &str) {
        if self.state[node] == NodeState::Killed {
            self.handle.restart(self.id(node));
            self.state.insert(node.to_string(), NodeState::Up);
            tracing::info!(target: "sim::faults", "repair: restart {node}");
            self.note(FaultEvent::Restarted { node: node.to_string() });
        }
    }

    fn resume(&mut self, node: &str) {
        if self.state[node] == NodeState::Paused {
            self.handle.resume(self.id(node));
            self.state.insert(node.to_string(), NodeState::Up);
            tracing::info!(target: "sim::faults", "repair: resume {node}");
            self.note(FaultEvent::Resumed { node: node.to_string() });
        }
    }

    /// Repairs everything at once (the start of the heal phase).
    pub fn heal_all(&mut self) {
        let links: Vec<(NodeId, NodeId)> = self.clogged.keys().copied().collect();
        let net = NetSim::current();
        for l in links {
            net.unclog_link(l.0, l.1);
        }
        self.clogged.clear();
        let names: Vec<String> = self.state.keys().cloned().collect();
        for n in names {
            self.resume(&n);
            self.restart(&n);
        }
        net.update_config(|c| {
            c.packet_loss_rate = 0.0;
            c.send_latency = DEFAULT_LATENCY;
        });
        self.clocks.heal_all();
        tracing::info!(target: "sim::faults", "heal: all faults repaired");
        self.note(FaultEvent::Healed);
    }

    /// True while `planned`, a fault waiting for its role, should wait on: no node plays the
    /// role, or the node playing it is down (paused or killed by an earlier fault).
    fn role_not_ready(&self, planned: &Fault) -> bool {
        match self.resolve(planned) {
            Err(_) => true,
            Ok(Fault::Kill { node } | Fault::Pause { node }) => self.state[&node] != NodeState::Up,
            Ok(_) => false,
        }
    }

    /// Runs the plan to its heal point (call from the simulation's main task).
    ///
    /// Applications and repairs run in time order, a repair due at a fault's instant first.
    /// A fault that waits for its role ([`scenarios::faults::TimedFault::wait_ms`]) and finds
    /// none playing it asks again every [`ROLE_POLL_MS`] until one does, its wait runs out
    /// (then it is skipped, as any aimed fault whose role has no node) or the heal comes;
    /// other faults keep their instants meanwhile.
    pub async fn run(&mut self, plan: &FaultPlan) {
        let mut due: BTreeMap<(u64, Step, usize), Option<Undo>> = BTreeMap::new();
        for (i, t) in plan.faults.iter().enumerate() {
            due.insert((t.at_ms, Step::Apply, i), None);
        }
        let start = madsim::time::Instant::now();
        let sleep_to = |ms: u64| madsim::time::sleep_until(start + Duration::from_millis(ms));
        while let Some(((at_ms, step, i), undo)) = due.pop_first() {
            let applications_left = || due.keys().any(|k| k.1 == Step::Apply);
            if step == Step::Repair && at_ms >= plan.heal_at_ms && !applications_left() {
                // Everything still in force is repaired by the heal.
                continue;
            }
            sleep_to(at_ms).await;
            if let Some(undo) = undo {
                self.undo(undo);
                self.note(FaultEvent::Repaired { index: i });
                continue;
            }
            let t = &plan.faults[i];
            let next_poll = at_ms + ROLE_POLL_MS;
            if t.wait_ms > 0
                && next_poll <= t.at_ms + t.wait_ms
                && next_poll < plan.heal_at_ms
                && self.role_not_ready(&t.fault)
            {
                if at_ms == t.at_ms {
                    tracing::info!(target: "sim::faults", "wait: {} (up to {} ms for its role)", t.fault, t.wait_ms);
                }
                due.insert((next_poll, Step::Apply, i), None);
                continue;
            }
            if at_ms > t.at_ms && !self.role_not_ready(&t.fault) {
                engine::probe!(name = scenarios::faults::PROBE_WAITED);
            }
            let undo = self.apply(i, &t.fault, t.duration_ms);
            if t.duration_ms > 0 {
                due.insert((at_ms + t.duration_ms, Step::Repair, i), Some(undo));
            }
        }
        sleep_to(plan.heal_at_ms).await;
        self.heal_all();
    }
}

/// How often a fault waiting for its role asks who plays it (simulated ms).
pub const ROLE_POLL_MS: u64 = 1;

/// What happens at an instant, in this order: repairs due then, then applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Repair,
    Apply,
}

/// Marks a fault of `kind` taking effect (coverage probes: a kind a scenario allows but no
/// seed applies shows as a probe never hit).
fn probe_applied(kind: FaultKind) {
    // One site per kind (a site has one name); the names are `FaultKind::probe`'s.
    match kind {
        FaultKind::Partition => engine::probe!(name = FaultKind::Partition.probe()),
        FaultKind::PartitionOneWay => engine::probe!(name = FaultKind::PartitionOneWay.probe()),
        FaultKind::CutLink => engine::probe!(name = FaultKind::CutLink.probe()),
        FaultKind::Kill => engine::probe!(name = FaultKind::Kill.probe()),
        FaultKind::Pause => engine::probe!(name = FaultKind::Pause.probe()),
        FaultKind::ClockSkew => engine::probe!(name = FaultKind::ClockSkew.probe()),
        FaultKind::ClockJump => engine::probe!(name = FaultKind::ClockJump.probe()),
        FaultKind::ClockDrift => engine::probe!(name = FaultKind::ClockDrift.probe()),
        FaultKind::PacketLoss => engine::probe!(name = FaultKind::PacketLoss.probe()),
        FaultKind::Latency => engine::probe!(name = FaultKind::Latency.probe()),
    }
}
