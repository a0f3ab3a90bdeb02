//! The `Db` port: one SQL *instance* as a narrow store of versioned, fenced rows.
//!
//! This is not SQL passthrough. An instance (a simulated SQL node, a SQLite file, a MariaDB
//! server) holds named tables; a table maps a key to a row `(value, version, fence)`. The
//! engine reads rows and writes them with all-or-nothing [`Db::transact`] calls whose
//! operations are conditional on each row's version and on its **fence**, the highest owner
//! fence that wrote or claimed it. A write carrying fence `f` is refused when the row's fence
//! is greater than `f`, and a successful write sets the row's fence to `f`: a deposed owner
//! (whose fence is older) is stopped *at the database*, whatever it believes (DESIGN.md §10).
//!
//! Semantics every backend promises (checked by the conformance suite):
//! - **Rows.** Keys and values are opaque to the store (values are JSON or binary; the caller
//!   chooses). Keys compare as bytes (binary collation), so scans come back in byte order.
//!   Every row has a `version`: the number of successful [`WriteOp::Put`]/[`WriteOp::Delete`]
//!   operations ever applied to its key. Versions only grow, also across a delete and a
//!   re-create, so a version names one value of one key for ever (no ABA).
//! - **Placeholders.** A [`WriteOp::RaiseFence`] on an absent key, and a
//!   [`WriteOp::Delete`], leave a *placeholder*: the key's fence and version are remembered
//!   without a value. To [`Db::get`], [`Db::get_many`], [`Db::scan_prefix`] and
//!   [`Db::get_by_index`] a placeholder is absent; to a condition it is absent
//!   ([`Expect::Absent`] holds, [`Expect::Present`] and [`Expect::Version`] fail with
//!   `NotFound`); but its fence is enforced like a row's, so a deposed owner can never create
//!   the row later, and a re-created row continues the placeholder's version. Placeholders
//!   are never removed.
//! - **Transactions.** [`Db::transact`] applies its operations in order, each seeing the
//!   effects of the earlier ones, and then commits them all, or fails and changes nothing.
//!   The first operation that fails names itself by `op_index`. Each operation checks the
//!   fence first, then the expected version, then unique indexes. Transactions on one
//!   instance are serializable; a committed one is durable (it survives a crash of the
//!   instance). **One `transact` never spans two instances**: atomicity across instances is
//!   the object store's job (a durable intent record), not this port's.
//! - **Unique indexes.** A `Put` may set or clear the row's entry in named secondary indexes
//!   of its table (e.g. user name -> user id); an index key maps to at most one row, and
//!   claiming one held by another row fails with `UniqueViolation`. A `Delete` clears every
//!   entry of the row. [`Db::get_by_index`] reads through an index.
//! - **Guards.** A [`WriteOp::Guard`] changes nothing: it makes the transaction conditional
//!   on another row (present, with a fence no newer than the guard's). Shard routing puts one
//!   on the shard's guard row in every write, so an instance that gave a shard away refuses
//!   writes from servers with an old shard map (`engine::shard`).
//! - **Copies.** [`Db::export_prefix`] reads rows *and* placeholders; [`WriteOp::Restore`]
//!   installs such a state on another instance if it is newer (by version) than what that
//!   instance holds. Together they copy a shard without losing versions (no ABA after a move)
//!   or fences (a deposed owner stays deposed). Restored rows have no index entries: tables
//!   that move between instances must not use unique indexes.
//! - **Failures.** A call that times out or loses its connection after its request was sent
//!   reports `maybe_applied: true`: a `transact` may have committed (wholly; never in part).
//!   Re-read, or retry with conditions that make the retry harmless.
//! - **Limits** are the named constants below; a call over one fails with
//!   `InvalidArgument` before anything is sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::net::MAX_PEER_FRAME_BYTES;

