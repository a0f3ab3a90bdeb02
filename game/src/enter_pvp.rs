//! `cs_enter_pvp {}` -> `sc_enter_pvp {error: false, pvp_server_ip, pvp_server_port,
//! auth_key}`.
//!
//! The user's `{user_name, level}` ([`AuthKeyData`]) is stored in cross-server storage for
//! [`AUTH_KEY_TTL`] under a fresh key, and the least-loaded pvp server (by `room_count`) is
//! named, with its port of the client's own transport (else its TCP JSON port). Refusals: `No
//! pvp server`, `Server error`. A session that is not logged in gets `Not logged in` and is
//! closed, as in the seed.

use std::sync::Arc;

use engine::session::Session;
use serde::{Deserialize, Serialize};

use crate::state::{GameState, LoggedInRequest, NotLoggedIn};
use crate::status::ROOM_COUNT_FIELD;
use crate::wire::{self, Request};
use crate::{AUTH_KEY_TTL, LOG_TARGET, PVP_TAG};

/// No fields: the account is the session's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsEnterPvp {}

impl Request for CsEnterPvp {
    const TYPE: &'static str = "cs_enter_pvp";
    const REPLY: &'static str = "sc_enter_pvp";
    const MALFORMED: &'static str = "the body must be an object";
}

impl LoggedInRequest for CsEnterPvp {
    const NOT_LOGGED_IN: NotLoggedIn = NotLoggedIn::Close;
}

/// Where to go, and the key to show there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScEnterPvp {
    pub error: bool,
    pub pvp_server_ip: String,
    pub pvp_server_port: u16,
    pub auth_key: String,
}

/// What the auth key stands for in cross-server storage; the pvp server's transfer returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthKeyData {
    pub user_name: String,
    pub level: i64,
}

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, _req: CsEnterPvp) {
    const REPLY: &str = CsEnterPvp::REPLY;
    let Some(level) = game.load_level(&user).await else {
        return wire::refuse(&s, REPLY, "Server error");
    };
    let cluster = &game.cluster;
    let Some(pvp) = cluster.least_loaded(PVP_TAG, ROOM_COUNT_FIELD, false) else {
        return wire::refuse(&s, REPLY, "No pvp server");
    };
    // The pvp port of the client's own transport, else its TCP JSON port.
    let Some(addr) = cluster.peer_client_addr(pvp, s.transport().name()) else {
        return wire::refuse(&s, REPLY, "No pvp server");
    };
    let Some(data) = wire::to_body("auth key", &AuthKeyData { user_name: user, level }) else {
        return wire::refuse(&s, REPLY, "Server error");
    };
    let key = match game.storage.create(&data, AUTH_KEY_TTL).await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(target: LOG_TARGET, error = %e, "CrossServerStorage::create failed");
            return wire::refuse(&s, REPLY, "Server error");
        }
    };
    let reply = ScEnterPvp {
        error: false,
        pvp_server_ip: addr.ip().to_string(),
        pvp_server_port: addr.port(),
        auth_key: key.to_string(),
    };
    wire::reply(&s, REPLY, &reply);
}
