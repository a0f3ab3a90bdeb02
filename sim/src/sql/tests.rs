//! Simulated SQL nodes and `SimDb` under madsim: every call over the network, durability
//! across kill and restart, a transaction in flight at a kill, partitions and pauses, fences
//! against a deposed writer, and independent instances.
//!
//! Nodes of every test:
//!
//! | node | address | what |
//! |---|---|---|
//! | `sql-0`, `sql-1`, ... | 10.0.3.(i+1):3306 | simulated SQL instances ([`start_sql`]) |
//! | `client` | 10.0.1.1 | the test body, with a `SimDb` per instance |

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::env::{
    Clock, Db, DbDirectory, DbError, Expect, Net, Row, Spawn, TableName, WriteOp, WriteResult,
    MAX_PEER_FRAME_BYTES,
};
use futures::channel::oneshot;
use futures::{SinkExt, StreamExt};
use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use madsim::task::NodeId;

use super::{sql_addr, sql_directory, start_sql, SimDb, SqlNode, SqlOptions, DB_CALL_TIMEOUT};
use crate::adapters::{ClockControl, SimClock, SimNet, SimSpawn};

const CLIENT_IP: [u8; 4] = [10, 0, 1, 1];

/// What a test body gets: a client node with a `SimDb` per instance, and the controls.
struct Ctx {
    handle: Handle,
    client: NodeId,
    sql: Vec<SqlNode>,
    dbs: Vec<Arc<SimDb>>,
    clock: Arc<dyn Clock>,
    net: Arc<dyn Net>,
}

impl Ctx {
    async fn sleep_ms(&self, ms: u64) {
        self.clock.sleep(Duration::from_millis(ms)).await;
    }

    /// Another client of instance `i` on the same node (its own connection).
    fn second_client(&self, i: usize) -> SimDb {
        SimDb::new(
            format!("sql-{i}"),
            self.net.clone(),
            self.clock.clone(),
            Arc::new(SimSpawn),
            sql_addr(i),
            DB_CALL_TIMEOUT,
        )
    }

    /// Runs `call` on `db` as a separate task; its answer comes through the receiver.
    fn spawn_transact(
        &self,
        db: Arc<SimDb>,
        ops: Vec<WriteOp>,
    ) -> oneshot::Receiver<Result<Vec<WriteResult>, DbError>> {
        let (tx, rx) = oneshot::channel();
        let _task = SimSpawn.spawn(
            "transact",
            Box::pin(async move {
                let _ = tx.send(db.transact(ops).await);
            }),
        );
        rx
    }
}

/// Runs `body` on a client node of a fresh simulation with `instances` SQL nodes.
fn run<F, Fut>(seed: u64, instances: usize, opts: SqlOptions, body: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    crate::testkit::on_fresh_thread(seed, move || {
        let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(async move {
            let handle = Handle::current();
            let clocks = ClockControl::new();
            let sql: Vec<SqlNode> = (0..instances).map(|i| start_sql(&handle, &clocks, i, opts)).collect();
            let ip = IpAddr::from(CLIENT_IP);
            let client = handle.create_node().name("client").ip(ip).build();
            let client_id = client.id();
            let ctx_handle = handle.clone();
            client
                .spawn(async move {
                    let clock: Arc<dyn Clock> = Arc::new(SimClock::new("client", clocks));
                    let net: Arc<dyn Net> = Arc::new(SimNet::new(ip));
                    let dbs = (0..instances)
                        .map(|i| {
                            let db = SimDb::new(
                                format!("sql-{i}"),
                                net.clone(),
                                clock.clone(),
                                Arc::new(SimSpawn),
                                sql_addr(i),
                                DB_CALL_TIMEOUT,
                            );
                            Arc::new(db)
                        })
                        .collect();
                    let ctx = Ctx { handle: ctx_handle, client: client_id, sql, dbs, clock, net };
                    // Let the servers bind first.
                    ctx.sleep_ms(50).await;
                    body(ctx).await;
                })
                .await
                .expect("test body panicked");
        });
    });
}

