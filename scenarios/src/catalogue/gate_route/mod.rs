//! `gate_route`: players behind gates (`engine::gate`, seeds 003/004) — a login server that
//! issues session keys, three gates that hold the clients' connections, three backends that
//! host the players (`game` servers with the object store) — under gate and backend kills,
//! pauses, partitions (gate <-> backend, backend <-> ZooKeeper, client <-> gate), loss and
//! clock faults.
//!
//! Topology: ZooKeeper, Redis (not faulted), SQL instances `db-0`, `db-1` (8 logical shards),
//! servers `login-0`, `gate-0..2`, `game-0..2` (in that order), and [`CLIENTS`] clients.
//! Client `i` plays player `p{i}`: it gets a key from the login server, logs in on a gate
//! (sometimes after showing it a bad key), sends numbered `cs_counter_add {n, seq}` alone or
//! pipelined, moves to other backends (`cs_move`, sometimes with adds pipelined right behind
//! it), leaves for other gates (`workload`).
//!
//! Invariants, from the players' side (`check.rs`):
//! 1. **keys**: no forged, altered, expired or foreign session key is ever accepted;
//! 2. **exactly once, in order**: the final counter is the sum of the adds `1..=last_seq`,
//!    every answer shows the sum up to its seq, nothing acknowledged is beyond the final seq;
//! 3. **switch and order**: on each connection, answers come in send order, each from the
//!    backend the client was last told it is on (no message handled by the old backend after
//!    the switch);
//! 4. **one backend at a time**: the backends report each gated frame they are about to handle
//!    (`engine::gate::HostObserver`); per player, the spans of different (server, binding)
//!    pairs never overlap in true time;
//! 5. **nothing lost, no reconnect** once healed: a move started after the heal switches on
//!    its own connection within a bound, and every add sent after the heal is answered;
//! 6. **liveness** after the heal.
//!
//! Planted bugs (`engine::gate::GateBugs`): `forward-during-move` (3, 5), `no-player-fence`
//! (4), `unchecked-session-key` (1), `release-before-drain` (5).

mod check;
mod history;
mod workload;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use engine::env::Env;
use engine::gate::{GateBugs, GatewayConfig, GATE_TAG};
use engine::orm::{read_committed, ObjectRef, OrmConfig};
use engine::shard::ShardConfig;
use futures::future::BoxFuture;
use futures::FutureExt;
use game::counter::Counter;
use game::{Flavor, ObjectsConfig};

use self::check::{
    check_clean_after_heal, check_counters, check_keys, check_tenures, check_transcripts, Finals,
};
use self::history::{GateOp, GateRes, Handlings, Rec, Transcripts};
use self::workload::Client;
use crate::catalogue::membership::APP_ID;
use crate::checker::Report;
use crate::faults::{FaultKind, FaultSpace};
use crate::game_host::{self, SimGameOptions};
use crate::history::{Outcome, Recorder, TimeSource};
use crate::roles::LatestActor;
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, ServerCtx,
    ServerSpec, SqlSpec, Topology,
};

/// Gates and backends.
pub const GATES: usize = 3;
pub const BACKENDS: usize = 3;
const INSTANCES: usize = 2;
const LOGICAL_SHARDS: u32 = 8;
const CLIENTS: usize = 6;
/// Attempts of the final read of one row.
const FINAL_READ_ATTEMPTS: u32 = 10;

/// Player of client `i`.
pub fn player_of(i: usize) -> String {
    format!("p{i}")
}

/// The `n` of the add numbered `seq` (the same on every resend).
pub fn n_of(seq: u64) -> i64 {
    (seq % 5) as i64 + 1
}

const BUGS: &[PlantedBug] = &[
    PlantedBug {
        name: "forward-during-move",
        description: "the gate keeps forwarding during a switch and binds the target without waiting for the old backend",
        caught_within_seeds: 200,
    },
    PlantedBug {
        name: "no-player-fence",
        description: "backends host players without their anchor object and handle frames without checking they still host them",
        caught_within_seeds: 200,
    },
    PlantedBug {
        name: "release-before-drain",
        description: "a backend ends a released binding before its gated session handled the frames the gate saw acknowledged",
        caught_within_seeds: 200,
    },
    PlantedBug {
        name: "unchecked-session-key",
        description: "the gate logs a player in without checking the session key",
        caught_within_seeds: 200,
    },
];

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "fault: a SQL instance hit",
    "gate: session key refused",
    "gate: player moved between backends without a reconnect",
    "gate: player recovered on a new backend after a failure",
    "gate: bind call failed",
    "gate: forward outcome unknown, frame not repeated",
    "gate host: retransmitted bind answered again",
    "gate host: delivery refused, the gate routes the player elsewhere",
    "gate host: frame for a player not hosted here refused",
    "account: lease lapsed with links open",
    "orm: object lent by its owner",
    "rpc: calls retransmitted on a new connection",
    "session: client session expired (idle timeout)",
    "zk: session expired at the service",
];

