//! `db`: the `Db` port's `transact` on SQLite and MariaDB against raw `sqlx` statements doing
//! the same work on the same database, at the same concurrency, in the same run.
//!
//! | case | engine (`Db::transact`) | baseline (raw `sqlx`) |
//! |---|---|---|
//! | `1-row` | one `Put` with `Expect::Version(v)` and a fence: a fenced, versioned update of an existing row | one `UPDATE sandtable_rows SET v, version, fence WHERE tbl, k, version = v, fence <= f, v IS NOT NULL` (autocommit), `rows_affected` checked |
//! | `2-row` | two such `Put`s in one transaction | `BEGIN`, the two `UPDATE`s, `COMMIT` |
//! | `1-row general` | one `Put` with `Expect::Present` (not the fast path: locking read, evaluate, upsert, commit) | the same single `UPDATE` as `1-row` |
//!
//! Each task updates rows of its own (no conflicts: the figures are the adapters' cost, not
//! lock waits), tracking their versions. Engine and baseline run in alternating rounds
//! (engine, raw, engine, raw, ...), each with its warm-up, so drift on the machine weighs on
//! both alike. The baseline gets every advantage the adapter has:
//! the same schema and rows (separate keys), the same connection settings (WAL and
//! `synchronous = FULL` on SQLite, one writer connection there; a pool of the same size and no
//! ping before use on MariaDB) and prepared statements (sqlx caches them per connection).
//! The private MariaDB is durable (`innodb_flush_log_at_trx_commit = 1`), so every commit
//! waits for its redo-log flush on both sides; SQLite's `FULL` fsyncs the WAL at every commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use engine::env::{Db, Expect, TableName, WriteOp};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection as _;

use super::driver::{measure, runtime, tasks, throughput_rows, Sample};
use super::{BenchError, BenchReport, Ctx};
use crate::adapters::db::schema::sqlite_u64;
use crate::adapters::{DbOptions, FastPathCounts, MariaDb, SqliteDb, DB_CONNECT_TIMEOUT};
use crate::services::{MariaDbSizing, PrivateMariaDb};

const BENCH: &str = "db";
/// Load tasks, one measurement each.
const CONCURRENCY: [usize; 2] = [1, 16];
/// The fence every write carries (the rows' fence: never refused).
const FENCE: u64 = 7;
/// Alternating rounds per measured pair.
const ROUNDS: u32 = 6;
/// Bytes of each written value (a small JSON object's worth).
const VALUE_BYTES: usize = 64;
const TABLE: &str = "bench";

const RAW_UPDATE: &str = "UPDATE sandtable_rows SET v = ?, version = ?, fence = ? \
                          WHERE tbl = ? AND k = ? AND version = ? AND fence <= ? AND v IS NOT NULL";

/// What a measured operation writes: the rows of one task, with their current versions.
pub(super) struct Rows {
    keys: Vec<String>,
    versions: Vec<AtomicU64>,
}

/// Rows of every task for one side (`e`ngine or `r`aw) of one case, all at version 1.
pub(super) async fn create_rows(
    db: &dyn Db,
    side: &str,
    case: &str,
    tasks: usize,
    per_task: usize,
) -> Result<Arc<Vec<Rows>>, BenchError> {
    let table = TableName::new(TABLE).map_err(|e| BenchError::setup(BENCH, e))?;
    let mut all = Vec::new();
    for t in 0..tasks {
        let keys: Vec<String> = (0..per_task).map(|i| format!("{side}/{case}/{tasks}/{t}/{i}")).collect();
        let ops = keys.iter().map(|k| WriteOp::put(&table, k, value(), Expect::Any, FENCE)).collect();
        let results =
            db.transact(ops).await.map_err(|e| BenchError::setup(BENCH, format!("creating rows: {e}")))?;
        let versions = results
            .into_iter()
            .map(|r| match r {
                engine::env::WriteResult::Put { version } => Ok(AtomicU64::new(version)),
                other => Err(BenchError::setup(BENCH, format!("creating rows: {other:?}"))),
            })
            .collect::<Result<_, _>>()?;
        all.push(Rows { keys, versions });
    }
    Ok(Arc::new(all))
}

fn value() -> Bytes {
    Bytes::from(vec![b'x'; VALUE_BYTES])
}

/// The two raw databases a case runs its baseline on.
#[derive(Clone)]
pub(super) enum Raw {
    Sqlite(SqlitePool),
    MariaDb(MySqlPool),
}

impl Raw {
    /// Raw sqlx on the SQLite file at `path`, with the adapter's file settings and one writer.
    pub(super) async fn sqlite(path: &std::path::Path, opts: DbOptions) -> Result<Raw, sqlx::Error> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(opts.sqlite_busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(connect)
            .await?;
        Ok(Raw::Sqlite(pool))
    }

