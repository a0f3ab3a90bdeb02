//! Unit tests: histogram buckets, moments, the last-minute window, Prometheus text, the
//! `distribution_profiling` JSON and the instrumented coordination port, on a manual clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::executor::block_on;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::*;
use crate::env::{
    Coord, CoordConnector, CoordError, CreateMode, MultiError, Op, OpResult, SessionEvent, SessionOptions,
    SessionState, Stat, Watcher,
};
use crate::testing::ManualClock;

fn registry() -> (Metrics, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (Metrics::new("game-1", clock.clone()), clock)
}

const MS: Duration = Duration::from_millis(1);

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn histogram_buckets_are_upper_inclusive() {
    let (m, _) = registry();
    let h = m.histogram("t_seconds", "t", &[0.001, 0.01, 0.1]);
    h.observe(Duration::ZERO); // <= 0.001
    h.observe(MS); // exactly on a bound: that bucket
    h.observe(Duration::from_micros(1001)); // just above: the next
    h.observe(Duration::from_millis(100));
    h.observe(Duration::from_secs(20)); // +Inf
    assert_eq!(h.bucket_counts(), vec![2, 1, 1, 1]);
    assert_eq!(h.count(), 5);
    assert_eq!(h.sum(), Duration::from_micros(20_102_001));
    let text = m.render_prometheus();
    assert!(text.contains("t_seconds_bucket{le=\"0.001\"} 2\n"), "{text}");
    assert!(text.contains("t_seconds_bucket{le=\"0.01\"} 3\n"), "{text}");
    assert!(text.contains("t_seconds_bucket{le=\"0.1\"} 4\n"), "{text}");
    assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 5\n"), "{text}");
    assert!(text.contains("t_seconds_sum 20.102001\n"), "{text}");
    assert!(text.contains("t_seconds_count 5\n"), "{text}");
}

#[test]
fn invalid_buckets_and_names_give_no_op_handles() {
    let (m, _) = registry();
    for bad in [&[][..], &[0.1, 0.1], &[0.2, 0.1], &[f64::NAN], &[-1.0], &[f64::INFINITY]] {
        let h = m.histogram("h_seconds", "h", bad);
        h.observe(MS);
        assert_eq!(h.count(), 0, "{bad:?}");
    }
    for bad in ["", "1abc", "a-b", "a b"] {
        let c = m.counter(bad, "x");
        c.inc();
        assert_eq!(c.get(), 0, "{bad:?}");
    }
    assert_eq!(m.counter_vec("c_total", "x", &["__x"]).with(&["v"]).get(), 0);
    assert_eq!(m.counter_vec("d_total", "x", &["a", "a"]).with(&["1", "2"]).get(), 0);
    assert_eq!(m.histogram_vec("e_seconds", "x", &["le"], LATENCY_BUCKETS).with(&["1"]).count(), 0);
    // A name taken by another kind, or with other labels: no-op, the first stays.
    let c = m.counter("taken_total", "x");
    c.inc();
    m.gauge("taken_total", "x").set(5);
    m.counter_vec("taken_total", "x", &["a"]).with(&["1"]).inc();
    assert_eq!(m.counter("taken_total", "x").get(), 1, "same name and kind: the same counter");
    // Wrong number of label values.
    let v = m.counter_vec("f_total", "x", &["a", "b"]);
    v.with(&["only one"]).inc();
    assert_eq!(v.with(&["only one"]).get(), 0);
    assert!(!m.render_prometheus().contains("only one"));
}

#[test]
fn series_past_the_cap_share_the_overflow_series() {
    let (m, _) = registry();
    let v = m.counter_vec("calls_total", "x", &["method"]);
    for i in 0..SERIES_PER_FAMILY_MAX + 10 {
        v.with(&[&format!("m{i}")]).inc();
    }
    assert_eq!(v.with(&["m0"]).get(), 1);
    assert_eq!(v.with(&[OVERFLOW_LABEL]).get(), 10);
    assert_eq!(v.with(&["never seen"]).get(), 10, "new values map to the overflow series");
}

