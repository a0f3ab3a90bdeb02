//! `broadcast`: the reference game's messaging (the `game` crate, hosted by [`crate::game_host`]) under chaos. Every client
//! owns one stable account `b{index}`; it logs in on a random game server, stays connected
//! reading what the server pushes, and now and then sends `cs_broadcast` (scope `local` or
//! `global`) or `cs_send` to another client's account, each message carrying a globally unique
//! id (`{"id": "p<process>-<n>"}`). Sessions end with `cs_logout` (then the client keeps
//! reading a little) or a plain disconnect; a refused login (the account is still logged in
//! elsewhere, e.g. by a killed predecessor whose session has not timed out yet) is also read
//! from for a while before the client retries. Now and then a connection *probes*: it logs in
//! as another client's account (usually refused, since that client is logged in; if not, it
//! logs straight out again). An `_error` answer instead of a reply makes the client give
//! the connection up (it cannot tell what the error answered). The servers send every
//! logged-in account an `sc_tick` every [`TICK_PERIOD`], only while they hold their
//! coordination lease; a client that hears none for a while gives the connection up.
//!
//! The history has three parts: the operations (login, broadcast, send, logout: invoke / ok /
//! fail / info in true time), the sessions (one per client connection, with the login's and
//! the logout's reply position in the connection's frame order), and every receipt (message
//! id, arrival time, position).
//!
//! Invariants (one function per rule in [`check`]; [`check::check_broadcast`] runs 1–4):
//! 1. **no duplicates** — a session receives a message id at most once, and a send-to-account
//!    id is received at most once by anyone.
//! 2. **logged-in only** — nothing (broadcast, message or tick) arrives on a session before
//!    its login reply or after its logout reply, nor on a session whose login was refused.
//! 3. **completeness** — after the heal (plus [`SETTLE`]), every broadcast (and send) that
//!    completed ok reached every session *proven* logged in throughout it: see
//!    [`check::check_completeness`] for the exact, conservative definition (a safety rule:
//!    what it reports is a message proven lost).
//! 4. **no phantoms** — every received message matches an invoked operation: same kind, same
//!    sender account, the addressee's account for a send, the broadcaster's server for a local
//!    broadcast, and not before its invocation.
//! 5. **liveness** — after the heal every client completes an operation within the bound.
//!
//! Planted bug `dup-delivery` ([`engine::account::AccountBugs::dup_delivery`]): a global
//! broadcast reaches the broadcaster's own server's accounts twice (rule 1).
//!
//! Files: [`workload`] (a client's connections), [`history`] (operations, sessions,
//! receipts), [`check`] (the rules).

pub mod check;
pub mod history;
mod workload;

use std::sync::Arc;
use std::time::Duration;

use engine::account::AccountBugs;
use engine::env::Env;
use futures::future::BoxFuture;
use futures::FutureExt;

pub use self::check::{check_broadcast, check_liveness};
use self::history::SessionLog;
pub use self::history::{
    BOp, BRes, BroadcastHistory, EndKind, LoginState, Receipt, Received, Scope, SessionKey, SessionRec,
};
use crate::checker::Report;
use crate::faults::FaultSpace;
use crate::game_host::{self, SimGameOptions};
use crate::history::{Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, ServerCtx, Topology,
};

const CLIENTS: usize = 8;
const SERVERS: usize = 3;
/// How often a server sends each logged-in account an `sc_tick` (the proof of being logged
/// in that completeness relies on).
pub const TICK_PERIOD: Duration = Duration::from_millis(500);
/// Completeness covers operations invoked this long after the heal (restarted servers have
/// rejoined, stale registrations of killed ones have expired, clients are back).
pub const SETTLE: Duration = Duration::from_secs(8);
/// Upper bound on the one-way trip from a server to a client after the heal (generous: the
/// healed network's latency is milliseconds).
pub const DELIVERY_BOUND: Duration = Duration::from_secs(1);
/// A receiver on another server than the sender's must have been logged in this long before
/// the invocation (for the sender's server to see the receiver's in its cluster view or its
/// login record in ZooKeeper).
pub const VIEW_MARGIN: Duration = Duration::from_secs(1);
/// How often a new connection logs in as another client's account (see `Run::session`).
const PROBE_PROBABILITY: f64 = 0.15;
/// A logged-in client that hears no tick for this long gives up on the connection.
const STALE_AFTER: Duration = Duration::from_secs(4);

const BUGS: &[PlantedBug] = &[PlantedBug {
    name: "dup-delivery",
    description:
        "a global broadcast also calls the broadcaster's own server over RPC: its accounts get it twice",
    caught_within_seeds: 5,
}];

pub struct BroadcastScenario;

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "account: lease lapsed with links open",
    "account: login claim maybe applied, read back",
    "rpc: calls retransmitted on a new connection",
    "rpc: duplicate of a finished call answered from the dedupe window",
    "rpc: connection for an older incarnation fenced",
    "cluster: session expired, re-registering under the same id",
    "zk: session expired at the service",
];

/// Checked on the clients' history and receipts only, so it runs live too.
const META: ScenarioMeta = ScenarioMeta {
    name: "broadcast",
    description: "reference game: local/global broadcasts and send-to-account: no duplicates, logged-in sessions only, complete after the heal",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

impl Scenario for BroadcastScenario {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, _bug: Option<&str>) -> Topology {
        Topology {
            zookeeper: true,
            redis: Some(RedisSpec { persistent: true, stale_read_probability: 0.0 }),
            sql: None,
            servers: game_host::game_servers(SERVERS),
            clients: CLIENTS,
        }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        FaultSpace::builder(topology, 20_000, 30_000)
            .liveness_bound_ms(20_000)
            .faults(2, 8, 6_000)
            .kill(&[Nodes::Servers, Nodes::Clients, Nodes::Redis])
            .pause(&[Nodes::All])
            .partition(&[Nodes::All])
            // Not zk: the fencing lease assumes the coordination service measures its session
            // timeouts on a correct clock.
            .clock(&[Nodes::Servers, Nodes::Clients, Nodes::Redis], 10_000, 20_000)
            .network()
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        let account_bugs = AccountBugs { dup_delivery: bug == Some("dup-delivery"), ..Default::default() };
        Arc::new(Run { account_bugs, rec: Recorder::new(now.clone()), log: SessionLog::default(), now })
    }
}

#[derive(Clone)]
struct Run {
    account_bugs: AccountBugs,
    rec: Recorder<BOp, BRes>,
    log: SessionLog,
    now: TimeSource,
}

impl ScenarioRun for Run {
    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views()
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let run = self.clone();
        async move { run.client_loop(ctx).await }.boxed()
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        let opts = SimGameOptions {
            account_bugs: self.account_bugs,
            tick_period: Some(TICK_PERIOD),
            ..Default::default()
        };
        game_host::run_server(ctx, opts).boxed()
    }

    fn check(&self, _env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let (sessions, receipts) = self.log.snapshot();
        let history = BroadcastHistory { ops: self.rec.snapshot(), sessions, receipts };
        async move {
            let mut report = check_broadcast(&history, &phases);
            report.merge(check_liveness(&history, &phases));
            report
        }
        .boxed()
    }
}
