//! The public face of membership: joining, publishing, queries and leaving.
//!
//! Method groups of [`Cluster`]:
//! - **lifecycle**: [`Cluster::join`] (register, load the view, start the task) and
//!   [`Cluster::leave`] (unregister, close the session, stop the task);
//! - **commands** (async, talk to ZooKeeper): [`Cluster::add_tag`], [`Cluster::remove_tag`],
//!   [`Cluster::set_status`];
//! - **queries** (sync, answered from the cached view, never block): [`Cluster::peers`],
//!   [`Cluster::peers_with_tag`], [`Cluster::peer_tags`], [`Cluster::peer_status`],
//!   [`Cluster::peer_external_ip`], [`Cluster::peer_external_ports`],
//!   [`Cluster::peer_client_addr`], [`Cluster::least_loaded`], [`Cluster::peers_by_load`],
//!   [`Cluster::view_state`];
//! - **outputs**: [`Cluster::changes`], a bounded stream of [`ViewChange`]s (see
//!   [`CHANGES_QUEUED_MAX`](super::CHANGES_QUEUED_MAX)).
//!
//! The background task lives in `maintainer.rs`, the shared state in `shared.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::LOG_TARGET;
use futures::channel::mpsc;
use futures::FutureExt;
use tracing::{debug, info, warn};

use super::config::{validate_app_id, ClusterConfig};
use super::error::ClusterError;
use super::maintainer::{Establish, Maintainer};
use super::peer::{PeerDirectory, PeerId, PeerInfo};
use super::select;
use super::shared::{Shared, State};
use super::view::{StaleReason, ViewChange, ViewState};
use crate::env::{CoordError, Env, SessionState};

/// This server's membership of its `app_id` cluster. Cheap to clone; all clones share one
/// registration, one view and one background task.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.shared.id).field("app_id", &self.shared.app_id).finish()
    }
}

impl Cluster {
    /// Joins the cluster of `cfg.app_id`: draws a new [`PeerId`], opens a session, registers
    /// `/{app_id}/servers/{peer_id}` (ephemeral, [`PeerInfo`] JSON), loads the view and starts
    /// the task that keeps both current. Retries through connection loss a bounded number of
    /// times; on failure the session is closed and the error returned.
    pub async fn join(env: Env, cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        validate_app_id(&cfg.app_id)?;
        if let Some(t) = cfg.tags.iter().find(|t| t.is_empty()) {
            return Err(ClusterError::InvalidTag(t.clone()));
        }
        let id = cfg.peer_id.unwrap_or_else(|| PeerId::new_random(&*env.rand));
        let coord = env.coord.connect(cfg.session).await?;
        let servers_path = format!("/{}/servers", cfg.app_id);
        let local = PeerInfo {
            id,
            name: cfg.name.clone(),
            flavor: cfg.flavor.clone(),
            tags: cfg.tags.clone(),
            rpc_addr: cfg.rpc_addr,
            external_ip: cfg.external_ip,
            external_ports: cfg.external_ports.clone(),
            status: serde_json::Value::Null,
            registered_zxid: 0,
        };
        let shared = Arc::new(Shared {
            id,
            self_path: format!("{servers_path}/{id}"),
            servers_path,
            app_id: cfg.app_id.clone(),
            session: cfg.session,
            bugs: cfg.bugs,
            st: Mutex::new(State::new(local, coord.clone())),
            env: env.clone(),
        });
        let mut m = Maintainer::new(shared.clone(), coord.clone());
        if let Err(e) = m.establish(Establish::Join).await {
            warn!(target: LOG_TARGET, node = %env.node, error = %e, "join failed");
            coord.close().await;
            return Err(e);
        }
        // Events that happened while joining are reflected by the reads; only later ones matter.
        if coord.state() != SessionState::Connected {
            m.reload_pending = true;
        }
        let task = env.spawn.spawn("cluster-membership", m.run().boxed());
        shared.st().task = Some(task);
        info!(target: LOG_TARGET, node = %env.node, peer = ?id, app_id = %cfg.app_id, tags = ?cfg.tags,
            members = shared.st().view.len(), "joined the cluster");
        Ok(Cluster { shared })
    }

    /// This server's peer id (new for every process start, kept across session expiry).
    pub fn id(&self) -> PeerId {
        self.shared.id
    }

    /// The `app_id` this server joined.
    pub fn app_id(&self) -> &str {
        &self.shared.app_id
    }

