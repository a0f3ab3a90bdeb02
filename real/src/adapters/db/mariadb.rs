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
    MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlQueryResult,
    MySqlRow,
};
use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, Executor as _, MySql, Row as _};
use tokio::time::{sleep, timeout_at, Instant};
use tracing::{debug, info};

use super::errors::{acquire_error, call_error, is_connection_error, is_lock_conflict, Fail, Stage};
use super::fast::{self, Answers, FastPathCounters, FastPathCounts, Step};
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
    fast_counts: FastPathCounters,
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

/// Most bytes of a fast path sent as one script (its statements' literals written in); a
/// larger transaction sends its statements one by one. Far below the server's
/// `max_allowed_packet` (16 MiB by default).
const SCRIPT_BYTES_MAX: usize = 1 << 20;

/// A pooled connection that is closed instead of going back to the pool if it is dropped while
/// a transaction a script began is open on it (`open`): a timed-out or cancelled call, or a
/// rollback that failed. Back in the pool, the next user's `START TRANSACTION` would commit
/// that transaction. (`sqlx`'s own `Transaction` rolls back on drop; a script's is not one.)
struct Leased {
    conn: PoolConnection<MySql>,
    open: AtomicBool,
}

impl Drop for Leased {
    fn drop(&mut self) {
        if *self.open.get_mut() {
            self.conn.close_on_drop();
        }
    }
}

/// The fast path's steps as one script, `START TRANSACTION` and every statement with its
/// literals written in, sent in one round trip; then `COMMIT` or `ROLLBACK` is the second.
/// Statement by statement it costs `BEGIN`, one round trip per statement and `COMMIT`.
/// `None` (send them one by one) if a step is not MariaDB's, or the script would be too long.
fn script(steps: &[Step]) -> Option<String> {
    let mut out = String::from("START TRANSACTION");
    let mut add = |stmt: &Stmt| -> Option<()> {
        out.push_str(";\n");
        out.push_str(&stmt.inline_mariadb()?);
        (out.len() <= SCRIPT_BYTES_MAX).then_some(())
    };
    for step in steps {
        match step {
            Step::Update { stmt, .. } | Step::Probe { stmt, .. } | Step::Create { stmt, .. } => add(stmt)?,
            Step::Clear { clear, unindex, .. } => {
                add(clear)?;
                add(unindex)?;
            }
            Step::Delete { .. } => return None,
        }
    }
    Some(out)
}

/// A script's answer: each statement's rows, then its result.
type Outcomes<'c> =
    futures::stream::BoxStream<'c, Result<sqlx::Either<MySqlQueryResult, MySqlRow>, sqlx::Error>>;

/// One statement's outcome in a script's answer: its rows, then its result.
async fn next_outcome(results: &mut Outcomes<'_>) -> Result<(Vec<MySqlRow>, MySqlQueryResult), Fail> {
    use futures::StreamExt as _;
    let mut rows = Vec::new();
    loop {
        match results.next().await {
            Some(Ok(sqlx::Either::Right(row))) => rows.push(row),
            Some(Ok(sqlx::Either::Left(done))) => return Ok((rows, done)),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(sqlx::Error::Protocol("a script's answer ended early".into()).into()),
        }
    }
}

/// Reads the answer of `script` (from [`script`]`(steps)`): true if every step hit, with
/// their answers in `answers`. Reads every outcome, so the connection is ready after it.
async fn read_script(
    conn: &mut MySqlConnection,
    script: &str,
    steps: &[Step],
    answers: &mut Answers,
) -> Result<bool, Fail> {
    use futures::StreamExt as _;
    let mut results: Outcomes<'_> = (&mut *conn).fetch_many(script);
    next_outcome(&mut results).await?; // START TRANSACTION
    let mut hit = true;
    for step in steps {
        hit &= match step {
            Step::Update { op_index, new_version, .. } => {
                answers.set(*op_index, WriteResult::Put { version: *new_version });
                next_outcome(&mut results).await?.1.rows_affected() == 1
            }
            Step::Probe { op_index, .. } => match &next_outcome(&mut results).await?.0[..] {
                [row] => {
                    answers.set(*op_index, WriteResult::Guard { version: row.try_get(0)? });
                    true
                }
                _ => false,
            },
            Step::Create { op_index, .. } => {
                created(answers, *op_index, &next_outcome(&mut results).await?.1)
            }
            Step::Clear { op_index, .. } => {
                let (_, done) = next_outcome(&mut results).await?;
                next_outcome(&mut results).await?; // the index DELETE
                done.rows_affected() == 1 && answers.cleared(*op_index, done.last_insert_id())
            }
            Step::Delete { .. } => unreachable!("`script` refuses SQLite's steps"),
        };
    }
    if let Some(extra) = results.next().await {
        extra?;
        return Err(
            sqlx::Error::Protocol("a script's answer has more outcomes than statements".into()).into()
        );
    }
    Ok(hit)
}

