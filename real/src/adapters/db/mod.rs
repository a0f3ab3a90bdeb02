//! The `Db` port on real SQL: [`SqliteDb`] (a file per instance, the embedded default) and
//! [`MariaDb`] (a MariaDB server, for production), both on `sqlx`. [`open_db`] picks one by
//! URL: `sqlite://PATH` or `mysql://user:password@host:port/database`.
//!
//! Both give exactly the answers of the port's module doc (`engine::env::db`), checked
//! against the simulator's model by the conformance suite (`tests/src/conformance/`).
//!
//! # How a `transact` is made atomic and fenced
//!
//! The fence, version and unique-index checks and the writes of one `transact` happen in
//! **one SQL transaction that holds the locks of every row it reads**, so no other writer can
//! change a checked row between the check and the write, and the writes commit together or
//! not at all:
//!
//! - **SQLite**: `BEGIN IMMEDIATE` takes the database's write lock before anything is read
//!   (so transactions are serial: SQLite has one writer at a time); the adapter reads the
//!   touched rows and index entries, evaluates the operations in order ([`plan`]), writes the
//!   net changes and commits, or rolls back on the first refused operation. Readers (WAL) see
//!   the last commit and never block the writer.
//! - **MariaDB** (InnoDB): one transaction reads the touched rows with `SELECT ... FOR UPDATE`
//!   (exclusive row locks, taken in key order to limit deadlocks), the rows only
//!   `Guard`ed with `LOCK IN SHARE MODE` (writers of one shard do not serialise on its guard
//!   row, but a mover's update of the guard row waits for them and they for it), the index
//!   entries of the touched rows and the holders of claimed index keys `FOR UPDATE`; then
//!   evaluates, writes and commits. A key to be written that does not exist yet would be
//!   locked by its *gap*, and two transactions holding one gap while each inserts into it
//!   deadlock (what a login burst of new users' ownership claims did, hundreds of times a
//!   run); so if the read finds such keys, the attempt lets go (rollback), creates them first
//!   as placeholders with `INSERT IGNORE` (an insert takes no gap lock that blocks another
//!   insert), and reads again, locking records only; a concurrent creator of the same key
//!   waits on that record. A deadlock (1213) or lock-wait timeout (1205) rolls the attempt
//!   back and it is run again, at most [`LOCK_CONFLICT_RETRIES`] times.
//!
//! Both first try a **fast path** ([`fast`]) for the common shapes (versioned and creating `Put`s and
//! `Guard`s): conditional `UPDATE`s whose `WHERE` holds the fence, version and presence checks
//! (each row locked by its own `UPDATE`), committed only if every one hit; otherwise rolled
//! back and the general path decides.
//!
//! # Errors
//!
//! | what happened | `DbError` |
//! |---|---|
//! | arguments over a limit or against a naming rule (the port's `validate_*`, checked before anything is sent) | `InvalidArgument` |
//! | no connection could be had (refused, unreachable, the file cannot be opened, pool exhausted for [`DbOptions::connect_timeout`]) | `Unavailable` |
//! | [`DbOptions::call_timeout`] passed | `Timeout { maybe_applied }` |
//! | the connection broke during the call | `ConnectionLoss { maybe_applied }` |
//! | lock conflicts left after [`LOCK_CONFLICT_RETRIES`], SQLite's busy timeout | `Timeout { maybe_applied }` |
//! | another server-side failure (disk full, read-only file) | `Unavailable` before the commit was sent, `ConnectionLoss { maybe_applied: true }` after |
//! | a stored row the adapter cannot decode (not written by it) | `InvalidArgument` naming the instance |
//!
//! `maybe_applied` is `true` exactly when the failure came after the `COMMIT` (or a
//! self-committing statement) was sent: before that, the server rolls the transaction back
//! (an explicit rollback, or the dropped connection), so nothing was applied. Reads never
//! apply anything. After a timeout the connection is closed rather than reused.
//!
//! # Layout
//! - `mod.rs`: [`open_db`], [`DbOptions`], shared decoding;
//! - `schema.rs`: the tables and their idempotent creation (see [`schema`]);
//! - `plan.rs`: the operations' semantics over the loaded rows (pure);
//! - `fast.rs`: the fast path; `sql.rs`: statement text;
//! - `sqlite.rs`, `mariadb.rs`: the engines; `errors.rs`: `sqlx` errors to `DbError`.

mod errors;
mod fast;
mod mariadb;
mod plan;
pub mod schema;
mod sql;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::env::{Db, DbError, Row, RowState, TableName};

use self::errors::bad_data;
pub use self::fast::FastPathCounts;
pub use self::mariadb::MariaDb;
use self::plan::{IndexKey, RowKey, Stored};
pub use self::sqlite::SqliteDb;

