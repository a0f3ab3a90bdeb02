//! `broadcast`: the reference game's messaging (see [`crate::game`]) under chaos. Every client
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
//! Invariants ([`check_broadcast`]):
//! 1. **no duplicates** — a session receives a message id at most once, and a send-to-account
//!    id is received at most once by anyone.
//! 2. **logged-in only** — nothing (broadcast, message or tick) arrives on a session before
//!    its login reply or after its logout reply, nor on a session whose login was refused.
//! 3. **completeness** — after the heal (plus [`SETTLE`]), every broadcast (and send) that
//!    completed ok reached every session *proven* logged in throughout it: see
//!    [`check_broadcast`] for the exact, conservative definition.
//! 4. **no phantoms** — every received message matches an invoked operation: same kind, same
//!    sender account, the addressee's account for a send, the broadcaster's server for a local
//!    broadcast, and not before its invocation.
//! - **liveness** — after the heal every client completes an operation within the bound.
//!
//! Planted bug `dup-delivery` ([`engine::account::AccountBugs::dup_delivery`]): a global
//! broadcast reaches the broadcaster's own server's accounts twice (rule 1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::account::AccountBugs;
use engine::env::{Env, RandExt};
use engine::session::codec;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checker::Report;
use crate::faults::FaultSpace;
use crate::game_client::{is_error, GameClient, Pushed, ReqError};
use crate::game_host::{self, SimGameOptions};
use crate::history::{History, OpHandle, ProcessId, Recorder, TimeSource};
use crate::scenario::{ClientCtx, Phases, PlantedBug, RedisSpec, Scenario, ScenarioRun, ServerCtx, Topology};

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

/// Which accounts a broadcast is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Accounts logged in on the broadcaster's server.
    Local,
    /// Accounts logged in on any game server.
    Global,
}

impl Scope {
    fn wire(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

/// A session: (client process, connection ordinal within the process).
pub type SessionKey = (ProcessId, u32);

/// One client operation; `session` is the connection ordinal of the invoking process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BOp {
    Login { server: String, account: String, session: u32 },
    Broadcast { server: String, session: u32, scope: Scope, id: String },
    Send { server: String, session: u32, to: String, id: String },
    Logout { server: String, session: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BRes {
    Login,
    Broadcast { delivered: u64 },
    Send { delivered: bool },
    Logout,
}

/// How a session's login went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginState {
    /// Not answered yet (the client was killed meanwhile).
    Pending,
    /// Logged in: the reply arrived at `at_ns` as frame `seq` of the connection.
    Ok { at_ns: u64, seq: u64 },
    /// The server answered with an error: this session was never logged in.
    Refused,
    /// No answer (timeout or close): it may or may not have been logged in.
    Unknown,
}

/// How a session ended (as the client saw it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndKind {
    /// The client closed the connection.
    Closed,
    /// The client saw the connection close.
    ServerClosed,
    /// The client gave up: a reply or the ticks stopped coming.
    GaveUp,
}

/// One client connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRec {
    pub process: ProcessId,
    pub ordinal: u32,
    pub server: String,
    pub account: String,
    pub connected_ns: u64,
    pub login: LoginState,
    /// Why the login was refused (the error message, or the `_error` code).
    pub refusal: Option<String>,
    /// `cs_logout` invoked at this time.
    pub logout_invoked_ns: Option<u64>,
    /// The successful logout reply: (arrival, frame seq).
    pub logout_reply: Option<(u64, u64)>,
    /// `None`: still open at the end of the run, or the client was killed.
    pub end: Option<(u64, EndKind)>,
}

impl SessionRec {
    pub fn key(&self) -> SessionKey {
        (self.process, self.ordinal)
    }
}

/// What a pushed frame was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Received {
    Broadcast { id: String, from: String },
    Message { id: String, from: String },
    Tick { seq: u64 },
    Other { msg_type: String },
}

/// One frame the server pushed on a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub process: ProcessId,
    pub session: u32,
    /// Position among the connection's frames (receipts and replies), from 1.
    pub seq: u64,
    /// True arrival time, ns.
    pub at_ns: u64,
    pub what: Received,
}

impl Receipt {
    pub fn key(&self) -> SessionKey {
        (self.process, self.session)
    }
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastHistory {
    pub ops: History<BOp, BRes>,
    pub sessions: Vec<SessionRec>,
    pub receipts: Vec<Receipt>,
}

/// Sessions and receipts, shared by every client of a run.
#[derive(Clone, Default)]
struct SessionLog {
    inner: Arc<Mutex<LogState>>,
}

#[derive(Default)]
struct LogState {
    sessions: BTreeMap<SessionKey, SessionRec>,
    receipts: Vec<Receipt>,
}

impl SessionLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn open(&self, rec: SessionRec) {
        self.lock().sessions.insert(rec.key(), rec);
    }
    fn update(&self, key: SessionKey, f: impl FnOnce(&mut SessionRec)) {
        if let Some(s) = self.lock().sessions.get_mut(&key) {
            f(s);
        }
    }
    fn received(&self, r: Receipt) {
        self.lock().receipts.push(r);
    }
    fn snapshot(&self) -> (Vec<SessionRec>, Vec<Receipt>) {
        let g = self.lock();
        (g.sessions.values().cloned().collect(), g.receipts.clone())
    }
}

