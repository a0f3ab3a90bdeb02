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
//! Invariants ([`check_redirect`]):
//! - **single use** — every token is accepted at most once;
//! - **bad tokens** — forged, tampered and wrong-server presentations never succeed, nor does
//!   any token no redirect issued;
//! - **expiry** — no accept invoked later than `issue + TOKEN_TTL + CLOCK_SKEW_ALLOWANCE +
//!   wall skew` succeeds, where `issue` is when the client received the token and the wall
//!   skew is the spread of the servers' wall-clock offsets actually read during the run
//!   ([`WallLog`]: every wall-clock read of every server is observed, so the bound is exact,
//!   not a guess from the fault space — repeated clock jumps can stack beyond
//!   `clock_ms_max`);
//! - **right account, right place** — a successful accept returns exactly the account and
//!   `extra_data` of the redirect that issued the token, at the server that redirect named
//!   (and `_sc_redirect` points at that server);
//! - **logged in once** — the acting intervals of an account's login instances never overlap
//!   ([`check_acting`]): the source stops acting before the target accepts, and a replay or a
//!   concurrent presentation never yields a second instance;
//! - **liveness** — after the heal every client completes a genuine redirect within the bound.
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::account::token::CLOCK_SKEW_ALLOWANCE;
use engine::account::{AccountBugs, SC_REDIRECT};
use engine::env::{Clock, Env, MonoTime, Rand, RandExt, WallTime};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::acting::{check_acting, ActLog, Instance, Interval};
use crate::checker::Report;
use crate::evidence::{Evidence, EvidenceTap};
use crate::faults::FaultSpace;
use crate::game_client::{is_error, GameClient, Redirect, ReqError};
use crate::game_host::{self, SimGameOptions};
use crate::history::{History, Outcome, Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Phases, PlantedBug, RedisSpec, Scenario, ScenarioRun, ServerCtx, ServerDirectory, Topology,
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

/// How the token of an accept attempt came to be (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TokenKind {
    Genuine,
    Concurrent,
    Forged,
    Tampered,
    WrongServer,
    Expired,
    Late,
    Replay,
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Genuine => "genuine",
            TokenKind::Concurrent => "concurrent",
            TokenKind::Forged => "forged",
            TokenKind::Tampered => "tampered",
            TokenKind::WrongServer => "wrong_server",
            TokenKind::Expired => "expired",
            TokenKind::Late => "late",
            TokenKind::Replay => "replay",
        }
    }

    /// Kinds that must never succeed, whatever the timing.
    fn must_fail(self) -> bool {
        matches!(self, TokenKind::Forged | TokenKind::Tampered | TokenKind::WrongServer)
    }

    /// Kinds whose success is the progress liveness asks for.
    fn genuine(self) -> bool {
        matches!(self, TokenKind::Genuine | TokenKind::Concurrent)
    }
}

/// An operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectOp {
    /// `cs_game_server_login`; `probe`: made while the account is held on a redirect target
    /// (must be refused while that server acts for it).
    Login { server: String, account: String, probe: bool },
    /// `cs_redirect` from `server` to `target`.
    Redirect { server: String, target: String, account: String, extra_data: Value },
    /// `_cs_redirect {token}` at `server`; `account` is whose token the client believes it is.
    Accept { kind: TokenKind, server: String, token: String, account: String },
    /// `cs_logout`.
    Logout { server: String, account: String },
}

/// What an operation answered. Definite refusals are `Ok(Refused | Rejected)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectRes {
    LoggedIn,
    /// A login or redirect refused, with the server's error message.
    Refused(String),
    /// `_sc_redirect` arrived; `to` is the server its host and port name.
    Issued {
        token: String,
        to: String,
    },
    /// `sc_redirected`.
    Accepted {
        account: String,
        extra_data: Value,
    },
    /// `_error redirect_rejected`, with the reason (see [`reject_reason`]).
    Rejected {
        reason: String,
    },
    LoggedOut,
}

/// The wall-clock offsets (wall ms × 10^6 − true ns) of every wall-clock read the servers
/// made, folded into their minimum and maximum. Shared by all servers of a run.
#[derive(Clone, Default)]
pub struct WallLog {
    inner: Arc<Mutex<Option<(i128, i128, u64)>>>,
}

impl WallLog {
    fn record(&self, wall_ms: i64, true_ns: u64) {
        let off = i128::from(wall_ms) * 1_000_000 - i128::from(true_ns);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g = Some(match *g {
            None => (off, off, 1),
            Some((lo, hi, n)) => (lo.min(off), hi.max(off), n + 1),
        });
    }

