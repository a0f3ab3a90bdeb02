//! Messages to accounts: delivery on a local link (under the lease, checked in the same
//! instant as the send), [`AccountManager::send_message`] to wherever the account is logged
//! in, broadcasts to the accounts of this server or of many, and the RPC handlers that do
//! the remote halves ([`RPC_SEND`], [`RPC_BROADCAST`]).

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Duration;

use tracing::warn;

use super::links::LinkId;
use super::{messages, validate_account, AccountError, AccountManager, LinkRef, Shared, LOG_TARGET};
use crate::cluster::PeerId;
use crate::rpc::{CallOptions, HandlerError, Rpc};

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
        validate_account(account)?;
        let s = &self.shared;
        if s.local_link(account).is_some() {
            return Ok(s.deliver_locally(account, msg_type, body));
        }
        let Some(peer) = self.locate(account).await? else { return Ok(false) };
        if peer == s.id {
            return Ok(s.deliver_locally(account, msg_type, body));
        }
        let req = messages::SendToAccount {
            account: account.to_string(),
            msg_type: msg_type.to_string(),
            body_json: body.to_string(),
        };
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

    fn deliver_locally(&self, account: &str, msg_type: &str, body: serde_json::Value) -> bool {
        match self.local_link(account) {
            Some(link) => link.send_json(msg_type, body),
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
            let body: serde_json::Value = serde_json::from_str(&req.body_json)
                .map_err(|e| HandlerError::new(format!("bad body: {e}")))?;
            let delivered = s.deliver_locally(&req.account, &req.msg_type, body);
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