pub struct BroadcastScenario;

impl Scenario for BroadcastScenario {
    fn name(&self) -> &'static str {
        "broadcast"
    }
    fn description(&self) -> &'static str {
        "reference game: local/global broadcasts and send-to-account: no duplicates, logged-in sessions only, complete after the heal"
    }
    fn bugs(&self) -> &'static [PlantedBug] {
        BUGS
    }
    /// Checked on the clients' history and receipts only.
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
        let mut kill = topology.server_names();
        kill.extend((0..topology.clients).map(Topology::client_name));
        kill.push("redis".to_string());
        // Not zk: the fencing lease assumes the coordination service measures its session
        // timeouts on a correct clock.
        let clock = kill.clone();
        FaultSpace {
            kill,
            pause: all.clone(),
            partition: all,
            clock,
            network: true,
            chaos_ms: 20_000,
            heal_ms: 30_000,
            liveness_bound_ms: 20_000,
            faults_min: 2,
            faults_max: 8,
            fault_ms_max: 6_000,
            clock_ms_max: 10_000,
            drift_ppm_max: 20_000,
            weights: Default::default(),
        }
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

/// One connection of a client, numbering its frames (pushed ones and replies) in arrival
/// order and recording every pushed one.
struct Conn {
    c: GameClient,
    key: SessionKey,
    server: String,
    log: SessionLog,
    now: TimeSource,
    seq: u64,
    /// True time of the last tick (or the login reply): a silent server is given up on.
    last_heard_ns: u64,
}

fn classify(p: &Pushed) -> Received {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    let id = || text(p.body.get("message").and_then(|m| m.get("id")));
    match p.msg_type.as_str() {
        "sc_broadcast_message" => Received::Broadcast { id: id(), from: text(p.body.get("from")) },
        "sc_message" => Received::Message { id: id(), from: text(p.body.get("from")) },
        "sc_tick" => Received::Tick { seq: p.body.get("seq").and_then(Value::as_u64).unwrap_or(0) },
        t => Received::Other { msg_type: t.to_string() },
    }
}

impl Conn {
    /// Records everything pushed so far, in arrival order.
    fn drain(&mut self) {
        for p in self.c.take_inbox() {
            self.seq += 1;
            let what = classify(&p);
            if matches!(what, Received::Tick { .. }) {
                self.last_heard_ns = self.last_heard_ns.max(p.at_ns);
            }
            let (process, session) = self.key;
            self.log.received(Receipt { process, session, seq: self.seq, at_ns: p.at_ns, what });
        }
    }

    /// Sends a request; on a reply returns its body and its frame seq (every frame pushed
    /// before it is recorded first). An `_error` frame is the reply too: the server did not
    /// handle the request (e.g. `unknown_type` from a server still registering its handlers);
    /// its body has no `"error": false`, so it reads as an error reply.
    async fn request(&mut self, msg_type: &str, body: Value, reply: &str) -> Result<(Value, u64), ReqError> {
        let r = self.c.request_any(msg_type, body, &[reply, codec::ERROR_TYPE]).await;
        self.drain();
        let (_, v) = r?;
        self.seq += 1;
        Ok((v, self.seq))
    }

    /// Reads for `d`; false if the connection ended.
    async fn pump(&mut self, d: Duration) -> bool {
        let open = self.c.pump(d).await;
        self.drain();
        open
    }

    fn end(self, kind: EndKind) {
        let t = (self.now)();
        self.log.update(self.key, |s| s.end = Some((t, kind)));
    }
}

/// A random account of another client than `index`.
fn other_account(env: &Env, index: usize) -> String {
    let others: Vec<usize> = (0..CLIENTS).filter(|&j| j != index).collect();
    format!("b{}", env.rand.choose(&others).copied().unwrap_or(0))
}

fn end_kind(e: ReqError) -> EndKind {
    match e {
        // An `_error` instead of the reply: the client cannot tell what it answered, so it
        // gives the connection up as after a timeout.
        ReqError::Lost | ReqError::Error(_) => EndKind::GaveUp,
        ReqError::Closed => EndKind::ServerClosed,
    }
}

impl Run {
    fn ms(env: &Env, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(env.rand.gen_range(lo..hi))
    }

    /// Reads for `d` in slices; false if the connection ended.
    async fn read_for(conn: &mut Conn, env: &Env, d: Duration) -> bool {
        let end = env.clock.now() + d;
        loop {
            let left = end.saturating_since(env.clock.now());
            if left.is_zero() {
                return true;
            }
            if !conn.pump(left.min(Duration::from_millis(500))).await {
                return false;
            }
        }
    }