fn users() -> TableName {
    TableName::new("users").unwrap()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(key: &str, value: &str, expect: Expect, fence: u64) -> WriteOp {
    WriteOp::put(&users(), key, b(value), expect, fence)
}

fn value_of(row: Option<Row>) -> Option<Bytes> {
    row.map(|r| r.value)
}

#[test]
fn sim_every_call_goes_over_the_network() {
    run(1, 1, SqlOptions::default(), |ctx| async move {
        let db = &ctx.dbs[0];
        assert_eq!(db.name(), "sql-0");
        assert_eq!(db.get(&users(), "u1").await, Ok(None));
        let created = db
            .transact(vec![
                put("u1", "ann", Expect::Absent, 1).with_index("by_name", Some("ann".into())),
                put("u2", "bob", Expect::Absent, 1).with_index("by_name", Some("bob".into())),
            ])
            .await;
        assert_eq!(created, Ok(vec![WriteResult::Put { version: 1 }, WriteResult::Put { version: 1 }]));
        let row = db.get(&users(), "u1").await.unwrap().unwrap();
        assert_eq!((row.value, row.version, row.fence), (b("ann"), 1, 1));
        let many = db.get_many(&users(), &["u2".into(), "nobody".into(), "u1".into()]).await.unwrap();
        assert_eq!(
            many.into_iter().map(value_of).collect::<Vec<_>>(),
            vec![Some(b("bob")), None, Some(b("ann"))]
        );
        let scan = db.scan_prefix(&users(), "u", None, 10).await.unwrap();
        assert_eq!(scan.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["u1", "u2"]);
        let page = db.scan_prefix(&users(), "u", Some("u1"), 10).await.unwrap();
        assert_eq!(page.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["u2"]);
        assert_eq!(value_of(db.get_by_index(&users(), "by_name", "bob").await.unwrap()), Some(b("bob")));
        assert_eq!(db.get_by_index(&users(), "by_name", "carol").await, Ok(None));
        // Typed refusals come back as they are.
        assert_eq!(
            db.transact(vec![put("u3", "x", Expect::Absent, 1).with_index("by_name", Some("ann".into()))])
                .await,
            Err(DbError::UniqueViolation { op_index: 0, index: "by_name".into() })
        );
        assert_eq!(
            db.transact(vec![put("u1", "x", Expect::Any, 1), put("u2", "x", Expect::Version(5), 1)]).await,
            Err(DbError::VersionMismatch { op_index: 1, actual: 1 })
        );
        assert_eq!(
            db.transact(vec![put("u9", "x", Expect::Present, 1)]).await,
            Err(DbError::NotFound { op_index: 0 })
        );
        assert_eq!(
            value_of(db.get(&users(), "u1").await.unwrap()),
            Some(b("ann")),
            "refused ops changed nothing"
        );
        // Bad arguments never leave the client.
        let commits = ctx.sql[0].store.with(|i| i.commits());
        assert!(matches!(db.transact(vec![]).await, Err(DbError::InvalidArgument(_))));
        assert!(matches!(db.get(&users(), "").await, Err(DbError::InvalidArgument(_))));
        assert!(matches!(db.scan_prefix(&users(), "", None, 0).await, Err(DbError::InvalidArgument(_))));
        assert_eq!(ctx.sql[0].store.with(|i| i.commits()), commits);
        ctx.sql[0].store.with(|i| i.assert_consistent());
    });
}

#[test]
fn sim_a_shard_copy_goes_over_the_network_with_guards_exports_and_restores() {
    run(1, 2, SqlOptions::default(), |ctx| async move {
        let (from, to) = (&ctx.dbs[0], &ctx.dbs[1]);
        let shards = TableName::new("sandtable_shards").unwrap();
        from.transact(vec![WriteOp::put(&shards, "shard/7", b("sql-0"), Expect::Any, 1)]).await.unwrap();
        let guarded =
            from.transact(vec![WriteOp::guard(&shards, "shard/7", 1), put("u1", "ann", Expect::Absent, 1)]);
        assert_eq!(
            guarded.await,
            Ok(vec![WriteResult::Guard { version: 1 }, WriteResult::Put { version: 1 }])
        );
        from.transact(vec![WriteOp::delete(&users(), "u1", Expect::Present, 2)]).await.unwrap();
        from.transact(vec![WriteOp::delete(&shards, "shard/7", Expect::Present, 2)]).await.unwrap();
        assert_eq!(
            from.transact(vec![WriteOp::guard(&shards, "shard/7", 1), put("u2", "bob", Expect::Any, 1)])
                .await,
            Err(DbError::Fenced { op_index: 0, row_fence: 2 })
        );
        let states = from.export_prefix(&users(), "u", None, 10).await.unwrap();
        assert_eq!(states.len(), 1, "the placeholder of u1 is exported");
        let ops: Vec<_> = states.iter().cloned().map(|s| WriteOp::restore(&users(), s)).collect();
        assert_eq!(to.transact(ops.clone()).await, Ok(vec![WriteResult::Restore { applied: true }]));
        assert_eq!(to.transact(ops).await, Ok(vec![WriteResult::Restore { applied: false }]));
        assert_eq!(to.export_prefix(&users(), "u", None, 10).await, Ok(states));
        assert!(matches!(to.export_prefix(&users(), "", None, 0).await, Err(DbError::InvalidArgument(_))));
    });
}

fn restart_case(seed: u64) {
    run(seed, 1, SqlOptions::default(), |ctx| async move {
        let db = &ctx.dbs[0];
        db.transact(vec![put("u1", "kept", Expect::Absent, 3).with_index("by_name", Some("ann".into()))])
            .await
            .unwrap();
        ctx.handle.kill(ctx.sql[0].id);
        ctx.sleep_ms(100).await;
        // Down: nothing can be sent.
        assert_eq!(db.get(&users(), "u1").await, Err(DbError::Unavailable));
        ctx.handle.restart(ctx.sql[0].id);
        ctx.sleep_ms(100).await;
        // The client reconnects by itself and finds every committed row, fence and index.
        let row = db.get(&users(), "u1").await.unwrap().unwrap();
        assert_eq!((row.value, row.version, row.fence), (b("kept"), 1, 3));
        assert_eq!(value_of(db.get_by_index(&users(), "by_name", "ann").await.unwrap()), Some(b("kept")));
        assert_eq!(
            db.transact(vec![put("u1", "stale", Expect::Any, 2)]).await,
            Err(DbError::Fenced { op_index: 0, row_fence: 3 })
        );
        assert_eq!(
            db.transact(vec![put("u1", "after", Expect::Version(1), 3)]).await,
            Ok(vec![WriteResult::Put { version: 2 }])
        );
    });
}

#[test]
fn sim_a_committed_write_survives_a_kill_and_restart() {
    for seed in [10, 110, 210] {
        restart_case(seed);
    }
}

/// Two rows written by one transaction: both old or both new, never one of each.
async fn both_rows(db: &SimDb) -> &'static str {
    let rows = db.get_many(&users(), &["a".into(), "b".into()]).await.expect("readable after restart");
    match (value_of(rows[0].clone()), value_of(rows[1].clone())) {
        (Some(a), Some(b_)) if a == b("old") && b_ == b("old") => "old",
        (Some(a), Some(b_)) if a == b("new") && b_ == b("new") => "new",
        other => panic!("a transaction was applied in part: {other:?}"),
    }
}

