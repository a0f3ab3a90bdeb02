//! Client sessions (iFun's `SessionService`, `HandlerRegistry`, `Session::SendMessage`,
//! `BroadcastLocally`): client connections over the `Net` port, decoded per the client wire
//! protocol of DESIGN.md §6, routed to registered handlers one message at a time per session.
//!
//! # Wire protocol
//! Each frame is a 4-byte big-endian length and a payload (the `Net` port's framing). The
//! payload is a JSON envelope `{"type": "<t>", "body": {...}}` on a [`Transport::TcpJson`]
//! port, or a protobuf envelope `{ string type = 1; bytes body = 2; }` on a
//! [`Transport::TcpProtobuf`] port ([`codec`]). WebSocket JSON (one text message = one JSON
//! envelope) arrives with the real backend and reuses the JSON codec as is.
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
//! use engine::session::{SessionConfig, SessionService, Transport};
//! use serde_json::json;
//!
//! let cfg = SessionConfig::new("0.0.0.0:8012".parse().unwrap(), Transport::TcpJson);
//! let sessions = SessionService::start(env, cfg).await?;
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
//! # Ok(())
//! # }
//! ```

pub mod codec;
pub mod config;
mod error;
pub mod global;
mod handle;
mod registry;
mod service;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{self, BoxFuture, FutureExt};
use serde_json::Value;
use tracing::{info, warn};

use crate::env::{timeout, Env, TaskHandle};

pub use self::error::{CloseReason, ProtocolError, SessionError};
pub use self::global::{BroadcastReport, GlobalSessions};
use self::handle::lock;
pub use self::handle::{Session, SessionId};
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
    /// backend supplies the listener ([`SessionService::start_with_listener`]): the `Net`
    /// port only speaks length-prefixed TCP.
    WebSocketJson,
}

/// Configuration of one session port (the `SessionService` manifest section, per port).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Where to listen (port 0 = any free port; see [`SessionService::local_addr`]).
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
        Ok(())
    }
}

type OpenedFn = dyn Fn(Session) -> BoxFuture<'static, ()> + Send + Sync;
type ClosedFn = dyn Fn(Session, CloseReason) -> BoxFuture<'static, ()> + Send + Sync;

/// A live session and its task.
struct Entry {
    session: Session,
    /// `None` for the instant between inserting the entry and spawning the task.
    task: Option<TaskHandle>,
}

struct Inner {
    env: Env,
    cfg: SessionConfig,
    local_addr: SocketAddr,
    registry: HandlerRegistry,
    opened: Mutex<Vec<Arc<OpenedFn>>>,
    closed: Mutex<Vec<Arc<ClosedFn>>>,
    /// Live sessions, by id (so every listing is in a deterministic order).
    sessions: Mutex<BTreeMap<SessionId, Entry>>,
    shut: AtomicBool,
    accept: Mutex<Option<TaskHandle>>,
}

/// The session service of one port. Cheap to clone.
///
/// Register handlers and callbacks right after [`start`](SessionService::start): a session
/// accepted before a type's handler is registered answers that type with `unknown_type`.
#[derive(Clone)]
pub struct SessionService {
    inner: Arc<Inner>,
}

impl fmt::Debug for SessionService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("local_addr", &self.inner.local_addr)
            .field("transport", &self.inner.cfg.transport)
            .finish_non_exhaustive()
    }
}

impl SessionService {
    /// Validates `cfg`, binds `cfg.listen` on the `Net` port and starts accepting clients.
    /// TCP transports only; a WebSocket port needs [`start_with_listener`](Self::start_with_listener).
    pub async fn start(env: Env, cfg: SessionConfig) -> Result<SessionService, SessionError> {
        cfg.validate()?;
        if cfg.transport == Transport::WebSocketJson {
            return Err(SessionError::Config(
                "a WebSocket port needs a listener from the backend (start_with_listener)".into(),
            ));
        }
        let listener = env.net.listen(cfg.listen, cfg.max_frame_bytes).await.map_err(SessionError::Listen)?;
        Self::start_with_listener(env, cfg, listener).await
    }

    /// Starts the service on a listener the backend bound itself (e.g. a WebSocket listener
    /// whose connections carry one message per frame). `cfg.listen` is informational; the
    /// listener must bound incoming frames by `cfg.max_frame_bytes`.
    pub async fn start_with_listener(
        env: Env,
        cfg: SessionConfig,
        listener: Box<dyn crate::env::Listener>,
    ) -> Result<SessionService, SessionError> {
        cfg.validate()?;
        let local_addr = listener.local_addr();
        let inner = Arc::new(Inner {
            env,
            cfg,
            local_addr,
            registry: HandlerRegistry::default(),
            opened: Mutex::new(Vec::new()),
            closed: Mutex::new(Vec::new()),
            sessions: Mutex::new(BTreeMap::new()),
            shut: AtomicBool::new(false),
            accept: Mutex::new(None),
        });
        let accept =
            inner.env.spawn.spawn("session-accept", service::accept_loop(inner.clone(), listener).boxed());
        *lock(&inner.accept) = Some(accept);
        info!(%local_addr, transport = ?inner.cfg.transport, "session service started");
        Ok(SessionService { inner })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub fn transport(&self) -> Transport {
        self.inner.cfg.transport
    }

    /// Registers the JSON handler of `msg_type` (replacing any earlier handler of the type).
    /// On a protobuf port the envelope's body must then be a UTF-8 JSON object.
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

    /// Adds a callback run when a session opens, before its first message is handled
    /// (callbacks run in registration order, each awaited).
    pub fn on_session_opened<F, Fut>(&self, f: F)
    where
        F: Fn(Session) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.inner.opened).push(Arc::new(move |s| f(s).boxed()));
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

    /// The live sessions, sorted by id.
    pub fn sessions(&self) -> Vec<Session> {
        lock(&self.inner.sessions).values().map(|e| e.session.clone()).collect()
    }

    /// The live session with this id.
    pub fn session(&self, id: SessionId) -> Option<Session> {
        lock(&self.inner.sessions).get(&id).map(|e| e.session.clone())
    }

    /// Sends one JSON message to every open session of this service that `filter` accepts
    /// (iFun's `BroadcastLocally`), in session-id order. Returns how many sessions it was
    /// queued for; a session whose queue overflows is closed as a slow reader and not counted.
    /// A body that is not a JSON object or too large a frame sends nothing.
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
        let frame = codec::encode_json_message(self.inner.cfg.transport, msg_type, body);
        if frame.len() > self.inner.cfg.max_frame_bytes {
            warn!(msg_type, len = frame.len(), "broadcast frame too large: nothing sent");
            return 0;
        }
        self.sessions()
            .iter()
            .filter(|s| s.is_open() && filter(s))
            .filter(|s| s.push(frame.clone()).is_ok())
            .count()
    }

    /// Stops accepting, closes every session (queued frames still go out, within
    /// [`CLOSE_DRAIN_TIMEOUT`]) and waits up to [`SHUTDOWN_TIMEOUT`] for their closed
    /// callbacks; session tasks still running then are cancelled. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.shut.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(t) = lock(&inner.accept).take() {
            t.abort();
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
        info!(local_addr = %inner.local_addr, "session service shut down");
    }
}