    /// Broadcasts or sends one uniquely identified message. False if the session is over.
    async fn message(&self, ctx: &ClientCtx, conn: &mut Conn, counter: &mut u64, what: u64) -> bool {
        let env = &ctx.env;
        *counter += 1;
        let id = format!("p{}-{}", ctx.process, counter);
        let session = conn.key.1;
        let server = conn.server.clone();
        let (h, req, body, reply): (OpHandle, _, _, _) = if what < 2 {
            let scope = if what == 0 { Scope::Local } else { Scope::Global };
            let h = self.rec.invoke(ctx.process, BOp::Broadcast { server, session, scope, id: id.clone() });
            (h, "cs_broadcast", json!({ "scope": scope.wire(), "message": { "id": id } }), "sc_broadcast")
        } else {
            let to = other_account(env, ctx.index);
            let body = json!({ "to": to, "message": { "id": id } });
            let h = self.rec.invoke(ctx.process, BOp::Send { server, session, to, id });
            (h, "cs_send", body, "sc_send")
        };
        match conn.request(req, body, reply).await {
            Ok((v, _)) if !is_error(&v) => {
                let res = if what < 2 {
                    BRes::Broadcast { delivered: v.get("delivered").and_then(Value::as_u64).unwrap_or(0) }
                } else {
                    BRes::Send { delivered: v.get("delivered").and_then(Value::as_bool).unwrap_or(false) }
                };
                self.rec.ok(h, res);
                true
            }
            Ok(_) if what < 2 => {
                // A broadcast's error reply comes before anything is sent.
                self.rec.fail(h);
                true
            }
            Ok(_) => {
                // "Send failed" includes an RPC timeout: it may have been delivered.
                self.rec.info(h);
                true
            }
            Err(e) => {
                self.rec.info(h);
                // Give the connection up: a late reply must not answer a later request.
                let key = conn.key;
                let t = (self.now)();
                self.log.update(key, |s| s.end = Some((t, end_kind(e))));
                false
            }
        }
    }

    /// One connection: log in, stay a while messaging, then log out or just disconnect. A
    /// `probe` logs in as another client's account: usually refused (that client is logged
    /// in), else it logs straight out again.
    async fn session(&self, ctx: &ClientCtx, conn: Conn, account: &str, probe: bool, counter: &mut u64) {
        let env = &ctx.env;
        let mut conn = conn;
        let (process, ordinal) = conn.key;
        let server = conn.server.clone();
        let h = self.rec.invoke(process, BOp::Login { server, account: account.into(), session: ordinal });
        match conn
            .request("cs_game_server_login", json!({ "user_name": account }), "sc_game_server_login")
            .await
        {
            Ok((v, seq)) if !is_error(&v) => {
                self.rec.ok(h, BRes::Login);
                let at_ns = (self.now)();
                conn.last_heard_ns = at_ns;
                self.log.update(conn.key, |s| s.login = LoginState::Ok { at_ns, seq });
            }
            Ok((v, _)) => {
                // Refused (already logged in elsewhere, or a service failed): keep reading a
                // while, nothing may arrive on it.
                self.rec.fail(h);
                let why = ["error_message", "code"].iter().find_map(|f| v.get(*f).and_then(Value::as_str));
                let why = why.unwrap_or("?").to_string();
                self.log.update(conn.key, |s| {
                    s.login = LoginState::Refused;
                    s.refusal = Some(why);
                });
                let open = Self::read_for(&mut conn, env, Self::ms(env, 300, 1_500)).await;
                return conn.end(if open { EndKind::Closed } else { EndKind::ServerClosed });
            }
            Err(e) => {
                self.rec.info(h);
                self.log.update(conn.key, |s| s.login = LoginState::Unknown);
                return conn.end(end_kind(e));
            }
        }
        let stay = if probe { Self::ms(env, 200, 1_000) } else { Self::ms(env, 2_000, 15_000) };
        let stay_until = env.clock.now() + stay;
        while env.clock.now() < stay_until {
            if ctx.phases.finished() {
                return;
            }
            if !conn.pump(Self::ms(env, 100, 600)).await {
                return conn.end(EndKind::ServerClosed);
            }
            if (self.now)().saturating_sub(conn.last_heard_ns) > STALE_AFTER.as_nanos() as u64 {
                return conn.end(EndKind::GaveUp);
            }
            let what = env.rand.gen_range(0..10);
            if what < 3 && !probe && !self.message(ctx, &mut conn, counter, what).await {
                return;
            }
        }
        if !probe && env.rand.gen_bool(0.5) {
            // Just disconnect.
            return conn.end(EndKind::Closed);
        }
        let invoked = (self.now)();
        self.log.update(conn.key, |s| s.logout_invoked_ns = Some(invoked));
        let h = self.rec.invoke(process, BOp::Logout { server: conn.server.clone(), session: ordinal });
        match conn.request("cs_logout", json!({}), "sc_logout").await {
            Ok((v, seq)) if !is_error(&v) => {
                self.rec.ok(h, BRes::Logout);
                let t = (self.now)();
                self.log.update(conn.key, |s| s.logout_reply = Some((t, seq)));
                // Keep reading: nothing may arrive after the logout.
                let open = Self::read_for(&mut conn, env, Self::ms(env, 300, 1_500)).await;
                conn.end(if open { EndKind::Closed } else { EndKind::ServerClosed });
            }
            Ok(_) => {
                // Refused before anything changed.
                self.rec.fail(h);
                conn.end(EndKind::Closed);
            }
            Err(e) => {
                self.rec.info(h);
                conn.end(end_kind(e));
            }
        }
    }
}

