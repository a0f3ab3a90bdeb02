//! Metrics: counters, gauges, latency histograms and iFun's ZooKeeper latency profile,
//! rendered as Prometheus text and as iFun's `distribution_profiling` JSON.
//!
//! One [`Metrics`] registry per server process, cheap to clone (one `Arc`). Engine
//! components record into it when given one (`RpcConfig::metrics`,
//! [`CrossServerStorage::with_metrics`](crate::storage::CrossServerStorage::with_metrics),
//! [`AccountManager::attach_metrics`](crate::account::AccountManager::attach_metrics)); the
//! coordination and Redis ports are wrapped by decorators ([`InstrumentedConnector`],
//! [`InstrumentedKv`], or [`instrument_env`] for both at once). The real backend's admin
//! HTTP server (`real::admin`) serves [`Metrics::render_prometheus`],
//! [`Metrics::distribution_profiling_json`] and [`Metrics::health`].
//!
//! ```no_run
//! # fn demo(env: engine::env::Env) {
//! use engine::metrics::{instrument_env, Metrics};
//! let metrics = Metrics::for_env(&env);
//! metrics.set_zookeeper_nodes("10.0.0.1:2181,10.0.0.2:2181");
//! let env = instrument_env(env, &metrics); // every Coord and Kv call is now measured
//! let logins = metrics.counter("game_logins_total", "Logins accepted by the game handler.");
//! logins.inc();
//! # let _ = env; }
//! ```
//!
//! # What is exposed
//! Every metric Sandtable registers starts with `sandtable_`; see the constants of the
//! instrumented modules ([`coord`], [`kv`], `rpc`, `storage`, `account`) for the full list.
//! Label sets are fixed and small: an operation name, an RPC message type, a result kind.
//! A family never grows past [`SERIES_PER_FAMILY_MAX`] label combinations; further
//! combinations are counted under the values [`OVERFLOW_LABEL`] (so a peer sending random
//! message types cannot grow memory without bound).
//!
//! # Determinism
//! The registry never reads a clock of its own: time comes from the [`Clock`] port it is
//! built with (the simulator's clock under sim), and recording is plain atomics and mutexes,
//! never a task, a thread or a global. Output is ordered (families by name, series by label
//! values), so two renders of equal registries are equal byte for byte. Recording changes no
//! behaviour of the component that records, so a simulated run is the same with or without
//! a registry attached. Callback gauges ([`Metrics::register_gauge_fn`]) and health checks
//! run only when someone reads the registry.
//!
//! # Why hand-written rather than a metrics crate
//! The engine must name no runtime, read no std clock, start no thread and keep no global
//! state (statics survive between simulated seeds). Checked against the candidates:
//! - `prometheus-client` 0.25 (the official Rust client): encodes OpenMetrics text only
//!   (`# EOF`, `application/openmetrics-text`), not the Prometheus 0.0.4 text format asked
//!   for here, and its histogram and text encoder read the OS wall clock (native-histogram
//!   and created timestamps). Callback gauges need a custom `Collector`, a label-cardinality
//!   cap is not provided, and it adds `parking_lot`, `dtoa`, `itoa` and a derive crate.
//! - `prometheus` (tikv): a `lazy_static` default registry (global state), timers built on
//!   std's monotonic clock, a protobuf dependency.
//! - `metrics` + `metrics-exporter-prometheus`: a process-global recorder (shared across
//!   seeds and nodes of one simulation), an upkeep thread and the `quanta` clock.
//!
//! The 0.0.4 text format is small (HELP/TYPE lines, escaped label values, cumulative
//! buckets), so it is written here (the private `text` module), with a snapshot test of its output.
//!
//! Size: about 760 lines, most of them the registry's public types (counters, gauges, their
//! vectors, callback gauges and the distribution profile) and their docs, which an iFun user
//! reads in one place; the text format, histograms and config are already their own files.

mod config;
pub mod coord;
mod histogram;
pub mod kv;
mod profile;
mod text;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{json, Value};

use crate::env::{Clock, Coord, Env, MonoTime, SessionState};

pub use self::config::{ApiConfig, API_SERVICE_PORT_DEFAULT, SECTION as API_SECTION};
pub use self::coord::{instrument_coord, InstrumentedConnector, InstrumentedCoord};
use self::histogram::HistCore;
pub use self::histogram::LATENCY_BUCKETS;
pub use self::kv::{instrument_kv, InstrumentedKv};
pub use self::profile::{LatencyProfile, Moments, ProfileSnapshot, WINDOW_SECONDS};

