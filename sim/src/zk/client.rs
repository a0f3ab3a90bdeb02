//! The `Coord` port on the simulated ZooKeeper service: one session per handle, with the
//! client half of ZooKeeper's session protocol (heartbeats, connection-loss detection,
//! background reconnects, watch re-registration, expiry learned on reconnect).
//!
//! Ordering: one background task per session reads the connection and handles frames in
//! arrival order; a watch notification is handed to its watchers before any later reply is
//! completed, so a watcher always fires before its owner can read the new state.
//!
//! Size: about 740 lines, kept in one file on purpose: the connection task, the request
//! table, reconnects with `SetWatches` and the client-side watch tables are one state machine
//! whose ordering rule (above) spans all of them; split, that rule would have no one home.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use engine::env::{
    timeout, validate_create_path, validate_op, validate_path, Clock, Connection, Coord, CoordConnector,
    CoordError, CreateMode, EventKind, MonoTime, MultiError, Net, Op, OpResult, Rand, RandExt, SessionEvent,
    SessionOptions, SessionState, Spawn, Stat, TaskHandle, WatchedEvent, Watcher, MAX_PEER_FRAME_BYTES,
};
use futures::channel::{mpsc, oneshot};
use futures::future::{self, BoxFuture, Either};
use futures::stream::BoxStream;
use futures::{FutureExt, SinkExt, StreamExt};
use tracing::{debug, info, warn};

use super::proto::{decode, encode, ClientMsg, Reply, Request, Response, ServerMsg, PING_XID};

/// The ports a client needs (the first five fields of `engine::env::Env`).
#[derive(Clone)]
pub struct ZkClientEnv {
    /// Node name, for traces.
    pub node: Arc<str>,
    pub clock: Arc<dyn Clock>,
    pub rand: Arc<dyn Rand>,
    pub spawn: Arc<dyn Spawn>,
    pub net: Arc<dyn Net>,
}

impl ZkClientEnv {
    pub fn new(
        node: impl Into<Arc<str>>,
        clock: Arc<dyn Clock>,
        rand: Arc<dyn Rand>,
        spawn: Arc<dyn Spawn>,
        net: Arc<dyn Net>,
    ) -> Self {
        ZkClientEnv { node: node.into(), clock, rand, spawn, net }
    }
}

/// Opens sessions on the simulated ZooKeeper service at `server`.
#[derive(Clone)]
pub struct SimCoordConnector {
    env: ZkClientEnv,
    server: SocketAddr,
}

impl SimCoordConnector {
    pub fn new(env: ZkClientEnv, server: SocketAddr) -> Self {
        SimCoordConnector { env, server }
    }
}

impl CoordConnector for SimCoordConnector {
    fn connect(&self, opts: SessionOptions) -> BoxFuture<'_, Result<Arc<dyn Coord>, CoordError>> {
        async move {
            let inner = Arc::new(Inner::new(self.env.clone(), self.server, opts.session_timeout));
            let (ready_tx, ready_rx) = oneshot::channel();
            inner.st().ready = Some(ready_tx);
            let task = self.env.spawn.spawn("zk-client", run(inner.clone()).boxed());
            match timeout(&*self.env.clock, opts.connect_timeout, ready_rx).await {
                Ok(Ok(())) => {
                    let coord: Arc<dyn Coord> = Arc::new(ZkCoord { inner, task: Mutex::new(Some(task)) });
                    Ok(coord)
                }
                _ => {
                    task.abort();
                    info!(node = %self.env.node, server = %self.server, "zk connect timed out");
                    Err(CoordError::Timeout)
                }
            }
        }
        .boxed()
    }
}

/// How a read asked to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchType {
    Data,
    /// `exists`: a data watch if the node exists, an exist watch otherwise.
    Exists,
    Child,
}

struct PendingWatch {
    kind: WatchType,
    path: String,
    tx: oneshot::Sender<WatchedEvent>,
}

struct Pending {
    tx: oneshot::Sender<Result<Reply, CoordError>>,
    watch: Option<PendingWatch>,
}

/// The live connection of a session.
struct Live {
    id: u64,
    tx: mpsc::UnboundedSender<Bytes>,
    pending: BTreeMap<u64, Pending>,
}

