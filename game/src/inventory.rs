//! The inventory part of the game (the seed's gift example, on [`engine::orm`]): the
//! [`Inventory`] model, its creation at login, the bounded retry every inventory transaction
//! goes through, and `cs_inventory {}` -> `sc_inventory {error: false, user_name, gold, items}`.
//!
//! # The model
//! One [`Inventory`] object per user (model `inventory`, key = the user name, stored in the
//! user's shard): `{user_name, gold, items: {name: count}}`. Item name [`GOLD`] in a gift or a
//! trade means the `gold` field, not an entry of `items`; counts never go below zero and an
//! item whose count reaches zero leaves `items`.
//!
//! # When an inventory is created
//! At login ([`ensure_created`], called by the login handler before the account is logged
//! in): a transaction `fetch`es the user's inventory and `create`s it with [`STARTING_GOLD`]
//! and [`starting_items`] if absent. So a user exists (can receive gifts, be traded with) once
//! they have logged in once; a login whose inventory cannot be made sure of is refused
//! `Server error`, and nothing is logged in.
//!
//! # Retries
//! Every inventory handler runs its transaction through [`retrying`]: a retryable
//! [`OrmError`] (nothing was written) runs the whole transaction again, at most
//! [`TXN_ATTEMPTS_MAX`] times, then the client gets `{error: true, error_message: "try again"}`;
//! [`OrmError::Unknown`] (the commit may or may not have happened) is answered
//! `"outcome unknown"` and never retried (the transaction is not idempotent).
//!
//! # `cs_inventory`
//! A one-object read through the object store (borrowing the inventory if another server owns
//! it). Refusals: `try again`, `no inventory`, `Not logged in`.
//!
//! # Body forms
//! The inventory messages (`cs_inventory`, `cs_gift`, `cs_trade`, their replies and
//! `sc_gift_received`) are JSON objects on JSON ports and the messages of
//! `game/proto/inventory.proto` ([`crate::pb::inventory`]) on the protobuf port; each file
//! holds its messages' conversions ([`crate::wire`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use engine::orm::{Model, Orm, OrmError};
use engine::session::{DualReply, DualRequest, Session};
use serde::{Deserialize, Serialize};

use crate::pb::inventory as pb;
use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, BothForms, RefusalForm, Request};
use crate::LOG_TARGET;

/// Gold a new user starts with.
pub const STARTING_GOLD: i64 = 100;
/// The item name that means the `gold` field in gifts and trades.
pub const GOLD: &str = "gold";
/// Most runs of one handler's transaction (the first included) while the object store answers
/// a retryable error; then the client is told `try again`.
pub const TXN_ATTEMPTS_MAX: u32 = 3;
/// Pause between two runs of a transaction.
pub const TXN_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The refusal after [`TXN_ATTEMPTS_MAX`] retryable failures.
pub const TRY_AGAIN: &str = "try again";
/// The refusal when the commit's outcome is unknown.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

/// The items a new user starts with: 10 potions and a sword.
pub fn starting_items() -> BTreeMap<String, i64> {
    BTreeMap::from([("potion".to_string(), 10), ("sword".to_string(), 1)])
}

/// A user's inventory: one object of the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub user_name: String,
    pub gold: i64,
    pub items: BTreeMap<String, i64>,
}

impl Model for Inventory {
    const MODEL: &'static str = "inventory";
    fn key(&self) -> String {
        self.user_name.clone()
    }
}

impl Inventory {
    /// A new user's inventory.
    pub fn new_user(user_name: &str) -> Inventory {
        Inventory { user_name: user_name.to_string(), gold: STARTING_GOLD, items: starting_items() }
    }

    /// How many of `item` ([`GOLD`]: the gold) the user has.
    pub fn count(&self, item: &str) -> i64 {
        if item == GOLD {
            self.gold
        } else {
            self.items.get(item).copied().unwrap_or(0)
        }
    }

    /// Adds `delta` (negative: takes) of `item`; the caller checked the result is not negative.
    pub fn add(&mut self, item: &str, delta: i64) {
        let now = self.count(item) + delta;
        assert!(now >= 0, "{item} of {} would go to {now}", self.user_name);
        if item == GOLD {
            self.gold = now;
        } else if now == 0 {
            self.items.remove(item);
        } else {
            self.items.insert(item.to_string(), now);
        }
    }
}

/// How one run of a handler's transaction ended, when the object store did not fail.
pub(crate) type Attempt<T> = Result<T, &'static str>;

