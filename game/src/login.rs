//! `cs_game_server_login {user_name}` -> `sc_game_server_login {error: false, level}`.
//!
//! The login is cluster-unique (`AccountManager::check_and_set_logged_in`): a user logged in
//! anywhere in the cluster (or on another session here) is refused `Already logged in`. A new
//! user starts at level 1; with the object store, a new user also gets the starting inventory
//! ([`crate::inventory::ensure_created`]); with the farm, the user's waiting command packs are
//! scheduled on this server ([`crate::farm`]). Refusals: `Already logged in`, `Server error` (the KV, the
//! coordination service or the object store failed; nothing is left logged in); malformed: a `user_name` that is
//! not a valid account id — empty or longer than 64 bytes; any UTF-8 is one — refused with the account manager's
//! message, `account name must be 1 to 64 bytes of UTF-8, not N`, then the session closes. Every backend key of
//! a valid id fits (ZooKeeper, the `user:{id}` Redis record, the inventory's SQL row: [`engine::keyname`]), so a
//! name's length or characters never end in `Server error`.

use std::sync::Arc;

use engine::account::{self, LoginOutcome};
use engine::session::Session;
use serde::{Deserialize, Serialize};

use crate::inventory;
use crate::state::GameState;
use crate::wire::{self, Request};
use crate::LOG_TARGET;

/// `user_name` may be any string here; the handler refuses one that is not an account id
/// with the rule ([`account::validate_account`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsGameServerLogin {
    pub user_name: String,
}

impl Request for CsGameServerLogin {
    const TYPE: &'static str = "cs_game_server_login";
    const REPLY: &'static str = "sc_game_server_login";
    const MALFORMED: &'static str = "user_name must be a string";
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
    if let Err(e) = account::validate_account(&user) {
        return wire::reject_malformed(&s, REPLY, &e.to_string());
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
        // Not reached (the name was checked above with the same rule), but never a "Server error".
        Err(e @ account::AccountError::InvalidAccount { .. }) => {
            return wire::refuse(&s, REPLY, &e.to_string())
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn any_string_user_name_reaches_the_handler_which_refuses_empty_and_too_long_ones_with_the_rule() {
        for name in ["", "a/b", "😀", &"x".repeat(65)] {
            let req = wire::parse::<CsGameServerLogin>(json!({ "user_name": name }));
            assert_eq!(req, Ok(CsGameServerLogin { user_name: name.into() }), "not refused as malformed");
        }
        assert!(wire::parse::<CsGameServerLogin>(json!({"user_name": 1})).is_err());
        let refusal = |name: &str| account::validate_account(name).map_err(|e| e.to_string());
        assert_eq!(refusal(""), Err("account name must be 1 to 64 bytes of UTF-8, not 0".into()));
        assert_eq!(
            refusal(&"x".repeat(65)),
            Err("account name must be 1 to 64 bytes of UTF-8, not 65".into())
        );
        assert_eq!(refusal("a/b"), Ok(()));
    }
}
