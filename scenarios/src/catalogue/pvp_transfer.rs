//! `pvp_transfer`: the seed's reference game (the `game` crate, hosted by [`crate::game_host`]) under chaos. Clients log in
//! on a game server, enter pvp (receiving a one-shot authentication key valid for 10 s) and
//! transfer to the named pvp server with the key; now and then they also try forged keys,
//! altered keys (one hex digit flipped), replays of a key that already worked, and keys held
//! past their expiry.
//!
//! Invariants:
//! - **safety** — a transfer succeeds only with a key some `cs_enter_pvp` issued, returns
//!   exactly the `{user_name, level}` stored for it, succeeds at most once per key, and is not
//!   invoked later than 10 s + [`EXPIRY_ALLOWANCE`] after the key was issued. TTLs follow the
//!   Redis node's clock: clock faults are restricted to server and client nodes here.
//! - **liveness** — after the heal every client completes a genuine transfer within the bound.
//!
//! Redis is not persistent: a Redis restart loses keys (transfers then fail, which is allowed)
//! and users (recreated at level 1, the only level there is).
//!
//! Planted bug `reuse-key`: the pvp server reads the key instead of taking it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use engine::env::{Env, RandExt};
use futures::future::BoxFuture;
use futures::FutureExt;
use game::{GameBugs, AUTH_KEY_TTL};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checker::Report;
use crate::faults::FaultSpace;
use crate::game_client::{is_error, GameClient, ReqError};
use crate::game_host::{self, SimGameOptions};
use crate::history::{History, OpHandle, Outcome, Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, ServerCtx,
    ServerSpec, Topology,
};

const CLIENTS: usize = 6;
/// Slack on the 10 s expiry: simulated timer granularity and Redis's lazy expiry.
pub const EXPIRY_ALLOWANCE: Duration = Duration::from_millis(500);

const BUGS: &[PlantedBug] = &[PlantedBug {
    name: "reuse-key",
    description: "the pvp server reads the auth key instead of taking it (keys can be reused)",
    caught_within_seeds: 10,
}];

/// How a transfer's key came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyKind {
    /// The key just issued, used once, in time.
    Genuine,
    /// A key that already succeeded, used again.
    Replay,
    /// A random UUID.
    Forged,
    /// The issued key with one hex digit changed.
    Altered,
    /// The issued key, used after waiting past its expiry.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GameOp {
    Login {
        server: String,
        user: String,
    },
    /// `level` is what the login answered: the value the key must carry.
    Enter {
        server: String,
        user: String,
        level: i64,
    },
    Transfer {
        server: String,
        key: String,
        kind: KeyKind,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GameRes {
    Login { level: i64 },
    Enter { key: String },
    Transfer { user: String, level: i64 },
}

pub struct PvpTransfer;

fn servers() -> Vec<ServerSpec> {
    ["game-0", "game-1", "pvp-2", "pvp-3"]
        .iter()
        .map(|n| {
            let flavor = n.split('-').next().expect("flavor").to_string();
            ServerSpec { name: n.to_string(), flavor: Some(flavor.clone()), tags: vec![flavor] }
        })
        .collect()
}

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "account: login claim maybe applied, read back",
    "account: login refused, logged in elsewhere",
    "cluster: view stale while disconnected",
    "cluster: view stale until a reload succeeds",
    "redis client: outcome unknown (maybe applied)",
    "zk: session expired at the service",
];

/// Checked on the clients' history only, so it runs live too.
const META: ScenarioMeta = ScenarioMeta {
    name: "pvp_transfer",
    description: "reference game: login, enter pvp, transfer with a one-shot 10 s auth key under chaos",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

impl Scenario for PvpTransfer {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, _bug: Option<&str>) -> Topology {
        Topology {
            zookeeper: true,
            redis: Some(RedisSpec { persistent: false, stale_read_probability: 0.0 }),
            sql: None,
            servers: servers(),
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
            // Not zk/redis: Redis TTLs follow the Redis node's clock (see the module docs).
            .clock(&[Nodes::Servers, Nodes::Clients], 10_000, 20_000)
            .network()
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run { bugs: GameBugs { reuse_key: bug == Some("reuse-key") }, rec: Recorder::new(now) })
    }
}

struct Run {
    bugs: GameBugs,
    rec: Recorder<GameOp, GameRes>,
}

/// A request without an answer may still have taken effect.
fn complete_lost(rec: &Recorder<GameOp, GameRes>, h: OpHandle, _e: ReqError) {
    rec.info(h);
}

/// The key with one hex digit changed.
fn alter(key: &str, env: &Env) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let hex: Vec<usize> = (0..chars.len()).filter(|&i| chars[i].is_ascii_hexdigit()).collect();
    if let Some(&i) = env.rand.choose(&hex) {
        let d = chars[i].to_digit(16).unwrap_or(0);
        let nd = (d + 1 + env.rand.gen_range(0..15) as u32) % 16;
        chars[i] = std::char::from_digit(nd, 16).unwrap_or('0');
    }
    chars.into_iter().collect()
}

