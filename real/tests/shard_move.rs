//! Online shard moves on the real backend: private ZooKeeper, a SQLite file and a private
//! MariaDB. A writer appends to users of one shard without pause while the operator command
//! moves that shard from SQLite to MariaDB and back; every acknowledged append must be in the
//! final row exactly once, and the writer's longest wait (the freeze it saw) is printed.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::env::{Env, Expect, SessionOptions, TableName, WriteOp};
use engine::shard::router::FREEZE_WAIT_MAX;
use engine::shard::{ShardConfig, ShardRouter};
use real::adapters::RedisKvOptions;
use real::env::{real_env, RealEnvConfig};
use real::server::sql::{env_with_sql, run_shard_command, ShardCommand};

const APP: &str = "shardtest";
const SHARDS: u32 = 8;

fn env(zk: &str) -> Env {
    real_env(&RealEnvConfig {
        node: "test".into(),
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        zookeeper: zk.to_string(),
        // Never used by these tests (the Redis client connects lazily).
        redis_url: "redis://127.0.0.1:1".into(),
        redis: RedisKvOptions::default(),
    })
    .unwrap()
}

fn logs() -> TableName {
    TableName::new("logs").unwrap()
}

/// Appends `id` to `user`'s row (read, then a version-conditional write).
async fn append(router: &ShardRouter, user: &str, id: u64) -> Result<(), String> {
    let key = router.user_key(user, "log");
    let row = router.get(user, &logs(), &key).await.map_err(|e| e.to_string())?;
    let (mut ids, expect): (Vec<u64>, Expect) = match row {
        Some(r) => (serde_json::from_slice(&r.value).unwrap(), Expect::Version(r.version)),
        None => (Vec::new(), Expect::Absent),
    };
    ids.push(id);
    let value = Bytes::from(serde_json::to_vec(&ids).unwrap());
    router
        .transact(user, vec![WriteOp::put(&logs(), key, value, expect, 0)])
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_moves_between_sqlite_and_mariadb_while_written_without_losing_an_append() {
    let zk = common::zk();
    let maria = common::mariadb();
    let dir = tempfile::tempdir().unwrap();
    let cfg = ShardConfig {
        logical_shards: SHARDS,
        instances: BTreeMap::from([
            ("db-0".to_string(), format!("sqlite://{}/db-0.sqlite", dir.path().display())),
            ("db-1".to_string(), maria.url()),
        ]),
        layout: vec!["db-0".to_string(); SHARDS as usize],
        public: BTreeMap::new(),
        public_default: "db-0".into(),
    };
    let session = SessionOptions::default();
    let writer_env = env_with_sql(env(&zk.connect_string()), &cfg).await.unwrap();
    let router = ShardRouter::start(writer_env, APP, cfg.clone(), session).await.unwrap();
    // Users 3 and 11 are on shard 3; user 4 on shard 4 (never moved).
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
    let waits: Arc<Mutex<BTreeMap<String, Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for user in ["3", "11", "4"] {
        let (router, stop, acked, waits) = (router.clone(), stop.clone(), acked.clone(), waits.clone());
        tasks.push(tokio::spawn(async move {
            let mut id = 0;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                let t = Instant::now();
                let r = append(&router, user, id).await;
                let waited = t.elapsed();
                let mut w = waits.lock().unwrap();
                let max = w.entry(user.to_string()).or_default();
                *max = (*max).max(waited);
                match r {
                    Ok(()) => acked.lock().unwrap().entry(user.to_string()).or_default().push(id),
                    Err(e) => panic!("append {id} of user {user} failed: {e}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut reports = Vec::new();
    for to in ["db-1", "db-0", "db-1"] {
        let cmd = ShardCommand::Move { shard: 3, to: to.into() };
        let report = run_shard_command(env(&zk.connect_string()), APP, &cfg, session, &cmd).await.unwrap();
        println!("move: {report}");
        reports.push(report);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let status = run_shard_command(env(&zk.connect_string()), APP, &cfg, session, &ShardCommand::Status)
        .await
        .unwrap();
    assert_eq!(status["map"]["version"], 4);
    assert_eq!(status["map"]["shards"][3], "db-1");
    assert_eq!(status["map"]["shards"][4], "db-0");

    let acked = acked.lock().unwrap().clone();
    for (user, ids) in &acked {
        let key = router.user_key(user, "log");
        let row = router.get(user, &logs(), &key).await.unwrap().expect("row exists");
        let stored: Vec<u64> = serde_json::from_slice(&row.value).unwrap();
        assert_eq!(&stored, ids, "user {user}: every acknowledged append once, in order");
        println!("user {user}: {} appends, longest wait {:?}", ids.len(), waits.lock().unwrap()[user]);
    }
    // The contract, not a speed: a freeze ends before the writers waiting it out give up
    // (the freeze's length is a benchmark figure, printed above; on a loaded 2-core machine
    // it has ranged from tens of milliseconds to 1.6 s).
    for r in &reports {
        let frozen = r["frozen_ms"].as_f64().unwrap();
        assert!(frozen < FREEZE_WAIT_MAX.as_millis() as f64, "freeze {frozen} ms");
    }
    router.stop();
}
