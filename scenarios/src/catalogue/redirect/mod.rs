//! `redirect`: clients moved between game servers with signed redirect tokens carrying
//! `extra_data` (the account manager's `redirect_client` / `_cs_redirect`, see
//! [`engine::account::token`]), under kills, pauses, partitions and clock faults.
//!
//! Three game servers. Every client incarnation owns one account (`r{process}`), so logins
//! never contend. A flow: connect to a random server, log in, ask `cs_redirect` to another
//! server with random `extra_data`, receive `_sc_redirect {host, port, token}` (the
//! connection then closes), and present the token at the target with `_cs_redirect`. Now and
//! then the genuine presentation is preceded or followed by an adversarial one:
//!
//! | kind | what is presented | expected |
//! |---|---|---|
//! | `Forged` | random hex of the token's length | rejected (bad signature) |
//! | `Tampered` | the token with one hex digit changed | rejected (bad signature) |
//! | `WrongServer` | the genuine token at a server other than its target | rejected (strict server-id check) |
//! | `Expired` | the genuine token after [`EXPIRED_WAIT`] | rejected (expired) |
//! | `Late` | the genuine token after a random wait around its expiry ([`LATE_WAIT`]) | either; rejected once past the checked limit |
//! | `Concurrent` | the genuine token on two connections at once | at most one succeeds |
//! | `Replay` | a token that already worked, after its account logged out | rejected (already used) |
//!
//! After a success the client stays a while (the server ticks it, see [`crate::acting`]),
//! sometimes probes that the account cannot log in elsewhere meanwhile, then logs out with
//! `cs_logout` or just disconnects.
//!
//! Invariants ([`check::check_redirect`], one function per rule in [`check`]):
//! 1. **single use** — every token is accepted at most once;
//! 2. **bad tokens** — forged, tampered and wrong-server presentations never succeed, nor does
//!    any token no redirect issued;
//! 3. **expiry** — no accept invoked later than `issue + TOKEN_TTL + CLOCK_SKEW_ALLOWANCE +
//!    wall skew` succeeds, where `issue` is when the client received the token and the wall
//!    skew is the spread of the servers' wall-clock offsets actually read during the run
//!    ([`WallLog`]: every wall-clock read of every server is observed, so the bound is exact,
//!    not a guess from the fault space — repeated clock jumps can stack beyond
//!    `clock_ms_max`);
//! 4. **right account, right place** — a successful accept returns exactly the account and
//!    `extra_data` of the redirect that issued the token, at the server that redirect named
//!    (and `_sc_redirect` points at that server);
//! 5. **logged in once** — the acting intervals of an account's login instances never overlap
//!    ([`check_acting`](crate::acting::check_acting)): the source stops acting before the target accepts, and a replay or a
//!    concurrent presentation never yields a second instance;
//! 6. **liveness** — after the heal every client completes a genuine redirect within the bound.
//!
//! Clock faults hit servers and clients (not ZooKeeper or Redis). The token's expiry is on
//! the issuer's wall clock and is checked on the target's, so skew and jumps between
//! servers move the true-time moment a token stops working; the checker accounts for the
//! measured spread, and [`EXPIRED_WAIT`] is long enough to be past it whenever every server
//! saw at most one skew or jump of [`CLOCK_MS_MAX`] (the `redirect.expired_past_limit`
//! counter says how many expired presentations really were past the checked limit).
//!
//! Planted bug `replayable-token`: the account manager does not consume the token's nonce,
//! so a token works again once its account has logged out (until it expires).
//!
//! Files: [`workload`] (the clients' flows), [`history`] (what the run records: operations,
//! the servers' wall-clock reads), [`check`] (the rules).

pub mod check;
pub mod history;
mod workload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine::account::token::CLOCK_SKEW_ALLOWANCE;
use engine::account::AccountBugs;
use engine::env::{Env, RandExt};
use futures::future::BoxFuture;
use futures::FutureExt;

pub use self::check::check_redirect;
use self::history::WatchedClock;
pub use self::history::{reject_reason, RedirectOp, RedirectRes, TokenKind, WallLog};
use crate::acting::ActLog;
use crate::checker::Report;
use crate::evidence::Evidence;
use crate::faults::FaultSpace;
use crate::game_host::{self, SimGameOptions};
use crate::history::{Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, ServerCtx,
    ServerDirectory, Topology,
};