/// Most label combinations one family keeps; later ones share the overflow series.
pub const SERIES_PER_FAMILY_MAX: usize = 256;
/// Label value of every label of the overflow series.
pub const OVERFLOW_LABEL: &str = "_other";

/// Callback gauge of [`Metrics::register_gauge_fn`].
type GaugeFn = dyn Fn() -> f64 + Send + Sync;
/// Health check of [`Metrics::register_health_check`].
type HealthFn = dyn Fn() -> HealthStatus + Send + Sync;

use crate::env::lock;

/// The metrics registry of one server process. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Registry>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("node", &self.inner.node).finish_non_exhaustive()
    }
}

struct Registry {
    node: Arc<str>,
    clock: Arc<dyn Clock>,
    started: MonoTime,
    families: Mutex<BTreeMap<String, Arc<Family>>>,
    health: Mutex<BTreeMap<String, Arc<HealthFn>>>,
    zookeeper: ServiceProfile,
    redis: ServiceProfile,
}

/// What kind of values a family holds.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram(Arc<[f64]>),
    GaugeFn,
}

impl Kind {
    fn type_name(&self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge | Kind::GaugeFn => "gauge",
            Kind::Histogram(_) => "histogram",
        }
    }
}

/// One series' value cell.
#[derive(Clone)]
enum Cell {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicI64>),
    Histogram(Arc<HistCore>),
}

/// All series of one metric name.
struct Family {
    name: String,
    help: String,
    kind: Kind,
    labels: Vec<String>,
    series: Mutex<BTreeMap<Vec<String>, Cell>>,
    gauge_fn: Mutex<Option<Arc<GaugeFn>>>,
}

impl Family {
    /// The cell of `values` (created on first use; the overflow series past the cap).
    fn cell(&self, values: &[&str]) -> Option<Cell> {
        if values.len() != self.labels.len() {
            tracing::error!(metric = %self.name, expected = self.labels.len(), got = values.len(),
                "metrics: wrong number of label values; not recorded");
            return None;
        }
        let mut series = lock(&self.series);
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if let Some(c) = series.get(&key) {
            return Some(c.clone());
        }
        let key = if series.len() >= SERIES_PER_FAMILY_MAX {
            vec![OVERFLOW_LABEL.to_owned(); values.len()]
        } else {
            key
        };
        let kind = &self.kind;
        let cell = series
            .entry(key)
            .or_insert_with(|| match kind {
                Kind::Counter => Cell::Counter(Arc::default()),
                Kind::Gauge | Kind::GaugeFn => Cell::Gauge(Arc::default()),
                Kind::Histogram(bounds) => Cell::Histogram(Arc::new(HistCore::new(bounds.clone()))),
            })
            .clone();
        Some(cell)
    }
}

/// A monotonically increasing count. `Default` is a no-op handle that records nothing.
#[derive(Clone, Default)]
pub struct Counter {
    cell: Option<Arc<AtomicU64>>,
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counter({})", self.get())
    }
}

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        if let Some(c) = &self.cell {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
    /// The current count (0 for a no-op handle).
    pub fn get(&self) -> u64 {
        self.cell.as_ref().map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// A value that goes up and down. `Default` is a no-op handle.
#[derive(Clone, Default)]
pub struct Gauge {
    cell: Option<Arc<AtomicI64>>,
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gauge({})", self.get())
    }
}

impl Gauge {
    pub fn set(&self, v: i64) {
        if let Some(c) = &self.cell {
            c.store(v, Ordering::Relaxed);
        }
    }
    pub fn add(&self, n: i64) {
        if let Some(c) = &self.cell {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn dec(&self) {
        self.add(-1);
    }
    pub fn get(&self) -> i64 {
        self.cell.as_ref().map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// A latency histogram with fixed buckets (seconds). `Default` is a no-op handle.
#[derive(Clone, Default)]
pub struct Histogram {
    core: Option<Arc<HistCore>>,
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Histogram(count {})", self.count())
    }
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        if let Some(h) = &self.core {
            h.observe(d);
        }
    }
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.core.as_ref().map_or(0, |h| h.snapshot().count)
    }
    /// Per-bucket counts (not cumulative), the last one being `+Inf`.
    pub fn bucket_counts(&self) -> Vec<u64> {
        self.core.as_ref().map_or_else(Vec::new, |h| h.snapshot().buckets)
    }
    /// Sum of the observations.
    pub fn sum(&self) -> Duration {
        self.core.as_ref().map_or(Duration::ZERO, |h| Duration::from_nanos(h.snapshot().sum_nanos))
    }
}

/// A labelled family of counters. `Default` is a no-op family.
#[derive(Clone, Default)]
pub struct CounterVec {
    family: Option<Arc<Family>>,
}

impl fmt::Debug for CounterVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CounterVec")
    }
}

