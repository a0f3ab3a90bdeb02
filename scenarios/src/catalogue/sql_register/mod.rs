//! `sql_register`: versioned, fenced reads and writes of rows spread over four SQL instances
//! (the `Db` port, DESIGN.md §10), by owners and deposed owners of the rows, under kills and
//! restarts of the SQL nodes and the servers, partitions, pauses and clock faults.
//!
//! Topology: SQL instances `db-0..db-3` (simulated SQL nodes; committed data survives a
//! kill), three servers `app-0..app-2` with no ZooKeeper or Redis. Each server incarnation
//! runs [`TASKS_PER_SERVER`] client tasks ([`workload`]); a task is one process of the
//! history. Eight rows `row-0..row-7` of table `registers`, row `k` on instance `db-{k % 4}`,
//! so each instance holds two rows that one `transact` can write together.
//!
//! A task takes a row over with a fresh fence (`RaiseFence`; fences come from a per-row
//! counter of the run, [`workload::Fences`], so every new owner's is higher), then reads it,
//! writes it (`Put` with `Expect::Version`, `Any` or `Absent`), deletes it, writes it together
//! with its partner row (one multi-row `transact`) or under a `Guard` on the partner. Other
//! tasks take rows over at any time; a deposed owner keeps writing with its old fence until
//! the instance refuses it (`Fenced`), and half of the time even after.
//!
//! History ([`history`]): every call as invoke / ok / fail / info; an instance's refusal is an
//! `ok` answer, a `maybe_applied` error is `info`, anything else `fail`. After the run an
//! observer reads every row.
//!
//! Invariants ([`check::check_sql_register`], one function per rule in [`check`]):
//! 1. **linearizability** — each instance's history is linearizable against the row model
//!    ([`crate::checker::rows`]: the port's rules for versions, fences, placeholders,
//!    expectations, all-or-nothing transactions), the observer's final reads included;
//! 2. **fencing** — no operation carrying fence `f` is accepted on a row after an answer
//!    showed that row's fence above `f` (a raise, a write, a read, a refusal acknowledged
//!    before the operation was invoked);
//! 3. **atomicity** — a refused or unsent `transact` never shows up in any row, and one with
//!    an unknown outcome shows up in all its versioned rows or in none;
//! 4. **liveness** — after the heal every task completes a call within the bound.
//!
//! Coverage counters (`sql_register.*`): fenced refusals, version refusals, not-found
//! refusals, `maybe_applied` outcomes, unreachable calls, committed multi-row transacts and
//! guards, takeovers; the runner adds `faults.kill_sql` and friends (faults that hit a SQL
//! node).
//!
//! Planted bug `no-fence-check`: the simulated SQL nodes ignore fences (a write with a stale
//! fence is accepted, a `Guard` passes), so a deposed owner's writes land.
//!
//! Simulator only: the clients are tasks on the servers recording in memory, and the
//! live-cluster runner starts no SQL instances yet.

pub mod check;
pub mod history;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use engine::env::{Db, DbError, Env, Row, TableName};
use futures::future::BoxFuture;
use futures::FutureExt;

pub use self::check::check_sql_register;
use self::history::{complete_get, invoke, SqlRecorder};
use self::workload::{instance_of, row_key, Fences, Task, TABLE};
use crate::checker::{DbCall, LinConfig, Report};
use crate::faults::{FaultKind, FaultSpace};
use crate::history::{Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, Scenario, ScenarioMeta, ScenarioRun, ServerCtx, ServerSpec,
    SqlSpec, Topology,
};

/// SQL instances `db-0..db-3`.
pub const INSTANCES: usize = 4;
/// Rows `row-0..row-7`, two per instance.
pub const ROWS: usize = 2 * INSTANCES;
const SERVERS: usize = 3;
/// Client tasks per server incarnation (each its own process in the history).
pub const TASKS_PER_SERVER: u64 = 2;
/// Process id of the observer that reads every row after the run.
pub const OBSERVER: u64 = u64::MAX;
/// Commit latency of the SQL nodes: a kill in it loses the transaction.
const COMMIT_LATENCY: Duration = Duration::from_millis(2);
/// Search budget per instance: a valid history needs far fewer steps (the versions pin the
/// order down); an exhausted budget is counted as inconclusive, never passed silently.
const STEP_BUDGET: u64 = 1_000_000;