    /// Largest difference between the wall-clock offsets of any two reads (of one server or
    /// two), and the number of reads.
    pub fn spread(&self) -> (Duration, u64) {
        match *self.inner.lock().unwrap_or_else(|e| e.into_inner()) {
            None => (Duration::ZERO, 0),
            Some((lo, hi, n)) => (Duration::from_nanos(u64::try_from(hi - lo).unwrap_or(u64::MAX)), n),
        }
    }
}

/// A server's clock, unchanged, except that every wall-clock read is also reported to a
/// [`WallLog`] with the true time: the issue and the check of every token read it.
struct WatchedClock {
    inner: Arc<dyn Clock>,
    now: TimeSource,
    log: WallLog,
    tap: Option<EvidenceTap>,
}

impl Clock for WatchedClock {
    fn now(&self) -> MonoTime {
        self.inner.now()
    }
    fn wall_now(&self) -> WallTime {
        let w = self.inner.wall_now();
        let t_ns = (self.now)();
        self.log.record(w.as_millis(), t_ns);
        if let Some(tap) = &self.tap {
            tap(&Evidence::WallRead { wall_ms: w.as_millis(), t_ns });
        }
        w
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.inner.sleep(d)
    }
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        self.inner.sleep_until(deadline)
    }
}

pub struct RedirectScenario;

fn server_name(i: usize) -> String {
    format!("game-{i}")
}

/// The server name of `addr`, or the address itself.
fn name_of(servers: &ServerDirectory, addr: SocketAddr) -> String {
    servers.index_of(addr).map(server_name).unwrap_or_else(|| addr.to_string())
}

impl Scenario for RedirectScenario {
    fn name(&self) -> &'static str {
        "redirect"
    }
    fn description(&self) -> &'static str {
        "clients redirected between game servers with extra_data; forged, tampered, expired, wrong-server and replayed tokens"
    }
    fn bugs(&self) -> &'static [PlantedBug] {
        BUGS
    }
    /// Checked on the clients' history; servers' acts and wall-clock reads arrive as evidence.
    fn runs_live(&self) -> bool {
        true
    }
    fn topology(&self, _bug: Option<&str>) -> Topology {
        Topology {
            zookeeper: true,
            redis: Some(RedisSpec { persistent: true, stale_read_probability: 0.0 }),
            servers: game_host::game_servers(SERVERS),
            clients: CLIENTS,
        }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        let all = topology.node_names();
        let mut clock = topology.server_names();
        clock.extend((0..topology.clients).map(Topology::client_name));
        let mut kill = clock.clone();
        kill.push("redis".to_string());
        FaultSpace {
            kill,
            pause: all.clone(),
            partition: all,
            clock,
            network: true,
            chaos_ms: CHAOS_MS,
            heal_ms: 30_000,
            liveness_bound_ms: 20_000,
            faults_min: 2,
            faults_max: 8,
            fault_ms_max: 6_000,
            clock_ms_max: CLOCK_MS_MAX as i64,
            drift_ppm_max: DRIFT_PPM_MAX as i64,
            weights: Default::default(),
        }
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

/// How a presentation ended, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Accepted,
    Rejected,
    Unknown,
}

/// A short name for the reason of an `_error redirect_rejected` message.
pub fn reject_reason(message: &str) -> &'static str {
    const REASONS: [(&str, &str); 8] = [
        ("bad signature", "bad_signature"),
        ("malformed", "malformed"),
        ("issued for another server", "wrong_server"),
        ("expired", "expired"),
        ("already used", "replayed"),
        ("already logged in", "already_logged_in"),
        ("lease not held", "coordination_lost"),
        ("coordination", "coordination"),
    ];
    REASONS.iter().find(|(needle, _)| message.contains(needle)).map(|(_, r)| *r).unwrap_or("other")
}

/// `token` with one hex digit changed.
fn tamper(token: &str, rand: &dyn Rand) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    if chars.is_empty() {
        return "0".into();
    }
    let i = rand.gen_range(0..chars.len() as u64) as usize;
    let d = chars[i].to_digit(16).unwrap_or(0);
    let nd = (d + 1 + rand.gen_range(0..15) as u32) % 16;
    chars[i] = std::char::from_digit(nd, 16).unwrap_or('0');
    chars.into_iter().collect()
}

/// Random lowercase hex of `len` characters.
fn forge(len: usize, rand: &dyn Rand) -> String {
    (0..len).map(|_| std::char::from_digit(rand.gen_range(0..16) as u32, 16).unwrap_or('0')).collect()
}

