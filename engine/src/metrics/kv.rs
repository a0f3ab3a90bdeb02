//! [`InstrumentedKv`]: the `Kv` (Redis) port, measured.
//!
//! Every call is timed on the registry's `Clock` and recorded as:
//! - [`KV_OP_DURATION`] histogram, label `op` (one of [`OPS`], the `Kv` method names);
//! - [`KV_OP_ERRORS`] counter, labels `op` and `error` ([`error_kind`]);
//! - the Redis latency profile of [`Metrics::distribution_profiling_json`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{CounterVec, Histogram, Metrics, LATENCY_BUCKETS};
use crate::env::{Kv, KvError, MonoTime, SetOptions, Ttl};

/// Histogram of Redis call latency, label `op`.
pub const KV_OP_DURATION: &str = "sandtable_kv_op_duration_seconds";
/// Failed Redis calls, labels `op`, `error`.
pub const KV_OP_ERRORS: &str = "sandtable_kv_op_errors_total";

/// The `op` label values, in a fixed order.
pub const OPS: &[&str] =
    &["get", "set", "del", "pexpire", "pttl", "compare_and_set", "take", "rpush", "lpop", "lrange", "llen"];

#[derive(Clone, Copy)]
enum KvOp {
    Get,
    Set,
    Del,
    Pexpire,
    Pttl,
    CompareAndSet,
    Take,
    Rpush,
    Lpop,
    Lrange,
    Llen,
}

/// The `error` label of a Redis error.
pub fn error_kind(e: &KvError) -> &'static str {
    match e {
        KvError::Timeout { .. } => "timeout",
        KvError::ConnectionLoss { .. } => "connection_loss",
        KvError::WrongType => "wrong_type",
        KvError::Server(_) => "server",
    }
}

/// A [`Kv`] whose calls are measured in a [`Metrics`] registry.
pub struct InstrumentedKv {
    inner: Arc<dyn Kv>,
    metrics: Metrics,
    durations: Vec<Histogram>,
    errors: CounterVec,
}

impl InstrumentedKv {
    pub fn new(inner: Arc<dyn Kv>, metrics: &Metrics) -> Self {
        let hist = metrics.histogram_vec(
            KV_OP_DURATION,
            "Latency of Redis calls, by operation.",
            &["op"],
            LATENCY_BUCKETS,
        );
        let errors = metrics.counter_vec(KV_OP_ERRORS, "Failed Redis calls.", &["op", "error"]);
        metrics.redis().clients.fetch_add(1, Ordering::Relaxed);
        InstrumentedKv {
            inner,
            metrics: metrics.clone(),
            durations: OPS.iter().map(|op| hist.with(&[op])).collect(),
            errors,
        }
    }

    async fn timed<T>(
        &self,
        op: KvOp,
        fut: impl std::future::Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let clock = self.metrics.clock();
        let start: MonoTime = clock.now();
        let r = fut.await;
        let now = clock.now();
        let d: Duration = now.saturating_since(start);
        let name = OPS[op as usize];
        self.durations[op as usize].observe(d);
        self.metrics.redis().record(name, now, d);
        if let Err(e) = &r {
            self.errors.with(&[name, error_kind(e)]).inc();
        }
        r
    }
}

impl Drop for InstrumentedKv {
    fn drop(&mut self) {
        self.metrics.redis().clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `inner`, measured in `metrics`: `env.kv = instrument_kv(env.kv, &metrics)`.
pub fn instrument_kv(inner: Arc<dyn Kv>, metrics: &Metrics) -> Arc<dyn Kv> {
    Arc::new(InstrumentedKv::new(inner, metrics))
}

#[async_trait]
impl Kv for InstrumentedKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        self.timed(KvOp::Get, self.inner.get(key)).await
    }
    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool, KvError> {
        self.timed(KvOp::Set, self.inner.set(key, value, opts)).await
    }
    async fn del(&self, key: &str) -> Result<bool, KvError> {
        self.timed(KvOp::Del, self.inner.del(key)).await
    }
    async fn pexpire(&self, key: &str, ttl: Duration) -> Result<bool, KvError> {
        self.timed(KvOp::Pexpire, self.inner.pexpire(key, ttl)).await
    }
    async fn pttl(&self, key: &str) -> Result<Ttl, KvError> {
        self.timed(KvOp::Pttl, self.inner.pttl(key)).await
    }
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Bytes>,
        new: Option<Bytes>,
        px: Option<Duration>,
    ) -> Result<bool, KvError> {
        self.timed(KvOp::CompareAndSet, self.inner.compare_and_set(key, expected, new, px)).await
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        self.timed(KvOp::Take, self.inner.take(key)).await
    }
    async fn rpush(&self, key: &str, values: Vec<Bytes>) -> Result<u64, KvError> {
        self.timed(KvOp::Rpush, self.inner.rpush(key, values)).await
    }
    async fn lpop(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        self.timed(KvOp::Lpop, self.inner.lpop(key)).await
    }
    async fn lrange(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Bytes>, KvError> {
        self.timed(KvOp::Lrange, self.inner.lrange(key, start, stop)).await
    }
    async fn llen(&self, key: &str) -> Result<u64, KvError> {
        self.timed(KvOp::Llen, self.inner.llen(key)).await
    }
}