const BUGS: &[PlantedBug] = &[PlantedBug {
    name: "no-fence-check",
    description: "the simulated SQL nodes ignore fences: a deposed owner's writes with a stale fence are accepted, a Guard passes",
    caught_within_seeds: 5,
}];

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "fault: a SQL instance hit",
    "sql client: outcome unknown (maybe applied)",
    "sql: write refused by a newer fence on the row",
];

/// Its clients run on the servers and record in memory, and the live-cluster runner starts no
/// SQL instances yet: simulator only.
const META: ScenarioMeta = ScenarioMeta {
    name: "sql_register",
    description: "owners and deposed owners read and write fenced, versioned rows on 4 SQL instances under kills, partitions, pauses, clock faults",
    bugs: BUGS,
    runs_live: false,
    probes: PROBES,
};

pub struct SqlRegister;

impl Scenario for SqlRegister {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, bug: Option<&str>) -> Topology {
        Topology {
            zookeeper: false,
            redis: None,
            sql: Some(SqlSpec {
                instances: INSTANCES,
                commit_latency: COMMIT_LATENCY,
                no_fence_check: bug == Some("no-fence-check"),
            }),
            servers: (0..SERVERS)
                .map(|i| ServerSpec { name: format!("app-{i}"), flavor: None, tags: vec![] })
                .collect(),
            clients: 0,
        }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        FaultSpace::builder(topology, 12_000, 7_000)
            .liveness_bound_ms(5_000)
            .faults(2, 8, 4_000)
            .kill(&[Nodes::Sql, Nodes::Servers])
            .pause(&[Nodes::Sql, Nodes::Servers])
            .partition(&[Nodes::Servers, Nodes::Sql])
            .clock(&[Nodes::Servers, Nodes::Sql], 5_000, 50_000)
            .network()
            .weight(FaultKind::Kill, 3)
            .build()
    }
    fn start(&self, _bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run { rec: Recorder::new(now), fences: Fences::default() })
    }
}

struct Run {
    rec: SqlRecorder,
    fences: Fences,
}

impl ScenarioRun for Run {
    /// A task's process is `server process * TASKS_PER_SERVER + task`: drawn on its server.
    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        let mut ops = self
            .rec
            .snapshot()
            .views_named(|o| format!("{} {}", crate::history::debug_name(&o.call), o.instance));
        for o in &mut ops {
            if o.process != OBSERVER {
                o.process /= TASKS_PER_SERVER;
            }
        }
        ops
    }

    fn client(&self, _ctx: ClientCtx) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        let tasks: Vec<_> = (0..TASKS_PER_SERVER)
            .map(|t| {
                let process = ctx.process * TASKS_PER_SERVER + t;
                Task::new(ctx.env.clone(), process, self.rec.clone(), self.fences.clone())
                    .run(ctx.phases.clone(), ctx.budget.clone())
            })
            .collect();
        futures::future::join_all(tasks).map(|_| ()).boxed()
    }

    fn check(&self, env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let rec = self.rec.clone();
        async move {
            let table = TableName::new(TABLE).expect("a valid table name");
            // A final read of every row: catches lost and phantom writes no task read afterwards.
            for k in 0..ROWS {
                let (instance, key) = (instance_of(k), row_key(k));
                let h = invoke(&rec, OBSERVER, &instance, DbCall::Get { key: key.clone() });
                let r = match env.db.instance(&instance) {
                    Some(db) => read_retrying(&env, &*db, &table, &key).await,
                    None => Err(DbError::Unavailable),
                };
                complete_get(&rec, h, &r);
            }
            check_sql_register(&rec.snapshot(), &phases, &LinConfig { step_budget: STEP_BUDGET })
        }
        .boxed()
    }
}

/// The observer runs after the heal; a few retries ride out a reconnect.
async fn read_retrying(env: &Env, db: &dyn Db, table: &TableName, key: &str) -> Result<Option<Row>, DbError> {
    let mut last = Err(DbError::Unavailable);
    for _ in 0..10 {
        last = db.get(table, key).await;
        if last.is_ok() {
            break;
        }
        env.clock.sleep(Duration::from_millis(200)).await;
    }
    last
}
