//! `object_lending`: the inventory game (`game::inventory`, `gift`, `trade`) on the object
//! store (`engine::orm`): users' inventories lent between four game servers, gifts and trades
//! across SQL instances, under kills, long pauses, partitions and clock faults.
//!
//! Topology: ZooKeeper, Redis (user levels; not faulted), SQL instances `db-0..db-2` with 8
//! logical shards round-robin over them, game servers `game-0..game-3` with the object store,
//! and [`CLIENTS`] clients. Users are numeric ids `0..USERS` (so `id % 8` spreads them over
//! every shard); client `i` owns users `i`, `i + CLIENTS`, and logs in as them in turn, each
//! time on a random server (the login takes the user's inventory there, creating it the first
//! time). Logged in, it sends `cs_gift`, `cs_trade` and `cs_inventory` in rounds of
//! [`workload::ROUND`] shared by all clients, often to a user logged in on the same server,
//! so opposite gifts between two users of one server race (`workload`).
//!
//! Invariants (from the users' side), checked in `check.rs`:
//! 1. **conservation**: after the heal, over the users that have an inventory, every item's
//!    total (gold included) is the starting one; no count is ever negative (final state and
//!    every `sc_inventory`);
//! 2. **exactly once**: for every user and item, the final count is the start, plus every
//!    committed op's delta, plus the deltas of some subset of the unknown (`info`) ops; failed
//!    and refused ops add nothing;
//! 3. **single owner**: the servers report every act on an object
//!    (`OrmObserver::acted(object, fence)`); per object, the acting spans of different
//!    (server incarnation, fence) pairs never overlap in true time;
//! 4. **effects after commit**: every `sc_gift_received` matches a gift that committed or may
//!    have (not a failed one, not one refused by the game's rules), at most once each;
//! 5. **liveness**: after the heal every client completes operations, and every gift or trade
//!    invoked [`check::SETTLE_MS`] after the heal completes definitely within the bound.
//!
//! The final state is read from the SQL rows after the run: an object row carries its
//! committed state and, between the two phases of a cross-instance commit, a pending write;
//! the check completes a pending write with its transaction's decision row, as the next owner
//! would (`engine::orm`'s stored format, `stored.rs`).
//!
//! Planted bugs (`engine::orm::OrmBugs`): `no-fence` (owners write without the fence and
//! ignore their lease: 3), `effects-before-commit` (4), `unordered-locks` (two opposite gifts on
//! one server deadlock: 5), `no-intent` (a cross-instance commit without pending writes and
//! decision: a failure between the instances breaks 1 and 2).

mod check;
mod history;
mod workload;

use std::sync::Arc;
use std::time::Duration;

use engine::env::Env;
use engine::orm::{read_committed, ObjectRef, OrmBugs, OrmConfig};
use engine::shard::ShardConfig;
use futures::future::BoxFuture;
use futures::FutureExt;
use game::inventory::Inventory;
use game::ObjectsConfig;
use serde_json::Value;

use self::check::{
    check_conservation, check_effects, check_exactly_once, check_settled, check_single_owner, Finals,
    Holdings,
};
use self::history::{Inbox, InvOp, InvRes, ObjectActs, Rec};
use self::workload::{Client, Whereabouts};
use crate::catalogue::membership::APP_ID;
use crate::checker::Report;
use crate::faults::{FaultKind, FaultSpace};
use crate::game_host::{self, SimGameOptions};
use crate::history::{Outcome, Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, ServerCtx, SqlSpec,
    Topology,
};

const SERVERS: usize = 4;
const INSTANCES: usize = 3;
/// Logical shards, round-robin over the instances.
const LOGICAL_SHARDS: u32 = 8;
const CLIENTS: usize = 6;
/// Users `0..USERS`, `USERS / CLIENTS` per client.
const USERS: usize = 12;
/// The object store's cache expiry: short, so inventories are often taken afresh (and lent
/// while a transaction is taking another).
const CACHE_EXPIRATION: Duration = Duration::from_secs(1);
/// Attempts of the final read of one row.
const FINAL_READ_ATTEMPTS: u32 = 10;

