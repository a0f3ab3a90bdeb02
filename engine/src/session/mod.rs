//! Client sessions (iFun's `SessionService`, `HandlerRegistry`, `Session::SendMessage`,
//! `BroadcastLocally`): client connections on one or more ports (iFun's `tcp_json_port`,
//! `tcp_protobuf_port`, `websocket_json_port`), decoded per the client wire protocol of
//! DESIGN.md §6, routed to one shared set of registered handlers one message at a time per
//! session.
//!
//! # Wire protocol
//! On the TCP ports each frame is a 4-byte big-endian length and a payload (the `Net` port's
//! framing). The payload is a JSON envelope `{"type": "<t>", "body": {...}}` on a
//! [`Transport::TcpJson`] port, or a protobuf envelope `{ string type = 1; bytes body = 2; }`
//! on a [`Transport::TcpProtobuf`] port ([`codec`]); a type registered with
//! [`SessionService::register_dual_handler`] takes its JSON form on JSON ports and its
//! protobuf form on the protobuf port, and its replies go out in each session's own form
//! ([`DualRequest`], [`DualReply`]). On a [`Transport::WebSocketJson`] port
//! one text message is one JSON envelope (same codec); its listener comes from the backend
//! ([`ClientListeners`]).
//!
//! # Ports
//! A service has one or more ports, at most one per transport, each with its own limits
//! (`max_frame_bytes`, `idle_timeout`, `heartbeat_interval`, `send_queue_max`). Every session
//! keeps its port's transport: replies, `_error` frames, pings and broadcasts reach each
//! client in its own encoding. [`SessionService::bind`] binds every port without accepting;
//! [`SessionService::serve`] starts accepting once the handlers are registered, so no client
//! is ever answered `unknown_type` for a handler that was about to be registered.
//!
//! Engine-reserved types start with `_`: the server sends `_error` and `_ping`; a client may
//! send `_pong` (the heartbeat answer) and `_cs_redirect` (reserved for the account module).
//!
//! # Guarantees
//! - **Ordered per session.** A session's messages are handled one at a time in arrival
//!   order: a handler's future completes before the session's next message is dispatched.
//!   Different sessions are handled concurrently.
//! - **Bad input is answered, never fatal.** A frame the server cannot use gets an `_error`
//!   frame `{"code", "message"}` ([`ProtocolError::code`]): `frame_too_large`, `bad_json`,
//!   `bad_envelope` close the session after it (the stream or envelope is unusable);
//!   `unknown_type`, `reserved_type`, `bad_body` leave it open (a valid frame the server could
//!   not route: an older server should not drop a newer client). Handlers may close the
//!   session themselves, as the reference game does on malformed fields.
//! - **Bounded.** Incoming frames are capped by `max_frame_bytes`, each session's outbound
//!   queue by `send_queue_max` (overflow closes the session as a "slow reader" and drops its
//!   queue, so one stuck client cannot grow the server's memory), a graceful close drains for
//!   at most [`CLOSE_DRAIN_TIMEOUT`].
//! - **Liveness.** A session with no client frame for `idle_timeout` is closed; with
//!   `heartbeat_interval` set the server sends `_ping` at that period and a client that
//!   answers `_pong` (or sends anything) stays open. Time runs on the `Clock` port.
//!
//! Under the simulator a TCP write never blocks (madsim has no backpressure), so the queue
//! only overflows when server code queues more than `send_queue_max` frames for a session
//! faster than its writer runs (a burst); on a real socket a client that stops reading fills
//! the kernel buffers first and then the queue.
//!
//! # Example
//! ```no_run
//! # async fn demo(env: engine::env::Env) -> Result<(), engine::session::SessionError> {
//! use engine::session::{NetClientListeners, SessionConfig, SessionService, Transport};
//! use serde_json::json;
//!
//! let ports = vec![
//!     SessionConfig::new("0.0.0.0:8012".parse().unwrap(), Transport::TcpJson),
//!     SessionConfig::new("0.0.0.0:8022".parse().unwrap(), Transport::TcpProtobuf),
//! ];
//! let sessions = SessionService::bind(env.clone(), ports, &NetClientListeners::new(env.net.clone())).await?;
//! // HandlerRegistry::Register("cs_game_server_login", OnGameServerLogin):
//! sessions.register_json_handler("cs_game_server_login", |session, body| async move {
//!     let Some(user_name) = body["user_name"].as_str() else {
//!         session.close("malformed cs_game_server_login"); // as the reference game does
//!         return;
//!     };
//!     session.set_context("account", user_name.to_string());
//!     let _ = session.send_json("sc_game_server_login", json!({"error": false, "level": 1}));
//! });
//! sessions.on_session_closed(|session, reason| async move {
//!     tracing::info!(session = %session.id(), %reason, "bye");
//! });
//! sessions.serve(); // now clients are accepted, on both ports
//! # Ok(())
//! # }
//! ```