const META: ScenarioMeta = ScenarioMeta {
    name: "gate_route",
    description: "players behind 3 gates moved between 3 backends without reconnecting, under gate and backend kills, pauses, partitions, loss, clock faults",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

pub struct GateRoute;

fn shard_config() -> ShardConfig {
    crate::sql_rig::round_robin_shards(INSTANCES, LOGICAL_SHARDS)
}

fn gate_bugs(bug: Option<&str>) -> GateBugs {
    GateBugs {
        forward_during_move: bug == Some("forward-during-move"),
        no_player_fence: bug == Some("no-player-fence"),
        unchecked_session_key: bug == Some("unchecked-session-key"),
        release_before_drain: bug == Some("release-before-drain"),
    }
}

fn servers() -> Vec<ServerSpec> {
    let mut specs = vec![ServerSpec {
        name: "login-0".into(),
        flavor: Some(Flavor::Login.to_string()),
        tags: Vec::new(),
    }];
    specs.extend((0..GATES).map(|i| ServerSpec {
        name: format!("gate-{i}"),
        flavor: Some(Flavor::Gate.to_string()),
        tags: vec![GATE_TAG.to_string()],
    }));
    specs.extend(game_host::game_servers(BACKENDS));
    specs
}

impl Scenario for GateRoute {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, _bug: Option<&str>) -> Topology {
        Topology {
            zookeeper: true,
            redis: Some(RedisSpec { persistent: true, stale_read_probability: 0.0 }),
            sql: Some(SqlSpec::new(INSTANCES)),
            servers: servers(),
            clients: CLIENTS,
        }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        FaultSpace::builder(topology, 12_000, 16_000)
            .liveness_bound_ms(15_000)
            // Up to 8 s: pauses and partitions longer than the 6 s session timeout.
            .faults(3, 10, 8_000)
            .kill(&[Nodes::Servers])
            .pause(&[Nodes::Servers])
            // gate <-> backend, backend <-> ZooKeeper, client <-> gate, server <-> SQL.
            .partition(&[Nodes::Servers, Nodes::Zk, Nodes::Clients, Nodes::Sql])
            .clock(&[Nodes::Servers, Nodes::Clients], 10_000, 20_000)
            .network()
            .weight(FaultKind::Kill, 4)
            .weight(FaultKind::CutLink, 3)
            // Pauses past the gate's forward timeout make it recover players elsewhere while
            // the paused backend still holds their frames.
            .weight(FaultKind::Pause, 6)
            // A backend hosting nobody tests little: aim half the pauses and kills at the
            // backend that handled a player's frame last. (Isolating it is no better than a
            // blind partition: its frames then never arrive to be mishandled.) An aimed pause
            // lasts past the gate's forward timeout (it recovers the players elsewhere) and
            // short of the backend's session timeout (so it resumes still registered, holding
            // frames for players it no longer hosts).
            .aim_lasting(FaultKind::Pause, &[ROLE_HOSTING], AIMED_PAUSE_MS.0, AIMED_PAUSE_MS.1)
            .aim(FaultKind::Kill, &[ROLE_HOSTING])
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run {
            bugs: gate_bugs(bug),
            rec: Recorder::new(now),
            transcripts: Transcripts::default(),
            handlings: Handlings::default(),
            conns: Arc::default(),
            servers: LatestActor::default(),
        })
    }
}

/// The role of the backend that reported the latest handling of a gated frame.
const ROLE_HOSTING: &str = "hosting-backend";

/// How long a pause aimed at [`ROLE_HOSTING`] lasts: between the gate's forward timeout
/// (`GatewayConfig::call_timeout`, 2 s) and the backends' ZooKeeper session timeout (the
/// default 6 s), with half a second of margin at each end.
const AIMED_PAUSE_MS: (u64, u64) = (2_500, 5_500);

