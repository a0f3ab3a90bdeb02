//! `cs_transfer_pvp_server {auth_key}` -> `sc_transfer_pvp_server {error: false, user_name,
//! level}` (pvp flavor).
//!
//! The key is *taken* from cross-server storage (read and deleted atomically), so it works
//! once; the reply is exactly the stored [`AuthKeyData`]. The session then counts as a room
//! ([`TRANSFERRED_CONTEXT_KEY`], see [`crate::status`]). Refusal: `Failed to authenticate`
//! (unknown, expired, used or unreadable key); malformed: an `auth_key` that is not a key.
//!
//! Planted bug `reuse_key` ([`crate::GameBugs`]): the key is read, not taken.

use std::sync::Arc;

use engine::session::Session;
use engine::storage::{Key, StorageError};
use serde::{Deserialize, Serialize};

use crate::enter_pvp::AuthKeyData;
use crate::state::PvpState;
use crate::wire::{self, non_empty, Request};
use crate::LOG_TARGET;

/// Session context key marking a session that transferred in (a room of this pvp server).
pub const TRANSFERRED_CONTEXT_KEY: &str = "transferred";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsTransferPvpServer {
    #[serde(deserialize_with = "non_empty")]
    pub auth_key: String,
}

impl Request for CsTransferPvpServer {
    const TYPE: &'static str = "cs_transfer_pvp_server";
    const REPLY: &'static str = "sc_transfer_pvp_server";
    const MALFORMED: &'static str = "auth_key must be a non-empty string";
}

/// The accepted transfer: who the key was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScTransferPvpServer {
    pub error: bool,
    pub user_name: String,
    pub level: i64,
}

pub(crate) async fn handle(pvp: Arc<PvpState>, s: Session, req: CsTransferPvpServer) {
    const REPLY: &str = CsTransferPvpServer::REPLY;
    let Ok(key) = req.auth_key.parse::<Key>() else {
        return wire::reject_malformed(&s, REPLY, "auth_key is not a key");
    };
    let stored = if pvp.bugs.reuse_key { pvp.storage.read(&key).await } else { pvp.storage.take(&key).await };
    let stored = match stored {
        Ok(v) => v,
        Err(e) => {
            if !matches!(e, StorageError::NotFound) {
                tracing::warn!(target: LOG_TARGET, error = %e, "auth key lookup failed");
            }
            return wire::refuse(&s, REPLY, "Failed to authenticate");
        }
    };
    let Ok(AuthKeyData { user_name, level }) = serde_json::from_value::<AuthKeyData>(stored) else {
        return wire::refuse(&s, REPLY, "Failed to authenticate");
    };
    s.set_context(TRANSFERRED_CONTEXT_KEY, true);
    wire::reply(&s, REPLY, &ScTransferPvpServer { error: false, user_name, level });
}