impl CounterVec {
    /// The counter of these label values (in the family's label order).
    pub fn with(&self, values: &[&str]) -> Counter {
        match self.family.as_ref().and_then(|f| f.cell(values)) {
            Some(Cell::Counter(c)) => Counter { cell: Some(c) },
            _ => Counter::default(),
        }
    }
}

/// A labelled family of gauges. `Default` is a no-op family.
#[derive(Clone, Default)]
pub struct GaugeVec {
    family: Option<Arc<Family>>,
}

impl fmt::Debug for GaugeVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GaugeVec")
    }
}

impl GaugeVec {
    pub fn with(&self, values: &[&str]) -> Gauge {
        match self.family.as_ref().and_then(|f| f.cell(values)) {
            Some(Cell::Gauge(c)) => Gauge { cell: Some(c) },
            _ => Gauge::default(),
        }
    }
}

/// A labelled family of histograms. `Default` is a no-op family.
#[derive(Clone, Default)]
pub struct HistogramVec {
    family: Option<Arc<Family>>,
}

impl fmt::Debug for HistogramVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HistogramVec")
    }
}

impl HistogramVec {
    pub fn with(&self, values: &[&str]) -> Histogram {
        match self.family.as_ref().and_then(|f| f.cell(values)) {
            Some(Cell::Histogram(h)) => Histogram { core: Some(h) },
            _ => Histogram::default(),
        }
    }
}

/// What one health check reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    Ok,
    /// Working, with a problem worth a look (the endpoint still answers 200).
    Degraded(String),
    /// Not able to serve (the endpoint answers 503).
    Unhealthy(String),
}

impl HealthStatus {
    /// `ok`, `degraded` or `unhealthy`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded(_) => "degraded",
            HealthStatus::Unhealthy(_) => "unhealthy",
        }
    }
    fn rank(&self) -> u8 {
        match self {
            HealthStatus::Ok => 0,
            HealthStatus::Degraded(_) => 1,
            HealthStatus::Unhealthy(_) => 2,
        }
    }
    fn detail(&self) -> Option<&str> {
        match self {
            HealthStatus::Ok => None,
            HealthStatus::Degraded(d) | HealthStatus::Unhealthy(d) => Some(d),
        }
    }
}

/// The result of every health check, as read by [`Metrics::health`].
#[derive(Clone, Debug, PartialEq)]
pub struct HealthReport {
    pub node: String,
    pub uptime: Duration,
    /// Check name -> status, sorted by name.
    pub checks: BTreeMap<String, HealthStatus>,
}

impl HealthReport {
    /// The worst status of all checks (`Ok` with no checks).
    pub fn overall(&self) -> HealthStatus {
        let worst = self.checks.values().max_by_key(|s| s.rank()).cloned().unwrap_or(HealthStatus::Ok);
        match worst {
            HealthStatus::Ok => HealthStatus::Ok,
            HealthStatus::Degraded(_) => HealthStatus::Degraded(self.failing_summary()),
            HealthStatus::Unhealthy(_) => HealthStatus::Unhealthy(self.failing_summary()),
        }
    }

    /// False if any check is unhealthy.
    pub fn is_serving(&self) -> bool {
        !matches!(self.overall(), HealthStatus::Unhealthy(_))
    }

    fn failing_summary(&self) -> String {
        let names: Vec<&str> =
            self.checks.iter().filter(|(_, s)| **s != HealthStatus::Ok).map(|(n, _)| n.as_str()).collect();
        names.join(", ")
    }

    /// `{"status": "ok", "node": ..., "uptime_seconds": ..., "checks": {name: {"status", "detail"?}}}`.
    pub fn to_json(&self) -> Value {
        let checks: serde_json::Map<String, Value> = self
            .checks
            .iter()
            .map(|(name, s)| {
                let mut o = serde_json::Map::new();
                o.insert("status".into(), Value::from(s.as_str()));
                if let Some(d) = s.detail() {
                    o.insert("detail".into(), Value::from(d));
                }
                (name.clone(), Value::Object(o))
            })
            .collect();
        json!({
            "status": self.overall().as_str(),
            "node": self.node,
            "uptime_seconds": finite(self.uptime.as_secs_f64()),
            "checks": checks,
        })
    }
}

