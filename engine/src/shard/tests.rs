//! The router and the mover on in-memory ZooKeeper and SQL instances ([`Harness`], [`FakeDb`]).

use std::sync::Arc;

use bytes::Bytes;

use super::key::user_key;
use super::map::{guard_key, guard_table, map_path, MovePhase};
use super::router::FREEZE_WAIT_MAX;
use super::*;
use crate::env::{DbError, DbInstances, Env, Expect, SessionOptions, TableName, WriteOp, WriteResult};
use crate::testing::{FakeDb, Harness};

const APP: &str = "app";
/// 4 shards over 2 instances: shards 0 and 2 on db-0, 1 and 3 on db-1.
const SHARDS: u32 = 4;

struct World {
    h: Harness,
    dbs: Vec<FakeDb>,
}

impl World {
    fn new() -> World {
        World { h: Harness::new(7), dbs: vec![FakeDb::new("db-0"), FakeDb::new("db-1")] }
    }

    fn env(&self, node: &str) -> Env {
        let mut env = self.h.env(node);
        let dir = self.dbs.iter().fold(DbInstances::empty(), |d, db| d.with(Arc::new(db.clone())).unwrap());
        env.db = Arc::new(dir);
        env
    }

    fn router(&self, node: &str) -> ShardRouter {
        let cfg = ShardConfig::round_robin(&["db-0".to_string(), "db-1".to_string()], SHARDS);
        let env = self.env(node);
        self.h.block_on(
            async move { ShardRouter::start(env, APP, cfg, SessionOptions::default()).await.unwrap() },
        )
    }

    fn stored_map(&self) -> ShardMap {
        let (bytes, _) = self.h.zk.get(&map_path(APP)).expect("map stored");
        serde_json::from_slice(&bytes).unwrap()
    }
}

fn items() -> TableName {
    TableName::new("items").unwrap()
}

fn put(r: &ShardRouter, user: &str, suffix: &str, value: &str, expect: Expect) -> WriteOp {
    WriteOp::put(&items(), r.user_key(user, suffix), Bytes::copy_from_slice(value.as_bytes()), expect, 0)
}

fn write(w: &World, r: &ShardRouter, user: &str, value: &str) -> Result<Vec<WriteResult>, ShardError> {
    let (r2, user2) = (r.clone(), user.to_string());
    let op = put(r, user, "gold", value, Expect::Any);
    w.h.block_on(async move { r2.transact(&user2, vec![op]).await })
}

fn read(w: &World, r: &ShardRouter, user: &str) -> Option<(String, u64)> {
    let (r2, user2) = (r.clone(), user.to_string());
    let key = r.user_key(user, "gold");
    let row = w.h.block_on(async move { r2.get(&user2, &items(), &key).await }).unwrap();
    row.map(|row| (String::from_utf8(row.value.to_vec()).unwrap(), row.version))
}

#[test]
fn the_first_router_stores_the_configured_map_and_guard_rows() {
    let w = World::new();
    let r = w.router("game-1");
    assert_eq!(
        w.stored_map(),
        ShardMap::initial(vec!["db-0".into(), "db-1".into(), "db-0".into(), "db-1".into()])
    );
    assert_eq!(r.map().version, 1);
    for s in 0..SHARDS {
        let on = &w.dbs[(s % 2) as usize];
        let off = &w.dbs[1 - (s % 2) as usize];
        let guard = on.with(|i| i.get(&guard_table(), &guard_key(ShardId(s)))).expect("guard on the owner");
        assert_eq!(guard.fence, 1);
        assert_eq!(off.with(|i| i.get(&guard_table(), &guard_key(ShardId(s)))), None);
    }
    // A second server finds the map and does not rewrite it.
    let _r2 = w.router("game-2");
    assert_eq!(w.stored_map().version, 1);
}

#[test]
fn writes_go_to_the_instance_of_the_users_shard_and_report_the_callers_op_indexes() {
    let w = World::new();
    let r = w.router("game-1");
    assert_eq!(r.shard_of("5"), ShardId(1));
    assert_eq!(write(&w, &r, "5", "10").unwrap(), vec![WriteResult::Put { version: 1 }]);
    assert_eq!(
        w.dbs[1].with(|i| i.get(&items(), &user_key(ShardId(1), "5", "gold"))).map(|r| r.version),
        Some(1)
    );
    assert_eq!(w.dbs[0].with(|i| i.rows(&items())).len(), 0);
    assert_eq!(read(&w, &r, "5"), Some(("10".into(), 1)));
    let (r2, ops) =
        (r.clone(), vec![put(&r, "5", "a", "x", Expect::Any), put(&r, "5", "gold", "y", Expect::Version(9))]);
    let refused = w.h.block_on(async move { r2.transact("5", ops).await });
    assert_eq!(
        refused,
        Err(ShardError::Db {
            instance: "db-1".into(),
            error: DbError::VersionMismatch { op_index: 1, actual: 1 }
        })
    );
}

