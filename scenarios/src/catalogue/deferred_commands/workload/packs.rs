//! The pack side of a `deferred_commands` client: playing packs ahead, sending them (alone,
//! resent, or in bursts, maybe with a purchase and a state read among them) and recording what
//! the server answered.

use std::time::Duration;

use engine::env::RandExt;
use game::farm::{self, Farm, COST_MAX};
use serde_json::{json, Value};

use super::super::history::{CmdOp, CmdRes};
use super::{
    Book, BuyAnswer, Client, Conn, SentPack, BUILDINGS, RELAUNCH_PROBABILITY, REPLY_TIMEOUT, RESEND_TIMEOUT,
    RETRY_AFTER_OBEYED_MAX, RETRY_PAUSE, SENDS_PER_CONNECTION_MAX,
};
use crate::game_client::{GameClient, ReqError};
use crate::history::OpHandle;

impl SentPack {
    /// The history operation of sending it.
    fn op(&self, user: &str, conn: u64, resend: bool) -> CmdOp {
        CmdOp::Pack {
            user: user.to_string(),
            conn,
            pack_id: self.pack_id,
            basis: self.basis,
            commands: self.commands.clone(),
            resend,
        }
    }

    /// The `cs_commands` body.
    fn body(&self) -> Value {
        json!({"pack_id": self.pack_id, "basis": self.basis, "commands": self.commands})
    }
}

/// What the server answered to a pack, as far as the client acts on it.
#[derive(Debug, PartialEq, Eq)]
enum PackAnswer {
    /// `sc_commands_ack`: stored (maybe before, `resent`).
    Acked,
    /// `sc_reload`: not stored; the state must be loaded again.
    Reload,
    /// `sc_commands` with code `server`: the store failed, the pack may be stored.
    Server,
    /// `sc_commands` with another code (`gap`, `full`, ...): not stored.
    Refused(String),
    /// An `_error`-style answer without a code (not logged in): nothing was stored.
    NotLoggedIn,
}

impl Client {
    /// Sends `p` (a resend if `resend`) and waits up to `wait` for its answer; the history
    /// handle of the send, to complete with the answer.
    async fn request_pack(
        &self,
        c: &mut GameClient,
        user: &str,
        p: &SentPack,
        resend: bool,
        wait: Duration,
    ) -> (OpHandle, Result<(String, Value), ReqError>) {
        let h = self.rec.invoke(self.ctx.process, p.op(user, self.conn(), resend));
        let reply = self
            .request_matching(
                c,
                "cs_commands",
                p.body(),
                &["sc_commands_ack", "sc_reload", "sc_commands"],
                wait,
                |v| v.get("pack_id").and_then(Value::as_u64).is_none_or(|id| id == p.pack_id),
            )
            .await;
        (h, reply)
    }

    /// Records a pack's answer `t {v}` on `h` and says what it was.
    fn record_pack(&self, h: OpHandle, t: &str, v: &Value) -> PackAnswer {
        match t {
            "sc_commands_ack" => {
                let resent = v.get("resent").and_then(Value::as_bool).unwrap_or(false);
                self.rec.ok(h, CmdRes::Acked { resent });
                PackAnswer::Acked
            }
            "sc_reload" => {
                let epoch = v.get("epoch").and_then(Value::as_u64).unwrap_or(0);
                self.rec.ok(h, CmdRes::Reload { epoch });
                PackAnswer::Reload
            }
            _ => match v.get("code").and_then(Value::as_str) {
                Some("server") => {
                    self.rec.info(h);
                    PackAnswer::Server
                }
                Some(code) => {
                    let expected = v.get("expected").and_then(Value::as_u64);
                    self.rec.ok(h, CmdRes::Refused { code: code.to_string(), expected });
                    PackAnswer::Refused(code.to_string())
                }
                None => {
                    self.rec.fail(h);
                    PackAnswer::NotLoggedIn
                }
            },
        }
    }

