//! The state every clone of a [`Cluster`](super::Cluster) and its background task share:
//! what this server publishes, the view of the others, the change feed, and registration.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::LOG_TARGET;
use bytes::Bytes;
use futures::channel::mpsc;
use tracing::{info, warn};

use super::config::ClusterBugs;
use super::error::ClusterError;
use super::peer::{PeerId, PeerInfo};
use super::view::{StaleReason, ViewChange, ViewState};
use crate::env::{
    ensure_path, lock, Backoff, Coord, CoordError, CreateMode, Env, SessionOptions, TaskHandle,
};

/// Pacing of every retry of the membership: first wait up to 100 ms, doubling per attempt,
/// capped at 5 s. Re-registration after expiry retries forever at the cap's pace.
pub(super) const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// How many `NodeExists` rounds registration tolerates (each deletes a stale registration of
/// an earlier session) before reporting the conflict.
const REGISTER_ROUNDS_MAX: u32 = 4;
/// Most view changes queued for one [`changes`](super::Cluster::changes) subscriber. A
/// subscriber that falls this far behind is unsubscribed (logged): its stream ends after the
/// changes already queued, and it should re-read [`peers`](super::Cluster::peers) and
/// subscribe again. The feed never grows without bound and never blocks the membership task.
pub const CHANGES_QUEUED_MAX: usize = 1024;

pub(super) struct Shared {
    pub(super) env: Env,
    pub(super) id: PeerId,
    pub(super) app_id: String,
    /// `/{app_id}/servers`.
    pub(super) servers_path: String,
    /// `/{app_id}/servers/{id}`.
    pub(super) self_path: String,
    pub(super) session: SessionOptions,
    pub(super) bugs: ClusterBugs,
    pub(super) st: Mutex<State>,
}

pub(super) struct State {
    /// What this server publishes; the source of truth for itself (never read back).
    pub(super) local: PeerInfo,
    /// Bumped on every local change; `published_rev` is the highest revision known written.
    /// Invariant: `published_rev <= local_rev`.
    pub(super) local_rev: u64,
    pub(super) published_rev: u64,
    /// Other members, exactly as last read from their znodes. Never contains this server.
    pub(super) view: BTreeMap<PeerId, PeerInfo>,
    pub(super) view_state: ViewState,
    /// The current session (replaced on re-registration).
    pub(super) coord: Arc<dyn Coord>,
    /// Terminal: once set, never cleared, and the view stays `Stale { Left }`.
    pub(super) left: bool,
    /// Each bounded by [`CHANGES_QUEUED_MAX`].
    pub(super) subscribers: Vec<mpsc::Sender<ViewChange>>,
    pub(super) task: Option<TaskHandle>,
}

impl State {
    /// A new state for a server about to register `local` (revision 1, nothing published).
    pub(super) fn new(local: PeerInfo, coord: Arc<dyn Coord>) -> Self {
        State {
            local,
            local_rev: 1,
            published_rev: 0,
            view: BTreeMap::new(),
            view_state: ViewState::Live,
            coord,
            left: false,
            subscribers: Vec::new(),
            task: None,
        }
    }

    /// A new subscriber to every later change.
    pub(super) fn subscribe(&mut self) -> mpsc::Receiver<ViewChange> {
        // One sender per channel: its capacity is `buffer + 1`.
        let (tx, rx) = mpsc::channel(CHANGES_QUEUED_MAX - 1);
        self.subscribers.push(tx);
        rx
    }

    /// Queues `change` for every subscriber; drops those that are gone or
    /// [`CHANGES_QUEUED_MAX`] behind.
    pub(super) fn emit(&mut self, change: ViewChange) {
        let node = &self.local.name;
        self.subscribers.retain_mut(|s| match s.try_send(change.clone()) {
            Ok(()) => true,
            Err(e) if e.is_full() => {
                warn!(target: LOG_TARGET, %node, queued_max = CHANGES_QUEUED_MAX, "cluster change subscriber too slow; unsubscribed");
                false
            }
            Err(_) => false,
        });
    }

    /// Changes this server's local info with `f` (true = it changed, bump the revision).
    pub(super) fn change_local(&mut self, f: impl FnOnce(&mut PeerInfo) -> bool) {
        debug_assert!(!self.left, "no local change after leave");
        let before = self.local_rev;
        if f(&mut self.local) {
            self.local_rev += 1;
        }
        debug_assert!(self.local_rev >= before && self.published_rev <= self.local_rev);
    }

