//! [`FakeZk`]: in-memory ZooKeeper sessions on the shared service model, with faults the
//! test controls.
//!
//! **Fault model.** One service ([`Service`], the same state machine the simulator's
//! ZooKeeper node serves) and any number of client sessions, all answered at once (no
//! latency). Connected sessions are heard from continuously; a session the test
//! [`disconnect`](FakeZk::disconnect)s stops being heard and the service expires it one
//! negotiated timeout later, when the harness calls [`FakeZk::tick`] at or after that time
//! ([`FakeZk::next_deadline`] says when). Faults, all test-driven:
//! - `disconnect` / `reconnect` one session: while disconnected every call fails with
//!   `ConnectionLoss { maybe_applied: false }` and watch notifications are not delivered;
//!   on reconnect the client re-registers its watches (`SetWatches`), so changes it missed
//!   fire then, or it learns `Expired` if the service expired it meanwhile;
//! - [`lose_next_answer`](FakeZk::lose_next_answer): the session's next call is applied, then
//!   its connection breaks before the answer: `ConnectionLoss { maybe_applied: true }`, state
//!   `Disconnected`;
//! - [`expire`](FakeZk::expire): the service ends the session now (its ephemerals go, other
//!   sessions' watches fire); a connected client sees `Expired` at once, a disconnected one
//!   on reconnect;
//! - [`set_reachable`](FakeZk::set_reachable)`(false)`: new connects wait out their connect
//!   timeout and fail with `Timeout`.
//!
//! **Not modelled**: latency and reordering between sessions (everything is answered in call
//! order), automatic reconnects (the test reconnects), the client's heartbeat timing (a
//! connected session never expires by itself), and what the service model itself leaves
//! out (see [`super::zk_service`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::clock::ManualClock;
use super::zk_service::{ConnectOutcome, Notification, Service};
use crate::env::{
    lock, validate_create_path, validate_op, validate_path, Clock, Coord, CoordConnector, CoordError,
    CreateMode, EventKind, MonoTime, MultiError, Op, OpResult, SessionEvent, SessionOptions, SessionState,
    Stat, WatchedEvent, Watcher,
};

/// Most session events one `session_events` stream holds unread. A session changes state a
/// few times per test; a subscriber this far behind is dropped and its stream ends.
pub const SESSION_EVENTS_QUEUED_MAX: usize = 64;

type WatchTable = BTreeMap<String, Vec<oneshot::Sender<WatchedEvent>>>;

/// The client half of one session.
struct Client {
    state: SessionState,
    password: u64,
    timeout: Duration,
    /// The service's zxid when this client last heard from it (for `SetWatches`).
    last_zxid: i64,
    /// Monotonic time of the disconnect, while disconnected.
    disconnected_at: Option<MonoTime>,
    lose_next_answer: bool,
    data_w: WatchTable,
    exist_w: WatchTable,
    child_w: WatchTable,
    subscribers: Vec<mpsc::Sender<SessionEvent>>,
}

impl Client {
    fn set_state(&mut self, state: SessionState) {
        if self.state == state {
            return;
        }
        self.state = state;
        let ev = SessionEvent { state };
        // A subscriber that left SESSION_EVENTS_QUEUED_MAX events unread is dropped (its
        // stream ends after what is queued), as is one whose receiver is gone.
        self.subscribers.retain_mut(|s| s.try_send(ev).is_ok());
        if state.is_terminal() {
            self.subscribers.clear();
            for table in [&mut self.data_w, &mut self.exist_w, &mut self.child_w] {
                for (path, senders) in std::mem::take(table) {
                    for s in senders {
                        let _ = s.send(WatchedEvent { kind: EventKind::Session(state), path: path.clone() });
                    }
                }
            }
        }
    }

    /// ZooKeeper's client rules for which watchers a notification fires.
    fn deliver(&mut self, kind: EventKind, path: &str) {
        let fire = |table: &mut WatchTable| {
            for s in table.remove(path).unwrap_or_default() {
                let _ = s.send(WatchedEvent { kind, path: path.to_string() });
            }
        };
        match kind {
            EventKind::NodeCreated | EventKind::NodeDataChanged => {
                fire(&mut self.data_w);
                fire(&mut self.exist_w);
            }
            EventKind::NodeChildrenChanged => fire(&mut self.child_w),
            EventKind::NodeDeleted => {
                fire(&mut self.data_w);
                fire(&mut self.exist_w);
                fire(&mut self.child_w);
            }
            EventKind::Session(_) => {}
        }
    }

    /// The error for a call in the current state, `None` if connected.
    fn refuse(&self) -> Option<CoordError> {
        match self.state {
            SessionState::Connected => None,
            SessionState::Disconnected => Some(CoordError::ConnectionLoss { maybe_applied: false }),
            SessionState::Expired => Some(CoordError::SessionExpired),
            SessionState::Closed => Some(CoordError::Closed),
        }
    }
}

