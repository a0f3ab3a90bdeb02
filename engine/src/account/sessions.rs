//! The account manager on top of the session service: a [`Session`] is a [`ClientLink`],
//! `_cs_redirect {token}` is answered by [`AccountManager::accept_redirect`], and a closed
//! session logs its account out.
//!
//! Kept apart from both modules so that neither depends on the other's internals: the
//! manager only knows links, the session service only knows handlers.

use std::sync::Arc;

use serde_json::Value;
use tracing::{debug, warn};

use super::{AccountError, AccountManager, LinkRef};
use crate::session::codec::CS_REDIRECT_TYPE;
use crate::session::{ProtocolError, Session, SessionService};

/// Session context key under which [`AccountManager::attach_sessions`] stores the account a
/// redirected session was logged in as (games may use it too).
pub const ACCOUNT_CONTEXT_KEY: &str = "account";

impl super::ClientLink for Session {
    fn link_id(&self) -> String {
        self.id().to_string()
    }

    fn send_json(&self, msg_type: &str, body: Value) -> bool {
        Session::send_json(self, msg_type, body).is_ok()
    }

    fn close(&self, reason: &str) {
        Session::close(self, reason);
    }

    fn is_open(&self) -> bool {
        Session::is_open(self)
    }

    fn port_name(&self) -> &'static str {
        self.transport().name()
    }
}

/// A session as the manager's link type.
pub fn link(session: &Session) -> LinkRef {
    Arc::new(session.clone())
}

impl AccountManager {
    /// Wires this manager into a session port:
    /// - `_cs_redirect {"token": "<hex>"}` is verified and, on success, logs the account in
    ///   on that session (the account is also stored in the session context under
    ///   [`ACCOUNT_CONTEXT_KEY`]) and runs the redirection handlers, which send the game's
    ///   own answer. On failure the client gets `_error {code: "redirect_rejected"}` and the
    ///   session stays open (handlers run with `success = false` when the token's signature
    ///   was valid).
    /// - when a session closes, whatever account is logged in on it here is logged out.
    ///
    /// Call once per session service (it covers all its ports), between
    /// [`SessionService::bind`] and [`SessionService::serve`].
    pub fn attach_sessions(&self, sessions: &SessionService) {
        let me = self.clone();
        sessions.register_json_handler(CS_REDIRECT_TYPE, move |session, body| {
            let me = me.clone();
            async move {
                let Some(token) = body.get("token").and_then(Value::as_str) else {
                    let e = ProtocolError::BadBody {
                        msg_type: CS_REDIRECT_TYPE.into(),
                        reason: "token must be a string".into(),
                    };
                    let _ = session.send_error(&e);
                    return;
                };
                if session.context::<String>(ACCOUNT_CONTEXT_KEY).is_some() {
                    let e = ProtocolError::RedirectRejected("this session is already logged in".into());
                    let _ = session.send_error(&e);
                    return;
                }
                match me
                    .accept_redirect_with(token, link(&session), |account| {
                        session.set_context(ACCOUNT_CONTEXT_KEY, account.to_string())
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(e) => {
                        let _ = session.send_error(&ProtocolError::RedirectRejected(e.to_string()));
                    }
                }
            }
        });
        let me = self.clone();
        sessions.on_session_closed(move |session, _reason| {
            let me = me.clone();
            async move {
                let link_id = session.id().to_string();
                for account in me.accounts_of_link(&link_id) {
                    match me.set_logged_out_link(&account, &link_id).await {
                        Ok(_) => debug!(account, "session closed: logged out"),
                        Err(AccountError::Stopped) => {}
                        Err(e) => warn!(account, error = %e, "session closed: logout failed"),
                    }
                }
            }
        });
    }
}
