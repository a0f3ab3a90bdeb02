//! Ports: the only way the engine touches time, randomness, tasks, the network and services.
//!
//! Every port is a narrow object-safe trait whose docs state the semantics that *both*
//! backends promise (the simulated services are checked against the real ones by the
//! conformance suite). Errors are typed per port; none is a bare string.
//!
//! | port | models |
//! |---|---|
//! | [`Clock`] | monotonic time, a (skewable) wall clock, sleeps and timeouts |
//! | [`Rand`] | seeded randomness; UUIDs are built from it |
//! | [`Spawn`] | tasks on this node |
//! | [`Net`] | listen/connect, length-delimited byte frames |
//! | [`CoordConnector`] / [`Coord`] | a ZooKeeper session |
//! | [`Kv`] | the Redis subset the engine uses |
//! | [`DbDirectory`] / [`Db`] | SQL instances: versioned, fenced rows and all-or-nothing `transact` |
//!
//! Shared plumbing for code that uses the ports lives here too, written once: [`Backoff`]
//! (retry pacing with jitter from `Rand`), [`lock`] (mutex poison recovery), [`ensure_path`]
//! (persistent parents in ZooKeeper) and the name rules [`validate_app_id`] /
//! [`validate_segment`].

mod backoff;
mod clock;
mod coord;
mod db;
mod kv;
mod name;
mod net;
mod rand;
mod spawn;
mod sync;

use std::sync::Arc;

pub use self::backoff::Backoff;
pub use self::clock::{timeout, Clock, Elapsed, MonoTime, WallTime};
pub use self::coord::{
    ensure_path, ensure_paths, is_znode_char, parent_path, validate_create_path, validate_op, validate_path,
    Coord, CoordConnector, CoordError, CreateMode, EventKind, MultiError, Op, OpResult, SessionEvent,
    SessionOptions, SessionState, Stat, WatchedEvent, Watcher,
};
pub use self::db::{
    validate_get_many, validate_key, validate_name, validate_scan, validate_transact, Db, DbDirectory,
    DbError, DbInstances, Expect, Row, RowState, TableName, WriteOp, WriteResult, DB_GET_MANY_KEYS_MAX,
    DB_INDEX_UPDATES_MAX, DB_KEY_BYTES_MAX, DB_NAME_BYTES_MAX, DB_SCAN_LIMIT_MAX, DB_TRANSACT_OPS_MAX,
    DB_VALUE_BYTES_MAX, WRITE_CONCURRENCY_DEFAULT,
};
pub use self::kv::{Kv, KvError, SetCondition, SetOptions, Ttl};
pub use self::name::{validate_app_id, validate_segment, NameError, APP_ID_CHARS_MAX};
pub use self::net::{
    send_batch, Connection, FrameSink, FrameStream, Listener, MapErrSink, Net, NetError,
    MAX_PEER_FRAME_BYTES, WRITE_BATCH_FRAMES_MAX,
};
pub use self::rand::{Rand, RandExt};
pub use self::spawn::{Spawn, TaskHandle};
pub use self::sync::lock;

/// Everything a node's engine components may use from the outside world.
///
/// One `Env` is built per node by the backend (`sim` or `real`) and cloned into every
/// component; cloning is cheap (reference counts).
#[derive(Clone)]
pub struct Env {
    /// Name of this node, as it appears in traces (`game-1`, `client-3`, ...).
    pub node: Arc<str>,
    pub clock: Arc<dyn Clock>,
    pub rand: Arc<dyn Rand>,
    pub spawn: Arc<dyn Spawn>,
    pub net: Arc<dyn Net>,
    /// Opens ZooKeeper sessions to the configured ensemble.
    pub coord: Arc<dyn CoordConnector>,
    /// The Redis client (reconnects by itself; each call is independent).
    pub kv: Arc<dyn Kv>,
    /// The configured SQL instances, by name (empty on a node with no SQL configured).
    pub db: Arc<dyn DbDirectory>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("node", &self.node).finish_non_exhaustive()
    }
}