impl ScenarioRun for Run {
    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let run = self.clone();
        async move {
            let env = ctx.env.clone();
            let own = format!("b{}", ctx.index);
            let mut ordinal = 0u32;
            let mut counter = 0u64;
            while !ctx.phases.finished() {
                let i = env.rand.gen_range(0..SERVERS as u64) as usize;
                let Some(c) = GameClient::connect(&env, run.now.clone(), ctx.servers.addr(i)).await else {
                    env.clock.sleep(Run::ms(&env, 200, 800)).await;
                    continue;
                };
                ordinal += 1;
                let server = format!("game-{i}");
                let probe = env.rand.gen_bool(PROBE_PROBABILITY);
                let account = if probe { other_account(&env, ctx.index) } else { own.clone() };
                let now = (run.now)();
                run.log.open(SessionRec {
                    process: ctx.process,
                    ordinal,
                    server: server.clone(),
                    account: account.clone(),
                    connected_ns: now,
                    login: LoginState::Pending,
                    refusal: None,
                    logout_invoked_ns: None,
                    logout_reply: None,
                    end: None,
                });
                let conn = Conn {
                    c,
                    key: (ctx.process, ordinal),
                    server,
                    log: run.log.clone(),
                    now: run.now.clone(),
                    seq: 0,
                    last_heard_ns: now,
                };
                run.session(&ctx, conn, &account, probe, &mut counter).await;
                env.clock.sleep(Run::ms(&env, 50, 500)).await;
            }
        }
        .boxed()
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
            report.merge(crate::checker::liveness_after_heal(&history.ops, &phases, |_| true));
            report
        }
        .boxed()
    }
}

/// What an invoked message operation was.
struct Sent<'a> {
    op_id: usize,
    process: ProcessId,
    /// The sender's account (`""` if its session is unknown).
    from: &'a str,
    server: &'a str,
    /// `None` for a send.
    scope: Option<Scope>,
    /// The addressee of a send.
    to: Option<&'a str>,
    invoke_ns: u64,
}

/// Violations shown per checker; the rest are only counted (`violations.<checker>`).
const SHOWN_PER_CHECKER: u64 = 20;

/// Collects violations, showing the first [`SHOWN_PER_CHECKER`] of each checker.
#[derive(Default)]
struct Flags {
    shown: Vec<(String, String)>,
    counts: BTreeMap<String, u64>,
}

impl Flags {
    fn flag(&mut self, checker: &str, msg: impl Into<String>) {
        let n = self.counts.entry(checker.to_string()).or_default();
        *n += 1;
        if *n <= SHOWN_PER_CHECKER {
            self.shown.push((checker.to_string(), msg.into()));
        }
    }