/// `x`, or 0 if it is NaN or infinite (JSON has no such numbers).
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Latency profile of one external service (ZooKeeper or Redis), iFun's
/// `distribution_profiling` shape: all commands together plus each operation kind.
pub struct ServiceProfile {
    nodes: Mutex<String>,
    /// Every command except `connect`.
    total: LatencyProfile,
    ops: Mutex<BTreeMap<&'static str, Arc<LatencyProfile>>>,
    /// Sessions (ZooKeeper) opened through an instrumented connector, weakly held.
    sessions: Mutex<Vec<Weak<dyn Coord>>>,
    /// Clients (Redis) wrapped by an instrumented decorator.
    clients: AtomicU64,
    instrumented: std::sync::atomic::AtomicBool,
}

impl ServiceProfile {
    fn new(nodes: &str) -> Self {
        ServiceProfile {
            nodes: Mutex::new(nodes.to_owned()),
            total: LatencyProfile::default(),
            ops: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(Vec::new()),
            clients: AtomicU64::new(0),
            instrumented: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The profile of one operation kind (created on first use).
    pub fn op(&self, op: &'static str) -> Arc<LatencyProfile> {
        lock(&self.ops).entry(op).or_default().clone()
    }

    /// All commands together (everything but `connect`).
    pub fn total(&self) -> &LatencyProfile {
        &self.total
    }

    /// Records one command of kind `op` that took `d`, finishing at `now`.
    pub fn record(&self, op: &'static str, now: MonoTime, d: Duration) {
        if op != coord::OP_CONNECT {
            self.total.record(now, d);
        }
        self.op(op).record(now, d);
    }

    /// States of the live sessions (dead or terminal ones are forgotten).
    fn session_states(&self) -> Vec<SessionState> {
        let mut sessions = lock(&self.sessions);
        let mut states = Vec::new();
        sessions.retain(|w| match w.upgrade() {
            Some(c) => {
                let s = c.state();
                if s.is_terminal() {
                    false
                } else {
                    states.push(s);
                    true
                }
            }
            None => false,
        });
        states
    }

    fn track_session(&self, c: &Arc<dyn Coord>) {
        let mut sessions = lock(&self.sessions);
        sessions.retain(|w| w.strong_count() > 0);
        sessions.push(Arc::downgrade(c));
    }

    fn to_json(&self, now: MonoTime, client_count: u64) -> Value {
        let total = self.total.snapshot(now);
        let ops: serde_json::Map<String, Value> =
            lock(&self.ops).iter().map(|(op, p)| ((*op).to_owned(), p.snapshot(now).to_json())).collect();
        let mut v = total.to_json();
        let o = v.as_object_mut().expect("snapshot json is an object");
        o.insert("nodes".into(), Value::from(lock(&self.nodes).clone()));
        o.insert("client_count".into(), Value::from(client_count));
        o.insert("operations".into(), Value::Object(ops));
        v
    }
}

impl Metrics {
    /// A new, empty registry for `node`, reading time from `clock`.
    pub fn new(node: impl Into<Arc<str>>, clock: Arc<dyn Clock>) -> Metrics {
        let started = clock.now();
        let m = Metrics {
            inner: Arc::new(Registry {
                node: node.into(),
                clock,
                started,
                families: Mutex::new(BTreeMap::new()),
                health: Mutex::new(BTreeMap::new()),
                zookeeper: ServiceProfile::new("localhost:2181"),
                redis: ServiceProfile::new(""),
            }),
        };
        let weak = Arc::downgrade(&m.inner);
        m.register_gauge_fn(
            "sandtable_uptime_seconds",
            "Seconds since the metrics registry was created.",
            move || weak.upgrade().map_or(0.0, |r| r.clock.now().saturating_since(r.started).as_secs_f64()),
        );
        m
    }

    /// [`Metrics::new`] with the node's name and clock.
    pub fn for_env(env: &Env) -> Metrics {
        Metrics::new(env.node.clone(), env.clock.clone())
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The clock the registry reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Time since the registry was created.
    pub fn uptime(&self) -> Duration {
        self.inner.clock.now().saturating_since(self.inner.started)
    }

    /// True if `a` and `b` are handles of the same registry.
    pub fn same(a: &Metrics, b: &Metrics) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// Finds or creates the family `name`. `None` (and an error log) if the name or labels
    /// are invalid or the name is taken by a family of another kind or label set.
    fn family(&self, name: &str, help: &str, kind: Kind, labels: &[&str]) -> Option<Arc<Family>> {
        if let Err(why) = text::check_name(name, labels, matches!(kind, Kind::Histogram(_))) {
            tracing::error!(metric = name, why, "metrics: invalid metric; not registered");
            return None;
        }
        let mut families = lock(&self.inner.families);
        if let Some(f) = families.get(name) {
            let compatible = f.kind == kind && f.labels.iter().map(String::as_str).eq(labels.iter().copied());
            if !compatible {
                tracing::error!(
                    metric = name,
                    "metrics: name already registered with another kind or labels"
                );
                return None;
            }
            return Some(f.clone());
        }
        let f = Arc::new(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            series: Mutex::new(BTreeMap::new()),
            gauge_fn: Mutex::new(None),
        });
        families.insert(name.to_owned(), f.clone());
        Some(f)
    }

    /// The unlabelled counter `name` (registered on first call; later calls return the
    /// same counter). Counter names should end in `_total`.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        self.counter_vec(name, help, &[]).with(&[])
    }

    /// The counter family `name` with the given label names.
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        CounterVec { family: self.family(name, help, Kind::Counter, labels) }
    }