type WatchTable = BTreeMap<String, Vec<oneshot::Sender<WatchedEvent>>>;

struct St {
    state: SessionState,
    /// False until the first session is established.
    established: bool,
    /// `close()` is under way: a connection loss now is not reported as `Disconnected`.
    closing: bool,
    session_id: i64,
    password: u64,
    /// Requested timeout until established, then the negotiated one.
    timeout: Duration,
    last_zxid: i64,
    conn: Option<Live>,
    conn_seq: u64,
    next_xid: u64,
    last_send: MonoTime,
    data_w: WatchTable,
    exist_w: WatchTable,
    child_w: WatchTable,
    subscribers: Vec<mpsc::UnboundedSender<SessionEvent>>,
    ready: Option<oneshot::Sender<()>>,
}

struct Inner {
    env: ZkClientEnv,
    server: SocketAddr,
    st: Mutex<St>,
}

impl Inner {
    fn new(env: ZkClientEnv, server: SocketAddr, timeout: Duration) -> Self {
        let now = env.clock.now();
        Inner {
            env,
            server,
            st: Mutex::new(St {
                state: SessionState::Disconnected,
                established: false,
                closing: false,
                session_id: 0,
                password: 0,
                timeout,
                last_zxid: 0,
                conn: None,
                conn_seq: 0,
                next_xid: 1,
                last_send: now,
                data_w: BTreeMap::new(),
                exist_w: BTreeMap::new(),
                child_w: BTreeMap::new(),
                subscribers: Vec::new(),
                ready: None,
            }),
        }
    }

    fn st(&self) -> MutexGuard<'_, St> {
        engine::env::lock(&self.st)
    }
}

impl St {
    fn set_state(&mut self, state: SessionState) {
        if self.state == state {
            return;
        }
        self.state = state;
        let ev = SessionEvent { state };
        self.subscribers.retain(|s| s.unbounded_send(ev).is_ok());
        if state.is_terminal() {
            // Streams end after a terminal state.
            self.subscribers.clear();
        }
    }

    /// Fails every in-flight request and forgets the connection.
    fn drop_conn(&mut self, err: CoordError) {
        if let Some(live) = self.conn.take() {
            for (_, p) in live.pending {
                let _ = p.tx.send(Err(err.clone()));
            }
        }
    }

    /// Fires every outstanding watch with a session event (terminal states only).
    fn fire_all_watches(&mut self, state: SessionState) {
        for table in [&mut self.data_w, &mut self.exist_w, &mut self.child_w] {
            for (path, senders) in std::mem::take(table) {
                for s in senders {
                    let _ = s.send(WatchedEvent { kind: EventKind::Session(state), path: path.clone() });
                }
            }
        }
    }

    fn send(&mut self, now: MonoTime, xid: u64, req: Request) -> bool {
        let Some(live) = &self.conn else { return false };
        self.last_send = now;
        live.tx.unbounded_send(encode(&ClientMsg::Request { xid, req })).is_ok()
    }

    /// Delivers a notification to the watchers it concerns (ZooKeeper's client rules).
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

    fn register(&mut self, w: PendingWatch, reply: &Reply) {
        let table = match (w.kind, reply) {
            (WatchType::Data, Reply::Ok(_)) => &mut self.data_w,
            (WatchType::Child, Reply::Ok(_)) => &mut self.child_w,
            (WatchType::Exists, Reply::Ok(Response::Exists(Some(_)))) => &mut self.data_w,
            (WatchType::Exists, Reply::Ok(Response::Exists(None))) => &mut self.exist_w,
            _ => return, // failed read: no watch was left
        };
        table.entry(w.path).or_default().push(w.tx);
    }

    fn sid(&self) -> String {
        format!("{:#x}", self.session_id)
    }
}

enum Attempt {
    /// Could not connect or handshake.
    Failed,
    /// A connection was established and has now been lost.
    Lost,
    /// The service no longer knows the session.
    Expired,
    /// The handle reached a terminal state meanwhile.
    Done,
}