/// How long one `Db` call may take by default, waiting for a connection included.
pub const DB_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long getting a connection may take by default before the call fails `Unavailable`
/// (sqlx retries refused connections with backoff until then).
pub const DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a SQLite connection waits for another process's write lock by default.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// [`DbOptions::sqlite_cache_mib`] by default: each connection's page cache. SQLite's own
/// default is 2 MiB, which holds the pages of a few thousand users' rows; a game server's
/// working set (every online user's objects and queued packs) is larger, and each page beyond
/// the cache is read again from the file on every use (`bench commands`, 2026-12-05).
pub const SQLITE_CACHE_MIB: u32 = 64;
/// How many times a MariaDB transaction that lost a deadlock (1213) or a lock wait (1205)
/// is run again before the call fails with `Timeout { maybe_applied: false }`.
pub const LOCK_CONFLICT_RETRIES: u32 = 8;
/// First pause before running a transaction again after a lock conflict (doubled each time,
/// at most 64 times this).
pub const LOCK_CONFLICT_BACKOFF: Duration = Duration::from_micros(500);

/// [`DbOptions::mariadb_write_concurrency`] by default. Measured with `bench commands`
/// (2026-12-05, MariaDB on 2 cores, 4 and 8 alternated): on the tests' small server 8 cut the
/// p99 of paced acks while workers execute from a median of 5.5 ms to 4.0 ms with execution
/// unchanged, and 16 executed less (0.56-0.61 of raw); on a server sized for the load (512 MiB
/// buffer pool and redo log) 8 executed about 8% more than 4 (median 1.12 against 1.03 of raw
/// after the 1,000-client acks) with latencies alike.
pub const MARIADB_WRITE_CONCURRENCY: u32 = 8;

/// Adapter settings (the defaults are the named constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbOptions {
    /// The whole of one call, waiting for a connection included.
    pub call_timeout: Duration,
    /// Getting a connection (MariaDB: connecting, with retries).
    pub connect_timeout: Duration,
    /// MariaDB: most connections kept open to the server.
    pub max_connections: u32,
    /// MariaDB: transactions the engine keeps in flight at once ([`engine::env::Db::write_concurrency`]:
    /// the object store's group-commit flushers), at most `max_connections`. InnoDB commits
    /// them in parallel and flushes their logs together (the engine's default, 4, is meant
    /// for one-writer instances).
    pub mariadb_write_concurrency: u32,
    /// SQLite: reader connections (writes use one connection of their own).
    pub sqlite_readers: u32,
    /// SQLite: how long to wait for another process holding the write lock.
    pub sqlite_busy_timeout: Duration,
    /// SQLite: the page cache of each connection, in MiB (`PRAGMA cache_size`; filled as
    /// pages are used, not allocated up front).
    pub sqlite_cache_mib: u32,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            call_timeout: DB_CALL_TIMEOUT,
            connect_timeout: DB_CONNECT_TIMEOUT,
            max_connections: 32,
            mariadb_write_concurrency: MARIADB_WRITE_CONCURRENCY,
            sqlite_readers: 4,
            sqlite_busy_timeout: SQLITE_BUSY_TIMEOUT,
            sqlite_cache_mib: SQLITE_CACHE_MIB,
        }
    }
}

/// Opens the instance `name` at `url` with the default options (see [`open_db_with`]).
pub async fn open_db(name: &str, url: &str) -> Result<Arc<dyn Db>, DbError> {
    open_db_with(name, url, DbOptions::default()).await
}

/// Opens the instance `name` at `url` and creates its schema if missing:
/// - `sqlite://PATH` (`sqlite:///abs/file.db`, `sqlite://relative/file.db`): the file is
///   created if missing, with its directory;
/// - `mysql://user:password@host:port/database` (also `mariadb://`): the database must exist.
///
/// `InvalidArgument` for a URL of another kind or a bad one, `Unavailable` if the instance
/// cannot be reached now (retry later).
pub async fn open_db_with(name: &str, url: &str, opts: DbOptions) -> Result<Arc<dyn Db>, DbError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(DbError::InvalidArgument(format!("db {name}: sqlite url {url:?} names no file")));
        }
        return Ok(Arc::new(SqliteDb::open(name, path, opts).await?));
    }
    if let Some(rest) = url.strip_prefix("mysql://").or_else(|| url.strip_prefix("mariadb://")) {
        return Ok(Arc::new(MariaDb::open(name, &format!("mysql://{rest}"), opts).await?));
    }
    Err(DbError::InvalidArgument(format!(
        "db {name}: url {:?} is neither sqlite://PATH nor mysql://user:password@host:port/database",
        redact(url)
    )))
}

/// `url` without its password (for messages).
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn text(db: &str, what: &str, bytes: Vec<u8>) -> Result<String, DbError> {
    String::from_utf8(bytes).map_err(|e| bad_data(db, format!("{what} is not UTF-8: {e}")))
}

/// A `sandtable_rows` row as the plan sees it.
pub(crate) fn decode_stored(
    db: &str,
    tbl: Vec<u8>,
    k: Vec<u8>,
    v: Option<Vec<u8>>,
    version: u64,
    fence: u64,
) -> Result<(RowKey, Stored), DbError> {
    let table = TableName::new(text(db, "a table name", tbl)?).map_err(|e| bad_data(db, e))?;
    let key = text(db, "a key", k)?;
    Ok(((table, key), Stored { value: v.map(Bytes::from), version, fence }))
}

