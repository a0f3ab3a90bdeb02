//! The simulated SQL node: an [`Instance`] behind a listener on the simulated network.
//!
//! Each accepted connection gets one task that takes its requests one at a time, in order (a
//! SQL session): a read is answered from the store at once; a `transact` is held for
//! [`SqlOptions::commit_latency`] (the write and its fsync), then applied to the store in one
//! step under its lock (the commit point), then answered. A kill before the commit point loses
//! the transaction wholly; after it, the transaction is durable even if its answer is lost.
//! A malformed frame closes that connection (logged); it never panics the node.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use engine::env::{Clock, Connection, DbError, Net, Spawn, MAX_PEER_FRAME_BYTES};
use futures::{SinkExt, StreamExt};
use tracing::{debug, info, warn};

use super::proto::{self, Request, Response};
use super::service::Instance;

/// How long the node waits before listening again when binding fails (e.g. just restarted).
const LISTEN_RETRY: Duration = Duration::from_millis(100);

/// How a simulated SQL node behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlOptions {
    /// Time from taking a `transact` to its commit point (writing it and its fsync). A kill in
    /// this window loses the transaction; calls behind it on the same connection wait.
    /// Default 1 ms (an SSD fsync).
    pub commit_latency: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions { commit_latency: Duration::from_millis(1) }
    }
}

/// The durable data of one instance. It lives outside the madsim node, so every incarnation
/// of the node (after kill and restart) serves the same committed data; cloning shares it.
#[derive(Clone, Default)]
pub struct SqlStore {
    inner: Arc<Mutex<Instance>>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("commits", &self.lock().commits()).finish()
    }
}

impl SqlStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Instance> {
        // A panic elsewhere while holding the lock cannot leave a half-applied transaction
        // (`transact` commits in one step after all checks); keep going.
        engine::env::lock(&self.inner)
    }

    /// Runs `f` on the instance (briefly; never across an await). For tests and checkers.
    pub fn with<T>(&self, f: impl FnOnce(&mut Instance) -> T) -> T {
        f(&mut self.lock())
    }
}

/// Runs the node on `addr` forever as a madsim node's main task. Call it again with the same
/// `store` after a restart: committed data is kept.
pub async fn serve(
    net: Arc<dyn Net>,
    clock: Arc<dyn Clock>,
    spawn: Arc<dyn Spawn>,
    addr: SocketAddr,
    store: SqlStore,
    opts: SqlOptions,
) {
    let commits = store.with(|db| db.commits());
    info!(%addr, commits, commit_latency_ms = opts.commit_latency.as_millis() as u64, "sql server starting");
    let mut listener = loop {
        match net.listen(addr, MAX_PEER_FRAME_BYTES).await {
            Ok(l) => break l,
            Err(e) => {
                warn!(%addr, error = %e, "sql server cannot listen yet; retrying");
                clock.sleep(LISTEN_RETRY).await;
            }
        }
    };
    let mut next_conn: u64 = 0;
    loop {
        match listener.accept().await {
            Ok(conn) => {
                next_conn += 1;
                debug!(conn = next_conn, peer = %conn.peer, "sql accepted connection");
                let fut = serve_connection(next_conn, conn, clock.clone(), store.clone(), opts);
                let _task = spawn.spawn("sql-conn", Box::pin(fut));
            }
            Err(e) => {
                warn!(error = %e, "sql accept failed");
                clock.sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(
    conn_id: u64,
    conn: Connection,
    clock: Arc<dyn Clock>,
    store: SqlStore,
    opts: SqlOptions,
) {
    let Connection { mut sink, mut stream, peer } = conn;
    loop {
        let frame = match stream.next().await {
            None => {
                debug!(conn = conn_id, %peer, "sql connection closed by client");
                return;
            }
            Some(Err(e)) => {
                info!(conn = conn_id, %peer, error = %e, "sql connection lost");
                return;
            }
            Some(Ok(frame)) => frame,
        };
        let req: Request = match proto::decode(&frame) {
            Ok(r) => r,
            Err(e) => {
                warn!(conn = conn_id, %peer, len = frame.len(), error = %e, "sql malformed request; dropping connection");
                return;
            }
        };
        if req.command.is_write() && !opts.commit_latency.is_zero() {
            clock.sleep(opts.commit_latency).await;
        }
        // The commit point: one step under the store lock.
        let result = store.with(|db| proto::execute(db, &req.command));
        debug!(conn = conn_id, id = req.id, call = req.command.name(), ?result, "sql call");
        let resp = Response { id: req.id, result };
        let bytes = match proto::encode(&resp) {
            Ok(b) => b,
            Err(e) => {
                // The port's limits keep answers within a frame; refuse rather than drop.
                warn!(conn = conn_id, error = %e, "sql cannot encode a response");
                let refused = Response {
                    id: req.id,
                    result: Err(DbError::InvalidArgument(format!("answer too large: {e}"))),
                };
                match proto::encode(&refused) {
                    Ok(b) => b,
                    Err(_) => return,
                }
            }
        };
        if let Err(e) = sink.send(bytes).await {
            info!(conn = conn_id, %peer, error = %e, "sql connection lost while replying");
            return;
        }
    }
}