    /// Adds a tag (iFun's `Rpc::AddTag`) and publishes it. Returns once the service has it,
    /// or once a lost session means re-registration will publish it; may therefore wait out
    /// a disconnection (wrap in a timeout if that matters).
    pub async fn add_tag(&self, tag: &str) -> Result<(), ClusterError> {
        if tag.is_empty() {
            return Err(ClusterError::InvalidTag(tag.to_string()));
        }
        self.change_local(|l| l.tags.insert(tag.to_string()))?;
        self.publish().await
    }

    /// Removes a tag and publishes the change (same waiting rules as [`Cluster::add_tag`]).
    pub async fn remove_tag(&self, tag: &str) -> Result<(), ClusterError> {
        self.change_local(|l| l.tags.remove(tag))?;
        self.publish().await
    }

    /// Replaces this server's shared status (iFun's `Rpc::SetStatus`) and publishes it.
    /// Visible locally at once; to peers once published (same waiting rules as `add_tag`).
    /// Every call writes the whole znode: for fast-changing values, call it on a timer.
    pub async fn set_status(&self, status: serde_json::Value) -> Result<(), ClusterError> {
        self.change_local(|l| {
            let changed = l.status != status;
            l.status = status;
            changed
        })?;
        self.publish().await
    }

    fn change_local(&self, f: impl FnOnce(&mut PeerInfo) -> bool) -> Result<(), ClusterError> {
        let mut st = self.shared.st();
        if st.left {
            return Err(ClusterError::Left);
        }
        st.change_local(f);
        st.snapshot().map(|_| ())
    }

