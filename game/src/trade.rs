//! `cs_trade {with, give: {item: count}, take: {item: count}}` ->
//! `sc_trade {error: false, gold, items}` (the trader's inventory after the trade).
//!
//! The trader gives `give` to user `with` and takes `take` from them, in one two-object
//! transaction (both inventories taken with `lock_all`, often on two servers' and two SQL
//! instances' worth of objects): both inventories change atomically or not at all. Item name
//! [`GOLD`](crate::inventory::GOLD) means the gold field. The partner is not asked (the seed's
//! example is about the transaction, not about consent).
//!
//! Refusals: `counts must be positive`, `empty trade`, `cannot trade with yourself`,
//! `unknown partner` (no inventory), `not enough items` (the trader lacks part of `give`),
//! `partner has not enough items` (the partner lacks part of `take`), `try again`,
//! `outcome unknown`, `Not logged in` (see [`crate::inventory`]).
//!
//! Both body forms ([`crate::wire`]): in the protobuf form `give` and `take` are
//! `map<string, int64>`; the reply goes out in the trader's session's form.

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::orm::{Orm, OrmError};
use engine::session::{DualReply, DualRequest, Session};
use serde::{Deserialize, Serialize};

use crate::inventory::{orm_of, refusal_of, retrying, Attempt, Inventory};
use crate::pb::inventory as pb;
use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, non_empty, BothForms, RefusalForm, Request};
use crate::LOG_TARGET;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsTrade {
    /// The partner's user name.
    #[serde(deserialize_with = "non_empty")]
    pub with: String,
    #[serde(default)]
    pub give: BTreeMap<String, i64>,
    #[serde(default)]
    pub take: BTreeMap<String, i64>,
}

impl Request for CsTrade {
    const TYPE: &'static str = "cs_trade";
    const REPLY: &'static str = "sc_trade";
    const MALFORMED: &'static str = "with must be a non-empty string, give and take objects of integers";
}

impl LoggedInRequest for CsTrade {}

impl DualRequest for CsTrade {
    type Proto = pb::CsTrade;
    /// As the JSON form: `with` non-empty; absent maps are empty.
    fn from_proto(msg: pb::CsTrade) -> Result<Self, String> {
        if msg.with.is_empty() {
            return Err("with must be non-empty".into());
        }
        Ok(CsTrade { with: msg.with, give: msg.give, take: msg.take })
    }
}

impl BothForms for CsTrade {
    type ReplyProto = pb::ScTrade;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScTrade {
    pub error: bool,
    pub gold: i64,
    pub items: BTreeMap<String, i64>,
}

impl DualReply for ScTrade {
    type Proto = pb::ScTrade;
    fn to_proto(&self) -> pb::ScTrade {
        pb::ScTrade {
            error: self.error,
            error_message: String::new(),
            gold: self.gold,
            items: self.items.clone(),
        }
    }
}

impl RefusalForm for pb::ScTrade {
    fn refusal(message: &str) -> Self {
        pb::ScTrade { error: true, error_message: message.to_string(), ..Default::default() }
    }
}

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsTrade) {
    const REPLY: &str = CsTrade::REPLY;
    if req.give.values().chain(req.take.values()).any(|c| *c <= 0) {
        return wire::refuse_dual::<CsTrade>(&s, "counts must be positive");
    }
    if req.give.is_empty() && req.take.is_empty() {
        return wire::refuse_dual::<CsTrade>(&s, "empty trade");
    }
    if req.with == user {
        return wire::refuse_dual::<CsTrade>(&s, "cannot trade with yourself");
    }
    let (orm, trader, req_ref) = (orm_of(&game), user.as_str(), &req);
    match retrying(&game, move || trade_once(orm, trader, req_ref)).await {
        Ok(Ok(inv)) => {
            wire::reply_dual(&s, REPLY, &ScTrade { error: false, gold: inv.gold, items: inv.items })
        }
        Ok(Err(refusal)) => wire::refuse_dual::<CsTrade>(&s, refusal),
        Err(e) => {
            tracing::info!(target: LOG_TARGET, user, with = req.with, error = %e, "cs_trade failed");
            wire::refuse_dual::<CsTrade>(&s, refusal_of(&e));
        }
    }
}

/// One run of the trade's transaction; the trader's inventory after it.
async fn trade_once(orm: &Orm, trader: &str, req: &CsTrade) -> Result<Attempt<Inventory>, OrmError> {
    let mut tx = orm.begin();
    tx.lock_all::<Inventory>(&[trader, &req.with]).await?;
    let Some(mut mine) = tx.get::<Inventory>(trader)? else { return Ok(Err("no inventory")) };
    let Some(mut theirs) = tx.get::<Inventory>(&req.with)? else { return Ok(Err("unknown partner")) };
    if req.give.iter().any(|(item, n)| mine.count(item) < *n) {
        return Ok(Err("not enough items"));
    }
    if req.take.iter().any(|(item, n)| theirs.count(item) < *n) {
        return Ok(Err("partner has not enough items"));
    }
    for (item, n) in &req.give {
        mine.add(item, -n);
        theirs.add(item, *n);
    }
    for (item, n) in &req.take {
        theirs.add(item, -n);
        mine.add(item, *n);
    }
    tx.put(&mine)?;
    tx.put(&theirs)?;
    tx.commit().await?;
    Ok(Ok(mine))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cs_trade_from_proto_checks_what_the_json_form_checks() {
        let give = BTreeMap::from([("gold".to_string(), 10)]);
        let msg = pb::CsTrade { with: "1".into(), give: give.clone(), take: BTreeMap::new() };
        assert_eq!(CsTrade::from_proto(msg), Ok(CsTrade { with: "1".into(), give, take: BTreeMap::new() }));
        assert!(CsTrade::from_proto(pb::CsTrade::default()).is_err(), "with is required");
    }

    #[test]
    fn sc_trade_has_the_same_fields_in_both_forms() {
        let items = BTreeMap::from([("sword".to_string(), 2)]);
        let reply = ScTrade { error: false, gold: 90, items: items.clone() };
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"error": false, "gold": 90, "items": {"sword": 2}})
        );
        assert_eq!(
            reply.to_proto(),
            pb::ScTrade { error: false, error_message: String::new(), gold: 90, items }
        );
        assert_eq!(pb::ScTrade::refusal("empty trade").error_message, "empty trade");
    }
}
