//! The `Db` port on a MariaDB server (InnoDB): see the module doc of [`super`] for the
//! semantics and how fencing is atomic here.
//!
//! One `sqlx` pool of up to [`DbOptions::max_connections`] connections, each set to
//! REPEATABLE READ (InnoDB's default, set explicitly since the general path relies on its gap
//! locks): plain reads are consistent snapshots (one statement each), locking reads see the
//! latest committed rows. Connections are not pinged before use (that would cost a
//! round trip per call); a call that finds its connection broken before anything could have
//! committed runs again once on a fresh connection, and the pool is replaced after a broken
//! connection so that connections to a server that has restarted are not tried one by one.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use engine::env::{lock, validate_transact, Db, DbError, Row, RowState, TableName, WriteOp, WriteResult};
use sqlx::mysql::{
    MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow,
};
use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, Executor as _, MySql, Row as _};
use tokio::time::{sleep, timeout_at, Instant};
use tracing::{debug, info};

use super::errors::{acquire_error, call_error, is_connection_error, is_lock_conflict, Fail, Stage};
use super::fast::{self, Answers, Step};
use super::plan::{self, IndexKey, Needs, RowKey, Snapshot, Stored};
use super::schema;
use super::sql::{self, Dialect, Lock, Param, Stmt};
use super::{
    decode_entry, decode_stored, reads, DbOptions, ReadStored, LOCK_CONFLICT_BACKOFF, LOCK_CONFLICT_RETRIES,
};

/// The `Db` port on one MariaDB database. Cheap to share behind an `Arc`.
pub struct MariaDb {
    name: String,
    connect: MySqlConnectOptions,
    /// The pool and its generation (bumped when a broken connection replaces it).
    pool: Mutex<(u64, MySqlPool)>,
    generation: AtomicU64,
    opts: DbOptions,
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb")
            .field("name", &self.name)
            .field("host", &self.connect.get_host())
            .field("port", &self.connect.get_port())
            .field("database", &self.connect.get_database())
            .finish_non_exhaustive()
    }
}

type Query<'q> = sqlx::query::Query<'q, MySql, MySqlArguments>;

fn bind<'q>(mut q: Query<'q>, params: &'q [Param]) -> Query<'q> {
    for p in params {
        q = match p {
            Param::Blob(b) => q.bind(b.as_slice()),
            Param::Value(v) => q.bind(v.as_deref()),
            Param::U64(x) => q.bind(*x),
            Param::Int(i) => q.bind(*i),
        };
    }
    q
}

fn stored_of(db: &str, r: &MySqlRow) -> Result<(RowKey, Stored), Fail> {
    Ok(decode_stored(db, r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)?)
}

fn entry_of(db: &str, r: &MySqlRow) -> Result<(IndexKey, String), Fail> {
    Ok(decode_entry(db, r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)?)
}

async fn fetch_stored(
    db: &str,
    conn: &mut MySqlConnection,
    stmt: &Stmt,
) -> Result<Vec<(RowKey, Stored)>, Fail> {
    let rows = bind(sqlx::query(&stmt.sql), &stmt.params).fetch_all(&mut *conn).await?;
    rows.iter().map(|r| stored_of(db, r)).collect()
}

async fn fetch_entries(
    db: &str,
    conn: &mut MySqlConnection,
    stmt: &Stmt,
) -> Result<Vec<(IndexKey, String)>, Fail> {
    let rows = bind(sqlx::query(&stmt.sql), &stmt.params).fetch_all(&mut *conn).await?;
    rows.iter().map(|r| entry_of(db, r)).collect()
}

async fn execute(conn: &mut MySqlConnection, stmt: &Stmt) -> Result<u64, Fail> {
    Ok(bind(sqlx::query(&stmt.sql), &stmt.params).execute(&mut *conn).await?.rows_affected())
}

impl MariaDb {
    /// Connects to the database at `url` (`mysql://user:password@host:port/database`) as the
    /// instance `name` and creates the schema.
    pub async fn open(name: &str, url: &str, opts: DbOptions) -> Result<MariaDb, DbError> {
        let connect = MySqlConnectOptions::from_str(url)
            .map_err(|e| DbError::InvalidArgument(format!("db {name}: bad mysql url: {e}")))?
            .statement_cache_capacity(512);
        let db = MariaDb {
            name: name.to_string(),
            pool: Mutex::new((0, Self::new_pool(&connect, &opts))),
            connect,
            generation: AtomicU64::new(0),
            opts,
        };
        let mut conn = db.current().1.acquire().await.map_err(|e| acquire_error(name, &e))?;
        schema::ensure_mariadb(name, &mut conn).await?;
        info!(db = name, host = db.connect.get_host(), port = db.connect.get_port(), "mariadb instance open");
        Ok(db)
    }