/// A token for messages: its last 16 hex digits (MAC bits: its start, the version, account
/// and target, is shared by many tokens).
fn short(token: &str) -> String {
    let tail: String = token.chars().rev().take(16).collect::<Vec<_>>().into_iter().rev().collect();
    format!("..{tail}")
}

fn message_of(v: &Value) -> String {
    v.get("error_message").or_else(|| v.get("message")).and_then(Value::as_str).unwrap_or("?").to_string()
}

impl Run {
    async fn connect(&self, ctx: &ClientCtx, addr: SocketAddr) -> Option<GameClient> {
        GameClient::connect(&ctx.env, ctx.phases.now.clone(), addr).await
    }

    /// Logs `account` in on `c` (at server `si`); true if it worked.
    async fn login(
        &self,
        ctx: &ClientCtx,
        c: &mut GameClient,
        si: usize,
        account: &str,
        probe: bool,
    ) -> bool {
        let op = RedirectOp::Login { server: server_name(si), account: account.into(), probe };
        let h = self.rec.invoke(ctx.process, op);
        match c.request("cs_game_server_login", json!({ "user_name": account }), "sc_game_server_login").await
        {
            Ok(v) if !is_error(&v) => {
                self.rec.ok(h, RedirectRes::LoggedIn);
                true
            }
            Ok(v) => {
                self.rec.ok(h, RedirectRes::Refused(message_of(&v)));
                false
            }
            Err(_) => {
                self.rec.info(h);
                false
            }
        }
    }

    /// Asks the server `si` to redirect the account to `ti`; the `_sc_redirect` if it came.
    async fn redirect(
        &self,
        ctx: &ClientCtx,
        c: &mut GameClient,
        si: usize,
        ti: usize,
        account: &str,
        extra: Value,
    ) -> Option<Redirect> {
        let target = server_name(ti);
        let op = RedirectOp::Redirect {
            server: server_name(si),
            target: target.clone(),
            account: account.into(),
            extra_data: extra.clone(),
        };
        let h = self.rec.invoke(ctx.process, op);
        let body = json!({ "server_name": target, "extra_data": extra });
        match c.request_any("cs_redirect", body, &[SC_REDIRECT, "sc_redirect"]).await {
            Ok((t, v)) if t == SC_REDIRECT => match Redirect::from_body(&v) {
                Some(r) => {
                    let to = name_of(&ctx.servers, r.addr);
                    self.rec.ok(h, RedirectRes::Issued { token: r.token.clone(), to });
                    Some(r)
                }
                None => {
                    // An unreadable instruction: the token may exist, the client cannot tell.
                    self.rec.info(h);
                    None
                }
            },
            Ok((_, v)) => {
                self.rec.ok(h, RedirectRes::Refused(message_of(&v)));
                None
            }
            Err(ReqError::Closed) => match c.take_redirect() {
                Some(r) => {
                    let to = name_of(&ctx.servers, r.addr);
                    self.rec.ok(h, RedirectRes::Issued { token: r.token.clone(), to });
                    Some(r)
                }
                None => {
                    self.rec.info(h);
                    None
                }
            },
            Err(ReqError::Lost | ReqError::Error(_)) => {
                // An `_error` cannot be tied to this request for sure: indeterminate.
                self.rec.info(h);
                None
            }
        }
    }

    /// Presents `token` on `c` (connected to `server`).
    async fn present(
        &self,
        ctx: &ClientCtx,
        c: &mut GameClient,
        server: &str,
        token: &str,
        kind: TokenKind,
        account: &str,
    ) -> Presented {
        let op =
            RedirectOp::Accept { kind, server: server.into(), token: token.into(), account: account.into() };
        let h = self.rec.invoke(ctx.process, op);
        match c.request_any("_cs_redirect", json!({ "token": token }), &["sc_redirected", "_error"]).await {
            Ok((t, v)) if t == "sc_redirected" && !is_error(&v) => {
                let account = v.get("user_name").and_then(Value::as_str).unwrap_or("").to_string();
                let extra_data = v.get("extra_data").cloned().unwrap_or(Value::Null);
                self.rec.ok(h, RedirectRes::Accepted { account, extra_data });
                Presented::Accepted
            }
            Ok((t, v))
                if t == "_error" && v.get("code").and_then(Value::as_str) == Some("redirect_rejected") =>
            {
                let reason = reject_reason(&message_of(&v)).to_string();
                self.rec.ok(h, RedirectRes::Rejected { reason });
                Presented::Rejected
            }
            Ok(_) | Err(_) => {
                self.rec.info(h);
                Presented::Unknown
            }
        }
    }