mod budget;
pub mod codec;
pub mod config;
mod dual;
mod error;
mod gated;
pub mod global;
mod handle;
mod listeners;
mod registry;
mod service;
mod signal;
mod unproven;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, BoxFuture, FutureExt};
use serde_json::Value;
use tracing::{info, warn};

use crate::env::{timeout, Env, Listener, TaskHandle};

pub use self::budget::{
    MemoryBudget, ServiceLimits, DEFAULT_SESSION_MEMORY_MAX, DEFAULT_UNAUTHENTICATED_MAX,
    DEFAULT_UNAUTHENTICATED_PER_ADDRESS_MAX, SESSION_BASE_BYTES,
};
pub use self::dual::{DualBody, DualReply, DualRequest};
pub use self::error::{CloseReason, ProtocolError, SessionError};
pub use self::gated::{GatedSession, Guard, GATED_INPUT_MAX, HANDLED_MARKER, NOT_HOSTED};
pub use self::global::{BroadcastReport, GlobalSessions};
use self::handle::lock;
pub use self::handle::{Session, SessionId};
pub use self::listeners::{ClientListeners, NetClientListeners};
use self::registry::HandlerRegistry;

/// Default `max_frame_bytes` (DESIGN.md §6).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Smallest accepted `max_frame_bytes`: every `_error` frame must fit.
pub const MIN_FRAME_BYTES: usize = 1024;
/// Default `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `heartbeat_interval`: a third of the idle timeout, so one late answer is not fatal.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Default `send_queue_max`.
pub const DEFAULT_SEND_QUEUE_MAX: usize = 1024;
/// Default `send_queue_bytes_max`: 4 MiB, four frames of the default largest size.
pub const DEFAULT_SEND_QUEUE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// After a graceful close, queued frames are sent for at most this long; then the connection
/// is dropped with whatever is left.
pub const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// `shutdown` waits this long for sessions to drain and run their closed callbacks before
/// cancelling what is left.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// How a port encodes payloads (iFun's `tcp_json_port`, `tcp_protobuf_port`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// Length-prefixed frames, each a UTF-8 JSON envelope.
    TcpJson,
    /// Length-prefixed frames, each a protobuf envelope.
    TcpProtobuf,
    /// WebSocket: one text message = one UTF-8 JSON envelope (same codec as `TcpJson`). The
    /// backend supplies the listener ([`ClientListeners`]): the `Net` port only speaks
    /// length-prefixed TCP.
    WebSocketJson,
}

impl Transport {
    /// The transport's name: the manifest key without `_port` (`tcp_json`, `tcp_protobuf`,
    /// `websocket_json`), and the name its port is announced under in the cluster's
    /// `external_ports`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::TcpJson => "tcp_json",
            Transport::TcpProtobuf => "tcp_protobuf",
            Transport::WebSocketJson => "websocket_json",
        }
    }
}