/// The session's background task: connect, serve the connection, reconnect, until terminal.
async fn run(inner: Arc<Inner>) {
    loop {
        {
            let st = inner.st();
            if st.state.is_terminal() || st.closing {
                return;
            }
        }
        match attempt(&inner).await {
            Attempt::Expired => {
                let mut st = inner.st();
                info!(node = %inner.env.node, session = st.sid(), "zk session expired (learned on reconnect)");
                st.drop_conn(CoordError::SessionExpired);
                st.set_state(SessionState::Expired);
                st.fire_all_watches(SessionState::Expired);
                return;
            }
            Attempt::Done => return,
            Attempt::Failed | Attempt::Lost => {}
        }
        let backoff = Duration::from_millis(inner.env.rand.gen_range(0..1000));
        inner.env.clock.sleep(backoff).await;
    }
}

async fn attempt(inner: &Arc<Inner>) -> Attempt {
    let env = &inner.env;
    let Connection { mut sink, mut stream, .. } =
        match env.net.connect(inner.server, MAX_PEER_FRAME_BYTES).await {
            Ok(c) => c,
            Err(e) => {
                debug!(node = %env.node, server = %inner.server, error = %e, "zk connect failed");
                return Attempt::Failed;
            }
        };
    let (hello, hs_timeout) = {
        let st = inner.st();
        let hello = ClientMsg::Connect {
            session_id: st.session_id,
            password: st.password,
            timeout_ms: st.timeout.as_millis() as u64,
            last_zxid_seen: st.last_zxid,
        };
        (hello, st.timeout * 2 / 3)
    };
    if sink.send(encode(&hello)).await.is_err() {
        return Attempt::Failed;
    }
    let frame = match timeout(&*env.clock, hs_timeout, stream.next()).await {
        Ok(Some(Ok(f))) => f,
        _ => {
            debug!(node = %env.node, "zk handshake failed or timed out");
            return Attempt::Failed;
        }
    };
    let (sid, password, timeout_ms) = match decode::<ServerMsg>(&frame) {
        Ok(ServerMsg::Connected { session_id, password, timeout_ms }) => (session_id, password, timeout_ms),
        Ok(ServerMsg::Expired) => return Attempt::Expired,
        Ok(other) => {
            warn!(node = %env.node, msg = ?other, "zk protocol violation in handshake; dropping connection");
            return Attempt::Failed;
        }
        Err(e) => {
            warn!(node = %env.node, error = %e, "zk malformed handshake frame; dropping connection");
            return Attempt::Failed;
        }
    };
    let (wtx, wrx) = mpsc::unbounded::<Bytes>();
    let conn_id = {
        let mut st = inner.st();
        if st.state.is_terminal() {
            return Attempt::Done;
        }
        st.session_id = sid;
        st.password = password;
        st.timeout = Duration::from_millis(timeout_ms);
        st.conn_seq += 1;
        let conn_id = st.conn_seq;
        st.conn = Some(Live { id: conn_id, tx: wtx, pending: BTreeMap::new() });
        let now = env.clock.now();
        st.last_send = now;
        // Re-register outstanding watches before any user request can go out.
        let st = &mut *st;
        for t in [&mut st.data_w, &mut st.exist_w, &mut st.child_w] {
            t.retain(|_, v| {
                v.retain(|s| !s.is_canceled());
                !v.is_empty()
            });
        }
        if !(st.data_w.is_empty() && st.exist_w.is_empty() && st.child_w.is_empty()) {
            let req = Request::SetWatches {
                relative_zxid: st.last_zxid,
                data: st.data_w.keys().cloned().collect(),
                exist: st.exist_w.keys().cloned().collect(),
                child: st.child_w.keys().cloned().collect(),
            };
            let xid = st.next_xid;
            st.next_xid += 1;
            let (tx, _rx) = oneshot::channel();
            if let Some(live) = &mut st.conn {
                live.pending.insert(xid, Pending { tx, watch: None });
            }
            st.send(now, xid, req);
        }
        if st.established {
            info!(node = %env.node, session = st.sid(), "zk connection re-established");
        } else {
            info!(node = %env.node, session = st.sid(), timeout_ms, "zk session established");
        }
        st.established = true;
        st.set_state(SessionState::Connected);
        if let Some(r) = st.ready.take() {
            let _ = r.send(());
        }
        conn_id
    };
    drop(env.spawn.spawn("zk-client-writer", writer(sink, wrx).boxed()));

    let mut last_recv = env.clock.now();
    let reason = loop {
        let (to, last_send) = {
            let st = inner.st();
            if st.state.is_terminal() || st.conn.as_ref().map(|l| l.id) != Some(conn_id) {
                return Attempt::Done;
            }
            (st.timeout, st.last_send)
        };
        let read_deadline = last_recv.saturating_add(to * 2 / 3);
        let ping_at = last_send.saturating_add(to / 3);
        let wake = read_deadline.min(ping_at);
        match future::select(stream.next(), env.clock.sleep_until(wake)).await {
            Either::Left((Some(Ok(frame)), _)) => {
                last_recv = env.clock.now();
                if let Err(why) = handle_frame(inner, &frame) {
                    break why;
                }
            }
            Either::Left((Some(Err(e)), _)) => break format!("connection failed: {e}"),
            Either::Left((None, _)) => break "connection closed by the service".to_string(),
            Either::Right(((), _)) => {
                let now = env.clock.now();
                if now >= read_deadline {
                    break format!("nothing heard for {} ms", now.saturating_since(last_recv).as_millis());
                }
                if now >= ping_at {
                    inner.st().send(now, PING_XID, Request::Ping);
                }
            }
        }
    };
    let mut st = inner.st();
    if st.conn.as_ref().map(|l| l.id) == Some(conn_id) {
        engine::probe!("zk client: connection lost, session kept");
        st.drop_conn(CoordError::ConnectionLoss { maybe_applied: true });
        if !st.state.is_terminal() && !st.closing {
            info!(node = %env.node, session = st.sid(), reason, "zk connection lost");
            st.set_state(SessionState::Disconnected);
        }
    }
    Attempt::Lost
}