#[test]
fn moments_mean_stdev_max() {
    let mut m = Moments::default();
    assert_eq!(m.stdev(), 0.0);
    assert_eq!(
        m.to_json(),
        serde_json::json!({"execution_count": 0, "execution_time_mean_in_sec": 0.0,
            "execution_time_stdev_in_sec": 0.0, "execution_time_max_in_sec": 0.0})
    );
    m.push(0.25);
    assert_eq!((m.count, m.mean, m.stdev(), m.max), (1, 0.25, 0.0, 0.25), "one sample: stdev 0");
    for x in [0.5, 0.75, 1.0] {
        m.push(x);
    }
    assert!(close(m.mean, 0.625));
    // Population stdev of {0.25, 0.5, 0.75, 1}: sqrt(0.078125).
    assert!(close(m.stdev(), 0.078125f64.sqrt()), "{}", m.stdev());
    assert_eq!(m.max, 1.0);
    // Merging halves gives the same as pushing all.
    let (mut a, mut b) = (Moments::default(), Moments::default());
    a.push(0.25);
    a.push(0.5);
    b.push(0.75);
    b.push(1.0);
    a.merge(&b);
    assert_eq!(a.count, 4);
    assert!(close(a.mean, m.mean) && close(a.stdev(), m.stdev()) && a.max == m.max);
    // Equal samples: no negative variance from rounding, no NaN.
    let mut same = Moments::default();
    for _ in 0..1000 {
        same.push(0.001);
    }
    assert_eq!(same.stdev(), 0.0);
}

#[test]
fn last1min_window_expires_by_monotonic_second() {
    let p = LatencyProfile::default();
    let at = |ms: u64| MonoTime::from_nanos(ms * 1_000_000);
    p.record(at(500), Duration::from_millis(10)); // second 0
    p.record(at(30_000), Duration::from_millis(20)); // second 30
    let s = p.snapshot(at(30_000));
    assert_eq!((s.last1min.count, s.all_time.count), (2, 2));
    assert!(close(s.last1min.mean, 0.015));
    assert!(close(s.last1min.max, 0.02));
    // Second 59 still sees second 0; second 60 no longer does.
    assert_eq!(p.snapshot(at(59_999)).last1min.count, 2);
    let s = p.snapshot(at(60_000));
    assert_eq!((s.last1min.count, s.all_time.count), (1, 2));
    assert!(close(s.last1min.mean, 0.02));
    assert_eq!(s.last1min.stdev(), 0.0);
    assert_eq!(p.snapshot(at(89_999)).last1min.count, 1);
    assert_eq!(p.snapshot(at(90_000)).last1min.count, 0);
    assert_eq!(p.snapshot(at(90_000)).last1min.to_json()["execution_time_mean_in_sec"], 0.0);
    // Second 60 reuses second 0's slot: the old sample is gone, not merged.
    p.record(at(60_100), Duration::from_millis(30));
    let s = p.snapshot(at(60_100));
    assert_eq!(s.last1min.count, 2, "seconds 30 and 60");
    assert!(close(s.last1min.max, 0.03));
    assert_eq!(s.all_time.count, 3);
    assert!(close(s.all_time.max, 0.03));
}

#[test]
fn prometheus_text() {
    let (m, clock) = registry();
    let calls =
        m.counter_vec("sandtable_test_calls_total", "Calls made.\nSecond line with a \\.", &["method"]);
    calls.with(&["echo"]).add(3);
    calls.with(&["quote\"back\\slash\nnewline"]).inc();
    m.gauge("sandtable_test_queue", "Queued items.").set(-2);
    m.register_gauge_fn("sandtable_test_sessions", "Live sessions.", || 7.0);
    m.register_gauge_fn("sandtable_test_nan", "Not a number.", || f64::NAN);
    let h = m.histogram_vec("sandtable_test_latency_seconds", "Latency.", &["op"], &[0.005, 0.5]);
    h.with(&["get"]).observe(Duration::from_millis(2));
    h.with(&["get"]).observe(Duration::from_millis(7));
    h.with(&["set"]).observe(Duration::from_secs(3));
    m.counter_vec("sandtable_test_empty_total", "Never incremented.", &["kind"]);
    clock.advance(Duration::from_millis(1500));
    insta::assert_snapshot!("prometheus_text", m.render_prometheus());
    // Rendering is a pure read: twice gives the same bytes.
    assert_eq!(m.render_prometheus(), m.render_prometheus());
}

