//! `shard_move`: writers append to their users' log rows, sharded over 3 SQL instances, while
//! a mover moves shards between the instances, under kills (the mover's too), partitions,
//! pauses and clock faults.
//!
//! Processes: `client-0` is the mover (a killed mover's next incarnation finishes or rolls back
//! the move it left); `client-1..` are writers, each owning [`USERS_PER_WRITER`] users, so a
//! user's log has one writer. An append reads the user's row through the [`ShardRouter`] and
//! writes it back conditional on the version read; the router guards the write with its map
//! version, so a writer with an old map is refused by an instance that gave the shard away.
//!
//! Invariants (from the user's side), checked in `check.rs`:
//! 1. **lost**: every acknowledged append is in the user's final row;
//! 2. **duplicate**: no append is in a row twice;
//! 3. **phantom**: no refused (or never issued) append is in a row;
//! 4. **owner**: no append is accepted by an instance after a finished move took its shard
//!    away (and before one brought it back);
//! 5. **freeze**: after the heal has settled, a move freezes its shard for at most 1 s and
//!    appends to it wait at most that (plus the append's own round trips);
//! 6. **other shards**: appends to shards that are not moving never wait (liveness class);
//! 7. **liveness**: after the heal every writer completes appends, and the mover leaves no
//!    move unfinished.
//!
//! Planted bug `stale-map-write`: the mover never removes the source's guard row, so the old
//! instance keeps accepting writes (from servers that have not seen the switch, and during the
//! freeze) — caught by 1 and 4.

mod check;
mod history;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engine::env::Env;
use engine::shard::{MoveOptions, ShardConfig};
use futures::future::BoxFuture;
use futures::FutureExt;

use self::check::{check_final_logs, check_freeze, check_owner, FinalLogs};
use self::history::{ShardOp, ShardResult};
use self::workload::{decode_log, log_table, mover, start_router, users_of, writer, Rec};
use crate::checker::Report;
use crate::faults::{FaultKind, FaultSpace};
use crate::history::{Outcome, Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, Scenario, ScenarioMeta, ScenarioRun, SqlSpec, Topology,
};

/// The cluster's app id (the map lives at `/shard_move/shard_map`).
pub const APP: &str = "shard_move";
/// Logical shards (fewer than the production default of 32, so moves revisit shards).
pub const LOGICAL_SHARDS: u32 = 8;
const INSTANCES: usize = 3;
const WRITERS: usize = 4;
/// Users per writer; user ids are numeric, so users `0..16` cover every shard twice.
pub const USERS_PER_WRITER: usize = 4;
/// The mover's client index.
const MOVER: usize = 0;

const BUGS: &[PlantedBug] = &[PlantedBug {
    name: "stale-map-write",
    description:
        "the mover never removes the source's guard: the old instance keeps accepting writes after the switch",
    caught_within_seeds: 200,
}];

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "fault: a SQL instance hit",
    "shard: read not confirmed by the guard, re-read on a newer map",
    "shard: write refused by the guard, shard moved or frozen",
    "sql client: outcome unknown (maybe applied)",
    "sql: write refused by a newer fence on the row",
    "zk client: connection lost, session kept",
    "zk: session expired at the service",
];

/// Runs live (`real cluster run shard_move`): its processes are clients, which the live runner
/// runs in its own process against real ZooKeeper and the run's SQL instances (SQLite files, or
/// databases of a MariaDB server with `--net --mariadb`, which service faults can kill, pause
/// and cut off); the simulator's kills of the mover have no live counterpart.
const META: ScenarioMeta = ScenarioMeta {
    name: "shard_move",
    description: "writers append to sharded rows on 3 SQL instances while a mover moves shards, under kills, partitions, pauses, clock faults",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

pub struct ShardMove;

fn shard_config() -> ShardConfig {
    let names: Vec<String> = (0..INSTANCES).map(Topology::sql_name).collect();
    ShardConfig::round_robin(&names, LOGICAL_SHARDS)
}

impl Scenario for ShardMove {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, _bug: Option<&str>) -> Topology {
        Topology {
            zookeeper: true,
            redis: None,
            sql: Some(SqlSpec::new(INSTANCES)),
            servers: vec![],
            clients: 1 + WRITERS,
        }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        FaultSpace::builder(topology, 12_000, 8_000)
            .liveness_bound_ms(5_000)
            .faults(2, 8, 4_000)
            .kill(&[Nodes::Sql, Nodes::Clients, Nodes::Zk])
            .pause(&[Nodes::Sql, Nodes::Clients])
            .partition(&[Nodes::Clients, Nodes::Sql, Nodes::Zk])
            .clock(&[Nodes::Clients, Nodes::Sql], 5_000, 50_000)
            .network()
            .weight(FaultKind::Kill, 2)
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        let opts =
            MoveOptions { bug_keep_source_guard: bug == Some("stale-map-write"), ..MoveOptions::default() };
        Arc::new(Run { rec: Recorder::new(now), opts })
    }
}

