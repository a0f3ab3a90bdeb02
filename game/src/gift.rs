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

use std::sync::Arc;

use engine::orm::{Orm, OrmError};
use engine::session::Session;
use serde::{Deserialize, Serialize};

use crate::inventory::{orm_of, refusal_of, retrying, Attempt, Inventory};
use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, non_empty, Request};
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScGift {
    pub error: bool,
}

/// What the recipient gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScGiftReceived {
    pub from: String,
    pub item: String,
    pub count: i64,
}

/// The message type of [`ScGiftReceived`].
pub const SC_GIFT_RECEIVED: &str = "sc_gift_received";

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsGift) {
    const REPLY: &str = CsGift::REPLY;
    if req.count <= 0 {
        return wire::refuse(&s, REPLY, "count must be positive");
    }
    if req.to == user {
        return wire::refuse(&s, REPLY, "cannot gift to yourself");
    }
    let (orm, from, req_ref, g) = (orm_of(&game), user.as_str(), &req, &*game);
    match retrying(&game, move || gift_once(g, orm, from, req_ref)).await {
        Ok(Ok(())) => wire::reply(&s, REPLY, &ScGift { error: false }),
        Ok(Err(refusal)) => wire::refuse(&s, REPLY, refusal),
        Err(e) => {
            tracing::info!(target: LOG_TARGET, user, to = req.to, error = %e, "cs_gift failed");
            wire::refuse(&s, REPLY, refusal_of(&e));
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
    if let Some(body) = wire::to_body(SC_GIFT_RECEIVED, &push) {
        let (accounts, to) = (game.accounts.clone(), req.to.clone());
        tx.after_commit(async move {
            if let Err(e) = accounts.send_message(&to, SC_GIFT_RECEIVED, body).await {
                tracing::debug!(target: LOG_TARGET, to, error = %e, "sc_gift_received not sent");
            }
        });
    }
    tx.commit().await?;
    Ok(Ok(()))
}