#[test]
fn gauge_fn_is_replaced_and_reads_live_state() {
    let (m, _) = registry();
    let live = Arc::new(AtomicU64::new(3));
    let l = live.clone();
    m.register_gauge_fn("sessions", "s", move || l.load(Ordering::Relaxed) as f64);
    assert!(m.render_prometheus().contains("\nsessions 3\n"));
    live.store(5, Ordering::Relaxed);
    assert!(m.render_prometheus().contains("\nsessions 5\n"));
    m.register_gauge_fn("sessions", "s", || 1.5);
    assert!(m.render_prometheus().contains("\nsessions 1.5\n"));
}

#[test]
fn health_checks() {
    let (m, clock) = registry();
    clock.advance(Duration::from_secs(12));
    let r = m.health();
    assert_eq!(r.overall(), HealthStatus::Ok);
    assert_eq!(
        r.to_json(),
        serde_json::json!({"status": "ok", "node": "game-1", "uptime_seconds": 12.0, "checks": {}})
    );
    m.register_health_check("db", || HealthStatus::Degraded("slow".into()));
    let r = m.health();
    assert!(r.is_serving());
    assert_eq!(r.to_json()["status"], "degraded");
    assert_eq!(r.to_json()["checks"]["db"], serde_json::json!({"status": "degraded", "detail": "slow"}));
    m.register_health_check("disk", || HealthStatus::Unhealthy("full".into()));
    let r = m.health();
    assert!(!r.is_serving());
    assert_eq!(r.overall(), HealthStatus::Unhealthy("db, disk".into()));
}

// ----- the instrumented coordination port -----

/// Answers at once, moving the manual clock by a fixed time per call kind.
struct FakeConnector {
    clock: Arc<ManualClock>,
    connected: Arc<AtomicBool>,
}

struct FakeCoord {
    clock: Arc<ManualClock>,
    connected: Arc<AtomicBool>,
}

impl CoordConnector for FakeConnector {
    fn connect(&self, _opts: SessionOptions) -> BoxFuture<'_, Result<Arc<dyn Coord>, CoordError>> {
        self.clock.advance(5 * MS);
        let c: Arc<dyn Coord> =
            Arc::new(FakeCoord { clock: self.clock.clone(), connected: self.connected.clone() });
        Box::pin(futures::future::ready(Ok(c)))
    }
}

#[async_trait]
impl Coord for FakeCoord {
    fn session_id(&self) -> i64 {
        1
    }
    fn negotiated_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn state(&self) -> SessionState {
        if self.connected.load(Ordering::SeqCst) {
            SessionState::Connected
        } else {
            SessionState::Disconnected
        }
    }
    fn session_events(&self) -> BoxStream<'static, SessionEvent> {
        Box::pin(futures::stream::empty())
    }
    async fn create(&self, path: &str, _data: Bytes, _mode: CreateMode) -> Result<String, CoordError> {
        self.clock.advance(2 * MS);
        Ok(path.to_owned())
    }
    async fn delete(&self, _path: &str, _version: Option<i32>) -> Result<(), CoordError> {
        self.clock.advance(3 * MS);
        Err(CoordError::BadVersion)
    }
    async fn get_data(&self, _path: &str) -> Result<(Bytes, Stat), CoordError> {
        self.clock.advance(MS);
        Err(CoordError::NoNode)
    }
    async fn get_data_w(&self, _path: &str) -> Result<(Bytes, Stat, Watcher), CoordError> {
        unreachable!("not used")
    }
    async fn exists(&self, _path: &str) -> Result<Option<Stat>, CoordError> {
        unreachable!("not used")
    }
    async fn exists_w(&self, _path: &str) -> Result<(Option<Stat>, Watcher), CoordError> {
        unreachable!("not used")
    }
    async fn set_data(&self, _path: &str, _data: Bytes, _version: Option<i32>) -> Result<Stat, CoordError> {
        unreachable!("not used")
    }
    async fn get_children(&self, _path: &str) -> Result<Vec<String>, CoordError> {
        unreachable!("not used")
    }
    async fn get_children_w(&self, _path: &str) -> Result<(Vec<String>, Watcher), CoordError> {
        unreachable!("not used")
    }
    async fn multi(&self, _ops: Vec<Op>) -> Result<Vec<OpResult>, MultiError> {
        self.clock.advance(4 * MS);
        Err(MultiError { index: 1, error: CoordError::ConnectionLoss { maybe_applied: true } })
    }
    async fn close(&self) {}
}