struct World {
    svc: Service,
    clients: BTreeMap<i64, Client>,
    reachable: bool,
}

impl World {
    /// Hands each notification to its session's watchers (dropped while it is disconnected:
    /// the re-registration on reconnect reports what it missed).
    fn route(&mut self, notes: Vec<Notification>) {
        for n in notes {
            if let Some(c) = self.clients.get_mut(&n.session) {
                if c.state == SessionState::Connected {
                    c.deliver(n.event.kind, &n.event.path);
                }
            }
        }
    }

    /// Connected sessions count as heard from at `now`; sessions silent for their timeout
    /// expire.
    fn tick(&mut self, now: MonoTime) {
        for (sid, c) in &self.clients {
            if c.state == SessionState::Connected {
                self.svc.touch(*sid, now);
            }
        }
        let (_, notes) = self.svc.expire_due(now);
        self.route(notes);
    }

    /// Ends `sid` at the service and tells its client: `Expired` now if connected, on
    /// reconnect if not.
    fn expire(&mut self, sid: i64) {
        let notes = self.svc.end_session(sid);
        self.route(notes);
        if let Some(c) = self.clients.get_mut(&sid) {
            if c.state == SessionState::Connected {
                c.set_state(SessionState::Expired);
            }
        }
    }
}

/// An in-memory ZooKeeper ensemble for unit tests: a [`CoordConnector`] whose sessions share
/// one [`Service`]. Cheap to clone; clones share everything. See the module doc for the
/// fault model and the test controls.
#[derive(Clone)]
pub struct FakeZk {
    world: Arc<Mutex<World>>,
    clock: ManualClock,
}

