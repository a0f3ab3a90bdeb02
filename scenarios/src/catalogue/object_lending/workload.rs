//! `object_lending`'s clients: each logs in as its users in turn, on a random server, and
//! sends gifts, trades and inventory reads to other users, in rounds shared by every client.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::env::{lock, RandExt};
use serde_json::{json, Value};

use super::history::{Inbox, InvOp, InvRes, Rec, Received};
use super::{CLIENTS, SERVERS, USERS};
use crate::game_client::{is_error, GameClient, ReqError};
use crate::history::OpHandle;
use crate::scenario::ClientCtx;

/// Every client sends at most one request per round, at the round's start (true time), so
/// clients on one server often hit the same two inventories at the same instant: the races
/// the lock order is about.
pub const ROUND: Duration = Duration::from_millis(400);
/// How long a client waits for the answer to one request (a borrow from an owner that must
/// be waited out takes up to the session timeout, 6 s, and more).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests per login, drawn from this range.
const OPS_PER_LOGIN: std::ops::Range<u64> = 2..12;
/// Pause after a failed connect or login.
const RETRY_PAUSE: Duration = Duration::from_millis(300);
/// Probability that a request targets a user logged in on the client's own server (when
/// there is one), rather than any other user.
const SAME_SERVER_PROBABILITY: f64 = 0.6;

/// The users of client `i`: `i`, `i + CLIENTS`, ... (numeric ids, spread over the shards).
pub fn users_of(client: usize) -> Vec<String> {
    (client..USERS).step_by(CLIENTS).map(|u| u.to_string()).collect()
}

/// Which server each logged-in user is on, as the clients know it (shared by the clients to
/// aim requests at users on the same server).
#[derive(Clone, Default)]
pub struct Whereabouts(Arc<Mutex<BTreeMap<String, usize>>>);

impl Whereabouts {
    fn set(&self, user: &str, server: Option<usize>) {
        let mut m = lock(&self.0);
        match server {
            Some(s) => m.insert(user.to_string(), s),
            None => m.remove(user),
        };
    }
    fn on(&self, server: usize, except: &str) -> Vec<String> {
        lock(&self.0)
            .iter()
            .filter(|(u, s)| **s == server && u.as_str() != except)
            .map(|(u, _)| u.clone())
            .collect()
    }
}

/// One client process.
pub struct Client {
    pub ctx: ClientCtx,
    pub rec: Rec,
    pub inbox: Inbox,
    pub whereabouts: Whereabouts,
}

impl Client {
    pub async fn run(self) {
        let env = self.ctx.env.clone();
        let users = users_of(self.ctx.index);
        let mut turn = env.rand.gen_range(0..users.len() as u64) as usize;
        while !self.ctx.phases.finished() && self.ctx.budget.left() {
            turn = (turn + 1) % users.len();
            let user = users[turn].clone();
            let server = env.rand.gen_range(0..SERVERS as u64) as usize;
            match self.login(&user, server).await {
                Some(c) => {
                    self.whereabouts.set(&user, Some(server));
                    self.session(c, &user, server).await;
                    self.whereabouts.set(&user, None);
                }
                None => env.clock.sleep(RETRY_PAUSE).await,
            }
        }
    }

