//! `cs_gift {to, item, count}` -> `sc_gift {error: false}`; the recipient, if logged in
//! anywhere in the cluster, gets `sc_gift_received {from, item, count}` — only after the gift
//! committed.
//!
//! One transaction takes both inventories (`lock_all`, so in the global order whatever the
//! direction of the gift: two opposite gifts cannot deadlock), moves the items in memory,
//! queues the push with `after_commit` (`AccountManager::send_message`), and commits: both
//! inventories change, durably, or neither does — also when the two users' shards are on
//! different SQL instances. Item [`GOLD`](crate::inventory::GOLD) means the gold.
//!
//! Refusals: `count must be positive`, `cannot gift to yourself`, `unknown recipient` (no
//! inventory: the user never logged in), `not enough items`, `try again` (the object store
//! failed [`TXN_ATTEMPTS_MAX`](crate::inventory::TXN_ATTEMPTS_MAX) times; nothing was
//! written), `outcome unknown` (the commit may or may not have happened), `Not logged in`.
//!
//! Both body forms ([`crate::wire`]): the reply goes out in the sender's session's form, the
//! push in the recipient's (`AccountManager::send_message_dual` carries both forms, also to
//! another server), so a protobuf client and a JSON client can gift each other.

use std::sync::Arc;

use engine::orm::{Orm, OrmError};
use engine::session::{DualBody, DualReply, DualRequest, Session};
use serde::{Deserialize, Serialize};

use crate::inventory::{orm_of, refusal_of, retrying, Attempt, Inventory};
use crate::pb::inventory as pb;
use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, non_empty, BothForms, RefusalForm, Request};
use crate::LOG_TARGET;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsGift {
    /// The recipient's user name.
    #[serde(deserialize_with = "non_empty")]
    pub to: String,
    #[serde(deserialize_with = "non_empty")]
    pub item: String,
    pub count: i64,
}

impl Request for CsGift {
    const TYPE: &'static str = "cs_gift";
    const REPLY: &'static str = "sc_gift";
    const MALFORMED: &'static str = "to and item must be non-empty strings, count an integer";
}

impl LoggedInRequest for CsGift {}

impl DualRequest for CsGift {
    type Proto = pb::CsGift;
    /// As the JSON form: `to` and `item` non-empty. An absent `count` is 0 (refused as not
    /// positive, not as malformed).
    fn from_proto(msg: pb::CsGift) -> Result<Self, String> {
        if msg.to.is_empty() || msg.item.is_empty() {
            return Err("to and item must be non-empty".into());
        }
        Ok(CsGift { to: msg.to, item: msg.item, count: msg.count })
    }
}

impl BothForms for CsGift {
    type ReplyProto = pb::ScGift;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScGift {
    pub error: bool,
}

impl DualReply for ScGift {
    type Proto = pb::ScGift;
    fn to_proto(&self) -> pb::ScGift {
        pb::ScGift { error: self.error, error_message: String::new() }
    }
}

impl RefusalForm for pb::ScGift {
    fn refusal(message: &str) -> Self {
        pb::ScGift { error: true, error_message: message.to_string() }
    }
}

/// What the recipient gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScGiftReceived {
    pub from: String,
    pub item: String,
    pub count: i64,
}

impl DualReply for ScGiftReceived {
    type Proto = pb::ScGiftReceived;
    fn to_proto(&self) -> pb::ScGiftReceived {
        pb::ScGiftReceived { from: self.from.clone(), item: self.item.clone(), count: self.count }
    }
}

/// The message type of [`ScGiftReceived`].
pub const SC_GIFT_RECEIVED: &str = "sc_gift_received";

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsGift) {
    const REPLY: &str = CsGift::REPLY;
    if req.count <= 0 {
        return wire::refuse_dual::<CsGift>(&s, "count must be positive");
    }
    if req.to == user {
        return wire::refuse_dual::<CsGift>(&s, "cannot gift to yourself");
    }
    let (orm, from, req_ref, g) = (orm_of(&game), user.as_str(), &req, &*game);
    match retrying(&game, move || gift_once(g, orm, from, req_ref)).await {
        Ok(Ok(())) => wire::reply_dual(&s, REPLY, &ScGift { error: false }),
        Ok(Err(refusal)) => wire::refuse_dual::<CsGift>(&s, refusal),
        Err(e) => {
            tracing::info!(target: LOG_TARGET, user, to = req.to, error = %e, "cs_gift failed");
            wire::refuse_dual::<CsGift>(&s, refusal_of(&e));
        }
    }
}

/// One run of the gift's transaction.
async fn gift_once(game: &GameState, orm: &Orm, from: &str, req: &CsGift) -> Result<Attempt<()>, OrmError> {
    let mut tx = orm.begin();
    tx.lock_all::<Inventory>(&[from, &req.to]).await?;
    let Some(mut giver) = tx.get::<Inventory>(from)? else { return Ok(Err("no inventory")) };
    let Some(mut recipient) = tx.get::<Inventory>(&req.to)? else { return Ok(Err("unknown recipient")) };
    if giver.count(&req.item) < req.count {
        return Ok(Err("not enough items"));
    }
    giver.add(&req.item, -req.count);
    recipient.add(&req.item, req.count);
    tx.put(&giver)?;
    tx.put(&recipient)?;
    let push = ScGiftReceived { from: from.to_string(), item: req.item.clone(), count: req.count };
    match DualBody::of(&push) {
        Ok(body) => {
            let (accounts, to) = (game.accounts.clone(), req.to.clone());
            tx.after_commit(async move {
                if let Err(e) = accounts.send_message_dual(&to, SC_GIFT_RECEIVED, body).await {
                    tracing::debug!(target: LOG_TARGET, to, error = %e, "sc_gift_received not sent");
                }
            });
        }
        Err(e) => {
            tracing::warn!(target: LOG_TARGET, msg_type = SC_GIFT_RECEIVED, error = %e, "message does not serialize; not sent");
        }
    }
    tx.commit().await?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cs_gift_from_proto_checks_what_the_json_form_checks() {
        let ok = pb::CsGift { to: "5".into(), item: "potion".into(), count: 3 };
        assert_eq!(CsGift::from_proto(ok), Ok(CsGift { to: "5".into(), item: "potion".into(), count: 3 }));
        assert!(
            CsGift::from_proto(pb::CsGift { to: String::new(), item: "potion".into(), count: 3 }).is_err()
        );
        assert!(CsGift::from_proto(pb::CsGift { to: "5".into(), item: String::new(), count: 3 }).is_err());
        // An absent count is 0: the handler refuses it as not positive.
        assert_eq!(
            CsGift::from_proto(pb::CsGift { to: "5".into(), item: "x".into(), count: 0 }).unwrap().count,
            0
        );
    }

    #[test]
    fn the_gift_messages_have_the_same_fields_in_both_forms() {
        assert_eq!(serde_json::to_value(ScGift { error: false }).unwrap(), json!({"error": false}));
        assert_eq!(
            ScGift { error: false }.to_proto(),
            pb::ScGift { error: false, error_message: String::new() }
        );
        let push = ScGiftReceived { from: "1".into(), item: "potion".into(), count: 3 };
        assert_eq!(serde_json::to_value(&push).unwrap(), json!({"from": "1", "item": "potion", "count": 3}));
        assert_eq!(push.to_proto(), pb::ScGiftReceived { from: "1".into(), item: "potion".into(), count: 3 });
    }
}
