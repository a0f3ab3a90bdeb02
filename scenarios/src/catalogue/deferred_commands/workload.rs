//! `deferred_commands`' clients: each plays the farms of its users in turn, one login at a
//! time on a random server, sending packs, purchases and state reads as its [`Kind`] says,
//! and keeping per user what a real client keeps: the last state loaded (its epoch is the
//! basis of new packs), the next pack id, its own copy of the farm played ahead, and the pack
//! and purchase it has sent without an answer yet. The pack side (playing ahead, sending alone,
//! resent or in bursts, recording the answers) is in `workload/packs.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::env::RandExt;
use game::farm::Farm;
use serde_json::{json, Value};

use super::history::{CmdOp, CmdRes, Rec, StateSeen};
use super::{CLIENTS, SERVERS, USERS};
use crate::game_client::{is_error, GameClient, ReqError};
use crate::history::OpHandle;
use crate::scenario::ClientCtx;

mod packs;

/// How long a client waits for an answer (a borrow from an owner that must be waited out
/// takes up to the session timeout, 6 s, and more).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a resender waits for a pack's answer before sending it again on the same
/// connection: shorter than an execution under faults, so resends race the original.
pub const RESEND_TIMEOUT: Duration = Duration::from_millis(700);
/// Most sends of one pack or purchase on one connection.
const SENDS_PER_CONNECTION_MAX: u32 = 3;
/// Most `cs_state` requests of one load (each `sc_retry_after` is obeyed).
const STATE_POLLS_MAX: u32 = 40;
/// Longest `sc_retry_after` wait obeyed as given (longer ones are cut to this).
const RETRY_AFTER_OBEYED_MAX: Duration = Duration::from_secs(2);
/// Requests per login, drawn from this range.
const OPS_PER_LOGIN: std::ops::Range<u64> = 6..20;
/// Pause between two requests, ms, drawn from this range.
const THINK_MS: std::ops::Range<u64> = 60..400;
/// Pause after a failed connect or login, or a `try again`.
const RETRY_PAUSE: Duration = Duration::from_millis(300);
/// In the last this-long of the run clients only read states (no new packs or purchases), so
/// every queue can drain before the final read.
pub const QUIET: Duration = Duration::from_secs(5);
/// Probability that a client closes the game right after sending a burst and launches it
/// again at once on another server (the seed's "closed the game and immediately launched
/// again": the user's state object is lent while its packs are executing).
const RELAUNCH_PROBABILITY: f64 = 0.2;
/// Logins tried after a relaunch before giving up on the user for now.
const RELAUNCH_LOGINS_MAX: u32 = 5;
/// Pause between those logins.
const RELAUNCH_PAUSE: Duration = Duration::from_millis(50);
/// Most packs of a burst.
const BURST_PACKS_MAX: u64 = 4;
/// The building names clients use.
const BUILDINGS: [&str; 4] = ["barn", "mill", "coop", "silo"];

/// How a client plays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kind {
    pub name: &'static str,
    /// Probability that a pack holds a `build` the farm cannot afford (a logical failure).
    pub cheat: f64,
    /// Resends unanswered packs quickly ([`RESEND_TIMEOUT`]) and after reconnecting, and
    /// sometimes resends an acknowledged pack; other clients reload the state instead and
    /// reuse the pack id.
    pub resender: bool,
    /// Probability that a request is a purchase.
    pub buy: f64,
    /// Probability that packs go in a burst, sent back to back without waiting (they queue
    /// up behind each other, so a failure makes the later ones stale).
    pub burst: f64,
}

