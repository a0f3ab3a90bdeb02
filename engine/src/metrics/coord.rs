//! [`InstrumentedConnector`]: the `Coord` port, measured.
//!
//! Every call on a session opened through it is timed on the registry's `Clock` and
//! recorded three ways:
//! - [`COORD_OP_DURATION`] histogram, label `op`;
//! - [`COORD_OP_ERRORS`] counter, labels `op` and `error` ([`error_kind`]);
//! - the ZooKeeper latency profile of [`Metrics::distribution_profiling_json`].
//!
//! `op` is one of [`OPS`]; the watching reads count as their plain kind (`get_data_w` as
//! `get_data`, ...): the service does the same work. Callback gauges [`COORD_SESSIONS`] and
//! [`COORD_SESSIONS_CONNECTED`] report the sessions opened through the connector that are
//! still open, and the registry's health report gains the check `zookeeper`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::{CounterVec, Histogram, Metrics, LATENCY_BUCKETS};
use crate::env::{
    Coord, CoordConnector, CoordError, CreateMode, MonoTime, MultiError, Op, OpResult, SessionEvent,
    SessionOptions, SessionState, Stat, Watcher,
};

/// Histogram of coordination call latency, label `op`.
pub const COORD_OP_DURATION: &str = "sandtable_coord_op_duration_seconds";
/// Failed coordination calls, labels `op`, `error`.
pub const COORD_OP_ERRORS: &str = "sandtable_coord_op_errors_total";
/// Open coordination sessions (gauge).
pub const COORD_SESSIONS: &str = "sandtable_coord_sessions";
/// Open coordination sessions that are connected (gauge).
pub const COORD_SESSIONS_CONNECTED: &str = "sandtable_coord_sessions_connected";

/// Opening a session (not part of the profile's command totals).
pub const OP_CONNECT: &str = "connect";
/// The `op` label values, in a fixed order.
pub const OPS: &[&str] =
    &[OP_CONNECT, "create", "delete", "get_data", "exists", "set_data", "get_children", "multi", "close"];

#[derive(Clone, Copy)]
enum CoordOp {
    Connect,
    Create,
    Delete,
    GetData,
    Exists,
    SetData,
    GetChildren,
    Multi,
    Close,
}

impl CoordOp {
    fn name(self) -> &'static str {
        OPS[self as usize]
    }
}

/// The `error` label of a coordination error.
pub fn error_kind(e: &CoordError) -> &'static str {
    match e {
        CoordError::NoNode => "no_node",
        CoordError::NodeExists => "node_exists",
        CoordError::BadVersion => "bad_version",
        CoordError::NotEmpty => "not_empty",
        CoordError::NoChildrenForEphemerals => "no_children_for_ephemerals",
        CoordError::BadArguments(_) => "bad_arguments",
        CoordError::ConnectionLoss { .. } => "connection_loss",
        CoordError::SessionExpired => "session_expired",
        CoordError::Closed => "closed",
        CoordError::Timeout => "timeout",
    }
}

/// Handles shared by the connector and its sessions.
struct Instruments {
    metrics: Metrics,
    durations: Vec<Histogram>,
    errors: CounterVec,
}

impl Instruments {
    fn new(metrics: &Metrics) -> Arc<Self> {
        let hist = metrics.histogram_vec(
            COORD_OP_DURATION,
            "Latency of coordination (ZooKeeper) calls, by operation.",
            &["op"],
            LATENCY_BUCKETS,
        );
        let errors =
            metrics.counter_vec(COORD_OP_ERRORS, "Failed coordination (ZooKeeper) calls.", &["op", "error"]);
        let zk = metrics.zookeeper();
        if !zk.instrumented.swap(true, Ordering::Relaxed) {
            let m = Arc::downgrade(&metrics.inner);
            metrics.register_gauge_fn(COORD_SESSIONS, "Open coordination sessions.", move || {
                m.upgrade().map_or(0.0, |r| r.zookeeper.session_states().len() as f64)
            });
            let m = Arc::downgrade(&metrics.inner);
            metrics.register_gauge_fn(
                COORD_SESSIONS_CONNECTED,
                "Open coordination sessions that are connected.",
                move || {
                    m.upgrade().map_or(0.0, |r| {
                        r.zookeeper.session_states().iter().filter(|s| **s == SessionState::Connected).count()
                            as f64
                    })
                },
            );
        }
        Arc::new(Instruments {
            metrics: metrics.clone(),
            durations: OPS.iter().map(|op| hist.with(&[op])).collect(),
            errors,
        })
    }

    fn now(&self) -> MonoTime {
        self.metrics.clock().now()
    }

