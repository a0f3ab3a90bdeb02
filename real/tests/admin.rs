//! The admin HTTP API over real HTTP/1.1: endpoints, status codes, content types, bad
//! requests, graceful shutdown; and a live node (private ZooKeeper and Redis) whose RPC,
//! account, storage and coordination metrics show up on the endpoints.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{blocking, eventually, within};
use engine::account::{AccountConfig, AccountManager, ClientLink, LinkId, LoginOutcome};
use engine::cluster::{Cluster, ClusterConfig};
use engine::env::{Clock, SessionOptions};
use engine::metrics::{HealthStatus, Metrics};
use engine::rpc::messages::{EchoReply, EchoRequest};
use engine::rpc::{CallOptions, HandlerError, Rpc, RpcConfig};
use engine::storage::{CrossServerStorage, StorageConfig};
use real::adapters::TokioClock;
use real::admin::{serve, Admin, PATH_DISTRIBUTION_PROFILING, PATH_HEALTH, PATH_METRICS};
use real::env::{real_env_with_metrics, RealEnvConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One parsed HTTP/1.1 response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn has_line(&self, line: &str) -> bool {
        self.body.lines().any(|l| l == line)
    }
}

/// Sends `raw` on a new connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    within(Duration::from_secs(10), "an admin api answer", async {
        let mut s = TcpStream::connect(addr).await.expect("connect to the admin api");
        s.write_all(raw).await.expect("send");
        let mut out = Vec::new();
        // A reset after the answer (hyper closing on a bad request) ends the read too.
        let _ = s.read_to_end(&mut out).await;
        out
    })
    .await
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply { status, headers, body: body.to_owned() }
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    parse(&exchange(addr, raw.as_bytes()).await)
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path).await
}

/// A registry with a little of everything, on the real clock.
fn sample_metrics() -> Metrics {
    let clock = Arc::new(TokioClock::default());
    let m = Metrics::new("game-1", clock.clone());
    m.set_zookeeper_nodes("localhost:2181");
    m.counter_vec("sandtable_test_logins_total", "Logins.", &["result"]).with(&["ok"]).add(3);
    m.register_gauge_fn("sandtable_test_sessions", "Live sessions.", || 2.0);
    let now = clock.now();
    for ms in [2, 4, 6] {
        m.zookeeper().record("create", now, Duration::from_millis(ms));
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_status_codes_and_content_types() {
    let metrics = sample_metrics();
    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let admin = Admin::new(metrics.clone()).health_check("game", move || {
        if b.load(Ordering::SeqCst) {
            HealthStatus::Unhealthy("game loop stuck".into())
        } else {
            HealthStatus::Ok
        }
    });
    let handle = serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), admin).await.expect("serve");
    let addr = handle.local_addr();

    let r = get(addr, PATH_HEALTH).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), "application/json");
    let j = r.json();
    assert_eq!(j["status"], "ok");
    assert_eq!(j["node"], "game-1");
    assert!(j["uptime_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{j}");
    assert_eq!(j["checks"]["game"]["status"], "ok");
    println!("GET {PATH_HEALTH} -> {}\n{}", r.status, r.body);

    let r = get(addr, PATH_DISTRIBUTION_PROFILING).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    let zk = &r.json()["zookeeper"];
    assert_eq!(zk["nodes"], "localhost:2181");
    assert_eq!(zk["client_count"], 0);
    for window in ["all_time", "last1min"] {
        let w = &zk[window];
        assert_eq!(w["execution_count"], 3, "{window}");
        assert!((w["execution_time_mean_in_sec"].as_f64().unwrap() - 0.004).abs() < 1e-9);
        assert!((w["execution_time_max_in_sec"].as_f64().unwrap() - 0.006).abs() < 1e-9);
        // Population stdev of {2, 4, 6} ms.
        let stdev = w["execution_time_stdev_in_sec"].as_f64().unwrap();
        assert!((stdev - (8.0f64 / 3.0).sqrt() / 1000.0).abs() < 1e-9, "{stdev}");
    }
    println!("GET {PATH_DISTRIBUTION_PROFILING} -> {}\n{}", r.status, r.body);
    let r = get(addr, PATH_DISTRIBUTION_PROFILING.trim_end_matches('/')).await;
    assert_eq!(r.status, 200, "the path without the trailing slash works too");

    let r = get(addr, &format!("{PATH_METRICS}?name=ignored")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    assert!(r.has_line("# TYPE sandtable_test_logins_total counter"), "{}", r.body);
    assert!(r.has_line("sandtable_test_logins_total{result=\"ok\"} 3"), "{}", r.body);
    assert!(r.has_line("sandtable_test_sessions 2"), "{}", r.body);
    println!("GET {PATH_METRICS} -> {}\n{}", r.status, r.body);

    let r = request(addr, "HEAD", PATH_METRICS).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "HEAD has no body: {:?}", r.body);

    let r = get(addr, "/v1/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.json()["error"], "not_found");
    println!("GET /v1/nope -> {}\n{}", r.status, r.body);

    let r = request(addr, "POST", PATH_METRICS).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "GET, HEAD");
    assert_eq!(r.json()["error"], "method_not_allowed");
    let r = request(addr, "DELETE", PATH_HEALTH).await;
    assert_eq!(r.status, 405);

    // Garbage, a truncated request and an oversized header do not take the server down.
    let garbage = exchange(addr, b"\x00\x01\x02 this is not http\r\n\r\n").await;
    assert!(garbage.is_empty() || parse(&garbage).status == 400, "{:?}", String::from_utf8_lossy(&garbage));
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
    } // closed half-way
    let huge = format!("GET {PATH_HEALTH} HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    let answer = exchange(addr, huge.as_bytes()).await;
    assert!(answer.is_empty() || parse(&answer).status >= 400);
    assert_eq!(get(addr, PATH_HEALTH).await.status, 200, "still serving after bad requests");

    // Keep-alive: two requests on one connection.
    let two = format!(
        "GET {PATH_HEALTH} HTTP/1.1\r\nHost: x\r\n\r\n\
         GET {PATH_METRICS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let raw = String::from_utf8_lossy(&exchange(addr, two.as_bytes()).await).into_owned();
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 2, "{raw}");

    // A failing check makes the node unhealthy: 503; a panicking one is a 500, nothing more.
    broken.store(true, Ordering::SeqCst);
    let r = get(addr, PATH_HEALTH).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "unhealthy");
    assert_eq!(r.json()["checks"]["game"]["detail"], "game loop stuck");
    println!("GET {PATH_HEALTH} (unhealthy) -> {}\n{}", r.status, r.body);
    metrics.register_health_check("game", || panic!("check exploded"));
    assert_eq!(get(addr, PATH_HEALTH).await.status, 500);
    metrics.register_health_check("game", || HealthStatus::Degraded("slow ticks".into()));
    let r = get(addr, PATH_HEALTH).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "degraded");

    // Graceful shutdown: the port stops answering.
    within(Duration::from_secs(10), "admin shutdown", handle.shutdown()).await;
    assert!(TcpStream::connect(addr).await.is_err(), "nothing listens after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_an_error() {
    let first =
        serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), Admin::new(sample_metrics())).await.unwrap();
    let again = serve(first.local_addr(), Admin::new(sample_metrics())).await;
    assert!(again.is_err());
    drop(first);
}

