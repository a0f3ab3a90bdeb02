//! Unit tests of the checks made before Redis is touched, and of error mapping. The Redis
//! semantics themselves (expiry, races, `GETDEL`) are tested against the simulated Redis in
//! `sim/tests/storage.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use futures::executor::block_on;
use serde_json::json;

use super::*;
use crate::env::KvError;

/// A string-only map without expiry, counting calls; `fail` makes every call fail with it.
#[derive(Default)]
struct MapKv {
    keys: Mutex<BTreeMap<String, Bytes>>,
    calls: AtomicU64,
    fail: Mutex<Option<KvError>>,
}

impl MapKv {
    fn enter(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Bytes>>, KvError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match self.fail.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(self.keys.lock().unwrap()),
        }
    }
}

#[async_trait]
impl Kv for MapKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        Ok(self.enter()?.get(key).cloned())
    }
    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool, KvError> {
        let mut m = self.enter()?;
        let ok = match opts.condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => !m.contains_key(key),
            SetCondition::IfPresent => m.contains_key(key),
        };
        if ok {
            m.insert(key.to_owned(), value);
        }
        Ok(ok)
    }
    async fn del(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.enter()?.remove(key).is_some())
    }
    async fn pexpire(&self, key: &str, _ttl: Duration) -> Result<bool, KvError> {
        Ok(self.enter()?.contains_key(key))
    }
    async fn pttl(&self, key: &str) -> Result<Ttl, KvError> {
        Ok(if self.enter()?.contains_key(key) { Ttl::NoExpiry } else { Ttl::NoKey })
    }
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Bytes>,
        new: Option<Bytes>,
        _px: Option<Duration>,
    ) -> Result<bool, KvError> {
        let mut m = self.enter()?;
        if m.get(key) != expected.as_ref() {
            return Ok(false);
        }
        match new {
            Some(v) => m.insert(key.to_owned(), v),
            None => m.remove(key),
        };
        Ok(true)
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        Ok(self.enter()?.remove(key))
    }
    async fn rpush(&self, _: &str, _: Vec<Bytes>) -> Result<u64, KvError> {
        unreachable!("storage uses no lists")
    }
    async fn lpop(&self, _: &str) -> Result<Option<Bytes>, KvError> {
        unreachable!("storage uses no lists")
    }
    async fn lrange(&self, _: &str, _: i64, _: i64) -> Result<Vec<Bytes>, KvError> {
        unreachable!("storage uses no lists")
    }
    async fn llen(&self, _: &str) -> Result<u64, KvError> {
        unreachable!("storage uses no lists")
    }
}