#[test]
fn keys_of_another_shard_index_updates_and_the_guard_table_are_refused_before_sending() {
    let w = World::new();
    let r = w.router("game-1");
    let commits = w.dbs[1].with(|i| i.commits());
    let other_shard = WriteOp::put(&items(), r.user_key("6", "gold"), Bytes::new(), Expect::Any, 0);
    let indexed = put(&r, "5", "gold", "1", Expect::Any).with_index("by_name", Some("ann".into()));
    let guard = WriteOp::put(&guard_table(), r.user_key("5", "x"), Bytes::new(), Expect::Any, 0);
    for op in [other_shard, indexed, guard] {
        let r2 = r.clone();
        let got = w.h.block_on(async move { r2.transact("5", vec![op]).await });
        assert!(matches!(got, Err(ShardError::InvalidArgument(_))), "{got:?}");
    }
    assert_eq!(w.dbs[1].with(|i| i.commits()), commits);
}

#[test]
fn a_moved_shard_keeps_every_row_version_and_fence_and_a_stale_server_is_refused_then_rerouted() {
    let w = World::new();
    let mover = w.router("admin");
    let stale = w.router("game-2");
    stale.stop(); // its cache keeps map version 1
    for user in ["1", "5", "9"] {
        write(&w, &mover, user, "a").unwrap();
        write(&w, &mover, user, "b").unwrap();
    }
    // A placeholder with an owner's fence moves too.
    let fence_key = mover.user_key("1", "sword");
    let m2 = mover.clone();
    w.h.block_on(async move { m2.transact("1", vec![WriteOp::raise_fence(&items(), fence_key, 42)]).await })
        .unwrap();

    let m3 = mover.clone();
    let report =
        w.h.block_on(async move { move_shard(&m3, ShardId(1), "db-0", MoveOptions::default()).await })
            .unwrap();
    assert_eq!((report.version, report.rolled_back), (2, false));
    assert_eq!(
        report.rows_copied, 3,
        "three rows; the fence-only placeholder raises a fence, installs no version"
    );
    let map = w.stored_map();
    assert_eq!((map.version, map.shards[1].as_str(), map.moving), (2, "db-0", None));
    assert_eq!(
        w.dbs[1].with(|i| i.get(&guard_table(), &guard_key(ShardId(1)))),
        None,
        "the source gave it up"
    );
    assert_eq!(w.dbs[0].with(|i| i.get(&guard_table(), &guard_key(ShardId(1)))).map(|g| g.fence), Some(2));
    // Versions continue at the destination: no ABA for version-conditional writers.
    assert_eq!(read(&w, &mover, "5"), Some(("b".into(), 2)));
    let sword = mover.user_key("1", "sword");
    assert_eq!(
        w.dbs[0].with(|i| i.record(&items(), &sword).map(|r| r.fence)),
        Some(42),
        "the owner's fence came along"
    );

    assert_eq!(stale.map().version, 1);
    assert_eq!(write(&w, &stale, "5", "c").unwrap(), vec![WriteResult::Put { version: 3 }]);
    assert_eq!(stale.map().version, 2, "refused by db-1, it re-read the map");
    assert_eq!(read(&w, &mover, "5"), Some(("c".into(), 3)));
    let old_copy = w.dbs[1].with(|i| i.get(&items(), &user_key(ShardId(1), "5", "gold"))).unwrap();
    assert_eq!(old_copy.version, 2, "nothing reached the old instance");
}