/// A client connection for the account manager.
struct FakeLink {
    id: LinkId,
    open: AtomicBool,
}

impl ClientLink for FakeLink {
    fn link_id(&self) -> LinkId {
        self.id
    }
    fn send_json(&self, _msg_type: &str, _body: Value) -> bool {
        self.open.load(Ordering::SeqCst)
    }
    fn close(&self, _reason: &str) {
        self.open.store(false, Ordering::SeqCst);
    }
    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_node_metrics_and_zookeeper_health() {
    let mut zk = common::zk();
    let redis = common::redis();
    let (env, metrics) = real_env_with_metrics(&RealEnvConfig {
        node: "game-1".into(),
        ip: Ipv4Addr::LOCALHOST.into(),
        zookeeper: zk.connect_string(),
        redis_url: redis.url(),
        redis: Default::default(),
    })
    .expect("env");
    let session =
        SessionOptions { session_timeout: Duration::from_secs(2), connect_timeout: Duration::from_secs(10) };
    let rpc_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut ccfg = ClusterConfig::new("admin_test", "game-1", rpc_addr);
    ccfg.session = session;
    let cluster = within(Duration::from_secs(20), "cluster join", Cluster::join(env.clone(), ccfg))
        .await
        .expect("join");
    let rpc_cfg = RpcConfig { metrics: Some(metrics.clone()), ..RpcConfig::new(rpc_addr) };
    let rpc = Rpc::start(env.clone(), cluster.id(), Arc::new(cluster.clone()), rpc_cfg).await.expect("rpc");
    rpc.register_handler("echo", |_info, req: EchoRequest| async move {
        if req.message == "fail" {
            return Err(HandlerError::new("asked to fail"));
        }
        Ok(EchoReply { message: req.message })
    });
    let mut acfg = AccountConfig::new("admin_test");
    acfg.session = session;
    let am = within(
        Duration::from_secs(20),
        "account manager",
        AccountManager::start(env.clone(), cluster.clone(), rpc.clone(), acfg),
    )
    .await
    .expect("account manager");
    am.attach_metrics(&metrics);
    let storage =
        CrossServerStorage::from_env(&env, StorageConfig::enabled()).unwrap().with_metrics(&metrics);
    let handle =
        serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), Admin::new(metrics.clone())).await.unwrap();
    let addr = handle.local_addr();

    // Some traffic of every kind.
    let opts = || CallOptions::default().with_timeout(Duration::from_secs(5));
    let me = cluster.id();
    let rep: EchoReply =
        rpc.call(me, "echo", &EchoRequest { message: "hi".into() }, opts()).await.expect("echo");
    assert_eq!(rep.message, "hi");
    let failed: Result<EchoReply, _> =
        rpc.call(me, "echo", &EchoRequest { message: "fail".into() }, opts()).await;
    assert!(failed.is_err());
    let alice: Arc<dyn ClientLink> =
        Arc::new(FakeLink { id: LinkId::from_u128(1), open: AtomicBool::new(true) });
    let bob: Arc<dyn ClientLink> =
        Arc::new(FakeLink { id: LinkId::from_u128(2), open: AtomicBool::new(true) });
    assert_eq!(am.check_and_set_logged_in("alice", alice).await.unwrap(), LoginOutcome::LoggedIn);
    assert_eq!(am.check_and_set_logged_in("bob", bob.clone()).await.unwrap(), LoginOutcome::LoggedIn);
    let bob2: Arc<dyn ClientLink> =
        Arc::new(FakeLink { id: LinkId::from_u128(3), open: AtomicBool::new(true) });
    assert!(matches!(
        am.check_and_set_logged_in("bob", bob2).await.unwrap(),
        LoginOutcome::AlreadyLoggedIn { .. }
    ));
    assert!(am.set_logged_out("bob").await.unwrap());
    let key = storage.create(&serde_json::json!({"level": 3}), Duration::from_secs(30)).await.unwrap();
    storage.take(&key).await.unwrap();
    assert!(storage.take(&key).await.is_err());

    let m = get(addr, PATH_METRICS).await;
    assert_eq!(m.status, 200);
    for line in [
        "sandtable_rpc_client_calls_started_total{method=\"echo\"} 2",
        "sandtable_rpc_client_calls_completed_total{method=\"echo\",result=\"ok\"} 1",
        "sandtable_rpc_client_calls_completed_total{method=\"echo\",result=\"handler_error\"} 1",
        "sandtable_rpc_client_call_duration_seconds_count{method=\"echo\"} 2",
        "sandtable_rpc_server_requests_total{method=\"echo\",status=\"ok\"} 1",
        "sandtable_rpc_server_requests_total{method=\"echo\",status=\"handler_error\"} 1",
        "sandtable_rpc_server_handler_duration_seconds_count{method=\"echo\"} 2",
        "sandtable_account_logins_total{result=\"ok\"} 2",
        "sandtable_account_logins_total{result=\"already_logged_in\"} 1",
        "sandtable_account_logouts_total 1",
        "sandtable_account_logged_in 1",
        "sandtable_account_lease_held 1",
        "sandtable_storage_ops_total{op=\"create\",result=\"ok\"} 1",
        "sandtable_storage_ops_total{op=\"take\",result=\"ok\"} 1",
        "sandtable_storage_ops_total{op=\"take\",result=\"not_found\"} 1",
        "sandtable_kv_op_duration_seconds_count{op=\"take\"} 2",
        "sandtable_coord_op_duration_seconds_count{op=\"connect\"} 2",
        "sandtable_coord_sessions 2",
        "sandtable_coord_sessions_connected 2",
    ] {
        assert!(m.has_line(line), "missing {line:?} in\n{}", m.body);
    }
    assert!(m.body.contains("sandtable_coord_op_duration_seconds_bucket{op=\"create\",le=\"+Inf\"}"));
    println!("GET {PATH_METRICS} (live node) -> {}\n{}", m.status, m.body);

    let p = get(addr, PATH_DISTRIBUTION_PROFILING).await.json();
    let zkj = &p["zookeeper"];
    assert_eq!(zkj["nodes"], zk.connect_string());
    assert_eq!(zkj["client_count"], 2, "the cluster's and the account manager's sessions");
    let count = zkj["all_time"]["execution_count"].as_u64().unwrap();
    assert!(count >= 5, "{p}");
    assert!(zkj["last1min"]["execution_count"].as_u64().unwrap() >= 1);
    assert!(zkj["all_time"]["execution_time_mean_in_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(p["redis"]["nodes"], redis.addr().to_string());
    println!(
        "GET {PATH_DISTRIBUTION_PROFILING} (live node) -> 200\n{}",
        serde_json::to_string_pretty(&p).unwrap()
    );

    let h = get(addr, PATH_HEALTH).await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.json()["checks"]["zookeeper"]["status"], "ok");

    // ZooKeeper goes away: the sessions disconnect and the node reports 503.
    blocking(|| zk.stop());
    let down = eventually(Duration::from_secs(20), "health to report zookeeper down", || async {
        let r = get(addr, PATH_HEALTH).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(down.json()["checks"]["zookeeper"]["status"], "unhealthy");
    println!("GET {PATH_HEALTH} (zookeeper down) -> {}\n{}", down.status, down.body);

    handle.shutdown().await;
    rpc.shutdown().await;
    // Closing sessions at a stopped service is best effort: do not wait long for it.
    let _ = tokio::time::timeout(Duration::from_secs(2), am.stop()).await;
}