/// Handles one frame from the service; `Err(reason)` drops the connection.
fn handle_frame(inner: &Inner, frame: &[u8]) -> Result<(), String> {
    let msg = match decode::<ServerMsg>(frame) {
        Ok(m) => m,
        Err(e) => {
            warn!(node = %inner.env.node, error = %e, "zk malformed frame from service; dropping connection");
            return Err(format!("malformed frame: {e}"));
        }
    };
    let mut st = inner.st();
    match msg {
        ServerMsg::Reply { xid, zxid, reply } => {
            st.last_zxid = st.last_zxid.max(zxid);
            if xid == PING_XID {
                return Ok(());
            }
            let Some(p) = st.conn.as_mut().and_then(|l| l.pending.remove(&xid)) else {
                warn!(node = %inner.env.node, xid, "zk reply to an unknown request; ignored");
                return Ok(());
            };
            if let Some(w) = p.watch {
                st.register(w, &reply);
            }
            let _ = p.tx.send(Ok(reply));
            Ok(())
        }
        ServerMsg::Watch { kind, path } => {
            debug!(node = %inner.env.node, ?kind, path, "zk watch fired");
            st.deliver(kind, &path);
            Ok(())
        }
        other => {
            warn!(node = %inner.env.node, msg = ?other, "zk protocol violation; dropping connection");
            Err("protocol violation".to_string())
        }
    }
}

async fn writer(mut sink: engine::env::FrameSink, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    while let Some(frame) = rx.next().await {
        if sink.send(frame).await.is_err() {
            break;
        }
    }
}

/// One ZooKeeper session on the simulated service.
struct ZkCoord {
    inner: Arc<Inner>,
    /// The background task; aborted on close and when the handle is dropped.
    task: Mutex<Option<TaskHandle>>,
}

impl Drop for ZkCoord {
    fn drop(&mut self) {
        {
            // As the real client does when its last handle goes away: ask the service to
            // close the session (its ephemerals go at once), without waiting for the answer.
            // The connection's writer task sends the request after this handle is gone. A
            // crashed node sends nothing (its tasks never run again): its session expires.
            let mut st = self.inner.st();
            if st.state == SessionState::Connected && !st.closing {
                let xid = st.next_xid;
                st.next_xid += 1;
                let now = self.inner.env.clock.now();
                st.send(now, xid, Request::Close);
            }
        }
        if let Some(t) = engine::env::lock(&self.task).take() {
            t.abort();
        }
    }
}

fn unexpected(r: &Reply) -> CoordError {
    // The service answered a request with the wrong response type: treat as a lost
    // connection whose request may have applied (never panic on the peer's input).
    warn!(reply = ?r, "zk unexpected reply type");
    CoordError::ConnectionLoss { maybe_applied: true }
}

