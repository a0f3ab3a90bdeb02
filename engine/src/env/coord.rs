//! The `Coord` port: one ZooKeeper session, with ZooKeeper's semantics.
//!
//! Semantics both backends promise (ZooKeeper 3.8):
//! - **Sessions.** A session has a timeout negotiated with the service (clamped by the
//!   service to `[2, 20] × tickTime`; tickTime is 2 s). The client heartbeats every third of
//!   it. If the connection breaks or goes silent for two thirds of the timeout the client
//!   reports [`SessionState::Disconnected`] and keeps trying to reconnect. **Expiry is
//!   decided by the service**, not the client: a partitioned client stays `Disconnected`
//!   and learns [`SessionState::Expired`] only when it reaches the service again. Expired
//!   is terminal: open a new session with [`CoordConnector::connect`].
//! - **Ephemerals** belong to the session that created them and vanish when the service
//!   expires or closes it (one session timeout after the last heartbeat it heard).
//! - **Operations** are linearizable writes and sequentially consistent reads from one
//!   service. An operation issued while disconnected fails at once with
//!   `ConnectionLoss { maybe_applied: false }`; one in flight when the connection breaks
//!   fails with `ConnectionLoss { maybe_applied: true }`: it **may have been applied**.
//! - **Watches** are one-shot. A watch set by a read fires at most once, for the first change
//!   after the read, and its event is delivered *before* the client can see the new state
//!   in any later read's answer. Watches survive a reconnect within the same session (the
//!   client re-registers them and is told of changes it missed); on expiry they all fire
//!   with [`EventKind::Session`]`(Expired)`.
//! - **Sequential** znodes get a `%010d` suffix: the number of children the parent has had
//!   created so far (ZooKeeper's internal child counter). The `cversion` reported in a
//!   [`Stat`] counts deletions too, so after a child is deleted the next suffix is lower
//!   than the reported `cversion`.
//! - **Closing** a session (or dropping its last handle while connected) ends it at the
//!   service at once: its ephemerals go, and the closing client's own watches on them fire
//!   `NodeDeleted` before the close completes; every other watch of the handle then fires
//!   [`EventKind::Session`]`(Closed)`.
//! - **Malformed paths** are refused by the client with `BadArguments` before anything is
//!   sent, whatever the connection state.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Why a coordination call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CoordError {
    /// The node (or, for `create`, its parent) does not exist.
    #[error("no node")]
    NoNode,
    /// `create` on a path that exists.
    #[error("node exists")]
    NodeExists,
    /// The expected version did not match.
    #[error("bad version")]
    BadVersion,
    /// `delete` of a node that has children.
    #[error("node has children")]
    NotEmpty,
    /// `create` under an ephemeral parent.
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals,
    /// Path syntax is invalid (must start with `/`, no empty or `.`/`..` segments, no trailing `/`).
    #[error("bad arguments: {0}")]
    BadArguments(String),
    /// The connection to the service was lost. If `maybe_applied`, the request had been sent
    /// and may have taken effect; re-read before retrying a non-idempotent write.
    #[error("connection loss (maybe applied: {maybe_applied})")]
    ConnectionLoss { maybe_applied: bool },
    /// The service expired this session. Terminal for this handle.
    #[error("session expired")]
    SessionExpired,
    /// This handle was closed by its owner.
    #[error("session closed")]
    Closed,
    /// A connect attempt did not establish a session in time.
    #[error("timed out connecting to the coordination service")]
    Timeout,
}

impl CoordError {
    /// True for errors after which the same session can be used again (after reconnecting).
    pub fn is_transient(&self) -> bool {
        matches!(self, CoordError::ConnectionLoss { .. } | CoordError::Timeout)
    }
}

/// How a znode is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
}

impl CreateMode {
    pub fn is_ephemeral(self) -> bool {
        matches!(self, CreateMode::Ephemeral | CreateMode::EphemeralSequential)
    }
    pub fn is_sequential(self) -> bool {
        matches!(self, CreateMode::PersistentSequential | CreateMode::EphemeralSequential)
    }
}

/// ZooKeeper's `Stat` of a znode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stat {
    /// zxid of the create.
    pub czxid: i64,
    /// zxid of the last data change.
    pub mzxid: i64,
    /// zxid of the last change to the children list.
    pub pzxid: i64,
    /// Service wall time (ms) of the create.
    pub ctime: i64,
    /// Service wall time (ms) of the last data change.
    pub mtime: i64,
    /// Number of data changes.
    pub version: i32,
    /// Number of children changes.
    pub cversion: i32,
    /// Number of ACL changes (always 0: ACLs are not modelled).
    pub aversion: i32,
    /// Owning session id for an ephemeral node, 0 otherwise.
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
}