    /// Raw sqlx on MariaDB at `url`: a pool of the adapter's size, without pings.
    pub(super) async fn mariadb(
        url: &str,
        opts: DbOptions,
        acquire: std::time::Duration,
    ) -> Result<Raw, sqlx::Error> {
        let pool = MySqlPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(acquire)
            .test_before_acquire(false)
            .connect(url)
            .await?;
        Ok(Raw::MariaDb(pool))
    }

    /// The deadlocks (error 1213) the MariaDB server has detected since it started
    /// (`Innodb_deadlocks`); `None` on SQLite, which has none.
    pub(super) async fn deadlocks(&self) -> Option<u64> {
        self.innodb_status("Innodb_deadlocks").await
    }

    /// A MariaDB global status counter (`SHOW GLOBAL STATUS`); `None` on SQLite.
    pub(super) async fn innodb_status(&self, name: &str) -> Option<u64> {
        self.show_global("STATUS", name).await
    }

    /// A MariaDB server variable (`SHOW GLOBAL VARIABLES`) that is a number; `None` on SQLite.
    pub(super) async fn server_variable(&self, name: &str) -> Option<u64> {
        self.show_global("VARIABLES", name).await
    }

    /// The number `SHOW GLOBAL {what} LIKE 'name'` answers on MariaDB.
    async fn show_global(&self, what: &str, name: &str) -> Option<u64> {
        let Raw::MariaDb(pool) = self else { return None };
        let row: (String, String) =
            sqlx::query_as(&format!("SHOW GLOBAL {what} LIKE '{name}'")).fetch_one(pool).await.ok()?;
        row.1.parse().ok()
    }

