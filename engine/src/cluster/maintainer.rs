//! The background task that keeps the registration and the view current: one loop over
//! session events, fired watches and retries ([`Maintainer::run`]), and one loop that
//! (re-)establishes the registration, used by `join` and after session expiry
//! ([`Maintainer::establish`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::task::Poll;

use super::LOG_TARGET;
use futures::future::{self, BoxFuture};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use tracing::{debug, info, warn};

use super::error::ClusterError;
use super::peer::{PeerId, PeerInfo};
use super::shared::Shared;
use super::view::{self, StaleReason, ViewChange, ViewState};
use crate::env::{Coord, CoordError, EventKind, SessionEvent, SessionState, WatchedEvent, Watcher};

/// How many times `join` tries registering and loading through connection loss before it
/// gives up and closes its session (the caller may call `join` again).
pub(super) const JOIN_ATTEMPTS_MAX: u32 = 8;

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
pub(super) struct Maintainer {
    shared: Arc<Shared>,
    coord: Arc<dyn Coord>,
    events: BoxStream<'static, SessionEvent>,
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
    pub(super) reload_pending: bool,
    reload_attempt: u32,
}

/// Which of the two uses of [`Maintainer::establish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Establish {
    /// First registration, inside `join`, on the session `join` opened.
    Join,
    /// After the session expired: a new session per attempt, forever.
    NewSession,
}

enum Wake {
    Session(Option<SessionState>),
    Watch(Target, WatchedEvent),
    Retry,
}

