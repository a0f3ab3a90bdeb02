//! The `Db` port on MariaDB (`real::adapters::MariaDb`), on a private `mariadbd` per test
//! (`real::services::PrivateMariaDb`; fails, never skips, when MariaDB is not installed): the
//! port's semantics, durability across a server crash and restart, no lost update under 16
//! concurrent writers, and the error mapping of an unreachable or frozen server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::db as checks;
use engine::env::{Db, DbError, Expect};
use real::adapters::{open_db, open_db_with, DbOptions, MariaDb, MARIADB_WRITE_CONCURRENCY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_gives_the_ports_answers() {
    let server = common::mariadb();
    let db = open_db("db-0", &server.url()).await.unwrap();
    assert_eq!(db.name(), "db-0");
    checks::semantics(&*db).await;
    // Opening again finds the schema in place and the data intact.
    let again = open_db("db-0", &server.url()).await.unwrap();
    assert_eq!(again.get(&checks::t("fence_users"), "u1").await.unwrap().map(|r| r.version), Some(3));

    // The group commit's flushers: the configured write concurrency, never above the pool.
    assert_eq!(db.write_concurrency(), MARIADB_WRITE_CONCURRENCY as usize);
    assert_ne!(db.write_concurrency(), engine::env::WRITE_CONCURRENCY_DEFAULT, "MariaDB names its own");
    let small = DbOptions { max_connections: 2, ..DbOptions::default() };
    let capped = open_db_with("db-0", &server.url(), small).await.unwrap();
    assert_eq!(capped.write_concurrency(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_writers_lose_no_update_and_one_creator_wins() {
    let server = common::mariadb();
    let db: Arc<dyn Db> = open_db("db-0", &server.url()).await.unwrap();
    let conflicts = checks::concurrent_increments(db.clone(), 16, 25).await;
    println!("version mismatches retried: {conflicts}");
    checks::concurrent_creators(db, 16).await;
    use sqlx::{Connection as _, Row as _};
    let mut conn = sqlx::MySqlConnection::connect(&server.url()).await.unwrap();
    let row = sqlx::query("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'").fetch_one(&mut conn).await.unwrap();
    println!("InnoDB deadlocks (each run again by the adapter): {}", row.get::<String, _>(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_survive_a_server_crash_and_restart() {
    let mut server = common::mariadb();
    let opts = DbOptions { connect_timeout: Duration::from_millis(500), ..DbOptions::default() };
    let db = MariaDb::open("db-0", &server.url(), opts).await.unwrap();
    checks::write_durable(&db, 20).await;
    let u = checks::t("users");
    db.transact(vec![checks::put(&u, "a", "1", Expect::Absent, 1)]).await.unwrap();

    server.stop(); // SIGKILL
    assert_eq!(db.get(&u, "a").await, Err(DbError::Unavailable));
    assert_eq!(
        db.transact(vec![checks::put(&u, "a", "2", Expect::Version(1), 1)]).await,
        Err(DbError::Unavailable),
        "nothing sent"
    );
    common::blocking(|| server.restart()).expect("restart");

    checks::check_durable(&db, 20).await;
    assert_eq!(
        db.transact(vec![checks::put(&u, "a", "2", Expect::Version(1), 1)]).await.map(|r| r.len()),
        Ok(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_times_out_and_says_whether_a_write_may_have_applied() {
    let server = common::mariadb();
    let opts = DbOptions { call_timeout: Duration::from_millis(800), ..DbOptions::default() };
    let db = open_db_with("db-0", &server.url(), opts).await.unwrap();
    let u = checks::t("users");
    db.transact(vec![checks::put(&u, "a", "1", Expect::Absent, 1)]).await.unwrap();
    db.transact(vec![checks::put(&u, "b", "1", Expect::Absent, 1)]).await.unwrap();
    // Several pooled connections, so that every call below finds one already open.
    let warm = futures::future::join_all((0..6).map(|_| db.get(&u, "a"))).await;
    assert!(warm.iter().all(|r| r.is_ok()));

    server.pause(); // SIGSTOP: connections stay open, nothing is answered
    assert_eq!(db.get(&u, "a").await, Err(DbError::Timeout { maybe_applied: false }));
    // One versioned put is one self-committing statement: once sent, it may have applied.
    assert_eq!(
        db.transact(vec![checks::put(&u, "a", "2", Expect::Version(1), 1)]).await,
        Err(DbError::Timeout { maybe_applied: true })
    );
    // A general transaction times out before its COMMIT is sent: nothing applied.
    assert_eq!(
        db.transact(vec![checks::put(&u, "b", "2", Expect::Any, 1)]).await,
        Err(DbError::Timeout { maybe_applied: false })
    );
    server.resume();

    let a = common::eventually(Duration::from_secs(10), "the server answers again", || async {
        db.get(&u, "a").await.ok()
    })
    .await;
    // The timed-out put did apply (the server took it when it resumed) or did not: both are
    // allowed by maybe_applied; the general transaction did not.
    assert!(matches!(a.as_ref().map(|r| r.version), Some(1 | 2)), "{a:?}");
    assert_eq!(db.get(&u, "b").await.unwrap().map(|r| r.version), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_over_a_placeholder_is_answered_by_one_upsert_on_the_fast_path() {
    let server = common::mariadb();
    let db = MariaDb::open("db-0", &server.url(), DbOptions::default()).await.unwrap();
    let counts = || {
        let c = db.fast_path_counts();
        (c.hits, c.misses)
    };
    checks::creates_over_placeholders_take_the_fast_path(&db, counts).await;
}