const SLOW_COMMIT: SqlOptions =
    SqlOptions { commit_latency: Duration::from_millis(200), no_fence_check: false };

fn two_row_update() -> Vec<WriteOp> {
    vec![put("a", "new", Expect::Version(1), 1), put("b", "new", Expect::Version(1), 1)]
}

#[test]
fn sim_a_transact_killed_before_its_commit_point_is_lost_wholly_and_reported_maybe_applied() {
    for seed in [20, 120, 220] {
        run(seed, 1, SLOW_COMMIT, |ctx| async move {
            let db = ctx.dbs[0].clone();
            db.transact(vec![put("a", "old", Expect::Absent, 1), put("b", "old", Expect::Absent, 1)])
                .await
                .unwrap();
            let answer = ctx.spawn_transact(db.clone(), two_row_update());
            ctx.sleep_ms(100).await;
            ctx.handle.kill(ctx.sql[0].id);
            assert_eq!(answer.await.unwrap(), Err(DbError::ConnectionLoss { maybe_applied: true }));
            ctx.handle.restart(ctx.sql[0].id);
            ctx.sleep_ms(100).await;
            assert_eq!(both_rows(&db).await, "old");
        });
    }
}

#[test]
fn sim_a_transact_killed_after_its_commit_point_is_kept_wholly_and_reported_maybe_applied() {
    for seed in [21, 121, 221] {
        run(seed, 1, SLOW_COMMIT, |ctx| async move {
            let db = ctx.dbs[0].clone();
            db.transact(vec![put("a", "old", Expect::Absent, 1), put("b", "old", Expect::Absent, 1)])
                .await
                .unwrap();
            // The answer cannot come back: the request arrives, commits, and its answer stalls.
            NetSim::current().clog_link(ctx.sql[0].id, ctx.client);
            let answer = ctx.spawn_transact(db.clone(), two_row_update());
            ctx.sleep_ms(400).await;
            ctx.handle.kill(ctx.sql[0].id);
            // The stalled link may hide the kill until the call times out: either way the
            // client cannot know, and says so.
            let e = answer.await.unwrap().unwrap_err();
            assert!(
                matches!(
                    e,
                    DbError::ConnectionLoss { maybe_applied: true }
                        | DbError::Timeout { maybe_applied: true }
                ),
                "{e:?}"
            );
            NetSim::current().unclog_link(ctx.sql[0].id, ctx.client);
            ctx.handle.restart(ctx.sql[0].id);
            ctx.sleep_ms(100).await;
            assert_eq!(both_rows(&db).await, "new");
        });
    }
}

