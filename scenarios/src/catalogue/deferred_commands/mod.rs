//! `deferred_commands`: the farm (`game::farm`, seed 002) on the engine's deferred command
//! packs (`engine::commands`): clients play ahead and send packs that three game servers
//! store, acknowledge and execute later, per user in order, under kills mid-pack, pauses past
//! the session timeout, partitions from SQL and ZooKeeper, SQL node kills and clock faults.
//!
//! Topology: ZooKeeper, Redis (user levels; not faulted), SQL instances `db-0` and `db-1`
//! with 8 logical shards round-robin over them, game servers `game-0..game-2` with the object
//! store and the farm's command queues, and [`CLIENTS`] clients. Users are numeric ids
//! `0..USERS` (so `id % 8` spreads them over every shard, even ids on `db-0`); client `i`
//! plays users `i`, `i + CLIENTS` in turn, each login on a random server. Clients differ
//! ([`workload::kind_of`]): honest ones build only what their copy of the farm affords;
//! cheating ones send packs with a `build` they cannot afford (a logical failure) and queue
//! more packs behind it (which must be skipped), then reload on `sc_reload`; resenders resend
//! unanswered packs after a short timeout on the same connection and after reconnecting to
//! another server, and resend acknowledged ones; buyers send `cs_buy_now`, retried with the
//! same id. Packs often go in *bursts*: two to four written at once (maybe with a purchase
//! among them and a `cs_state` behind them), so the server handles them back to back and they
//! queue behind each other — a failure among them makes the later ones stale, and the read
//! finds packs waiting (`sc_retry_after`). Now and then a client closes the game right after
//! sending a burst and logs in again at once on another server (the seed's "closed the game
//! and immediately launched again"): the user's objects are lent while its packs run. Every
//! client loads its state with `cs_state` (obeying `sc_retry_after`) after reconnecting,
//! after a reload and now and then; in the last [`workload::QUIET`] of the run clients only
//! read, so every queue can drain.
//!
//! Invariants (from the users' side), checked in `check.rs` on the client histories, the
//! servers' execution reports and the database after the heal:
//! 1. **none lost, exactly once**: every acknowledged pack has its row, executed (applied,
//!    failed or skipped); every stored pack is one a client sent;
//! 2. **per-user order**: ordering a user's transitions (applied and failed packs, applied
//!    purchases) by the epoch each recorded gives epochs 1..=final, no gap or repeat, and the
//!    executed packs are 1, 2, ... in id order;
//! 3. **the final state is a sequential replay**: the stored farm and queue record equal the
//!    replay of those transitions from the starting farm (applied packs apply, failed packs
//!    fail on the replayed state and change nothing, purchases add their gold);
//! 4. **stale packs skip**: a pack is skipped iff its basis is older than the error epoch at
//!    its turn in the replay;
//! 5. **a purchase is applied once**: every acknowledged purchase has its one row with the
//!    gold sent and the epoch answered, its answer's balance is the replay's, and no row
//!    exists that no client sent;
//! 6. **no state while an acknowledged pack waits**: every `sc_state` (and `gap` refusal)
//!    counts every pack acknowledged before the request was sent, and shows the replay's
//!    state at its epoch;
//! 7. **one execution at a time**: on each server, one user's committed executions (from
//!    `CommandsObserver::executing/executed`) never overlap in true time;
//! 8. **liveness**: after the run no pending-index row is left and every queue record has
//!    executed every stored pack; clients reading their state after the heal get an
//!    `sc_state` within the bound.
//!
//! The final state is read from the SQL rows after the run (objects in the orm's stored
//! format, a cross-instance pending write completed from its decision row as in
//! `object_lending`; the pack, pending and real-time rows as `engine::commands` writes them).
//!
//! Planted bugs (`engine::commands::CommandsBugs`): `ack-before-store` (a pack is
//! acknowledged before it is stored: 1, 6), `parallel-user` (two workers take one user, each
//! reading and writing in separate transactions: 7, 2, 3), `applied-outside-txn` (the
//! state and outcome commit apart from the record's `done`: a crash between applies a pack
//! twice: 2, 3), `no-stale-skip` (packs built before a failure are applied: 4).

mod check;
mod history;
mod workload;

use std::sync::Arc;
use std::time::Duration;

