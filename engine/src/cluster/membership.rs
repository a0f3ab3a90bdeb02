//! Joining, publishing, the background task that keeps the view current, and leaving.
//!
//! Method groups of [`Cluster`]:
//! - **lifecycle**: [`Cluster::join`] (register, load the view, start the task) and
//!   [`Cluster::leave`] (unregister, close the session, stop the task);
//! - **commands** (async, talk to ZooKeeper): [`Cluster::add_tag`], [`Cluster::remove_tag`],
//!   [`Cluster::set_status`];
//! - **queries** (sync, answered from the cached view, never block): [`Cluster::peers`],
//!   [`Cluster::peers_with_tag`], [`Cluster::peer_tags`], [`Cluster::peer_status`],
//!   [`Cluster::peer_external_ip`], [`Cluster::peer_external_ports`],
//!   [`Cluster::least_loaded`], [`Cluster::view_state`];
//! - **outputs**: [`Cluster::changes`], a stream of [`ViewChange`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::{self, BoxFuture};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use tracing::{debug, info, warn};

use super::error::ClusterError;
use super::peer::{PeerDirectory, PeerId, PeerInfo};
use super::select;
use super::view::{self, StaleReason, ViewChange, ViewState};
use crate::env::{
    Coord, CoordError, CreateMode, Env, EventKind, RandExt, SessionOptions, SessionState, TaskHandle,
    WatchedEvent,
};

/// First retry delay after a failed coordination call; doubles per attempt.
const RETRY_DELAY_MIN: Duration = Duration::from_millis(100);
/// Cap of the retry delay. Re-registration after expiry retries forever at this pace.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);
/// How many times `join` retries registering and loading through connection loss before it
/// gives up and closes its session (the caller may call `join` again).
const JOIN_ATTEMPTS_MAX: u32 = 8;
/// How many `NodeExists` rounds registration tolerates (each deletes a stale registration of
/// an earlier session) before reporting the conflict.
const REGISTER_ROUNDS_MAX: u32 = 4;

/// Configuration of one server's membership (iFun's `AppInfo.app_id` and `RpcService.rpc_tags`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Servers with the same `app_id` form one cluster. Non-empty, no `/`.
    pub app_id: String,
    /// Human name of this server (`game-1`), published for logs.
    pub name: String,
    /// The flavor this server runs, if any.
    pub flavor: Option<String>,
    /// Initial tags (the manifest's `rpc_tags`); code may add more with `add_tag`.
    pub tags: BTreeSet<String>,
    /// Where this server's RPC service listens (what [`PeerDirectory`] answers).
    pub rpc_addr: SocketAddr,
    /// The address clients use to reach this server.
    pub external_ip: IpAddr,
    /// Client-facing ports by protocol name.
    pub external_ports: BTreeMap<String, u16>,
    /// Session options for every ZooKeeper session this server opens. The session timeout
    /// is how long a crashed server lingers in the others' views.
    pub session: SessionOptions,
    /// This process's identity. `None` draws a fresh one from the `Rand` port at `join`.
    /// Set it when a process retries a failed `join`: a join can fail after its
    /// registration reached ZooKeeper, and the retry must not look like a second server.
    pub peer_id: Option<PeerId>,
    /// Planted bugs for checker tests; all off by default.
    pub bugs: ClusterBugs,
}

impl ClusterConfig {
    /// A configuration with no tags, no external ports and default session options.
    pub fn new(app_id: impl Into<String>, name: impl Into<String>, rpc_addr: SocketAddr) -> Self {
        ClusterConfig {
            app_id: app_id.into(),
            name: name.into(),
            flavor: None,
            tags: BTreeSet::new(),
            rpc_addr,
            external_ip: rpc_addr.ip(),
            external_ports: BTreeMap::new(),
            session: SessionOptions::default(),
            peer_id: None,
            bugs: ClusterBugs::default(),
        }
    }
}

/// Deliberately broken behaviours, so tests can prove the checkers catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterBugs {
    /// After the first reconnect or re-registration, ignore watch events and skip the
    /// re-read: the view silently freezes while claiming to be live.
    pub stale_view: bool,
}

