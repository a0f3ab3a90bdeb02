//! `login_unique`: cluster-unique login through the account manager, under partitions
//! (server <-> ZooKeeper above all), pauses, kills and clock faults.
//!
//! Three game servers, three accounts (one whose id needs escaping in ZooKeeper: [`account`]),
//! six clients: clients keep logging the accounts in on random servers (often the same
//! account at once on different servers), hold them for a while, then log out or just
//! disconnect. Servers send every logged-in account a tick every
//! [`TICK_PERIOD`] while they may act for it, and report each login and tick
//! ([`crate::acting`]).
//!
//! Invariants:
//! - **safety (fencing)** — for every account, the acting intervals of different login
//!   instances never overlap in true time ([`check_acting`]): a server cut off from
//!   ZooKeeper stops acting for its accounts before the service can expire its session and
//!   let another server log them in.
//! - **liveness (nothing stuck)** — after the heal and a quiet period in which every client
//!   but one per account has gone, that client logs its account in within the bound: no
//!   rejected, interrupted or fenced login left the account logged in nowhere.
//!
//! Planted bug `no-fencing`: the account manager ignores its lease (links stay open until
//! the expiry is learned), so a partitioned server keeps acting while another logs the
//! account in.

use std::sync::Arc;
use std::time::Duration;

use engine::account::AccountBugs;
use engine::env::{Env, RandExt};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::acting::{check_acting, ActLog};
use crate::checker::Report;
use crate::evidence::Evidence;
use crate::faults::{FaultKind, FaultSpace};
use crate::game_client::{is_error, GameClient, ReqError};
use crate::game_host::{self, SimGameOptions};
use crate::history::{History, Outcome, Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, ServerCtx, Topology,
};

const SERVERS: usize = 3;
const ACCOUNTS: usize = 3;
const CLIENTS: usize = 6;
/// Period of the servers' ticks (the acting evidence).
pub const TICK_PERIOD: Duration = Duration::from_millis(200);
/// After the heal, clients stop churning at `heal + CHURN_AFTER_HEAL`...
const CHURN_AFTER_HEAL: Duration = Duration::from_secs(1);
/// ...and the final logins start at `heal + QUIET`: long enough for a killed client's
/// session to time out (6 s idle) and a killed server's ZooKeeper session to expire (6 s).
const QUIET: Duration = Duration::from_secs(14);

const BUGS: &[PlantedBug] = &[PlantedBug {
    name: "no-fencing",
    description: "the account manager ignores its coordination lease: partitioned servers keep acting",
    caught_within_seeds: 100,
}];

/// An operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginOp {
    /// A login during the churn.
    Login { server: String, account: String },
    /// `cs_logout` of a held login.
    Logout { server: String, account: String },
    /// The post-heal login of the account's designated client.
    FinalLogin { server: String, account: String },
}

/// What a login answered: `Ok(Refused)` is a definite "already logged in" / server error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginRes {
    LoggedIn,
    Refused(String),
    LoggedOut,
}

pub struct LoginUnique;

/// The contended accounts: `acct-0`, `acct-1`, and one whose id is not its own znode name
/// (a `/`, a space and an emoji: `engine::keyname` escapes it), so the escaped path runs under
/// the faults too.
fn account(i: usize) -> String {
    match i {
        2 => "acct/2 😀".to_string(),
        _ => format!("acct-{i}"),
    }
}

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "account: coordination session expired",
    "account: lease lapsed with links open",
    "account: login claim maybe applied, read back",
    "account: login refused, logged in elsewhere",
    "cluster: view stale until a reload succeeds",
    "zk: re-registered watches fired for changes missed while disconnected",
    "zk: session expired at the service",
];