/// Most operations in one [`Db::transact`]. A bigger change is split by the caller (and is
/// then not atomic), or redesigned: one transaction should touch one object's few rows.
pub const DB_TRANSACT_OPS_MAX: usize = 64;
/// Longest row key, index key or scan prefix, in bytes (fits an indexed `VARBINARY(255)`).
pub const DB_KEY_BYTES_MAX: usize = 255;
/// Longest table or index name, in bytes.
pub const DB_NAME_BYTES_MAX: usize = 64;
/// Largest row value, in bytes. Larger state belongs in several rows.
pub const DB_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Most rows one [`Db::scan_prefix`] returns; page with `start_after` for more.
pub const DB_SCAN_LIMIT_MAX: usize = 128;
/// Most keys in one [`Db::get_many`].
pub const DB_GET_MANY_KEYS_MAX: usize = 128;
/// Most index updates one `Put` carries.
pub const DB_INDEX_UPDATES_MAX: usize = 8;

/// Bytes one row may take on the wire beyond its key and value (version, fence, framing).
const ROW_OVERHEAD_BYTES: usize = 64;
// The largest request and the largest answer fit in one peer frame of the simulated network.
const _: () = assert!(
    DB_SCAN_LIMIT_MAX * (DB_KEY_BYTES_MAX + DB_VALUE_BYTES_MAX + ROW_OVERHEAD_BYTES) < MAX_PEER_FRAME_BYTES
);
const _: () = assert!(
    DB_GET_MANY_KEYS_MAX * (DB_KEY_BYTES_MAX + DB_VALUE_BYTES_MAX + ROW_OVERHEAD_BYTES)
        < MAX_PEER_FRAME_BYTES
);
const _: () = assert!(
    DB_TRANSACT_OPS_MAX
        * (2 * DB_NAME_BYTES_MAX
            + DB_KEY_BYTES_MAX
            + DB_VALUE_BYTES_MAX
            + DB_INDEX_UPDATES_MAX * (DB_NAME_BYTES_MAX + DB_KEY_BYTES_MAX)
            + ROW_OVERHEAD_BYTES)
        < MAX_PEER_FRAME_BYTES
);

/// Why a `Db` call failed. Only `Timeout` and `ConnectionLoss` can hide an applied write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DbError {
    /// Operation `op_index` expected another version (or absence) than the row's `actual`
    /// version; nothing was applied. Re-read the row and decide again.
    #[error("op {op_index}: version mismatch (row is at version {actual})")]
    VersionMismatch { op_index: usize, actual: u64 },
    /// Operation `op_index` carried a fence below the row's `row_fence`: a newer owner has
    /// claimed the row. Nothing was applied; stop acting as the owner (never retry as is).
    #[error("op {op_index}: fenced (row fence {row_fence} is newer)")]
    Fenced { op_index: usize, row_fence: u64 },
    /// Operation `op_index` required the row to exist (`Present` or `Version`) and it is
    /// absent (or a placeholder); nothing was applied. Re-read and decide again.
    #[error("op {op_index}: row not found")]
    NotFound { op_index: usize },
    /// Operation `op_index` claimed an entry of unique index `index` that another row holds;
    /// nothing was applied. Pick another index key (e.g. the user name is taken).
    #[error("op {op_index}: unique index {index:?} violated")]
    UniqueViolation { op_index: usize, index: String },
    /// The instance could not be reached (connect refused or failed); nothing was sent.
    /// Safe to retry later.
    #[error("db instance unavailable")]
    Unavailable,
    /// No answer in time. If `maybe_applied`, the request had been sent and a `transact` may
    /// have committed (wholly): re-read before retrying a non-idempotent write.
    #[error("db call timed out (maybe applied: {maybe_applied})")]
    Timeout { maybe_applied: bool },
    /// The connection broke. If `maybe_applied`, the request had been sent and a `transact`
    /// may have committed (wholly): re-read before retrying a non-idempotent write.
    #[error("db connection lost (maybe applied: {maybe_applied})")]
    ConnectionLoss { maybe_applied: bool },
    /// The call breaks a limit or a naming rule; nothing was sent. Fix the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl DbError {
    /// True if the call may have taken effect despite the error.
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            DbError::Timeout { maybe_applied: true } | DbError::ConnectionLoss { maybe_applied: true }
        )
    }

    /// True for failures of reaching the instance (retrying later may succeed as is), false
    /// for answers of the instance about the data or the call.
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Unavailable | DbError::Timeout { .. } | DbError::ConnectionLoss { .. })
    }
}

/// A validated table or index name: 1 to [`DB_NAME_BYTES_MAX`] bytes of `[a-z0-9_]`,
/// starting with a letter (safe as part of a SQL identifier on every backend).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TableName(String);

