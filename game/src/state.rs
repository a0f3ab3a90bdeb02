//! What the handlers of each flavor share ([`GameState`], [`PvpState`], [`LoginState`]), and the one place
//! that says which account a session is logged in as.
//!
//! # Which account is on a session
//! The account manager is the one owner of that fact (its link table, filled by logins and
//! accepted redirects, emptied by logouts, redirects away and closed sessions); handlers ask
//! it through [`GameState::account_of`] (via [`GameState::register_logged_in`]) and never
//! keep a copy.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use engine::account::AccountManager;
use engine::cluster::Cluster;
use engine::commands::Commands;
use engine::env::{Clock, Kv, Rand, SetCondition, SetOptions};
use engine::gate::{GateHost, SessionKeys};
use engine::orm::Orm;
use engine::session::{ProtocolError, Session, SessionService};
use engine::storage::CrossServerStorage;
use serde::{Deserialize, Serialize};

use crate::farm::Farm;
use crate::wire::{self, BothForms, Request};
use crate::{GameBugs, GameObserver};

/// What every game-flavor handler may use.
pub struct GameState {
    pub(crate) accounts: AccountManager,
    pub(crate) cluster: Cluster,
    /// The user records (`user:<name>` -> [`UserRecord`]).
    pub(crate) kv: Arc<dyn Kv>,
    /// Where `cs_enter_pvp` leaves auth keys for the pvp servers.
    pub(crate) storage: Arc<CrossServerStorage>,
    pub(crate) observer: Option<Arc<dyn GameObserver>>,
    /// The object store (inventories); `None` when the server runs without objects.
    pub(crate) orm: Option<Orm>,
    /// Paces the inventory handlers' retries.
    pub(crate) clock: Arc<dyn Clock>,
    /// The farm's command queues; `None` when the server runs without the farm.
    pub(crate) farm: Option<Commands<Farm>>,
    /// The backend side of gateways (players behind gates); `None` without the object store.
    pub(crate) gates: Option<GateHost>,
    /// This server's name in the cluster (what `sc_counter.backend` and `cs_move` name).
    pub(crate) server_name: String,
}

/// What the pvp flavor's handler may use.
pub struct PvpState {
    pub(crate) storage: Arc<CrossServerStorage>,
    pub(crate) bugs: GameBugs,
}

/// What the login flavor's handler may use.
pub struct LoginState {
    /// Where the gates are found (members tagged `gate`) and how loaded they are.
    pub(crate) cluster: Cluster,
    /// Signs session keys (the `Gate` section's secret and TTL).
    pub(crate) keys: SessionKeys,
    /// The issuer's wall clock: a key expires at `wall_now + session_key_ttl`.
    pub(crate) clock: Arc<dyn Clock>,
    /// The keys' nonces.
    pub(crate) rand: Arc<dyn Rand>,
}

/// A user's record in the KV, under `user:<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub level: i64,
}

/// The level a user starts at.
pub const FIRST_LEVEL: i64 = 1;

/// What a request that needs a login gets on a session without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotLoggedIn {
    /// The refusal `Not logged in`; the session stays open.
    Refuse,
    /// The refusal, then the session is closed (as for a malformed request).
    Close,
}

/// A request of the game flavor that needs a logged-in session.
pub trait LoggedInRequest: Request {
    /// What such a request gets on a session that is not logged in.
    const NOT_LOGGED_IN: NotLoggedIn = NotLoggedIn::Refuse;
}

impl GameState {
    /// The account `session` is logged in as here, if any.
    pub(crate) fn account_of(&self, session: &Session) -> Option<String> {
        self.accounts.account_of(session.id())
    }

    /// Tells the observer (if any) that `account` was just logged in on `link`.
    pub(crate) fn observe_login(&self, account: &str, link: &str) {
        if let Some(o) = &self.observer {
            o.logged_in(account, link);
        }
    }

    /// Tells the observer (if any) that `account`'s counter add `seq` was applied here.
    pub(crate) fn observe_counter(&self, account: &str, seq: u64, n: i64) {
        if let Some(o) = &self.observer {
            o.counter_applied(account, seq, n);
        }
    }