const BUGS: &[PlantedBug] = &[
    PlantedBug {
        name: "no-fence",
        description: "object owners write with fence 0 and ignore their lease: a deposed owner keeps acting",
        caught_within_seeds: 200,
    },
    PlantedBug {
        name: "effects-before-commit",
        description: "a transaction's effects (sc_gift_received) run when queued, before the commit",
        caught_within_seeds: 200,
    },
    PlantedBug {
        name: "unordered-locks",
        description: "transactions lock objects in the caller's order: opposite gifts deadlock",
        caught_within_seeds: 200,
    },
    PlantedBug {
        name: "no-intent",
        description:
            "a cross-instance commit writes each instance in turn, with no pending writes or decision",
        caught_within_seeds: 200,
    },
];

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "fault: a SQL instance hit",
    "account: lease lapsed with links open",
    "account: coordination session expired",
    "orm: object lent by its owner",
    "orm: owner refused to lend",
    "orm: waiting out an unresponsive owner's record",
    "orm: load found a pending cross-instance write",
    "orm: commit write outcome unknown (maybe applied)",
    "sql: write refused by a newer fence on the row",
    "sql client: outcome unknown (maybe applied)",
    "rpc: calls retransmitted on a new connection",
    "rpc: duplicate of a running call ignored",
    "cluster: view stale until a reload succeeds",
    "zk: session expired at the service",
];

/// Runs live too: SQL instances are SQLite files there, and owner acts travel as evidence.
const META: ScenarioMeta = ScenarioMeta {
    name: "object_lending",
    description: "gifts and trades between inventories lent across 4 servers and 3 SQL instances, under kills, long pauses, partitions, clock faults",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

pub struct ObjectLending;

fn shard_config() -> ShardConfig {
    crate::sql_rig::round_robin_shards(INSTANCES, LOGICAL_SHARDS)
}

fn orm_bugs(bug: Option<&str>) -> OrmBugs {
    OrmBugs {
        no_fence: bug == Some("no-fence"),
        effects_before_commit: bug == Some("effects-before-commit"),
        unordered_locks: bug == Some("unordered-locks"),
        no_intent: bug == Some("no-intent"),
    }
}

impl Scenario for ObjectLending {
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
        FaultSpace::builder(topology, 15_000, 25_000)
            .liveness_bound_ms(10_000)
            // Up to 10 s: pauses and partitions longer than the session timeout.
            .faults(2, 8, 10_000)
            .kill(&[Nodes::Servers, Nodes::Sql])
            .pause(&[Nodes::Servers, Nodes::Sql])
            // server <-> ZooKeeper, server <-> SQL, server <-> server.
            .partition(&[Nodes::Servers, Nodes::Zk, Nodes::Sql])
            .clock(&[Nodes::Servers, Nodes::Clients], 10_000, 20_000)
            .network()
            // Kills are the commonest fault: half of them are aimed at a SQL instance while
            // objects it holds are in use (docs/simulator.md, "Faults aimed at roles").
            .weight(FaultKind::Kill, 6)
            .weight(FaultKind::Pause, 4)
            .weight(FaultKind::CutLink, 3)
            // Pausing or isolating a server that owns nothing tests little: aim half of them
            // at the server that acted on an object last, for longer than its lease (so
            // another server takes its objects while it is gone). Killing an owner only ends
            // its transactions; killing the instance that holds what it acted on fails the
            // commits of every transaction holding those objects, definitely (the connection
            // is refused), so they are retried.
            //
            // Pauses wait for a server in the middle of a transaction (it took an object and
            // is taking the next): paused past its lease, it is deposed with a transaction
            // under way, which carries on when it resumes. Only a deposed owner that acts
            // again can break single ownership; the account manager closes its client links
            // when its lease lapses, so a transaction already under way is nearly the only
            // way it does (docs/simulator.md, "Faults that wait for their role").
            .aim_lasting(FaultKind::Pause, &[ROLE_MID_TRANSACTION], AIMED_OWNER_MS.0, AIMED_OWNER_MS.1)
            .wait_for_role(FaultKind::Pause, MID_TRANSACTION_WAIT_MS)
            .aim(FaultKind::Kill, &[ROLE_OBJECT_DB])
            .aim_lasting(FaultKind::Partition, &[ROLE_OWNER], AIMED_OWNER_MS.0, AIMED_OWNER_MS.1)
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run {
            bugs: orm_bugs(bug),
            rec: Recorder::new(now),
            inbox: Inbox::default(),
            acts: ObjectActs::default(),
            whereabouts: Whereabouts::default(),
        })
    }
}