/// The kind of client `i`: honest, cheating, resender, buyer, then mixes.
pub fn kind_of(i: usize) -> Kind {
    const KINDS: [Kind; 6] = [
        Kind { name: "honest", cheat: 0.0, resender: false, buy: 0.03, burst: 0.2 },
        Kind { name: "cheating", cheat: 0.3, resender: false, buy: 0.03, burst: 0.8 },
        Kind { name: "resender", cheat: 0.05, resender: true, buy: 0.05, burst: 0.3 },
        Kind { name: "buyer", cheat: 0.0, resender: false, buy: 0.4, burst: 0.3 },
        Kind { name: "cheating-resender", cheat: 0.2, resender: true, buy: 0.1, burst: 0.7 },
        Kind { name: "cheating-buyer", cheat: 0.2, resender: false, buy: 0.3, burst: 0.6 },
    ];
    KINDS[i % KINDS.len()]
}

/// The users of client `i`: `i`, `i + CLIENTS`, ... (numeric ids, spread over the shards).
pub fn users_of(client: usize) -> Vec<String> {
    (client..USERS).step_by(CLIENTS).map(|u| u.to_string()).collect()
}

/// A pack as the client sent it, and the farm it believes it has after it.
#[derive(Debug, Clone)]
struct SentPack {
    pack_id: u64,
    basis: u64,
    commands: Vec<Value>,
    after: Farm,
}

/// What a client knows of one of its users.
#[derive(Debug, Clone, Default)]
struct Book {
    /// Its copy of the farm: the last state loaded, played ahead (`None`: none loaded yet).
    local: Option<Farm>,
    /// The epoch of the last state loaded.
    basis: u64,
    /// The id of the next new pack.
    next_pack: u64,
    /// Sent, not answered (resent until it is).
    unacked: Option<SentPack>,
    /// The last acknowledged pack (a resender sends it again now and then).
    last_acked: Option<SentPack>,
    /// A purchase sent and not answered: `(id, gold)`.
    unacked_buy: Option<(String, i64)>,
    /// The last purchase answered.
    last_bought: Option<(String, i64)>,
    /// The state must be loaded before the next pack (after a reload, a refusal, a dropped
    /// pack).
    needs_state: bool,
}

/// What a `cs_state` answered.
enum StateAnswer {
    Loaded,
    RetryAfter(u64),
    TryAgain,
    Refused,
}

/// What an `sc_buy_now` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BuyAnswer {
    /// Bought, or refused for good.
    Done,
    /// The store failed: maybe applied; send it again.
    Server,
    NotLoggedIn,
}

/// Whether the connection can be used further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Usable,
    Done,
    /// The client closed the connection on purpose right after sending: it logs in again
    /// at once as the same user, on another server.
    Relaunch,
}

/// One client process.
pub struct Client {
    pub ctx: ClientCtx,
    pub rec: Rec,
    /// Connections made so far (the current one's number, see [`CmdOp`]).
    pub conns: AtomicU64,
}

impl Client {
    /// The current connection's number: unique in the run.
    fn conn(&self) -> u64 {
        (self.ctx.process << 32) | self.conns.load(Ordering::Relaxed)
    }

    fn kind(&self) -> Kind {
        kind_of(self.ctx.index)
    }

    pub async fn run(self) {
        let env = self.ctx.env.clone();
        let users = users_of(self.ctx.index);
        let mut books: BTreeMap<String, Book> = users.iter().map(|u| (u.clone(), Book::default())).collect();
        let mut purchases = 0u64;
        let mut turn = env.rand.gen_range(0..users.len() as u64) as usize;
        while !self.ctx.phases.finished() && self.ctx.budget.left() {
            turn = (turn + 1) % users.len();
            let user = users[turn].clone();
            let mut server = env.rand.gen_range(0..SERVERS as u64) as usize;
            let book = books.get_mut(&user).expect("a book per user");
            let mut relaunches = None;
            loop {
                match self.login(&user, server).await {
                    Some(mut c) => {
                        if self.session(&mut c, &user, book, &mut purchases).await != Conn::Relaunch {
                            break;
                        }
                        // Closed right after sending packs: launched again at once, elsewhere.
                        server = (server + 1 + env.rand.gen_range(0..SERVERS as u64 - 1) as usize) % SERVERS;
                        relaunches = Some(0);
                    }
                    // The old session may still hold the login for a moment.
                    None if relaunches.is_some_and(|n| n < RELAUNCH_LOGINS_MAX) => {
                        relaunches = relaunches.map(|n| n + 1);
                        env.clock.sleep(RELAUNCH_PAUSE).await;
                    }
                    None => {
                        env.clock.sleep(RETRY_PAUSE).await;
                        break;
                    }
                }
            }
        }
    }