#[test]
fn instrumented_coord_feeds_histograms_errors_profile_and_health() {
    let (m, clock) = registry();
    m.set_zookeeper_nodes("10.0.0.1:2181,10.0.0.2:2181");
    let connected = Arc::new(AtomicBool::new(true));
    let raw: Arc<dyn CoordConnector> =
        Arc::new(FakeConnector { clock: clock.clone(), connected: connected.clone() });
    let connector = instrument_coord(raw, &m);
    let health = m.health();
    assert_eq!(
        health.checks["zookeeper"],
        HealthStatus::Unhealthy("no open coordination session (nodes 10.0.0.1:2181,10.0.0.2:2181)".into())
    );
    clock.advance_to(MonoTime::from_nanos(100_000_000_000));
    let coord = block_on(connector.connect(SessionOptions::default())).unwrap();
    block_on(async {
        coord.create("/a", Bytes::new(), CreateMode::Persistent).await.unwrap();
        coord.create("/b", Bytes::new(), CreateMode::Persistent).await.unwrap();
        assert_eq!(coord.get_data("/c").await.unwrap_err(), CoordError::NoNode);
        assert_eq!(coord.delete("/a", Some(3)).await.unwrap_err(), CoordError::BadVersion);
        assert!(coord.multi(vec![]).await.is_err());
    });
    assert_eq!(m.health().checks["zookeeper"], HealthStatus::Ok);
    assert_eq!(m.coord_sessions(), (1, 1));

    let text = m.render_prometheus();
    for line in [
        "sandtable_coord_op_duration_seconds_bucket{op=\"create\",le=\"0.0025\"} 2",
        "sandtable_coord_op_duration_seconds_count{op=\"connect\"} 1",
        "sandtable_coord_op_duration_seconds_sum{op=\"multi\"} 0.004",
        "sandtable_coord_op_errors_total{op=\"get_data\",error=\"no_node\"} 1",
        "sandtable_coord_op_errors_total{op=\"delete\",error=\"bad_version\"} 1",
        "sandtable_coord_op_errors_total{op=\"multi\",error=\"connection_loss\"} 1",
        "sandtable_coord_sessions 1",
        "sandtable_coord_sessions_connected 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    // 30 s later the same commands are still in last1min; 60 s after them they are not.
    clock.advance(Duration::from_secs(30));
    let j = m.distribution_profiling_json();
    insta::assert_snapshot!("distribution_profiling", serde_json::to_string_pretty(&j).unwrap());
    let zk = &j["zookeeper"];
    assert_eq!(zk["nodes"], "10.0.0.1:2181,10.0.0.2:2181");
    assert_eq!(zk["client_count"], 1);
    assert_eq!(zk["all_time"]["execution_count"], 5, "connect is not a command");
    assert_eq!(zk["all_time"]["execution_time_max_in_sec"], 0.004);
    assert_eq!(zk["last1min"]["execution_count"], 5);
    assert_eq!(zk["operations"]["create"]["all_time"]["execution_count"], 2);
    assert_eq!(zk["operations"]["create"]["all_time"]["execution_time_stdev_in_sec"], 0.0);
    assert_eq!(zk["operations"]["connect"]["all_time"]["execution_count"], 1);
    clock.advance(Duration::from_secs(31));
    let j = m.distribution_profiling_json();
    assert_eq!(j["zookeeper"]["last1min"]["execution_count"], 0);
    assert_eq!(j["zookeeper"]["all_time"]["execution_count"], 5);

    // A disconnected session makes the node unhealthy; a dropped one is forgotten.
    connected.store(false, Ordering::SeqCst);
    assert!(
        matches!(&m.health().checks["zookeeper"], HealthStatus::Unhealthy(d) if d.contains("none connected"))
    );
    assert_eq!(m.coord_sessions(), (1, 0));
    drop(coord);
    assert_eq!(m.coord_sessions(), (0, 0));
    assert!(m.render_prometheus().lines().any(|l| l == "sandtable_coord_sessions 0"));
}

#[test]
fn json_never_holds_nan() {
    let (m, _) = registry();
    let p = m.zookeeper().op("get_data");
    p.record(MonoTime(0), Duration::ZERO);
    let text = m.distribution_profiling_json().to_string();
    assert!(!text.contains("null") && !text.contains("NaN"), "{text}");
}
