//! `storage`: `CrossServerStorage` create + read against raw `SET key value PX ttl` + `GET`
//! with the `redis` crate, on the same private Redis, at the same concurrency.
//!
//! Engine: [`CrossServerStorage::create`] (a fresh random key, `SET NX PX` of the versioned
//! JSON envelope) then [`CrossServerStorage::read`] (`GET`, envelope decoded) of that key,
//! through the `Kv` port's `RedisKv` (one multiplexed connection). Baseline: the same two
//! round trips issued directly on one `redis` `ConnectionManager`, a value of the same size
//! under a key of the same length, nothing encoded or decoded.

use std::sync::Arc;
use std::time::Duration;

use engine::storage::{CrossServerStorage, StorageConfig};
use redis::aio::ConnectionManager;
use serde_json::{json, Value};

use super::driver::{measure, runtime, tasks, throughput_rows, Sample};
use super::{BenchError, BenchReport, Ctx};
use crate::env::real_env;

const BENCH: &str = "storage";
/// Tasks issuing create + read pairs, one measurement each.
const CONCURRENCY: [usize; 2] = [1, 16];
/// Expiry of every stored value: long enough to outlive the run's reads, short enough that
/// the private Redis does not keep them.
const TTL: Duration = Duration::from_secs(60);

/// The value stored (the seed's battle data, padded to a typical small record).
fn value() -> Value {
    json!({"user_name": "bench-user", "level": 7, "pad": "x".repeat(32)})
}

pub(super) fn run(ctx: &Ctx) -> Result<BenchReport, BenchError> {
    runtime()?.block_on(async {
        let env = real_env(&ctx.env_config("storage")).map_err(|e| BenchError::setup(BENCH, e))?;
        let storage = CrossServerStorage::from_env(&env, StorageConfig::enabled())
            .map_err(|e| BenchError::setup(BENCH, e))?;
        let raw = redis::Client::open(ctx.redis_url.as_str()).map_err(|e| BenchError::setup(BENCH, e))?;
        let raw = raw.get_connection_manager().await.map_err(|e| BenchError::setup(BENCH, e))?;
        let (warmup, duration) = (ctx.settings.warmup(), ctx.settings.duration());
        let mut report = BenchReport::new(BENCH);
        for c in CONCURRENCY {
            let engine = engine_pairs(&storage, c, warmup, duration).await?;
            let baseline = raw_pairs(&raw, c, warmup, duration).await?;
            let case = tasks(c);
            report.rows.extend(throughput_rows(&case, "create+read/s", &engine, &baseline));
        }
        report.notes.push(format!(
            "value {} bytes of JSON, TTL {} s; baseline: SET PX + GET on one redis ConnectionManager",
            value().to_string().len(),
            TTL.as_secs()
        ));
        Ok::<_, BenchError>(report)
    })
}

async fn engine_pairs(
    storage: &CrossServerStorage,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Sample, BenchError> {
    let storage = storage.clone();
    let value = Arc::new(value());
    measure(BENCH, concurrency, warmup, duration, move |_, _| {
        let (storage, value) = (storage.clone(), value.clone());
        async move {
            let key = storage
                .create(&value, TTL)
                .await
                .map_err(|e| BenchError::op(BENCH, format!("create: {e}")))?;
            let got = storage.read(&key).await.map_err(|e| BenchError::op(BENCH, format!("read: {e}")))?;
            if got != *value {
                return Err(BenchError::op(BENCH, "read returned another value"));
            }
            Ok(())
        }
    })
    .await
}

async fn raw_pairs(
    con: &ConnectionManager,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Sample, BenchError> {
    let con = con.clone();
    // What the engine stores: its envelope around the value, under prefix + UUID.
    let stored: Arc<str> = Arc::from(json!({"v": 1, "d": value()}).to_string());
    let run_id = std::process::id();
    measure(BENCH, concurrency, warmup, duration, move |task, i| {
        let (mut con, stored) = (con.clone(), stored.clone());
        async move {
            let key = format!("sandtable:raw:{run_id:08x}-{task:04x}-{i:020x}");
            let op = |e: redis::RedisError| BenchError::op(BENCH, format!("raw redis: {e}"));
            redis::cmd("SET")
                .arg(&key)
                .arg(&*stored)
                .arg("PX")
                .arg(TTL.as_millis() as u64)
                .query_async::<()>(&mut con)
                .await
                .map_err(op)?;
            let got: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut con).await.map_err(op)?;
            if got.as_deref() != Some(&*stored) {
                return Err(BenchError::op(BENCH, "raw GET returned another value"));
            }
            Ok(())
        }
    })
    .await
}