/// Configuration of one session port (the `SessionService` manifest section, per port).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Where to listen (port 0 = any free port; see [`SessionService::local_addr_of`]).
    pub listen: SocketAddr,
    pub transport: Transport,
    /// Largest frame accepted from a client (and sent to one). A larger incoming frame gets
    /// `_error frame_too_large` and the session closes; a larger outgoing one is refused with
    /// [`SessionError::FrameTooLarge`]. At least [`MIN_FRAME_BYTES`].
    pub max_frame_bytes: usize,
    /// No frame from the client for this long closes the session ("idle timeout").
    pub idle_timeout: Duration,
    /// The server sends `_ping` at this period; the client answers `_pong`. Any client frame
    /// counts as alive. Must be shorter than `idle_timeout`. `None`: no pings, the client
    /// must send something every `idle_timeout` on its own.
    pub heartbeat_interval: Option<Duration>,
    /// Most frames queued for one session; one more closes it ("slow reader"). A bounded
    /// queue was chosen over blocking the sender: handlers and broadcasts never wait on a
    /// client, and memory per session stays bounded.
    pub send_queue_max: usize,
    /// Most bytes queued for one session; a frame that would pass it closes the session as a
    /// slow reader, as `send_queue_max` does. At least `max_frame_bytes` (one largest frame
    /// must fit).
    pub send_queue_bytes_max: usize,
}

impl SessionConfig {
    /// The defaults ([`DEFAULT_MAX_FRAME_BYTES`], [`DEFAULT_IDLE_TIMEOUT`],
    /// [`DEFAULT_HEARTBEAT_INTERVAL`], [`DEFAULT_SEND_QUEUE_MAX`]) on `listen`.
    pub fn new(listen: SocketAddr, transport: Transport) -> Self {
        SessionConfig {
            listen,
            transport,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            heartbeat_interval: Some(DEFAULT_HEARTBEAT_INTERVAL),
            send_queue_max: DEFAULT_SEND_QUEUE_MAX,
            send_queue_bytes_max: DEFAULT_SEND_QUEUE_BYTES_MAX,
        }
    }

    fn validate(&self) -> Result<(), SessionError> {
        let bad = |s: String| Err(SessionError::Config(s));
        if self.max_frame_bytes < MIN_FRAME_BYTES {
            return bad(format!("max_frame_bytes {} is below {MIN_FRAME_BYTES}", self.max_frame_bytes));
        }
        if self.idle_timeout.is_zero() {
            return bad("idle_timeout must be positive".into());
        }
        if let Some(h) = self.heartbeat_interval {
            if h.is_zero() || h >= self.idle_timeout {
                return bad(format!(
                    "heartbeat_interval {h:?} must be positive and shorter than idle_timeout {:?}",
                    self.idle_timeout
                ));
            }
        }
        if self.send_queue_max == 0 {
            return bad("send_queue_max must be at least 1".into());
        }
        if self.send_queue_bytes_max < self.max_frame_bytes {
            return bad(format!(
                "send_queue_bytes_max {} is below max_frame_bytes {}: one largest frame must fit",
                self.send_queue_bytes_max, self.max_frame_bytes
            ));
        }
        Ok(())
    }
}

type OpenedFn = dyn Fn(Session) -> BoxFuture<'static, ()> + Send + Sync;
type ClosedFn = dyn Fn(Session, CloseReason) -> BoxFuture<'static, ()> + Send + Sync;
/// Takes a client frame of a type no handler is registered for: its type and raw payload.
type UnhandledFn = dyn Fn(Session, String, Bytes) -> BoxFuture<'static, ()> + Send + Sync;

/// A snapshot of [`SessionService::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Live sessions, every port.
    pub open: usize,
    /// Of them, direct connections with no handled message yet.
    pub unauthenticated: usize,
    /// Bytes charged to the service's budget now ([`budget`](self::budget) says what counts).
    pub memory_bytes: usize,
    pub memory_max_bytes: usize,
    /// New connections refused (`_error server_busy`) because the budget was full.
    pub refused_busy: u64,
    /// Sessions closed since the start, by [`CloseReason::kind`] (`slow_reader`, `evicted`,
    /// `abuse`, ...).
    pub closed: BTreeMap<&'static str, u64>,
}

