//! Runs one seed of one scenario inside a fresh madsim runtime.
//!
//! Order of a run (TigerBeetle's VOPR shape): seed → topology and fault plan (printed and
//! hashed) → nodes start → chaos phase (faults come and go) → heal (every fault repaired) →
//! heal phase (workload continues; liveness must show) → clients stopped → an observer node
//! reads the final state and the scenario's checkers judge it and the histories.
//!
//! Randomness: every node incarnation draws from its own stream forked from the run seed by
//! node name and incarnation ([`NodeSeeds`]), so one node's extra draw does not shift the
//! others'; madsim's global generator still drives network delays and task order.
//!
//! Node table of every run:
//!
//! | node | address | what |
//! |---|---|---|
//! | `zk` | 10.0.0.1:2181 | simulated ZooKeeper (data survives restarts) |
//! | `redis` | 10.0.0.2:6379 | simulated Redis (loses data on kill unless persistent) |
//! | `db-N` | 10.0.3.(N+1):3306 | simulated SQL instance N (committed data survives restarts) |
//! | servers (`game-0`, ...) | 10.0.2.(N+1) | the scenario's game servers (RPC on port 8015) |
//! | `client-N` | 10.0.1.(N+1) | the scenario's workload |
//! | `observer` | 10.0.9.1 | final-state reads after the run |

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::env::{Clock, Env, Rand};
use scenarios::checker::Report;
use scenarios::faults::FaultPlan;
use scenarios::history::{OpView, TimeSource};
use scenarios::{ClientCtx, OpBudget, Phases, Scenario, ServerCtx, ServerDirectory, Topology, Workload};

use crate::adapters::{ClockControl, NodeRand, SimClock, SimNet, SimRand, SimSpawn};
use crate::chart::{ChartLog, ChartTap, NodeTap};
use crate::faults::Injector;
use crate::redis::{RedisOptions, RedisStore, SimKv};
pub use crate::sql::scenario::with_sql;
use crate::sql::{sql_addr, SqlOptions, SqlStore};
use crate::trace::{TraceCollector, TraceOutput};
pub use crate::verdict::{
    exit_code, judge_determinism, SeedResult, Verdict, ViolationKind, EXIT_PROBE_MISSED, INCONCLUSIVE_SUFFIX,
};
use crate::zk::{SimCoordConnector, ZkClientEnv, ZkOptions, ZkStore};

pub const ZK_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 2181);
pub const REDIS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 6379);
const OBSERVER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 9, 1));
/// Client-side Redis command timeout.
pub const KV_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Stack of the thread a simulation runs on (deep async state machines in debug builds).
const SIM_THREAD_STACK_BYTES: usize = 32 * 1024 * 1024;
/// How long the observer may take to read the final state before the run counts as stuck.
const CHECK_TIME_MAX: Duration = Duration::from_secs(120);

fn server_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, u8::try_from(i + 1).expect("at most 254 servers")))
}

fn client_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, u8::try_from(i + 1).expect("at most 254 clients")))
}

/// Options of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub trace: TraceOutput,
    /// Writes this process's id into the trace: a planted non-determinism, so that a test can
    /// show `run --check-determinism` catches a seed whose runs differ between processes.
    pub plant_nondeterminism: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { trace: TraceOutput::HashOnly, plant_nondeterminism: false }
    }
}

/// The message of a caught panic (`String` or `&str` payloads; anything else is unknown).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// The command that replays a seed, as printed for failures.
pub fn replay_command(scenario: &str, seed: u64, bug: Option<&str>) -> String {
    let mut c = format!("cargo run -p sim --release -- replay {scenario} --seed {seed}");
    if let Some(b) = bug {
        c.push_str(&format!(" --bug {b}"));
    }
    c
}

/// The plan a seed will run (also printed by `replay`).
pub fn plan_for(scenario: &dyn Scenario, seed: u64, bug: Option<&str>) -> (Topology, FaultPlan) {
    let topo = scenario.topology(bug);
    let space = scenario.fault_space(&topo);
    (topo.clone(), FaultPlan::generate(seed, &space))
}