#[test]
fn a_move_that_dies_while_copying_resumes_or_rolls_back() {
    let w = World::new();
    let r = w.router("admin");
    write(&w, &r, "5", "a").unwrap();
    w.dbs[0].set_reachable(false);
    let r2 = r.clone();
    let failed =
        w.h.block_on(async move { move_shard(&r2, ShardId(1), "db-0", MoveOptions::default()).await });
    assert!(
        matches!(failed, Err(ShardError::Db { ref instance, error: DbError::Unavailable }) if instance == "db-0")
    );
    assert_eq!(w.stored_map().moving.map(|m| m.phase), Some(MovePhase::Copying));
    // Writes go on at the source while a move is recorded but not frozen.
    write(&w, &r, "5", "b").unwrap();
    let r3 = r.clone();
    let other =
        w.h.block_on(async move { move_shard(&r3, ShardId(3), "db-0", MoveOptions::default()).await });
    assert!(matches!(other, Err(ShardError::MoveInProgress(_))));

    w.dbs[0].set_reachable(true);
    let r4 = r.clone();
    let report =
        w.h.block_on(async move { resume_move(&r4, MoveOptions::default()).await }).unwrap().unwrap();
    assert_eq!(report.version, 2);
    assert_eq!(read(&w, &r, "5"), Some(("b".into(), 2)));

    // Another move, rolled back while copying: nothing changes but the record.
    w.dbs[1].set_reachable(false);
    let r5 = r.clone();
    let failed =
        w.h.block_on(async move { move_shard(&r5, ShardId(1), "db-1", MoveOptions::default()).await });
    assert!(failed.is_err());
    w.dbs[1].set_reachable(true);
    let r6 = r.clone();
    let back = w.h.block_on(async move { rollback_move(&r6).await }).unwrap().unwrap();
    assert!(back.rolled_back);
    let map = w.stored_map();
    assert_eq!((map.version, map.shards[1].as_str(), map.moving), (2, "db-0", None));
    assert_eq!(write(&w, &r, "5", "c").unwrap(), vec![WriteResult::Put { version: 3 }]);
}

#[test]
fn a_frozen_shard_refuses_writes_until_the_move_resumes_or_rolls_back_and_other_shards_never_wait() {
    let w = World::new();
    let r = w.router("admin");
    write(&w, &r, "5", "a").unwrap();
    // A mover that died right after freezing shard 1: the map says frozen, db-1's guard is
    // gone, db-0 has no guard yet.
    let mut frozen = w.stored_map();
    frozen.moving = Some(MoveRecord {
        shard: ShardId(1),
        from: "db-1".into(),
        to: "db-0".into(),
        fence: 2,
        phase: MovePhase::Frozen,
    });
    let coord = r.coord();
    let bytes = Bytes::from(frozen.encode());
    w.h.block_on(async move { coord.set_data(&map_path(APP), bytes, None).await }).unwrap();
    w.dbs[1]
        .with(|i| i.transact(&[WriteOp::delete(&guard_table(), guard_key(ShardId(1)), Expect::Any, 2)]))
        .unwrap();
    let dst = w.dbs[0].clone();
    dst.set_reachable(false);
    let r0 = r.clone();
    assert!(
        w.h.block_on(async move { resume_move(&r0, MoveOptions::default()).await }).is_err(),
        "db-0 is down"
    );
    assert_eq!(w.stored_map().moving.map(|m| m.phase), Some(MovePhase::Frozen));
    dst.set_reachable(true);

    let t0 = w.h.now();
    assert_eq!(write(&w, &r, "5", "b"), Err(ShardError::Frozen { shard: ShardId(1) }));
    assert_eq!(w.h.now().saturating_since(t0), FREEZE_WAIT_MAX, "it waited for the switch, then gave up");
    let t1 = w.h.now();
    assert!(write(&w, &r, "4", "x").is_ok(), "shard 0 is not frozen");
    assert_eq!(w.h.now(), t1, "and did not wait");

    dst.set_reachable(true);
    let r3 = r.clone();
    let back = w.h.block_on(async move { rollback_move(&r3).await }).unwrap().unwrap();
    assert_eq!(back.version, 2);
    let map = w.stored_map();
    assert_eq!((map.version, map.shards[1].as_str()), (2, "db-1"));
    assert_eq!(write(&w, &r, "5", "b").unwrap(), vec![WriteResult::Put { version: 2 }]);
    assert_eq!(w.dbs[0].with(|i| i.get(&guard_table(), &guard_key(ShardId(1)))), None);
}

#[test]
fn the_planted_stale_map_write_bug_lets_the_old_instance_accept_writes_after_the_switch() {
    let w = World::new();
    let mover = w.router("admin");
    let stale = w.router("game-2");
    stale.stop();
    write(&w, &mover, "5", "a").unwrap();
    let m2 = mover.clone();
    let opts = MoveOptions { bug_keep_source_guard: true, ..MoveOptions::default() };
    w.h.block_on(async move { move_shard(&m2, ShardId(1), "db-0", opts).await }).unwrap();
    write(&w, &stale, "5", "lost").unwrap();
    assert_eq!(stale.map().version, 1, "nothing refused it");
    assert_eq!(
        read(&w, &mover, "5"),
        Some(("a".into(), 1)),
        "the acknowledged write is not where readers look"
    );
}