/// Connection state of a session, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionState {
    /// Connected to the service; operations go through.
    Connected,
    /// Not connected; the session may or may not still be alive at the service.
    Disconnected,
    /// The service expired the session (learned on reconnect). Terminal.
    Expired,
    /// Closed by its owner. Terminal.
    Closed,
}

impl SessionState {
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Expired | SessionState::Closed)
    }
}

/// A session state change, as delivered to [`Coord::session_events`] subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub state: SessionState,
}

/// What a watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    NodeCreated,
    NodeDeleted,
    NodeDataChanged,
    NodeChildrenChanged,
    /// The session ended (`Expired` or `Closed`); the watch will never fire otherwise.
    Session(SessionState),
}

/// A fired watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedEvent {
    pub kind: EventKind,
    pub path: String,
}

/// A pending one-shot watch; resolves once with the event that fired it.
pub type Watcher = BoxFuture<'static, WatchedEvent>;

/// Options for a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOptions {
    /// Requested session timeout; the service clamps it to `[4 s, 40 s]`.
    pub session_timeout: Duration,
    /// How long `connect` waits for the first connection before failing with `Timeout`.
    pub connect_timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { session_timeout: Duration::from_secs(10), connect_timeout: Duration::from_secs(10) }
    }
}

/// One operation of a [`Coord::multi`] transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Create { path: String, data: Bytes, mode: CreateMode },
    Delete { path: String, version: Option<i32> },
    SetData { path: String, data: Bytes, version: Option<i32> },
    Check { path: String, version: Option<i32> },
}

/// Result of one operation of a successful `multi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The created path (with the sequence suffix if sequential).
    Create(String),
    Delete,
    SetData(Stat),
    Check,
}

/// A failed `multi`: nothing was applied; `index` is the first operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("multi failed at op {index}: {error}")]
pub struct MultiError {
    pub index: usize,
    pub error: CoordError,
}

/// Opens ZooKeeper sessions.
pub trait CoordConnector: Send + Sync {
    /// Connects and establishes a new session, or fails with `Timeout` after
    /// `opts.connect_timeout` (e.g. the service is unreachable).
    fn connect(&self, opts: SessionOptions) -> BoxFuture<'_, Result<Arc<dyn Coord>, CoordError>>;
}

/// One ZooKeeper session. All calls on one handle are answered in the order issued.
#[async_trait]
pub trait Coord: Send + Sync {
    /// Service-assigned session id (stable across reconnects of this session).
    fn session_id(&self) -> i64;
    /// The timeout the service granted.
    fn negotiated_timeout(&self) -> Duration;
    /// Current state as the client sees it.
    fn state(&self) -> SessionState;
    /// A stream of every state change from now on, in order. Ends after a terminal state.
    fn session_events(&self) -> BoxStream<'static, SessionEvent>;

    /// Creates a znode; returns its actual path (sequential nodes get their suffix).
    async fn create(&self, path: &str, data: Bytes, mode: CreateMode) -> Result<String, CoordError>;
    /// Deletes a znode if `version` is `None` or matches.
    async fn delete(&self, path: &str, version: Option<i32>) -> Result<(), CoordError>;
    /// Reads data and stat.
    async fn get_data(&self, path: &str) -> Result<(Bytes, Stat), CoordError>;
    /// Reads data and stat and leaves a data watch (fires on data change or delete).
    async fn get_data_w(&self, path: &str) -> Result<(Bytes, Stat, Watcher), CoordError>;
    /// Stat if the node exists.
    async fn exists(&self, path: &str) -> Result<Option<Stat>, CoordError>;
    /// Stat if it exists, plus a watch that fires on create, data change or delete.
    async fn exists_w(&self, path: &str) -> Result<(Option<Stat>, Watcher), CoordError>;
    /// Replaces data if `version` is `None` or matches; returns the new stat.
    async fn set_data(&self, path: &str, data: Bytes, version: Option<i32>) -> Result<Stat, CoordError>;
    /// Child names (not full paths), sorted.
    async fn get_children(&self, path: &str) -> Result<Vec<String>, CoordError>;
    /// Child names, sorted, plus a child watch (fires on child create/delete or node delete).
    async fn get_children_w(&self, path: &str) -> Result<(Vec<String>, Watcher), CoordError>;
    /// All-or-nothing transaction.
    async fn multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, MultiError>;
    /// Closes the session at the service (its ephemerals go at once). Best effort when
    /// disconnected: the session then expires by timeout.
    async fn close(&self);
}