    fn into_report(self, report: &mut Report) {
        for (checker, msg) in self.shown {
            report.violation(&checker, msg);
        }
        for (checker, n) in self.counts {
            report.count(&format!("violations.{checker}"), n);
            if n > SHOWN_PER_CHECKER {
                report.violation(&checker, format!("... and {} more", n - SHOWN_PER_CHECKER));
            }
        }
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Every safety invariant of the scenario (liveness is checked apart).
///
/// Completeness (rule 3), precisely. Let `B` be a broadcast invoked at `inv ≥ heal + SETTLE`
/// that completed ok at `ok` (the broadcaster got `sc_broadcast {error: false}`), by a session
/// on server `X`. A session `R` is *proven logged in throughout `B`* if
/// - `R`'s login reply arrived before `inv` (so the server had logged it in before `B` was
///   invoked), `VIEW_MARGIN` before if `B` is global and `R` is on another server than `X`;
/// - `R` is on `X` if `B` is local (any game server if global);
/// - `R` received an `sc_tick` at or after `ok + DELIVERY_BOUND`, before any logout reply.
///   A tick is sent only to a link still logged in on a server holding its lease, and a
///   session's link is never logged in again once dropped (the client sends one login per
///   connection), so `R` was logged in, on the same server incarnation, from before `inv` to
///   that tick's sending, which (the bound exceeding any healed one-way latency) came after
///   every delivery of `B`: the server delivers locally and remote servers answer `B`'s RPC
///   only after delivering, all before `ok`. On one connection frames arrive in order, so
///   `B` had to arrive before that tick.
///
/// Then `R` must have received `B`. A send is treated alike, for the sessions of its
/// addressee's account (with the margin whenever they are on another server than the
/// sender's: the sender locates them through ZooKeeper). Counters `completeness.*` give how
/// many (session, operation) pairs were checked.
pub fn check_broadcast(h: &BroadcastHistory, phases: &Phases) -> Report {
    let mut report = Report::default();
    let mut flags = Flags::default();
    let sessions: BTreeMap<SessionKey, &SessionRec> = h.sessions.iter().map(|s| (s.key(), s)).collect();
    let mut by_session: BTreeMap<SessionKey, Vec<&Receipt>> = BTreeMap::new();
    for r in &h.receipts {
        by_session.entry(r.key()).or_default().push(r);
    }
    for rs in by_session.values_mut() {
        rs.sort_by_key(|r| r.seq);
    }

    // Every message operation by id.
    let mut sent: BTreeMap<&str, Sent<'_>> = BTreeMap::new();
    let mut op_counts: BTreeMap<String, u64> = BTreeMap::new();
    for op in &h.ops.ops {
        let outcome = match &op.completion {
            Some((_, crate::history::Outcome::Ok(_))) => "ok",
            Some((_, crate::history::Outcome::Fail)) => "fail",
            _ => "info",
        };
        let (name, id, s) = match &op.op {
            BOp::Broadcast { server, session, scope, id } => {
                let name = if *scope == Scope::Local { "broadcast_local" } else { "broadcast_global" };
                (
                    name,
                    id,
                    Sent {
                        op_id: op.id,
                        process: op.process,
                        from: "",
                        server,
                        scope: Some(*scope),
                        to: None,
                        invoke_ns: op.invoke_ns,
                    }
                    .with_session(&sessions, *session),
                )
            }
            BOp::Send { server, session, to, id } => (
                "send",
                id,
                Sent {
                    op_id: op.id,
                    process: op.process,
                    from: "",
                    server,
                    scope: None,
                    to: Some(to),
                    invoke_ns: op.invoke_ns,
                }
                .with_session(&sessions, *session),
            ),
            BOp::Login { .. } => {
                *op_counts.entry(format!("broadcast.login_{outcome}")).or_default() += 1;
                continue;
            }
            BOp::Logout { .. } => {
                *op_counts.entry(format!("broadcast.logout_{outcome}")).or_default() += 1;
                continue;
            }
        };
        *op_counts.entry(format!("broadcast.{name}_{outcome}")).or_default() += 1;
        if let Some(prev) = sent.insert(id.as_str(), s) {
            flags.flag(
                "workload",
                format!("message id {id} invoked twice (ops {} and {})", prev.op_id, op.id),
            );
        }
    }

    // Rules 1, 2 and 4, receipt by receipt.
    let mut send_receivers: BTreeMap<&str, Vec<SessionKey>> = BTreeMap::new();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for (key, rs) in &by_session {
        let sess = sessions.get(key);
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for r in rs {
            let (kind, id, from) = match &r.what {
                Received::Broadcast { id, from } => ("broadcast", Some(id.as_str()), from.as_str()),
                Received::Message { id, from } => ("message", Some(id.as_str()), from.as_str()),
                Received::Tick { .. } => ("tick", None, ""),
                Received::Other { msg_type } => {
                    // Replies that came too late, `_error`s: not checked, counted by type.
                    *kinds.entry(format!("other_{}", msg_type.trim_start_matches('_'))).or_default() += 1;
                    continue;
                }
            };
            *kinds.entry(kind.to_string()).or_default() += 1;
            let at = format!("process {} session {} frame {} (t={:.3}s)", key.0, key.1, r.seq, secs(r.at_ns));
            let what = id.map_or_else(|| "a tick".to_string(), |id| format!("{kind} {id}"));
            // Rule 2: only while logged in.
            match sess.map(|s| (s.login, s.logout_reply)) {
                None => flags.flag("logged_in", format!("{at}: {what} on an unrecorded session")),
                Some((LoginState::Refused, _)) => {
                    flags.flag("logged_in", format!("{at}: {what} on a session whose login was refused"))
                }
                Some((LoginState::Ok { seq, .. }, _)) if r.seq < seq => {
                    flags.flag("logged_in", format!("{at}: {what} before the login reply (frame {seq})"))
                }
                Some((_, Some((t, seq)))) if r.seq > seq => flags.flag(
                    "logged_in",
                    format!("{at}: {what} after the logout reply (frame {seq}, t={:.3}s)", secs(t)),
                ),
                _ => {}
            }
            let Some(id) = id else { continue };
            // Rule 1: once per session.
            if !seen.insert(id) {
                flags.flag("duplicate", format!("{at}: {what} received again on the same session"));
            }
            // Rule 4: a real operation, as sent.
            let Some(s) = sent.get(id) else {
                flags.flag("phantom", format!("{at}: {what} was never invoked"));
                continue;
            };
            let mut wrong = Vec::new();
            if (kind == "broadcast") != s.scope.is_some() {
                wrong.push("kind".to_string());
            }
            if from != s.from {
                wrong.push(format!("from {from:?} (sent by {:?})", s.from));
            }
            if r.at_ns < s.invoke_ns {
                wrong.push(format!("arrived before its invocation at {:.3}s", secs(s.invoke_ns)));
            }
            if let Some(sess) = sess {
                if let Some(to) = s.to {
                    if sess.account != to {
                        wrong.push(format!("received by {} (sent to {to})", sess.account));
                    }
                }
                if s.scope == Some(Scope::Local) && sess.server != s.server {
                    wrong.push(format!("local broadcast of {} received on {}", s.server, sess.server));
                }
            }
            if !wrong.is_empty() {
                flags.flag(
                    "phantom",
                    format!(
                        "{at}: {what} does not match op {} (process {}): {}",
                        s.op_id,
                        s.process,
                        wrong.join("; ")
                    ),
                );
            }
            if s.scope.is_none() {
                send_receivers.entry(id).or_default().push(*key);
            }
        }
    }
    // Rule 1 for sends: once overall.
    for (id, keys) in &send_receivers {
        if keys.len() > 1 {
            flags
                .flag("duplicate", format!("message {id} received {} times (sessions {keys:?})", keys.len()));
        }
    }

    // Rule 3: completeness after the heal.
    let from_ns = (phases.heal_at + SETTLE).as_nanos() as u64;
    let bound = DELIVERY_BOUND.as_nanos() as u64;
    let margin = VIEW_MARGIN.as_nanos() as u64;
    // Per logged-in session: (login reply time, ticks' arrival times before any logout reply).
    let proofs: Vec<(&SessionRec, u64, Vec<u64>)> = h
        .sessions
        .iter()
        .filter_map(|s| {
            let LoginState::Ok { at_ns, seq: _ } = s.login else { return None };
            let last = s.logout_reply.map_or(u64::MAX, |(_, seq)| seq);
            let ticks = by_session
                .get(&s.key())
                .map(|rs| {
                    rs.iter()
                        .filter(|r| matches!(r.what, Received::Tick { .. }) && r.seq < last)
                        .map(|r| r.at_ns)
                        .collect()
                })
                .unwrap_or_default();
            Some((s, at_ns, ticks))
        })
        .collect();
    let received: BTreeSet<(SessionKey, &str)> = h
        .receipts
        .iter()
        .filter_map(|r| match &r.what {
            Received::Broadcast { id, .. } | Received::Message { id, .. } => Some((r.key(), id.as_str())),
            _ => None,
        })
        .collect();
    let (mut pairs_b, mut pairs_s, mut ops_checked) = (0u64, 0u64, 0u64);
    for op in &h.ops.ops {
        let (server, scope, to, id) = match &op.op {
            BOp::Broadcast { server, scope, id, .. } => (server, Some(*scope), None, id),
            BOp::Send { server, to, id, .. } => (server, None, Some(to), id),
            _ => continue,
        };
        let Some((ok_ns, crate::history::Outcome::Ok(_))) = &op.completion else { continue };
        if op.invoke_ns < from_ns {
            continue;
        }
        ops_checked += 1;
        let deadline = ok_ns + bound;
        for (r, login_ns, ticks) in &proofs {
            let same_server = r.server == *server;
            let in_scope = match (scope, to) {
                (Some(Scope::Local), _) => same_server,
                (Some(Scope::Global), _) => true,
                (None, Some(to)) => r.account == *to,
                (None, None) => false,
            };
            let need_before = if same_server || scope == Some(Scope::Local) { 0 } else { margin };
            if !in_scope
                || login_ns.saturating_add(need_before) >= op.invoke_ns
                || !ticks.iter().any(|&t| t >= deadline)
            {
                continue;
            }
            if scope.is_some() {
                pairs_b += 1;
            } else {
                pairs_s += 1;
            }
            if !received.contains(&(r.key(), id.as_str())) {
                flags.flag(
                    "completeness",
                    format!(
                        "{} {id} (op {}, process {}, on {server}, t={:.3}..{:.3}s) never reached process {} session {} ({} on {}, logged in at {:.3}s, ticked until {:.3}s)",
                        scope.map_or("message", Scope::wire),
                        op.id,
                        op.process,
                        secs(op.invoke_ns),
                        secs(*ok_ns),
                        r.process,
                        r.ordinal,
                        r.account,
                        r.server,
                        secs(*login_ns),
                        secs(ticks.iter().copied().max().unwrap_or(0)),
                    ),
                );
            }
        }
    }

    for (name, n) in op_counts {
        report.count(&name, n);
    }
    for (kind, n) in kinds {
        report.count(&format!("broadcast.received_{kind}"), n);
    }
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    for s in &h.sessions {
        if let Some(why) = &s.refusal {
            let name: String = why
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
                .collect();
            *refusals.entry(name).or_default() += 1;
        }
    }
    for (why, n) in refusals {
        report.count(&format!("broadcast.login_refused_{why}"), n);
    }
    flags.into_report(&mut report);
    report.count("broadcast.sessions", h.sessions.len() as u64);
    report.count(
        "broadcast.sessions_refused",
        h.sessions.iter().filter(|s| s.login == LoginState::Refused).count() as u64,
    );
    report.count("completeness.ops_checked", ops_checked);
    report.count("completeness.broadcast_pairs", pairs_b);
    report.count("completeness.send_pairs", pairs_s);
    report.count("ops", h.ops.ops.len() as u64);
    report
}

impl<'a> Sent<'a> {
    fn with_session(mut self, sessions: &BTreeMap<SessionKey, &'a SessionRec>, session: u32) -> Self {
        if let Some(s) = sessions.get(&(self.process, session)) {
            self.from = &s.account;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Operation, Outcome};

    const S: u64 = 1_000_000_000;

    fn phases() -> Phases {
        Phases {
            now: Arc::new(|| 0),
            heal_at: Duration::from_secs(20),
            end_at: Duration::from_secs(60),
            liveness_bound: Duration::from_secs(10),
        }
    }

    /// Builds histories: processes 1..=3 with accounts b1..b3, one session each.
    struct H(BroadcastHistory);

    impl H {
        fn new() -> H {
            H(BroadcastHistory::default())
        }
        fn session(mut self, p: ProcessId, server: &str, login: LoginState) -> H {
            self.0.sessions.push(SessionRec {
                process: p,
                ordinal: 1,
                server: server.into(),
                account: format!("b{p}"),
                connected_ns: 0,
                login,
                refusal: None,
                logout_invoked_ns: None,
                logout_reply: None,
                end: None,
            });
            self
        }
        fn logout(mut self, p: ProcessId, at: f64, seq: u64) -> H {
            let s = self.0.sessions.iter_mut().find(|s| s.process == p).unwrap();
            s.logout_invoked_ns = Some((at * 1e9) as u64 - 1);
            s.logout_reply = Some(((at * 1e9) as u64, seq));
            self
        }
        fn op(mut self, p: ProcessId, op: BOp, t: f64, done: f64, res: Option<BRes>) -> H {
            let id = self.0.ops.ops.len();
            let outcome = res.map_or(Outcome::Fail, Outcome::Ok);
            let completion = Some(((done * 1e9) as u64, outcome));
            self.0.ops.ops.push(Operation { id, process: p, op, invoke_ns: (t * 1e9) as u64, completion });
            self
        }
        fn broadcast(self, p: ProcessId, server: &str, scope: Scope, id: &str, t: f64) -> H {
            let op = BOp::Broadcast { server: server.into(), session: 1, scope, id: id.into() };
            self.op(p, op, t, t + 0.01, Some(BRes::Broadcast { delivered: 1 }))
        }
        fn send(self, p: ProcessId, server: &str, to: &str, id: &str, t: f64) -> H {
            let op = BOp::Send { server: server.into(), session: 1, to: to.into(), id: id.into() };
            self.op(p, op, t, t + 0.01, Some(BRes::Send { delivered: true }))
        }
        fn recv(mut self, p: ProcessId, seq: u64, t: f64, what: Received) -> H {
            self.0.receipts.push(Receipt { process: p, session: 1, seq, at_ns: (t * 1e9) as u64, what });
            self
        }
        fn bcast_msg(self, p: ProcessId, seq: u64, t: f64, id: &str, from: &str) -> H {
            self.recv(p, seq, t, Received::Broadcast { id: id.into(), from: from.into() })
        }
        fn tick(self, p: ProcessId, seq: u64, t: f64) -> H {
            self.recv(p, seq, t, Received::Tick { seq })
        }
        fn check(&self) -> Report {
            check_broadcast(&self.0, &phases())
        }
    }

    fn logged(seq: u64) -> LoginState {
        LoginState::Ok { at_ns: 25 * S, seq }
    }

    /// b1 on game-0 broadcasts globally at 30 s; b2 (game-1) and b1 get it; both tick after.
    fn good() -> H {
        H::new()
            .session(1, "game-0", logged(1))
            .session(2, "game-1", logged(1))
            .broadcast(1, "game-0", Scope::Global, "p1-1", 30.0)
            .send(1, "game-0", "b2", "p1-2", 31.0)
            .bcast_msg(1, 2, 30.005, "p1-1", "b1")
            .tick(1, 3, 32.0)
            .bcast_msg(2, 2, 30.006, "p1-1", "b1")
            .recv(2, 3, 31.005, Received::Message { id: "p1-2".into(), from: "b1".into() })
            .tick(2, 4, 33.0)
    }

    fn violations_of(r: &Report, checker: &str) -> usize {
        r.violations.iter().filter(|v| v.checker == checker).count()
    }

    #[test]
    fn good_history_passes_and_counts_pairs() {
        let r = good().check();
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!(r.counter("completeness.broadcast_pairs"), 2);
        assert_eq!(r.counter("completeness.send_pairs"), 1);
    }

    #[test]
    fn rule1_duplicate_on_a_session_fails() {
        let r = good().bcast_msg(2, 5, 33.5, "p1-1", "b1").check();
        assert_eq!(violations_of(&r, "duplicate"), 1, "{:?}", r.violations);
        // A send received by two sessions (of its addressee) is a duplicate too.
        let r = good()
            .session(4, "game-2", logged(1))
            .recv(4, 2, 31.01, Received::Message { id: "p1-2".into(), from: "b1".into() })
            .check();
        assert!(violations_of(&r, "duplicate") >= 1, "{:?}", r.violations);
    }

    #[test]
    fn rule2_receipts_outside_the_login_fail() {
        // Before the login reply.
        let r = good().session(3, "game-0", logged(2)).bcast_msg(3, 1, 30.005, "p1-1", "b1").check();
        assert_eq!(violations_of(&r, "logged_in"), 1, "{:?}", r.violations);
        // After the logout reply.
        let r = good().logout(2, 32.5, 5).tick(2, 6, 33.1).check();
        assert_eq!(violations_of(&r, "logged_in"), 1, "{:?}", r.violations);
        // On a refused session.
        let r = good().session(3, "game-0", LoginState::Refused).tick(3, 1, 31.0).check();
        assert_eq!(violations_of(&r, "logged_in"), 1, "{:?}", r.violations);
    }

    #[test]
    fn rule3_missed_broadcast_fails_only_when_proven() {
        let mut h = good();
        h.0.receipts.retain(|r| !(r.process == 2 && matches!(&r.what, Received::Broadcast { .. })));
        let r = h.check();
        assert_eq!(violations_of(&r, "completeness"), 1, "{:?}", r.violations);
        // Not proven: the last tick is before the delivery bound.
        let mut h = good();
        h.0.receipts.retain(|r| r.process != 2 || matches!(&r.what, Received::Message { .. }));
        let h = h.tick(2, 4, 30.5);
        assert!(h.check().ok(), "{:?}", h.check().violations);
        // Not proven: logged in after the invocation.
        let h = good().session(3, "game-0", LoginState::Ok { at_ns: 30 * S + 1, seq: 1 }).tick(3, 2, 33.0);
        assert!(h.check().ok());
        // Not checked: invoked before heal + settle.
        let h = good().broadcast(2, "game-1", Scope::Global, "p2-1", 21.0);
        assert!(h.check().ok());
        // A local broadcast does not concern other servers' sessions.
        let h =
            good().broadcast(2, "game-1", Scope::Local, "p2-2", 30.0).bcast_msg(2, 5, 30.01, "p2-2", "b2");
        let r = h.check();
        assert!(r.ok(), "{:?}", r.violations);
        // A missed send to a proven session fails.
        let mut h = good();
        h.0.receipts.retain(|r| !matches!(&r.what, Received::Message { .. }));
        assert_eq!(violations_of(&h.check(), "completeness"), 1);
    }

    #[test]
    fn rule4_phantom_or_mismatched_messages_fail() {
        let r = good().bcast_msg(2, 5, 33.5, "p9-9", "b9").check();
        assert_eq!(violations_of(&r, "phantom"), 1, "{:?}", r.violations);
        // Wrong sender.
        let r = good().session(3, "game-1", logged(1)).bcast_msg(3, 2, 30.01, "p1-1", "b2").check();
        assert_eq!(violations_of(&r, "phantom"), 1, "{:?}", r.violations);
        // A send received by another account.
        let r = good()
            .session(3, "game-1", logged(1))
            .recv(3, 2, 31.01, Received::Message { id: "p1-2".into(), from: "b1".into() })
            .check();
        assert!(violations_of(&r, "phantom") >= 1, "{:?}", r.violations);
        // A local broadcast received on another server.
        let r = good()
            .broadcast(1, "game-0", Scope::Local, "p1-3", 32.0)
            .bcast_msg(1, 4, 32.005, "p1-3", "b1")
            .bcast_msg(2, 5, 33.5, "p1-3", "b1")
            .check();
        assert_eq!(violations_of(&r, "phantom"), 1, "{:?}", r.violations);
        // A broadcast id arriving as a message.
        let r = good()
            .session(3, "game-1", logged(1))
            .recv(3, 2, 30.01, Received::Message { id: "p1-1".into(), from: "b1".into() })
            .check();
        assert!(violations_of(&r, "phantom") >= 1, "{:?}", r.violations);
    }
}