struct Run {
    rec: Rec,
    opts: MoveOptions,
}

impl ScenarioRun for Run {
    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views()
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let (rec, cfg) = (self.rec.clone(), shard_config());
        if ctx.index == MOVER {
            mover(ctx.env, cfg, rec, ctx.process, ctx.phases, self.opts, ctx.budget).boxed()
        } else {
            writer(ctx.env, cfg, rec, ctx.process, ctx.index - 1, ctx.phases, ctx.budget).boxed()
        }
    }

    fn check(&self, env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let rec = self.rec.clone();
        async move {
            let mut report = Report::default();
            let finals = final_logs(&env, &phases, &mut report).await;
            let history = rec.snapshot();
            report.merge(check_final_logs(&history, &finals));
            report.merge(check_owner(&history));
            report.merge(check_freeze(
                &history,
                phases.heal_at.as_nanos() as u64,
                phases.liveness_bound.as_nanos() as u64,
            ));
            let writers =
                |p| history.ops.iter().any(|o| o.process == p && matches!(o.op, ShardOp::Append { .. }));
            report.merge(crate::checker::liveness_after_heal(&history, &phases, writers));
            for op in &history.ops {
                let name = match (&op.op, op.outcome()) {
                    (ShardOp::Append { .. }, Outcome::Ok(_)) => "appends_ok",
                    (ShardOp::Append { .. }, Outcome::Fail) => "appends_refused",
                    (ShardOp::Append { .. }, Outcome::Info) => "appends_unknown",
                    (_, Outcome::Ok(ShardResult::Moved { rolled_back: true, .. })) => "moves_rolled_back",
                    (ShardOp::Resume, Outcome::Ok(ShardResult::Moved { .. })) => "moves_resumed",
                    (_, Outcome::Ok(ShardResult::Moved { .. })) => "moves_finished",
                    (_, Outcome::Info) => "moves_interrupted",
                    _ => "moves_other",
                };
                report.count(name, 1);
            }
            report
        }
        .boxed()
    }
}

/// Every user's row after the run, read through a fresh router; a move left unfinished is a
/// liveness violation (and is finished here, so the rows can be read).
async fn final_logs(env: &Env, phases: &Phases, report: &mut Report) -> FinalLogs {
    let mut finals = BTreeMap::new();
    let users: Vec<String> = (0..WRITERS).flat_map(users_of).collect();
    let Some(router) = start_router(env, &shard_config(), phases).await else {
        report.liveness_violation("final_read", "no shard router could start after the run");
        return users.into_iter().map(|u| (u, None)).collect();
    };
    if let Ok(map) = router.refresh().await {
        if let Some(m) = &map.moving {
            report.liveness_violation(
                "mover",
                format!("a move of shard {} to {} was left {:?} after the heal", m.shard, m.to, m.phase),
            );
            let _ = engine::shard::resume_move(&router, MoveOptions::default()).await;
        }
    }
    for user in users {
        let key = router.user_key(&user, "log");
        let mut row = None;
        for _ in 0..10 {
            match router.get(&user, &log_table(), &key).await {
                Ok(r) => {
                    row = Some(r.map(|r| decode_log(&r.value)).unwrap_or_default());
                    break;
                }
                Err(_) => env.clock.sleep(Duration::from_millis(200)).await,
            }
        }
        finals.insert(user, row);
    }
    router.stop();
    finals
}