    /// One fenced, versioned update of each of `rows` (`BEGIN`/`COMMIT` around two or more).
    pub(super) async fn update(&self, rows: &Rows) -> Result<(), BenchError> {
        let op = |e: sqlx::Error| BenchError::op(BENCH, format!("raw sqlx: {e}"));
        let v = value();
        let next: Vec<u64> = rows.versions.iter().map(|x| x.load(Ordering::Relaxed) + 1).collect();
        macro_rules! run {
            ($pool:expr, $u64:expr) => {{
                let mut conn = $pool.acquire().await.map_err(op)?;
                let query = |i: usize| {
                    sqlx::query(RAW_UPDATE)
                        .bind(v.as_ref())
                        .bind($u64(next[i]))
                        .bind($u64(FENCE))
                        .bind(TABLE.as_bytes())
                        .bind(rows.keys[i].as_bytes())
                        .bind($u64(next[i] - 1))
                        .bind($u64(FENCE))
                };
                let check = |i: usize, hit: u64| {
                    if hit == 1 {
                        Ok(())
                    } else {
                        Err(BenchError::op(
                            BENCH,
                            format!("raw update of {} matched {hit} rows", rows.keys[i]),
                        ))
                    }
                };
                if rows.keys.len() == 1 {
                    check(0, query(0).execute(&mut *conn).await.map_err(op)?.rows_affected())?;
                } else {
                    let mut tx = conn.begin().await.map_err(op)?;
                    for i in 0..rows.keys.len() {
                        check(i, query(i).execute(&mut *tx).await.map_err(op)?.rows_affected())?;
                    }
                    tx.commit().await.map_err(op)?;
                }
            }};
        }
        match self {
            Raw::Sqlite(pool) => run!(pool, sqlite_u64),
            Raw::MariaDb(pool) => run!(pool, std::convert::identity::<u64>),
        }
        for (x, n) in rows.versions.iter().zip(next) {
            x.store(n, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The adapter's transaction over `rows`: versioned puts (`general`: `Expect::Present`).
async fn engine_update(db: &dyn Db, rows: &Rows, general: bool) -> Result<(), BenchError> {
    let table = TableName::new(TABLE).map_err(|e| BenchError::op(BENCH, e))?;
    let ops = rows
        .keys
        .iter()
        .zip(&rows.versions)
        .map(|(k, v)| {
            let expect = if general { Expect::Present } else { Expect::Version(v.load(Ordering::Relaxed)) };
            WriteOp::put(&table, k, value(), expect, FENCE)
        })
        .collect();
    let results = db.transact(ops).await.map_err(|e| BenchError::op(BENCH, format!("transact: {e}")))?;
    for (r, v) in results.iter().zip(&rows.versions) {
        match r {
            engine::env::WriteResult::Put { version } => v.store(*version, Ordering::Relaxed),
            other => return Err(BenchError::op(BENCH, format!("unexpected answer {other:?}"))),
        }
    }
    Ok(())
}

/// Measures the adapter and the raw baseline on one case, in [`ROUNDS`] alternating rounds
/// (engine, raw, engine, ...) of a sixth of the measurement each, so that drift on the
/// machine (other load, the database's background flushing) weighs on both alike.
async fn measure_pair(
    ctx: &Ctx,
    db: &Arc<dyn Db>,
    raw: &Raw,
    (case, per_task, general): (&str, usize, bool),
    concurrency: usize,
) -> Result<(Sample, Sample), BenchError> {
    let engine_rows = create_rows(&**db, "e", case, concurrency, per_task).await?;
    let raw_rows = create_rows(&**db, "r", case, concurrency, per_task).await?;
    let round = ctx.settings.duration() / ROUNDS;
    let (mut engine, mut baseline) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (db, rows) = (db.clone(), engine_rows.clone());
        engine.push(
            measure(BENCH, concurrency, ctx.settings.warmup(), round, move |task, _| {
                let (db, rows) = (db.clone(), rows.clone());
                async move { engine_update(&*db, &rows[task], general).await }
            })
            .await?,
        );
        let (raw, rows) = (raw.clone(), raw_rows.clone());
        baseline.push(
            measure(BENCH, concurrency, ctx.settings.warmup(), round, move |task, _| {
                let (raw, rows) = (raw.clone(), rows.clone());
                async move { raw.update(&rows[task]).await }
            })
            .await?,
        );
    }
    Ok((Sample::merge(engine), Sample::merge(baseline)))
}

/// Every case of one engine into `report`, rows named `{engine} {case}, {n} tasks`.
async fn engine_cases(
    ctx: &Ctx,
    engine: &str,
    db: Arc<dyn Db>,
    raw: Raw,
) -> Result<Vec<super::Row>, BenchError> {
    let mut rows = Vec::new();
    for c in CONCURRENCY {
        for (case, per_task, general) in
            [("1-row", 1, false), ("2-row", 2, false), ("1-row general", 1, true)]
        {
            let (e, b) = measure_pair(ctx, &db, &raw, (case, per_task, general), c).await?;
            let name = format!("{engine} {case}, {}", tasks(c));
            rows.extend(throughput_rows(&name, "transact/s", &e, &b));
        }
    }
    Ok(rows)
}

/// Runs `cases` on a fresh SQLite file and then on a private MariaDB: each time with the
/// engine's adapter (instance `instance`) and its raw twin (same file settings and one writer
/// on SQLite; a pool of the same size without pings on MariaDB), both on the same database.
/// Returns every row `cases` produced.
/// The fast-path counters of the instance a bench's cases run on (see [`FastPathCounts`]).
pub(super) type FastCounts = Arc<dyn Fn() -> FastPathCounts + Send + Sync>;

pub(super) fn on_both_engines<F, Fut>(
    bench: &'static str,
    instance: &str,
    mut cases: F,
) -> Result<Vec<super::Row>, BenchError>
where
    F: FnMut(&'static str, Arc<dyn Db>, Raw, FastCounts) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<super::Row>, BenchError>>,
{
    let mariadb = PrivateMariaDb::start_sized(MariaDbSizing::BENCH)?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("sandtable-bench-{bench}-"))
        .tempdir()
        .map_err(BenchError::io("creating a temporary directory"))?;
    let sqlite_path = dir.path().join(format!("{bench}.sqlite"));
    let opts = DbOptions::default();
    let rows = runtime()?.block_on(async {
        let setup = |e: &dyn std::fmt::Display| BenchError::setup(bench, e);
        let db = Arc::new(SqliteDb::open(instance, &sqlite_path, opts).await.map_err(|e| setup(&e))?);
        let raw = Raw::sqlite(&sqlite_path, opts).await.map_err(|e| setup(&e))?;
        let counts: FastCounts = Arc::new({
            let db = db.clone();
            move || db.fast_path_counts()
        });
        let mut rows = cases("sqlite", db, raw, counts).await?;
        let db = Arc::new(MariaDb::open(instance, &mariadb.url(), opts).await.map_err(|e| setup(&e))?);
        let raw = Raw::mariadb(&mariadb.url(), opts, DB_CONNECT_TIMEOUT).await.map_err(|e| setup(&e))?;
        let counts: FastCounts = Arc::new({
            let db = db.clone();
            move || db.fast_path_counts()
        });
        rows.extend(cases("mariadb", db, raw, counts).await?);
        Ok::<_, BenchError>(rows)
    })?;
    drop(mariadb);
    Ok(rows)
}

pub(super) fn run(ctx: &Ctx) -> Result<BenchReport, BenchError> {
    let opts = DbOptions::default();
    let mut report = BenchReport::new(BENCH);
    report.rows =
        on_both_engines(BENCH, "bench-db", |engine, db, raw, _| engine_cases(ctx, engine, db, raw))?;
    report.notes.push(format!(
        "values of {VALUE_BYTES} bytes; every write fenced ({FENCE}) and versioned; each task its own rows. \
         sqlite: WAL, synchronous=FULL, one writer connection on both sides. mariadb: private mariadbd \
         (InnoDB, innodb_flush_log_at_trx_commit=1), pools of {} connections without ping on both sides. \
         '1-row general' is the adapter's general path (Expect::Present: locking read, evaluate, upsert, \
         commit) against the same single raw UPDATE",
        opts.max_connections
    ));
    Ok(report)
}