fn true_time() -> TimeSource {
    Arc::new(|| u64::try_from(madsim::time::TimeHandle::current().elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// The `Env` of a simulated node named `name` at `ip`: madsim adapters (randomness from
/// madsim's global generator), its clock lens from `clocks`, and clients of the `zk` and
/// `redis` nodes at their fixed addresses.
pub fn node_env(name: &str, ip: IpAddr, clocks: &ClockControl) -> Env {
    node_env_with_rand(name, ip, clocks, Arc::new(SimRand))
}

/// [`node_env`] with the node's own generator (runs use [`NodeSeeds::rand`]).
pub fn node_env_with_rand(name: &str, ip: IpAddr, clocks: &ClockControl, rand: Arc<dyn Rand>) -> Env {
    node_env_charted(name, ip, clocks, rand, None)
}

/// [`node_env_with_rand`] whose `Net` port also notes its frames on `chart` (if any).
fn node_env_charted(
    name: &str,
    ip: IpAddr,
    clocks: &ClockControl,
    rand: Arc<dyn Rand>,
    chart: Option<&ChartTap>,
) -> Env {
    let clock: Arc<dyn Clock> = Arc::new(SimClock::new(name, clocks.clone()));
    let node_tap = chart.map(|tap| NodeTap { node: name.to_string(), tap: tap.clone() });
    let net = Arc::new(SimNet::charted(ip, node_tap));
    let spawn = Arc::new(SimSpawn);
    let zk_env = ZkClientEnv::new(name, clock.clone(), rand.clone(), spawn.clone(), net.clone());
    let coord = Arc::new(SimCoordConnector::new(zk_env, ZK_ADDR));
    let kv = Arc::new(SimKv::new(net.clone(), clock.clone(), spawn.clone(), REDIS_ADDR, KV_COMMAND_TIMEOUT));
    let db = Arc::new(engine::env::DbInstances::empty());
    Env { node: name.into(), clock, rand, spawn, net, coord, kv, db }
}

/// Where a node incarnation's randomness comes from: madsim's global generator (tests that
/// build nodes by hand) or its own stream forked from the run seed ([`NodeSeeds`]).
#[derive(Clone, Debug)]
enum RandSource {
    Global,
    PerNode(NodeSeeds),
}

impl RandSource {
    fn rand(&self, node: &str) -> Arc<dyn Rand> {
        match self {
            RandSource::Global => Arc::new(SimRand),
            RandSource::PerNode(seeds) => seeds.rand(node),
        }
    }
}

/// Per-node generators of one run: each node incarnation gets a [`NodeRand`] forked from the
/// run seed by its name and incarnation number (counted here, per name, as nodes start).
#[derive(Clone, Debug)]
pub struct NodeSeeds {
    seed: u64,
    incarnations: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

impl NodeSeeds {
    pub fn new(seed: u64) -> Self {
        NodeSeeds { seed, incarnations: Arc::default() }
    }

    /// The generator of `node`'s next incarnation.
    pub fn rand(&self, node: &str) -> Arc<dyn Rand> {
        let mut m = engine::env::lock(&self.incarnations);
        let n = m.entry(node.to_string()).or_insert(0);
        let rand = NodeRand::new(self.seed, node, *n);
        *n += 1;
        Arc::new(rand)
    }
}

/// Starts the simulated ZooKeeper node `zk` at [`ZK_ADDR`]; its data survives restarts.
pub fn start_zk(handle: &madsim::runtime::Handle, clocks: &ClockControl) -> madsim::task::NodeId {
    start_zk_with(handle, clocks, ZkOptions::default())
}

/// [`start_zk`] with explicit service options (tick, session timeout bounds).
pub fn start_zk_with(
    handle: &madsim::runtime::Handle,
    clocks: &ClockControl,
    opts: ZkOptions,
) -> madsim::task::NodeId {
    spawn_zk(handle, clocks, opts, RandSource::Global, None)
}

fn spawn_zk(
    handle: &madsim::runtime::Handle,
    clocks: &ClockControl,
    opts: ZkOptions,
    rands: RandSource,
    chart: Option<ChartTap>,
) -> madsim::task::NodeId {
    let store = ZkStore::default();
    let clocks = clocks.clone();
    handle
        .create_node()
        .name("zk")
        .ip(ZK_ADDR.ip())
        .init(move || {
            let env = node_env_charted("zk", ZK_ADDR.ip(), &clocks, rands.rand("zk"), chart.as_ref());
            crate::zk::serve(env.net, env.clock, env.spawn, ZK_ADDR, store.clone(), opts)
        })
        .build()
        .id()
}

/// Starts the simulated Redis node `redis` at [`REDIS_ADDR`] (its store lives outside the
/// node, so `opts.persistent` decides what a restart keeps).
pub fn start_redis(
    handle: &madsim::runtime::Handle,
    clocks: &ClockControl,
    opts: RedisOptions,
) -> madsim::task::NodeId {
    spawn_redis(handle, clocks, opts, RandSource::Global, None)
}

fn spawn_redis(
    handle: &madsim::runtime::Handle,
    clocks: &ClockControl,
    opts: RedisOptions,
    rands: RandSource,
    chart: Option<ChartTap>,
) -> madsim::task::NodeId {
    let store = RedisStore::default();
    let clocks = clocks.clone();
    handle
        .create_node()
        .name("redis")
        .ip(REDIS_ADDR.ip())
        .init(move || {
            let env =
                node_env_charted("redis", REDIS_ADDR.ip(), &clocks, rands.rand("redis"), chart.as_ref());
            crate::redis::serve(
                env.net,
                env.clock,
                env.rand,
                env.spawn,
                REDIS_ADDR,
                store.clone(),
                opts.clone(),
            )
        })
        .build()
        .id()
}

/// Starts SQL instance `i` of a topology as node `db-{i}` at [`sql_addr`]`(i)`, with a store
/// that survives its restarts (a SQL server's durable storage).
fn spawn_sql(
    handle: &madsim::runtime::Handle,
    clocks: &ClockControl,
    i: usize,
    opts: SqlOptions,
    rands: RandSource,
    chart: Option<ChartTap>,
) -> madsim::task::NodeId {
    let store = SqlStore::new();
    let (name, addr) = (Topology::sql_name(i), sql_addr(i));
    let clocks = clocks.clone();
    handle
        .create_node()
        .name(&name)
        .ip(addr.ip())
        .init(move || {
            let env = node_env_charted(&name, addr.ip(), &clocks, rands.rand(&name), chart.as_ref());
            crate::sql::serve(env.net, env.clock, env.spawn, addr, store.clone(), opts)
        })
        .build()
        .id()
}

/// Runs `seed` of `scenario` and judges it. Never panics: a panic inside the simulation is
/// reported as [`Verdict::Crash`].
pub fn run_seed(scenario: &dyn Scenario, seed: u64, bug: Option<&str>, opts: RunOptions) -> SeedResult {
    let (topo, plan) = plan_for(scenario, seed, bug);
    run_with_plan(scenario, seed, bug, topo, plan, Workload::default(), opts)
}

/// Runs `seed` with an explicit fault plan instead of the one the seed generates, under
/// `workload`'s limits (used by `shrink` and by `replay --plan FILE` / `--case FILE`). The
/// seed still drives every other random choice. An unlimited workload changes nothing: not
/// the topology, the plan, the trace, nor any random draw.
pub fn run_with_plan(
    scenario: &dyn Scenario,
    seed: u64,
    bug: Option<&str>,
    topo: Topology,
    plan: FaultPlan,
    workload: Workload,
    opts: RunOptions,
) -> SeedResult {
    run_inner(scenario, seed, bug, topo, plan, workload, opts, None).0
}

/// What a charted run hands the chart besides its [`SeedResult`].
#[derive(Debug, Clone)]
pub struct ChartedRun {
    pub topology: Topology,
    pub plan: FaultPlan,
    /// The checkers' report (violations with the operations they name); `None` if the
    /// simulation panicked.
    pub report: Option<Report>,
    /// The scenario's history ([`scenarios::ScenarioRun::chart_ops`]).
    pub ops: Vec<OpView>,
    /// Connections, frames, incarnations and faults as recorded.
    pub log: ChartLog,
}

/// [`run_with_plan`], recording what a picture of the run needs (`replay --chart`): the same
/// run (same trace hash), plus a [`ChartedRun`].
pub fn run_charted(
    scenario: &dyn Scenario,
    seed: u64,
    bug: Option<&str>,
    topo: Topology,
    plan: FaultPlan,
    workload: Workload,
    opts: RunOptions,
) -> (SeedResult, ChartedRun) {
    let tap = ChartTap::new();
    // The topology and plan the run uses, with the workload's limits applied.
    let (topology, plan_c) = workload.apply(&topo, &plan);
    let (result, rest) = run_inner(scenario, seed, bug, topo, plan, workload, opts, Some(tap.clone()));
    let (report, ops) = rest.map_or((None, Vec::new()), |(r, o)| (Some(r), o));
    (result, ChartedRun { topology, plan: plan_c, report, ops, log: tap.log() })
}

/// Runs one seed; with a `chart`, also returns the report and the history's operations.
#[allow(clippy::too_many_arguments)]
fn run_inner(
    scenario: &dyn Scenario,
    seed: u64,
    bug: Option<&str>,
    topo: Topology,
    plan: FaultPlan,
    workload: Workload,
    opts: RunOptions,
    chart: Option<ChartTap>,
) -> (SeedResult, Option<(Report, Vec<OpView>)>) {
    let wall = std::time::Instant::now();
    let (topo, plan) = workload.apply(&topo, &plan);
    let trace = TraceCollector::new(opts.trace);
    trace.add_line(&format!("scenario {} seed {} bug {}", scenario.name(), seed, bug.unwrap_or("none")));
    if !workload.is_unlimited() {
        trace.add_line(&format!("workload: {workload}"));
    }
    for line in plan.to_string().lines() {
        trace.add_line(line);
    }
    if opts.plant_nondeterminism {
        trace.add_line(&format!("planted non-determinism: process {}", std::process::id()));
    }
    let subscriber = trace.subscriber();
    let dispatch = tracing::Dispatch::new(subscriber);
    let run = scenario.start(bug, true_time());

    // Each run gets a fresh OS thread. Not for parallelism: std's `HashMap` seeds its hasher
    // once per thread, and madsim can only make that seed deterministic on a thread that has
    // not built a `HashMap` yet. Two seeds on one thread would differ from two processes.
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(format!("sim-seed-{seed}"))
            .stack_size(SIM_THREAD_STACK_BYTES)
            .spawn_scoped(scope, || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
                    // Coverage probes count on this thread only: the run's own hits.
                    engine::probe::record(|| {
                        rt.block_on(simulate(topo, plan.clone(), run, NodeSeeds::new(seed), workload, chart))
                    })
                })
            })
            .expect("spawn the simulation thread")
            .join()
    });
    let mut charted = None;
    let mut probes = BTreeMap::new();
    let (verdict, violations, kinds, counters, frames, sim_secs, ops) = match outcome {
        Ok((Simulated { report, frames, sim_secs, ops, chart_ops }, hits)) => {
            probes = hits.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let verdict = Verdict::of(&report);
            let v = report.violations.iter().map(|v| format!("[{}] {}", v.checker, v.message)).collect();
            let kinds = report
                .violations
                .iter()
                .map(|v| ViolationKind { checker: v.checker.clone(), class: v.class })
                .collect();
            let counters = report.counters.clone();
            if let Some(chart_ops) = chart_ops {
                charted = Some((report, chart_ops));
            }
            (verdict, v, kinds, counters, frames, sim_secs, ops)
        }
        Err(panic) => {
            let msg = panic_message(&*panic);
            let v = vec![format!("[crash] simulation panicked: {msg}")];
            (Verdict::Crash, v, Vec::new(), BTreeMap::new(), 0, 0.0, 0)
        }
    };
    for v in &violations {
        trace.add_line(&format!("violation: {v}"));
    }
    trace.add_line(&format!("verdict: {verdict:?}"));
    let result = SeedResult {
        scenario: scenario.name().to_string(),
        seed,
        bug: bug.map(str::to_string),
        verdict,
        violations,
        kinds,
        ops,
        counters,
        probes,
        trace_hash: trace.hash(),
        trace_lines: trace.lines(),
        frames,
        sim_secs,
        wall_secs: wall.elapsed().as_secs_f64(),
    };
    (result, charted)
}

