//! `cs_game_server_login {user_name}` -> `sc_game_server_login {error: false, level}`.
//!
//! The login is cluster-unique (`AccountManager::check_and_set_logged_in`): a user logged in
//! anywhere in the cluster (or on another session here) is refused `Already logged in`. A new
//! user starts at level 1; with the object store, a new user also gets the starting inventory
//! ([`crate::inventory::ensure_created`]); with the farm, the user's waiting command packs are
//! scheduled on this server ([`crate::farm`]). Refusals: `Already logged in`, `Server error` (the KV, the
//! coordination service or the object store failed; nothing is left logged in); malformed: a `user_name` that is
//! not a valid account id.

use std::sync::Arc;

use engine::account::{self, LoginOutcome};
use engine::session::Session;
use serde::{Deserialize, Serialize};

use crate::inventory;
use crate::state::GameState;
use crate::wire::{self, non_empty, Request};
use crate::LOG_TARGET;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsGameServerLogin {
    #[serde(deserialize_with = "non_empty")]
    pub user_name: String,
}

impl Request for CsGameServerLogin {
    const TYPE: &'static str = "cs_game_server_login";
    const REPLY: &'static str = "sc_game_server_login";
    const MALFORMED: &'static str = "user_name must be a non-empty string";
}

/// The accepted login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScGameServerLogin {
    pub error: bool,
    pub level: i64,
}

pub(crate) async fn handle(game: Arc<GameState>, s: Session, req: CsGameServerLogin) {
    const REPLY: &str = CsGameServerLogin::REPLY;
    let user = req.user_name;
    if account::validate_account(&user).is_err() {
        return wire::reject_malformed(&s, REPLY, "user_name is not a valid account id");
    }
    if game.account_of(&s).is_some() {
        return wire::refuse(&s, REPLY, "Already logged in");
    }
    // The level first: once the login is in, the reply goes out in the same instant, so no
    // broadcast can reach the client before it.
    let Some(level) = game.load_level(&user).await else {
        return wire::refuse(&s, REPLY, "Server error");
    };
    // The inventory (with objects): created before the login, so a logged-in user always has one.
    if game.orm.is_some() && !inventory::ensure_created(&game, &user).await {
        return wire::refuse(&s, REPLY, "Server error");
    }
    match game.accounts.check_and_set_logged_in(&user, account::link(&s)).await {
        Ok(LoginOutcome::LoggedIn) => {}
        Ok(LoginOutcome::AlreadyLoggedIn { .. }) => return wire::refuse(&s, REPLY, "Already logged in"),
        Err(e) => {
            tracing::info!(target: LOG_TARGET, user, error = %e, "login failed");
            return wire::refuse(&s, REPLY, "Server error");
        }
    }
    // The user plays here now: its waiting packs (if any) run here.
    if let Some(farm) = &game.farm {
        farm.schedule(&user);
    }
    game.observe_login(&user, &s.id().to_string());
    wire::reply(&s, REPLY, &ScGameServerLogin { error: false, level });
}
