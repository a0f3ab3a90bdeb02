//! What a scenario is: topology, fault space, per-node workload, and the final check.
//!
//! A scenario names no backend. The runner (the `sim` crate today, the real-cluster runner
//! later) builds the topology, gives every node an [`Env`], runs the workload on each client
//! node, applies the fault plan, and after the run calls [`ScenarioRun::check`] with a fresh
//! `Env` on an observer node that can read the services' final state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine::env::Env;
use futures::future::BoxFuture;

use crate::checker::Report;
use crate::evidence::{Evidence, EvidenceTap};
use crate::faults::FaultSpace;
use crate::history::{OpView, ProcessId, TimeSource};
use crate::workload::OpBudget;

/// A deliberately broken variant of a scenario, selectable with `--bug NAME`, that its
/// checkers must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlantedBug {
    pub name: &'static str,
    pub description: &'static str,
    /// Every seed window of this many seeds must catch the bug at least once (checked by
    /// `cargo test`).
    pub caught_within_seeds: u64,
}

/// The simulated Redis node of a topology.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSpec {
    /// Keep data across a kill (models AOF with `appendfsync always`).
    pub persistent: bool,
    /// Planted bug: a GET returns the key's previous value with this probability.
    pub stale_read_probability: f64,
}

/// The simulated SQL instances of a topology: `instances` nodes named `db-0`, `db-1`, ...
/// ([`Topology::sql_name`]), each one instance of the `Db` port under the same name in every
/// node's [`Env::db`](engine::env::Env) directory.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlSpec {
    pub instances: usize,
    /// Time from taking a `transact` to its commit point (its write and fsync): a kill in this
    /// window loses the transaction, and calls behind it on the same connection wait.
    pub commit_latency: Duration,
    /// Planted bug: the instances ignore fences (a write with a stale fence is accepted, a
    /// `Guard` passes).
    pub no_fence_check: bool,
}

impl SqlSpec {
    /// `instances` correct instances with a 1 ms commit latency (an SSD fsync).
    pub fn new(instances: usize) -> SqlSpec {
        SqlSpec { instances, commit_latency: Duration::from_millis(1), no_fence_check: false }
    }
}

/// A game server node of a topology.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    /// Node name (`game-0`, `pvp-1`, ...): unique within the topology.
    pub name: String,
    pub flavor: Option<String>,
    /// Tags it starts with (`rpc_tags`).
    pub tags: Vec<String>,
}

/// The nodes of a run. Service nodes are named `zk`, `redis` and `db-0`, `db-1`, ... (SQL);
/// server nodes as their specs say; client nodes `client-0`, `client-1`, ...
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub zookeeper: bool,
    pub redis: Option<RedisSpec>,
    /// SQL instances (`None`: no SQL; every node's `Env::db` is then empty).
    pub sql: Option<SqlSpec>,
    pub servers: Vec<ServerSpec>,
    pub clients: usize,
}

impl Topology {
    pub fn client_name(i: usize) -> String {
        format!("client-{i}")
    }

    /// Node and instance name of SQL instance `i`: `db-{i}`.
    pub fn sql_name(i: usize) -> String {
        format!("db-{i}")
    }

    /// Service node names (`zk`, `redis`, `db-0`, ...) present in this topology.
    pub fn service_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.zookeeper {
            v.push("zk".to_string());
        }
        if self.redis.is_some() {
            v.push("redis".to_string());
        }
        v.extend(self.sql_names());
        v
    }

    /// The SQL instances' names, `db-0..db-{N-1}` (empty without SQL).
    pub fn sql_names(&self) -> Vec<String> {
        (0..self.sql.as_ref().map_or(0, |s| s.instances)).map(Self::sql_name).collect()
    }

    pub fn server_names(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.name.clone()).collect()
    }

    /// All node names: services, servers, clients.
    pub fn node_names(&self) -> Vec<String> {
        let mut v = self.service_names();
        v.extend(self.server_names());
        v.extend(self.client_names());
        v
    }

    pub fn client_names(&self) -> Vec<String> {
        (0..self.clients).map(Self::client_name).collect()
    }

    /// The names of one group of nodes, in topology order (empty if the topology has none).
    pub fn nodes(&self, group: Nodes) -> Vec<String> {
        match group {
            Nodes::All => self.node_names(),
            Nodes::Services => self.service_names(),
            Nodes::Zk => self.zookeeper.then(|| "zk".to_string()).into_iter().collect(),
            Nodes::Redis => self.redis.as_ref().map(|_| "redis".to_string()).into_iter().collect(),
            Nodes::Sql => self.sql_names(),
            Nodes::Servers => self.server_names(),
            Nodes::Clients => self.client_names(),
        }
    }
}

