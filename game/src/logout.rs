//! `cs_logout {}` -> `sc_logout {error: false}`: the account is logged out cluster-wide
//! (`AccountManager::set_logged_out_link`); the session stays open and may log in again.
//! Refusals: `Server error` (the account stays logged in), `Not logged in`.

use std::sync::Arc;

use engine::session::Session;
use serde::{Deserialize, Serialize};

use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, Request};
use crate::LOG_TARGET;

/// No fields: the account is the session's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsLogout {}

impl Request for CsLogout {
    const TYPE: &'static str = "cs_logout";
    const REPLY: &'static str = "sc_logout";
    const MALFORMED: &'static str = "the body must be an object";
}

impl LoggedInRequest for CsLogout {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScLogout {
    pub error: bool,
}

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, _req: CsLogout) {
    const REPLY: &str = CsLogout::REPLY;
    match game.accounts.set_logged_out_link(s.id()).await {
        // `None`: it was no longer logged in here (its lease lapsed meanwhile); either way the
        // session is logged out now.
        Ok(_was_logged_in) => wire::reply(&s, REPLY, &ScLogout { error: false }),
        Err(e) => {
            tracing::info!(target: LOG_TARGET, user, error = %e, "logout failed");
            wire::refuse(&s, REPLY, "Server error");
        }
    }
}