#[test]
fn sim_a_transact_in_flight_at_a_kill_at_any_moment_is_all_or_nothing() {
    let mut seen = std::collections::BTreeSet::new();
    for (seed, kill_after_ms) in
        [(30, 0), (31, 50), (32, 150), (33, 199), (34, 201), (35, 205), (36, 250), (37, 400)]
    {
        let (tx, rx) = std::sync::mpsc::channel();
        run(seed, 1, SLOW_COMMIT, move |ctx| async move {
            let db = ctx.dbs[0].clone();
            db.transact(vec![put("a", "old", Expect::Absent, 1), put("b", "old", Expect::Absent, 1)])
                .await
                .unwrap();
            let answer = ctx.spawn_transact(db.clone(), two_row_update());
            ctx.sleep_ms(kill_after_ms).await;
            ctx.handle.kill(ctx.sql[0].id);
            let answer = answer.await.unwrap();
            ctx.handle.restart(ctx.sql[0].id);
            ctx.sleep_ms(100).await;
            let state = both_rows(&db).await;
            match &answer {
                Ok(_) => assert_eq!(state, "new", "an acknowledged transact was lost"),
                // An error that rules the commit out must be right about it.
                Err(e) if !e.maybe_applied() => assert_eq!(state, "old", "{e:?} but it applied"),
                Err(_) => {}
            }
            tx.send((answer.is_ok(), state)).unwrap();
        });
        seen.insert(rx.recv().unwrap());
    }
    // The kill moments cover every outcome: lost, kept but unacknowledged, acknowledged.
    assert!(seen.contains(&(false, "old")), "{seen:?}");
    assert!(seen.contains(&(true, "new")), "{seen:?}");
}