use engine::commands::{
    CommandsBugs, CommandsConfig, PackRow, QueueRecord, RealtimeRow, PACK_PREFIX, PACK_TABLE, PENDING_SUFFIX,
    PENDING_TABLE, REALTIME_PREFIX, REALTIME_TABLE,
};
use engine::env::{Env, TableName};
use engine::orm::{read_committed, Model, ObjectRef, OrmConfig};
use engine::shard::{ShardConfig, ShardError, ShardRouter};
use futures::future::BoxFuture;
use futures::FutureExt;
use game::farm::{self, Farm, FarmConfig};
use game::ObjectsConfig;

use self::check::{
    check_acked_executed, check_drained, check_exclusive, check_purchases, check_reads, check_replay,
    check_states_answered, Finals, UserFinal,
};
use self::history::{CmdOp, CmdRes, Executions, Rec};
use self::workload::Client;
use crate::catalogue::membership::APP_ID;
use crate::checker::Report;
use crate::faults::{FaultKind, FaultSpace};
use crate::game_host::{self, SimGameOptions};
use crate::history::{Outcome, Recorder, TimeSource};
use crate::roles::LatestActor;
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, ServerCtx, SqlSpec,
    Topology,
};

const SERVERS: usize = 3;
const INSTANCES: usize = 2;
/// Logical shards, round-robin over the instances.
const LOGICAL_SHARDS: u32 = 8;
const CLIENTS: usize = 6;
/// Users `0..USERS`, `USERS / CLIENTS` per client.
const USERS: usize = 12;
/// Workers per server: fewer than the users, so users wait for a worker now and then.
const WORKERS: usize = 4;
/// The object store's cache expiry: users' objects are often taken afresh.
const CACHE_EXPIRATION: Duration = Duration::from_secs(2);
/// Attempts of the final read of one user.
const FINAL_READ_ATTEMPTS: u32 = 10;
/// Rows per page of the final scans.
const SCAN_PAGE: usize = engine::env::DB_SCAN_LIMIT_MAX;

const BUGS: &[PlantedBug] = &[
    PlantedBug {
        name: "ack-before-store",
        description: "a pack is acknowledged when accepted and stored afterwards: a failure loses an acknowledged pack",
        caught_within_seeds: 200,
    },
    PlantedBug {
        name: "parallel-user",
        description: "two workers may take one user, each reading and writing in separate transactions",
        caught_within_seeds: 200,
    },
    PlantedBug {
        name: "applied-outside-txn",
        description: "a pack's new state and outcome commit apart from the queue record's done: a crash between applies it twice",
        caught_within_seeds: 200,
    },
    PlantedBug {
        name: "no-stale-skip",
        description: "packs built on a state older than the last failed pack are applied",
        caught_within_seeds: 200,
    },
];

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "fault: a SQL instance hit",
    "commands: pack failed logically, error epoch advanced",
    "commands: stale pack skipped",
    "commands: pack on a state older than the last failure refused (sc_reload)",
    "commands: resent pack acknowledged again, not stored twice",
    "commands: state read answered retry-after",
    "commands: turn left to the user's owner elsewhere",
    "commands: execution transaction failed, nothing applied",
    "orm: object lent by its owner",
    "orm: owner refused to lend",
    "orm: commit write outcome unknown (maybe applied)",
    "account: lease lapsed with links open",
    "sql client: outcome unknown (maybe applied)",
    "zk: session expired at the service",
];