const SERVERS: usize = 3;
const CLIENTS: usize = 6;
/// The servers' `redirect_token_ttl`: short, so that expiry is exercised within a run.
pub const TOKEN_TTL: Duration = Duration::from_secs(4);
/// Period of the servers' ticks (the acting evidence).
pub const TICK_PERIOD: Duration = Duration::from_millis(200);
/// Largest clock skew or jump of the fault space.
pub const CLOCK_MS_MAX: u64 = 3_000;
/// Largest monotonic drift of the fault space.
pub const DRIFT_PPM_MAX: u64 = 20_000;
const CHAOS_MS: u64 = 20_000;
/// Wall-clock error a node's drift can accumulate during the chaos (it stays after the heal:
/// clocks are healed continuously).
const DRIFT_MS_MAX: u64 = CHAOS_MS * DRIFT_PPM_MAX / 1_000_000;
/// Slack on the expiry limit. The bound is exact in ms arithmetic (see [`check_redirect`]);
/// this only guards against rounding.
pub const EXPIRY_MARGIN: Duration = Duration::from_millis(10);
/// How long an `Expired` presentation waits after the token arrived, on the client's clock:
/// TTL + the engine's allowance + the skew between two servers that each saw one skew/jump
/// and the most drift, + 1 s, stretched for a client clock running fast by the most drift.
pub const EXPIRED_WAIT: Duration = Duration::from_millis(
    (TOKEN_TTL.as_millis() as u64
        + CLOCK_SKEW_ALLOWANCE.as_millis() as u64
        + 2 * (CLOCK_MS_MAX + DRIFT_MS_MAX)
        + 1_000)
        * (1_000_000 + DRIFT_PPM_MAX)
        / 1_000_000,
);
/// The range of a `Late` presentation's wait: from 1 s before the expiry the engine applies
/// on a server with a perfect clock, to 1 s past what two skewed servers could allow. It
/// straddles the checked limit, so an engine accepting a little too late is caught too.
pub const LATE_WAIT: std::ops::Range<Duration> =
    Duration::from_millis(TOKEN_TTL.as_millis() as u64 + CLOCK_SKEW_ALLOWANCE.as_millis() as u64 - 1_000)
        ..Duration::from_millis(
            TOKEN_TTL.as_millis() as u64
                + CLOCK_SKEW_ALLOWANCE.as_millis() as u64
                + 2 * (CLOCK_MS_MAX + DRIFT_MS_MAX)
                + 1_000,
        );
const _: () = assert!(
    LATE_WAIT.start.as_millis() < LATE_WAIT.end.as_millis()
        && LATE_WAIT.end.as_millis() <= EXPIRED_WAIT.as_millis()
);
/// Chance that a genuine success is followed by a replay of its token.
const REPLAY_PROBABILITY: f64 = 0.4;
/// Chance that a held redirected login is probed by a login of the same account elsewhere.
const PROBE_PROBABILITY: f64 = 0.15;

const BUGS: &[PlantedBug] = &[PlantedBug {
    name: "replayable-token",
    description:
        "the account manager does not consume redirect-token nonces: a token works again after logout",
    caught_within_seeds: 3,
}];

pub struct RedirectScenario;

fn server_name(i: usize) -> String {
    format!("game-{i}")
}

/// The server name of `addr`, or the address itself.
fn name_of(servers: &ServerDirectory, addr: SocketAddr) -> String {
    servers.index_of(addr).map(server_name).unwrap_or_else(|| addr.to_string())
}

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "account: login claim maybe applied, read back",
    "redirect: expired token refused",
    "redirect: forged token refused",
    "redirect: replayed token refused",
    "redirect: token for another server refused",
    "cluster: view stale until a reload succeeds",
    "zk: session expired at the service",
];

/// Checked on the clients' history; servers' acts and wall-clock reads arrive as evidence,
/// so it runs live too.
const META: ScenarioMeta = ScenarioMeta {
    name: "redirect",
    description: "clients redirected between game servers with extra_data; forged, tampered, expired, wrong-server and replayed tokens",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

impl Scenario for RedirectScenario {
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
        FaultSpace::builder(topology, CHAOS_MS, 30_000)
            .liveness_bound_ms(20_000)
            .faults(2, 8, 6_000)
            .kill(&[Nodes::Servers, Nodes::Clients, Nodes::Redis])
            .pause(&[Nodes::All])
            .partition(&[Nodes::All])
            .clock(&[Nodes::Servers, Nodes::Clients], CLOCK_MS_MAX as i64, DRIFT_PPM_MAX as i64)
            .network()
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run {
            replayable: bug == Some("replayable-token"),
            rec: Recorder::new(now),
            acts: ActLog::default(),
            walls: WallLog::default(),
        })
    }
}

#[derive(Clone)]
struct Run {
    replayable: bool,
    rec: Recorder<RedirectOp, RedirectRes>,
    acts: ActLog,
    walls: WallLog,
}

impl ScenarioRun for Run {
    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views()
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let run = self.clone();
        async move {
            let account = format!("r{}", ctx.process);
            // One operation: a flow (login, redirect, presentations at the target).
            while !ctx.phases.finished() && ctx.budget.take() {
                run.flow(&ctx, &account).await;
                ctx.env.clock.sleep(Duration::from_millis(ctx.env.rand.gen_range(50..400))).await;
            }
        }
        .boxed()
    }

    fn server(&self, mut ctx: ServerCtx) -> BoxFuture<'static, ()> {
        ctx.env.clock = Arc::new(WatchedClock {
            inner: ctx.env.clock.clone(),
            now: ctx.phases.now.clone(),
            log: self.walls.clone(),
            tap: ctx.tap.clone(),
        });
        let opts = SimGameOptions {
            account_bugs: AccountBugs { replayable_token: self.replayable, ..Default::default() },
            tick_period: Some(TICK_PERIOD),
            observer: Some(self.acts.observer(ctx.process, ctx.phases.now.clone(), ctx.tap.clone())),
            redirect_token_ttl: Some(TOKEN_TTL),
            ..Default::default()
        };
        game_host::run_server(ctx, opts).boxed()
    }

    fn absorb(&self, evidence: Evidence) -> bool {
        match evidence {
            Evidence::WallRead { wall_ms, t_ns } => {
                self.walls.record(wall_ms, t_ns);
                true
            }
            other => self.acts.absorb(&other),
        }
    }

    fn check(&self, _env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let history = self.rec.snapshot();
        let acts = self.acts.snapshot();
        let (skew, reads) = self.walls.spread();
        async move {
            let mut report = check_redirect(&history, &acts, skew, &phases);
            report.count("redirect.wall_reads", reads);
            report
        }
        .boxed()
    }
}