    fn quiet(&self) -> bool {
        self.ctx.phases.elapsed() + QUIET >= self.ctx.phases.end_at
    }

    async fn login(&self, user: &str, server: usize) -> Option<GameClient> {
        let (env, phases) = (&self.ctx.env, &self.ctx.phases);
        let mut c = GameClient::connect(env, phases.now.clone(), self.ctx.servers.addr(server)).await?;
        self.conns.fetch_add(1, Ordering::Relaxed);
        let h = self.rec.invoke(self.ctx.process, CmdOp::Login { user: user.to_string(), server });
        let reply = self.request(
            &mut c,
            "cs_game_server_login",
            json!({ "user_name": user }),
            &["sc_game_server_login"],
            REPLY_TIMEOUT,
        );
        match reply.await {
            Ok((_, v)) if !is_error(&v) => {
                self.rec.ok(h, CmdRes::LoggedIn);
                Some(c)
            }
            Ok(_) => {
                self.rec.fail(h);
                None
            }
            Err(_) => {
                self.rec.info(h);
                None
            }
        }
    }

    /// Requests on one login until the count is done, the connection fails, or the run ends;
    /// then a logout or just a disconnect. [`Conn::Relaunch`]: the client closed the game right
    /// after sending packs and launches it again at once.
    async fn session(&self, c: &mut GameClient, user: &str, book: &mut Book, purchases: &mut u64) -> Conn {
        let env = &self.ctx.env;
        let kind = self.kind();
        if !self.quiet() {
            if let Some((id, gold)) = book.unacked_buy.clone() {
                if self.buy(c, user, book, &id, gold, true).await != Conn::Usable {
                    return Conn::Done;
                }
            }
            if book.unacked.is_some() {
                if kind.resender {
                    if self.send_pack(c, user, book, true).await != Conn::Usable {
                        return Conn::Done;
                    }
                } else {
                    // Not resent: the state says whether it was stored (then it shows in the
                    // state), and its id is used again for the next pack if not.
                    book.unacked = None;
                    book.needs_state = true;
                }
            }
        } else if book.unacked.is_some() {
            book.unacked = None;
            book.needs_state = true;
        }
        if (book.needs_state || book.local.is_none()) && self.load_state(c, user, book).await != Conn::Usable
        {
            return Conn::Done;
        }
        let ops = env.rand.gen_range(OPS_PER_LOGIN);
        for _ in 0..ops {
            // One operation: a state read, a purchase, a resend or a pack.
            if self.ctx.phases.finished() || !self.ctx.budget.take() {
                return Conn::Done;
            }
            let think = Duration::from_millis(env.rand.gen_range(THINK_MS));
            if !c.pump(think).await {
                return Conn::Done;
            }
            let _ = c.take_inbox();
            let pick = env.rand.gen_range(0..1_000_000) as f64 / 1e6;
            let conn = if self.quiet() || book.needs_state || pick < 0.12 {
                self.load_state(c, user, book).await
            } else if pick < 0.12 + kind.buy {
                if kind.resender && env.rand.gen_bool(0.2) && book.last_bought.is_some() {
                    let (id, gold) = book.last_bought.clone().expect("checked");
                    self.buy(c, user, book, &id, gold, true).await
                } else {
                    let id = format!("c{}-{}", self.ctx.index, *purchases);
                    *purchases += 1;
                    let gold = if env.rand.gen_bool(0.1) {
                        env.rand.gen_range(200..1001) as i64
                    } else {
                        env.rand.gen_range(1..121) as i64
                    };
                    book.unacked_buy = Some((id.clone(), gold));
                    self.buy(c, user, book, &id, gold, false).await
                }
            } else if kind.resender && env.rand.gen_bool(0.15) && book.last_acked.is_some() {
                self.resend_acked(c, user, book).await
            } else {
                self.play(c, user, book, purchases).await
            };
            if conn != Conn::Usable {
                return conn;
            }
        }
        if env.rand.gen_bool(0.5) {
            let _ = self.request(c, "cs_logout", json!({}), &["sc_logout"], REPLY_TIMEOUT).await;
        }
        Conn::Done
    }