    fn record(&self, op: CoordOp, start: MonoTime, error: Option<&CoordError>) {
        let now = self.now();
        let d: Duration = now.saturating_since(start);
        self.durations[op as usize].observe(d);
        self.metrics.zookeeper().record(op.name(), now, d);
        if let Some(e) = error {
            self.errors.with(&[op.name(), error_kind(e)]).inc();
        }
    }
}

/// A [`CoordConnector`] whose sessions are measured in a [`Metrics`] registry.
pub struct InstrumentedConnector {
    inner: Arc<dyn CoordConnector>,
    ins: Arc<Instruments>,
}

impl InstrumentedConnector {
    pub fn new(inner: Arc<dyn CoordConnector>, metrics: &Metrics) -> Self {
        InstrumentedConnector { inner, ins: Instruments::new(metrics) }
    }
}

/// `inner`, measured in `metrics`: `env.coord = instrument_coord(env.coord, &metrics)`.
pub fn instrument_coord(inner: Arc<dyn CoordConnector>, metrics: &Metrics) -> Arc<dyn CoordConnector> {
    Arc::new(InstrumentedConnector::new(inner, metrics))
}

impl CoordConnector for InstrumentedConnector {
    fn connect(&self, opts: SessionOptions) -> BoxFuture<'_, Result<Arc<dyn Coord>, CoordError>> {
        Box::pin(async move {
            let start = self.ins.now();
            let r = self.inner.connect(opts).await;
            self.ins.record(CoordOp::Connect, start, r.as_ref().err());
            let inner = r?;
            self.ins.metrics.zookeeper().track_session(&inner);
            let wrapped: Arc<dyn Coord> = Arc::new(InstrumentedCoord { inner, ins: self.ins.clone() });
            Ok(wrapped)
        })
    }
}

/// One session opened through an [`InstrumentedConnector`].
pub struct InstrumentedCoord {
    inner: Arc<dyn Coord>,
    ins: Arc<Instruments>,
}

impl InstrumentedCoord {
    async fn timed<T>(
        &self,
        op: CoordOp,
        fut: impl std::future::Future<Output = Result<T, CoordError>>,
    ) -> Result<T, CoordError> {
        let start = self.ins.now();
        let r = fut.await;
        self.ins.record(op, start, r.as_ref().err());
        r
    }
}

#[async_trait]
impl Coord for InstrumentedCoord {
    fn session_id(&self) -> i64 {
        self.inner.session_id()
    }
    fn negotiated_timeout(&self) -> Duration {
        self.inner.negotiated_timeout()
    }
    fn state(&self) -> SessionState {
        self.inner.state()
    }
    fn session_events(&self) -> BoxStream<'static, SessionEvent> {
        self.inner.session_events()
    }
    async fn create(&self, path: &str, data: Bytes, mode: CreateMode) -> Result<String, CoordError> {
        self.timed(CoordOp::Create, self.inner.create(path, data, mode)).await
    }
    async fn delete(&self, path: &str, version: Option<i32>) -> Result<(), CoordError> {
        self.timed(CoordOp::Delete, self.inner.delete(path, version)).await
    }
    async fn get_data(&self, path: &str) -> Result<(Bytes, Stat), CoordError> {
        self.timed(CoordOp::GetData, self.inner.get_data(path)).await
    }
    async fn get_data_w(&self, path: &str) -> Result<(Bytes, Stat, Watcher), CoordError> {
        self.timed(CoordOp::GetData, self.inner.get_data_w(path)).await
    }
    async fn exists(&self, path: &str) -> Result<Option<Stat>, CoordError> {
        self.timed(CoordOp::Exists, self.inner.exists(path)).await
    }
    async fn exists_w(&self, path: &str) -> Result<(Option<Stat>, Watcher), CoordError> {
        self.timed(CoordOp::Exists, self.inner.exists_w(path)).await
    }
    async fn set_data(&self, path: &str, data: Bytes, version: Option<i32>) -> Result<Stat, CoordError> {
        self.timed(CoordOp::SetData, self.inner.set_data(path, data, version)).await
    }
    async fn get_children(&self, path: &str) -> Result<Vec<String>, CoordError> {
        self.timed(CoordOp::GetChildren, self.inner.get_children(path)).await
    }
    async fn get_children_w(&self, path: &str) -> Result<(Vec<String>, Watcher), CoordError> {
        self.timed(CoordOp::GetChildren, self.inner.get_children_w(path)).await
    }
    async fn multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, MultiError> {
        let start = self.ins.now();
        let r = self.inner.multi(ops).await;
        self.ins.record(CoordOp::Multi, start, r.as_ref().err().map(|e| &e.error));
        r
    }
    async fn close(&self) {
        let start = self.ins.now();
        self.inner.close().await;
        self.ins.record(CoordOp::Close, start, None);
    }
}