/// What a simulation hands back to [`run_with_plan`].
struct Simulated {
    report: Report,
    /// Simulated frames sent.
    frames: u64,
    sim_secs: f64,
    /// Operations the workload issued.
    ops: u64,
    /// The history's operations, for a charted run only.
    chart_ops: Option<Vec<OpView>>,
}

async fn simulate(
    topo: Topology,
    plan: FaultPlan,
    run: Arc<dyn scenarios::ScenarioRun>,
    seeds: NodeSeeds,
    workload: Workload,
    chart: Option<ChartTap>,
) -> Simulated {
    let handle = madsim::runtime::Handle::current();
    let clocks = ClockControl::new();
    let mut ids = BTreeMap::new();
    let phases = Phases {
        now: true_time(),
        heal_at: Duration::from_millis(plan.heal_at_ms),
        end_at: Duration::from_millis(plan.end_ms),
        liveness_bound: Duration::from_millis(plan.liveness_bound_ms),
    };

    if topo.zookeeper {
        let rands = RandSource::PerNode(seeds.clone());
        ids.insert("zk".to_string(), spawn_zk(&handle, &clocks, ZkOptions::default(), rands, chart.clone()));
    }
    if let Some(spec) = &topo.redis {
        let opts =
            RedisOptions { persistent: spec.persistent, stale_read_probability: spec.stale_read_probability };
        let rands = RandSource::PerNode(seeds.clone());
        ids.insert("redis".to_string(), spawn_redis(&handle, &clocks, opts, rands, chart.clone()));
    }
    let sql_count = topo.sql.as_ref().map_or(0, |s| s.instances);
    if let Some(spec) = &topo.sql {
        let opts = SqlOptions { commit_latency: spec.commit_latency, no_fence_check: spec.no_fence_check };
        for i in 0..spec.instances {
            let rands = RandSource::PerNode(seeds.clone());
            ids.insert(Topology::sql_name(i), spawn_sql(&handle, &clocks, i, opts, rands, chart.clone()));
        }
    }
    // Clients reach server `i` on its node IP at the reference game's client port.
    let servers = ServerDirectory::new(
        (0..topo.servers.len())
            .map(|i| SocketAddr::new(server_ip(i), scenarios::game_host::TCP_JSON_PORT))
            .collect(),
    );
    // Process ids: one per server or client incarnation, so a restarted node is a new process.
    let next_process = Arc::new(AtomicU64::new(0));
    // One operation budget per workload node, shared by its incarnations.
    let budgets: Vec<OpBudget> = (0..topo.servers.len() + topo.clients).map(|_| workload.budget()).collect();
    let mut stop_ids = Vec::new();
    for (i, spec) in topo.servers.iter().enumerate() {
        let (clocks, run, phases, next_process, seeds, chart) =
            (clocks.clone(), run.clone(), phases.clone(), next_process.clone(), seeds.clone(), chart.clone());
        let spec_c = spec.clone();
        let budget = budgets[i].clone();
        let node = handle
            .create_node()
            .name(&spec.name)
            .ip(server_ip(i))
            .init(move || {
                let rand = seeds.rand(&spec_c.name);
                let env = node_env_charted(&spec_c.name, server_ip(i), &clocks, rand, chart.as_ref());
                let env = with_sql(env, sql_count);
                let process = next_process.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = &chart {
                    c.incarnation(&spec_c.name, process);
                }
                tracing::info!(process, "server starts");
                run.server(ServerCtx {
                    env,
                    index: i,
                    spec: spec_c.clone(),
                    process,
                    phases: phases.clone(),
                    tap: None,
                    budget: budget.clone(),
                })
            })
            .build();
        ids.insert(spec.name.clone(), node.id());
        stop_ids.push(node.id());
    }
    for i in 0..topo.clients {
        let name = Topology::client_name(i);
        let (clocks, run, phases, next_process, servers, seeds, chart) = (
            clocks.clone(),
            run.clone(),
            phases.clone(),
            next_process.clone(),
            servers.clone(),
            seeds.clone(),
            chart.clone(),
        );
        let node_name = name.clone();
        let budget = budgets[topo.servers.len() + i].clone();
        let node = handle
            .create_node()
            .name(&name)
            .ip(client_ip(i))
            .init(move || {
                let rand = seeds.rand(&node_name);
                let env = node_env_charted(&node_name, client_ip(i), &clocks, rand, chart.as_ref());
                let env = with_sql(env, sql_count);
                let process = next_process.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = &chart {
                    c.incarnation(&node_name, process);
                }
                tracing::info!(process, "client starts");
                run.client(ClientCtx {
                    env,
                    index: i,
                    servers: servers.clone(),
                    process,
                    phases: phases.clone(),
                    budget: budget.clone(),
                })
            })
            .build();
        ids.insert(name, node.id());
        stop_ids.push(node.id());
    }

    let mut injector = Injector::new(handle.clone(), clocks.clone(), ids.clone())
        .with_sql_nodes(topo.sql_names())
        .with_chart(chart.clone())
        .with_roles({
            let run = run.clone();
            Box::new(move |role| run.role(role))
        });
    injector.run(&plan).await;
    madsim::time::sleep_until(
        madsim::time::Instant::now() + Duration::from_millis(plan.end_ms.saturating_sub(plan.heal_at_ms)),
    )
    .await;
    for id in &stop_ids {
        handle.kill(*id);
    }
    tracing::info!(target: "sim::runner", "run ended: servers and clients stopped, checking");

    let observer = handle.create_node().name("observer").ip(OBSERVER_IP).build();
    let env = node_env_charted("observer", OBSERVER_IP, &clocks, seeds.rand("observer"), chart.as_ref());
    let env = with_sql(env, sql_count);
    let check = run.check(env, phases.clone());
    let report = observer
        .spawn(async move { madsim::time::timeout(CHECK_TIME_MAX, check).await })
        .await
        .expect("observer task completes");
    let mut report = match report {
        Ok(r) => r,
        Err(_) => {
            let mut r = Report::default();
            // The services did not answer the observer after the heal: progress did not come.
            r.liveness_violation(
                "runner",
                format!("final-state check did not finish within {CHECK_TIME_MAX:?}"),
            );
            r
        }
    };
    for (kind, n) in &injector.applied {
        report.count(&format!("faults.{kind}"), *n);
    }
    for (kind, n) in &injector.applied_sql {
        report.count(&format!("faults.{kind}_sql"), *n);
    }
    let frames = madsim::net::NetSim::current().stat().msg_count;
    let sim_secs = madsim::time::TimeHandle::current().elapsed().as_secs_f64();
    let ops = budgets.iter().map(OpBudget::issued).sum();
    // Only a charted run copies its history out (sweeps pay nothing).
    let chart_ops = chart.map(|_| run.chart_ops());
    Simulated { report, frames, sim_secs, ops, chart_ops }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