/// ZooKeeper's smallest session timeout at its default tick (2 × tickTime): owners' leases
/// follow it, so a cut from the service longer than this deposes an owner.
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);

/// The role of the server that acted on an object last (it owns or borrows one).
const ROLE_OWNER: &str = "object-owner";

/// The role of a server in the middle of a transaction: it took an object for it and is
/// taking the next, before the commit (played at moments only).
const ROLE_MID_TRANSACTION: &str = "mid-transaction";

/// How long a pause aimed at [`ROLE_MID_TRANSACTION`] waits for a server to play it: a few
/// rounds of requests ([`workload::ROUND`]).
const MID_TRANSACTION_WAIT_MS: u64 = 2_000;

/// How long a pause or partition aimed at a server: past the session timeout
/// (4 s) with a second for another server to take the objects, up to the longest fault.
const AIMED_OWNER_MS: (u64, u64) = (5_000, 10_000);

/// The role of the SQL instance holding the object acted on last: the instance its
/// transaction commits to next (a commit cut or killed there fails retryably, and a retried
/// transaction must not repeat its effects).
const ROLE_OBJECT_DB: &str = "object-db";

/// The SQL instance holding object `name` (`model/key`): every model of the inventory game is
/// keyed by its user (or, for unique-field entries, by a key that is its own shard user), and
/// the shard map never moves in this scenario.
fn instance_of_object(name: &str) -> Option<String> {
    let (_, key) = name.split_once('/')?;
    let shard = engine::shard::shard_of(key, LOGICAL_SHARDS);
    shard_config().layout.get(shard.0 as usize).cloned()
}

struct Run {
    bugs: OrmBugs,
    rec: Rec,
    inbox: Inbox,
    acts: ObjectActs,
    whereabouts: Whereabouts,
}

impl ScenarioRun for Run {
    fn role(&self, role: &str) -> Option<String> {
        match role {
            ROLE_OWNER => self.acts.actors().node(),
            ROLE_MID_TRANSACTION => self.acts.taking_node(),
            ROLE_OBJECT_DB => self.acts.latest_object().and_then(|o| instance_of_object(&o)),
            _ => None,
        }
    }

    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views()
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let client = Client {
            ctx,
            rec: self.rec.clone(),
            inbox: self.inbox.clone(),
            whereabouts: self.whereabouts.clone(),
        };
        client.run().boxed()
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        self.acts.server_started(ctx.process, &ctx.spec.name);
        let mut orm = OrmConfig::new(APP_ID);
        orm.cache_expiration = CACHE_EXPIRATION;
        orm.bugs = self.bugs;
        let objects = ObjectsConfig {
            shard: shard_config(),
            orm,
            observer: Some(self.acts.observer(ctx.process, ctx.phases.now.clone(), ctx.tap.clone())),
        };
        let opts = SimGameOptions {
            objects: Some(objects),
            zk_session_timeout: Some(SESSION_TIMEOUT),
            ..Default::default()
        };
        game_host::run_server(ctx, opts).boxed()
    }

    fn absorb(&self, evidence: crate::evidence::Evidence) -> bool {
        self.acts.absorb(&evidence)
    }

    fn check(&self, env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let (rec, inbox, acts) = (self.rec.clone(), self.inbox.clone(), self.acts.clone());
        async move {
            let mut report = Report::default();
            let finals = final_inventories(&env, &phases, &mut report).await;
            let history = rec.snapshot();
            report.merge(check_conservation(&history, &finals));
            report.merge(check_exactly_once(&history, &finals));
            report.merge(check_single_owner(&acts.snapshot()));
            report.merge(check_effects(&history, &inbox.snapshot()));
            let changes =
                |p| history.ops.iter().any(|o| o.process == p && !matches!(o.op, InvOp::Login { .. }));
            report.merge(crate::checker::liveness_after_heal(&history, &phases, changes));
            report.merge(check_settled(&history, &phases));
            for op in &history.ops {
                let kind = match &op.op {
                    InvOp::Login { .. } => "logins",
                    InvOp::Gift { .. } => "gifts",
                    InvOp::Trade { .. } => "trades",
                    InvOp::Inventory { .. } => "reads",
                };
                let outcome = match op.outcome() {
                    Outcome::Ok(InvRes::Refused(_)) => "refused",
                    Outcome::Ok(_) => "ok",
                    Outcome::Fail => "failed",
                    Outcome::Info => "unknown",
                };
                report.count(&format!("object_lending.{kind}_{outcome}"), 1);
            }
            report
        }
        .boxed()
    }
}