/// Checks the path of a create: a sequential create's path may end in `/` (ZooKeeper
/// validates `path + "1"`, since the service appends the sequence number).
pub fn validate_create_path(path: &str, mode: CreateMode) -> Result<(), CoordError> {
    if mode.is_sequential() {
        validate_path(&format!("{path}1"))
    } else {
        validate_path(path)
    }
}

/// Checks the path of one operation of a `multi`.
pub fn validate_op(op: &Op) -> Result<(), CoordError> {
    match op {
        Op::Create { path, mode, .. } => validate_create_path(path, *mode),
        Op::Delete { path, .. } | Op::SetData { path, .. } | Op::Check { path, .. } => validate_path(path),
    }
}

/// Whether ZooKeeper accepts `c` in a node name (`/` aside, the separator). ZooKeeper's
/// `PathUtils.validatePath` refuses NUL and every UTF-16 code unit in U+0001–U+001F,
/// U+007F–U+009F, U+D800–U+F8FF and U+FFF0–U+FFFF (its programmer's guide lists the same
/// ranges). A Java string holds a character above U+FFFF as two surrogates (U+D800–U+DFFF),
/// so every such character is refused too. Everything else, any other letter or symbol of
/// the Basic Multilingual Plane included, is allowed.
pub fn is_znode_char(c: char) -> bool {
    !matches!(c, '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..)
}

/// Checks a znode path the way ZooKeeper does: absolute, no empty segment, no `.` or `..`
/// segment, only characters [`is_znode_char`] allows. Both clients (simulated and real)
/// check paths before anything is sent, as ZooKeeper's client library does: a malformed
/// path is `BadArguments` whatever the connection state.
pub fn validate_path(path: &str) -> Result<(), CoordError> {
    let bad = |why: &str| Err(CoordError::BadArguments(format!("{why}: {path:?}")));
    if !path.starts_with('/') {
        return bad("path must start with /");
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad("path must not end with /");
    }
    for seg in path[1..].split('/') {
        if seg.is_empty() {
            return bad("empty segment");
        }
        if seg == "." || seg == ".." {
            return bad("relative segment");
        }
        if seg.chars().any(|c| c == '\0') {
            return bad("NUL in path");
        }
        if !seg.chars().all(is_znode_char) {
            return bad("a character ZooKeeper refuses in path");
        }
    }
    Ok(())
}

/// Creates `path` and every missing ancestor as empty persistent znodes, top down; a znode
/// that already exists (`NodeExists`) counts as success. One `create` per segment, in order.
pub async fn ensure_path(coord: &dyn Coord, path: &str) -> Result<(), CoordError> {
    ensure_paths(coord, &[path]).await
}

/// [`ensure_path`] for several paths, creating each shared ancestor only once (in the order
/// first met): `["/a/b", "/a/c"]` creates `/a`, `/a/b`, `/a/c`.
pub async fn ensure_paths(coord: &dyn Coord, paths: &[&str]) -> Result<(), CoordError> {
    let mut done = std::collections::BTreeSet::new();
    for path in paths {
        validate_path(path)?;
        let mut prefix = String::with_capacity(path.len());
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            prefix.push('/');
            prefix.push_str(seg);
            if !done.insert(prefix.clone()) {
                continue;
            }
            match coord.create(&prefix, Bytes::new(), CreateMode::Persistent).await {
                Ok(_) | Err(CoordError::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// `/a/b` -> `/a`; `/a` -> `/`; `/` -> `None`.
pub fn parent_path(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(validate_path("/").is_ok());
        assert!(validate_path("/a/b").is_ok());
        assert!(validate_path("a").is_err());
        assert!(validate_path("/a/").is_err());
        assert!(validate_path("/a//b").is_err());
        assert!(validate_path("/a/../b").is_err());
        assert!(validate_path("/a/\0").is_err());
        assert!(validate_path("/日本/ünï côdé/a.b/...").is_ok(), "any other BMP character is fine");
        assert_eq!(parent_path("/a/b"), Some("/a"));
        assert_eq!(parent_path("/a"), Some("/"));
        assert_eq!(parent_path("/"), None);
    }

    #[test]
    fn znode_names_refuse_the_characters_zookeeper_refuses() {
        for bad in [
            '\0', '\u{1}', '\u{1f}', '\u{7f}', '\u{9f}', '\u{e000}', '\u{f8ff}', '\u{fff0}', '\u{ffff}', '😀',
        ] {
            assert!(!is_znode_char(bad), "{bad:?}");
            assert!(validate_path(&format!("/a/x{bad}y")).is_err(), "{bad:?}");
        }
        for good in [' ', '~', '%', '\u{a0}', '日', '\u{d7ff}', '\u{f900}', '\u{ffef}'] {
            assert!(is_znode_char(good), "{good:?}");
        }
    }
}