    /// Registers `handler` for `R::TYPE` on sessions that are logged in: first the login is
    /// checked (`R::NOT_LOGGED_IN` if there is none), then the body is parsed (see
    /// [`wire::register`]), then the handler runs with the account.
    pub(crate) fn register_logged_in<R, F, Fut>(self: &Arc<Self>, service: &SessionService, handler: F)
    where
        R: LoggedInRequest,
        F: Fn(Arc<GameState>, Session, String, R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (game, handler) = (self.clone(), Arc::new(handler));
        service.register_json_handler(R::TYPE, move |session, body| {
            let (game, handler) = (game.clone(), handler.clone());
            async move {
                let Some(user) = game.account_of(&session) else {
                    return match R::NOT_LOGGED_IN {
                        NotLoggedIn::Refuse => wire::refuse(&session, R::REPLY, "Not logged in"),
                        NotLoggedIn::Close => wire::reject_malformed(&session, R::REPLY, "Not logged in"),
                    };
                };
                match wire::parse::<R>(body) {
                    Ok(req) => handler(game, session, user, req).await,
                    Err(()) => wire::reject_malformed(&session, R::REPLY, R::MALFORMED),
                }
            }
        });
    }

    /// [`register_logged_in`](Self::register_logged_in) for a request served in both body
    /// forms ([`BothForms`]): the engine decodes the body in the session's form (`_error
    /// bad_body` if it is not of that form), then the login is checked, then a body whose
    /// fields do not make an `R` is rejected as malformed, all answers in the session's form.
    pub(crate) fn register_logged_in_dual<R, F, Fut>(self: &Arc<Self>, service: &SessionService, handler: F)
    where
        R: LoggedInRequest + BothForms,
        F: Fn(Arc<GameState>, Session, String, R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (game, handler) = (self.clone(), Arc::new(handler));
        service.register_dual_handler(R::TYPE, move |session, req: Result<R, ProtocolError>| {
            let (game, handler) = (game.clone(), handler.clone());
            async move {
                let Some(user) = game.account_of(&session) else {
                    return match R::NOT_LOGGED_IN {
                        NotLoggedIn::Refuse => wire::refuse_dual::<R>(&session, "Not logged in"),
                        NotLoggedIn::Close => wire::reject_malformed_dual::<R>(&session, "Not logged in"),
                    };
                };
                match req {
                    Ok(req) => handler(game, session, user, req).await,
                    Err(e) => {
                        tracing::debug!(target: crate::LOG_TARGET, msg_type = R::TYPE, error = %e, "malformed request");
                        wire::reject_malformed_dual::<R>(&session, R::MALFORMED);
                    }
                }
            }
        });
    }

    /// The user's level, creating the user at [`FIRST_LEVEL`] if absent (`None`: the KV
    /// failed or holds something that is not a [`UserRecord`]).
    pub(crate) async fn load_level(&self, user: &str) -> Option<i64> {
        let kv_key = format!("user:{user}");
        let first = serde_json::to_vec(&UserRecord { level: FIRST_LEVEL }).ok()?;
        let opts = SetOptions { condition: SetCondition::IfAbsent, ..Default::default() };
        self.kv.set(&kv_key, Bytes::from(first), opts).await.ok()?;
        let stored = self.kv.get(&kv_key).await.ok()??;
        serde_json::from_slice::<UserRecord>(&stored).ok().map(|r| r.level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_user_record_is_the_seeds_bytes() {
        assert_eq!(serde_json::to_vec(&UserRecord { level: FIRST_LEVEL }).unwrap(), br#"{"level":1}"#);
    }

    #[test]
    fn a_record_reads_its_level_whatever_else_it_holds_and_nothing_from_a_non_integer() {
        let r: UserRecord = serde_json::from_slice(br#"{"level": 7, "gold": 3}"#).unwrap();
        assert_eq!(r.level, 7);
        assert!(serde_json::from_slice::<UserRecord>(br#"{"level": "7"}"#).is_err());
        assert!(serde_json::from_slice::<UserRecord>(br#"{"level": 1.5}"#).is_err());
    }
}
