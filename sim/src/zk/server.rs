//! The network face of the simulated ZooKeeper service: accepts connections on a madsim
//! node, runs the session handshake, applies requests to the shared [`Service`] and pushes
//! watch notifications and replies to each session's current connection.
//!
//! Ordering: a request is applied, its notifications are queued on the connections of the
//! sessions they concern and its reply is queued on the requester's connection, all while
//! the store lock is held. Each connection's frames go out in queue order, so a session always
//! receives a notification before the reply to any request it issued after the change.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use engine::env::{Clock, Connection, CoordError, Net, Spawn, MAX_PEER_FRAME_BYTES};
use futures::channel::{mpsc, oneshot};
use futures::future::{self, Either};
use futures::{FutureExt, SinkExt, StreamExt};
use tracing::{debug, info, warn};

use super::proto::{decode, encode, ClientMsg, Reply, Request, Response, ServerMsg};
use super::service::{ConnectOutcome, Notification, Service};

/// Service options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZkOptions {
    /// ZooKeeper's `tickTime`: session timeouts are clamped to `[2, 20] × tick` unless
    /// `min_session_timeout` / `max_session_timeout` say otherwise.
    pub tick: Duration,
    /// ZooKeeper's `minSessionTimeout` (default `2 × tick`).
    pub min_session_timeout: Option<Duration>,
    /// ZooKeeper's `maxSessionTimeout` (default `20 × tick`).
    pub max_session_timeout: Option<Duration>,
}

impl Default for ZkOptions {
    fn default() -> Self {
        ZkOptions { tick: Duration::from_secs(2), min_session_timeout: None, max_session_timeout: None }
    }
}

/// The durable state of the service (data tree and sessions). Clone it into every
/// incarnation of the service node: it survives kill and restart.
#[derive(Clone, Default)]
pub struct ZkStore {
    inner: Arc<Mutex<Service>>,
}

impl std::fmt::Debug for ZkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkStore").finish_non_exhaustive()
    }
}

impl ZkStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the state (briefly; never across an await). For inspection by tests and checkers.
    pub fn lock(&self) -> MutexGuard<'_, Service> {
        engine::env::lock(&self.inner)
    }
}

/// The connection a session is currently attached to.
struct Attached {
    conn: u64,
    tx: mpsc::UnboundedSender<ServerMsg>,
    /// Dropping it tells the connection's reader to stop.
    _close: oneshot::Sender<()>,
}

struct Shared {
    store: ZkStore,
    clock: Arc<dyn Clock>,
    /// Session id -> its current connection. Lives only as long as this incarnation.
    conns: Mutex<BTreeMap<i64, Attached>>,
    next_conn: Mutex<u64>,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, BTreeMap<i64, Attached>> {
        engine::env::lock(&self.conns)
    }

    /// Queues notifications on their sessions' connections (dropped if a session has none:
    /// its client re-registers the watch on reconnect and learns of the change then).
    fn notify(conns: &BTreeMap<i64, Attached>, notes: Vec<Notification>) {
        for n in notes {
            if let Some(a) = conns.get(&n.session) {
                let _ = a.tx.unbounded_send(ServerMsg::Watch { kind: n.event.kind, path: n.event.path });
            }
        }
    }
}