    /// Sends `packs` (consecutive ids) back to back, and maybe a `cs_state` behind them, then
    /// collects the answers. The acknowledged prefix counts; anything else makes the client
    /// load the state again (a pack after a refused one is refused as a gap).
    pub(super) async fn send_burst(
        &self,
        c: &mut GameClient,
        user: &str,
        book: &mut Book,
        packs: Vec<SentPack>,
        purchases: &mut u64,
    ) -> Conn {
        let env = &self.ctx.env;
        let kind_buy = self.kind().buy;
        let first = packs[0].pack_id;
        let mut handles = Vec::new();
        let mut messages = Vec::new();
        for p in &packs {
            handles.push(Some(self.rec.invoke(self.ctx.process, p.op(user, self.conn(), false))));
            messages.push(("cs_commands", p.body()));
        }
        // A purchase among the packs (after the first): it commits while they wait or run.
        let purchase = (book.unacked_buy.is_none() && env.rand.gen_bool(kind_buy)).then(|| {
            let id = format!("c{}-{}", self.ctx.index, *purchases);
            *purchases += 1;
            let gold = env.rand.gen_range(1..121) as i64;
            let at = env.rand.gen_range(1..messages.len() as u64 + 1) as usize;
            messages.insert(at, ("cs_buy_now", json!({"purchase_id": id, "gold": gold})));
            book.unacked_buy = Some((id.clone(), gold));
            let op = CmdOp::BuyNow { user: user.to_string(), purchase_id: id.clone(), gold, retry: false };
            (self.rec.invoke(self.ctx.process, op), id, gold)
        });
        let read = env.rand.gen_bool(0.5).then(|| {
            messages.push(("cs_state", json!({})));
            self.rec.invoke(self.ctx.process, CmdOp::State { user: user.to_string(), conn: self.conn() })
        });
        let sent = c.send_many(&messages).await.is_ok();
        if sent && !self.quiet() && env.rand.gen_bool(RELAUNCH_PROBABILITY) {
            for h in handles.into_iter().flatten() {
                self.rec.info(h);
            }
            if let Some((h, _, _)) = purchase {
                self.rec.info(h);
            }
            if let Some(h) = read {
                self.rec.info(h);
            }
            book.unacked = None;
            book.needs_state = true;
            return Conn::Relaunch;
        }
        let mut answers: Vec<Option<(String, Value)>> = vec![None; packs.len()];
        let mut state_answer: Option<(String, Value)> = None;
        let mut buy_answer: Option<Value> = None;
        let deadline = env.clock.now() + REPLY_TIMEOUT;
        let types =
            ["sc_commands_ack", "sc_reload", "sc_commands", "sc_state", "sc_retry_after", "sc_buy_now"];
        while sent
            && (answers.iter().any(Option::is_none)
                || (read.is_some() && state_answer.is_none())
                || (purchase.is_some() && buy_answer.is_none()))
        {
            let left = deadline.saturating_since(env.clock.now());
            let Ok((t, v)) = c.wait_for(&types, left).await else { break };
            if t == "sc_state" || t == "sc_retry_after" {
                state_answer = Some((t, v));
                continue;
            }
            if t == "sc_buy_now" {
                let ours = purchase.as_ref().is_some_and(|(_, id, _)| {
                    v.get("purchase_id").and_then(Value::as_str).is_none_or(|p| p == id)
                });
                if ours {
                    buy_answer = Some(v);
                }
                continue;
            }
            let Some(id) = v.get("pack_id").and_then(Value::as_u64) else { continue };
            if let Some(slot) = id.checked_sub(first).and_then(|i| answers.get_mut(i as usize)) {
                slot.get_or_insert((t, v));
            }
        }
        let mut acked_prefix = 0;
        let mut all_acked = true;
        for (i, h) in handles.iter_mut().enumerate() {
            let h = h.take().expect("each handle completed once");
            match &answers[i] {
                Some((t, v)) => {
                    if self.record_pack(h, t, v) == PackAnswer::Acked && all_acked {
                        acked_prefix = i + 1;
                    } else {
                        all_acked = false;
                    }
                }
                None => {
                    all_acked = false;
                    self.rec.info(h);
                }
            }
        }
        if let Some(p) = acked_prefix.checked_sub(1).map(|i| &packs[i]) {
            book.next_pack = p.pack_id + 1;
            book.local = Some(p.after.clone());
            book.last_acked = Some(p.clone());
        }
        book.unacked = None;
        if acked_prefix < packs.len() {
            book.needs_state = true;
        }
        let mut bought = true;
        if let Some((h, id, gold)) = purchase {
            bought = match buy_answer {
                Some(v) => self.record_buy(h, &v, &id, gold, book) == BuyAnswer::Done,
                None => {
                    self.rec.info(h);
                    false
                }
            };
        }
        if let Some(h) = read {
            match state_answer {
                Some((t, v)) => {
                    let _ = self.record_state(h, &t, &v, user, book);
                }
                None => self.rec.info(h),
            }
        }
        let answered = answers.iter().all(Option::is_some) && bought;
        if !answered {
            return Conn::Done;
        }
        if book.needs_state {
            return self.load_state(c, user, book).await;
        }
        Conn::Usable
    }