/// Every user's inventory after the run, read from its SQL row through a fresh router; a
/// pending write is completed with its transaction's decision (committed: the pending state;
/// aborted or undecided: the committed one), as the object's next owner would.
async fn final_inventories(env: &Env, phases: &Phases, report: &mut Report) -> Finals {
    let mut finals = Finals::new();
    let Some(router) = crate::sql_rig::final_router(env, APP_ID, shard_config(), phases, report).await else {
        return finals;
    };
    'users: for u in 0..USERS {
        let user = u.to_string();
        for _ in 0..FINAL_READ_ATTEMPTS {
            let Ok(read) = read_committed(&router, &ObjectRef::of::<Inventory>(&user)).await else {
                env.clock.sleep(Duration::from_millis(200)).await;
                continue;
            };
            if read.had_pending {
                report.count("object_lending.final_pending_writes", 1);
            }
            finals.insert(user, read.value.as_ref().and_then(holdings));
            continue 'users;
        }
        report.liveness_violation("final_read", format!("user {user}: the inventory row could not be read"));
    }
    router.stop();
    finals
}

/// An inventory's holdings (gold under `"gold"`); `None` for no object.
fn holdings(state: &Value) -> Option<Holdings> {
    let inv: Inventory = serde_json::from_value(state.clone()).ok()?;
    let mut h: Holdings = inv.items;
    h.insert(game::inventory::GOLD.to_string(), inv.gold);
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mid_transaction_role_names_the_latest_server_still_taking_objects_before_its_commit() {
        let acts = ObjectActs::default();
        acts.server_started(1, "game-1");
        acts.server_started(2, "game-2");
        assert_eq!(acts.taking_node(), None, "no transaction yet");
        // game-1 took inventory/4 and is taking the next object.
        acts.held(1, "inventory/4");
        assert_eq!(acts.taking_node().as_deref(), Some("game-1"));
        // game-2 took one since: the latest taker.
        acts.held(2, "inventory/8");
        assert_eq!(acts.taking_node().as_deref(), Some("game-2"));
        // game-2's transaction commits (a second act), then ends: game-1 is still taking.
        acts.held(2, "inventory/8");
        assert_eq!(acts.taking_node().as_deref(), Some("game-1"), "a committing server is past the moment");
        acts.released(2, "inventory/8");
        assert_eq!(acts.taking_node().as_deref(), Some("game-1"));
        acts.released(1, "inventory/4");
        assert_eq!(acts.taking_node(), None, "every transaction ended");
        // A killed incarnation never releases: its node's next incarnation clears it.
        acts.held(1, "inventory/4");
        acts.server_started(3, "game-1");
        assert_eq!(acts.taking_node(), None, "a restart ends the dead incarnation's transactions");
        acts.held(3, "inventory/4");
        assert_eq!(acts.taking_node().as_deref(), Some("game-1"));
    }

    #[test]
    fn the_object_db_role_names_the_instance_holding_the_object_acted_on_last() {
        // Shard `id % 8`, shard `i` on `db-{i % 3}`: the layout the trace shows
        // (`s0004/4/inventory.4` on db-1).
        assert_eq!(instance_of_object("inventory/4").as_deref(), Some("db-1"));
        assert_eq!(instance_of_object("inventory/8").as_deref(), Some("db-0"));
        assert_eq!(instance_of_object("inventory/11").as_deref(), Some("db-0"));
        assert_eq!(instance_of_object("no-slash"), None);

        let acts = ObjectActs::default();
        assert_eq!(acts.latest_object(), None, "nothing acted yet");
        acts.record("inventory/4", (1, 7), 10);
        acts.record("inventory/8", (2, 3), 20);
        assert_eq!(acts.latest_object().as_deref(), Some("inventory/8"));
        // An older act reported late (evidence from another process) still is the latest report.
        acts.record("inventory/4", (1, 7), 5);
        assert_eq!(acts.latest_object().as_deref(), Some("inventory/4"));
    }
}
