//! Broadcast to the sessions of other servers (iFun's `Session::BroadcastGlobally`): one RPC
//! per selected server, each of which runs [`SessionService::broadcast_locally`].
//!
//! Sessions here are *connections*, logged in or not; to reach logged-in accounts only use
//! [`AccountManager::broadcast_globally`](crate::account::AccountManager::broadcast_globally).

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use tracing::warn;

use super::SessionService;
use crate::cluster::{Cluster, PeerId};
use crate::rpc::{CallOptions, HandlerError, Rpc};

/// Messages of the global broadcast (`proto/session.proto`).
#[allow(clippy::all, missing_docs)]
pub mod messages {
    include!(concat!(env!("OUT_DIR"), "/sandtable.session.rs"));
}

/// RPC message type of a remote session broadcast.
pub const RPC_SESSION_BROADCAST: &str = "_session.broadcast";
/// Deadline of one remote broadcast call.
pub const GLOBAL_BROADCAST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a global broadcast reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Sessions that took the message, over every server that answered.
    pub delivered: usize,
    /// Servers that did not answer in time (their sessions may or may not have it).
    pub unreachable: Vec<PeerId>,
}

/// Session broadcasts across the cluster, for one session service (all its ports). Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct GlobalSessions {
    sessions: SessionService,
    cluster: Cluster,
    rpc: Rpc,
}

impl GlobalSessions {
    /// Serves other servers' broadcasts on `rpc` to the sessions of `sessions` (every port,
    /// each in its encoding). One service per server can be attached (the RPC type is fixed).
    pub fn attach(sessions: SessionService, cluster: Cluster, rpc: Rpc) -> Self {
        let local = sessions.clone();
        rpc.register_handler(RPC_SESSION_BROADCAST, move |_info, req: messages::BroadcastToSessions| {
            let local = local.clone();
            async move {
                let body: serde_json::Value = serde_json::from_str(&req.body_json)
                    .map_err(|e| HandlerError::new(format!("bad body: {e}")))?;
                let delivered = local.broadcast_locally(&req.msg_type, &body, |_| true) as u64;
                Ok(messages::BroadcastToSessionsReply { delivered })
            }
        });
        GlobalSessions { sessions, cluster, rpc }
    }

    /// Sends one message to every open session of every server carrying `tag` (every server
    /// if `None`), this one included if it matches. Servers are called concurrently; one
    /// that does not answer within [`GLOBAL_BROADCAST_TIMEOUT`] is reported, not retried (a
    /// retry could deliver twice).
    pub async fn broadcast_globally(
        &self,
        msg_type: &str,
        body: &serde_json::Value,
        tag: Option<&str>,
    ) -> BroadcastReport {
        let me = self.cluster.id();
        let targets: BTreeSet<PeerId> = match tag {
            Some(t) => self.cluster.peers_with_tag(t, true).into_keys().collect(),
            None => self.cluster.peers(true).into_keys().collect(),
        };
        let req =
            messages::BroadcastToSessions { msg_type: msg_type.to_string(), body_json: body.to_string() };
        let calls = targets.iter().filter(|p| **p != me).map(|&peer| {
            let req = req.clone();
            async move {
                let opts = CallOptions::default().with_timeout(GLOBAL_BROADCAST_TIMEOUT);
                let r: Result<messages::BroadcastToSessionsReply, _> =
                    self.rpc.call(peer, RPC_SESSION_BROADCAST, &req, opts).await;
                (peer, r)
            }
        });
        let results = join_all(calls).await;
        let mut report = BroadcastReport::default();
        if targets.contains(&me) {
            report.delivered += self.sessions.broadcast_locally(msg_type, body, |_| true);
        }
        for (peer, r) in results {
            match r {
                Ok(rep) => report.delivered += usize::try_from(rep.delivered).unwrap_or(usize::MAX),
                Err(e) => {
                    warn!(?peer, error = %e, "session broadcast: peer did not answer");
                    report.unreachable.push(peer);
                }
            }
        }
        report
    }
}