/// A group of a topology's nodes, as fault spaces name them ([`Topology::nodes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nodes {
    /// Services, servers, clients.
    All,
    /// `zk`, `redis` and the SQL instances, those present.
    Services,
    Zk,
    Redis,
    /// The SQL instances `db-0`, `db-1`, ...
    Sql,
    Servers,
    Clients,
}

/// Where in the run a node is, in true simulated time.
#[derive(Clone)]
pub struct Phases {
    /// True simulated time, ns since the start of the run.
    pub now: TimeSource,
    pub heal_at: Duration,
    pub end_at: Duration,
    /// Liveness must be observed within this long after the heal.
    pub liveness_bound: Duration,
}

impl Phases {
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos((self.now)())
    }
    /// True once the run's end has come: workloads stop issuing operations.
    pub fn finished(&self) -> bool {
        self.elapsed() >= self.end_at
    }
    pub fn healed(&self) -> bool {
        self.elapsed() >= self.heal_at
    }
}

/// Where the clients reach the topology's servers: the TCP JSON client address of server
/// `i` (in `Topology::servers` order). The runner fills it: the simulator with its fixed
/// node IPs, the live-cluster runner with the loopback addresses its processes listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerDirectory(Arc<[SocketAddr]>);

impl ServerDirectory {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self(addrs.into())
    }
    /// The client address of server `i`.
    ///
    /// # Panics
    /// If `i` is not a server of the topology (a workload bug, not an input error).
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.0[i]
    }
    /// Which server listens at `addr`, if any.
    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.0.iter().position(|a| *a == addr)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a client node's workload gets.
#[derive(Clone)]
pub struct ClientCtx {
    pub env: Env,
    /// Client index in the topology.
    pub index: usize,
    /// The servers' client addresses.
    pub servers: ServerDirectory,
    /// Process id for histories: unique per client *incarnation* (a restarted client is a
    /// new process; its predecessor's open operations stay open, i.e. unknown).
    pub process: ProcessId,
    pub phases: Phases,
    /// The operations this client may still issue ([`crate::workload`]): the workload loop
    /// calls `budget.take()` where it issues each operation and stops once it says no.
    /// Shared by the client's incarnations; unlimited unless the runner sets limits.
    pub budget: OpBudget,
}

/// What a server node's program gets.
#[derive(Clone)]
pub struct ServerCtx {
    pub env: Env,
    /// Index of the server in `Topology::servers`.
    pub index: usize,
    pub spec: ServerSpec,
    /// Unique per server *incarnation*, like `ClientCtx::process`.
    pub process: ProcessId,
    pub phases: Phases,
    /// Where the server's evidence for the checkers (acts, wall-clock reads) also goes when
    /// the server runs out of the runner's process: the live-cluster runner writes it to a
    /// file and hands it to [`ScenarioRun::absorb`] of its own run. `None` in the simulator.
    pub tap: Option<EvidenceTap>,
    /// The operations this server may still issue, for scenarios whose servers run the
    /// workload (`membership`, `rpc`, `sql_register`); as [`ClientCtx::budget`].
    pub budget: OpBudget,
}

/// What a scenario is, as constant data: each scenario declares one `const META` and returns
/// it from [`Scenario::meta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScenarioMeta {
    /// Name on the command line (`sim run NAME`), unique in the catalogue.
    pub name: &'static str,
    /// One line for `sim list`.
    pub description: &'static str,
    /// Its planted bugs (`--bug NAME`).
    pub bugs: &'static [PlantedBug],
    /// Whether the live-cluster runner may run this scenario: everything its checkers read is
    /// recorded by its clients (which run in the runner's process) or reported by its servers
    /// as [`Evidence`] through [`ServerCtx::tap`]. A scenario whose servers keep other records
    /// in memory would pass vacuously on a live cluster, so it says `false`.
    pub runs_live: bool,
    /// Coverage probes ([`engine::probe`]) every sweep of this scenario must reach besides its
    /// fault kinds taking effect (those follow from its fault space:
    /// [`Scenario::required_probes`]): the paths its invariants are about (fencing refusals,
    /// lease lapses, retransmissions, `maybe_applied` outcomes). `sim run` fails a sweep that
    /// misses one (its own exit code), and `cargo test`'s seed window checks them too. Chosen
    /// from what a 100-seed window reaches.
    pub probes: &'static [&'static str],
}

