//! `cs_redirect {server_name, extra_data}` -> the account manager's `_sc_redirect {host, port,
//! flavor, token}`, then the session closes; or `sc_redirect {error: true, error_message}`.
//!
//! On the target the client presents the token (`_cs_redirect {token}`, answered by the
//! account manager); when it is accepted, [`on_redirected`] answers `sc_redirected {error:
//! false, user_name, extra_data}` (a refused token gets `_error redirect_rejected` from the
//! engine). Refusals: `No such server`, `Redirect failed`, `Not logged in`.

use std::sync::Arc;

use engine::account::LinkRef;
use engine::cluster::{Cluster, PeerId};
use engine::session::Session;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, non_empty, Request};
use crate::{GameObserver, LOG_TARGET};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CsRedirect {
    /// The target's cluster name.
    #[serde(deserialize_with = "non_empty")]
    pub server_name: String,
    /// Carried in the signed token and handed to the target's game (`null` if absent).
    #[serde(default)]
    pub extra_data: Value,
}

impl Request for CsRedirect {
    const TYPE: &'static str = "cs_redirect";
    const REPLY: &'static str = "sc_redirect";
    const MALFORMED: &'static str = "server_name must be a non-empty string";
}

impl LoggedInRequest for CsRedirect {}

/// What the target server tells a client whose token it accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScRedirected {
    pub error: bool,
    pub user_name: String,
    pub extra_data: Value,
}

/// The message type of [`ScRedirected`].
pub const SC_REDIRECTED: &str = "sc_redirected";

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsRedirect) {
    const REPLY: &str = CsRedirect::REPLY;
    let Some(target) = peer_by_name(&game.cluster, &req.server_name) else {
        return wire::refuse(&s, REPLY, "No such server");
    };
    if let Err(e) = game.accounts.redirect_client(&user, target, req.extra_data).await {
        tracing::info!(target: LOG_TARGET, user, error = %e, "redirect failed");
        wire::refuse(&s, REPLY, "Redirect failed");
    }
}

/// The game's redirection handler (`AccountManager::register_redirection_handler`): run after
/// every presentation of a validly signed token; on success the account is logged in on
/// `link` and the client is told so. It gets the observer, not the [`GameState`]: the account
/// manager keeps its handlers, and a handler holding the manager would keep it alive forever.
pub(crate) fn on_redirected(
    observer: Option<&dyn GameObserver>,
    account: String,
    link: LinkRef,
    success: bool,
    extra: Value,
) {
    if !success {
        return;
    }
    if let Some(o) = observer {
        o.logged_in(&account, &link.link_id().to_string());
    }
    let reply = ScRedirected { error: false, user_name: account, extra_data: extra };
    let Some(body) = wire::to_body(SC_REDIRECTED, &reply) else { return };
    if !link.send_json(SC_REDIRECTED, body) {
        // The link closed since the token was accepted: the client is gone, and the session's
        // close logs the account out. Nothing to answer.
        tracing::debug!(target: LOG_TARGET, link = %link.link_id(), "sc_redirected to a closed session dropped");
    }
}

/// The member called `name`; if an old incarnation of it is still listed (its session not
/// yet expired), the newest registration.
fn peer_by_name(cluster: &Cluster, name: &str) -> Option<PeerId> {
    cluster
        .peers(true)
        .into_iter()
        .filter(|(_, info)| info.name == name)
        .max_by_key(|(_, info)| info.registered_zxid)
        .map(|(id, _)| id)
}
