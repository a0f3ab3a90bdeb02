//! CrossServerStorage on a real Redis (a private server per test): expiry, refresh, one-shot
//! take and versioned writes behave as in the simulator.

mod common;

use std::sync::Arc;
use std::time::Duration;

use engine::storage::{CrossServerStorage, StorageConfig, StorageError};
use real::adapters::{OsRand, RedisKv, RedisKvOptions};
use serde_json::json;

fn storage(addr: std::net::SocketAddr) -> CrossServerStorage {
    let kv = RedisKv::with_addr(addr, RedisKvOptions::default()).expect("redis client");
    CrossServerStorage::new(Arc::new(kv), Arc::new(OsRand), StorageConfig::enabled()).expect("storage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_expire_refresh_extends_and_take_is_one_shot() {
    let redis = common::redis();
    let css = storage(redis.addr());
    let v = json!({ "user_name": "alice", "level": 3 });

    // Expiry: readable before, NotFound after the TTL (Redis expires keys itself).
    let key = css.create(&v, Duration::from_millis(600)).await.expect("create");
    assert_eq!(css.read(&key).await.expect("read before expiry"), v);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(matches!(css.read(&key).await, Err(StorageError::NotFound)), "read after expiry");
    assert!(matches!(css.take(&key).await, Err(StorageError::NotFound)), "take after expiry");

    // Refresh pushes the expiry out; without it the value would be gone.
    let key = css.create(&v, Duration::from_millis(600)).await.expect("create");
    tokio::time::sleep(Duration::from_millis(300)).await;
    css.refresh(&key, Duration::from_secs(5)).await.expect("refresh");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(css.read(&key).await.expect("read after refresh"), v);

    // Take is one-shot: the second take and a read find nothing.
    assert_eq!(css.take(&key).await.expect("take"), v);
    assert!(matches!(css.take(&key).await, Err(StorageError::NotFound)));
    assert!(matches!(css.read(&key).await, Err(StorageError::NotFound)));
    assert!(matches!(css.refresh(&key, Duration::from_secs(1)).await, Err(StorageError::NotFound)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_writes_and_bad_values() {
    let redis = common::redis();
    let css = storage(redis.addr());
    let key = css.create(&json!({ "n": 1 }), Duration::from_secs(30)).await.expect("create");
    let (_, v1) = css.read_versioned(&key).await.expect("read_versioned");
    css.compare_and_write(&key, v1, &json!({ "n": 2 })).await.expect("cas with the current version");
    assert!(
        matches!(
            css.compare_and_write(&key, v1, &json!({ "n": 3 })).await,
            Err(StorageError::VersionMismatch { .. })
        ),
        "cas with a stale version"
    );
    assert_eq!(css.read(&key).await.expect("read"), json!({ "n": 2 }));
    // Last-writer-wins write, then delete.
    css.write(&key, &json!({ "n": 4 })).await.expect("write");
    assert_eq!(css.read(&key).await.expect("read"), json!({ "n": 4 }));
    css.delete(&key).await.expect("delete");
    assert!(matches!(css.read(&key).await, Err(StorageError::NotFound)));
    // Oversized values are refused before anything reaches Redis.
    let big = json!({ "blob": "x".repeat(css.config().max_value_bytes + 1) });
    assert!(matches!(css.create(&big, Duration::from_secs(1)).await, Err(StorageError::TooLarge { .. })));
}