impl ScenarioMeta {
    /// The planted bug called `name`, if this scenario has one.
    pub fn bug(&self, name: &str) -> Option<&'static PlantedBug> {
        self.bugs.iter().find(|b| b.name == name)
    }

    pub fn bug_names(&self) -> Vec<&'static str> {
        self.bugs.iter().map(|b| b.name).collect()
    }
}

/// One scenario: its constant header ([`ScenarioMeta`]), its topology and fault space, and a
/// factory for per-run state.
pub trait Scenario: Send + Sync {
    fn meta(&self) -> &'static ScenarioMeta;
    /// Nodes of the run (may depend on the planted bug, e.g. a buggy service option).
    fn topology(&self, bug: Option<&str>) -> Topology;
    /// Which faults the plan may contain, and the phase lengths.
    fn fault_space(&self, topology: &Topology) -> FaultSpace;
    /// Fresh per-run state (histories, ...); `bug` is one of the meta's bugs or `None`.
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun>;

    /// Shorthand for `self.meta().name`.
    fn name(&self) -> &'static str {
        self.meta().name
    }

    /// The coverage probes a sweep of this scenario must reach: its own
    /// ([`ScenarioMeta::probes`]), and the probe of every fault kind its fault space allows
    /// taking effect ([`FaultKind::probe`](crate::faults::FaultKind::probe)), and, when it aims
    /// faults at roles, [`PROBE_AIMED`](crate::faults::PROBE_AIMED) (and, when some wait for
    /// their role, [`PROBE_WAITED`](crate::faults::PROBE_WAITED)).
    fn required_probes(&self) -> Vec<&'static str> {
        let space = self.fault_space(&self.topology(None));
        let kinds = crate::faults::FaultKind::ALL.into_iter().filter(|k| k.allowed_in(&space));
        // A space that aims faults at roles must see some land on a node playing one.
        let aimed = (!space.roles.is_empty()).then_some(crate::faults::PROBE_AIMED);
        let waited = (!space.aimed_wait_ms.is_empty()).then_some(crate::faults::PROBE_WAITED);
        kinds
            .map(crate::faults::FaultKind::probe)
            .chain(aimed)
            .chain(waited)
            .chain(self.meta().probes.iter().copied())
            .collect()
    }
}

/// The per-run half of a scenario.
pub trait ScenarioRun: Send + Sync {
    /// The workload of one client node incarnation. Runs until `ctx.phases.finished()`, the
    /// node is killed, or `ctx.budget` is spent (then it issues no more operations). Started
    /// again, with a new process id and the same budget, after a restart.
    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()>;

    /// The program of one server node incarnation (only called for topologies with
    /// servers). Runs until the node is killed or the run ends; restarted after a kill.
    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        let _ = ctx;
        Box::pin(async {})
    }

    /// Takes one piece of evidence a server recorded in another process (see
    /// [`ServerCtx::tap`]) into this run's state, as if that server had run here. Returns
    /// `false` if this scenario's servers never report such evidence (the runner then fails
    /// the run rather than check without it).
    fn absorb(&self, evidence: Evidence) -> bool {
        let _ = evidence;
        false
    }

    /// The node playing `role` now (a client's or server's name), for a fault aimed at
    /// `@role` ([`FaultSpace::aim`](crate::faults::FaultSpaceBuilder::aim)); `None` if no node
    /// plays it at this moment (the fault is then skipped). Scenarios that aim faults at
    /// roles answer for each; the default plays none.
    fn role(&self, role: &str) -> Option<String> {
        let _ = role;
        None
    }

    /// The run's operation history so far, its types erased to text, for a picture of the
    /// run (`sim replay --chart`). Scenarios with a history return it (ids as the checkers'
    /// [`Violation::ops`](crate::checker::Violation) name them); the default has none.
    fn chart_ops(&self) -> Vec<OpView> {
        Vec::new()
    }

    /// After the run: read final state through `env` (an observer node with a clean network
    /// and every fault healed) and check every invariant over it and the histories.
    fn check(&self, env: Env, phases: Phases) -> BoxFuture<'static, Report>;
}