fn partition_case(seed: u64) {
    run(seed, 1, SqlOptions::default(), |ctx| async move {
        let db = &ctx.dbs[0];
        db.transact(vec![put("k", "1", Expect::Absent, 1)]).await.unwrap();
        NetSim::current().clog_node(ctx.sql[0].id);
        let t0 = ctx.clock.now();
        let r = db.transact(vec![put("k", "2", Expect::Version(1), 1)]).await;
        let waited = ctx.clock.now().saturating_since(t0);
        assert_eq!(r, Err(DbError::Timeout { maybe_applied: true }));
        assert!(
            waited >= DB_CALL_TIMEOUT && waited < DB_CALL_TIMEOUT + Duration::from_millis(50),
            "{waited:?}"
        );
        // The timed-out connection was dropped; while the partition lasts, connecting fails.
        assert_eq!(db.get(&users(), "k").await, Err(DbError::Unavailable));
        NetSim::current().unclog_node(ctx.sql[0].id);
        ctx.sleep_ms(100).await;
        let row = db.get(&users(), "k").await.expect("recovered after the heal").unwrap();
        // The clog held the request back; after the heal it may still arrive and commit
        // (that is what `maybe_applied` warns of), wholly or not at all.
        assert!(matches!((&row.value[..], row.version), (b"1", 1) | (b"2", 2)), "{row:?}");
        assert_eq!(
            db.transact(vec![put("k", "3", Expect::Version(row.version), 1)]).await,
            Ok(vec![WriteResult::Put { version: row.version + 1 }])
        );
    });
}

#[test]
fn sim_a_partition_times_out_then_heals() {
    for seed in [40, 140, 240] {
        partition_case(seed);
    }
}

#[test]
fn sim_a_paused_node_times_out_and_answers_after_resuming() {
    run(41, 1, SqlOptions::default(), |ctx| async move {
        let db = &ctx.dbs[0];
        db.transact(vec![put("k", "1", Expect::Absent, 1)]).await.unwrap();
        ctx.handle.pause(ctx.sql[0].id);
        assert_eq!(
            db.transact(vec![put("k", "2", Expect::Version(1), 1)]).await,
            Err(DbError::Timeout { maybe_applied: true })
        );
        ctx.handle.resume(ctx.sql[0].id);
        ctx.sleep_ms(100).await;
        // The paused node still held the request: it may have applied it after resuming.
        let row = db.get(&users(), "k").await.expect("answers after resuming").unwrap();
        assert!(row.value == b("1") || row.value == b("2"), "{row:?}");
        assert_eq!(db.transact(vec![put("k", "3", Expect::Any, 1)]).await.map(|r| r.len()), Ok(1));
    });
}

#[test]
fn sim_fences_refuse_a_deposed_writer_over_the_network() {
    run(50, 1, SqlOptions::default(), |ctx| async move {
        let old_owner = ctx.dbs[0].clone();
        let new_owner = ctx.second_client(0);
        old_owner.transact(vec![put("u1", "v1", Expect::Absent, 1)]).await.unwrap();
        // The new owner takes over: raises the fence of the row and of one not created yet.
        let taken = new_owner
            .transact(vec![WriteOp::raise_fence(&users(), "u1", 2), WriteOp::raise_fence(&users(), "u2", 2)])
            .await
            .unwrap();
        let row = Row { key: "u1".into(), value: b("v1"), version: 1, fence: 2 };
        assert_eq!(
            taken,
            vec![
                WriteResult::RaiseFence { row: Some(row), fence: 2 },
                WriteResult::RaiseFence { row: None, fence: 2 }
            ]
        );
        // The deposed owner, whatever it believes, is refused at the database.
        assert_eq!(
            old_owner.transact(vec![put("u1", "v2 by the old owner", Expect::Version(1), 1)]).await,
            Err(DbError::Fenced { op_index: 0, row_fence: 2 })
        );
        assert_eq!(
            old_owner.transact(vec![put("u2", "created by the old owner", Expect::Absent, 1)]).await,
            Err(DbError::Fenced { op_index: 0, row_fence: 2 })
        );
        assert_eq!(old_owner.get(&users(), "u2").await, Ok(None), "a placeholder reads as absent");
        assert_eq!(
            new_owner
                .transact(vec![put("u1", "v2", Expect::Version(1), 2), put("u2", "v1", Expect::Absent, 2)])
                .await,
            Ok(vec![WriteResult::Put { version: 2 }, WriteResult::Put { version: 1 }])
        );
    });
}

