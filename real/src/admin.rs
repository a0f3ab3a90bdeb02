//! The admin HTTP API (iFun's `ApiService`): health, iFun's ZooKeeper latency profile and
//! Prometheus metrics, served from one engine [`Metrics`] registry.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/health` | 200 `{"status": "ok" \| "degraded", "node", "uptime_seconds", "checks": {...}}`, or 503 with `"status": "unhealthy"` when a check fails (e.g. no connected ZooKeeper session) |
//! | `GET /v1/counters/funapi/distribution_profiling/` | iFun's JSON ([`Metrics::distribution_profiling_json`]) |
//! | `GET /metrics` | Prometheus text, `text/plain; version=0.0.4` ([`Metrics::render_prometheus`]) |
//! | another path | 404 `{"error": "not_found", "message", "endpoints"}` |
//! | another method on a known path | 405 `{"error": "method_not_allowed", ...}` with `Allow: GET, HEAD` |
//!
//! `HEAD` is accepted wherever `GET` is. Query strings are ignored. A malformed request gets
//! hyper's 400 and its connection is closed; a panicking health check or callback gauge
//! gives a 500 for that request only.
//!
//! # Connection limits
//! A health probe must be answered while the port is being abused, so connections are not
//! refused but *evicted*:
//! - at most [`MAX_CONNECTIONS`] are open at once;
//! - a connection arriving at the limit evicts the oldest *idle* connection — one with no
//!   response being written that has been idle for at least [`EVICT_IDLE_MIN`]: half-open
//!   connections dribbling a header, keep-alive connections between requests. Connections
//!   with a request in flight are never cut;
//! - with nothing to evict, the accept loop waits for a connection to end (the kernel's
//!   backlog, [`LISTEN_BACKLOG`](crate::adapters::LISTEN_BACKLOG) deep, holds the
//!   newcomers), so a burst of complete requests is answered, late rather
//!   than refused;
//! - there is no per-address limit: the port serves a few operators and scrapers, and a
//!   per-address cap measured worse — a flood from one address then refused the health probe
//!   from that same address, where oldest-first eviction admits it;
//! - a connection that sends no complete header within [`HEADER_READ_TIMEOUT`] is closed.
//!
//! ```no_run
//! # use engine::{manifest::Manifest, metrics::Metrics};
//! # async fn demo(metrics: Metrics, m: &Manifest) -> Result<(), Box<dyn std::error::Error>> {
//! use engine::metrics::{ApiConfig, HealthStatus};
//! let cfg = ApiConfig::from_manifest(m)?;
//! let admin = real::admin::Admin::from_config(metrics, &cfg)
//!     .health_check("game", || HealthStatus::Ok);
//! let handle = real::admin::serve(cfg.listen_addr(), admin).await?;
//! // ... run the server ...
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::metrics::{ApiConfig, HealthStatus, Metrics};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The health endpoint.
pub const PATH_HEALTH: &str = "/v1/health";
/// iFun's ZooKeeper profile endpoint (also answered without the trailing `/`).
pub const PATH_DISTRIBUTION_PROFILING: &str = "/v1/counters/funapi/distribution_profiling/";
/// The Prometheus endpoint.
pub const PATH_METRICS: &str = "/metrics";
/// Content type of `/metrics`.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A connection must deliver a complete request header within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection idle for less than this (just accepted, or just answered) is not evicted.
pub const EVICT_IDLE_MIN: Duration = Duration::from_millis(100);
/// How long [`AdminHandle::shutdown`] waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const JSON: &str = "application/json";
const ENDPOINTS: [&str; 3] = [PATH_HEALTH, PATH_DISTRIBUTION_PROFILING, PATH_METRICS];

/// What the admin server serves: a metrics registry (with its health checks) and how much
/// to log. Cheap to build; [`serve`] consumes it.
#[derive(Clone)]
pub struct Admin {
    metrics: Metrics,
    logging_level: u8,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("node", &self.metrics.node()).finish_non_exhaustive()
    }
}