/// splitmix64 over a counter.
struct Counter(AtomicU64);
impl Rand for Counter {
    fn next_u64(&self) -> u64 {
        let mut z = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Always the same bits: every drawn key collides.
struct Stuck;
impl Rand for Stuck {
    fn next_u64(&self) -> u64 {
        7
    }
}

fn storage_with(cfg: StorageConfig, rand: Arc<dyn Rand>) -> (CrossServerStorage, Arc<MapKv>) {
    let kv = Arc::new(MapKv::default());
    (CrossServerStorage::new(kv.clone(), rand, cfg).unwrap(), kv)
}

fn storage(cfg: StorageConfig) -> (CrossServerStorage, Arc<MapKv>) {
    storage_with(cfg, Arc::new(Counter(AtomicU64::new(1))))
}

const SEC: Duration = Duration::from_secs(1);

fn k(n: u8) -> Key {
    Key::from_uuid(uuid::Uuid::from_bytes([n; 16]))
}

#[test]
fn disabled_answers_every_call_without_touching_redis() {
    let (s, kv) = storage(StorageConfig::default());
    let v = json!(1);
    block_on(async {
        assert_eq!(s.create(&v, SEC).await, Err(StorageError::Disabled));
        assert_eq!(s.create_with_key(&k(1), &v, SEC).await, Err(StorageError::Disabled));
        assert_eq!(s.read(&k(1)).await, Err(StorageError::Disabled));
        assert_eq!(s.read_versioned(&k(1)).await, Err(StorageError::Disabled));
        assert_eq!(s.write(&k(1), &v).await, Err(StorageError::Disabled));
        assert_eq!(s.compare_and_write(&k(1), 1, &v).await, Err(StorageError::Disabled));
        assert_eq!(s.delete(&k(1)).await, Err(StorageError::Disabled));
        assert_eq!(s.refresh(&k(1), SEC).await, Err(StorageError::Disabled));
        assert_eq!(s.take(&k(1)).await, Err(StorageError::Disabled));
    });
    assert_eq!(kv.calls.load(Ordering::Relaxed), 0);
}

#[test]
fn invalid_config_is_refused_at_construction() {
    let kv: Arc<dyn Kv> = Arc::new(MapKv::default());
    let rand: Arc<dyn Rand> = Arc::new(Stuck);
    let new = |cfg| CrossServerStorage::new(kv.clone(), rand.clone(), cfg).map(|_| ());
    assert!(matches!(
        new(StorageConfig { key_prefix: String::new(), ..StorageConfig::enabled() }),
        Err(StorageError::InvalidConfig(_))
    ));
    for max_value_bytes in [0, VALUE_BYTES_LIMIT + 1] {
        assert!(matches!(
            new(StorageConfig { max_value_bytes, ..StorageConfig::enabled() }),
            Err(StorageError::InvalidConfig(_))
        ));
    }
    assert_eq!(new(StorageConfig { max_value_bytes: VALUE_BYTES_LIMIT, ..StorageConfig::enabled() }), Ok(()));
}

#[test]
fn ttl_and_size_are_checked_before_redis() {
    let (s, kv) = storage(StorageConfig { max_value_bytes: 10, ..StorageConfig::enabled() });
    block_on(async {
        for ttl in [Duration::ZERO, Duration::from_micros(999), TTL_MAX + Duration::from_millis(1)] {
            assert_eq!(s.create(&json!(1), ttl).await, Err(StorageError::InvalidTtl { ttl }));
            assert_eq!(s.create_with_key(&k(1), &json!(1), ttl).await, Err(StorageError::InvalidTtl { ttl }));
            assert_eq!(s.refresh(&k(1), ttl).await, Err(StorageError::InvalidTtl { ttl }));
        }
        let big = json!("123456789"); // 11 bytes with quotes
        let too_large = Err(StorageError::TooLarge { len: 11, max: 10 });
        assert_eq!(s.create(&big, SEC).await, too_large.clone().map(|()| k(0)));
        assert_eq!(s.create_with_key(&k(1), &big, SEC).await, too_large);
        assert_eq!(s.write(&k(1), &big).await, too_large);
        assert_eq!(s.compare_and_write(&k(1), 1, &big).await, too_large.map(|()| 0));
        assert_eq!(kv.calls.load(Ordering::Relaxed), 0, "nothing reached redis");
        // Exactly the limit is fine; TTL bounds are inclusive.
        let key = s.create(&json!("12345678"), TTL_MIN).await.unwrap();
        s.refresh(&key, TTL_MAX).await.unwrap();
        assert_eq!(s.read(&key).await, Ok(json!("12345678")));
    });
}

#[test]
fn versions_and_the_stored_format() {
    let (s, kv) = storage(StorageConfig::enabled());
    block_on(async {
        let key = s.create(&json!({"level": 1}), SEC).await.unwrap();
        let name = s.redis_key(&key);
        assert_eq!(name, format!("sandtable:css:{key}"));
        assert_eq!(&kv.keys.lock().unwrap()[&name][..], br#"{"v":1,"d":{"level":1}}"#);
        s.write(&key, &json!({"level": 2})).await.unwrap();
        assert_eq!(s.read_versioned(&key).await, Ok((json!({"level": 2}), 2)));
        s.refresh(&key, SEC).await.unwrap();
        assert_eq!(&kv.keys.lock().unwrap()[&name][..], br#"{"v":2,"r":1,"d":{"level":2}}"#);
        assert_eq!(
            s.compare_and_write(&key, 1, &json!(null)).await,
            Err(StorageError::VersionMismatch { current: 2 })
        );
        assert_eq!(s.compare_and_write(&key, 2, &json!(null)).await, Ok(3));
        assert_eq!(s.read_versioned(&key).await, Ok((Value::Null, 3)));
        assert_eq!(&kv.keys.lock().unwrap()[&name][..], br#"{"v":3,"r":1,"d":null}"#);
    });
}

#[test]
fn a_stuck_rand_gives_up_creating() {
    let (s, kv) = storage_with(StorageConfig::enabled(), Arc::new(Stuck));
    block_on(async {
        s.create(&json!(1), SEC).await.unwrap();
        assert_eq!(s.create(&json!(2), SEC).await, Err(StorageError::AlreadyExists));
    });
    assert_eq!(kv.calls.load(Ordering::Relaxed), 1 + u64::from(CREATE_ATTEMPTS_MAX));
}

#[test]
fn backend_errors_keep_maybe_applied_and_wrongtype_is_corrupt() {
    let (s, kv) = storage(StorageConfig::enabled());
    block_on(async {
        for (e, applied) in [
            (KvError::Timeout { maybe_applied: true }, true),
            (KvError::ConnectionLoss { maybe_applied: true }, true),
            (KvError::ConnectionLoss { maybe_applied: false }, false),
            (KvError::Server("ERR".into()), false),
        ] {
            *kv.fail.lock().unwrap() = Some(e.clone());
            let got = s.take(&k(1)).await.unwrap_err();
            assert_eq!(got, StorageError::Backend(e.clone()));
            assert_eq!(got.maybe_applied(), applied);
            assert_eq!(s.create(&json!(1), SEC).await.unwrap_err(), StorageError::Backend(e));
        }
        *kv.fail.lock().unwrap() = Some(KvError::WrongType);
        assert!(matches!(s.read(&k(1)).await, Err(StorageError::Corrupt(_))));
    });
    assert!(!StorageError::NotFound.maybe_applied());
}

#[test]
fn error_messages() {
    assert_eq!(
        StorageError::TooLarge { len: 70000, max: 65536 }.to_string(),
        "value is 70000 bytes of JSON, more than the maximum of 65536"
    );
    assert_eq!(
        StorageError::VersionMismatch { current: 4 }.to_string(),
        "version mismatch: the value is at version 4"
    );
    assert_eq!(
        StorageError::Backend(KvError::Timeout { maybe_applied: true }).to_string(),
        "redis: kv call timed out (maybe applied: true)"
    );
}

#[test]
fn metrics_count_calls_by_op_and_result() {
    use crate::metrics::{instrument_kv, Metrics};
    /// Time stands still: only counts are checked here.
    struct Still;
    impl crate::env::Clock for Still {
        fn now(&self) -> crate::env::MonoTime {
            crate::env::MonoTime(0)
        }
        fn wall_now(&self) -> crate::env::WallTime {
            crate::env::WallTime(0)
        }
        fn sleep(&self, _: Duration) -> futures::future::BoxFuture<'static, ()> {
            Box::pin(futures::future::pending())
        }
    }
    let metrics = Metrics::new("n", Arc::new(Still));
    let map = Arc::new(MapKv::default());
    let kv = instrument_kv(map.clone(), &metrics);
    let s = CrossServerStorage::new(kv, Arc::new(Counter(AtomicU64::new(1))), StorageConfig::enabled())
        .unwrap()
        .with_metrics(&metrics);
    block_on(async {
        let key = s.create(&json!(1), SEC).await.unwrap();
        s.read(&key).await.unwrap();
        s.read_versioned(&key).await.unwrap();
        assert!(s.compare_and_write(&key, 7, &json!(2)).await.is_err());
        s.take(&key).await.unwrap();
        assert_eq!(s.take(&key).await, Err(StorageError::NotFound));
        assert_eq!(s.create_with_key(&k(1), &json!(1), Duration::ZERO).await.map_err(|_| ()), Err(()));
        *map.fail.lock().unwrap() = Some(KvError::Timeout { maybe_applied: false });
        assert!(s.delete(&k(1)).await.is_err());
    });
    let text = metrics.render_prometheus();
    for line in [
        "sandtable_storage_ops_total{op=\"create\",result=\"ok\"} 1",
        "sandtable_storage_ops_total{op=\"read\",result=\"ok\"} 2",
        "sandtable_storage_ops_total{op=\"compare_and_write\",result=\"version_mismatch\"} 1",
        "sandtable_storage_ops_total{op=\"take\",result=\"ok\"} 1",
        "sandtable_storage_ops_total{op=\"take\",result=\"not_found\"} 1",
        "sandtable_storage_ops_total{op=\"create_with_key\",result=\"error\"} 1",
        "sandtable_storage_ops_total{op=\"delete\",result=\"error\"} 1",
        "sandtable_kv_op_duration_seconds_count{op=\"take\"} 2",
        "sandtable_kv_op_duration_seconds_count{op=\"get\"} 3",
        "sandtable_kv_op_errors_total{op=\"del\",error=\"timeout\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    let j = metrics.distribution_profiling_json();
    assert_eq!(j["redis"]["client_count"], 1);
    assert_eq!(j["redis"]["operations"]["take"]["all_time"]["execution_count"], 2);
}