impl ZkCoord {
    /// Sends a request and waits for its reply (in issue order).
    async fn call(
        &self,
        req: Request,
        watch: Option<(WatchType, &str)>,
    ) -> Result<(Reply, Option<Watcher>), CoordError> {
        let (rx, watcher) = {
            let mut st = self.inner.st();
            match st.state {
                SessionState::Expired => return Err(CoordError::SessionExpired),
                SessionState::Closed => return Err(CoordError::Closed),
                SessionState::Disconnected => {
                    return Err(CoordError::ConnectionLoss { maybe_applied: false })
                }
                SessionState::Connected => {}
            }
            let xid = st.next_xid;
            st.next_xid += 1;
            let (tx, rx) = oneshot::channel();
            let (pw, watcher) = match watch {
                Some((kind, path)) => {
                    let (wtx, wrx) = oneshot::channel();
                    let path_owned = path.to_string();
                    let fallback = path.to_string();
                    let watcher: Watcher = wrx
                        .map(move |r| {
                            r.unwrap_or(WatchedEvent {
                                kind: EventKind::Session(SessionState::Closed),
                                path: fallback,
                            })
                        })
                        .boxed();
                    (Some(PendingWatch { kind, path: path_owned, tx: wtx }), Some(watcher))
                }
                None => (None, None),
            };
            let Some(live) = st.conn.as_mut() else {
                return Err(CoordError::ConnectionLoss { maybe_applied: false });
            };
            live.pending.insert(xid, Pending { tx, watch: pw });
            debug!(node = %self.inner.env.node, session = st.sid(), xid, ?req, "zk request");
            let now = self.inner.env.clock.now();
            st.send(now, xid, req);
            (rx, watcher)
        };
        match rx.await {
            Ok(Ok(reply)) => Ok((reply, watcher)),
            Ok(Err(e)) => Err(e),
            // The connection task went away with the request in flight.
            Err(_) => {
                engine::probe!("zk client: outcome unknown (maybe applied)");
                Err(CoordError::ConnectionLoss { maybe_applied: true })
            }
        }
    }

    async fn simple(&self, req: Request) -> Result<Response, CoordError> {
        match self.call(req, None).await?.0 {
            Reply::Ok(r) => Ok(r),
            Reply::Err(e) => Err(e),
            r @ Reply::MultiErr(_) => Err(unexpected(&r)),
        }
    }

    async fn watched(
        &self,
        req: Request,
        kind: WatchType,
        path: &str,
    ) -> Result<(Response, Watcher), CoordError> {
        match self.call(req, Some((kind, path))).await? {
            (Reply::Ok(r), Some(w)) => Ok((r, w)),
            (Reply::Err(e), _) => Err(e),
            (r, _) => Err(unexpected(&r)),
        }
    }
}

#[async_trait]
impl Coord for ZkCoord {
    fn session_id(&self) -> i64 {
        self.inner.st().session_id
    }

    fn negotiated_timeout(&self) -> Duration {
        self.inner.st().timeout
    }

    fn state(&self) -> SessionState {
        self.inner.st().state
    }