impl Run {
    async fn transfer(
        &self,
        c: &mut GameClient,
        process: u64,
        server: &str,
        key: &str,
        kind: KeyKind,
    ) -> bool {
        let h = self.rec.invoke(process, GameOp::Transfer { server: server.into(), key: key.into(), kind });
        match c.request("cs_transfer_pvp_server", json!({ "auth_key": key }), "sc_transfer_pvp_server").await
        {
            Ok(v) if !is_error(&v) => {
                let user = v.get("user_name").and_then(Value::as_str).unwrap_or("").to_string();
                let level = v.get("level").and_then(Value::as_i64).unwrap_or(-1);
                self.rec.ok(h, GameRes::Transfer { user, level });
                true
            }
            Ok(_) => {
                self.rec.fail(h);
                false
            }
            Err(e) => {
                complete_lost(&self.rec, h, e);
                false
            }
        }
    }

    /// One login -> enter pvp -> transfer flow (plus the odd bad key).
    async fn flow(&self, ctx: &ClientCtx, user: &str) {
        let env = &ctx.env;
        let p = ctx.process;
        let gi = env.rand.gen_range(0..2) as usize;
        let game_name = format!("game-{gi}");
        let Some(mut g) = GameClient::connect(env, ctx.phases.now.clone(), ctx.servers.addr(gi)).await else {
            return;
        };
        let h = self.rec.invoke(p, GameOp::Login { server: game_name.clone(), user: user.into() });
        let level = match g
            .request("cs_game_server_login", json!({ "user_name": user }), "sc_game_server_login")
            .await
        {
            Ok(v) if !is_error(&v) => {
                let level = v.get("level").and_then(Value::as_i64).unwrap_or(-1);
                self.rec.ok(h, GameRes::Login { level });
                level
            }
            Ok(_) => return self.rec.fail(h),
            Err(e) => return complete_lost(&self.rec, h, e),
        };
        let h = self.rec.invoke(p, GameOp::Enter { server: game_name.clone(), user: user.into(), level });
        let (key, addr) = match g.request("cs_enter_pvp", json!({}), "sc_enter_pvp").await {
            Ok(v) if !is_error(&v) => {
                let key = v.get("auth_key").and_then(Value::as_str).unwrap_or("").to_string();
                self.rec.ok(h, GameRes::Enter { key: key.clone() });
                let ip =
                    v.get("pvp_server_ip").and_then(Value::as_str).and_then(|s| s.parse::<IpAddr>().ok());
                let port = v.get("pvp_server_port").and_then(Value::as_u64);
                match (ip, port) {
                    (Some(ip), Some(port)) => (key, SocketAddr::new(ip, port as u16)),
                    _ => return,
                }
            }
            Ok(_) => return self.rec.fail(h),
            Err(e) => return complete_lost(&self.rec, h, e),
        };
        drop(g);
        let mode = env.rand.gen_range(0..10);
        if mode == 2 && !ctx.phases.healed() {
            // Hold the key past its expiry.
            env.clock.sleep(AUTH_KEY_TTL + Duration::from_millis(env.rand.gen_range(1_000..2_000))).await;
        }
        let pvp_name = addr.ip().to_string();
        let Some(mut c) = GameClient::connect(env, ctx.phases.now.clone(), addr).await else { return };
        if mode == 0 {
            let forged = env.rand.uuid().to_string();
            self.transfer(&mut c, p, &pvp_name, &forged, KeyKind::Forged).await;
        } else if mode == 1 {
            let altered = alter(&key, env);
            self.transfer(&mut c, p, &pvp_name, &altered, KeyKind::Altered).await;
        }
        let kind = if mode == 2 && !ctx.phases.healed() { KeyKind::Expired } else { KeyKind::Genuine };
        let ok = self.transfer(&mut c, p, &pvp_name, &key, kind).await;
        if ok {
            // Stay in the "room" a little (room_count), maybe replay the key meanwhile.
            env.clock.sleep(Duration::from_millis(env.rand.gen_range(0..1_500))).await;
            if env.rand.gen_bool(0.3) {
                self.transfer(&mut c, p, &pvp_name, &key, KeyKind::Replay).await;
            }
        }
    }
}

impl ScenarioRun for Run {
    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views()
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let run = Run { bugs: self.bugs, rec: self.rec.clone() };
        async move {
            let user = format!("u{}", ctx.process);
            // One operation: a flow (login, enter pvp, transfers with good and bad keys).
            while !ctx.phases.finished() && ctx.budget.take() {
                run.flow(&ctx, &user).await;
                ctx.env.clock.sleep(Duration::from_millis(ctx.env.rand.gen_range(50..400))).await;
            }
        }
        .boxed()
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        game_host::run_server(ctx, SimGameOptions { bugs: self.bugs, ..Default::default() }).boxed()
    }

    fn check(&self, _env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let history = self.rec.snapshot();
        async move { check_pvp(&history, &phases) }.boxed()
    }
}