/// Checked on the clients' history; servers' acts arrive as evidence, so it runs live too.
const META: ScenarioMeta = ScenarioMeta {
    name: "login_unique",
    description: "cluster-unique, fenced login of contended accounts under ZooKeeper partitions, pauses, kills, clock faults",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

impl Scenario for LoginUnique {
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
        FaultSpace::builder(topology, 25_000, 40_000)
            .liveness_bound_ms(15_000)
            // Longer than the session timeout, so partitions and pauses expire sessions.
            .faults(3, 8, 12_000)
            .kill(&[Nodes::Servers, Nodes::Clients])
            .pause(&[Nodes::Servers, Nodes::Zk])
            // Servers and ZooKeeper only: cuts between a server and the service, with the
            // server's clients still attached, are what fencing is about.
            .partition(&[Nodes::Servers, Nodes::Zk])
            // Drift on ZooKeeper too: the lease must cover the service's clock error as well
            // (20 000 ppm each side stays within the manager's 5 % bound).
            .clock(&[Nodes::Servers, Nodes::Zk, Nodes::Clients], 10_000, 20_000)
            .network()
            .weight(FaultKind::CutLink, 6)
            .weight(FaultKind::Partition, 4)
            .weight(FaultKind::PartitionOneWay, 3)
            // A pause tests fencing only if it stops a server that is acting for an account.
            .aim(FaultKind::Pause, &[ROLE_ACTING])
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run {
            no_fencing: bug == Some("no-fencing"),
            rec: Recorder::new(now),
            acts: ActLog::default(),
        })
    }
}

/// ZooKeeper's smallest session timeout at its default tick (2 × tickTime): the servers' leases
/// follow it, so a cut from the service longer than this deposes a server.
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);

/// The role of the server that reported the latest act (a login or a tick).
const ROLE_ACTING: &str = "acting-server";

struct Run {
    no_fencing: bool,
    rec: Recorder<LoginOp, LoginRes>,
    acts: ActLog,
}

impl Run {
    /// Logs `account` in on server `si`; the open client if it worked.
    async fn login(&self, ctx: &ClientCtx, si: usize, account: &str, fin: bool) -> Option<GameClient> {
        let env = &ctx.env;
        let mut c = GameClient::connect(env, ctx.phases.now.clone(), ctx.servers.addr(si)).await?;
        let (server, account) = (format!("game-{si}"), account.to_string());
        let op = if fin {
            LoginOp::FinalLogin { server, account: account.clone() }
        } else {
            LoginOp::Login { server, account: account.clone() }
        };
        let h = self.rec.invoke(ctx.process, op);
        match c.request("cs_game_server_login", json!({ "user_name": account }), "sc_game_server_login").await
        {
            Ok(v) if !is_error(&v) => {
                self.rec.ok(h, LoginRes::LoggedIn);
                Some(c)
            }
            Ok(v) => {
                let why = v.get("error_message").and_then(|m| m.as_str()).unwrap_or("?").to_string();
                self.rec.ok(h, LoginRes::Refused(why));
                None
            }
            Err(ReqError::Lost | ReqError::Closed | ReqError::Error(_)) => {
                self.rec.info(h);
                None
            }
        }
    }

    /// Holds a login for a while, then logs out or just goes away.
    async fn hold(&self, ctx: &ClientCtx, mut c: GameClient, si: usize, account: &str) {
        let env = &ctx.env;
        // Mostly short holds (contention), sometimes long ones that outlast a session
        // timeout (what a partitioned server must stop acting for).
        let hold_ms = if env.rand.gen_bool(0.5) {
            env.rand.gen_range(6_000..20_000)
        } else {
            env.rand.gen_range(300..3_000)
        };
        let hold = Duration::from_millis(hold_ms);
        if !c.pump(hold).await {
            return; // closed by the server (e.g. coordination lost)
        }
        drop(c.take_inbox());
        if env.rand.gen_bool(0.5) {
            let op = LoginOp::Logout { server: format!("game-{si}"), account: account.to_string() };
            let h = self.rec.invoke(ctx.process, op);
            match c.request("cs_logout", json!({}), "sc_logout").await {
                Ok(v) if !is_error(&v) => self.rec.ok(h, LoginRes::LoggedOut),
                Ok(_) => self.rec.fail(h),
                Err(_) => self.rec.info(h),
            }
        }
    }