    /// Writes the latest local info (re-serialised on every attempt, so a retried older call
    /// never overwrites a newer one).
    async fn publish(&self) -> Result<(), ClusterError> {
        let shared = &self.shared;
        let mut attempt = 0u32;
        loop {
            let (coord, rev, data) = {
                let st = shared.st();
                if st.left {
                    return Err(ClusterError::Left);
                }
                if st.published_rev >= st.local_rev {
                    return Ok(());
                }
                let (rev, data) = st.snapshot()?;
                (st.coord.clone(), rev, data)
            };
            match coord.set_data(&shared.self_path, data, None).await {
                Ok(_) => {
                    shared.mark_published(rev);
                    debug!(target: LOG_TARGET, node = %shared.node(), rev, "published local info");
                    return Ok(());
                }
                Err(CoordError::ConnectionLoss { .. }) if !coord.state().is_terminal() => {
                    attempt = attempt.saturating_add(1);
                    shared.env.clock.sleep(shared.backoff(attempt.min(4))).await;
                }
                Err(CoordError::ConnectionLoss { .. } | CoordError::SessionExpired | CoordError::Closed) => {
                    let st = shared.st();
                    if st.left {
                        return Err(ClusterError::Left);
                    }
                    if !Arc::ptr_eq(&st.coord, &coord) {
                        continue; // already re-registered: write on the new session
                    }
                    // Re-registration (under way) writes the latest local info.
                    debug!(target: LOG_TARGET, node = %shared.node(), rev, "session ended; re-registration will publish");
                    return Ok(());
                }
                Err(CoordError::NoNode) => {
                    // Our znode is being re-created (by re-registration or the task's repair),
                    // which writes the latest local info.
                    debug!(target: LOG_TARGET, node = %shared.node(), rev, "registration pending; it will publish");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every member (iFun's `Rpc::GetPeers`), this server included if `include_self`.
    pub fn peers(&self, include_self: bool) -> BTreeMap<PeerId, PeerInfo> {
        let st = self.shared.st();
        let mut out = st.view.clone();
        if include_self {
            out.insert(self.shared.id, st.local.clone());
        }
        out
    }

    /// Members carrying `tag` (iFun's `Rpc::GetPeersWithTag`).
    pub fn peers_with_tag(&self, tag: &str, include_self: bool) -> BTreeMap<PeerId, PeerInfo> {
        let mut peers = self.peers(include_self);
        peers.retain(|_, i| i.tags.contains(tag));
        peers
    }

    fn with_peer<T>(&self, peer: PeerId, f: impl FnOnce(&PeerInfo) -> T) -> Option<T> {
        let st = self.shared.st();
        if peer == self.shared.id {
            Some(f(&st.local))
        } else {
            st.view.get(&peer).map(f)
        }
    }

    /// A member's tags (iFun's `Rpc::GetPeerTags`); `None` if not a member.
    pub fn peer_tags(&self, peer: PeerId) -> Option<BTreeSet<String>> {
        self.with_peer(peer, |i| i.tags.clone())
    }

    /// A member's client-facing IP (iFun's `Rpc::GetPeerExternalIp`).
    pub fn peer_external_ip(&self, peer: PeerId) -> Option<IpAddr> {
        self.with_peer(peer, |i| i.external_ip)
    }

    /// A member's client-facing ports by protocol (iFun's `Rpc::GetPeerExternalPorts`).
    pub fn peer_external_ports(&self, peer: PeerId) -> Option<BTreeMap<String, u16>> {
        self.with_peer(peer, |i| i.external_ports.clone())
    }

    /// Where a client of the transport named `port_name` reaches a member: its external IP
    /// and its port of that name, else its [`CLIENT_PORT_FALLBACK`](super::CLIENT_PORT_FALLBACK)
    /// (`tcp_json`) port. `None` if not a member or it publishes neither. See
    /// [`PeerInfo::client_addr`].
    pub fn peer_client_addr(&self, peer: PeerId, port_name: &str) -> Option<SocketAddr> {
        self.with_peer(peer, |i| i.client_addr(port_name)).flatten()
    }

    /// A member's shared status (iFun's `Rpc::GetPeerStatus`); `null` until it sets one,
    /// `None` if not a member.
    pub fn peer_status(&self, peer: PeerId) -> Option<serde_json::Value> {
        self.with_peer(peer, |i| i.status.clone())
    }

    /// The member with `tag` whose integer `status[field]` is smallest (iFun's room-count
    /// example). Members without a usable value are skipped and logged; ties go to the
    /// smallest peer id. See [`select::least_loaded`].
    pub fn least_loaded(&self, tag: &str, field: &str, include_self: bool) -> Option<PeerId> {
        select::least_loaded(&self.peers_with_tag(tag, include_self), field)
    }

    /// Every member with `tag`, least loaded first by the integer `status[field]`; members
    /// without a usable value come last; ties (and those last) in peer-id order, so every
    /// server ordering the same view gets the same list. See [`select::by_load`].
    pub fn peers_by_load(&self, tag: &str, field: &str, include_self: bool) -> Vec<PeerId> {
        select::by_load(&self.peers_with_tag(tag, include_self), field)
    }

    /// Whether the view is live, or stale (and since when, and why).
    pub fn view_state(&self) -> ViewState {
        self.shared.st().view_state
    }

    /// Every view change from now on. Dropping the receiver unsubscribes. At most
    /// [`CHANGES_QUEUED_MAX`](super::CHANGES_QUEUED_MAX) changes wait for a reader: one that falls further behind is
    /// unsubscribed and its stream ends (re-read [`Cluster::peers`] and subscribe again).
    pub fn changes(&self) -> mpsc::Receiver<ViewChange> {
        self.shared.st().subscribe()
    }

    /// Leaves the cluster: stops the task, deletes the registration and closes the session
    /// (best effort: unreachable, the registration vanishes one session timeout later).
    /// Idempotent. Commands on any clone fail with [`ClusterError::Left`] afterwards.
    pub async fn leave(&self) {
        let shared = &self.shared;
        let (task, coord) = {
            let mut st = shared.st();
            if st.left {
                return;
            }
            st.left = true;
            (st.task.take(), st.coord.clone())
        };
        if let Some(t) = task {
            t.abort();
        }
        if coord.state() == SessionState::Connected {
            if let Err(e) = coord.delete(&shared.self_path, None).await {
                debug!(target: LOG_TARGET, node = %shared.node(), error = %e, "leave: delete not confirmed; closing anyway");
            }
        }
        coord.close().await;
        {
            let mut st = shared.st();
            let s = shared.stale(StaleReason::Left);
            st.set_view_state(s);
            st.subscribers.clear();
            debug_assert!(st.left && st.task.is_none());
        }
        info!(target: LOG_TARGET, node = %shared.node(), peer = ?shared.id, "left the cluster");
    }
}

impl PeerDirectory for Cluster {
    /// The RPC address of a live member (or of this server).
    fn rpc_addr(&self, peer: PeerId) -> Option<SocketAddr> {
        self.with_peer(peer, |i| i.rpc_addr)
    }
}