/// Runs `attempt` (one whole transaction) until it does not fail with a retryable error, at
/// most [`TXN_ATTEMPTS_MAX`] times (module doc). `Ok(Err(refusal))` is a game-logic refusal
/// (the transaction was dropped, nothing written); `Err` is the last store error.
pub(crate) async fn retrying<T, F, Fut>(game: &GameState, mut attempt: F) -> Result<Attempt<T>, OrmError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>, OrmError>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Err(e) if e.is_retryable() && n < TXN_ATTEMPTS_MAX => {
                tracing::debug!(target: LOG_TARGET, error = %e, attempt = n, "inventory transaction: retrying");
                n += 1;
                game.clock.sleep(TXN_RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// What the client is told after a store error ([`retrying`] gave up or the outcome is unknown).
pub(crate) fn refusal_of(e: &OrmError) -> &'static str {
    match e {
        OrmError::Unknown(_) => OUTCOME_UNKNOWN,
        _ => TRY_AGAIN,
    }
}

/// The object store of a server whose inventory handlers are registered.
pub(crate) fn orm_of(game: &GameState) -> &Orm {
    game.orm.as_ref().expect("inventory handlers are registered only with an object store")
}

/// Makes sure `user` has an inventory, creating the starting one if absent (module doc). The
/// transaction is idempotent, so an unknown outcome is retried too. False if it could not.
pub(crate) async fn ensure_created(game: &GameState, user: &str) -> bool {
    let orm = orm_of(game);
    for n in 1..=TXN_ATTEMPTS_MAX {
        let mut tx = orm.begin();
        let result = match tx.fetch::<Inventory>(user).await {
            Ok(Some(_)) => tx.commit().await,
            Ok(None) => match tx.create(&Inventory::new_user(user)) {
                Ok(()) => tx.commit().await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return true,
            Err(e) if e.is_retryable() || matches!(e, OrmError::Unknown(_)) => {
                tracing::debug!(target: LOG_TARGET, user, error = %e, attempt = n, "creating the inventory: retrying");
                game.clock.sleep(TXN_RETRY_PAUSE).await;
            }
            Err(e) => {
                tracing::info!(target: LOG_TARGET, user, error = %e, "creating the inventory failed");
                return false;
            }
        }
    }
    false
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsInventory {}

impl Request for CsInventory {
    const TYPE: &'static str = "cs_inventory";
    const REPLY: &'static str = "sc_inventory";
    const MALFORMED: &'static str = "the body must be an object";
}

impl LoggedInRequest for CsInventory {}

impl DualRequest for CsInventory {
    type Proto = pb::CsInventory;
    fn from_proto(_msg: pb::CsInventory) -> Result<Self, String> {
        Ok(CsInventory {})
    }
}

impl BothForms for CsInventory {
    type ReplyProto = pb::ScInventory;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScInventory {
    pub error: bool,
    pub user_name: String,
    pub gold: i64,
    pub items: BTreeMap<String, i64>,
}

impl DualReply for ScInventory {
    type Proto = pb::ScInventory;
    fn to_proto(&self) -> pb::ScInventory {
        pb::ScInventory {
            error: self.error,
            error_message: String::new(),
            user_name: self.user_name.clone(),
            gold: self.gold,
            items: self.items.clone(),
        }
    }
}

impl RefusalForm for pb::ScInventory {
    fn refusal(message: &str) -> Self {
        pb::ScInventory { error: true, error_message: message.to_string(), ..Default::default() }
    }
}

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, _req: CsInventory) {
    const REPLY: &str = CsInventory::REPLY;
    let (orm, name) = (orm_of(&game), user.as_str());
    let read =
        retrying(&game, move || async move { Ok(orm.fetch::<Inventory>(name).await?.ok_or("no inventory")) })
            .await;
    match read {
        Ok(Ok(inv)) => wire::reply_dual(
            &s,
            REPLY,
            &ScInventory { error: false, user_name: inv.user_name, gold: inv.gold, items: inv.items },
        ),
        Ok(Err(refusal)) => wire::refuse_dual::<CsInventory>(&s, refusal),
        Err(e) => {
            tracing::info!(target: LOG_TARGET, user, error = %e, "cs_inventory failed");
            wire::refuse_dual::<CsInventory>(&s, refusal_of(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_user_has_100_gold_10_potions_and_a_sword() {
        let inv = Inventory::new_user("7");
        assert_eq!(
            serde_json::to_value(&inv).unwrap(),
            serde_json::json!({"user_name": "7", "gold": 100, "items": {"potion": 10, "sword": 1}})
        );
    }

    #[test]
    fn sc_inventory_has_the_same_fields_in_both_forms() {
        let reply = ScInventory { error: false, user_name: "7".into(), gold: 0, items: starting_items() };
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            serde_json::json!({"error": false, "user_name": "7", "gold": 0, "items": {"potion": 10, "sword": 1}})
        );
        let pb = reply.to_proto();
        assert_eq!((pb.error, pb.error_message.as_str(), pb.user_name.as_str()), (false, "", "7"));
        assert_eq!((pb.gold, pb.items), (0, starting_items()));
        let refused = pb::ScInventory::refusal("no inventory");
        assert_eq!(
            refused,
            pb::ScInventory { error: true, error_message: "no inventory".into(), ..Default::default() }
        );
    }

    #[test]
    fn gold_is_an_item_name_and_empty_items_leave() {
        let mut inv = Inventory::new_user("a");
        assert_eq!(inv.count(GOLD), 100);
        inv.add(GOLD, -30);
        inv.add("sword", -1);
        inv.add("shield", 2);
        assert_eq!(inv.gold, 70);
        assert_eq!(inv.count("sword"), 0);
        assert!(!inv.items.contains_key("sword"));
        assert_eq!(inv.count("shield"), 2);
    }
}