#[test]
fn sim_two_instances_are_independent() {
    run(60, 2, SqlOptions::default(), |ctx| async move {
        let (db0, db1) = (&ctx.dbs[0], &ctx.dbs[1]);
        db0.transact(vec![put("k", "on 0", Expect::Absent, 5)]).await.unwrap();
        db1.transact(vec![put("k", "on 1", Expect::Absent, 1)]).await.unwrap();
        // A fence on one instance says nothing about the other.
        assert_eq!(db1.transact(vec![put("k", "on 1 again", Expect::Any, 1)]).await.map(|r| r.len()), Ok(1));
        assert_eq!(value_of(db0.get(&users(), "k").await.unwrap()), Some(b("on 0")));
        // One instance down leaves the other serving.
        ctx.handle.kill(ctx.sql[1].id);
        assert!(db1.get(&users(), "k").await.unwrap_err().is_transient());
        assert_eq!(
            db0.transact(vec![put("k", "still", Expect::Version(1), 5)]).await.map(|r| r.len()),
            Ok(1)
        );
        ctx.handle.restart(ctx.sql[1].id);
        ctx.sleep_ms(100).await;
        assert_eq!(value_of(db1.get(&users(), "k").await.unwrap()), Some(b("on 1 again")));
        assert_eq!(ctx.sql[0].store.with(|i| i.commits()), 2);
        assert_eq!(ctx.sql[1].store.with(|i| i.commits()), 2);
    });
}

#[test]
fn sim_the_directory_reaches_every_instance_by_name() {
    run(70, 3, SqlOptions::default(), |ctx| async move {
        let dir = sql_directory(ctx.net.clone(), ctx.clock.clone(), Arc::new(SimSpawn), 3);
        assert_eq!(dir.instances(), ["sql-0", "sql-1", "sql-2"]);
        assert!(dir.instance("sql-3").is_none());
        for name in dir.instances() {
            let db = dir.instance(&name).unwrap();
            assert_eq!(db.name(), name);
            db.transact(vec![put("who", &name, Expect::Absent, 0)]).await.unwrap();
        }
        for (i, node) in ctx.sql.iter().enumerate() {
            let row = node.store.with(|s| s.get(&users(), "who")).unwrap();
            assert_eq!(row.value, b(&format!("sql-{i}")));
        }
    });
}

#[test]
fn sim_a_malformed_frame_drops_only_that_connection() {
    run(80, 1, SqlOptions::default(), |ctx| async move {
        let db = &ctx.dbs[0];
        db.transact(vec![put("k", "v", Expect::Absent, 0)]).await.unwrap();
        let mut raw = ctx.net.connect(sql_addr(0), MAX_PEER_FRAME_BYTES).await.unwrap();
        raw.sink.send(Bytes::from_static(b"\xff\xff\xff garbage")).await.unwrap();
        let end = engine::env::timeout(&*ctx.clock, Duration::from_secs(1), raw.stream.next()).await;
        assert!(matches!(end, Ok(None) | Ok(Some(Err(_)))), "the node closed the bad connection");
        assert_eq!(value_of(db.get(&users(), "k").await.unwrap()), Some(b("v")), "the node is still fine");
    });
}
