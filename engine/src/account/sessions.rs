//! The account manager on top of the session service: a [`Session`] is a [`ClientLink`]
//! whose [`LinkId`] is its [`SessionId`], `_cs_redirect {token}` is answered by
//! [`AccountManager::accept_redirect`], and a closed session logs its account out.
//!
//! Kept apart from both modules so that neither depends on the other's internals: the
//! manager only knows links, the session service only knows handlers.

use std::sync::Arc;

use serde_json::Value;
use tracing::{debug, warn};

use super::{AccountError, AccountManager, LinkId, LinkRef};
use crate::session::codec::CS_REDIRECT_TYPE;
use crate::session::{DualBody, ProtocolError, Session, SessionId, SessionService};

impl From<SessionId> for LinkId {
    fn from(id: SessionId) -> Self {
        LinkId::from_uuid(id.as_uuid())
    }
}

impl super::ClientLink for Session {
    fn link_id(&self) -> LinkId {
        self.id().into()
    }

    fn send_json(&self, msg_type: &str, body: Value) -> bool {
        Session::send_json(self, msg_type, body).is_ok()
    }

    fn send_dual(&self, msg_type: &str, body: &DualBody) -> bool {
        Session::send_dual_body(self, msg_type, body).is_ok()
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
    ///   on that session ([`account_of`](Self::account_of) then names it) and runs the
    ///   redirection handlers, which send the game's own answer. On failure the client gets
    ///   `_error {code: "redirect_rejected"}` and the session stays open (handlers run with
    ///   `success = false` when the token's signature was valid). A session that is already
    ///   logged in is refused.
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
                if me.account_of(session.id()).is_some() {
                    let e = ProtocolError::RedirectRejected("this session is already logged in".into());
                    let _ = session.send_error(&e);
                    return;
                }
                if let Err(e) = me.accept_redirect(token, link(&session)).await {
                    let _ = session.send_error(&ProtocolError::RedirectRejected(e.to_string()));
                }
            }
        });
        let me = self.clone();
        sessions.on_session_closed(move |session, _reason| {
            let me = me.clone();
            async move {
                let Some(account) = me.account_of(session.id()) else { return };
                match me.set_logged_out_link(session.id()).await {
                    Ok(_) => debug!(account, "session closed: logged out"),
                    Err(AccountError::Stopped) => {}
                    Err(e) => warn!(account, error = %e, "session closed: logout failed"),
                }
            }
        });
    }
}
