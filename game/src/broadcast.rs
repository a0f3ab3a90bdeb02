//! `cs_broadcast {scope: "local" | "global", message}` -> `sc_broadcast {error: false,
//! delivered}`; every account logged in on this server (`local`) or on every server tagged
//! [`GAME_TAG`] (`global`) gets `sc_broadcast_message {from, message}`, the sender's own
//! sessions included. `delivered` counts the sessions that took it. Refusals: `Broadcast
//! failed`, `Not logged in`; malformed: a scope other than `local` or `global`.

use std::sync::Arc;

use engine::cluster::PeerId;
use engine::session::Session;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, non_empty, Request};
use crate::{GAME_TAG, LOG_TARGET};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CsBroadcast {
    /// `local` or `global` ([`Scope`]); kept as the string so that an unknown scope gets its
    /// own refusal text.
    #[serde(deserialize_with = "non_empty")]
    pub scope: String,
    /// Any JSON value (`null` included), passed on as it is.
    pub message: Value,
}

impl Request for CsBroadcast {
    const TYPE: &'static str = "cs_broadcast";
    const REPLY: &'static str = "sc_broadcast";
    const MALFORMED: &'static str = "scope must be local or global, message present";
}

impl LoggedInRequest for CsBroadcast {}

/// Who a broadcast reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The accounts logged in on this server (`AccountManager::broadcast_locally`).
    Local,
    /// The accounts logged in on any game server (`AccountManager::broadcast_globally`).
    Global,
}

impl Scope {
    /// `local` or `global`.
    pub fn from_wire(s: &str) -> Option<Scope> {
        match s {
            "local" => Some(Scope::Local),
            "global" => Some(Scope::Global),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScBroadcast {
    pub error: bool,
    pub delivered: usize,
}

/// What every reached account gets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScBroadcastMessage {
    pub from: String,
    pub message: Value,
}

/// The message type of [`ScBroadcastMessage`].
pub const SC_BROADCAST_MESSAGE: &str = "sc_broadcast_message";

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsBroadcast) {
    const REPLY: &str = CsBroadcast::REPLY;
    let Some(scope) = Scope::from_wire(&req.scope) else {
        return wire::reject_malformed(&s, REPLY, "scope must be local or global");
    };
    let msg = ScBroadcastMessage { from: user, message: req.message };
    let Some(push) = wire::to_body(SC_BROADCAST_MESSAGE, &msg) else {
        return wire::refuse(&s, REPLY, "Broadcast failed");
    };
    let delivered = match scope {
        Scope::Local => Ok(game.accounts.broadcast_locally(SC_BROADCAST_MESSAGE, &push)),
        Scope::Global => {
            let peers: Vec<PeerId> = game.cluster.peers_with_tag(GAME_TAG, true).into_keys().collect();
            // No game server listed (not even this one, e.g. while re-registering): an empty
            // list would mean "every member" to the account manager.
            if peers.is_empty() {
                Ok(0)
            } else {
                game.accounts.broadcast_globally(SC_BROADCAST_MESSAGE, &push, &peers).await
            }
        }
    };
    match delivered {
        Ok(n) => wire::reply(&s, REPLY, &ScBroadcast { error: false, delivered: n }),
        Err(e) => {
            tracing::info!(target: LOG_TARGET, error = %e, "broadcast failed");
            wire::refuse(&s, REPLY, "Broadcast failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_and_global_are_scopes() {
        assert_eq!(Scope::from_wire("local"), Some(Scope::Local));
        assert_eq!(Scope::from_wire("global"), Some(Scope::Global));
        for other in ["Local", "all", " global", "x"] {
            assert_eq!(Scope::from_wire(other), None, "{other}");
        }
    }
}