/// Every invariant of the scenario over its history.
pub fn check_pvp(history: &History<GameOp, GameRes>, phases: &Phases) -> Report {
    use std::collections::BTreeMap;
    let mut report = Report::default();
    // key -> (op id, user, level, issue completion time)
    let mut issued: BTreeMap<&str, (usize, &str, i64, u64)> = BTreeMap::new();
    for op in &history.ops {
        if let (GameOp::Enter { user, level, .. }, Some((t, Outcome::Ok(GameRes::Enter { key })))) =
            (&op.op, &op.completion)
        {
            issued.insert(key.as_str(), (op.id, user.as_str(), *level, *t));
        }
    }
    let limit = (AUTH_KEY_TTL + EXPIRY_ALLOWANCE).as_nanos() as u64;
    let mut successes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for op in &history.ops {
        let GameOp::Transfer { key, kind, .. } = &op.op else { continue };
        let e = by_kind.entry(format!("{kind:?}").to_lowercase()).or_default();
        e.0 += 1;
        let Some((_, Outcome::Ok(GameRes::Transfer { user, level }))) = &op.completion else { continue };
        e.1 += 1;
        let t = op.invoke_ns as f64 / 1e9;
        let Some(&(enter_id, iuser, ilevel, issued_at)) = issued.get(key.as_str()) else {
            report.violation(
                "auth_key",
                format!("op {} (process {}, t={t:.3}s): transfer with {kind:?} key {key}, never issued, succeeded as {user}", op.id, op.process),
            );
            continue;
        };
        if iuser != user || ilevel != *level {
            report.violation(
                "auth_key",
                format!(
                    "op {}: key {key} issued by op {enter_id} for {iuser} level {ilevel} returned {user} level {level}",
                    op.id
                ),
            );
        }
        if op.invoke_ns > issued_at + limit {
            report.violation(
                "auth_key",
                format!(
                    "op {} (t={t:.3}s): key {key} issued at {:.3}s succeeded after its expiry",
                    op.id,
                    issued_at as f64 / 1e9
                ),
            );
        }
        successes.entry(key.as_str()).or_default().push(op.id);
    }
    for (key, ids) in &successes {
        if ids.len() > 1 {
            report.violation(
                "auth_key",
                format!("key {key} succeeded {} times (ops {ids:?}): keys are single-use", ids.len()),
            );
        }
    }
    // Liveness over genuine transfers only.
    let genuine = History {
        ops: history
            .ops
            .iter()
            .filter(|o| matches!(o.op, GameOp::Transfer { kind: KeyKind::Genuine, .. }))
            .cloned()
            .collect(),
    };
    report.merge(crate::checker::liveness_after_heal(&genuine, phases, |_| true));
    report.count("pvp.keys_issued", issued.len() as u64);
    for (kind, (n, ok)) in by_kind {
        report.count(&format!("pvp.transfer_{kind}"), n);
        report.count(&format!("pvp.transfer_{kind}_ok"), ok);
    }
    report.count("ops", history.ops.len() as u64);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;

    fn phases() -> Phases {
        Phases {
            now: Arc::new(|| 0),
            heal_at: Duration::from_secs(100),
            end_at: Duration::from_secs(200),
            liveness_bound: Duration::from_secs(10),
        }
    }

    fn op(id: usize, op: GameOp, t: f64, res: Option<GameRes>) -> Operation<GameOp, GameRes> {
        let ns = (t * 1e9) as u64;
        Operation {
            id,
            process: 1,
            op,
            invoke_ns: ns,
            completion: Some((ns + 1_000, res.map(Outcome::Ok).unwrap_or(Outcome::Fail))),
        }
    }

    fn enter(id: usize, key: &str, t: f64) -> Operation<GameOp, GameRes> {
        op(
            id,
            GameOp::Enter { server: "game-0".into(), user: "u1".into(), level: 1 },
            t,
            Some(GameRes::Enter { key: key.into() }),
        )
    }

    fn transfer(id: usize, key: &str, kind: KeyKind, t: f64, ok: bool) -> Operation<GameOp, GameRes> {
        let res = ok.then(|| GameRes::Transfer { user: "u1".into(), level: 1 });
        op(id, GameOp::Transfer { server: "pvp".into(), key: key.into(), kind }, t, res)
    }

    #[test]
    fn good_history_passes() {
        let h = History {
            ops: vec![
                enter(0, "k", 1.0),
                transfer(1, "k", KeyKind::Genuine, 2.0, true),
                transfer(2, "k", KeyKind::Replay, 3.0, false),
            ],
        };
        assert!(check_pvp(&h, &phases()).ok());
    }

    #[test]
    fn replay_success_fails() {
        let h = History {
            ops: vec![
                enter(0, "k", 1.0),
                transfer(1, "k", KeyKind::Genuine, 2.0, true),
                transfer(2, "k", KeyKind::Replay, 3.0, true),
            ],
        };
        assert!(!check_pvp(&h, &phases()).ok());
    }

    #[test]
    fn forged_and_expired_success_fail() {
        let h = History { ops: vec![enter(0, "k", 1.0), transfer(1, "x", KeyKind::Forged, 2.0, true)] };
        assert!(!check_pvp(&h, &phases()).ok());
        let h = History { ops: vec![enter(0, "k", 1.0), transfer(1, "k", KeyKind::Expired, 12.0, true)] };
        assert!(!check_pvp(&h, &phases()).ok());
    }
}