struct Run {
    bugs: GateBugs,
    rec: Rec,
    transcripts: Transcripts,
    handlings: Handlings,
    conns: Arc<AtomicU64>,
    /// The servers' nodes (for [`ROLE_HOSTING`]).
    servers: LatestActor,
}

impl ScenarioRun for Run {
    fn role(&self, role: &str) -> Option<String> {
        self.handlings.latest_server().filter(|_| role == ROLE_HOSTING).and_then(|p| self.servers.node_of(p))
    }

    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views()
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let client = Client {
            ctx,
            rec: self.rec.clone(),
            transcripts: self.transcripts.clone(),
            conns: self.conns.clone(),
        };
        client.run().boxed()
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        self.servers.started(&ctx);
        let objects = ObjectsConfig { shard: shard_config(), orm: OrmConfig::new(APP_ID), observer: None };
        let observer = self.handlings.observer(ctx.process, ctx.phases.now.clone(), ctx.tap.clone());
        // Half the backend incarnations answer forwards at once (all output by `_gate.deliver`),
        // half hold the answer for the frame's output: both paths and their interleaving.
        let forward_answer_hold = if ctx.env.rand.next_u64().is_multiple_of(2) {
            Duration::ZERO
        } else {
            engine::gate::outflow::FORWARD_ANSWER_HOLD
        };
        let gateway = GatewayConfig {
            bugs: self.bugs,
            host_observer: Some(observer),
            forward_answer_hold,
            ..GatewayConfig::default()
        };
        let opts = SimGameOptions { objects: Some(objects), gateway, ..Default::default() };
        game_host::run_server(ctx, opts).boxed()
    }

    fn absorb(&self, evidence: crate::evidence::Evidence) -> bool {
        self.handlings.absorb(&evidence)
    }

    fn check(&self, env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let (rec, transcripts, handlings) =
            (self.rec.clone(), self.transcripts.clone(), self.handlings.clone());
        async move {
            let mut report = Report::default();
            let finals = final_counters(&env, &phases, &mut report).await;
            let history = rec.snapshot();
            let transcripts = transcripts.snapshot();
            report.merge(check_keys(&history));
            report.merge(check_counters(&history, &finals));
            report.merge(check_transcripts(&transcripts));
            report.merge(check_tenures(&handlings.snapshot()));
            report.merge(check_clean_after_heal(&history, &transcripts, &phases));
            report.merge(crate::checker::liveness_after_heal(&history, &phases, |_| true));
            for op in &history.ops {
                let kind = match &op.op {
                    GateOp::Login { .. } => "logins",
                    GateOp::BadKeyLogin { .. } => "bad_keys",
                    GateOp::Add { .. } => "adds",
                    GateOp::Move { .. } => "moves",
                };
                let outcome = match op.outcome() {
                    Outcome::Ok(GateRes::Counter { duplicate: true, .. }) => "duplicate",
                    Outcome::Ok(GateRes::Gap { .. }) => "gap",
                    Outcome::Ok(GateRes::Refused { .. }) => "refused",
                    Outcome::Ok(GateRes::KeyRejected) => "key_rejected",
                    Outcome::Ok(_) => "ok",
                    Outcome::Fail => "failed",
                    Outcome::Info => "unknown",
                };
                report.count(&format!("gate_route.{kind}_{outcome}"), 1);
            }
            report
        }
        .boxed()
    }
}

/// Every player's counter after the run, read from its SQL row through a fresh router.
async fn final_counters(env: &Env, phases: &Phases, report: &mut Report) -> Finals {
    let mut finals = Finals::new();
    let Some(router) = crate::sql_rig::final_router(env, APP_ID, shard_config(), phases, report).await else {
        return finals;
    };
    'players: for i in 0..CLIENTS {
        let player = player_of(i);
        for _ in 0..FINAL_READ_ATTEMPTS {
            let Ok(read) = read_committed(&router, &ObjectRef::of::<Counter>(&player)).await else {
                env.clock.sleep(Duration::from_millis(200)).await;
                continue;
            };
            let counter =
                read.value.filter(|v| !v.is_null()).and_then(|v| serde_json::from_value::<Counter>(v).ok());
            finals.insert(player, counter.map(|c| (c.value, c.last_seq)));
            continue 'players;
        }
        report.liveness_violation("final_read", format!("{player}: the counter row could not be read"));
    }
    router.stop();
    finals
}
