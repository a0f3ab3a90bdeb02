//! `cs_buy_now {purchase_id, gold}` -> `sc_buy_now {error: false, purchase_id, gold, epoch,
//! duplicate}`:
//! a real-money purchase ([`super::buy_now`]) applied at once, outside the queue, and answered
//! after it is durable.
//!
//! `purchase_id` is the client's idempotency key (1 to 64 of `A-Z a-z 0-9 _ . -`): a retry
//! with the same id and gold is answered again (`duplicate: true`, `epoch` of the first
//! application) and never applied twice. `gold` is the balance after the purchase (for a
//! duplicate: now). The purchase orders before every pack still waiting (they apply on top
//! of it) and makes no pack stale.
//!
//! Refusals: `{error: true, purchase_id, code, error_message}` with `code` `invalid` (a bad id or gold),
//! `id_reused` (the id was used for another purchase) — both definite: nothing changed — or
//! `server` (the object store failed: it may have been applied; retry with the same id).

use std::sync::Arc;

use engine::commands::{Command, CommandsError};
use engine::session::Session;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::buy_now::BuyNow;
use super::{commands_of, Farm};
use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, non_empty, Request};
use crate::LOG_TARGET;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsBuyNow {
    #[serde(deserialize_with = "non_empty")]
    pub purchase_id: String,
    pub gold: i64,
}

impl Request for CsBuyNow {
    const TYPE: &'static str = "cs_buy_now";
    const REPLY: &'static str = "sc_buy_now";
    const MALFORMED: &'static str = "purchase_id must be a non-empty string, gold an integer";
}

impl LoggedInRequest for CsBuyNow {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScBuyNow {
    pub error: bool,
    pub purchase_id: String,
    pub gold: i64,
    /// The state epoch the purchase moved the farm to.
    pub epoch: u64,
    /// True if this purchase id had been applied before.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScBuyNowError {
    pub error: bool,
    pub purchase_id: String,
    pub code: &'static str,
    pub error_message: String,
}

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsBuyNow) {
    const REPLY: &str = CsBuyNow::REPLY;
    let command = json!({"op": <BuyNow as Command<Farm>>::NAME, "gold": req.gold});
    match commands_of(&game).realtime(&user, &req.purchase_id, &command).await {
        Ok(done) => match done.result {
            Ok(epoch) => wire::reply(
                &s,
                REPLY,
                &ScBuyNow {
                    error: false,
                    purchase_id: req.purchase_id,
                    gold: done.state.gold,
                    epoch,
                    duplicate: done.duplicate,
                },
            ),
            Err(why) => wire::reply(
                &s,
                REPLY,
                &ScBuyNowError {
                    error: true,
                    purchase_id: req.purchase_id,
                    code: "refused",
                    error_message: why,
                },
            ),
        },
        Err(e) => {
            let code = match &e {
                CommandsError::InvalidArgument(_) => "invalid",
                CommandsError::IdReused(_) => "id_reused",
                _ => "server",
            };
            tracing::debug!(target: LOG_TARGET, user, purchase_id = req.purchase_id, error = %e, "cs_buy_now refused");
            wire::reply(
                &s,
                REPLY,
                &ScBuyNowError {
                    error: true,
                    purchase_id: req.purchase_id,
                    code,
                    error_message: e.to_string(),
                },
            );
        }
    }
}