    /// Connects to `addr` and presents `token` there; the connection if it was accepted.
    async fn connect_and_present(
        &self,
        ctx: &ClientCtx,
        addr: SocketAddr,
        token: &str,
        kind: TokenKind,
        account: &str,
    ) -> Option<GameClient> {
        let mut c = self.connect(ctx, addr).await?;
        match self.present(ctx, &mut c, &name_of(&ctx.servers, addr), token, kind, account).await {
            Presented::Accepted => Some(c),
            _ => None,
        }
    }

    /// One flow: login, redirect, present (with the odd adversarial presentation).
    async fn flow(&self, ctx: &ClientCtx, account: &str) {
        let env = &ctx.env;
        let si = env.rand.gen_range(0..SERVERS as u64) as usize;
        let Some(mut c) = self.connect(ctx, ctx.servers.addr(si)).await else { return };
        if !self.login(ctx, &mut c, si, account, false).await {
            // Refused (e.g. the last flow's login not yet cleaned up): back off a little.
            env.clock.sleep(Duration::from_millis(env.rand.gen_range(200..1_000))).await;
            return;
        }
        if !c.pump(Duration::from_millis(env.rand.gen_range(0..600))).await {
            return;
        }
        drop(c.take_inbox());
        let ti = (si + 1 + env.rand.gen_range(0..SERVERS as u64 - 1) as usize) % SERVERS;
        let extra = json!({ "n": env.rand.next_u64(), "from": server_name(si), "to": server_name(ti) });
        let Some(r) = self.redirect(ctx, &mut c, si, ti, account, extra).await else { return };
        drop(c);
        let token = r.token.clone();
        let target = name_of(&ctx.servers, r.addr);
        let held = match env.rand.gen_range(0..10) {
            0 => {
                self.with_bad_first(ctx, &r, forge(token.len(), &*env.rand), TokenKind::Forged, account).await
            }
            1 => self.with_bad_first(ctx, &r, tamper(&token, &*env.rand), TokenKind::Tampered, account).await,
            2 => {
                // The genuine token, first at a server it is not for.
                let others: Vec<usize> =
                    (0..SERVERS).filter(|&k| Some(k) != ctx.servers.index_of(r.addr)).collect();
                let k = *env.rand.choose(&others).expect("other servers");
                if let Some(c) = self
                    .connect_and_present(ctx, ctx.servers.addr(k), &token, TokenKind::WrongServer, account)
                    .await
                {
                    drop(c); // accepted: a violation the checker reports; leave.
                    return;
                }
                self.connect_and_present(ctx, r.addr, &token, TokenKind::Genuine, account).await
            }
            3 if !ctx.phases.healed() => {
                let wait = EXPIRED_WAIT + Duration::from_millis(env.rand.gen_range(0..1_000));
                env.clock.sleep(wait).await;
                self.connect_and_present(ctx, r.addr, &token, TokenKind::Expired, account).await
            }
            4 => self.concurrent(ctx, &r, account).await,
            5 if !ctx.phases.healed() => {
                let ms =
                    env.rand.gen_range(LATE_WAIT.start.as_millis() as u64..LATE_WAIT.end.as_millis() as u64);
                env.clock.sleep(Duration::from_millis(ms)).await;
                self.connect_and_present(ctx, r.addr, &token, TokenKind::Late, account).await
            }
            _ => self.connect_and_present(ctx, r.addr, &token, TokenKind::Genuine, account).await,
        };
        let Some(c) = held else { return };
        self.after_accept(ctx, c, &r, &target, account).await;
    }

    /// Presents `bad` at the target, then the genuine token (on the same connection if `bad`
    /// got its answer and the connection stayed open).
    async fn with_bad_first(
        &self,
        ctx: &ClientCtx,
        r: &Redirect,
        bad: String,
        kind: TokenKind,
        account: &str,
    ) -> Option<GameClient> {
        let mut c = self.connect(ctx, r.addr).await?;
        let server = name_of(&ctx.servers, r.addr);
        match self.present(ctx, &mut c, &server, &bad, kind, account).await {
            Presented::Accepted => return None, // a violation the checker reports; leave.
            Presented::Rejected if c.is_open() => {}
            // No answer: a late one could pass for the answer to the genuine token.
            Presented::Rejected | Presented::Unknown => c = self.connect(ctx, r.addr).await?,
        }
        match self.present(ctx, &mut c, &server, &r.token, TokenKind::Genuine, account).await {
            Presented::Accepted => Some(c),
            _ => None,
        }
    }