impl TableName {
    /// The name, if it follows the rules.
    pub fn new(name: impl Into<String>) -> Result<TableName, DbError> {
        let name = name.into();
        validate_name(&name)?;
        Ok(TableName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TableName {
    type Error = DbError;
    fn try_from(s: String) -> Result<Self, DbError> {
        TableName::new(s)
    }
}

impl TryFrom<&str> for TableName {
    type Error = DbError;
    fn try_from(s: &str) -> Result<Self, DbError> {
        TableName::new(s)
    }
}

impl From<TableName> for String {
    fn from(t: TableName) -> String {
        t.0
    }
}

/// Checks a table or index name (see [`TableName`]).
pub fn validate_name(name: &str) -> Result<(), DbError> {
    let bad = |why: &str| Err(DbError::InvalidArgument(format!("name {name:?}: {why}")));
    if name.is_empty() || name.len() > DB_NAME_BYTES_MAX {
        return bad("must be 1 to 64 bytes");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("must start with a lowercase letter");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return bad("only a-z, 0-9 and _ are allowed");
    }
    Ok(())
}

/// Checks a row key or index key: 1 to [`DB_KEY_BYTES_MAX`] bytes, no NUL.
pub fn validate_key(key: &str) -> Result<(), DbError> {
    if key.is_empty() || key.len() > DB_KEY_BYTES_MAX {
        return Err(DbError::InvalidArgument(format!("key of {} bytes: must be 1 to 255", key.len())));
    }
    if key.contains('\0') {
        return Err(DbError::InvalidArgument(format!("key {key:?} contains NUL")));
    }
    Ok(())
}

/// One row as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub key: String,
    pub value: Bytes,
    /// Successful writes ever applied to this key (at least 1 for a row that exists).
    pub version: u64,
    /// The highest fence that wrote or claimed this row.
    pub fence: u64,
}

/// What an operation expects of its row before it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Expect {
    /// No condition on the row (the fence is still checked).
    #[default]
    Any,
    /// The row must not exist (a placeholder counts as absent); else `VersionMismatch`.
    Absent,
    /// The row must exist, at any version; else `NotFound`.
    Present,
    /// The row must exist at exactly this version; else `NotFound` or `VersionMismatch`.
    Version(u64),
}

/// One operation of a [`Db::transact`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Creates or replaces the row's value; bumps its version and sets its fence to `fence`.
    Put {
        table: TableName,
        key: String,
        value: Bytes,
        expect: Expect,
        fence: u64,
        /// Index name -> `Some(index key)` to set the row's entry in that index (replacing
        /// its previous one), `None` to clear it. Indexes not named keep their entry.
        index: BTreeMap<String, Option<String>>,
    },
    /// Removes the row's value (leaving a placeholder) and every index entry of the row;
    /// bumps its version and sets its fence to `fence`. Deleting an absent row is allowed
    /// under `Expect::Any` or `Expect::Absent` (it records the fence).
    Delete { table: TableName, key: String, expect: Expect, fence: u64 },
    /// Raises the row's fence to `fence` (refused with `Fenced` if it is higher) without
    /// changing its value or version, then reads it. Works on an absent row: a placeholder
    /// keeps the fence, so an owner taking over a row it has not created yet shuts out the
    /// deposed owner for good.
    RaiseFence { table: TableName, key: String, fence: u64 },
    /// Changes nothing; fails the transaction unless the row's fence is at most `fence`
    /// (else `Fenced`, checked first, placeholders included) and the row exists (else
    /// `NotFound`). Makes a write conditional on another row (a shard's guard row).
    Guard { table: TableName, key: String, fence: u64 },
    /// Installs `(value, version, fence)` as the key's state — a row, or a placeholder when
    /// `value` is `None` — if `version` is greater than the key's version (0 for a key never
    /// written); otherwise changes nothing. The fence never goes down (the key keeps the
    /// greater of the two) and the row's index entries are cleared. Never fails on data: an
    /// idempotent merge, for copying [`Db::export_prefix`] output between instances.
    Restore { table: TableName, key: String, value: Option<Bytes>, version: u64, fence: u64 },
}

