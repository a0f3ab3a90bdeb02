//! The simulated Redis node: the [`Keyspace`] behind a listener on the simulated network.
//!
//! Each accepted connection gets one task that reads request frames, applies each command to
//! the shared keyspace (under a lock that is never held across an await) at the node's own
//! wall-clock time, and answers in order. A background task sweeps expired keys every 100 ms.
//! A malformed frame closes that connection (logged); it never panics the node.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use engine::env::{Clock, Connection, Net, Rand, RandExt, Spawn, MAX_PEER_FRAME_BYTES};
use futures::{SinkExt, StreamExt};
use tracing::{debug, info, warn};

use super::proto::{self, CommandError, Request, Response};
use super::service::Keyspace;

/// How often expired keys are actively removed (Redis's `hz 10`).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// How the simulated Redis node behaves.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Keep the dataset across a crash (an fsync-always AOF). Default: false (a crash loses it).
    pub persistent: bool,
    /// Planted bug: probability that a `GET` answers the key's value from before its latest
    /// write. Default 0.0 (the bug's code path never runs).
    pub stale_read_probability: f64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions { persistent: false, stale_read_probability: 0.0 }
    }
}

/// The dataset of one simulated Redis node. It lives outside the madsim node so that a
/// persistent server finds it again after a restart; cloning shares it.
#[derive(Clone, Default)]
pub struct RedisStore {
    inner: Arc<Mutex<Keyspace>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("keys", &self.lock().len()).finish()
    }
}

impl RedisStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Keyspace> {
        // A panic elsewhere while holding the lock cannot leave the map half-updated in a way
        // that matters for a simulation; keep going rather than cascade the panic.
        engine::env::lock(&self.inner)
    }

    /// Runs `f` on the keyspace (for tests and checkers inspecting the final state).
    pub fn with<T>(&self, f: impl FnOnce(&mut Keyspace) -> T) -> T {
        f(&mut self.lock())
    }

    /// Number of keys stored (expired-but-unswept included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Runs the service forever on `addr` as a madsim node's main task. On start, if
/// `!opts.persistent`, the store is cleared (a crash lost memory).
pub async fn serve(
    net: Arc<dyn Net>,
    clock: Arc<dyn Clock>,
    rand: Arc<dyn Rand>,
    spawn: Arc<dyn Spawn>,
    addr: SocketAddr,
    store: RedisStore,
    opts: RedisOptions,
) {
    let stale_p = opts.stale_read_probability;
    let kept = store.with(|ks| {
        if !opts.persistent {
            ks.clear();
        }
        ks.set_track_previous(stale_p > 0.0);
        ks.len()
    });
    info!(%addr, persistent = opts.persistent, keys_kept = kept, stale_read_probability = stale_p, "redis server starting");

    let mut listener = loop {
        match net.listen(addr, MAX_PEER_FRAME_BYTES).await {
            Ok(l) => break l,
            Err(e) => {
                warn!(%addr, error = %e, "redis cannot listen yet; retrying");
                clock.sleep(SWEEP_INTERVAL).await;
            }
        }
    };

    {
        let store = store.clone();
        let clock = clock.clone();
        // Detached: the task dies with the node.
        let _sweeper = spawn.spawn(
            "redis-sweep",
            Box::pin(async move {
                loop {
                    clock.sleep(SWEEP_INTERVAL).await;
                    let now = clock.wall_now().as_millis();
                    let removed = store.with(|ks| ks.sweep(now));
                    if removed > 0 {
                        debug!(removed, "redis expired keys swept");
                    }
                }
            }),
        );
    }

    let mut next_conn: u64 = 0;
    loop {
        match listener.accept().await {
            Ok(conn) => {
                next_conn += 1;
                let conn_id = next_conn;
                debug!(conn = conn_id, peer = %conn.peer, "redis accepted connection");
                let fut =
                    serve_connection(conn_id, conn, clock.clone(), rand.clone(), store.clone(), stale_p);
                let _task = spawn.spawn("redis-conn", Box::pin(fut));
            }
            Err(e) => {
                warn!(error = %e, "redis accept failed");
                clock.sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(
    conn_id: u64,
    conn: Connection,
    clock: Arc<dyn Clock>,
    rand: Arc<dyn Rand>,
    store: RedisStore,
    stale_p: f64,
) {
    let Connection { mut sink, mut stream, peer } = conn;
    loop {
        let frame = match stream.next().await {
            None => {
                debug!(conn = conn_id, %peer, "redis connection closed by client");
                return;
            }
            Some(Err(e)) => {
                info!(conn = conn_id, %peer, error = %e, "redis connection lost");
                return;
            }
            Some(Ok(frame)) => frame,
        };
        let req: Request = match proto::decode(&frame) {
            Ok(r) => r,
            Err(e) => {
                warn!(conn = conn_id, %peer, len = frame.len(), error = %e, "redis malformed request; dropping connection");
                return;
            }
        };
        let now = clock.wall_now().as_millis();
        let result = store.with(|ks| {
            let mut stale = || stale_p > 0.0 && rand.gen_bool(stale_p);
            ks.execute(&req.command, now, &mut stale)
        });
        debug!(
            conn = conn_id,
            id = req.id,
            cmd = req.command.name(),
            key = req.command.key(),
            ?result,
            "redis command"
        );
        let resp = Response { id: req.id, result };
        let bytes = match proto::encode(&resp) {
            Ok(b) => b,
            Err(e) => {
                // E.g. an LRANGE answer above the frame limit: refuse it rather than drop.
                warn!(conn = conn_id, error = %e, "redis cannot encode a response");
                let refused = Response {
                    id: req.id,
                    result: Err(CommandError::Server(format!("ERR reply too large: {e}"))),
                };
                match proto::encode(&refused) {
                    Ok(b) => b,
                    Err(_) => return,
                }
            }
        };
        if let Err(e) = sink.send(bytes).await {
            info!(conn = conn_id, %peer, error = %e, "redis connection lost while replying");
            return;
        }
    }
}
