//! The `Db` port on a SQLite file (the embedded default): see the module doc of [`super`]
//! for the semantics and how fencing is atomic here.
//!
//! One file per instance, in WAL mode (readers never block the writer nor each other) with
//! `synchronous = FULL` (a commit is on disk when `transact` returns, so it survives a crash
//! of the process and of the machine) and a busy timeout (another process holding the write
//! lock is waited for, not failed at once). Writes go through a pool of **one** connection,
//! so the adapter's own writers queue in FIFO order in the process instead of spinning on
//! SQLite's busy handler; reads use a separate pool of [`DbOptions::sqlite_readers`]
//! connections. Each connection's page cache is [`DbOptions::sqlite_cache_mib`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use engine::env::{validate_transact, Db, DbError, Row, RowState, TableName, WriteOp, WriteResult};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection as _, Row as _, Sqlite};
use tokio::time::{timeout_at, Instant};

use super::errors::{acquire_error, Fail, Stage};
use super::fast::{self, Answers, FastPathCounters, FastPathCounts, Step};
use super::plan::{self, IndexKey, Needs, RowKey, Snapshot, Stored};
use super::schema::{self, from_sqlite_u64, sqlite_u64};
use super::sql::{self, Dialect, Lock, Param, Stmt};
use super::{decode_entry, decode_stored, reads, DbOptions, ReadStored};

/// The `Db` port on one SQLite file. Cheap to share behind an `Arc`.
pub struct SqliteDb {
    name: String,
    path: PathBuf,
    writer: SqlitePool,
    readers: SqlitePool,
    opts: DbOptions,
    fast_counts: FastPathCounters,
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDb").field("name", &self.name).field("path", &self.path).finish_non_exhaustive()
    }
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

fn bind<'q>(mut q: Query<'q>, params: &'q [Param]) -> Query<'q> {
    for p in params {
        q = match p {
            Param::Blob(b) => q.bind(b.as_slice()),
            Param::Value(v) => q.bind(v.as_deref()),
            Param::U64(x) => q.bind(sqlite_u64(*x)),
            Param::Int(i) => q.bind(*i),
        };
    }
    q
}

fn stored_of(db: &str, r: &SqliteRow) -> Result<(RowKey, Stored), Fail> {
    let (version, fence): (i64, i64) = (r.try_get(3)?, r.try_get(4)?);
    Ok(decode_stored(
        db,
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        from_sqlite_u64(version),
        from_sqlite_u64(fence),
    )?)
}

fn entry_of(db: &str, r: &SqliteRow) -> Result<(IndexKey, String), Fail> {
    Ok(decode_entry(db, r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)?)
}

async fn fetch_stored(
    db: &str,
    conn: &mut SqliteConnection,
    stmt: &Stmt,
) -> Result<Vec<(RowKey, Stored)>, Fail> {
    let rows = bind(sqlx::query(&stmt.sql), &stmt.params).fetch_all(&mut *conn).await?;
    rows.iter().map(|r| stored_of(db, r)).collect()
}

async fn fetch_entries(
    db: &str,
    conn: &mut SqliteConnection,
    stmt: &Stmt,
) -> Result<Vec<(IndexKey, String)>, Fail> {
    let rows = bind(sqlx::query(&stmt.sql), &stmt.params).fetch_all(&mut *conn).await?;
    rows.iter().map(|r| entry_of(db, r)).collect()
}

async fn execute(conn: &mut SqliteConnection, stmt: &Stmt) -> Result<u64, Fail> {
    Ok(bind(sqlx::query(&stmt.sql), &stmt.params).execute(&mut *conn).await?.rows_affected())
}

impl SqliteDb {
    /// How this instance's `transact` attempts went, fast path or general.
    pub fn fast_path_counts(&self) -> FastPathCounts {
        self.fast_counts.get()
    }