    /// Plays new packs and sends them: one, or (a burst) two to four sent back to back without
    /// waiting, so they queue behind each other on the server, maybe with a state read right
    /// behind them.
    async fn play(&self, c: &mut GameClient, user: &str, book: &mut Book, purchases: &mut u64) -> Conn {
        let env = &self.ctx.env;
        let kind = self.kind();
        let Some(mut local) = book.local.clone() else { return self.load_state(c, user, book).await };
        let n = if env.rand.gen_bool(kind.burst) { env.rand.gen_range(2..BURST_PACKS_MAX + 1) } else { 1 };
        let mut packs = Vec::new();
        for i in 0..n {
            let (commands, after) = self.make_pack(&local, env.rand.gen_bool(kind.cheat));
            packs.push(SentPack {
                pack_id: book.next_pack + i,
                basis: book.basis,
                commands,
                after: after.clone(),
            });
            local = after;
        }
        if n == 1 {
            book.unacked = packs.pop();
            return self.send_pack(c, user, book, false).await;
        }
        self.send_burst(c, user, book, packs, purchases).await
    }

    /// Sends a purchase (again, if `retry`) until it is answered definitely or the connection
    /// is given up.
    async fn buy(
        &self,
        c: &mut GameClient,
        user: &str,
        book: &mut Book,
        id: &str,
        gold: i64,
        mut retry: bool,
    ) -> Conn {
        for _ in 0..SENDS_PER_CONNECTION_MAX {
            let op = CmdOp::BuyNow { user: user.to_string(), purchase_id: id.to_string(), gold, retry };
            let h = self.rec.invoke(self.ctx.process, op);
            retry = true;
            let reply = self
                .request_matching(
                    c,
                    "cs_buy_now",
                    json!({"purchase_id": id, "gold": gold}),
                    &["sc_buy_now"],
                    REPLY_TIMEOUT,
                    |v| v.get("purchase_id").and_then(Value::as_str).is_none_or(|p| p == id),
                )
                .await;
            let v = match reply {
                Ok((_, v)) => v,
                Err(_) => {
                    self.rec.info(h);
                    return Conn::Done;
                }
            };
            match self.record_buy(h, &v, id, gold, book) {
                BuyAnswer::Done => return Conn::Usable,
                BuyAnswer::Server => {
                    if !c.pump(RETRY_PAUSE).await {
                        return Conn::Done;
                    }
                }
                BuyAnswer::NotLoggedIn => return Conn::Done,
            }
        }
        Conn::Done
    }

    /// Records an `sc_buy_now` answer to purchase `id` and takes it into the book.
    fn record_buy(&self, h: OpHandle, v: &Value, id: &str, gold: i64, book: &mut Book) -> BuyAnswer {
        if !is_error(v) {
            let balance = v.get("gold").and_then(Value::as_i64).unwrap_or(i64::MIN);
            let epoch = v.get("epoch").and_then(Value::as_u64).unwrap_or(0);
            let duplicate = v.get("duplicate").and_then(Value::as_bool).unwrap_or(false);
            self.rec.ok(h, CmdRes::Bought { gold: balance, epoch, duplicate });
            // The purchase is in the server's state from now on; it is news to this client's
            // copy unless it had been answered before.
            let known = book.last_bought.as_ref().is_some_and(|(p, _)| p == id);
            if book.unacked_buy.as_ref().is_some_and(|(p, _)| p == id) {
                book.unacked_buy = None;
            }
            if !known {
                if let Some(l) = &mut book.local {
                    l.gold += gold;
                }
                book.last_bought = Some((id.to_string(), gold));
            }
            return BuyAnswer::Done;
        }
        match v.get("code").and_then(Value::as_str) {
            Some("server") => {
                self.rec.info(h);
                BuyAnswer::Server
            }
            Some(code) => {
                self.rec.ok(h, CmdRes::Refused { code: code.to_string(), expected: None });
                book.unacked_buy = None;
                BuyAnswer::Done
            }
            None => {
                self.rec.fail(h);
                BuyAnswer::NotLoggedIn
            }
        }
    }