/// A live session and its task.
struct Entry {
    session: Session,
    /// `None` for the instant between inserting the entry and spawning the task.
    task: Option<TaskHandle>,
}

/// One bound port: its configuration (its own limits) and, until `serve`, its listener.
struct Port {
    cfg: SessionConfig,
    local_addr: SocketAddr,
    /// Taken by [`SessionService::serve`] (moved into the accept loop) or dropped by
    /// [`SessionService::shutdown`].
    listener: Mutex<Option<Box<dyn Listener>>>,
}

struct Inner {
    env: Env,
    /// In the order given to `bind`; never empty.
    ports: Vec<Port>,
    registry: HandlerRegistry,
    opened: Mutex<Vec<Arc<OpenedFn>>>,
    closed: Mutex<Vec<Arc<ClosedFn>>>,
    /// Set by [`SessionService::on_unhandled`].
    unhandled: Mutex<Option<Arc<UnhandledFn>>>,
    /// Live sessions of every port, by id (so every listing is in a deterministic order).
    sessions: Mutex<BTreeMap<SessionId, Entry>>,
    limits: ServiceLimits,
    /// What every session holds, against `limits.memory_max`.
    budget: Arc<MemoryBudget>,
    /// Direct connections with no handled message yet.
    unproven: Mutex<unproven::Unproven>,
    /// Sessions closed since the start, by [`CloseReason::kind`].
    closed_by_kind: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections refused at accept because the budget was full.
    refused: std::sync::atomic::AtomicU64,
    shut: AtomicBool,
    /// One accept loop per port, once serving.
    accept: Mutex<Vec<TaskHandle>>,
}

/// The session service: one or more client ports (at most one per [`Transport`]) sharing one
/// handler registry, one set of callbacks and one session table. Cheap to clone.
///
/// Startup is two-step so that no client can be answered `unknown_type` while a server is
/// still registering: [`bind`](SessionService::bind) binds every port without accepting,
/// the server registers its handlers and callbacks, then [`serve`](SessionService::serve)
/// starts accepting. A client that connects in between waits in the listen backlog and is
/// served from its first message. ([`start`](SessionService::start) does both steps at once,
/// for a service whose handlers may miss the first clients.)
#[derive(Clone)]
pub struct SessionService {
    inner: Arc<Inner>,
}

impl fmt::Debug for SessionService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService").field("ports", &self.local_addrs()).finish_non_exhaustive()
    }
}

/// Checks every port and the set: not empty, each config valid, one port per transport.
fn validate_ports(ports: &[SessionConfig]) -> Result<(), SessionError> {
    if ports.is_empty() {
        return Err(SessionError::Config("no session port configured".into()));
    }
    for (i, cfg) in ports.iter().enumerate() {
        cfg.validate().map_err(|e| match e {
            SessionError::Config(m) => SessionError::Config(format!("{:?} port: {m}", cfg.transport)),
            other => other,
        })?;
        if ports[..i].iter().any(|c| c.transport == cfg.transport) {
            return Err(SessionError::Config(format!(
                "two {:?} ports; a service has at most one port per transport",
                cfg.transport
            )));
        }
    }
    Ok(())
}

impl SessionService {
    /// Validates `ports` (at least one, each valid, no two of one transport), binds each with
    /// `listeners`, in order, and returns the service **without accepting** any client: register
    /// handlers and callbacks, then call [`serve`](Self::serve). If one port fails to bind,
    /// the ports bound before it are released and the error is returned.
    pub async fn bind(
        env: Env,
        ports: Vec<SessionConfig>,
        listeners: &dyn ClientListeners,
    ) -> Result<SessionService, SessionError> {
        Self::bind_with_limits(env, ports, ServiceLimits::default(), listeners).await
    }