impl WriteOp {
    /// An unconditional-version `Put` with no index changes.
    pub fn put(
        table: &TableName,
        key: impl Into<String>,
        value: Bytes,
        expect: Expect,
        fence: u64,
    ) -> WriteOp {
        WriteOp::Put { table: table.clone(), key: key.into(), value, expect, fence, index: BTreeMap::new() }
    }

    /// A `Delete`.
    pub fn delete(table: &TableName, key: impl Into<String>, expect: Expect, fence: u64) -> WriteOp {
        WriteOp::Delete { table: table.clone(), key: key.into(), expect, fence }
    }

    /// A `RaiseFence`.
    pub fn raise_fence(table: &TableName, key: impl Into<String>, fence: u64) -> WriteOp {
        WriteOp::RaiseFence { table: table.clone(), key: key.into(), fence }
    }

    /// A `Guard`.
    pub fn guard(table: &TableName, key: impl Into<String>, fence: u64) -> WriteOp {
        WriteOp::Guard { table: table.clone(), key: key.into(), fence }
    }

    /// A `Restore` of an exported state.
    pub fn restore(table: &TableName, state: RowState) -> WriteOp {
        WriteOp::Restore {
            table: table.clone(),
            key: state.key,
            value: state.value,
            version: state.version,
            fence: state.fence,
        }
    }

    /// This `Put` with `index` set to `index_key` (`None` clears it). No effect on other ops.
    pub fn with_index(mut self, index: impl Into<String>, index_key: Option<String>) -> WriteOp {
        if let WriteOp::Put { index: updates, .. } = &mut self {
            updates.insert(index.into(), index_key);
        }
        self
    }

    pub fn table(&self) -> &TableName {
        match self {
            WriteOp::Put { table, .. }
            | WriteOp::Delete { table, .. }
            | WriteOp::RaiseFence { table, .. }
            | WriteOp::Guard { table, .. }
            | WriteOp::Restore { table, .. } => table,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            WriteOp::Put { key, .. }
            | WriteOp::Delete { key, .. }
            | WriteOp::RaiseFence { key, .. }
            | WriteOp::Guard { key, .. }
            | WriteOp::Restore { key, .. } => key,
        }
    }

    pub fn fence(&self) -> u64 {
        match self {
            WriteOp::Put { fence, .. }
            | WriteOp::Delete { fence, .. }
            | WriteOp::RaiseFence { fence, .. }
            | WriteOp::Guard { fence, .. }
            | WriteOp::Restore { fence, .. } => *fence,
        }
    }
}

/// What one operation of a committed `transact` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    /// The row's new version.
    Put { version: u64 },
    /// The placeholder's version; `existed` if a row was removed.
    Delete { version: u64, existed: bool },
    /// The row after the raise (`None` if absent); `fence` is the key's fence now.
    RaiseFence { row: Option<Row>, fence: u64 },
    /// The guarded row's version.
    Guard { version: u64 },
    /// Whether the restored state was newer and installed.
    Restore { applied: bool },
}

/// A key's stored state as [`Db::export_prefix`] reads it: a row, or a placeholder
/// (`value: None`) that keeps a deleted or fenced key's version and fence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowState {
    pub key: String,
    pub value: Option<Bytes>,
    pub version: u64,
    pub fence: u64,
}

/// Checks a whole `transact` against the limits and naming rules.
pub fn validate_transact(ops: &[WriteOp]) -> Result<(), DbError> {
    if ops.is_empty() || ops.len() > DB_TRANSACT_OPS_MAX {
        return Err(DbError::InvalidArgument(format!(
            "{} ops: must be 1 to {DB_TRANSACT_OPS_MAX}",
            ops.len()
        )));
    }
    for op in ops {
        validate_key(op.key())?;
        if let WriteOp::Restore { value: Some(value), .. } = op {
            if value.len() > DB_VALUE_BYTES_MAX {
                return Err(DbError::InvalidArgument(format!(
                    "value of {} bytes: at most {DB_VALUE_BYTES_MAX}",
                    value.len()
                )));
            }
        }
        if let WriteOp::Put { value, index, .. } = op {
            if value.len() > DB_VALUE_BYTES_MAX {
                return Err(DbError::InvalidArgument(format!(
                    "value of {} bytes: at most {DB_VALUE_BYTES_MAX}",
                    value.len()
                )));
            }
            if index.len() > DB_INDEX_UPDATES_MAX {
                return Err(DbError::InvalidArgument(format!(
                    "{} index updates: at most {DB_INDEX_UPDATES_MAX}",
                    index.len()
                )));
            }
            for (name, index_key) in index {
                validate_name(name)?;
                if let Some(k) = index_key {
                    validate_key(k)?;
                }
            }
        }
    }
    Ok(())
}