    async fn churn(&self, ctx: &ClientCtx, stop_at: Duration) {
        let env = &ctx.env;
        // One operation: a login (held for a while, then logged out or abandoned). The final
        // login after the heal is the liveness probe and takes nothing.
        while ctx.phases.elapsed() < stop_at && ctx.budget.take() {
            let ai = env.rand.gen_range(0..ACCOUNTS as u64) as usize;
            let si = env.rand.gen_range(0..SERVERS as u64) as usize;
            let acct = account(ai);
            if let Some(c) = self.login(ctx, si, &acct, false).await {
                self.hold(ctx, c, si, &acct).await;
            }
            env.clock.sleep(Duration::from_millis(env.rand.gen_range(50..600))).await;
        }
    }

    /// The designated client's post-heal login: retried until it works or the run ends.
    async fn final_login(&self, ctx: &ClientCtx, ai: usize) {
        let env = &ctx.env;
        let acct = account(ai);
        while !ctx.phases.finished() {
            let si = env.rand.gen_range(0..SERVERS as u64) as usize;
            if let Some(mut c) = self.login(ctx, si, &acct, true).await {
                // Stay: the account is held until the end (ticks keep the acting log going).
                while !ctx.phases.finished() && c.pump(Duration::from_secs(1)).await {
                    drop(c.take_inbox());
                }
                return;
            }
            env.clock.sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn sleep_until_elapsed(env: &Env, phases: &Phases, at: Duration) {
    let left = at.saturating_sub(phases.elapsed());
    if !left.is_zero() {
        env.clock.sleep(left).await;
    }
}

impl ScenarioRun for Run {
    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views()
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let run = Run { no_fencing: self.no_fencing, rec: self.rec.clone(), acts: self.acts.clone() };
        async move {
            let heal = ctx.phases.heal_at;
            run.churn(&ctx, heal + CHURN_AFTER_HEAL).await;
            if ctx.index < ACCOUNTS {
                sleep_until_elapsed(&ctx.env, &ctx.phases, heal + QUIET).await;
                run.final_login(&ctx, ctx.index).await;
            }
        }
        .boxed()
    }

    fn role(&self, role: &str) -> Option<String> {
        self.acts.actors().node().filter(|_| role == ROLE_ACTING)
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        self.acts.actors().started(&ctx);
        let opts = SimGameOptions {
            account_bugs: AccountBugs { no_fencing: self.no_fencing, ..Default::default() },
            zk_session_timeout: Some(SESSION_TIMEOUT),
            tick_period: Some(TICK_PERIOD),
            observer: Some(self.acts.observer(ctx.process, ctx.phases.now.clone(), ctx.tap.clone())),
            ..Default::default()
        };
        game_host::run_server(ctx, opts).boxed()
    }

    fn absorb(&self, evidence: Evidence) -> bool {
        self.acts.absorb(&evidence)
    }

    fn check(&self, _env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let history = self.rec.snapshot();
        let acts = self.acts.snapshot();
        async move {
            let mut report = check_acting(&acts);
            report.merge(check_final_logins(&history, &phases));
            report
        }
        .boxed()
    }
}

/// Liveness: every account's designated client logged it in within the bound after the
/// quiet period. Counters: `logins_ok`, `logins_refused`, `logins_unknown`.
pub fn check_final_logins(history: &History<LoginOp, LoginRes>, phases: &Phases) -> Report {
    let mut report = Report::default();
    let start = (phases.heal_at + QUIET).as_nanos() as u64;
    let bound = phases.liveness_bound.as_nanos() as u64;
    for op in &history.ops {
        match (&op.op, op.outcome()) {
            (LoginOp::Login { .. } | LoginOp::FinalLogin { .. }, Outcome::Ok(LoginRes::LoggedIn)) => {
                report.count("logins_ok", 1)
            }
            (LoginOp::Login { .. } | LoginOp::FinalLogin { .. }, Outcome::Ok(LoginRes::Refused(_))) => {
                report.count("logins_refused", 1)
            }
            (LoginOp::Login { .. } | LoginOp::FinalLogin { .. }, _) => report.count("logins_unknown", 1),
            _ => {}
        }
    }
    for ai in 0..ACCOUNTS {
        let acct = account(ai);
        let done = history.ops.iter().find_map(|op| match (&op.op, &op.completion) {
            (LoginOp::FinalLogin { account, .. }, Some((t, Outcome::Ok(LoginRes::LoggedIn))))
                if *account == acct =>
            {
                Some(*t)
            }
            _ => None,
        });
        match done {
            Some(t) if t <= start + bound => {}
            Some(t) => report.liveness_violation(
                "liveness",
                format!(
                    "{acct}: logged in only {:.3}s after the quiet period (bound {:.1}s)",
                    (t - start) as f64 / 1e9,
                    bound as f64 / 1e9
                ),
            ),
            None => {
                let refusals: Vec<String> = history
                    .ops
                    .iter()
                    .filter_map(|op| match (&op.op, op.outcome()) {
                        (LoginOp::FinalLogin { account, server }, Outcome::Ok(LoginRes::Refused(why)))
                            if *account == acct =>
                        {
                            Some(format!("{server}: {why}"))
                        }
                        _ => None,
                    })
                    .take(3)
                    .collect();
                report.liveness_violation(
                    "liveness",
                    format!(
                        "{acct}: never logged in again after the heal (stuck logged in nowhere?); first refusals: {refusals:?}"
                    ),
                )
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Recorder;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn phases(now: TimeSource) -> Phases {
        Phases {
            now,
            heal_at: Duration::from_secs(10),
            end_at: Duration::from_secs(60),
            liveness_bound: Duration::from_secs(5),
        }
    }

    fn clock() -> (Arc<AtomicU64>, TimeSource) {
        let t = Arc::new(AtomicU64::new(0));
        let t2 = t.clone();
        (t, Arc::new(move || t2.load(Ordering::SeqCst)))
    }

    fn final_login(rec: &Recorder<LoginOp, LoginRes>, t: &AtomicU64, ai: usize, at_s: u64, res: LoginRes) {
        t.store(at_s * 1_000_000_000, Ordering::SeqCst);
        let h = rec.invoke(ai as u64, LoginOp::FinalLogin { server: "game-0".into(), account: account(ai) });
        rec.ok(h, res);
    }

    #[test]
    fn all_final_logins_in_time_pass() {
        let (t, now) = clock();
        let rec = Recorder::new(now.clone());
        for ai in 0..ACCOUNTS {
            final_login(&rec, &t, ai, 25, LoginRes::LoggedIn);
        }
        let r = check_final_logins(&rec.snapshot(), &phases(now));
        assert!(r.ok(), "{:?}", r.violations);
    }

    #[test]
    fn an_account_stuck_logged_in_nowhere_is_caught() {
        let (t, now) = clock();
        let rec = Recorder::new(now.clone());
        final_login(&rec, &t, 0, 25, LoginRes::LoggedIn);
        final_login(&rec, &t, 1, 25, LoginRes::LoggedIn);
        final_login(&rec, &t, 2, 25, LoginRes::Refused("Already logged in".into()));
        let r = check_final_logins(&rec.snapshot(), &phases(now.clone()));
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].message.contains(&account(2)), "{}", r.violations[0].message);
        // Late is caught too (quiet period ends at 24 s, bound 5 s).
        final_login(&rec, &t, 2, 30, LoginRes::LoggedIn);
        let r = check_final_logins(&rec.snapshot(), &phases(now));
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].message.contains("after the quiet period"));
    }
}