/// Runs live too: the servers report their pack executions (invariant 7) as `Evidence`.
const META: ScenarioMeta = ScenarioMeta {
    name: "deferred_commands",
    description: "farm command packs stored, acknowledged and executed per user in order on 3 servers and 2 SQL instances, with cheats, resends and purchases, under kills, long pauses, partitions, clock faults",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

pub struct DeferredCommands;

fn shard_config() -> ShardConfig {
    crate::sql_rig::round_robin_shards(INSTANCES, LOGICAL_SHARDS)
}

fn commands_bugs(bug: Option<&str>) -> CommandsBugs {
    CommandsBugs {
        ack_before_store: bug == Some("ack-before-store"),
        parallel_user: bug == Some("parallel-user"),
        applied_outside_txn: bug == Some("applied-outside-txn"),
        no_stale_skip: bug == Some("no-stale-skip"),
    }
}

impl Scenario for DeferredCommands {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, _bug: Option<&str>) -> Topology {
        Topology {
            zookeeper: true,
            redis: Some(RedisSpec { persistent: true, stale_read_probability: 0.0 }),
            sql: Some(SqlSpec::new(INSTANCES)),
            servers: game_host::game_servers(SERVERS),
            clients: CLIENTS,
        }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        FaultSpace::builder(topology, 12_000, 16_000)
            .liveness_bound_ms(12_000)
            // Up to 8 s: pauses and partitions longer than the 6 s session timeout.
            .faults(3, 10, 8_000)
            .kill(&[Nodes::Servers, Nodes::Sql])
            .pause(&[Nodes::Servers, Nodes::Sql])
            // server <-> ZooKeeper, server <-> SQL, server <-> server.
            .partition(&[Nodes::Servers, Nodes::Zk, Nodes::Sql])
            .clock(&[Nodes::Servers, Nodes::Clients], 10_000, 20_000)
            .network()
            // Kills mid-pack (between a turn's commits, for `applied-outside-txn`) and SQL
            // pauses (commits of unknown outcome).
            .weight(FaultKind::Kill, 5)
            .weight(FaultKind::Pause, 3)
            .weight(FaultKind::CutLink, 2)
            // A kill between a pack's commits needs a server executing one: aim half the kills
            // and pauses at the server that started the latest pack still running.
            .aim(FaultKind::Kill, &[ROLE_EXECUTING])
            .aim(FaultKind::Pause, &[ROLE_EXECUTING])
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run {
            bugs: commands_bugs(bug),
            rec: Recorder::new(now),
            executions: Executions::default(),
            servers: LatestActor::default(),
        })
    }
}

/// The role of the server running the latest pack execution still open.
const ROLE_EXECUTING: &str = "executing-server";

struct Run {
    bugs: CommandsBugs,
    rec: Rec,
    executions: Executions,
    /// The servers' nodes (for [`ROLE_EXECUTING`]).
    servers: LatestActor,
}

impl ScenarioRun for Run {
    fn role(&self, role: &str) -> Option<String> {
        self.executions.executing().filter(|_| role == ROLE_EXECUTING).and_then(|p| self.servers.node_of(p))
    }

    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views()
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        Client { ctx, rec: self.rec.clone(), conns: Default::default() }.run().boxed()
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        self.servers.started(&ctx);
        let mut orm = OrmConfig::new(APP_ID);
        orm.cache_expiration = CACHE_EXPIRATION;
        let objects = ObjectsConfig { shard: shard_config(), orm, observer: None };
        let commands = CommandsConfig { workers: WORKERS, bugs: self.bugs, ..CommandsConfig::default() };
        let farm = FarmConfig {
            commands,
            observer: Some(self.executions.observer(ctx.process, ctx.phases.now.clone(), ctx.tap.clone())),
        };
        let opts = SimGameOptions { objects: Some(objects), farm: Some(farm), ..Default::default() };
        game_host::run_server(ctx, opts).boxed()
    }

    fn absorb(&self, evidence: crate::evidence::Evidence) -> bool {
        self.executions.absorb(&evidence)
    }

    fn check(&self, env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let (rec, executions) = (self.rec.clone(), self.executions.clone());
        async move {
            let mut report = Report::default();
            let finals = final_state(&env, &phases, &mut report).await;
            let history = rec.snapshot();
            let set = farm::command_set();
            report.merge(check_acked_executed(&history, &finals));
            let (replayed, replays) = check_replay(&finals, &set);
            report.merge(replayed);
            report.merge(check_purchases(&history, &finals, &replays));
            report.merge(check_reads(&history, &replays));
            report.merge(check_exclusive(&executions.snapshot()));
            report.merge(check_drained(&finals));
            report.merge(check_states_answered(&history, &phases));
            for op in &history.ops {
                let kind = match &op.op {
                    CmdOp::Login { .. } => "logins",
                    CmdOp::State { .. } => "states",
                    CmdOp::Pack { resend: false, .. } => "packs",
                    CmdOp::Pack { resend: true, .. } => "resends",
                    CmdOp::BuyNow { .. } => "purchases",
                };
                let outcome = match op.outcome() {
                    Outcome::Ok(CmdRes::Refused { code, .. }) => code.as_str(),
                    Outcome::Ok(CmdRes::Reload { .. }) => "reload",
                    Outcome::Ok(CmdRes::RetryAfter { .. }) => "retry_after",
                    Outcome::Ok(CmdRes::Acked { resent: true }) => "ok_resent",
                    Outcome::Ok(CmdRes::Bought { duplicate: true, .. }) => "ok_duplicate",
                    Outcome::Ok(_) => "ok",
                    Outcome::Fail => "failed",
                    Outcome::Info => "unknown",
                };
                report.count(&format!("deferred_commands.{kind}_{outcome}"), 1);
            }
            report
        }
        .boxed()
    }
}

