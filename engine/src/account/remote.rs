//! Messages to accounts: delivery on a local link (under the lease, checked in the same
//! instant as the send), [`AccountManager::send_message`] (JSON) and
//! [`AccountManager::send_message_dual`] (both body forms) to wherever the account is logged
//! in, broadcasts to the accounts of this server or of many, and the RPC handlers that do
//! the remote halves ([`RPC_SEND`], [`RPC_BROADCAST`]).

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use tracing::warn;

use super::links::LinkId;
use super::{messages, validate_account, AccountError, AccountManager, LinkRef, Shared, LOG_TARGET};
use crate::cluster::PeerId;
use crate::rpc::{CallOptions, HandlerError, Rpc};
use crate::session::DualBody;

/// One message for an account's client: JSON only, or both forms (the link sends its
/// client's).
enum Outgoing {
    Json(serde_json::Value),
    Dual(DualBody),
}

impl Outgoing {
    fn send(&self, link: &LinkRef, msg_type: &str) -> bool {
        match self {
            Outgoing::Json(body) => link.send_json(msg_type, body.clone()),
            Outgoing::Dual(body) => link.send_dual(msg_type, body),
        }
    }

    /// The [`RPC_SEND`] request carrying this message to `account`'s server.
    fn to_request(&self, account: &str, msg_type: &str) -> messages::SendToAccount {
        let (body_json, body_proto) = match self {
            Outgoing::Json(body) => (body.to_string(), None),
            Outgoing::Dual(body) => (body.json().to_string(), Some(body.proto().to_vec())),
        };
        messages::SendToAccount {
            account: account.to_string(),
            msg_type: msg_type.to_string(),
            body_json,
            body_proto,
        }
    }

    /// The message of an [`RPC_SEND`] request: both forms if it has `body_proto`, else JSON.
    fn from_request(req: &messages::SendToAccount) -> Result<Outgoing, String> {
        let body: serde_json::Value =
            serde_json::from_str(&req.body_json).map_err(|e| format!("bad body: {e}"))?;
        match &req.body_proto {
            None => Ok(Outgoing::Json(body)),
            Some(proto) => DualBody::from_parts(body, Bytes::copy_from_slice(proto))
                .map(Outgoing::Dual)
                .map_err(|e| format!("bad body: {e}")),
        }
    }
}