/// Runs the fast path as a script (see [`script`]): `Some(answers)` if every step hit and it
/// committed, `None` if one missed (rolled back). `open` is set while the script's
/// transaction may be open on `conn`; an error is returned after rolling it back (or with
/// `open` still set, if that failed: the connection is then closed, see [`Leased`]).
async fn run_script(
    conn: &mut MySqlConnection,
    script: &str,
    steps: &[Step],
    mut answers: Answers,
    committing: &AtomicBool,
    open: &AtomicBool,
) -> Result<Option<Vec<WriteResult>>, Fail> {
    open.store(true, Ordering::Release);
    let read = read_script(conn, script, steps, &mut answers).await;
    if let Ok(true) = read {
        committing.store(true, Ordering::Release);
        (&mut *conn).execute("COMMIT").await?;
        open.store(false, Ordering::Release);
        return Ok(answers.finish());
    }
    let rolled_back = (&mut *conn).execute("ROLLBACK").await;
    if rolled_back.is_ok() {
        open.store(false, Ordering::Release);
    }
    // A statement's error is what went wrong, whether or not the rollback worked.
    read?;
    rolled_back?;
    Ok(None)
}

/// Sets the answer of the `Create` at `op_index` from its statement's result; false if it
/// was refused. An insert affects one row and leaves `LAST_INSERT_ID` at 1; a write over a
/// placeholder affects two (MySQL counts an upsert's update so) and leaves the new version; a
/// refusal leaves 0 (and affects one row: sqlx asks for found rows, not changed ones).
fn created(answers: &mut Answers, op_index: usize, done: &MySqlQueryResult) -> bool {
    match (done.rows_affected(), done.last_insert_id()) {
        (1, 1) | (2, 1..) => answers.created(op_index, done.last_insert_id()),
        _ => false,
    }
}

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
            fast_counts: FastPathCounters::default(),
        };
        let mut conn = db.current().1.acquire().await.map_err(|e| acquire_error(name, &e))?;
        schema::ensure_mariadb(name, &mut conn).await?;
        info!(db = name, host = db.connect.get_host(), port = db.connect.get_port(), "mariadb instance open");
        Ok(db)
    }

    /// How this instance's `transact` attempts went, fast path or general.
    pub fn fast_path_counts(&self) -> FastPathCounts {
        self.fast_counts.get()
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
        open: &AtomicBool,
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
        if let [Step::Create { op_index, stmt }] = steps {
            // One self-committing statement: a refusal changes nothing.
            committing.store(true, Ordering::Release);
            let done = bind(sqlx::query(&stmt.sql), &stmt.params).execute(&mut *conn).await?;
            if !created(&mut answers, *op_index, &done) {
                committing.store(false, Ordering::Release);
                return Ok(None);
            }
            return Ok(answers.finish());
        }
        if let Some(script) = script(steps) {
            return run_script(conn, &script, steps, answers, committing, open).await;
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
                Step::Create { op_index, stmt } => {
                    let done = bind(sqlx::query(&stmt.sql), &stmt.params).execute(&mut *tx).await?;
                    created(&mut answers, *op_index, &done)
                }
                Step::Clear { op_index, clear, unindex } => {
                    let done = bind(sqlx::query(&clear.sql), &clear.params).execute(&mut *tx).await?;
                    if done.rows_affected() == 1 && answers.cleared(*op_index, done.last_insert_id()) {
                        execute(&mut tx, unindex).await?;
                        true
                    } else {
                        false
                    }
                }
                // SQLite's form; `fast::plan` never gives it for MariaDB. A miss is always
                // safe: the general path decides.
                Step::Delete { .. } => false,
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
        open: &AtomicBool,
    ) -> Result<Vec<WriteResult>, Fail> {
        let started = Instant::now();
        let planned = fast::plan(Dialect::MariaDb, ops);
        if let Some(steps) = &planned {
            if let Some(results) = self.fast_path(conn, ops, steps, committing, open).await? {
                self.fast_counts.count(true, true, started.elapsed());
                return Ok(results);
            }
        }
        self.fast_counts.count(planned.is_some(), false, started.elapsed());
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

    fn write_concurrency(&self) -> usize {
        self.opts.mariadb_write_concurrency.clamp(1, self.opts.max_connections.max(1)) as usize
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
            let (generation, conn) = self.acquire(deadline).await?;
            let mut conn = Leased { conn, open: AtomicBool::new(false) };
            let committing = AtomicBool::new(false);
            let outcome =
                timeout_at(deadline, self.attempt(&mut conn.conn, &ops, &committing, &conn.open)).await;
            let stage = if committing.load(Ordering::Acquire) { Stage::Committing } else { Stage::Open };
            match outcome {
                Ok(Ok(results)) => return Ok(results),
                Ok(Err(Fail::Sql(e))) if stage == Stage::Open && is_lock_conflict(&e) => {
                    // The server rolled the attempt (or its last statement) back; make sure
                    // nothing of it stays open on the connection, then run it again.
                    if !matches!(
                        timeout_at(deadline, sqlx::query("ROLLBACK").execute(&mut *conn.conn)).await,
                        Ok(Ok(_))
                    ) {
                        conn.conn.close_on_drop();
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
                    conn.conn.close_on_drop();
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
                    conn.conn.close_on_drop();
                    return Err(DbError::Timeout { maybe_applied: stage.maybe_applied() });
                }
            }
        }
    }
}