/// One response before it becomes an HTTP response (status, content type, body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
    /// `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Answer {
    fn json(status: StatusCode, v: &Value) -> Answer {
        let body = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".to_owned()) + "\n";
        Answer { status, content_type: JSON, body, allow: None }
    }

    fn error(status: StatusCode, code: &str, message: String) -> Answer {
        Answer::json(status, &json!({ "error": code, "message": message, "endpoints": ENDPOINTS }))
    }
}

impl Admin {
    /// Serves `metrics` and logs every request (iFun's default `api_service_logging_level` 2).
    pub fn new(metrics: Metrics) -> Admin {
        Admin { metrics, logging_level: 2 }
    }

    /// [`Admin::new`] with the `ApiService` section's logging level.
    pub fn from_config(metrics: Metrics, cfg: &ApiConfig) -> Admin {
        Admin::new(metrics).logging_level(cfg.api_service_logging_level)
    }

    /// 0: no request logs; 1: requests answered 400 or above; 2: every request.
    pub fn logging_level(mut self, level: u8) -> Admin {
        self.logging_level = level;
        self
    }

    /// Adds a health check (on the registry, so every reader of it sees the check).
    pub fn health_check(self, name: &str, f: impl Fn() -> HealthStatus + Send + Sync + 'static) -> Admin {
        self.metrics.register_health_check(name, f);
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The answer to `method path` (path without the query). Never panics: a panic in a
    /// health check or a callback gauge becomes a 500.
    pub fn answer(&self, method: &Method, path: &str) -> Answer {
        match catch_unwind(AssertUnwindSafe(|| self.route(method, path))) {
            Ok(a) => a,
            Err(_) => Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("a health check or metric callback panicked while answering {path}"),
            ),
        }
    }

    fn route(&self, method: &Method, path: &str) -> Answer {
        let known = match path {
            PATH_HEALTH | PATH_METRICS | PATH_DISTRIBUTION_PROFILING => true,
            p => p == PATH_DISTRIBUTION_PROFILING.trim_end_matches('/'),
        };
        if !known {
            return Answer::error(StatusCode::NOT_FOUND, "not_found", format!("no endpoint at {path}"));
        }
        if method != Method::GET && method != Method::HEAD {
            let mut a = Answer::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}; use GET"),
            );
            a.allow = Some("GET, HEAD");
            return a;
        }
        match path {
            PATH_HEALTH => {
                let report = self.metrics.health();
                let status =
                    if report.is_serving() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                Answer::json(status, &report.to_json())
            }
            PATH_METRICS => Answer {
                status: StatusCode::OK,
                content_type: PROMETHEUS_CONTENT_TYPE,
                body: self.metrics.render_prometheus(),
                allow: None,
            },
            _ => Answer::json(StatusCode::OK, &self.metrics.distribution_profiling_json()),
        }
    }

    fn respond(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        // (Wrapped by the accept loop in a body that marks the connection busy until sent.)
        let path = req.uri().path();
        let a = self.answer(req.method(), path);
        let failed = a.status.as_u16() >= 400;
        match self.logging_level {
            0 => {}
            1 if !failed => {}
            _ if failed => {
                warn!(%peer, method = %req.method(), path, status = a.status.as_u16(), "admin api request")
            }
            _ => info!(%peer, method = %req.method(), path, status = a.status.as_u16(), "admin api request"),
        }
        let mut resp = Response::new(Full::new(Bytes::from(a.body)));
        *resp.status_mut() = a.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(allow) = a.allow {
            h.insert(ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

/// A running admin server. [`shutdown`](AdminHandle::shutdown) stops it gracefully;
/// dropping the handle stops it too (without waiting).
#[derive(Debug)]
pub struct AdminHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl AdminHandle {
    /// The address actually bound (the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (at most [`SHUTDOWN_GRACE`]), then
    /// closes every connection.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        // Dropping `stop` wakes the accept loop, which then shuts down on its own.
        self.stop.take();
    }
}

/// Binds `addr` and serves `admin` on the current tokio runtime until the handle is shut
/// down or dropped. Fails only if the address cannot be bound.
pub async fn serve(addr: SocketAddr, admin: Admin) -> std::io::Result<AdminHandle> {
    // The deep backlog matters here: at [`MAX_CONNECTIONS`] the accept loop stops accepting,
    // and with tokio's default 128 the kernel then drops the health probe's SYN (it retries
    // a second later).
    let listener = crate::adapters::bind_listener(addr)?;
    let local_addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    info!(%local_addr, node = admin.metrics.node(), "admin api listening");
    let task = tokio::spawn(accept_loop(listener, Arc::new(admin), stopped));
    Ok(AdminHandle { local_addr, stop: Some(stop), task: Some(task) })
}

/// The admin port's open connections, oldest first, for eviction.
#[derive(Default)]
struct Conns {
    next: u64,
    by_seq: BTreeMap<u64, Arc<ConnState>>,
}

/// One connection as the eviction policy sees it.
struct ConnState {
    /// Responses being written now (a [`TrackedBody`] not yet dropped).
    busy: AtomicUsize,
    /// When it was accepted or last finished writing a response.
    idle_since: Mutex<Instant>,
    /// Fired to cut the connection.
    evict: Notify,
}

impl ConnState {
    fn evictable(&self, now: Instant) -> bool {
        self.busy.load(Ordering::Acquire) == 0
            && now.duration_since(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner()))
                >= EVICT_IDLE_MIN
    }
}

impl Conns {
    fn add(&mut self) -> (u64, Arc<ConnState>) {
        let seq = self.next;
        self.next += 1;
        let state = Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            evict: Notify::new(),
        });
        self.by_seq.insert(seq, state.clone());
        (seq, state)
    }

    fn remove(&mut self, seq: u64) {
        self.by_seq.remove(&seq);
    }

    /// Cuts the oldest evictable connection; false if there is none.
    fn evict_oldest(&mut self, now: Instant) -> bool {
        let Some(seq) = self.by_seq.iter().find(|(_, c)| c.evictable(now)).map(|(s, _)| *s) else {
            return false;
        };
        if let Some(state) = self.by_seq.remove(&seq) {
            state.evict.notify_one();
        }
        true
    }
}