/// Checks a `scan_prefix` call: a prefix (possibly empty) and `start_after` no longer than a
/// key, and a limit of 1 to [`DB_SCAN_LIMIT_MAX`].
pub fn validate_scan(prefix: &str, start_after: Option<&str>, limit: usize) -> Result<(), DbError> {
    if prefix.len() > DB_KEY_BYTES_MAX || prefix.contains('\0') {
        return Err(DbError::InvalidArgument(format!("prefix {prefix:?}: at most 255 bytes, no NUL")));
    }
    if let Some(k) = start_after {
        validate_key(k)?;
    }
    if limit == 0 || limit > DB_SCAN_LIMIT_MAX {
        return Err(DbError::InvalidArgument(format!(
            "scan limit {limit}: must be 1 to {DB_SCAN_LIMIT_MAX}"
        )));
    }
    Ok(())
}

/// Checks a `get_many` call.
pub fn validate_get_many(keys: &[String]) -> Result<(), DbError> {
    if keys.len() > DB_GET_MANY_KEYS_MAX {
        return Err(DbError::InvalidArgument(format!("{} keys: at most {DB_GET_MANY_KEYS_MAX}", keys.len())));
    }
    keys.iter().try_for_each(|k| validate_key(k))
}

/// One SQL instance. Calls are independent (the client reconnects by itself); calls of one
/// handle from one task are applied in the order issued.
#[async_trait]
pub trait Db: Send + Sync {
    /// The instance's configured name (`db-0`, `public`, ...).
    fn name(&self) -> &str;
    /// The row, or `None` if absent (or a placeholder).
    async fn get(&self, table: &TableName, key: &str) -> Result<Option<Row>, DbError>;
    /// The rows of `keys`, in the order given (`None` for absent ones), read at one instant.
    async fn get_many(&self, table: &TableName, keys: &[String]) -> Result<Vec<Option<Row>>, DbError>;
    /// Up to `limit` rows whose key starts with `prefix`, in key order, starting after
    /// `start_after` when given (to page: pass the last key of the previous page).
    async fn scan_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Row>, DbError>;
    /// The row holding `index_key` in the unique index `index` of `table`, if any.
    async fn get_by_index(
        &self,
        table: &TableName,
        index: &str,
        index_key: &str,
    ) -> Result<Option<Row>, DbError>;
    /// Like [`Db::scan_prefix`] (same order, paging and limits) but placeholders included:
    /// the states a shard move copies with [`WriteOp::Restore`].
    async fn export_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RowState>, DbError>;
    /// Applies `ops` all-or-nothing (see the module doc); one result per op, in order.
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, DbError>;
    /// How many `transact` calls are worth keeping in flight to this instance at once: the
    /// object store's group commit runs up to this many batches concurrently. A one-writer
    /// instance (SQLite) gains nothing from more (they queue at the file); a server with many
    /// connections (MariaDB) commits concurrent transactions in parallel and shares their log
    /// flushes. [`WRITE_CONCURRENCY_DEFAULT`] unless the instance says otherwise.
    fn write_concurrency(&self) -> usize {
        WRITE_CONCURRENCY_DEFAULT
    }
}

/// [`Db::write_concurrency`] of an instance that does not name its own.
pub const WRITE_CONCURRENCY_DEFAULT: usize = 4;

/// Reaches the configured SQL instances by name.
pub trait DbDirectory: Send + Sync {
    /// The instance called `name`, if configured.
    fn instance(&self, name: &str) -> Option<Arc<dyn Db>>;
    /// The names of every configured instance, sorted.
    fn instances(&self) -> Vec<String>;
}

/// A fixed set of instances, built once at startup. The default is empty (a node with no SQL
/// configured).
#[derive(Clone, Default)]
pub struct DbInstances {
    by_name: BTreeMap<String, Arc<dyn Db>>,
}

impl std::fmt::Debug for DbInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_name.keys()).finish()
    }
}