    /// The genuine token on two connections at once; the connection that won, if one did.
    async fn concurrent(&self, ctx: &ClientCtx, r: &Redirect, account: &str) -> Option<GameClient> {
        let (a, b) = futures::join!(self.connect(ctx, r.addr), self.connect(ctx, r.addr));
        let server = name_of(&ctx.servers, r.addr);
        match (a, b) {
            (Some(mut a), Some(mut b)) => {
                let (ra, rb) = futures::join!(
                    self.present(ctx, &mut a, &server, &r.token, TokenKind::Genuine, account),
                    self.present(ctx, &mut b, &server, &r.token, TokenKind::Concurrent, account),
                );
                if ra == Presented::Accepted {
                    Some(a)
                } else if rb == Presented::Accepted {
                    Some(b)
                } else {
                    None
                }
            }
            (Some(mut c), None) | (None, Some(mut c)) => {
                match self.present(ctx, &mut c, &server, &r.token, TokenKind::Genuine, account).await {
                    Presented::Accepted => Some(c),
                    _ => None,
                }
            }
            (None, None) => None,
        }
    }

    /// Holds the redirected login `c` a while (maybe probing it), leaves, and maybe replays
    /// the token.
    async fn after_accept(
        &self,
        ctx: &ClientCtx,
        mut c: GameClient,
        r: &Redirect,
        target: &str,
        account: &str,
    ) {
        let env = &ctx.env;
        if env.rand.gen_bool(PROBE_PROBABILITY) {
            // Logged in exactly once: no other server may log the account in meanwhile.
            let others: Vec<usize> =
                (0..SERVERS).filter(|&k| Some(k) != ctx.servers.index_of(r.addr)).collect();
            let k = *env.rand.choose(&others).expect("other servers");
            if let Some(mut p) = self.connect(ctx, ctx.servers.addr(k)).await {
                self.login(ctx, &mut p, k, account, true).await;
            }
        }
        let open = c.pump(Duration::from_millis(env.rand.gen_range(100..1_500))).await;
        drop(c.take_inbox());
        let replay = env.rand.gen_bool(REPLAY_PROBABILITY);
        let logout = open && env.rand.gen_bool(0.6);
        let mut logged_out = false;
        if logout {
            let op = RedirectOp::Logout { server: target.into(), account: account.into() };
            let h = self.rec.invoke(ctx.process, op);
            match c.request("cs_logout", json!({}), "sc_logout").await {
                Ok(v) if !is_error(&v) => {
                    self.rec.ok(h, RedirectRes::LoggedOut);
                    logged_out = true;
                }
                Ok(v) => self.rec.ok(h, RedirectRes::Refused(message_of(&v))),
                Err(_) => self.rec.info(h),
            }
        }
        drop(c);
        if !replay {
            return;
        }
        if !logged_out {
            // Closed: the server logs the account out when it sees the close.
            env.clock.sleep(Duration::from_millis(env.rand.gen_range(300..1_200))).await;
        }
        if let Some(mut c) = self.connect_and_present(ctx, r.addr, &r.token, TokenKind::Replay, account).await
        {
            // Accepted again (a violation the checker reports): stay a moment so the acting
            // log shows the second login, then leave.
            c.pump(Duration::from_millis(300)).await;
        }
    }
}