fn table(name: &str) -> TableName {
    TableName::new(name).expect("valid table name")
}

/// Every user's rows after the run, read through a fresh router (see the module doc).
async fn final_state(env: &Env, phases: &Phases, report: &mut Report) -> Finals {
    let mut finals = Finals::new();
    let Some(router) = crate::sql_rig::final_router(env, APP_ID, shard_config(), phases, report).await else {
        return finals;
    };
    'users: for u in 0..USERS {
        let user = u.to_string();
        for _ in 0..FINAL_READ_ATTEMPTS {
            match read_user(&router, &user, report).await {
                Ok(f) => {
                    finals.insert(user, f);
                    continue 'users;
                }
                Err(e) => {
                    tracing::debug!(user, error = %e, "final read failed; retrying");
                    env.clock.sleep(Duration::from_millis(200)).await;
                }
            }
        }
        report.liveness_violation("final_read", format!("user {user}: the rows could not be read"));
    }
    router.stop();
    finals
}

/// One user's rows: the queue record and farm objects, the pack, real-time and pending rows.
async fn read_user(router: &ShardRouter, user: &str, report: &mut Report) -> Result<UserFinal, ShardError> {
    let queue = read_object::<QueueRecord>(router, user, report).await?;
    let farm = read_object::<Farm>(router, user, report).await?;
    let mut packs = std::collections::BTreeMap::new();
    for row in scan(router, user, &table(PACK_TABLE), PACK_PREFIX).await? {
        match serde_json::from_slice::<PackRow>(&row.value) {
            Ok(p) => {
                packs.insert(p.pack_id, p);
            }
            Err(e) => {
                report.violation("final_read", format!("user {user}: pack row {} unreadable: {e}", row.key))
            }
        }
    }
    let mut realtime = std::collections::BTreeMap::new();
    let prefix = router.user_key(user, REALTIME_PREFIX);
    for row in scan(router, user, &table(REALTIME_TABLE), REALTIME_PREFIX).await? {
        let id = row.key.strip_prefix(&prefix).unwrap_or(&row.key).to_string();
        match serde_json::from_slice::<RealtimeRow>(&row.value) {
            Ok(r) => {
                realtime.insert(id, r);
            }
            Err(e) => {
                report.violation("final_read", format!("user {user}: real-time row {id} unreadable: {e}"))
            }
        }
    }
    let pending_table = table(PENDING_TABLE);
    let pending = router.get(user, &pending_table, &router.user_key(user, PENDING_SUFFIX)).await?.is_some();
    Ok(UserFinal { queue, farm, packs, realtime, pending })
}

/// Every row of `user` in `table` whose key suffix starts with `prefix`.
async fn scan(
    router: &ShardRouter,
    user: &str,
    table: &TableName,
    prefix: &str,
) -> Result<Vec<engine::env::Row>, ShardError> {
    let mut rows = Vec::new();
    loop {
        let after = rows.last().map(|r: &engine::env::Row| r.key.clone());
        let page = router.scan_user(user, table, prefix, after.as_deref(), SCAN_PAGE).await?;
        let n = page.len();
        rows.extend(page);
        if n < SCAN_PAGE {
            return Ok(rows);
        }
    }
}

/// The committed state of `user`'s object of model `M` (`None`: none), a pending
/// cross-instance write completed from its decision row as the object's next owner would.
async fn read_object<M: Model>(
    router: &ShardRouter,
    user: &str,
    report: &mut Report,
) -> Result<Option<M>, ShardError> {
    let read = read_committed(router, &ObjectRef::of::<M>(user)).await?;
    if read.had_pending {
        report.count("deferred_commands.final_pending_writes", 1);
    }
    let Some(state) = read.value.filter(|v| !v.is_null()) else { return Ok(None) };
    match serde_json::from_value::<M>(state) {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            report
                .violation("final_read", format!("user {user}: the {} object is unreadable: {e}", M::MODEL));
            Ok(None)
        }
    }
}