impl DbInstances {
    /// No instances.
    pub fn empty() -> DbInstances {
        DbInstances::default()
    }

    /// Adds `db` under its own name; `InvalidArgument` if the name is taken.
    pub fn with(mut self, db: Arc<dyn Db>) -> Result<DbInstances, DbError> {
        let name = db.name().to_string();
        if self.by_name.contains_key(&name) {
            return Err(DbError::InvalidArgument(format!("db instance {name:?} configured twice")));
        }
        self.by_name.insert(name, db);
        Ok(self)
    }
}

impl DbDirectory for DbInstances {
    fn instance(&self, name: &str) -> Option<Arc<dyn Db>> {
        self.by_name.get(name).cloned()
    }

    fn instances(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_sql_identifier_rules() {
        assert!(TableName::new("users").is_ok());
        assert!(TableName::new("user_names_2").is_ok());
        for bad in ["", "Users", "1users", "_x", "a-b", "a b", "ä", &"a".repeat(65)] {
            assert!(matches!(TableName::new(bad), Err(DbError::InvalidArgument(_))), "{bad:?}");
        }
        assert!(TableName::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn a_table_name_cannot_be_smuggled_in_through_serde() {
        let ok: TableName = serde_json::from_str("\"users\"").unwrap();
        assert_eq!(ok.as_str(), "users");
        assert!(serde_json::from_str::<TableName>("\"DROP TABLE\"").is_err());
    }

    #[test]
    fn keys_must_be_nonempty_short_and_nul_free() {
        assert!(validate_key("k").is_ok());
        assert!(validate_key(&"k".repeat(DB_KEY_BYTES_MAX)).is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key(&"k".repeat(DB_KEY_BYTES_MAX + 1)).is_err());
        assert!(validate_key("a\0b").is_err());
    }

    #[test]
    fn transact_limits_are_enforced_before_sending() {
        let t = TableName::new("t").unwrap();
        assert!(validate_transact(&[]).is_err());
        let op = WriteOp::put(&t, "k", Bytes::from_static(b"v"), Expect::Any, 1);
        assert!(validate_transact(&vec![op.clone(); DB_TRANSACT_OPS_MAX]).is_ok());
        assert!(validate_transact(&vec![op.clone(); DB_TRANSACT_OPS_MAX + 1]).is_err());
        let big = WriteOp::put(&t, "k", Bytes::from(vec![0; DB_VALUE_BYTES_MAX + 1]), Expect::Any, 1);
        assert!(validate_transact(&[big]).is_err());
        let bad_index = op.clone().with_index("Bad", Some("x".into()));
        assert!(validate_transact(&[bad_index]).is_err());
        let empty_index_key = op.with_index("by_name", Some(String::new()));
        assert!(validate_transact(&[empty_index_key]).is_err());
    }

    #[test]
    fn scan_limits_are_enforced_before_sending() {
        assert!(validate_scan("", None, 1).is_ok());
        assert!(validate_scan("user/", Some("user/7"), DB_SCAN_LIMIT_MAX).is_ok());
        assert!(validate_scan("", None, 0).is_err());
        assert!(validate_scan("", None, DB_SCAN_LIMIT_MAX + 1).is_err());
        assert!(validate_scan("", Some(""), 1).is_err());
        assert!(validate_get_many(&vec!["k".to_string(); DB_GET_MANY_KEYS_MAX + 1]).is_err());
    }

    #[test]
    fn only_lost_answers_may_hide_an_applied_write() {
        assert!(DbError::Timeout { maybe_applied: true }.maybe_applied());
        assert!(DbError::ConnectionLoss { maybe_applied: true }.maybe_applied());
        assert!(!DbError::ConnectionLoss { maybe_applied: false }.maybe_applied());
        assert!(!DbError::Unavailable.maybe_applied());
        assert!(!DbError::Fenced { op_index: 0, row_fence: 2 }.maybe_applied());
        assert!(DbError::Unavailable.is_transient());
        assert!(!DbError::VersionMismatch { op_index: 0, actual: 1 }.is_transient());
    }

    #[test]
    fn with_index_only_changes_puts() {
        let t = TableName::new("t").unwrap();
        let del = WriteOp::delete(&t, "k", Expect::Any, 1);
        assert_eq!(del.clone().with_index("i", Some("x".into())), del);
    }
}