    /// 1 to 4 commands the client's copy of the farm allows (and, if `cheat`, one `build` it
    /// cannot afford, which the client believes it could), and the farm it believes it has
    /// after them.
    pub(super) fn make_pack(&self, local: &Farm, cheat: bool) -> (Vec<Value>, Farm) {
        let env = &self.ctx.env;
        let set = farm::command_set();
        let n = env.rand.gen_range(1..5);
        let cheat_at = cheat.then(|| env.rand.gen_range(0..n));
        let mut l = local.clone();
        let mut commands = Vec::new();
        for i in 0..n {
            let building = BUILDINGS[env.rand.gen_range(0..BUILDINGS.len() as u64) as usize];
            if cheat_at == Some(i) {
                if l.gold < COST_MAX {
                    let cost = (l.gold + env.rand.gen_range(1..81) as i64).clamp(1, COST_MAX);
                    commands.push(json!({"op": "build", "building": building, "cost": cost}));
                    // The cheater "threw money to himself": it believes it built it.
                    l.gold = 0;
                    *l.buildings.entry(building.to_string()).or_insert(0) += 1;
                } else {
                    commands.push(json!({"op": "sell", "building": "ghost"}));
                    l.gold += farm::SELL_REFUND;
                }
                continue;
            }
            let owned: Vec<String> = l.buildings.keys().cloned().collect();
            let pick = env.rand.gen_range(0..10);
            let cost = env.rand.gen_range(5..61) as i64;
            let command = if pick < 4 && l.gold >= cost {
                json!({"op": "build", "building": building, "cost": cost})
            } else if pick < 7 && !owned.is_empty() {
                let b = &owned[env.rand.gen_range(0..owned.len() as u64) as usize];
                json!({"op": "collect", "building": b})
            } else if pick < 8 && !owned.is_empty() {
                let b = &owned[env.rand.gen_range(0..owned.len() as u64) as usize];
                json!({"op": "sell", "building": b})
            } else {
                json!({"op": "earn", "amount": env.rand.gen_range(1..farm::EARN_MAX as u64 + 1)})
            };
            if set.apply(&command, &mut l).is_ok() {
                commands.push(command);
            }
        }
        if commands.is_empty() {
            let command = json!({"op": "earn", "amount": 1});
            let _ = set.apply(&command, &mut l);
            commands.push(command);
        }
        (commands, l)
    }

    /// Sends `book.unacked` until it is answered definitely, the connection is given up, or
    /// (not a resender) its one wait ends.
    pub(super) async fn send_pack(
        &self,
        c: &mut GameClient,
        user: &str,
        book: &mut Book,
        mut resend: bool,
    ) -> Conn {
        let kind = self.kind();
        let wait = if kind.resender { RESEND_TIMEOUT } else { REPLY_TIMEOUT };
        for _ in 0..SENDS_PER_CONNECTION_MAX {
            let p = book.unacked.clone().expect("a pack to send");
            let (h, reply) = self.request_pack(c, user, &p, resend, wait).await;
            resend = true;
            let (t, v) = match reply {
                Ok(r) => r,
                Err(ReqError::Lost) if kind.resender => {
                    // Maybe slow, maybe lost: send it again on this connection.
                    self.rec.info(h);
                    continue;
                }
                Err(_) => {
                    self.rec.info(h);
                    return Conn::Done;
                }
            };
            match self.record_pack(h, &t, &v) {
                PackAnswer::Acked => {
                    book.next_pack = p.pack_id + 1;
                    book.local = Some(p.after.clone());
                    book.last_acked = Some(p);
                    book.unacked = None;
                    return Conn::Usable;
                }
                PackAnswer::Reload => {
                    book.unacked = None;
                    return self.load_state(c, user, book).await;
                }
                PackAnswer::Server => {
                    // The store failed: maybe stored. Resend after a pause.
                    if !c.pump(RETRY_PAUSE).await {
                        return Conn::Done;
                    }
                }
                PackAnswer::Refused(code) if code == "full" => {
                    let ms = v.get("retry_after_ms").and_then(Value::as_u64).unwrap_or(100);
                    let wait = Duration::from_millis(ms).min(RETRY_AFTER_OBEYED_MAX);
                    if !c.pump(wait).await {
                        return Conn::Done;
                    }
                }
                PackAnswer::Refused(_) => {
                    // gap, future_basis, malformed: not stored; start again from the state.
                    book.unacked = None;
                    book.needs_state = true;
                    return self.load_state(c, user, book).await;
                }
                // `Not logged in`: nothing was stored; log in again.
                PackAnswer::NotLoggedIn => return Conn::Done,
            }
        }
        Conn::Done
    }

    /// A resender sends its last acknowledged pack again: it must be acknowledged again
    /// (`resent`), never stored twice.
    pub(super) async fn resend_acked(&self, c: &mut GameClient, user: &str, book: &mut Book) -> Conn {
        let p = book.last_acked.clone().expect("checked by the caller");
        let (h, reply) = self.request_pack(c, user, &p, true, REPLY_TIMEOUT).await;
        match reply {
            Ok((t, v)) => match self.record_pack(h, &t, &v) {
                PackAnswer::NotLoggedIn => Conn::Done,
                _ => Conn::Usable,
            },
            Err(_) => {
                self.rec.info(h);
                Conn::Done
            }
        }
    }
}