impl ScenarioRun for Run {
    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let run = self.clone();
        async move {
            let account = format!("r{}", ctx.process);
            while !ctx.phases.finished() {
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
            act @ Evidence::Act { .. } => self.acts.absorb(&act),
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

/// A token some redirect issued.
struct Issued<'a> {
    op: usize,
    account: &'a str,
    extra_data: &'a Value,
    target: &'a str,
    /// When the client had it (true ns): the issue happened before.
    at_ns: u64,
}

/// Every invariant of the scenario (module docs) over the history, the servers' acting log
/// and the measured spread `wall_skew` of the servers' wall-clock offsets.
pub fn check_redirect(
    history: &History<RedirectOp, RedirectRes>,
    acts: &BTreeMap<String, BTreeMap<Instance, Interval>>,
    wall_skew: Duration,
    phases: &Phases,
) -> Report {
    let mut report = Report::default();
    let mut issued: BTreeMap<&str, Issued> = BTreeMap::new();
    for op in &history.ops {
        let (RedirectOp::Redirect { target, account, extra_data, .. }, Some((t, Outcome::Ok(res)))) =
            (&op.op, &op.completion)
        else {
            continue;
        };
        match res {
            RedirectRes::Issued { token, to } => {
                if to != target {
                    report.violation(
                        "redirect_target",
                        format!(
                            "op {} (process {}): redirect of {account} to {target} sent the client to {to}",
                            op.id, op.process
                        ),
                    );
                }
                issued.insert(token, Issued { op: op.id, account, extra_data, target, at_ns: *t });
            }
            _ => report.count("redirect.refused", 1),
        }
    }
    let limit = TOKEN_TTL + CLOCK_SKEW_ALLOWANCE + wall_skew + EXPIRY_MARGIN;
    let limit_ns = limit.as_nanos() as u64;
    let mut successes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut kinds: BTreeMap<(TokenKind, &str), u64> = BTreeMap::new();
    for op in &history.ops {
        let RedirectOp::Accept { kind, server, token, .. } = &op.op else { continue };
        let t = op.invoke_ns as f64 / 1e9;
        let iss = issued.get(token.as_str());
        if iss.is_some_and(|i| op.invoke_ns > i.at_ns + limit_ns) {
            report.count(&format!("redirect.{}_past_limit", kind.name()), 1);
        }
        let res = match op.outcome() {
            Outcome::Ok(RedirectRes::Accepted { account, extra_data }) => (account, extra_data),
            Outcome::Ok(RedirectRes::Rejected { reason }) => {
                *kinds.entry((*kind, reason.as_str())).or_default() += 1;
                continue;
            }
            _ => {
                *kinds.entry((*kind, "unknown")).or_default() += 1;
                continue;
            }
        };
        *kinds.entry((*kind, "accepted")).or_default() += 1;
        let (account, extra_data) = res;
        let what = format!("op {} (process {}, t={t:.3}s, at {server})", op.id, op.process);
        if kind.must_fail() {
            report.violation("bad_token", format!("{what}: {} token accepted as {account}", kind.name()));
        }
        let Some(iss) = iss else {
            report.violation(
                "bad_token",
                format!(
                    "{what}: {} token {} that no redirect issued accepted as {account}",
                    kind.name(),
                    short(token)
                ),
            );
            continue;
        };
        if iss.account != account || iss.extra_data != extra_data {
            report.violation(
                "accept_result",
                format!(
                    "{what}: token issued by op {} for {} with extra_data {} accepted as {account} with {extra_data}",
                    iss.op, iss.account, iss.extra_data
                ),
            );
        }
        if server != iss.target {
            report.violation(
                "accept_server",
                format!("{what}: token issued by op {} for {} accepted at {server}", iss.op, iss.target),
            );
        }
        if op.invoke_ns > iss.at_ns + limit_ns {
            report.violation(
                "expiry",
                format!(
                    "{what}: {} token issued by op {} (received at {:.3}s) accepted {:.3}s later, past the limit {:.3}s (ttl {:?} + allowance {:?} + wall skew {:.3}s)",
                    kind.name(),
                    iss.op,
                    iss.at_ns as f64 / 1e9,
                    (op.invoke_ns - iss.at_ns) as f64 / 1e9,
                    limit.as_secs_f64(),
                    TOKEN_TTL,
                    CLOCK_SKEW_ALLOWANCE,
                    wall_skew.as_secs_f64()
                ),
            );
        }
        successes.entry(token.as_str()).or_default().push(format!("op {} {} at {t:.3}s", op.id, kind.name()));
    }
    for (token, ids) in &successes {
        if ids.len() > 1 {
            report.violation(
                "single_use",
                format!(
                    "token {} (issued by op {}) accepted {} times: {}",
                    short(token),
                    issued.get(token).map_or(usize::MAX, |i| i.op),
                    ids.len(),
                    ids.join(", ")
                ),
            );
        }
    }
    report.merge(check_acting(acts));
    // Liveness: every process active after the heal completes a genuine redirect in time.
    // Its other operations count as activity (an invocation) but not as progress.
    let progress = History {
        ops: history
            .ops
            .iter()
            .map(|o| {
                let mut o = o.clone();
                let genuine_ok = matches!(
                    (&o.op, &o.completion),
                    (RedirectOp::Accept { kind, .. }, Some((_, Outcome::Ok(RedirectRes::Accepted { .. }))))
                        if kind.genuine()
                );
                if !genuine_ok {
                    o.completion = o.completion.map(|(t, _)| (t, Outcome::Fail));
                }
                o
            })
            .collect(),
    };
    report.merge(crate::checker::liveness_after_heal(&progress, phases, |_| true));
    // How close to the bound recovery came: per process, from the heal (or its first later
    // invocation) to its first genuine redirect.
    let heal_ns = phases.heal_at.as_nanos() as u64;
    let mut recovery: BTreeMap<u64, (u64, Option<u64>)> = BTreeMap::new();
    for o in progress.ops.iter().filter(|o| o.invoke_ns >= heal_ns) {
        let e = recovery.entry(o.process).or_insert((o.invoke_ns, None));
        if let Some((t, Outcome::Ok(_))) = &o.completion {
            e.1 = Some(e.1.map_or(*t, |x| x.min(*t)));
        }
    }
    for (first, ok) in recovery.values() {
        if let Some(ok) = ok {
            let ms = ok.saturating_sub(heal_ns.max(*first)) / 1_000_000;
            report.count_max("redirect.max_recovery_ms", ms);
        }
    }
    report.count("redirect.issued", issued.len() as u64);
    report.count_max("redirect.max_wall_skew_ms", wall_skew.as_millis() as u64);
    for ((kind, result), n) in kinds {
        report.count(&format!("redirect.accept_{}_{result}", kind.name()), n);
    }
    for op in &history.ops {
        if let (RedirectOp::Login { probe: true, .. }, Outcome::Ok(res)) = (&op.op, op.outcome()) {
            let name = if *res == RedirectRes::LoggedIn { "logged_in" } else { "refused" };
            report.count(&format!("redirect.probe_{name}"), 1);
        }
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

    fn op(id: usize, op: RedirectOp, t: f64, res: Option<RedirectRes>) -> Operation<RedirectOp, RedirectRes> {
        let ns = (t * 1e9) as u64;
        Operation {
            id,
            process: 1,
            op,
            invoke_ns: ns,
            completion: Some((ns + 1_000, res.map(Outcome::Ok).unwrap_or(Outcome::Info))),
        }
    }

    fn extra() -> Value {
        json!({ "n": 7, "from": "game-0", "to": "game-1" })
    }

    fn redirect(id: usize, token: &str, t: f64) -> Operation<RedirectOp, RedirectRes> {
        op(
            id,
            RedirectOp::Redirect {
                server: "game-0".into(),
                target: "game-1".into(),
                account: "r1".into(),
                extra_data: extra(),
            },
            t,
            Some(RedirectRes::Issued { token: token.into(), to: "game-1".into() }),
        )
    }

    fn accept_at(
        id: usize,
        token: &str,
        kind: TokenKind,
        server: &str,
        t: f64,
        res: RedirectRes,
    ) -> Operation<RedirectOp, RedirectRes> {
        let acc =
            RedirectOp::Accept { kind, server: server.into(), token: token.into(), account: "r1".into() };
        op(id, acc, t, Some(res))
    }

    fn ok() -> RedirectRes {
        RedirectRes::Accepted { account: "r1".into(), extra_data: extra() }
    }

    fn rejected(reason: &str) -> RedirectRes {
        RedirectRes::Rejected { reason: reason.into() }
    }

    fn accept(
        id: usize,
        token: &str,
        kind: TokenKind,
        t: f64,
        res: RedirectRes,
    ) -> Operation<RedirectOp, RedirectRes> {
        accept_at(id, token, kind, "game-1", t, res)
    }

    fn check(ops: Vec<Operation<RedirectOp, RedirectRes>>) -> Report {
        check_redirect(&History { ops }, &BTreeMap::new(), Duration::ZERO, &phases())
    }

    fn assert_caught(r: &Report, checker: &str) {
        assert!(
            r.violations.iter().any(|v| v.checker == checker),
            "expected a {checker} violation: {:?}",
            r.violations
        );
    }

    #[test]
    fn good_history_passes() {
        let r = check(vec![
            redirect(0, "k", 1.0),
            accept(1, "bad", TokenKind::Forged, 1.1, rejected("bad_signature")),
            accept(2, "k", TokenKind::Genuine, 1.2, ok()),
            accept(3, "k", TokenKind::Replay, 2.0, rejected("replayed")),
            redirect(4, "k2", 3.0),
            accept(5, "k2", TokenKind::Expired, 3.0 + 12.0, rejected("expired")),
        ]);
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!(r.counter("redirect.accept_genuine_accepted"), 1);
        assert_eq!(r.counter("redirect.accept_replay_replayed"), 1);
        assert_eq!(r.counter("redirect.expired_past_limit"), 1);
    }

    #[test]
    fn replayed_token_accepted_twice_is_caught() {
        let r = check(vec![
            redirect(0, "k", 1.0),
            accept(1, "k", TokenKind::Genuine, 1.2, ok()),
            accept(2, "k", TokenKind::Replay, 2.0, ok()),
        ]);
        assert_caught(&r, "single_use");
        // Two concurrent presentations both winning is the same violation.
        let r = check(vec![
            redirect(0, "k", 1.0),
            accept(1, "k", TokenKind::Genuine, 1.2, ok()),
            accept(2, "k", TokenKind::Concurrent, 1.2, ok()),
        ]);
        assert_caught(&r, "single_use");
    }

    #[test]
    fn forged_and_tampered_acceptance_is_caught() {
        for kind in [TokenKind::Forged, TokenKind::Tampered] {
            let r = check(vec![redirect(0, "k", 1.0), accept(1, "x", kind, 1.1, ok())]);
            assert_caught(&r, "bad_token");
        }
        // Whatever the client called it: a token nobody issued.
        let r = check(vec![redirect(0, "k", 1.0), accept(1, "x", TokenKind::Genuine, 1.1, ok())]);
        assert_caught(&r, "bad_token");
    }

    #[test]
    fn wrong_server_acceptance_is_caught() {
        let r = check(vec![
            redirect(0, "k", 1.0),
            accept_at(1, "k", TokenKind::WrongServer, "game-2", 1.1, ok()),
        ]);
        assert_caught(&r, "bad_token");
        assert_caught(&r, "accept_server");
        // A "genuine" presentation at a server the redirect did not name, too.
        let r =
            check(vec![redirect(0, "k", 1.0), accept_at(1, "k", TokenKind::Genuine, "game-2", 1.1, ok())]);
        assert_caught(&r, "accept_server");
    }

    #[test]
    fn expired_acceptance_is_caught_and_measured_skew_is_allowed() {
        let late = vec![redirect(0, "k", 1.0), accept(1, "k", TokenKind::Expired, 1.0 + 9.2, ok())];
        assert_caught(&check(late.clone()), "expiry");
        // 4 s ttl + 5 s allowance + 1 s of measured skew: 9.2 s is within the limit.
        let r = check_redirect(&History { ops: late }, &BTreeMap::new(), Duration::from_secs(1), &phases());
        assert!(r.ok(), "{:?}", r.violations);
    }

    #[test]
    fn wrong_account_or_extra_data_is_caught() {
        let other = RedirectRes::Accepted { account: "r2".into(), extra_data: extra() };
        let r = check(vec![redirect(0, "k", 1.0), accept(1, "k", TokenKind::Genuine, 1.1, other)]);
        assert_caught(&r, "accept_result");
        let other = RedirectRes::Accepted { account: "r1".into(), extra_data: json!({ "n": 8 }) };
        let r = check(vec![redirect(0, "k", 1.0), accept(1, "k", TokenKind::Genuine, 1.1, other)]);
        assert_caught(&r, "accept_result");
    }

    #[test]
    fn redirect_to_the_wrong_host_is_caught() {
        let mut bad = redirect(0, "k", 1.0);
        bad.completion =
            Some((1, Outcome::Ok(RedirectRes::Issued { token: "k".into(), to: "game-2".into() })));
        assert_caught(&check(vec![bad]), "redirect_target");
    }

    #[test]
    fn overlapping_logins_are_caught() {
        let acts = ActLog::default();
        acts.insert("r1", (1, "a".into()), Interval { start_ns: 0, end_ns: 10, ticks: 3 });
        acts.insert("r1", (2, "b".into()), Interval { start_ns: 5, end_ns: 20, ticks: 3 });
        let r = check_redirect(&History::default(), &acts.snapshot(), Duration::ZERO, &phases());
        assert_caught(&r, "acting");
    }

    #[test]
    fn no_genuine_redirect_after_the_heal_is_caught() {
        let r = check(vec![
            redirect(0, "k", 101.0),
            accept(1, "k", TokenKind::Replay, 101.5, ok()),
            accept(2, "k", TokenKind::Genuine, 102.0, rejected("coordination_lost")),
        ]);
        assert_caught(&r, "liveness");
        let r = check(vec![redirect(0, "k", 101.0), accept(1, "k", TokenKind::Genuine, 101.2, ok())]);
        assert!(r.ok(), "{:?}", r.violations);
    }

    #[test]
    fn tampering_changes_one_digit_and_forging_keeps_the_length() {
        struct Seq(std::sync::atomic::AtomicU64);
        impl Rand for Seq {
            fn next_u64(&self) -> u64 {
                self.0.fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed)
            }
        }
        let rand = Seq(Default::default());
        let token = "0123456789abcdef";
        for _ in 0..50 {
            let t = tamper(token, &rand);
            assert_eq!(t.len(), token.len());
            assert_eq!(t.chars().zip(token.chars()).filter(|(a, b)| a != b).count(), 1, "{t}");
            assert!(t.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
            let f = forge(token.len(), &rand);
            assert_eq!(f.len(), token.len());
        }
        assert_eq!(reject_reason("redirect refused: bad redirect token: already used"), "replayed");
        assert_eq!(
            reject_reason("redirect refused: bad redirect token: issued for another server"),
            "wrong_server"
        );
    }
}