    fn session_events(&self) -> BoxStream<'static, SessionEvent> {
        let mut st = self.inner.st();
        let (tx, rx) = mpsc::unbounded();
        if !st.state.is_terminal() {
            st.subscribers.push(tx);
        }
        rx.boxed()
    }

    async fn create(&self, path: &str, data: Bytes, mode: CreateMode) -> Result<String, CoordError> {
        validate_create_path(path, mode)?;
        match self.simple(Request::Create { path: path.to_string(), data, mode }).await? {
            Response::Create(p) => Ok(p),
            r => Err(unexpected(&Reply::Ok(r))),
        }
    }

    async fn delete(&self, path: &str, version: Option<i32>) -> Result<(), CoordError> {
        validate_path(path)?;
        match self.simple(Request::Delete { path: path.to_string(), version }).await? {
            Response::Delete => Ok(()),
            r => Err(unexpected(&Reply::Ok(r))),
        }
    }

    async fn get_data(&self, path: &str) -> Result<(Bytes, Stat), CoordError> {
        validate_path(path)?;
        match self.simple(Request::GetData { path: path.to_string(), watch: false }).await? {
            Response::GetData(d, s) => Ok((d, s)),
            r => Err(unexpected(&Reply::Ok(r))),
        }
    }

    async fn get_data_w(&self, path: &str) -> Result<(Bytes, Stat, Watcher), CoordError> {
        validate_path(path)?;
        match self
            .watched(Request::GetData { path: path.to_string(), watch: true }, WatchType::Data, path)
            .await?
        {
            (Response::GetData(d, s), w) => Ok((d, s, w)),
            (r, _) => Err(unexpected(&Reply::Ok(r))),
        }
    }

    async fn exists(&self, path: &str) -> Result<Option<Stat>, CoordError> {
        validate_path(path)?;
        match self.simple(Request::Exists { path: path.to_string(), watch: false }).await? {
            Response::Exists(s) => Ok(s),
            r => Err(unexpected(&Reply::Ok(r))),
        }
    }

    async fn exists_w(&self, path: &str) -> Result<(Option<Stat>, Watcher), CoordError> {
        validate_path(path)?;
        match self
            .watched(Request::Exists { path: path.to_string(), watch: true }, WatchType::Exists, path)
            .await?
        {
            (Response::Exists(s), w) => Ok((s, w)),
            (r, _) => Err(unexpected(&Reply::Ok(r))),
        }
    }

    async fn set_data(&self, path: &str, data: Bytes, version: Option<i32>) -> Result<Stat, CoordError> {
        validate_path(path)?;
        match self.simple(Request::SetData { path: path.to_string(), data, version }).await? {
            Response::SetData(s) => Ok(s),
            r => Err(unexpected(&Reply::Ok(r))),
        }
    }

    async fn get_children(&self, path: &str) -> Result<Vec<String>, CoordError> {
        validate_path(path)?;
        match self.simple(Request::GetChildren { path: path.to_string(), watch: false }).await? {
            Response::GetChildren(c) => Ok(c),
            r => Err(unexpected(&Reply::Ok(r))),
        }
    }

    async fn get_children_w(&self, path: &str) -> Result<(Vec<String>, Watcher), CoordError> {
        validate_path(path)?;
        let req = Request::GetChildren { path: path.to_string(), watch: true };
        match self.watched(req, WatchType::Child, path).await? {
            (Response::GetChildren(c), w) => Ok((c, w)),
            (r, _) => Err(unexpected(&Reply::Ok(r))),
        }
    }

    async fn multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, MultiError> {
        for (index, op) in ops.iter().enumerate() {
            validate_op(op).map_err(|error| MultiError { index, error })?;
        }
        // A failure not tied to one op (connection loss, expiry) is reported at index 0.
        let whole = |error| MultiError { index: 0, error };
        if ops.is_empty() {
            // As the real client: an empty transaction is answered locally, no round trip.
            return match self.inner.st().state {
                SessionState::Connected => Ok(Vec::new()),
                SessionState::Disconnected => Err(whole(CoordError::ConnectionLoss { maybe_applied: false })),
                SessionState::Expired => Err(whole(CoordError::SessionExpired)),
                SessionState::Closed => Err(whole(CoordError::Closed)),
            };
        }
        match self.call(Request::Multi { ops }, None).await.map_err(whole)?.0 {
            Reply::Ok(Response::Multi(rs)) => Ok(rs),
            Reply::MultiErr(e) => Err(e),
            Reply::Err(e) => Err(whole(e)),
            r => Err(whole(unexpected(&r))),
        }
    }

    async fn close(&self) {
        {
            let mut st = self.inner.st();
            if st.state.is_terminal() {
                return;
            }
            if st.state == SessionState::Connected {
                st.closing = true;
            }
        }
        if let Err(e) = self.simple(Request::Close).await {
            debug!(node = %self.inner.env.node, error = %e, "zk close not confirmed; session will expire by timeout");
        }
        {
            let mut st = self.inner.st();
            if !st.state.is_terminal() {
                info!(node = %self.inner.env.node, session = st.sid(), "zk session closed");
                st.drop_conn(CoordError::Closed);
                st.set_state(SessionState::Closed);
                st.fire_all_watches(SessionState::Closed);
            }
        }
        if let Some(t) = engine::env::lock(&self.task).take() {
            t.abort();
        }
    }
}