    /// Opens (creating it and its directory if missing) the SQLite file at `path` as the
    /// instance `name`, and creates the schema.
    pub async fn open(name: &str, path: impl AsRef<Path>, opts: DbOptions) -> Result<SqliteDb, DbError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                tracing::warn!(db = name, dir = %dir.display(), error = %e, "cannot create the sqlite directory");
                DbError::Unavailable
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(opts.sqlite_busy_timeout)
            // Negative: a size in KiB rather than in pages.
            .pragma("cache_size", format!("-{}", u64::from(opts.sqlite_cache_mib) * 1024))
            .foreign_keys(false);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(opts.call_timeout)
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await
            .map_err(|e| acquire_error(name, &e))?;
        {
            let mut conn = writer.acquire().await.map_err(|e| acquire_error(name, &e))?;
            schema::ensure_sqlite(name, &mut conn).await?;
        }
        let readers = SqlitePoolOptions::new()
            .max_connections(opts.sqlite_readers.max(1))
            .acquire_timeout(opts.call_timeout)
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(|e| acquire_error(name, &e))?;
        Ok(SqliteDb {
            name: name.to_string(),
            path,
            writer,
            readers,
            opts,
            fast_counts: FastPathCounters::default(),
        })
    }

    /// The file this instance lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection (waiting for calls in progress). Dropping the handle without
    /// closing is safe too: committed transactions are in the file either way.
    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    /// Runs one read statement on a reader connection, within the call timeout.
    async fn read<T>(
        &self,
        stmt: Stmt,
        decode: impl Fn(&SqliteRow) -> Result<T, Fail>,
    ) -> Result<Vec<T>, DbError> {
        let deadline = Instant::now() + self.opts.call_timeout;
        let db = self.name.as_str();
        let mut conn = match timeout_at(deadline, self.readers.acquire()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(acquire_error(db, &e)),
            Err(_) => return Err(DbError::Timeout { maybe_applied: false }),
        };
        let run = async {
            let rows = bind(sqlx::query(&stmt.sql), &stmt.params).fetch_all(&mut *conn).await?;
            rows.iter().map(&decode).collect::<Result<Vec<T>, Fail>>()
        };
        match timeout_at(deadline, run).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(f)) => Err(f.into_db(db, Stage::Open)),
            Err(_) => {
                conn.close_on_drop();
                Err(DbError::Timeout { maybe_applied: false })
            }
        }
    }

    async fn load(&self, conn: &mut SqliteConnection, needs: &Needs) -> Result<Snapshot, Fail> {
        let db = self.name.as_str();
        let keys: Vec<&RowKey> = needs.rows.iter().collect();
        let mut snap = Snapshot::default();
        snap.rows
            .extend(fetch_stored(db, conn, &sql::select_rows(Dialect::Sqlite, &keys, Lock::None)).await?);
        if needs.row_entries {
            let stmt = sql::select_entries_of(Dialect::Sqlite, &keys, Lock::None);
            snap.entries.extend(fetch_entries(db, conn, &stmt).await?);
        }
        if !needs.claims.is_empty() {
            let stmt = sql::select_holders(Dialect::Sqlite, &needs.claims, Lock::None);
            snap.entries.extend(fetch_entries(db, conn, &stmt).await?);
        }
        Ok(snap)
    }

    /// The fast path (see [`fast`]): `Some(answers)` if every step hit and the transaction
    /// committed, `None` if a step missed (nothing of it was kept).
    async fn fast_path(
        &self,
        conn: &mut SqliteConnection,
        ops: &[WriteOp],
        steps: &[Step],
        committing: &AtomicBool,
    ) -> Result<Option<Vec<WriteResult>>, Fail> {
        let mut answers = Answers::new(ops.len());
        if let [Step::Update { op_index, stmt, new_version }] = steps {
            // One self-committing statement.
            committing.store(true, Ordering::Release);
            if execute(conn, stmt).await? != 1 {
                committing.store(false, Ordering::Release);
                return Ok(None);
            }
            answers.set(*op_index, WriteResult::Put { version: *new_version });
            return Ok(answers.finish());
        }
        if let [Step::Create { op_index, stmt }] = steps {
            // One self-committing statement: a refusal changes nothing.
            committing.store(true, Ordering::Release);
            let row = bind(sqlx::query(&stmt.sql), &stmt.params).fetch_optional(&mut *conn).await?;
            if !row.map_or(Ok(false), |r| {
                r.try_get::<i64, _>(0).map(|v| answers.created(*op_index, from_sqlite_u64(v)))
            })? {
                committing.store(false, Ordering::Release);
                return Ok(None);
            }
            return Ok(answers.finish());
        }
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        for step in steps {
            let hit = match step {
                Step::Update { op_index, stmt, new_version } => {
                    let hit = execute(&mut tx, stmt).await? == 1;
                    answers.set(*op_index, WriteResult::Put { version: *new_version });
                    hit
                }
                Step::Probe { op_index, stmt } => {
                    match bind(sqlx::query(&stmt.sql), &stmt.params).fetch_optional(&mut *tx).await? {
                        Some(r) => {
                            let version: i64 = r.try_get(0)?;
                            answers.set(*op_index, WriteResult::Guard { version: from_sqlite_u64(version) });
                            true
                        }
                        None => false,
                    }
                }
                Step::Create { op_index, stmt } => {
                    match bind(sqlx::query(&stmt.sql), &stmt.params).fetch_optional(&mut *tx).await? {
                        Some(r) => answers.created(*op_index, from_sqlite_u64(r.try_get::<i64, _>(0)?)),
                        None => false,
                    }
                }
                Step::Delete { op_index, probe, clear, unindex } => {
                    match bind(sqlx::query(&probe.sql), &probe.params).fetch_optional(&mut *tx).await? {
                        Some(r) if answers.deleted(*op_index, from_sqlite_u64(r.try_get::<i64, _>(0)?)) => {
                            let cleared = execute(&mut tx, clear).await? == 1;
                            execute(&mut tx, unindex).await?;
                            cleared
                        }
                        _ => false,
                    }
                }
                // MariaDB's form; `fast::plan` never gives it for SQLite. A miss is always
                // safe: the general path decides.
                Step::Clear { .. } => false,
            };
            if !hit {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        committing.store(true, Ordering::Release);
        tx.commit().await?;
        Ok(answers.finish())
    }

    /// One transaction: `BEGIN IMMEDIATE` takes the database's write lock, so the state read
    /// and checked is the state written over; `committing` is set just before `COMMIT`.
    async fn transact_in(
        &self,
        conn: &mut SqliteConnection,
        ops: &[WriteOp],
        committing: &AtomicBool,
    ) -> Result<Vec<WriteResult>, Fail> {
        let started = Instant::now();
        let planned = fast::plan(Dialect::Sqlite, ops);
        if let Some(steps) = &planned {
            if let Some(results) = self.fast_path(conn, ops, steps, committing).await? {
                self.fast_counts.count(true, true, started.elapsed());
                return Ok(results);
            }
        }
        self.fast_counts.count(planned.is_some(), false, started.elapsed());
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let snap = self.load(&mut tx, &Needs::of(ops)).await?;
        let out = match plan::evaluate(ops, &snap) {
            Ok(out) => out,
            Err(e) => {
                tx.rollback().await?;
                return Err(Fail::Db(e));
            }
        };
        if out.is_read_only() {
            tx.rollback().await?;
            return Ok(out.results);
        }
        for stmt in sql::writes(Dialect::Sqlite, &out) {
            execute(&mut tx, &stmt).await?;
        }
        committing.store(true, Ordering::Release);
        tx.commit().await?;
        Ok(out.results)
    }
}

#[async_trait]
impl ReadStored for SqliteDb {
    async fn read_stored(&self, stmt: Stmt) -> Result<Vec<(RowKey, Stored)>, DbError> {
        let db = self.name.as_str();
        self.read(stmt, |r| stored_of(db, r)).await
    }
}

#[async_trait]
impl Db for SqliteDb {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, table: &TableName, key: &str) -> Result<Option<Row>, DbError> {
        reads::get(self, table, key).await
    }

    async fn get_many(&self, table: &TableName, keys: &[String]) -> Result<Vec<Option<Row>>, DbError> {
        reads::get_many(self, table, keys).await
    }

    async fn scan_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Row>, DbError> {
        reads::scan_prefix(self, table, prefix, start_after, limit).await
    }

    async fn export_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RowState>, DbError> {
        reads::export_prefix(self, table, prefix, start_after, limit).await
    }

    async fn get_by_index(
        &self,
        table: &TableName,
        index: &str,
        index_key: &str,
    ) -> Result<Option<Row>, DbError> {
        reads::get_by_index(self, table, index, index_key).await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, DbError> {
        validate_transact(&ops)?;
        let deadline = Instant::now() + self.opts.call_timeout;
        let db = self.name.as_str();
        let mut conn = match timeout_at(deadline, self.writer.acquire()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(acquire_error(db, &e)),
            Err(_) => return Err(DbError::Timeout { maybe_applied: false }),
        };
        let committing = AtomicBool::new(false);
        let stage = |c: &AtomicBool| if c.load(Ordering::Acquire) { Stage::Committing } else { Stage::Open };
        match timeout_at(deadline, self.transact_in(&mut conn, &ops, &committing)).await {
            Ok(Ok(results)) => Ok(results),
            Ok(Err(f)) => Err(f.into_db(db, stage(&committing))),
            Err(_) => {
                // The dropped transaction queued its rollback on the connection; close it
                // anyway (a fresh one is opened for the next call).
                conn.close_on_drop();
                Err(DbError::Timeout { maybe_applied: stage(&committing).maybe_applied() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PRAGMA cache_size` of `conn` (negative: KiB).
    async fn cache_size(conn: &mut SqliteConnection) -> i64 {
        sqlx::query_scalar("PRAGMA cache_size").fetch_one(conn).await.expect("the pragma answers")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_connection_gets_the_configured_page_cache() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db =
            SqliteDb::open("db-0", dir.path().join("default.db"), DbOptions::default()).await.expect("open");
        let default_kib = -i64::from(super::super::SQLITE_CACHE_MIB) * 1024;
        assert_eq!(default_kib, -65_536, "64 MiB by default");
        let mut w = db.writer.acquire().await.expect("the writer");
        assert_eq!(cache_size(&mut w).await, default_kib, "the writer");
        drop(w);
        let mut r = db.readers.acquire().await.expect("a reader");
        assert_eq!(cache_size(&mut r).await, default_kib, "a reader");
        drop(r);
        db.close().await;

        let opts = DbOptions { sqlite_cache_mib: 8, sqlite_readers: 2, ..DbOptions::default() };
        let db = SqliteDb::open("db-0", dir.path().join("small.db"), opts).await.expect("open");
        let mut w = db.writer.acquire().await.expect("the writer");
        assert_eq!(cache_size(&mut w).await, -8 * 1024, "the writer");
        // Both readers held at once: two connections, each applied the pragma itself.
        let mut a = db.readers.acquire().await.expect("reader a");
        let mut b = db.readers.acquire().await.expect("reader b");
        assert_eq!(cache_size(&mut a).await, -8 * 1024, "reader a");
        assert_eq!(cache_size(&mut b).await, -8 * 1024, "reader b");
        drop((w, a, b));
        db.close().await;
    }
}