    /// Records that revision `rev` (taken from [`State::snapshot`]) reached the service.
    pub(super) fn mark_published(&mut self, rev: u64) {
        debug_assert!(rev <= self.local_rev, "published revision {rev} above local {}", self.local_rev);
        self.published_rev = self.published_rev.max(rev);
        debug_assert!(self.published_rev <= self.local_rev);
    }

    pub(super) fn set_view_state(&mut self, new: ViewState) {
        let same = match (&self.view_state, &new) {
            (ViewState::Live, ViewState::Live) => true,
            (ViewState::Stale { reason: a, .. }, ViewState::Stale { reason: b, .. }) => a == b,
            _ => false,
        };
        if same {
            return;
        }
        // A view that was already stale stays stale since the first moment.
        let new = match (&self.view_state, new) {
            (ViewState::Stale { since, .. }, ViewState::Stale { reason, .. }) => {
                ViewState::Stale { since: *since, reason }
            }
            (_, n) => n,
        };
        // `Left` is terminal: a task still winding down cannot revive the view.
        if self.left && !matches!(new, ViewState::Stale { reason: StaleReason::Left, .. }) {
            return;
        }
        match new {
            ViewState::Live => info!(target: LOG_TARGET, node = %self.local.name, "cluster view live"),
            ViewState::Stale { reason, .. } => {
                info!(target: LOG_TARGET, node = %self.local.name, ?reason, "cluster view stale")
            }
        }
        self.view_state = new;
        self.emit(ViewChange::State(new));
    }

    pub(super) fn snapshot(&self) -> Result<(u64, Bytes), ClusterError> {
        let json = serde_json::to_vec(&self.local).map_err(|e| ClusterError::Serialize(e.to_string()))?;
        Ok((self.local_rev, Bytes::from(json)))
    }
}

impl Shared {
    pub(super) fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.st)
    }

    pub(super) fn node(&self) -> &str {
        &self.env.node
    }

    pub(super) fn member_path(&self, id: PeerId) -> String {
        format!("{}/{}", self.servers_path, id)
    }

    /// The wait before retry `attempt`, drawn from the `Rand` port.
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        RETRY.delay(attempt, &*self.env.rand)
    }

    pub(super) fn stale(&self, reason: StaleReason) -> ViewState {
        ViewState::Stale { since: self.env.clock.now(), reason }
    }

    pub(super) fn mark_published(&self, rev: u64) {
        self.st().mark_published(rev);
    }

    /// Creates this server's ephemeral znode on `coord`'s session with the latest local info.
    ///
    /// A znode already there that belongs to another (earlier) session is a registration that
    /// has not vanished yet: it is deleted and the create retried. One that belongs to this
    /// session (a create whose reply was lost) just gets the latest data.
    pub(super) async fn register(&self, coord: &dyn Coord) -> Result<(), ClusterError> {
        // Creates `/{app_id}` and `/{app_id}/servers` if missing.
        ensure_path(coord, &self.servers_path).await?;
        for _ in 0..REGISTER_ROUNDS_MAX {
            let (rev, data) = self.st().snapshot()?;
            match coord.create(&self.self_path, data, CreateMode::Ephemeral).await {
                Ok(_) => {
                    self.mark_published(rev);
                    return Ok(());
                }
                Err(CoordError::NodeExists) => {}
                Err(e) => return Err(e.into()),
            }
            match coord.exists(&self.self_path).await? {
                Some(stat) if stat.ephemeral_owner == coord.session_id() => {
                    let (rev, data) = self.st().snapshot()?;
                    coord.set_data(&self.self_path, data, None).await?;
                    self.mark_published(rev);
                    return Ok(());
                }
                Some(stat) => {
                    info!(target: LOG_TARGET, node = %self.node(), owner = format!("{:#x}", stat.ephemeral_owner),
                        "deleting our registration left by an earlier session");
                    match coord.delete(&self.self_path, Some(stat.version)).await {
                        Ok(()) | Err(CoordError::NoNode) | Err(CoordError::BadVersion) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {}
            }
        }
        Err(CoordError::NodeExists.into())
    }
}