/// Checks an `app_id` (it becomes the first segment of every znode path).
pub fn validate_app_id(app_id: &str) -> Result<(), ClusterError> {
    if app_id.is_empty() || app_id.contains('/') || app_id == "." || app_id == ".." || app_id.contains('\0') {
        return Err(ClusterError::InvalidAppId(app_id.to_string()));
    }
    Ok(())
}

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

struct Shared {
    env: Env,
    id: PeerId,
    app_id: String,
    /// `/{app_id}/servers`.
    servers_path: String,
    /// `/{app_id}/servers/{id}`.
    self_path: String,
    session: SessionOptions,
    bugs: ClusterBugs,
    st: Mutex<State>,
}

struct State {
    /// What this server publishes; the source of truth for itself (never read back).
    local: PeerInfo,
    /// Bumped on every local change; `published_rev` is the highest revision known written.
    local_rev: u64,
    published_rev: u64,
    /// Other members, exactly as last read from their znodes. Never contains this server.
    view: BTreeMap<PeerId, PeerInfo>,
    view_state: ViewState,
    /// The current session (replaced on re-registration).
    coord: Arc<dyn Coord>,
    left: bool,
    subscribers: Vec<mpsc::UnboundedSender<ViewChange>>,
    task: Option<TaskHandle>,
}

impl State {
    fn emit(&mut self, change: ViewChange) {
        self.subscribers.retain(|s| s.unbounded_send(change.clone()).is_ok());
    }

    fn set_view_state(&mut self, new: ViewState) {
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
        match new {
            ViewState::Live => info!(node = %self.local.name, "cluster view live"),
            ViewState::Stale { reason, .. } => info!(node = %self.local.name, ?reason, "cluster view stale"),
        }
        self.view_state = new;
        self.emit(ViewChange::State(new));
    }

    fn snapshot(&self) -> Result<(u64, Bytes), ClusterError> {
        let json = serde_json::to_vec(&self.local).map_err(|e| ClusterError::Serialize(e.to_string()))?;
        Ok((self.local_rev, Bytes::from(json)))
    }
}