    async fn login(&self, user: &str, server: usize) -> Option<GameClient> {
        let (env, phases) = (&self.ctx.env, &self.ctx.phases);
        let mut c = GameClient::connect(env, phases.now.clone(), self.ctx.servers.addr(server)).await?;
        let h = self.rec.invoke(self.ctx.process, InvOp::Login { user: user.to_string(), server });
        let reply = self.request(
            &mut c,
            "cs_game_server_login",
            json!({ "user_name": user }),
            "sc_game_server_login",
        );
        match reply.await {
            Ok(v) if !is_error(&v) => {
                self.rec.ok(h, InvRes::LoggedIn);
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
    /// then a logout or just a disconnect.
    async fn session(&self, mut c: GameClient, user: &str, server: usize) {
        let (env, phases) = (&self.ctx.env, &self.ctx.phases);
        let ops = env.rand.gen_range(OPS_PER_LOGIN);
        for _ in 0..ops {
            // One operation: a gift, trade or inventory read.
            if phases.finished() || !self.ctx.budget.take() || !self.wait_round(&mut c, user).await {
                return;
            }
            if !self.one_request(&mut c, user, server).await {
                return;
            }
        }
        if env.rand.gen_bool(0.5) {
            let _ = self.request(&mut c, "cs_logout", json!({}), "sc_logout").await;
            self.collect(&mut c, user);
        }
    }

    /// Reads until the next round starts; false if the connection ended.
    async fn wait_round(&self, c: &mut GameClient, user: &str) -> bool {
        let now = self.ctx.phases.elapsed().as_nanos() as u64;
        let round = ROUND.as_nanos() as u64;
        let left = Duration::from_nanos(round - now % round);
        let open = c.pump(left).await;
        self.collect(c, user);
        open
    }

    /// One gift, trade or inventory read. False if the connection is no longer usable.
    async fn one_request(&self, c: &mut GameClient, user: &str, server: usize) -> bool {
        let env = &self.ctx.env;
        let near = self.whereabouts.on(server, user);
        let other = if !near.is_empty() && env.rand.gen_bool(SAME_SERVER_PROBABILITY) {
            near[env.rand.gen_range(0..near.len() as u64) as usize].clone()
        } else {
            let mut o = env.rand.gen_range(0..USERS as u64 - 1) as usize;
            if o.to_string() == user {
                o = USERS - 1;
            }
            o.to_string()
        };
        let pick = env.rand.gen_range(0..100);
        let (op, msg, body, reply) = if pick < 55 {
            let (item, count) = self.some_items();
            let op = InvOp::Gift { from: user.into(), to: other.clone(), item: item.clone(), count };
            (op, "cs_gift", json!({"to": other, "item": item, "count": count}), "sc_gift")
        } else if pick < 85 {
            let (gi, gc) = self.some_items();
            let (ti, tc) = self.some_items();
            let give = BTreeMap::from([(gi, gc)]);
            let take = if ti == *give.keys().next().expect("one") {
                BTreeMap::new()
            } else {
                BTreeMap::from([(ti, tc)])
            };
            let body = json!({"with": other, "give": give, "take": take});
            (InvOp::Trade { user: user.into(), with: other, give, take }, "cs_trade", body, "sc_trade")
        } else {
            (InvOp::Inventory { user: user.into() }, "cs_inventory", json!({}), "sc_inventory")
        };
        let h = self.rec.invoke(self.ctx.process, op);
        let reply = self.request(c, msg, body, reply).await;
        self.collect(c, user);
        self.complete(h, reply)
    }

    /// An item and a count: gold (1..30), potions (1..4) or a sword.
    fn some_items(&self) -> (String, i64) {
        let env = &self.ctx.env;
        match env.rand.gen_range(0..3) {
            0 => ("gold".into(), env.rand.gen_range(1..30) as i64),
            1 => ("potion".into(), env.rand.gen_range(1..4) as i64),
            _ => ("sword".into(), 1),
        }
    }

    /// Records a reply; false if the connection is no longer usable.
    fn complete(&self, h: OpHandle, reply: Result<Value, ReqError>) -> bool {
        let v = match reply {
            Ok(v) => v,
            Err(_) => {
                self.rec.info(h);
                return false;
            }
        };
        if !is_error(&v) {
            match serde_json::from_value::<BTreeMap<String, i64>>(
                v.get("items").cloned().unwrap_or(Value::Null),
            ) {
                Ok(items) if v.get("user_name").is_some() => {
                    let gold = v.get("gold").and_then(Value::as_i64).unwrap_or(-1);
                    self.rec.ok(h, InvRes::Read { gold, items });
                }
                _ => self.rec.ok(h, InvRes::Applied),
            }
            return true;
        }
        let why = v.get("error_message").and_then(Value::as_str).unwrap_or("?").to_string();
        match why.as_str() {
            game::inventory::OUTCOME_UNKNOWN => self.rec.info(h),
            game::inventory::TRY_AGAIN | "Not logged in" => self.rec.fail(h),
            _ => self.rec.ok(h, InvRes::Refused(why)),
        }
        true
    }

    async fn request(
        &self,
        c: &mut GameClient,
        msg: &str,
        body: Value,
        reply: &str,
    ) -> Result<Value, ReqError> {
        c.send(msg, &body).await?;
        c.wait_for(&[reply], REPLY_TIMEOUT).await.map(|(_, v)| v)
    }

    /// Moves the pushed `sc_gift_received` messages to the run's inbox.
    fn collect(&self, c: &mut GameClient, user: &str) {
        for p in c.take_inbox() {
            if p.msg_type != game::gift::SC_GIFT_RECEIVED {
                continue;
            }
            let b = &p.body;
            self.inbox.push(Received {
                user: user.to_string(),
                from: b.get("from").and_then(Value::as_str).unwrap_or("?").to_string(),
                item: b.get("item").and_then(Value::as_str).unwrap_or("?").to_string(),
                count: b.get("count").and_then(Value::as_i64).unwrap_or(0),
                at_ns: p.at_ns,
            });
        }
    }
}
