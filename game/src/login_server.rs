//! `cs_login {user_name}` -> `sc_login {error: false, session_key, gates: [{host, port}, ...]}`
//! (login flavor: seed 004's LoginServer).
//!
//! `session_key` is a signed session key for `user_name` ([`engine::gate::session_key`]: the
//! user, an expiry of this server's wall clock + `session_key_ttl`, a random nonce), which the
//! gates check. `gates` are the cluster members tagged [`GATE_TAG`], least loaded first by their
//! shared status field [`GATE_LOAD_FIELD`] (members that publish none come last; ties go by peer
//! id, so every login server with the same view gives the same order), each as the host and port
//! of its client port of the client's own transport, else its TCP JSON port (members that
//! publish neither are left out), at most [`GATES_LISTED_MAX`].
//!
//! The login server keeps nothing per user and logs nobody in (the gate does, cluster-wide):
//! the session stays open and may ask again, e.g. for a fresh key. Refusals: [`NO_GATE`] (no
//! gate in this server's view of the cluster); malformed: a `user_name` that is not a valid
//! account id (the same check as a login: 1 to 64 bytes of UTF-8, any characters), refused
//! with the account manager's message (`account name must be 1 to 64 bytes of UTF-8, not
//! 65`), then the session closes, as for every malformed request.

use std::net::SocketAddr;
use std::sync::Arc;

use engine::account;
use engine::cluster::Cluster;
use engine::gate::{GATE_LOAD_FIELD, GATE_TAG};
use engine::session::Session;
use serde::{Deserialize, Serialize};

use crate::state::LoginState;
use crate::wire::{self, Request};
use crate::LOG_TARGET;

/// Most gates one `sc_login` lists (the least loaded): the reply stays small whatever the
/// size of the cluster, and a client needs only a few to fall back on.
pub const GATES_LISTED_MAX: usize = 32;
/// The refusal when this server knows of no gate.
pub const NO_GATE: &str = "no gate";

/// `user_name` may be any string here; the handler refuses one that is not an account id
/// with the rule ([`account::validate_account`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsLogin {
    pub user_name: String,
}

impl Request for CsLogin {
    const TYPE: &'static str = "cs_login";
    const REPLY: &'static str = "sc_login";
    const MALFORMED: &'static str = "user_name must be a string";
}

/// Where a client reaches one gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateAddress {
    pub host: String,
    pub port: u16,
}

impl From<SocketAddr> for GateAddress {
    fn from(a: SocketAddr) -> Self {
        GateAddress { host: a.ip().to_string(), port: a.port() }
    }
}

/// The accepted login: a key to show a gate, and the gates, least loaded first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScLogin {
    pub error: bool,
    pub session_key: String,
    pub gates: Vec<GateAddress>,
}

/// The gates of `cluster`'s view, least loaded first, as a client of the transport named
/// `port_name` reaches them; at most [`GATES_LISTED_MAX`].
pub fn gate_list(cluster: &Cluster, port_name: &str) -> Vec<GateAddress> {
    cluster
        .peers_by_load(GATE_TAG, GATE_LOAD_FIELD, true)
        .into_iter()
        .filter_map(|peer| cluster.peer_client_addr(peer, port_name))
        .map(GateAddress::from)
        .take(GATES_LISTED_MAX)
        .collect()
}

pub(crate) async fn handle(login: Arc<LoginState>, s: Session, req: CsLogin) {
    const REPLY: &str = CsLogin::REPLY;
    let user = req.user_name;
    if let Err(e) = account::validate_account(&user) {
        return wire::reject_malformed(&s, REPLY, &e.to_string());
    }
    let gates = gate_list(&login.cluster, s.transport().name());
    if gates.is_empty() {
        return wire::refuse(&s, REPLY, NO_GATE);
    }
    let session_key = match login.keys.issue(&user, login.clock.wall_now(), &*login.rand) {
        Ok((key, _)) => key,
        Err(e) => {
            // Not reached: the name was validated above with the same check.
            tracing::warn!(target: LOG_TARGET, user, error = %e, "session key not issued");
            return wire::refuse(&s, REPLY, "Server error");
        }
    };
    tracing::debug!(target: LOG_TARGET, user, gates = gates.len(), "session key issued");
    wire::reply(&s, REPLY, &ScLogin { error: false, session_key, gates });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_reply_is_the_documented_shape() {
        let reply = ScLogin {
            error: false,
            session_key: "02ab".into(),
            gates: vec![GateAddress::from("10.0.1.2:8012".parse::<SocketAddr>().unwrap())],
        };
        assert_eq!(
            serde_json::to_value(reply).unwrap(),
            json!({"error": false, "session_key": "02ab", "gates": [{"host": "10.0.1.2", "port": 8012}]})
        );
    }

    #[test]
    fn a_request_needs_a_string_user_name_and_the_handler_judges_its_length() {
        for name in ["alice", "", "a/b", "😀"] {
            assert_eq!(
                wire::parse::<CsLogin>(json!({ "user_name": name })),
                Ok(CsLogin { user_name: name.into() })
            );
        }
        for bad in [json!({}), json!({"user_name": 3}), json!({"user_name": null})] {
            assert!(wire::parse::<CsLogin>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_or_too_long_user_name_is_refused_with_the_rule() {
        // What the handler sends as `error_message` (then closes the session).
        let message = |name: &str| account::validate_account(name).unwrap_err().to_string();
        assert_eq!(message(""), "account name must be 1 to 64 bytes of UTF-8, not 0");
        assert_eq!(message(&"é".repeat(33)), "account name must be 1 to 64 bytes of UTF-8, not 66");
        for fine in ["a/b", "..", "%", "😀", &"x".repeat(account::ACCOUNT_BYTES_MAX)] {
            assert!(account::validate_account(fine).is_ok(), "{fine:?}");
        }
    }
}
