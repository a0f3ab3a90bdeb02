//! `cs_send {to, message}` -> `sc_send {error: false, delivered}`; the addressee gets
//! `sc_message {from, message}` wherever in the cluster it is logged in
//! (`AccountManager::send_message`). `delivered` is false when it is logged in nowhere (or its
//! session just closed). Refusals: `Send failed`, `Not logged in`, and for a `to` longer than
//! an account id may be, `account name must be 1 to 64 bytes of UTF-8, not N`.

use std::sync::Arc;

use engine::session::Session;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, non_empty, Request};
use crate::LOG_TARGET;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CsSend {
    /// The addressee's account.
    #[serde(deserialize_with = "non_empty")]
    pub to: String,
    /// Any JSON value (`null` included), passed on as it is.
    pub message: Value,
}

impl Request for CsSend {
    const TYPE: &'static str = "cs_send";
    const REPLY: &'static str = "sc_send";
    const MALFORMED: &'static str = "to must be a non-empty string, message present";
}

impl LoggedInRequest for CsSend {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScSend {
    pub error: bool,
    pub delivered: bool,
}

/// What the addressee gets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScMessage {
    pub from: String,
    pub message: Value,
}

/// The message type of [`ScMessage`].
pub const SC_MESSAGE: &str = "sc_message";

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsSend) {
    const REPLY: &str = CsSend::REPLY;
    let Some(push) = wire::to_body(SC_MESSAGE, &ScMessage { from: user, message: req.message }) else {
        return wire::refuse(&s, REPLY, "Send failed");
    };
    match game.accounts.send_message(&req.to, SC_MESSAGE, push).await {
        Ok(delivered) => wire::reply(&s, REPLY, &ScSend { error: false, delivered }),
        // `to` is not an account id: say why.
        Err(e @ engine::account::AccountError::InvalidAccount { .. }) => {
            wire::refuse(&s, REPLY, &e.to_string())
        }
        Err(e) => {
            tracing::info!(target: LOG_TARGET, error = %e, "send_message failed");
            wire::refuse(&s, REPLY, "Send failed");
        }
    }
}