/// Runs the service on `addr` forever. Call it again (same `store`) after a restart.
pub async fn serve(
    net: Arc<dyn Net>,
    clock: Arc<dyn Clock>,
    spawn: Arc<dyn Spawn>,
    addr: SocketAddr,
    store: ZkStore,
    opts: ZkOptions,
) {
    {
        let mut s = store.lock();
        s.set_tick(opts.tick);
        s.set_session_timeout_bounds(opts.min_session_timeout, opts.max_session_timeout);
        // Like a newly elected leader: no session is blamed for the outage.
        s.touch_all(clock.now());
        s.drop_all_watches();
        info!(%addr, sessions = s.session_ids().len(), zxid = s.zxid(), "zk service starting");
    }
    let shared = Arc::new(Shared {
        store,
        clock: clock.clone(),
        conns: Mutex::new(BTreeMap::new()),
        next_conn: Mutex::new(0),
    });
    // Owned by this future: killing the node (or dropping `serve`) stops the expiry loop too.
    let _expiry = spawn.spawn("zk-expiry", expiry_loop(shared.clone(), opts.tick).boxed()).abort_on_drop();
    let mut listener = loop {
        match net.listen(addr, MAX_PEER_FRAME_BYTES).await {
            Ok(l) => break l,
            Err(e) => {
                warn!(%addr, error = %e, "zk service cannot listen; retrying");
                clock.sleep(Duration::from_millis(500)).await;
            }
        }
    };
    loop {
        match listener.accept().await {
            Ok(conn) => {
                let id = {
                    let mut n = engine::env::lock(&shared.next_conn);
                    *n += 1;
                    *n
                };
                let fut = handle_conn(shared.clone(), spawn.clone(), conn, id, opts.tick);
                // The task outlives this handle (dropping a TaskHandle detaches).
                drop(spawn.spawn("zk-conn", fut.boxed()));
            }
            Err(e) => {
                warn!(error = %e, "zk accept failed");
                clock.sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn expiry_loop(shared: Arc<Shared>, tick: Duration) {
    let period = tick / 2;
    let mut last = shared.clock.now();
    loop {
        shared.clock.sleep(period).await;
        let now = shared.clock.now();
        let mut store = shared.store.lock();
        if now.saturating_since(last) > tick * 2 {
            // The node was paused: the outage is the service's, not the sessions'.
            info!(
                gap_ms = now.saturating_since(last).as_millis() as u64,
                "zk service was paused; touching all sessions"
            );
            store.touch_all(now);
        }
        last = now;
        let (expired, notes) = store.expire_due(now);
        let mut conns = shared.conns();
        for id in &expired {
            info!(session = format_args!("{id:#x}"), "zk session expired");
            // Dropping the attachment closes its connection; the client learns `Expired`
            // when it reconnects.
            conns.remove(id);
        }
        Shared::notify(&conns, notes);
    }
}

async fn handle_conn(
    shared: Arc<Shared>,
    spawn: Arc<dyn Spawn>,
    conn: Connection,
    conn_id: u64,
    tick: Duration,
) {
    let Connection { mut sink, mut stream, peer } = conn;
    // Handshake: the first frame must be a Connect, within a generous bound.
    let first = engine::env::timeout(&*shared.clock, tick * 20, stream.next()).await;
    let frame = match first {
        Ok(Some(Ok(f))) => f,
        Ok(Some(Err(e))) => {
            debug!(%peer, error = %e, "zk connection failed before handshake");
            return;
        }
        Ok(None) | Err(_) => return,
    };
    let (session_id, password, timeout_ms, last_zxid) = match decode::<ClientMsg>(&frame) {
        Ok(ClientMsg::Connect { session_id, password, timeout_ms, last_zxid_seen }) => {
            (session_id, password, timeout_ms, last_zxid_seen)
        }
        Ok(other) => {
            warn!(%peer, msg = ?other, "zk protocol violation: first frame is not Connect; dropping connection");
            return;
        }
        Err(e) => {
            warn!(%peer, error = %e, "zk malformed frame; dropping connection");
            return;
        }
    };
    let (tx, rx) = mpsc::unbounded::<ServerMsg>();
    let (close_tx, mut close_rx) = oneshot::channel::<()>();
    let sid = {
        let mut store = shared.store.lock();
        let outcome = store.connect(
            session_id,
            password,
            Duration::from_millis(timeout_ms),
            shared.clock.now(),
            shared.clock.wall_now(),
        );
        match outcome {
            ConnectOutcome::Expired => None,
            ConnectOutcome::Established { session_id: sid, password, timeout, new } => {
                let mut conns = shared.conns();
                if new {
                    info!(%peer, session = format_args!("{sid:#x}"), timeout_ms = timeout.as_millis() as u64, "zk session established");
                } else {
                    info!(%peer, session = format_args!("{sid:#x}"), last_zxid, "zk session resumed on a new connection");
                }
                let _ = tx.unbounded_send(ServerMsg::Connected {
                    session_id: sid,
                    password,
                    timeout_ms: timeout.as_millis() as u64,
                });
                // Replaces (and thereby detaches) any older connection of this session.
                conns.insert(sid, Attached { conn: conn_id, tx: tx.clone(), _close: close_tx });
                Some(sid)
            }
        }
    };
    let Some(sid) = sid else {
        info!(%peer, session = format_args!("{session_id:#x}"), "zk connect for unknown session: expired");
        let _ = sink.send(encode(&ServerMsg::Expired)).await;
        return;
    };
    drop(spawn.spawn("zk-conn-writer", writer(sink, rx).boxed()));
    loop {
        let next = match future::select(stream.next(), &mut close_rx).await {
            Either::Left((next, _)) => next,
            Either::Right(_) => {
                debug!(%peer, session = format_args!("{sid:#x}"), "zk connection detached");
                break;
            }
        };
        let frame = match next {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                debug!(%peer, error = %e, "zk connection failed");
                break;
            }
            None => {
                debug!(%peer, "zk connection closed by client");
                break;
            }
        };
        let (xid, req) = match decode::<ClientMsg>(&frame) {
            Ok(ClientMsg::Request { xid, req }) => (xid, req),
            Ok(ClientMsg::Connect { .. }) => {
                warn!(%peer, "zk protocol violation: second Connect; dropping connection");
                break;
            }
            Err(e) => {
                warn!(%peer, error = %e, "zk malformed frame; dropping connection");
                break;
            }
        };
        if !apply(&shared, sid, conn_id, xid, req, &tx) {
            break;
        }
    }
    let mut conns = shared.conns();
    if conns.get(&sid).is_some_and(|a| a.conn == conn_id) {
        conns.remove(&sid);
    }
}

/// Applies one request; false if the connection must end (stale, or the session closed).
fn apply(
    shared: &Shared,
    sid: i64,
    conn_id: u64,
    xid: u64,
    req: Request,
    tx: &mpsc::UnboundedSender<ServerMsg>,
) -> bool {
    let mut store = shared.store.lock();
    let mut conns = shared.conns();
    if conns.get(&sid).is_none_or(|a| a.conn != conn_id) {
        // The session moved to another connection or expired meanwhile.
        return false;
    }
    if !store.touch(sid, shared.clock.now()) {
        conns.remove(&sid);
        return false;
    }
    let wall = shared.clock.wall_now();
    if !matches!(req, Request::Ping) {
        debug!(session = format_args!("{sid:#x}"), xid, ?req, "zk request");
    }
    let mut keep = true;
    let (reply, notes) = match req {
        Request::Ping => (Reply::Ok(Response::Pong), Vec::new()),
        Request::Create { path, data, mode } => {
            let (r, n) = store.create(sid, &path, data, mode, wall);
            (read_reply(r, Response::Create), n)
        }
        Request::Delete { path, version } => {
            let (r, n) = store.delete(sid, &path, version, wall);
            (read_reply(r, |()| Response::Delete), n)
        }
        Request::SetData { path, data, version } => {
            let (r, n) = store.set_data(sid, &path, data, version, wall);
            (read_reply(r, Response::SetData), n)
        }
        Request::GetData { path, watch } => {
            (read_reply(store.get_data(sid, &path, watch), |(d, s)| Response::GetData(d, s)), Vec::new())
        }
        Request::Exists { path, watch } => {
            (read_reply(store.exists(sid, &path, watch), Response::Exists), Vec::new())
        }
        Request::GetChildren { path, watch } => {
            (read_reply(store.get_children(sid, &path, watch), Response::GetChildren), Vec::new())
        }
        Request::Multi { ops } => {
            let (r, n) = store.multi(sid, ops, wall);
            let reply = match r {
                Ok(rs) => Reply::Ok(Response::Multi(rs)),
                Err(e) => Reply::MultiErr(e),
            };
            (reply, n)
        }
        Request::SetWatches { relative_zxid, data, exist, child } => {
            let n = store.set_watches(sid, relative_zxid, &data, &exist, &child);
            (Reply::Ok(Response::SetWatches), n)
        }
        Request::Close => {
            let n = store.end_session(sid);
            info!(session = format_args!("{sid:#x}"), "zk session closed by client");
            keep = false;
            (Reply::Ok(Response::Close), n)
        }
    };
    Shared::notify(&conns, notes);
    let _ = tx.unbounded_send(ServerMsg::Reply { xid, zxid: store.zxid(), reply });
    if !keep {
        conns.remove(&sid);
    }
    keep
}

async fn writer(mut sink: engine::env::FrameSink, mut rx: mpsc::UnboundedReceiver<ServerMsg>) {
    while let Some(msg) = rx.next().await {
        if sink.send(encode(&msg)).await.is_err() {
            break;
        }
    }
}

/// Convenience for the server: a reply for a plain read.
pub fn read_reply<T>(r: Result<T, CoordError>, f: impl FnOnce(T) -> Response) -> Reply {
    match r {
        Ok(v) => Reply::Ok(f(v)),
        Err(e) => Reply::Err(e),
    }
}