    /// [`bind`](Self::bind) with service-wide limits other than the defaults.
    pub async fn bind_with_limits(
        env: Env,
        ports: Vec<SessionConfig>,
        limits: ServiceLimits,
        listeners: &dyn ClientListeners,
    ) -> Result<SessionService, SessionError> {
        validate_ports(&ports)?;
        if let Some(problem) = limits.problem() {
            return Err(SessionError::Config(problem));
        }
        let mut bound = Vec::with_capacity(ports.len());
        for cfg in ports {
            let listener = listeners.listen(&cfg).await?;
            bound.push((cfg, listener));
        }
        Ok(Self::assemble(env, bound, limits))
    }

    /// One bound-but-not-serving service over already bound listeners.
    fn assemble(
        env: Env,
        bound: Vec<(SessionConfig, Box<dyn Listener>)>,
        limits: ServiceLimits,
    ) -> SessionService {
        let ports: Vec<Port> = bound
            .into_iter()
            .map(|(cfg, listener)| {
                let local_addr = listener.local_addr();
                info!(%local_addr, transport = ?cfg.transport, "session port bound");
                Port { cfg, local_addr, listener: Mutex::new(Some(listener)) }
            })
            .collect();
        SessionService {
            inner: Arc::new(Inner {
                env,
                ports,
                registry: HandlerRegistry::default(),
                opened: Mutex::new(Vec::new()),
                closed: Mutex::new(Vec::new()),
                unhandled: Mutex::new(None),
                sessions: Mutex::new(BTreeMap::new()),
                limits,
                budget: Arc::new(MemoryBudget::new(limits.memory_max)),
                unproven: Mutex::new(unproven::Unproven::new(
                    limits.unauthenticated_max,
                    limits.unauthenticated_per_address_max,
                )),
                closed_by_kind: Mutex::new(BTreeMap::new()),
                refused: std::sync::atomic::AtomicU64::new(0),
                shut: AtomicBool::new(false),
                accept: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts accepting clients on every bound port (one accept loop each). Call it after
    /// registering handlers and callbacks. Idempotent; does nothing after
    /// [`shutdown`](Self::shutdown).
    pub fn serve(&self) {
        let inner = &self.inner;
        let mut accept = lock(&inner.accept);
        if inner.shut.load(Ordering::SeqCst) {
            return;
        }
        for (i, port) in inner.ports.iter().enumerate() {
            let Some(listener) = lock(&port.listener).take() else { continue };
            accept.push(
                inner
                    .env
                    .spawn
                    .spawn("session-accept", service::accept_loop(inner.clone(), i, listener).boxed()),
            );
            info!(local_addr = %port.local_addr, transport = ?port.cfg.transport, "session port serving");
        }
    }

    /// [`bind`](Self::bind) one port on the `Net` port ([`NetClientListeners`]) and
    /// [`serve`](Self::serve) at once. TCP transports only (a WebSocket port fails with
    /// [`SessionError::UnsupportedTransport`]). Handlers registered after this returns miss
    /// the messages of clients that were quicker: servers use `bind` + `serve`.
    pub async fn start(env: Env, cfg: SessionConfig) -> Result<SessionService, SessionError> {
        let listeners = NetClientListeners::new(env.net.clone());
        let svc = Self::bind(env, vec![cfg], &listeners).await?;
        svc.serve();
        Ok(svc)
    }

    /// Validates `cfg` and serves one port on a listener the backend bound itself (e.g. a
    /// WebSocket listener whose connections carry one message per frame), at once, as
    /// [`start`](Self::start) does. `cfg.listen` is informational; the listener must bound
    /// incoming frames by `cfg.max_frame_bytes`.
    pub async fn start_with_listener(
        env: Env,
        cfg: SessionConfig,
        listener: Box<dyn Listener>,
    ) -> Result<SessionService, SessionError> {
        validate_ports(std::slice::from_ref(&cfg))?;
        let svc = Self::assemble(env, vec![(cfg, listener)], ServiceLimits::default());
        svc.serve();
        Ok(svc)
    }

    /// The first port's bound address (with the real port if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.ports[0].local_addr
    }

    /// Every port's transport and bound address, in the order given to `bind`.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.inner.ports.iter().map(|p| (p.cfg.transport, p.local_addr)).collect()
    }

    /// The bound address of the port of `transport`, if the service has one.
    pub fn local_addr_of(&self, transport: Transport) -> Option<SocketAddr> {
        self.inner.ports.iter().find(|p| p.cfg.transport == transport).map(|p| p.local_addr)
    }

    /// The first port's transport (each [`Session::transport`] tells its own).
    pub fn transport(&self) -> Transport {
        self.inner.ports[0].cfg.transport
    }

    /// Registers the JSON handler of `msg_type` (replacing any earlier handler of the type),
    /// for every port. On a protobuf port the envelope's body must then be a UTF-8 JSON object.
    ///
    /// # Panics
    /// If `msg_type` is empty, longer than [`codec::MSG_TYPE_MAX_BYTES`], or starts with `_`
    /// (engine-reserved) other than `_cs_redirect`.
    pub fn register_json_handler<F, Fut>(&self, msg_type: &str, f: F)
    where
        F: Fn(Session, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.registry.register_json(msg_type, f);
    }

    /// Registers the protobuf handler of `msg_type`: the envelope's body is decoded as `M`
    /// (`bad_body` if it does not decode). Reachable on protobuf ports only; on a JSON port
    /// the type is answered with `bad_body`.
    ///
    /// # Panics
    /// As [`register_json_handler`](Self::register_json_handler).
    pub fn register_proto_handler<M, F, Fut>(&self, msg_type: &str, f: F)
    where
        M: prost::Message + Default + 'static,
        F: Fn(Session, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.registry.register_proto(msg_type, f);
    }

    /// Registers the dual handler of `msg_type` ([`DualRequest`]): the body is a JSON object
    /// deserialized as `M` on JSON and WebSocket ports, and `M::Proto` decoded and converted by
    /// `M::from_proto` on the protobuf port (the registry's table in `registry.rs`). A body of
    /// the wrong form (bytes that are not `M::Proto`, a JSON object on the protobuf port) is
    /// answered `bad_body` and the handler does not run; one of the right form whose fields do
    /// not make an `M` reaches the handler as `Err(ProtocolError::BadBody)`, for it to answer
    /// ([`Session::send_error`] gives the engine's answer). Reply with [`Session::send_dual`].
    ///
    /// # Panics
    /// As [`register_json_handler`](Self::register_json_handler).
    pub fn register_dual_handler<M, F, Fut>(&self, msg_type: &str, f: F)
    where
        M: DualRequest,
        F: Fn(Session, Result<M, ProtocolError>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.registry.register_dual(msg_type, f);
    }

    /// Adds a callback run when a session opens, before its first message is handled
    /// (callbacks run in registration order, each awaited).
    pub fn on_session_opened<F, Fut>(&self, f: F)
    where
        F: Fn(Session) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.inner.opened).push(Arc::new(move |s| f(s).boxed()));
    }