impl Shared {
    fn st(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn node(&self) -> &str {
        &self.env.node
    }

    fn member_path(&self, id: PeerId) -> String {
        format!("{}/{}", self.servers_path, id)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = RETRY_DELAY_MIN.saturating_mul(1 << attempt.min(10)).min(RETRY_DELAY_MAX);
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(2);
        Duration::from_millis(self.env.rand.gen_range(cap_ms / 2..cap_ms))
    }

    fn stale(&self, reason: StaleReason) -> ViewState {
        ViewState::Stale { since: self.env.clock.now(), reason }
    }

    fn mark_published(&self, rev: u64) {
        let mut st = self.st();
        st.published_rev = st.published_rev.max(rev);
    }

    /// Creates `/{app_id}` and `/{app_id}/servers` if missing.
    async fn ensure_parents(&self, coord: &dyn Coord) -> Result<(), CoordError> {
        for path in [format!("/{}", self.app_id), self.servers_path.clone()] {
            match coord.create(&path, Bytes::new(), CreateMode::Persistent).await {
                Ok(_) | Err(CoordError::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates this server's ephemeral znode on `coord`'s session with the latest local info.
    ///
    /// A znode already there that belongs to another (earlier) session is a registration that
    /// has not vanished yet: it is deleted and the create retried. One that belongs to this
    /// session (a create whose reply was lost) just gets the latest data.
    async fn register(&self, coord: &dyn Coord) -> Result<(), ClusterError> {
        self.ensure_parents(coord).await?;
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
                    info!(node = %self.node(), owner = format!("{:#x}", stat.ephemeral_owner),
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

/// Which znode a watch is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Children,
    Member(PeerId),
}

/// What to do after a coordination failure inside the task.
enum Trouble {
    /// Connection loss: wait for the session to come back, then reload.
    Reload,
    /// The session is gone: open a new one and re-register.
    Expired,
}

impl From<CoordError> for Trouble {
    fn from(e: CoordError) -> Self {
        match e {
            CoordError::SessionExpired | CoordError::Closed => Trouble::Expired,
            _ => Trouble::Reload,
        }
    }
}

/// The background task's own state: the session it works on and its armed watches.
struct Maintainer {
    shared: Arc<Shared>,
    coord: Arc<dyn Coord>,
    events: BoxStream<'static, crate::env::SessionEvent>,
    /// Pending one-shot watches; replaced wholesale on a full reload (dropping a watcher is
    /// how it is cancelled), so no znode ever has two.
    watches: FuturesUnordered<BoxFuture<'static, (Target, WatchedEvent)>>,
    /// Members (including this server) whose data watch is pending.
    armed: BTreeSet<PeerId>,
    /// The child watch on the servers znode is pending.
    child_armed: bool,
    /// Set by the planted `stale_view` bug: the view no longer follows the service.
    frozen: bool,
    /// A reload failed with connection loss; retry once connected.
    reload_pending: bool,
    reload_attempt: u32,
}

enum Wake {
    Session(Option<SessionState>),
    Watch(Target, WatchedEvent),
    Retry,
}

impl Maintainer {
    fn new(shared: Arc<Shared>, coord: Arc<dyn Coord>) -> Self {
        Maintainer {
            shared,
            events: coord.session_events(),
            coord,
            watches: FuturesUnordered::new(),
            armed: BTreeSet::new(),
            child_armed: false,
            frozen: false,
            reload_pending: false,
            reload_attempt: 0,
        }
    }

    /// Keeps `w` unless the same znode already has a pending watch (then `w` is dropped,
    /// which cancels it): one watch per znode, so one fire means one re-read.
    fn arm(&mut self, target: Target, w: crate::env::Watcher) {
        let fresh = match target {
            Target::Member(id) => self.armed.insert(id),
            Target::Children => !std::mem::replace(&mut self.child_armed, true),
        };
        if fresh {
            self.watches.push(w.map(move |ev| (target, ev)).boxed());
        }
    }

    /// Forgets every pending watch (they are cancelled by dropping them).
    fn disarm_all(&mut self) {
        self.watches = FuturesUnordered::new();
        self.armed.clear();
        self.child_armed = false;
    }

    /// Reads one member's znode, leaving a data watch on it. `Ok(None)`: gone or unusable.
    async fn fetch_member(&mut self, id: PeerId) -> Result<Option<PeerInfo>, CoordError> {
        let path = self.shared.member_path(id);
        match self.coord.get_data_w(&path).await {
            Ok((data, stat, w)) => {
                self.arm(Target::Member(id), w);
                match view::parse_member(id, &data) {
                    Ok(info) => Ok(Some(PeerInfo { registered_zxid: stat.czxid, ..info })),
                    Err(e) => {
                        warn!(node = %self.shared.node(), peer = ?id, error = %e, "malformed member znode; skipped");
                        Ok(None)
                    }
                }
            }
            Err(CoordError::NoNode) => {
                self.armed.remove(&id);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Lists the members, leaving a child watch. Re-creates the parents and our own
    /// registration if they are missing (e.g. deleted by an operator).
    async fn list(&mut self) -> Result<BTreeSet<PeerId>, Trouble> {
        let shared = self.shared.clone();
        let names = match self.coord.get_children_w(&shared.servers_path).await {
            Ok((names, w)) => {
                self.arm(Target::Children, w);
                names
            }
            Err(CoordError::NoNode) => {
                warn!(node = %shared.node(), path = %shared.servers_path, "servers znode missing; re-creating");
                self.reregister_here().await?;
                let (names, w) = self.coord.get_children_w(&shared.servers_path).await?;
                self.arm(Target::Children, w);
                names
            }
            Err(e) => return Err(e.into()),
        };
        let mut ids = BTreeSet::new();
        for name in names {
            match view::parse_member_name(&name) {
                Ok(id) => {
                    ids.insert(id);
                }
                Err(e) => warn!(node = %shared.node(), error = %e, "foreign child under servers; skipped"),
            }
        }
        if !ids.contains(&shared.id) {
            warn!(node = %shared.node(), "our registration is missing while the session lives; re-creating");
            self.reregister_here().await?;
            ids.insert(shared.id);
        }
        Ok(ids)
    }

    /// Registers again on the current session (our znode was deleted under us).
    async fn reregister_here(&mut self) -> Result<(), Trouble> {
        match self.shared.register(&*self.coord).await {
            Ok(()) => Ok(()),
            Err(ClusterError::Coord(e)) => Err(e.into()),
            Err(e) => {
                warn!(node = %self.shared.node(), error = %e, "cannot re-create our registration");
                Err(Trouble::Reload)
            }
        }
    }

    /// Re-reads everything with fresh watches and replaces the view.
    async fn reload(&mut self) -> Result<(), Trouble> {
        self.disarm_all();
        let ids = self.list().await?;
        let mut fresh = BTreeMap::new();
        for id in ids {
            if let Some(info) = self.fetch_member(id).await? {
                if id != self.shared.id {
                    fresh.insert(id, info);
                }
            }
        }
        let shared = self.shared.clone();
        let mut st = shared.st();
        let changes = view::diff(&st.view, &fresh);
        for c in &changes {
            let info = match c {
                ViewChange::Removed(id) => st.view.get(id),
                ViewChange::Added(id) | ViewChange::Updated(id) => fresh.get(id),
                ViewChange::State(_) => None,
            };
            log_change(shared.node(), c, info);
        }
        st.view = fresh;
        for c in changes {
            st.emit(c);
        }
        Ok(())
    }

    /// A child watch fired: load new members, drop gone ones.
    async fn relist(&mut self) -> Result<(), Trouble> {
        let ids = self.list().await?;
        let shared = self.shared.clone();
        let gone: Vec<PeerId> = shared.st().view.keys().filter(|id| !ids.contains(id)).copied().collect();
        for id in gone {
            self.update(id, None);
        }
        for id in ids {
            if !self.armed.contains(&id) {
                let info = self.fetch_member(id).await?;
                if id != shared.id {
                    self.update(id, info);
                }
            }
        }
        Ok(())
    }

    /// A data watch fired on a member: re-read it (whatever the event said, the read is the
    /// truth: a node deleted and re-created in between is still there).
    async fn reread(&mut self, id: PeerId) -> Result<(), Trouble> {
        self.armed.remove(&id);
        let info = self.fetch_member(id).await?;
        if id == self.shared.id {
            if !self.armed.contains(&id) {
                // Our znode is gone while our session lives: `list` puts it back.
                self.list().await?;
                self.fetch_member(id).await?;
            }
            return Ok(());
        }
        self.update(id, info);
        Ok(())
    }

    fn update(&self, id: PeerId, info: Option<PeerInfo>) {
        let mut st = self.shared.st();
        let removed = if info.is_none() { st.view.get(&id).cloned() } else { None };
        if let Some(change) = view::apply(&mut st.view, id, info) {
            log_change(self.shared.node(), &change, st.view.get(&id).or(removed.as_ref()));
            st.emit(change);
        }
    }

    /// Writes the local info if a change never made it to the service.
    async fn publish_if_dirty(&mut self) -> Result<(), Trouble> {
        let snap = {
            let st = self.shared.st();
            if st.published_rev >= st.local_rev {
                return Ok(());
            }
            st.snapshot()
        };
        let Ok((rev, data)) = snap else { return Ok(()) };
        match self.coord.set_data(&self.shared.self_path, data, None).await {
            Ok(_) => {
                self.shared.mark_published(rev);
                debug!(node = %self.shared.node(), rev, "published pending local info");
                Ok(())
            }
            Err(CoordError::NoNode) => self.reregister_here().await,
            Err(e) => Err(e.into()),
        }
    }

    /// After a (re)connect: catch up, or (planted bug) freeze.
    async fn catch_up(&mut self) -> Result<(), Trouble> {
        if self.shared.bugs.stale_view {
            if !self.frozen {
                warn!(node = %self.shared.node(), "PLANTED BUG stale_view: view frozen from now on");
            }
            self.frozen = true;
            self.disarm_all();
            self.shared.st().set_view_state(ViewState::Live);
            return Ok(());
        }
        self.publish_if_dirty().await?;
        self.reload().await?;
        self.reload_pending = false;
        self.reload_attempt = 0;
        self.shared.st().set_view_state(ViewState::Live);
        Ok(())
    }

    /// Opens a new session, re-registers under the same id and catches up; retries forever
    /// (with backoff) until it succeeds or the server leaves.
    async fn reregister(&mut self) {
        let shared = self.shared.clone();
        shared.st().set_view_state(shared.stale(StaleReason::SessionExpired));
        self.disarm_all();
        let mut attempt = 0u32;
        loop {
            if shared.st().left {
                return;
            }
            if attempt > 0 {
                shared.env.clock.sleep(shared.backoff(attempt)).await;
            }
            attempt = attempt.saturating_add(1);
            let coord = match shared.env.coord.connect(shared.session).await {
                Ok(c) => c,
                Err(e) => {
                    info!(node = %shared.node(), error = %e, attempt, "new session failed; retrying");
                    continue;
                }
            };
            let events = coord.session_events();
            // Swap first, so that `leave` closes this session even mid-registration.
            let left = {
                let mut st = shared.st();
                if !st.left {
                    st.coord = coord.clone();
                }
                st.left
            };
            if left {
                coord.close().await;
                return;
            }
            self.coord = coord.clone();
            self.events = events;
            match shared.register(&*coord).await {
                Ok(()) => {
                    info!(node = %shared.node(), peer = ?shared.id,
                        session = format!("{:#x}", coord.session_id()), "re-registered under the same peer id");
                }
                Err(e) => {
                    info!(node = %shared.node(), error = %e, attempt, "re-registration failed; retrying");
                    coord.close().await;
                    continue;
                }
            }
            match self.catch_up().await {
                Ok(()) => return,
                Err(Trouble::Reload) => {
                    self.reload_pending = true;
                    shared.st().set_view_state(shared.stale(StaleReason::Reloading));
                    return;
                }
                Err(Trouble::Expired) => continue,
            }
        }
    }

    async fn handle(&mut self, r: Result<(), Trouble>) {
        match r {
            Ok(()) => {}
            Err(Trouble::Reload) => {
                self.reload_pending = true;
                let shared = self.shared.clone();
                if self.coord.state() == SessionState::Connected {
                    shared.st().set_view_state(shared.stale(StaleReason::Reloading));
                }
            }
            Err(Trouble::Expired) => self.reregister().await,
        }
    }

    async fn next(&mut self) -> Wake {
        let mut retry = if self.reload_pending && self.coord.state() == SessionState::Connected {
            Some(self.shared.env.clock.sleep(self.shared.backoff(self.reload_attempt)))
        } else {
            None
        };
        let (events, watches) = (&mut self.events, &mut self.watches);
        future::poll_fn(|cx| {
            if let Poll::Ready(ev) = events.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Session(ev.map(|e| e.state)));
            }
            if !watches.is_empty() {
                if let Poll::Ready(Some((t, ev))) = watches.poll_next_unpin(cx) {
                    return Poll::Ready(Wake::Watch(t, ev));
                }
            }
            if let Some(r) = retry.as_mut() {
                if r.poll_unpin(cx).is_ready() {
                    return Poll::Ready(Wake::Retry);
                }
            }
            Poll::Pending
        })
        .await
    }

    async fn run(mut self) {
        loop {
            if self.shared.st().left {
                return;
            }
            match self.next().await {
                Wake::Session(Some(SessionState::Disconnected)) => {
                    info!(node = %self.shared.node(), "coordination session lost (disconnected); serving the last view");
                    let shared = self.shared.clone();
                    shared.st().set_view_state(shared.stale(StaleReason::Disconnected));
                }
                Wake::Session(Some(SessionState::Connected)) => {
                    info!(node = %self.shared.node(), "coordination session reconnected; catching up");
                    let r = self.catch_up().await;
                    self.handle(r).await;
                }
                Wake::Session(Some(SessionState::Expired | SessionState::Closed) | None) => {
                    if self.shared.st().left {
                        return;
                    }
                    info!(node = %self.shared.node(), "coordination session expired; re-registering");
                    self.reregister().await;
                }
                Wake::Watch(target, ev) => {
                    if self.frozen {
                        continue;
                    }
                    if let EventKind::Session(_) = ev.kind {
                        // The session stream reports it; the watch is gone either way.
                        match target {
                            Target::Children => self.child_armed = false,
                            Target::Member(id) => {
                                self.armed.remove(&id);
                            }
                        }
                        continue;
                    }
                    debug!(node = %self.shared.node(), ?target, kind = ?ev.kind, path = %ev.path, "watch fired");
                    let r = match target {
                        Target::Children => {
                            self.child_armed = false;
                            self.relist().await
                        }
                        Target::Member(id) => self.reread(id).await,
                    };
                    self.handle(r).await;
                }
                Wake::Retry => {
                    self.reload_attempt = self.reload_attempt.saturating_add(1);
                    let r = self.catch_up().await;
                    self.handle(r).await;
                }
            }
        }
    }
}

fn log_change(node: &str, change: &ViewChange, info: Option<&PeerInfo>) {
    let name = info.map(|i| i.name.as_str());
    match change {
        ViewChange::Added(id) => {
            info!(node, peer = ?id, name, tags = ?info.map(|i| &i.tags), "cluster member added");
        }
        ViewChange::Removed(id) => info!(node, peer = ?id, name, "cluster member removed"),
        ViewChange::Updated(id) => {
            debug!(node, peer = ?id, name, tags = ?info.map(|i| &i.tags), status = ?info.map(|i| &i.status),
                "cluster member updated");
        }
        ViewChange::State(_) => {}
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
            st: Mutex::new(State {
                local,
                local_rev: 1,
                published_rev: 0,
                view: BTreeMap::new(),
                view_state: ViewState::Live,
                coord: coord.clone(),
                left: false,
                subscribers: Vec::new(),
                task: None,
            }),
            env: env.clone(),
        });
        let mut m = Maintainer::new(shared.clone(), coord.clone());
        let mut attempt = 0;
        let err = loop {
            let r = match shared.register(&*coord).await {
                Ok(()) => m.reload().await.map_err(|t| match t {
                    Trouble::Reload => {
                        ClusterError::Coord(CoordError::ConnectionLoss { maybe_applied: true })
                    }
                    Trouble::Expired => ClusterError::Coord(CoordError::SessionExpired),
                }),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => break None,
                Err(ClusterError::Coord(e)) if e.is_transient() && attempt + 1 < JOIN_ATTEMPTS_MAX => {
                    attempt += 1;
                    debug!(node = %env.node, error = %e, attempt, "join: retrying through connection loss");
                    env.clock.sleep(shared.backoff(attempt)).await;
                }
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = err {
            warn!(node = %env.node, error = %e, "join failed");
            coord.close().await;
            return Err(e);
        }
        // Events that happened while joining are reflected by the reads; only later ones matter.
        if coord.state() != SessionState::Connected {
            m.reload_pending = true;
        }
        let task = env.spawn.spawn("cluster-membership", m.run().boxed());
        shared.st().task = Some(task);
        info!(node = %env.node, peer = ?id, app_id = %cfg.app_id, tags = ?cfg.tags,
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
        if f(&mut st.local) {
            st.local_rev += 1;
        }
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
                    debug!(node = %shared.node(), rev, "published local info");
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
                    debug!(node = %shared.node(), rev, "session ended; re-registration will publish");
                    return Ok(());
                }
                Err(CoordError::NoNode) => {
                    // Our znode is being re-created (by re-registration or the task's repair),
                    // which writes the latest local info.
                    debug!(node = %shared.node(), rev, "registration pending; it will publish");
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

    /// Whether the view is live, or stale (and since when, and why).
    pub fn view_state(&self) -> ViewState {
        self.shared.st().view_state
    }

    /// Every view change from now on. Dropping the receiver unsubscribes.
    pub fn changes(&self) -> mpsc::UnboundedReceiver<ViewChange> {
        let (tx, rx) = mpsc::unbounded();
        self.shared.st().subscribers.push(tx);
        rx
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
                debug!(node = %shared.node(), error = %e, "leave: delete not confirmed; closing anyway");
            }
        }
        coord.close().await;
        {
            let mut st = shared.st();
            let s = shared.stale(StaleReason::Left);
            st.set_view_state(s);
            st.subscribers.clear();
        }
        info!(node = %shared.node(), peer = ?shared.id, "left the cluster");
    }
}

impl PeerDirectory for Cluster {
    /// The RPC address of a live member (or of this server).
    fn rpc_addr(&self, peer: PeerId) -> Option<SocketAddr> {
        self.with_peer(peer, |i| i.rpc_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_id_validation() {
        assert!(validate_app_id("my_app").is_ok());
        for bad in ["", "a/b", "/", ".", "..", "a\0"] {
            assert_eq!(validate_app_id(bad), Err(ClusterError::InvalidAppId(bad.to_string())));
        }
    }
}