    /// Loads the user's state (`cs_state`, obeying `sc_retry_after`): the client's copy, the
    /// basis of its next packs and the next pack id come from it.
    async fn load_state(&self, c: &mut GameClient, user: &str, book: &mut Book) -> Conn {
        for _ in 0..STATE_POLLS_MAX {
            let h =
                self.rec.invoke(self.ctx.process, CmdOp::State { user: user.to_string(), conn: self.conn() });
            let reply =
                self.request(c, "cs_state", json!({}), &["sc_state", "sc_retry_after"], REPLY_TIMEOUT).await;
            let Ok((t, v)) = reply else {
                self.rec.info(h);
                return Conn::Done;
            };
            let wait = match self.record_state(h, &t, &v, user, book) {
                StateAnswer::Loaded => return Conn::Usable,
                StateAnswer::RetryAfter(ms) => Duration::from_millis(ms).min(RETRY_AFTER_OBEYED_MAX),
                StateAnswer::TryAgain => RETRY_PAUSE,
                StateAnswer::Refused => return Conn::Done,
            };
            if !c.pump(wait).await {
                return Conn::Done;
            }
        }
        Conn::Done
    }

    /// Records a `cs_state` answer (`t`, `v`) and, if it is a state, takes it into the book.
    fn record_state(&self, h: OpHandle, t: &str, v: &Value, user: &str, book: &mut Book) -> StateAnswer {
        if t == "sc_retry_after" {
            let ms = v.get("ms").and_then(Value::as_u64).unwrap_or(100);
            self.rec.ok(h, CmdRes::RetryAfter { ms });
            return StateAnswer::RetryAfter(ms);
        }
        let state = v.get("state").cloned().map(serde_json::from_value::<StateSeen>);
        match state {
            Some(Ok(s)) if !is_error(v) => {
                self.rec.ok(h, CmdRes::State(s.clone()));
                book.local = Some(Farm { user: user.to_string(), gold: s.gold, buildings: s.buildings });
                book.basis = s.epoch;
                book.next_pack = s.next_pack;
                book.needs_state = false;
                book.unacked = None;
                StateAnswer::Loaded
            }
            _ => {
                // `try again` or `Not logged in`: nothing read.
                self.rec.fail(h);
                if v.get("error_message").and_then(Value::as_str) == Some("try again") {
                    StateAnswer::TryAgain
                } else {
                    StateAnswer::Refused
                }
            }
        }
    }

    async fn request(
        &self,
        c: &mut GameClient,
        msg: &str,
        body: Value,
        replies: &[&str],
        wait: Duration,
    ) -> Result<(String, Value), ReqError> {
        self.request_matching(c, msg, body, replies, wait, |_| true).await
    }

    /// Sends and waits for a reply of one of `replies` that `matches` (others — late answers
    /// to an earlier send — are skipped).
    async fn request_matching(
        &self,
        c: &mut GameClient,
        msg: &str,
        body: Value,
        replies: &[&str],
        wait: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<(String, Value), ReqError> {
        c.send(msg, &body).await?;
        let deadline = self.ctx.env.clock.now() + wait;
        loop {
            let left = deadline.saturating_since(self.ctx.env.clock.now());
            let (t, v) = c.wait_for(replies, left).await?;
            if matches(&v) {
                return Ok((t, v));
            }
        }
    }
}