    fn new_pool(connect: &MySqlConnectOptions, opts: &DbOptions) -> MySqlPool {
        // A lock wait longer than a call is useless: the caller has given up by then.
        let lock_wait = opts.call_timeout.as_secs().max(1);
        MySqlPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.connect_timeout)
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    // REPEATABLE READ whatever the server's default: the general path relies
                    // on its gap locks (a locking read of an absent key blocks its creation).
                    let set = format!(
                        "SET SESSION innodb_lock_wait_timeout = {lock_wait}, \
                         SESSION tx_isolation = 'REPEATABLE-READ'"
                    );
                    conn.execute(set.as_str()).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(connect.clone())
    }

    fn current(&self) -> (u64, MySqlPool) {
        lock(&self.pool).clone()
    }

    /// Replaces the pool of generation `seen` (its connections are likely to a server that
    /// went away); a later generation is kept.
    fn renew(&self, seen: u64) {
        let mut pool = lock(&self.pool);
        if pool.0 == seen {
            let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
            let old = std::mem::replace(&mut *pool, (generation, Self::new_pool(&self.connect, &self.opts)));
            debug!(db = %self.name, generation, "mariadb pool renewed after a broken connection");
            tokio::spawn(async move { old.1.close().await });
        }
    }

    async fn acquire(&self, deadline: Instant) -> Result<(u64, PoolConnection<MySql>), DbError> {
        let (generation, pool) = self.current();
        match timeout_at(deadline, pool.acquire()).await {
            Ok(Ok(c)) => Ok((generation, c)),
            Ok(Err(e)) => Err(acquire_error(&self.name, &e)),
            Err(_) => Err(DbError::Timeout { maybe_applied: false }),
        }
    }

    /// Runs one read statement within the call timeout (again once on a fresh connection if
    /// the first was broken: a read applies nothing).
    async fn read<T>(
        &self,
        stmt: Stmt,
        decode: impl Fn(&MySqlRow) -> Result<T, Fail>,
    ) -> Result<Vec<T>, DbError> {
        let deadline = Instant::now() + self.opts.call_timeout;
        let db = self.name.as_str();
        let mut retried = false;
        loop {
            let (generation, mut conn) = self.acquire(deadline).await?;
            let run = async {
                let rows = bind(sqlx::query(&stmt.sql), &stmt.params).fetch_all(&mut *conn).await?;
                rows.iter().map(&decode).collect::<Result<Vec<T>, Fail>>()
            };
            match timeout_at(deadline, run).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(Fail::Sql(e))) if is_connection_error(&e) => {
                    conn.close_on_drop();
                    self.renew(generation);
                    if retried {
                        return Err(call_error(db, &e, Stage::Open));
                    }
                    retried = true;
                }
                Ok(Err(f)) => return Err(f.into_db(db, Stage::Open)),
                Err(_) => {
                    conn.close_on_drop();
                    return Err(DbError::Timeout { maybe_applied: false });
                }
            }
        }
    }

    async fn load(&self, conn: &mut MySqlConnection, needs: &Needs) -> Result<Snapshot, Fail> {
        let db = self.name.as_str();
        let exclusive: Vec<&RowKey> = needs.rows.iter().filter(|k| !needs.guarded_only.contains(k)).collect();
        let shared: Vec<&RowKey> = needs.guarded_only.iter().collect();
        let mut snap = Snapshot::default();
        if !exclusive.is_empty() {
            let stmt = sql::select_rows(Dialect::MariaDb, &exclusive, Lock::Exclusive);
            snap.rows.extend(fetch_stored(db, conn, &stmt).await?);
        }
        if !shared.is_empty() {
            let stmt = sql::select_rows(Dialect::MariaDb, &shared, Lock::Shared);
            snap.rows.extend(fetch_stored(db, conn, &stmt).await?);
        }
        if needs.row_entries {
            let stmt = sql::select_entries_of(Dialect::MariaDb, &exclusive, Lock::Exclusive);
            snap.entries.extend(fetch_entries(db, conn, &stmt).await?);
        }
        if !needs.claims.is_empty() {
            let stmt = sql::select_holders(Dialect::MariaDb, &needs.claims, Lock::Exclusive);
            snap.entries.extend(fetch_entries(db, conn, &stmt).await?);
        }
        Ok(snap)
    }

    /// The fast path (see [`fast`]): `Some(answers)` if every step hit and it committed,
    /// `None` if a step missed (its transaction rolled back).
    async fn fast_path(
        &self,
        conn: &mut MySqlConnection,
        ops: &[WriteOp],
        steps: &[Step],
        committing: &AtomicBool,
    ) -> Result<Option<Vec<WriteResult>>, Fail> {
        let mut answers = Answers::new(ops.len());
        if let [Step::Update { op_index, stmt, new_version }] = steps {
            // One self-committing statement (autocommit).
            committing.store(true, Ordering::Release);
            if execute(conn, stmt).await? != 1 {
                committing.store(false, Ordering::Release);
                return Ok(None);
            }
            answers.set(*op_index, WriteResult::Put { version: *new_version });
            return Ok(answers.finish());
        }
        let mut tx = conn.begin().await?;
        for step in steps {
            let hit = match step {
                Step::Update { op_index, stmt, new_version } => {
                    answers.set(*op_index, WriteResult::Put { version: *new_version });
                    execute(&mut tx, stmt).await? == 1
                }
                Step::Probe { op_index, stmt } => {
                    match bind(sqlx::query(&stmt.sql), &stmt.params).fetch_optional(&mut *tx).await? {
                        Some(r) => {
                            answers.set(*op_index, WriteResult::Guard { version: r.try_get(0)? });
                            true
                        }
                        None => false,
                    }
                }
                Step::Delete { op_index, probe, clear, unindex } => {
                    match bind(sqlx::query(&probe.sql), &probe.params).fetch_optional(&mut *tx).await? {
                        Some(r) if answers.deleted(*op_index, r.try_get::<u64, _>(0)?) => {
                            let cleared = execute(&mut tx, clear).await? == 1;
                            execute(&mut tx, unindex).await?;
                            cleared
                        }
                        _ => false,
                    }
                }
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

    /// One attempt: the fast path, else the general one (locking reads, evaluate, write).
    async fn attempt(
        &self,
        conn: &mut MySqlConnection,
        ops: &[WriteOp],
        committing: &AtomicBool,
    ) -> Result<Vec<WriteResult>, Fail> {
        if let Some(steps) = fast::plan(Dialect::MariaDb, ops) {
            if let Some(results) = self.fast_path(conn, ops, &steps, committing).await? {
                return Ok(results);
            }
        }
        let needs = Needs::of(ops);
        let mut tx = conn.begin().await?;
        let mut snap = self.load(&mut tx, &needs).await?;
        let absent: Vec<&RowKey> = needs
            .rows
            .iter()
            .filter(|k| !needs.guarded_only.contains(*k) && !snap.rows.contains_key(*k))
            .collect();
        if !absent.is_empty() {
            // The locking read of an absent key locked the gap it would go in. Holding that
            // while inserting deadlocks with any other transaction doing the same in the same
            // gap (both hold the gap, each waits to insert: error 1213). So let go, create the
            // absent keys as placeholders first, and lock records only (see `create_placeholders`).
            tx.rollback().await?;
            tx = conn.begin().await?;
            execute(&mut tx, &sql::create_placeholders(&absent)).await?;
            snap = self.load(&mut tx, &needs).await?;
            // A placeholder with version 0 and fence 0 is how the port stores nothing: evaluate
            // from "absent", so the outcome writes these keys as it would have.
            let created: BTreeSet<&RowKey> = absent.into_iter().collect();
            snap.rows.retain(|k, s| !(created.contains(k) && *s == Stored::NOTHING));
        }
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
        for stmt in sql::writes(Dialect::MariaDb, &out) {
            execute(&mut tx, &stmt).await?;
        }
        committing.store(true, Ordering::Release);
        tx.commit().await?;
        Ok(out.results)
    }
}

#[async_trait]
impl ReadStored for MariaDb {
    async fn read_stored(&self, stmt: Stmt) -> Result<Vec<(RowKey, Stored)>, DbError> {
        let db = self.name.as_str();
        self.read(stmt, |r| stored_of(db, r)).await
    }
}

#[async_trait]
impl Db for MariaDb {
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
        let (mut conflicts, mut reconnected) = (0u32, false);
        loop {
            let (generation, mut conn) = self.acquire(deadline).await?;
            let committing = AtomicBool::new(false);
            let outcome = timeout_at(deadline, self.attempt(&mut conn, &ops, &committing)).await;
            let stage = if committing.load(Ordering::Acquire) { Stage::Committing } else { Stage::Open };
            match outcome {
                Ok(Ok(results)) => return Ok(results),
                Ok(Err(Fail::Sql(e))) if stage == Stage::Open && is_lock_conflict(&e) => {
                    // The server rolled the attempt (or its last statement) back; make sure
                    // nothing of it stays open on the connection, then run it again.
                    if !matches!(
                        timeout_at(deadline, sqlx::query("ROLLBACK").execute(&mut *conn)).await,
                        Ok(Ok(_))
                    ) {
                        conn.close_on_drop();
                    }
                    if conflicts >= LOCK_CONFLICT_RETRIES {
                        return Err(call_error(db, &e, stage));
                    }
                    let pause = LOCK_CONFLICT_BACKOFF * (1 << conflicts.min(6));
                    conflicts += 1;
                    debug!(db, attempt = conflicts, error = %e, "lock conflict; running the transaction again");
                    drop(conn);
                    if Instant::now() + pause >= deadline {
                        return Err(DbError::Timeout { maybe_applied: false });
                    }
                    sleep(pause).await;
                }
                Ok(Err(Fail::Sql(e))) if is_connection_error(&e) => {
                    conn.close_on_drop();
                    self.renew(generation);
                    // Nothing can have committed before the commit was sent: a fresh
                    // connection may run the call once more.
                    if stage == Stage::Committing || reconnected {
                        return Err(call_error(db, &e, stage));
                    }
                    reconnected = true;
                }
                Ok(Err(f)) => return Err(f.into_db(db, stage)),
                Err(_) => {
                    conn.close_on_drop();
                    return Err(DbError::Timeout { maybe_applied: stage.maybe_applied() });
                }
            }
        }
    }
}