    /// Sets the taker of client frames whose type has no handler (a gate forwards them to the
    /// player's backend): it gets the session, the type and the frame's raw payload, and is
    /// awaited like a handler (the session's next frame waits for it). Without one such a
    /// frame is answered `_error unknown_type`. `_pong` and refused reserved types never reach it.
    /// A frame it takes does not prove the connection (see [`ServiceLimits::unauthenticated_max`]):
    /// only a registered handler does, so a gate's connections stay unauthenticated until their
    /// login (a registered handler) ran.
    ///
    /// [`ServiceLimits::unauthenticated_max`]: ServiceLimits::unauthenticated_max
    pub fn on_unhandled<F, Fut>(&self, f: F)
    where
        F: Fn(Session, String, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        *lock(&self.inner.unhandled) = Some(Arc::new(move |s, t, b| f(s, t, b).boxed()));
    }

    /// Adds a callback run once when a session has closed, after its last handler returned
    /// and it left [`sessions`](Self::sessions), with the reason.
    pub fn on_session_closed<F, Fut>(&self, f: F)
    where
        F: Fn(Session, CloseReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.inner.closed).push(Arc::new(move |s, r| f(s, r).boxed()));
    }

    /// The live sessions of every port, sorted by id.
    pub fn sessions(&self) -> Vec<Session> {
        lock(&self.inner.sessions).values().map(|e| e.session.clone()).collect()
    }

    /// What the service holds and has refused: for metrics and the admin API.
    pub fn stats(&self) -> SessionStats {
        let inner = &self.inner;
        SessionStats {
            open: lock(&inner.sessions).len(),
            unauthenticated: lock(&inner.unproven).len(),
            memory_bytes: inner.budget.used(),
            memory_max_bytes: inner.budget.max(),
            refused_busy: inner.refused.load(Ordering::Relaxed),
            closed: lock(&inner.closed_by_kind).clone(),
        }
    }

    /// The service-wide limits it was bound with.
    pub fn limits(&self) -> ServiceLimits {
        self.inner.limits
    }

    /// The live session with this id.
    pub fn session(&self, id: SessionId) -> Option<Session> {
        lock(&self.inner.sessions).get(&id).map(|e| e.session.clone())
    }

    /// Sends one JSON message to every open session of this service, on every port, that
    /// `filter` accepts (iFun's `BroadcastLocally`), in session-id order, each in its port's
    /// encoding (encoded once per transport). Returns how many sessions it was queued for; a
    /// session whose queue overflows is closed as a slow reader and not counted, and a
    /// session whose port's `max_frame_bytes` the frame exceeds is skipped (and not counted).
    /// A body that is not a JSON object sends nothing.
    pub fn broadcast_locally(
        &self,
        msg_type: &str,
        body: &Value,
        filter: impl Fn(&Session) -> bool,
    ) -> usize {
        if !body.is_object() {
            warn!(msg_type, "broadcast body is not a JSON object: nothing sent");
            return 0;
        }
        let mut frames: BTreeMap<Transport, Bytes> = BTreeMap::new();
        let mut too_large = 0usize;
        let mut delivered = 0usize;
        for s in self.sessions().iter().filter(|s| s.is_open() && filter(s)) {
            let t = s.transport();
            let frame =
                frames.entry(t).or_insert_with(|| codec::encode_json_message(t, msg_type, body)).clone();
            match s.push(frame) {
                Ok(()) => delivered += 1,
                Err(SessionError::FrameTooLarge { .. }) => too_large += 1,
                Err(_) => {}
            }
        }
        if too_large > 0 {
            warn!(
                msg_type,
                sessions = too_large,
                "broadcast frame too large for some sessions' ports: not sent to them"
            );
        }
        delivered
    }

    /// Stops accepting on every port (and releases ports never served), closes every session
    /// (queued frames still go out, within [`CLOSE_DRAIN_TIMEOUT`]) and waits up to
    /// [`SHUTDOWN_TIMEOUT`] for their closed callbacks; session tasks still running then are
    /// cancelled. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        {
            let mut accept = lock(&inner.accept);
            if inner.shut.swap(true, Ordering::SeqCst) {
                return;
            }
            for t in accept.drain(..) {
                t.abort();
            }
        }
        for port in &inner.ports {
            drop(lock(&port.listener).take());
        }
        let sessions = self.sessions();
        let waits: Vec<_> = sessions.iter().map(|s| s.shared.done.wait()).collect();
        for s in &sessions {
            s.close_with(CloseReason::Shutdown, true);
        }
        if timeout(&*inner.env.clock, SHUTDOWN_TIMEOUT, future::join_all(waits)).await.is_err() {
            let left = std::mem::take(&mut *lock(&inner.sessions));
            warn!(sessions = left.len(), "session shutdown timed out: cancelling the rest");
            for (_, e) in left {
                if let Some(t) = e.task {
                    t.abort();
                }
            }
        }
        info!(ports = ?self.local_addrs(), "session service shut down");
    }
}
