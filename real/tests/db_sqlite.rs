//! The `Db` port on SQLite (`real::adapters::SqliteDb`), on temporary files: the port's
//! semantics, durability across a reopen, no lost update under 16 concurrent writers, and the
//! error mapping of what can go wrong with a file.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::db as checks;
use engine::env::{Db, DbError, Expect};
use real::adapters::{open_db, DbOptions, SqliteDb};

fn url(dir: &tempfile::TempDir, file: &str) -> String {
    format!("sqlite://{}", dir.path().join(file).display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_gives_the_ports_answers() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db("db-0", &url(&dir, "nested/dir/db-0.sqlite")).await.unwrap();
    assert_eq!(db.name(), "db-0");
    checks::semantics(&*db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_survive_a_reopen_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let db = SqliteDb::open("db-0", &path, DbOptions::default()).await.unwrap();
    checks::write_durable(&db, 20).await;
    // No close: whatever was committed is in the file (WAL) already.
    drop(db);
    let db = SqliteDb::open("db-0", &path, DbOptions::default()).await.unwrap();
    checks::check_durable(&db, 20).await;
    // The schema is created once; opening again keeps the data and the version row.
    db.close().await;
    let again = open_db("db-0", &format!("sqlite://{}", path.display())).await.unwrap();
    checks::check_durable(&*again, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_writers_lose_no_update_and_one_creator_wins() {
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<dyn Db> = open_db("db-0", &url(&dir, "db.sqlite")).await.unwrap();
    let conflicts = checks::concurrent_increments(db.clone(), 16, 25).await;
    println!("version mismatches retried: {conflicts}");
    checks::concurrent_creators(db, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_created_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let url = format!("sqlite://{}", blocker.join("db.sqlite").display());
    assert_eq!(open_db("db-0", &url).await.err(), Some(DbError::Unavailable));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_holding_the_write_lock_is_a_timeout_that_applied_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let opts = DbOptions {
        call_timeout: Duration::from_millis(600),
        sqlite_busy_timeout: Duration::from_millis(200),
        ..DbOptions::default()
    };
    let db = SqliteDb::open("db-0", &path, opts).await.unwrap();
    let u = checks::t("users");
    db.transact(vec![checks::put(&u, "a", "1", Expect::Absent, 1)]).await.unwrap();
    // Another writer (a second handle on the same file, as another process would be) holds
    // the write lock in an open transaction.
    use sqlx::Connection as _;
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    let r = db.transact(vec![checks::put(&u, "a", "2", Expect::Any, 1)]).await;
    assert!(matches!(r, Err(DbError::Timeout { .. })), "{r:?}");
    // Reads go on (WAL readers are never blocked by the writer).
    assert_eq!(db.get(&u, "a").await.unwrap().map(|r| r.version), Some(1));
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(
        db.transact(vec![checks::put(&u, "a", "3", Expect::Version(1), 1)]).await.map(|r| r.len()),
        Ok(1),
        "the timed-out write applied nothing and the adapter recovered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_over_a_placeholder_is_answered_by_one_upsert_on_the_fast_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteDb::open("db-0", dir.path().join("db.sqlite"), DbOptions::default()).await.unwrap();
    let counts = || {
        let c = db.fast_path_counts();
        (c.hits, c.misses)
    };
    checks::creates_over_placeholders_take_the_fast_path(&db, counts).await;
}