impl Maintainer {
    pub(super) fn new(shared: Arc<Shared>, coord: Arc<dyn Coord>) -> Self {
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
    fn arm(&mut self, target: Target, w: Watcher) {
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
                        warn!(target: LOG_TARGET, node = %self.shared.node(), peer = ?id, error = %e, "malformed member znode; skipped");
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
                warn!(target: LOG_TARGET, node = %shared.node(), path = %shared.servers_path, "servers znode missing; re-creating");
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
                Err(e) => {
                    warn!(target: LOG_TARGET, node = %shared.node(), error = %e, "foreign child under servers; skipped")
                }
            }
        }
        if !ids.contains(&shared.id) {
            crate::probe!("cluster: own registration missing, re-created");
            warn!(target: LOG_TARGET, node = %shared.node(), "our registration is missing while the session lives; re-creating");
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
                warn!(target: LOG_TARGET, node = %self.shared.node(), error = %e, "cannot re-create our registration");
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
        debug_assert!(!fresh.contains_key(&shared.id), "the view never holds this server");
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
        debug_assert_ne!(id, self.shared.id, "this server is never in its own view");
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
                debug!(target: LOG_TARGET, node = %self.shared.node(), rev, "published pending local info");
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
                warn!(target: LOG_TARGET, node = %self.shared.node(), "PLANTED BUG stale_view: view frozen from now on");
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

    /// The one registration loop: registers this server and loads the view, retrying with
    /// [`super::shared::RETRY`] backoff.
    ///
    /// - [`Establish::Join`]: on the session `join` opened; connection loss is retried up to
    ///   [`JOIN_ATTEMPTS_MAX`] attempts, anything else is returned (the caller closes the
    ///   session).
    /// - [`Establish::NewSession`] (after expiry): each attempt opens a new session and
    ///   re-registers under the same id, then catches up; retries forever until it succeeds
    ///   or the server leaves. Never fails.
    pub(super) async fn establish(&mut self, how: Establish) -> Result<(), ClusterError> {
        let shared = self.shared.clone();
        if how == Establish::NewSession {
            shared.st().set_view_state(shared.stale(StaleReason::SessionExpired));
            self.disarm_all();
        }
        let mut attempt = 0u32;
        loop {
            if how == Establish::NewSession && shared.st().left {
                return Ok(());
            }
            if attempt > 0 {
                shared.env.clock.sleep(shared.backoff(attempt)).await;
            }
            attempt = attempt.saturating_add(1);
            match how {
                Establish::Join => {
                    let r = match shared.register(&*self.coord).await {
                        Ok(()) => self.reload().await.map_err(|t| match t {
                            Trouble::Reload => CoordError::ConnectionLoss { maybe_applied: true }.into(),
                            Trouble::Expired => CoordError::SessionExpired.into(),
                        }),
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(()) => return Ok(()),
                        Err(ClusterError::Coord(e)) if e.is_transient() && attempt < JOIN_ATTEMPTS_MAX => {
                            debug!(target: LOG_TARGET, node = %shared.node(), error = %e, attempt, "join: retrying through connection loss");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Establish::NewSession => {
                    if !self.new_session(attempt).await {
                        continue;
                    }
                    match self.catch_up().await {
                        Ok(()) => return Ok(()),
                        Err(Trouble::Reload) => {
                            self.reload_pending = true;
                            shared.st().set_view_state(shared.stale(StaleReason::Reloading));
                            return Ok(());
                        }
                        Err(Trouble::Expired) => continue,
                    }
                }
            }
        }
    }

    /// Opens a new session, makes it current and registers on it. False if this attempt
    /// failed (the session, if any, is closed) or the server left meanwhile.
    async fn new_session(&mut self, attempt: u32) -> bool {
        let shared = self.shared.clone();
        let coord = match shared.env.coord.connect(shared.session).await {
            Ok(c) => c,
            Err(e) => {
                info!(target: LOG_TARGET, node = %shared.node(), error = %e, attempt, "new session failed; retrying");
                return false;
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
            return false;
        }
        self.coord = coord.clone();
        self.events = events;
        match shared.register(&*coord).await {
            Ok(()) => {
                info!(target: LOG_TARGET, node = %shared.node(), peer = ?shared.id,
                    session = format!("{:#x}", coord.session_id()), "re-registered under the same peer id");
                crate::probe!("cluster: re-registered on a new session");
                true
            }
            Err(e) => {
                info!(target: LOG_TARGET, node = %shared.node(), error = %e, attempt, "re-registration failed; retrying");
                coord.close().await;
                false
            }
        }
    }

    async fn reregister(&mut self) {
        // Never fails in this mode.
        let r = self.establish(Establish::NewSession).await;
        debug_assert!(r.is_ok(), "re-registration only stops when the server leaves");
    }

    async fn handle(&mut self, r: Result<(), Trouble>) {
        match r {
            Ok(()) => {}
            Err(Trouble::Reload) => {
                crate::probe!("cluster: view stale until a reload succeeds");
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

    pub(super) async fn run(mut self) {
        loop {
            if self.shared.st().left {
                return;
            }
            match self.next().await {
                Wake::Session(Some(SessionState::Disconnected)) => {
                    crate::probe!("cluster: view stale while disconnected");
                    info!(target: LOG_TARGET, node = %self.shared.node(), "coordination session lost (disconnected); serving the last view");
                    let shared = self.shared.clone();
                    shared.st().set_view_state(shared.stale(StaleReason::Disconnected));
                }
                Wake::Session(Some(SessionState::Connected)) => {
                    crate::probe!("cluster: session reconnected, watches re-armed by a catch-up");
                    info!(target: LOG_TARGET, node = %self.shared.node(), "coordination session reconnected; catching up");
                    let r = self.catch_up().await;
                    self.handle(r).await;
                }
                Wake::Session(Some(SessionState::Expired | SessionState::Closed) | None) => {
                    if self.shared.st().left {
                        return;
                    }
                    crate::probe!("cluster: session expired, re-registering under the same id");
                    info!(target: LOG_TARGET, node = %self.shared.node(), "coordination session expired; re-registering");
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
                    debug!(target: LOG_TARGET, node = %self.shared.node(), ?target, kind = ?ev.kind, path = %ev.path, "watch fired");
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
            info!(target: LOG_TARGET, node, peer = ?id, name, tags = ?info.map(|i| &i.tags), "cluster member added");
        }
        ViewChange::Removed(id) => {
            info!(target: LOG_TARGET, node, peer = ?id, name, "cluster member removed")
        }
        ViewChange::Updated(id) => {
            debug!(target: LOG_TARGET, node, peer = ?id, name, tags = ?info.map(|i| &i.tags), status = ?info.map(|i| &i.status),
                "cluster member updated");
        }
        ViewChange::State(_) => {}
    }
}
