//! An object store's rows without an object store: two in-memory SQL instances and a shard
//! router over them (`engine::testing`), for `read_committed`, the public reader of the
//! object store's crate-private row decoders (`StoredObject::decode`, `Decision::decode`).

use std::sync::Arc;

use bytes::Bytes;
use engine::env::{DbInstances, Expect, SessionOptions, TableName, WriteOp};
use engine::orm::{read_committed, CommittedRead, ObjectRef, DECISION_TABLE};
use engine::shard::{ShardConfig, ShardError, ShardRouter};
use engine::testing::sql_service::Instance;
use engine::testing::{FakeDb, Harness};
use game::farm::Farm;
use serde_json::Value;

use crate::{instances, LOGICAL_SHARDS};

/// The router (4 shards, round robin over db-0 and db-1, app `fuzz`) and the object whose row
/// the inputs are: `farm/alice` of the reference game.
pub struct StoreWorld {
    h: Harness,
    dbs: Vec<(FakeDb, Instance)>,
    router: ShardRouter,
    obj: ObjectRef,
}

impl StoreWorld {
    pub fn new() -> StoreWorld {
        let h = Harness::new(1);
        let dbs: Vec<FakeDb> = instances().iter().map(FakeDb::new).collect();
        let mut env = h.env("fuzz");
        let dir = dbs.iter().fold(DbInstances::empty(), |d, db| d.with(Arc::new(db.clone())).unwrap());
        env.db = Arc::new(dir);
        let cfg = ShardConfig::round_robin(&instances(), LOGICAL_SHARDS);
        let router = h.block_on(async move {
            ShardRouter::start(env, "fuzz", cfg, SessionOptions::default()).await.unwrap()
        });
        // The state every input starts from: the map's guard rows, no objects.
        let dbs = dbs.into_iter().map(|db| (db.clone(), db.with(|i| i.clone()))).collect();
        StoreWorld { h, dbs, router, obj: ObjectRef::of::<Farm>("alice") }
    }

    fn db_of(&self, user: &str) -> &FakeDb {
        let name = self.router.instance_of_user(user);
        &self.dbs.iter().find(|(db, _)| engine::env::Db::name(db) == name).expect("configured").0
    }

    fn put(&self, user: &str, table: &str, suffix: &str, value: &[u8]) {
        let (Ok(table), key) = (TableName::new(table), self.router.user_key(user, suffix)) else { return };
        let op = WriteOp::put(&table, key, Bytes::copy_from_slice(value), Expect::Any, 0);
        let _ = self.db_of(user).with(|i| i.transact(&[op]));
    }

    /// Writes `row` as the row of `farm/alice` (and `decision` where the row's pending write
    /// says its decision is), reads the object back with `read_committed`, and resets the
    /// instances to their state after `new`.
    pub fn read_committed(&self, row: &[u8], decision: Option<&[u8]>) -> Result<CommittedRead, ShardError> {
        let obj = &self.obj;
        self.put(&obj.shard_user, &obj.model, &format!("{}.{}", obj.model, obj.key), row);
        if let Some(decision) = decision {
            // Where the engine looks for the decision: the pending write's primary user and txn.
            let v: Option<Value> = serde_json::from_slice(row).ok();
            let p = v.as_ref().and_then(|v| v.get("p"));
            let field = |k: &str| p.and_then(|p| p.get(k)).and_then(Value::as_str).map(str::to_owned);
            if let (Some(primary), Some(txn)) = (field("primary"), field("txn")) {
                if engine::shard::key::validate_user(&primary).is_ok() {
                    self.put(&primary, DECISION_TABLE, &format!("txn.{txn}"), decision);
                }
            }
        }
        let (router, obj) = (self.router.clone(), obj.clone());
        let read = self.h.block_on(async move { read_committed(&router, &obj).await });
        for (db, initial) in &self.dbs {
            db.with(|i| *i = initial.clone());
        }
        read
    }
}