impl FakeZk {
    /// A service with ZooKeeper's default tick (2 s: session timeouts clamped to 4..40 s),
    /// on `clock`.
    pub fn new(clock: ManualClock) -> Self {
        FakeZk {
            world: Arc::new(Mutex::new(World {
                svc: Service::default(),
                clients: BTreeMap::new(),
                reachable: true,
            })),
            clock,
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Runs `f` on the service model (to inspect or seed the tree).
    pub fn with_service<T>(&self, f: impl FnOnce(&mut Service) -> T) -> T {
        f(&mut self.world().svc)
    }

    /// Every session the service knows, ascending.
    pub fn sessions(&self) -> Vec<i64> {
        self.world().svc.session_ids()
    }

    /// A znode's data and stat as the service has it now, `None` if absent.
    pub fn get(&self, path: &str) -> Option<(Bytes, Stat)> {
        self.world().svc.get_data(0, path, false).ok()
    }

    /// Child names of `path` as the service has them now (empty if absent).
    pub fn children(&self, path: &str) -> Vec<String> {
        self.world().svc.get_children(0, path, false).unwrap_or_default()
    }

    /// Breaks `sid`'s connection: the client reports `Disconnected` and the service starts
    /// its expiry countdown.
    pub fn disconnect(&self, sid: i64) {
        let now = self.clock.now();
        let mut w = self.world();
        let World { svc, clients, .. } = &mut *w;
        if let Some(c) = clients.get_mut(&sid) {
            if c.state == SessionState::Connected {
                c.disconnected_at = Some(now);
                c.set_state(SessionState::Disconnected);
                // Last heard from now: the service's expiry countdown starts here.
                svc.touch(sid, now);
            }
        }
    }

    /// Reconnects a disconnected `sid`: resumes the session and re-registers its watches
    /// (missed changes fire now), or reports `Expired` if the service no longer has it.
    pub fn reconnect(&self, sid: i64) {
        let (now, wall) = (self.clock.now(), self.clock.wall_now());
        let mut w = self.world();
        w.tick(now);
        let World { svc, clients, .. } = &mut *w;
        let Some(c) = clients.get_mut(&sid) else { return };
        if c.state != SessionState::Disconnected {
            return;
        }
        c.disconnected_at = None;
        match svc.connect(sid, c.password, c.timeout, now, wall) {
            ConnectOutcome::Expired => c.set_state(SessionState::Expired),
            ConnectOutcome::Established { .. } => {
                let keys = |t: &WatchTable| t.keys().cloned().collect::<Vec<_>>();
                let (data, exist, child) = (keys(&c.data_w), keys(&c.exist_w), keys(&c.child_w));
                let notes = svc.set_watches(sid, c.last_zxid, &data, &exist, &child);
                c.last_zxid = svc.zxid();
                c.set_state(SessionState::Connected);
                w.route(notes);
            }
        }
    }

    /// The service expires `sid` now (see the module doc).
    pub fn expire(&self, sid: i64) {
        self.world().expire(sid);
    }

    /// `sid`'s next call is applied but its answer is lost with the connection.
    pub fn lose_next_answer(&self, sid: i64) {
        if let Some(c) = self.world().clients.get_mut(&sid) {
            c.lose_next_answer = true;
        }
    }

    /// Whether new sessions can be opened (existing ones are not affected).
    pub fn set_reachable(&self, reachable: bool) {
        self.world().reachable = reachable;
    }

    /// When the earliest disconnected session expires at the service, if any.
    pub fn next_deadline(&self) -> Option<MonoTime> {
        let w = self.world();
        w.clients
            .iter()
            .filter_map(|(sid, c)| Some(c.disconnected_at?.saturating_add(w.svc.session(*sid)?.timeout)))
            .min()
    }

    /// Lets the service act on the current time: connected sessions count as heard from,
    /// disconnected ones whose timeout has run out expire (their ephemerals go, watches fire).
    pub fn tick(&self) {
        let now = self.clock.now();
        self.world().tick(now);
    }

    /// Runs one call of `sid` against the service: refuses it if not connected, applies it,
    /// delivers the notifications it caused (before the answer, as ZooKeeper does), and
    /// applies a pending lost-answer fault.
    fn call<T>(
        &self,
        sid: i64,
        f: impl FnOnce(&mut Service, i64) -> (Result<T, CoordError>, Vec<Notification>),
    ) -> Result<T, CoordError> {
        let mut w = self.world();
        let refused = w.clients.get(&sid).map_or(Some(CoordError::Closed), Client::refuse);
        if let Some(e) = refused {
            return Err(e);
        }
        let now = self.clock.now();
        w.svc.touch(sid, now);
        let (r, notes) = f(&mut w.svc, sid);
        w.route(notes);
        let zxid = w.svc.zxid();
        let c = w.clients.get_mut(&sid).expect("checked above");
        c.last_zxid = zxid;
        if std::mem::take(&mut c.lose_next_answer) {
            c.disconnected_at = Some(now);
            c.set_state(SessionState::Disconnected);
            return Err(CoordError::ConnectionLoss { maybe_applied: true });
        }
        r
    }

    /// Registers a client-side watcher for a read that succeeded.
    fn watch(&self, sid: i64, path: &str, table: WatchKind) -> Watcher {
        let (tx, rx) = oneshot::channel();
        if let Some(c) = self.world().clients.get_mut(&sid) {
            let t = match table {
                WatchKind::Data => &mut c.data_w,
                WatchKind::Exist => &mut c.exist_w,
                WatchKind::Child => &mut c.child_w,
            };
            t.entry(path.to_string()).or_default().push(tx);
        }
        let path = path.to_string();
        // A watcher whose session handle is gone without an event never fires.
        rx.map(move |r| r.unwrap_or(WatchedEvent { kind: EventKind::Session(SessionState::Closed), path }))
            .boxed()
    }

    fn end(&self, sid: i64) {
        let mut w = self.world();
        let connected = w.clients.get(&sid).is_some_and(|c| c.state == SessionState::Connected);
        if connected {
            let notes = w.svc.end_session(sid);
            w.route(notes);
        }
        if let Some(c) = w.clients.get_mut(&sid) {
            if !c.state.is_terminal() {
                c.set_state(SessionState::Closed);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum WatchKind {
    Data,
    Exist,
    Child,
}

impl CoordConnector for FakeZk {
    fn connect(&self, opts: SessionOptions) -> BoxFuture<'_, Result<Arc<dyn Coord>, CoordError>> {
        async move {
            if !self.world().reachable {
                self.clock.sleep(opts.connect_timeout).await;
                return Err(CoordError::Timeout);
            }
            let (now, wall) = (self.clock.now(), self.clock.wall_now());
            let mut w = self.world();
            let ConnectOutcome::Established { session_id, password, timeout, .. } =
                w.svc.connect(0, 0, opts.session_timeout, now, wall)
            else {
                unreachable!("a new session is always established")
            };
            let last_zxid = w.svc.zxid();
            w.clients.insert(
                session_id,
                Client {
                    state: SessionState::Connected,
                    password,
                    timeout,
                    last_zxid,
                    disconnected_at: None,
                    lose_next_answer: false,
                    data_w: BTreeMap::new(),
                    exist_w: BTreeMap::new(),
                    child_w: BTreeMap::new(),
                    subscribers: Vec::new(),
                },
            );
            let c: Arc<dyn Coord> = Arc::new(FakeCoord { zk: self.clone(), sid: session_id, timeout });
            Ok(c)
        }
        .boxed()
    }
}

/// One session handle of a [`FakeZk`]. Dropping it while connected closes the session.
pub struct FakeCoord {
    zk: FakeZk,
    sid: i64,
    timeout: Duration,
}

impl Drop for FakeCoord {
    fn drop(&mut self) {
        self.zk.end(self.sid);
    }
}

#[async_trait]
impl Coord for FakeCoord {
    fn session_id(&self) -> i64 {
        self.sid
    }

    fn negotiated_timeout(&self) -> Duration {
        self.timeout
    }

    fn state(&self) -> SessionState {
        self.zk.world().clients.get(&self.sid).map_or(SessionState::Closed, |c| c.state)
    }

    fn session_events(&self) -> BoxStream<'static, SessionEvent> {
        let (tx, rx) = mpsc::channel(SESSION_EVENTS_QUEUED_MAX);
        if let Some(c) = self.zk.world().clients.get_mut(&self.sid) {
            if !c.state.is_terminal() {
                c.subscribers.push(tx);
            }
        }
        rx.boxed()
    }

    async fn create(&self, path: &str, data: Bytes, mode: CreateMode) -> Result<String, CoordError> {
        validate_create_path(path, mode)?;
        let wall = self.zk.clock.wall_now();
        self.zk.call(self.sid, |svc, sid| svc.create(sid, path, data, mode, wall))
    }

    async fn delete(&self, path: &str, version: Option<i32>) -> Result<(), CoordError> {
        validate_path(path)?;
        let wall = self.zk.clock.wall_now();
        self.zk.call(self.sid, |svc, sid| svc.delete(sid, path, version, wall))
    }

    async fn get_data(&self, path: &str) -> Result<(Bytes, Stat), CoordError> {
        validate_path(path)?;
        self.zk.call(self.sid, |svc, sid| (svc.get_data(sid, path, false), Vec::new()))
    }

    async fn get_data_w(&self, path: &str) -> Result<(Bytes, Stat, Watcher), CoordError> {
        validate_path(path)?;
        let (data, stat) = self.zk.call(self.sid, |svc, sid| (svc.get_data(sid, path, true), Vec::new()))?;
        Ok((data, stat, self.zk.watch(self.sid, path, WatchKind::Data)))
    }

    async fn exists(&self, path: &str) -> Result<Option<Stat>, CoordError> {
        validate_path(path)?;
        self.zk.call(self.sid, |svc, sid| (svc.exists(sid, path, false), Vec::new()))
    }

    async fn exists_w(&self, path: &str) -> Result<(Option<Stat>, Watcher), CoordError> {
        validate_path(path)?;
        let stat = self.zk.call(self.sid, |svc, sid| (svc.exists(sid, path, true), Vec::new()))?;
        let kind = if stat.is_some() { WatchKind::Data } else { WatchKind::Exist };
        Ok((stat, self.zk.watch(self.sid, path, kind)))
    }

    async fn set_data(&self, path: &str, data: Bytes, version: Option<i32>) -> Result<Stat, CoordError> {
        validate_path(path)?;
        let wall = self.zk.clock.wall_now();
        self.zk.call(self.sid, |svc, sid| svc.set_data(sid, path, data, version, wall))
    }

    async fn get_children(&self, path: &str) -> Result<Vec<String>, CoordError> {
        validate_path(path)?;
        self.zk.call(self.sid, |svc, sid| (svc.get_children(sid, path, false), Vec::new()))
    }

    async fn get_children_w(&self, path: &str) -> Result<(Vec<String>, Watcher), CoordError> {
        validate_path(path)?;
        let names = self.zk.call(self.sid, |svc, sid| (svc.get_children(sid, path, true), Vec::new()))?;
        Ok((names, self.zk.watch(self.sid, path, WatchKind::Child)))
    }

    async fn multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, MultiError> {
        for (index, op) in ops.iter().enumerate() {
            validate_op(op).map_err(|error| MultiError { index, error })?;
        }
        // A failure not tied to one op (connection loss, expiry) is reported at index 0.
        let whole = |error| MultiError { index: 0, error };
        if ops.is_empty() {
            // As the real client: an empty transaction is answered locally.
            return match self.state() {
                SessionState::Connected => Ok(Vec::new()),
                s => Err(whole(match s {
                    SessionState::Disconnected => CoordError::ConnectionLoss { maybe_applied: false },
                    SessionState::Expired => CoordError::SessionExpired,
                    _ => CoordError::Closed,
                })),
            };
        }
        let wall = self.zk.clock.wall_now();
        let mut failed = None;
        let r = self.zk.call(self.sid, |svc, sid| {
            let (r, notes) = svc.multi(sid, ops, wall);
            match r {
                Ok(rs) => (Ok(rs), notes),
                Err(e) => {
                    failed = Some(e);
                    (Ok(Vec::new()), notes)
                }
            }
        });
        match (r, failed) {
            (Err(e), _) => Err(whole(e)),
            (Ok(_), Some(e)) => Err(e),
            (Ok(rs), None) => Ok(rs),
        }
    }

    async fn close(&self) {
        self.zk.end(self.sid);
    }
}
