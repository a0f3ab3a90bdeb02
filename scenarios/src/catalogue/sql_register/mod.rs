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
//! counter of the run, [`workload::Fences`], or from the run's true time in a live run, so
//! every new owner's is higher), then reads it,
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
//! Runs live too (`real cluster run sql_register`): the clients are tasks on the servers, so
//! in a live run, where each server is a process of its own, every call's invocation and
//! completion is also reported as [`Evidence`] (`SqlInvoked`, `SqlCompleted`, with their true
//! times) and [`ScenarioRun::absorb`] rebuilds the history in the runner's process; a call
//! reported invoked and never completed (its server killed) stays open, and a completion of a
//! call never reported invoked is a violation (`sql_register.evidence`). Fences there come
//! from the run's true time ([`workload::Fences::across_processes`]), since the servers share
//! no memory. The SQL instances are the live runner's (SQLite files, or MariaDB databases with
//! `--net --mariadb`); `no-fence-check`, a bug of the simulated SQL service, stays
//! simulator-only (the live runner refuses it).

pub mod check;
pub mod history;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::env::{lock, Db, DbError, Env, Row, TableName};
use futures::future::BoxFuture;
use futures::FutureExt;

pub use self::check::check_sql_register;
use self::history::{CallLog, SqlRecorder};
use self::workload::{instance_of, row_key, Fences, Task, TABLE};
use crate::checker::{DbCall, DbOp, DbRes, LinConfig, Report};
use crate::evidence::Evidence;
use crate::faults::{FaultKind, FaultSpace};
use crate::history::{History, OpHandle, ProcessId, Recorder, TimeSource};
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

/// Runs live too: its clients run on the servers, which report every call's invocation and
/// completion as [`Evidence`] (`SqlInvoked`, `SqlCompleted`) and draw fences from the run's
/// true time.
const META: ScenarioMeta = ScenarioMeta {
    name: "sql_register",
    description: "owners and deposed owners read and write fenced, versioned rows on 4 SQL instances under kills, partitions, pauses, clock faults",
    bugs: BUGS,
    runs_live: true,
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
        Arc::new(Run::new(now))
    }
}

struct Run {
    /// True time (the recorder's clock).
    now: TimeSource,
    rec: SqlRecorder,
    fences: Fences,
    /// What the runner's run rebuilt from a live run's evidence besides the history.
    absorbed: Mutex<Absorbed>,
}

/// The calls of a live run's evidence in the middle of being matched.
#[derive(Default)]
struct Absorbed {
    /// The calls reported invoked and not (yet) completed, by (process, call number), with
    /// their invocation times.
    open: BTreeMap<(ProcessId, u64), (OpHandle, u64)>,
    /// Reports that do not fit what a server writes (a completion of a call never reported
    /// invoked, or before its invocation; a call number invoked twice): the check says so
    /// rather than drop them.
    unmatched: Vec<String>,
}

impl Run {
    fn new(now: TimeSource) -> Run {
        Run {
            now: now.clone(),
            rec: Recorder::new(now),
            fences: Fences::default(),
            absorbed: Mutex::new(Absorbed::default()),
        }
    }
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

    /// In a live run (`ctx.tap` set) the tasks also report their calls, and draw fences from
    /// true time: this process's `Fences` is its own.
    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        let fences = match &ctx.tap {
            Some(_) => self.fences.across_processes(ctx.phases.now.clone(), ctx.process),
            None => self.fences.clone(),
        };
        let tasks: Vec<_> = (0..TASKS_PER_SERVER)
            .map(|t| {
                let process = ctx.process * TASKS_PER_SERVER + t;
                let calls = CallLog::new(self.rec.clone(), self.now.clone(), process, ctx.tap.clone());
                Task::new(ctx.env.clone(), process, calls, fences.clone())
                    .run(ctx.phases.clone(), ctx.budget.clone())
            })
            .collect();
        futures::future::join_all(tasks).map(|_| ()).boxed()
    }

    fn absorb(&self, evidence: Evidence) -> bool {
        match evidence {
            Evidence::SqlInvoked { process, call, op, t_ns } => {
                let handle = self.rec.invoke_at(process, op, t_ns);
                let mut absorbed = lock(&self.absorbed);
                if absorbed.open.insert((process, call), (handle, t_ns)).is_some() {
                    absorbed.unmatched.push(format!(
                        "process {process} reported call {call} invoked twice (again at {:.3}s)",
                        secs(t_ns)
                    ));
                }
            }
            Evidence::SqlCompleted { process, call, outcome, t_ns } => {
                let mut absorbed = lock(&self.absorbed);
                match absorbed.open.remove(&(process, call)) {
                    Some((handle, invoked)) if t_ns >= invoked => self.rec.complete_at(handle, outcome, t_ns),
                    Some((_, invoked)) => absorbed.unmatched.push(format!(
                        "process {process} reported call {call} completed ({outcome:?}) at {:.3}s, before \
                         its invocation at {:.3}s",
                        secs(t_ns),
                        secs(invoked)
                    )),
                    None => absorbed.unmatched.push(format!(
                        "process {process} reported call {call} completed ({outcome:?} at {:.3}s) but never \
                         invoked",
                        secs(t_ns)
                    )),
                }
            }
            _ => return false,
        }
        true
    }

    fn check(&self, env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let rec = self.rec.clone();
        let mut observer = CallLog::new(rec.clone(), self.now.clone(), OBSERVER, None);
        let unmatched = std::mem::take(&mut lock(&self.absorbed).unmatched);
        async move {
            let table = TableName::new(TABLE).expect("a valid table name");
            // A final read of every row: catches lost and phantom writes no task read afterwards.
            for k in 0..ROWS {
                let (instance, key) = (instance_of(k), row_key(k));
                let call = observer.invoke(&instance, DbCall::Get { key: key.clone() });
                let r = match env.db.instance(&instance) {
                    Some(db) => read_retrying(&env, &*db, &table, &key).await,
                    None => Err(DbError::Unavailable),
                };
                observer.complete_get(call, &r);
            }
            let history = in_invocation_order(rec.snapshot());
            let mut report = check_sql_register(&history, &phases, &LinConfig { step_budget: STEP_BUDGET });
            // Never completed: their server was killed with them in flight (unknown outcomes
            // for the checks).
            let open = history.ops.iter().filter(|o| o.process != OBSERVER && o.completion.is_none()).count();
            report.count("sql_register.open", open as u64);
            for message in unmatched {
                report.violation("sql_register.evidence", message);
            }
            report
        }
        .boxed()
    }
}

/// `history` in invocation order, its ids renumbered. A live run's history is rebuilt file by
/// file from the servers' reports, in invocation order per process only; the checks name
/// operations by id, which reads best in time order. The simulator's history is in invocation
/// order already, and the sort is stable: it changes nothing there.
fn in_invocation_order(mut history: History<DbOp, DbRes>) -> History<DbOp, DbRes> {
    history.ops.sort_by_key(|o| o.invoke_ns);
    for (id, o) in history.ops.iter_mut().enumerate() {
        o.id = id;
    }
    history
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
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

#[cfg(test)]
mod tests;