/// A response body that keeps its connection marked busy until hyper has taken all of it.
struct TrackedBody {
    inner: Full<Bytes>,
    conn: Arc<ConnState>,
}

impl TrackedBody {
    fn new(inner: Full<Bytes>, conn: Arc<ConnState>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        TrackedBody { inner, conn }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        *self.conn.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// How often the accept loop, at the total limit with nothing to evict, looks again.
const FULL_RECHECK: Duration = Duration::from_millis(20);

fn lock_conns(c: &Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(listener: TcpListener, admin: Arc<Admin>, mut stopped: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    let conns = Arc::new(Mutex::new(Conns::default()));
    loop {
        // At the total limit: make room by evicting, else wait for a connection to end.
        loop {
            let room = {
                let mut c = lock_conns(&conns);
                c.by_seq.len() < MAX_CONNECTIONS || c.evict_oldest(Instant::now())
            };
            if room {
                break;
            }
            tokio::select! {
                _ = &mut stopped => return finish(listener, graceful).await,
                _ = tokio::time::sleep(FULL_RECHECK) => {}
            }
        }
        let (stream, peer) = tokio::select! {
            // A send or a dropped sender: either way, stop.
            _ = &mut stopped => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "admin api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (seq, state) = lock_conns(&conns).add();
        let admin = admin.clone();
        let conn_state = state.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let resp = admin.respond(&req, peer).map(|b| TrackedBody::new(b, conn_state.clone()));
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        let conns = conns.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    debug!(%peer, error = %e, "admin api connection ended with an error");
                },
                _ = state.evict.notified() => debug!(%peer, "admin api connection evicted for a newer one"),
            }
            lock_conns(&conns).remove(seq);
        });
    }
    finish(listener, graceful).await;
}

async fn finish(listener: TcpListener, graceful: GracefulShutdown) {
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => debug!("admin api stopped"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => warn!("admin api stopped with requests still in flight"),
    }
}
