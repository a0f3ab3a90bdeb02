//! The `broadcast` workload: a client's connections, each a login, a stay reading what the
//! server pushes (and sending broadcasts and messages), then a logout or a disconnect.

use std::time::Duration;

use engine::env::{Env, RandExt};
use engine::session::codec;
use serde_json::{json, Value};

use super::history::{
    BOp, BRes, EndKind, LoginState, Receipt, Received, Scope, SessionKey, SessionLog, SessionRec,
};
use super::{Run, CLIENTS, PROBE_PROBABILITY, SERVERS, STALE_AFTER};
use crate::game_client::{is_error, GameClient, Pushed, ReqError};
use crate::history::{OpHandle, TimeSource};
use crate::scenario::ClientCtx;

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

    /// The workload of one client incarnation: connection after connection until the end.
    pub(super) async fn client_loop(&self, ctx: ClientCtx) {
        let env = ctx.env.clone();
        let own = format!("b{}", ctx.index);
        let mut ordinal = 0u32;
        let mut counter = 0u64;
        // One operation: a connection (login or probe, messages, logout or disconnect).
        while !ctx.phases.finished() && ctx.budget.take() {
            let i = env.rand.gen_range(0..SERVERS as u64) as usize;
            let Some(c) = GameClient::connect(&env, self.now.clone(), ctx.servers.addr(i)).await else {
                env.clock.sleep(Self::ms(&env, 200, 800)).await;
                continue;
            };
            ordinal += 1;
            let server = format!("game-{i}");
            let probe = env.rand.gen_bool(PROBE_PROBABILITY);
            let account = if probe { other_account(&env, ctx.index) } else { own.clone() };
            let now = (self.now)();
            self.log.open(SessionRec {
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
                log: self.log.clone(),
                now: self.now.clone(),
                seq: 0,
                last_heard_ns: now,
            };
            self.session(&ctx, conn, &account, probe, &mut counter).await;
            env.clock.sleep(Self::ms(&env, 50, 500)).await;
        }
    }
}