    /// The unlabelled gauge `name`.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.gauge_vec(name, help, &[]).with(&[])
    }

    /// The gauge family `name` with the given label names.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        GaugeVec { family: self.family(name, help, Kind::Gauge, labels) }
    }

    /// The unlabelled histogram `name` with upper bounds `buckets` in seconds (strictly
    /// increasing, finite; `+Inf` is implied). [`LATENCY_BUCKETS`] suits RPC and service calls.
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.histogram_vec(name, help, &[], buckets).with(&[])
    }

    /// The histogram family `name` with the given label names and buckets.
    pub fn histogram_vec(&self, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
        if let Err(why) = histogram::check_buckets(buckets) {
            tracing::error!(metric = name, why, "metrics: invalid buckets; not registered");
            return HistogramVec::default();
        }
        HistogramVec { family: self.family(name, help, Kind::Histogram(Arc::from(buckets)), labels) }
    }

    /// A gauge whose value is `f()` at every read (scrape), e.g. the live sessions:
    /// `metrics.register_gauge_fn("game_sessions", "...", move || sessions.sessions().len() as f64)`.
    /// Registering the same name again replaces the function. The registry holds `f` as long
    /// as it lives: capture `Weak` references to components that hold the registry, or the
    /// two keep each other alive. `f` runs without any registry lock held.
    pub fn register_gauge_fn(&self, name: &str, help: &str, f: impl Fn() -> f64 + Send + Sync + 'static) {
        if let Some(fam) = self.family(name, help, Kind::GaugeFn, &[]) {
            *lock(&fam.gauge_fn) = Some(Arc::new(f));
        }
    }

    /// Adds (or replaces, by name) a check run by every [`health`](Self::health) read.
    pub fn register_health_check(&self, name: &str, f: impl Fn() -> HealthStatus + Send + Sync + 'static) {
        lock(&self.inner.health).insert(name.to_owned(), Arc::new(f));
    }

    /// Runs every health check. With an instrumented coordination connector, the check
    /// `zookeeper` is built in: unhealthy while no open session is connected.
    pub fn health(&self) -> HealthReport {
        let checks: Vec<(String, Arc<HealthFn>)> =
            lock(&self.inner.health).iter().map(|(n, f)| (n.clone(), f.clone())).collect();
        let mut out: BTreeMap<String, HealthStatus> = checks.into_iter().map(|(n, f)| (n, f())).collect();
        let zk = &self.inner.zookeeper;
        if zk.instrumented.load(Ordering::Relaxed) {
            out.insert("zookeeper".into(), self.zookeeper_health());
        }
        HealthReport { node: self.inner.node.to_string(), uptime: self.uptime(), checks: out }
    }

    fn zookeeper_health(&self) -> HealthStatus {
        let states = self.inner.zookeeper.session_states();
        let connected = states.iter().filter(|s| **s == SessionState::Connected).count();
        let nodes = lock(&self.inner.zookeeper.nodes).clone();
        if states.is_empty() {
            HealthStatus::Unhealthy(format!("no open coordination session (nodes {nodes})"))
        } else if connected == 0 {
            HealthStatus::Unhealthy(format!(
                "{} coordination session(s), none connected (nodes {nodes})",
                states.len()
            ))
        } else if connected < states.len() {
            HealthStatus::Degraded(format!("{connected} of {} coordination sessions connected", states.len()))
        } else {
            HealthStatus::Ok
        }
    }

    /// Sets the ZooKeeper ensemble shown as `zookeeper.nodes` in the profile (iFun shows its
    /// `zookeeper_nodes` setting; default `localhost:2181`, iFun's default).
    pub fn set_zookeeper_nodes(&self, nodes: impl Into<String>) {
        *lock(&self.inner.zookeeper.nodes) = nodes.into();
    }

    /// Sets the Redis address shown as `redis.nodes` in the profile.
    pub fn set_redis_nodes(&self, nodes: impl Into<String>) {
        *lock(&self.inner.redis.nodes) = nodes.into();
    }

    /// The ZooKeeper latency profile (fed by [`InstrumentedConnector`]).
    pub fn zookeeper(&self) -> &ServiceProfile {
        &self.inner.zookeeper
    }

    /// The Redis latency profile (fed by [`InstrumentedKv`]).
    pub fn redis(&self) -> &ServiceProfile {
        &self.inner.redis
    }

    /// Open coordination sessions and how many of them are connected.
    pub fn coord_sessions(&self) -> (usize, usize) {
        let states = self.inner.zookeeper.session_states();
        (states.len(), states.iter().filter(|s| **s == SessionState::Connected).count())
    }

    /// iFun's `GET /v1/counters/funapi/distribution_profiling/` body:
    ///
    /// ```json
    /// {"zookeeper": {"nodes": "localhost:2181", "client_count": 1,
    ///                "all_time": {"execution_count": 3, "execution_time_mean_in_sec": 0.002,
    ///                             "execution_time_stdev_in_sec": 0.0008,
    ///                             "execution_time_max_in_sec": 0.003},
    ///                "last1min": {...},
    ///                "operations": {"create": {"all_time": {...}, "last1min": {...}}, ...}},
    ///  "redis": {...same shape...}}
    /// ```
    ///
    /// `nodes` is the configured ensemble (iFun's `zookeeper_nodes`), `client_count` the open
    /// ZooKeeper sessions of this process (iFun: its connections to ZooKeeper). `all_time`
    /// covers every command since start, `last1min` the commands finished in the last 60
    /// seconds of the `Clock` port's monotonic time (60 one-second buckets). Times are in
    /// seconds; the standard deviation is the population one (0 for a single command).
    /// `operations` (per command kind) and `redis` are Sandtable's additions; an iFun
    /// consumer reading `zookeeper.all_time` and `zookeeper.last1min` sees iFun's shape.
    pub fn distribution_profiling_json(&self) -> Value {
        let now = self.inner.clock.now();
        let zk_clients = self.inner.zookeeper.session_states().len() as u64;
        let redis_clients = self.inner.redis.clients.load(Ordering::Relaxed);
        json!({
            "zookeeper": self.inner.zookeeper.to_json(now, zk_clients),
            "redis": self.inner.redis.to_json(now, redis_clients),
        })
    }

    /// Every family in the Prometheus text exposition format 0.0.4
    /// (`Content-Type: text/plain; version=0.0.4`), families sorted by name.
    pub fn render_prometheus(&self) -> String {
        let families: Vec<Arc<Family>> = lock(&self.inner.families).values().cloned().collect();
        let mut out = String::new();
        for f in families {
            let gauge_fn = lock(&f.gauge_fn).clone();
            let series: Vec<(Vec<String>, Cell)> =
                lock(&f.series).iter().map(|(k, c)| (k.clone(), c.clone())).collect();
            text::write_family(&mut out, &f, gauge_fn.map(|g| g()), &series);
        }
        out
    }
}

/// Wraps `env`'s coordination connector and Redis client so every call is measured in
/// `metrics` (see [`InstrumentedConnector`] and [`InstrumentedKv`]). Everything else is
/// unchanged. Apply it once, where the `Env` is built.
pub fn instrument_env(mut env: Env, metrics: &Metrics) -> Env {
    env.coord = instrument_coord(env.coord, metrics);
    env.kv = instrument_kv(env.kv, metrics);
    env
}