/// RPC message type of a remote [`AccountManager::send_message`].
pub const RPC_SEND: &str = "_account.send";
/// RPC message type of a remote broadcast.
pub const RPC_BROADCAST: &str = "_account.broadcast";
/// Deadline of one remote send or broadcast call.
pub const REMOTE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl AccountManager {
    /// Sends one message to `account`'s client if it is logged in *here* and this server
    /// may act for it now (lease checked in the same instant as the send). Returns the id of
    /// the link that took it; `None` otherwise. The synchronous, local-only form of
    /// [`send_message`](Self::send_message).
    pub fn deliver(&self, account: &str, msg_type: &str, body: serde_json::Value) -> Option<LinkId> {
        let link = self.shared.local_link(account)?;
        link.send_json(msg_type, body).then(|| link.link_id())
    }

    /// Sends one message to `account`'s client (iFun's `SendMessage`): through the local
    /// link, or by RPC to the server it is logged in on. False if it is logged in nowhere or
    /// its link is closed.
    pub async fn send_message(
        &self,
        account: &str,
        msg_type: &str,
        body: serde_json::Value,
    ) -> Result<bool, AccountError> {
        self.send_outgoing(account, msg_type, Outgoing::Json(body)).await
    }

    /// [`send_message`](Self::send_message) for a message in both body forms: the account's
    /// link sends the form of its client's transport ([`ClientLink::send_dual`](super::ClientLink::send_dual)),
    /// wherever it is logged in — the sender need not know which port the recipient uses.
    /// Both forms travel in the RPC to the recipient's server.
    pub async fn send_message_dual(
        &self,
        account: &str,
        msg_type: &str,
        body: DualBody,
    ) -> Result<bool, AccountError> {
        self.send_outgoing(account, msg_type, Outgoing::Dual(body)).await
    }

    async fn send_outgoing(
        &self,
        account: &str,
        msg_type: &str,
        msg: Outgoing,
    ) -> Result<bool, AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        if s.local_link(account).is_some() {
            return Ok(s.deliver_locally(account, msg_type, &msg));
        }
        let Some(peer) = self.locate(account).await? else { return Ok(false) };
        if peer == s.id {
            return Ok(s.deliver_locally(account, msg_type, &msg));
        }
        let req = msg.to_request(account, msg_type);
        let opts = CallOptions::default().with_timeout(REMOTE_CALL_TIMEOUT).ordered(account);
        let rep: messages::SendToAccountReply = s.rpc.call(peer, RPC_SEND, &req, opts).await?;
        Ok(rep.delivered)
    }

    /// Sends to every account logged in here (iFun's `BroadcastLocally`); returns how many
    /// links took it. Nothing is sent while the lease is not held.
    pub fn broadcast_locally(&self, msg_type: &str, body: &serde_json::Value) -> usize {
        self.shared.broadcast_locally(msg_type, body)
    }

    /// Sends to every account logged in on `peers` (all members, this server included, if
    /// empty) (iFun's `BroadcastGlobally`). Returns the number of links that took it;
    /// unreachable peers are logged and skipped.
    pub async fn broadcast_globally(
        &self,
        msg_type: &str,
        body: &serde_json::Value,
        peers: &[PeerId],
    ) -> Result<usize, AccountError> {
        let s = &self.shared;
        s.current()?;
        let targets: BTreeSet<PeerId> = if peers.is_empty() {
            s.cluster.peers(true).into_keys().collect()
        } else {
            peers.iter().copied().collect()
        };
        let req =
            messages::BroadcastToAccounts { msg_type: msg_type.to_string(), body_json: body.to_string() };
        // Planted bug `dup_delivery`: this server is also called over RPC, on top of the
        // local delivery below, so its own accounts get the message twice.
        let dup = s.cfg.bugs.dup_delivery;
        let calls = targets.iter().filter(|p| dup || **p != s.id).map(|&peer| {
            let req = req.clone();
            async move {
                let opts = CallOptions::default().with_timeout(REMOTE_CALL_TIMEOUT);
                let r: Result<messages::BroadcastToAccountsReply, _> =
                    s.rpc.call(peer, RPC_BROADCAST, &req, opts).await;
                (peer, r)
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut total = if targets.contains(&s.id) { s.broadcast_locally(msg_type, body) } else { 0 };
        for (peer, r) in results {
            match r {
                Ok(rep) => total += usize::try_from(rep.delivered).unwrap_or(usize::MAX),
                Err(e) => {
                    warn!(target: LOG_TARGET, node = %s.node(), ?peer, error = %e, "broadcast: peer skipped")
                }
            }
        }
        Ok(total)
    }
}

impl Shared {
    /// The local link of `account`, if this server may act for it now.
    pub(super) fn local_link(&self, account: &str) -> Option<LinkRef> {
        let st = self.st();
        if !self.acting(&st.lease, self.now()) {
            return None;
        }
        st.links.get(account).map(|e| e.link.clone())
    }

    fn deliver_locally(&self, account: &str, msg_type: &str, msg: &Outgoing) -> bool {
        match self.local_link(account) {
            Some(link) => msg.send(&link, msg_type),
            None => false,
        }
    }

    fn broadcast_locally(&self, msg_type: &str, body: &serde_json::Value) -> usize {
        let links: Vec<LinkRef> = {
            let st = self.st();
            if !self.acting(&st.lease, self.now()) {
                return 0;
            }
            st.links.links()
        };
        links.iter().filter(|l| l.send_json(msg_type, body.clone())).count()
    }
}

/// Registers the handlers of [`RPC_SEND`] and [`RPC_BROADCAST`] (they hold the manager
/// weakly).
pub(super) fn register_rpc(rpc: &Rpc, weak: Weak<Shared>) {
    let w = weak.clone();
    rpc.register_handler(RPC_SEND, move |_info, req: messages::SendToAccount| {
        let shared = w.upgrade();
        async move {
            let s = shared.ok_or_else(|| HandlerError::new("account manager gone"))?;
            let msg = Outgoing::from_request(&req).map_err(HandlerError::new)?;
            let delivered = s.deliver_locally(&req.account, &req.msg_type, &msg);
            Ok(messages::SendToAccountReply { delivered })
        }
    });
    rpc.register_handler(RPC_BROADCAST, move |_info, req: messages::BroadcastToAccounts| {
        let shared = weak.upgrade();
        async move {
            let s = shared.ok_or_else(|| HandlerError::new("account manager gone"))?;
            let body: serde_json::Value = serde_json::from_str(&req.body_json)
                .map_err(|e| HandlerError::new(format!("bad body: {e}")))?;
            let delivered = s.broadcast_locally(&req.msg_type, &body) as u64;
            Ok(messages::BroadcastToAccountsReply { delivered })
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use serde_json::json;

    /// What a link would be given: `(json, proto)` of the message after the RPC round trip.
    fn through_the_wire(msg: &Outgoing) -> (serde_json::Value, Option<Bytes>) {
        let bytes = msg.to_request("kim", "gift").encode_to_vec();
        let req = messages::SendToAccount::decode(&bytes[..]).unwrap();
        assert_eq!((req.account.as_str(), req.msg_type.as_str()), ("kim", "gift"));
        match Outgoing::from_request(&req).unwrap() {
            Outgoing::Json(v) => (v, None),
            Outgoing::Dual(d) => (d.json().clone(), Some(d.proto().clone())),
        }
    }

    #[test]
    fn a_json_message_crosses_servers_as_json_only() {
        let got = through_the_wire(&Outgoing::Json(json!({"from": "lee"})));
        assert_eq!(got, (json!({"from": "lee"}), None));
    }

    #[test]
    fn a_dual_message_crosses_servers_with_both_forms() {
        let proto = Bytes::from_static(b"\x0a\x03lee");
        let dual = DualBody::from_parts(json!({"from": "lee"}), proto.clone()).unwrap();
        assert_eq!(through_the_wire(&Outgoing::Dual(dual)), (json!({"from": "lee"}), Some(proto)));
        // An empty protobuf form (every field at its default) is still the protobuf form.
        let empty = DualBody::from_parts(json!({}), Bytes::new()).unwrap();
        assert_eq!(through_the_wire(&Outgoing::Dual(empty)), (json!({}), Some(Bytes::new())));
    }

    #[test]
    fn a_request_whose_json_form_is_not_an_object_is_refused() {
        let mut req = Outgoing::Json(json!({})).to_request("kim", "gift");
        req.body_json = "[1]".into();
        req.body_proto = Some(Vec::new());
        assert!(Outgoing::from_request(&req).is_err());
        req.body_json = "{".into();
        assert!(Outgoing::from_request(&req).is_err());
    }
}