/// A `sandtable_index` row as the plan sees it.
pub(crate) fn decode_entry(
    db: &str,
    tbl: Vec<u8>,
    idx: Vec<u8>,
    ikey: Vec<u8>,
    k: Vec<u8>,
) -> Result<(IndexKey, String), DbError> {
    let table = TableName::new(text(db, "a table name", tbl)?).map_err(|e| bad_data(db, e))?;
    Ok(((table, text(db, "an index name", idx)?, text(db, "an index key", ikey)?), text(db, "a key", k)?))
}

/// One engine's way to run a read statement and decode its rows; the port's five reads are
/// written once over it ([`reads`]), so both engines answer them alike by construction.
#[async_trait::async_trait]
pub(crate) trait ReadStored: Sync {
    async fn read_stored(&self, stmt: sql::Stmt) -> Result<Vec<(RowKey, Stored)>, DbError>;
}

/// The `Db` port's reads over [`ReadStored`] (validation, statement, decoding of the answer).
pub(crate) mod reads {
    use engine::env::{
        validate_get_many, validate_key, validate_name, validate_scan, DbError, Row, RowState, TableName,
    };

    use super::{live_row, row_state, rows_in_order, sql, ReadStored};

    pub(crate) async fn get(
        e: &impl ReadStored,
        table: &TableName,
        key: &str,
    ) -> Result<Option<Row>, DbError> {
        validate_key(key)?;
        Ok(e.read_stored(sql::get(table, key)).await?.into_iter().find_map(live_row))
    }

    pub(crate) async fn get_many(
        e: &impl ReadStored,
        table: &TableName,
        keys: &[String],
    ) -> Result<Vec<Option<Row>>, DbError> {
        validate_get_many(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        Ok(rows_in_order(keys, e.read_stored(sql::get_many(table, keys)).await?))
    }

    pub(crate) async fn scan_prefix(
        e: &impl ReadStored,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Row>, DbError> {
        validate_scan(prefix, start_after, limit)?;
        let stmt = sql::scan(table, prefix, start_after, limit, true);
        Ok(e.read_stored(stmt).await?.into_iter().filter_map(live_row).collect())
    }

    pub(crate) async fn export_prefix(
        e: &impl ReadStored,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RowState>, DbError> {
        validate_scan(prefix, start_after, limit)?;
        let stmt = sql::scan(table, prefix, start_after, limit, false);
        Ok(e.read_stored(stmt).await?.into_iter().map(row_state).collect())
    }

    pub(crate) async fn get_by_index(
        e: &impl ReadStored,
        table: &TableName,
        index: &str,
        index_key: &str,
    ) -> Result<Option<Row>, DbError> {
        validate_name(index)?;
        validate_key(index_key)?;
        Ok(e.read_stored(sql::get_by_index(table, index, index_key)).await?.into_iter().find_map(live_row))
    }
}

/// The port's row, if `s` is live (not a placeholder).
pub(crate) fn live_row(((_, key), s): (RowKey, Stored)) -> Option<Row> {
    let value = s.value?;
    Some(Row { key, value, version: s.version, fence: s.fence })
}

/// The port's export of a stored key.
pub(crate) fn row_state(((_, key), s): (RowKey, Stored)) -> RowState {
    RowState { key, value: s.value, version: s.version, fence: s.fence }
}

/// `found` (rows of one table, any order) answered in the order of `keys`.
pub(crate) fn rows_in_order(keys: &[String], found: Vec<(RowKey, Stored)>) -> Vec<Option<Row>> {
    let by_key: std::collections::BTreeMap<String, Row> =
        found.into_iter().filter_map(live_row).map(|r| (r.key.clone(), r)).collect();
    keys.iter().map(|k| by_key.get(k).cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("mysql://u:secret@h:3306/db"), "mysql://u:***@h:3306/db");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[tokio::test]
    async fn unknown_urls_are_refused_without_connecting() {
        for url in ["postgres://u:p@h/db", "sqlite://", "redis://h:1"] {
            let e = open_db("db-0", url).await.err();
            assert!(matches!(e, Some(DbError::InvalidArgument(_))), "{url}: {e:?}");
        }
    }

    #[test]
    fn get_many_answers_in_the_order_asked() {
        let t = TableName::new("t").unwrap();
        let stored = |k: &str, v: Option<&str>| {
            (
                (t.clone(), k.to_string()),
                Stored { value: v.map(|v| Bytes::from(v.to_string())), version: 1, fence: 0 },
            )
        };
        let keys: Vec<String> = ["b", "x", "a", "b", "p"].iter().map(|s| s.to_string()).collect();
        let rows =
            rows_in_order(&keys, vec![stored("a", Some("1")), stored("b", Some("2")), stored("p", None)]);
        let vals: Vec<Option<Bytes>> = rows.into_iter().map(|r| r.map(|r| r.value)).collect();
        let b = |s: &str| Some(Bytes::from(s.to_string()));
        assert_eq!(vals, vec![b("2"), None, b("1"), b("2"), None]);
    }
}
