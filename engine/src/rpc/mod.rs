//! Typed cross-server RPC (iFun's `Rpc::Call` / `RegisterHandler` / `RegisterVoidReplyHandler`).
//!
//! Servers call each other by [`PeerId`] with prost messages; a request and its reply are
//! matched by an [`Xid`]. Over the `Net` port each server keeps one outgoing connection per
//! destination (opened lazily, re-opened after failure) and accepts connections from peers.
//!
//! # Guarantees
//! - **No hangs.** [`Rpc::call`] returns by its deadline (`CallOptions::timeout`, else
//!   `RpcConfig::default_timeout`, capped at [`MAX_CALL_TIMEOUT`]): `Timeout` if the request
//!   may have been delivered, `Unreachable` if it never got onto a connection.
//! - **At-least-once delivery while waiting.** Until the deadline the caller reconnects
//!   (randomised backoff from the `Rand` port) and re-sends still-pending requests with the
//!   *same* xid. A connection that stalls (a partition: TCP neither fails nor delivers) is
//!   detected by pings while calls are pending and replaced.
//! - **At-most-once execution.** The receiver remembers, per sender, the xids it has run
//!   ([`dedupe`]): a copy of a running call is ignored (its reply goes out on the sender's
//!   newest connection when done), a copy of a finished one gets the cached reply.
//! - **Order per key.** Calls with the same `order_key` from one sender to one receiver are
//!   handled one at a time in send order; an overtaken call is rejected with
//!   [`RpcError::OutOfOrder`] ([`order`]). Calls without a key run concurrently, at most
//!   `max_concurrent_handlers` handlers at once (ordered ones count too; the engine's own
//!   waiting handlers, [`Rpc::register_waiting_handler`], do not).
//! - **Incarnation fencing.** A connection starts with a Hello naming the caller and the
//!   *incarnation* (PeerId) it means to reach. A server restarted on the same address has a
//!   new PeerId and answers `Fenced` instead of handling anything; the caller's pending calls
//!   to the old incarnation fail with [`RpcError::Fenced`]. Replies carry the replier's
//!   PeerId and only match calls made to that peer.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(env: engine::env::Env, cluster: engine::cluster::Cluster) -> Result<(), engine::rpc::RpcError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use engine::rpc::messages::{EchoReply, EchoRequest};
//! use engine::rpc::{CallOptions, Rpc, RpcConfig};
//!
//! // One RPC service per server, addressed through the cluster view.
//! let cfg = RpcConfig::new("10.0.2.1:8015".parse().unwrap());
//! let rpc = Rpc::start(env, cluster.id(), Arc::new(cluster.clone()), cfg).await?;
//!
//! // iFun's Rpc::RegisterHandler("echo", OnEchoRpc):
//! rpc.register_handler("echo", |info, req: EchoRequest| async move {
//!     tracing::info!(from = %info.sender, "echo");
//!     Ok(EchoReply { message: req.message })
//! });
//!
//! // Rpc::Call(target, request, OnEchoReply), with a deadline; calls for one player
//! // are handled in order on the target.
//! if let Some((&peer, _)) = cluster.peers_with_tag("pvp", false).iter().next() {
//!     let opts = CallOptions::default().with_timeout(Duration::from_secs(2)).ordered("player-42");
//!     let reply: EchoReply = rpc.call(peer, "echo", &EchoRequest { message: "hi".into() }, opts).await?;
//!     assert_eq!(reply.message, "hi");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Message logging (`rpc_message_logging_level`)
//! 0: nothing. 1: one `info!` per request/reply sent and received with xid, peer, message
//! type and body length. 2: also the body, as hex of its first [`LOG_BODY_MAX_BYTES`] bytes
//! (the service only sees encoded bodies; a generic `Debug` bound was rejected because it
//! would leak into every handler's signature).
//!
//! # Limits
//! Memory is bounded per sender by [`MAX_TRACKED_XIDS_PER_SENDER`] and per order key by
//! [`MAX_QUEUED_PER_KEY`]; a sender silent for [`SENDER_STATE_IDLE_TTL`] is forgotten
//! entirely. At-most-once and ordering therefore assume no frame is delayed in the network
//! for longer than that TTL (it is twice the longest possible call deadline). Outgoing peer
//! state (order-key counters) lives as long as the `Rpc`, one small entry per peer called.
//! Every queue of frames is bounded: a caller has at most [`PENDING_CALLS_PER_PEER_MAX`]
//! calls pending per peer (beyond it a call fails at once with [`RpcError::Overloaded`]),
//! an outgoing connection's writer queue holds at most [`OUTBOX_FRAMES_MAX`] frames, and an
//! incoming connection's reply queue at most [`REPLY_QUEUE_MAX`] (a connection whose reply
//! queue fills is closed; its replies stay cached and are re-sent when the caller
//! retransmits on its next connection).

mod client;
pub mod dedupe;
mod error;
pub mod metrics;
pub mod order;
mod outbox;
mod sem;
mod server;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tracing::{info, warn};

use crate::cluster::{PeerDirectory, PeerId};
use crate::env::{Env, TaskHandle, MAX_PEER_FRAME_BYTES};
use crate::metrics::Metrics;

pub use self::client::{OUTBOX_FRAMES_MAX, PENDING_CALLS_PER_PEER_MAX};
pub use self::dedupe::MAX_TRACKED_XIDS_PER_SENDER;
pub use self::error::{HandlerError, RpcError};
pub use self::order::{MAX_QUEUED_PER_KEY, ORDER_GAP_WAIT};
pub use self::server::{REPLY_QUEUE_MAX, SENDER_STATE_IDLE_TTL};
use self::wire::ReplyStatus;

/// Example messages (`proto/rpc_messages.proto`): `EchoRequest`/`EchoReply`,
/// `OrderedRequest`/`OrderedReply`.
#[allow(clippy::all, missing_docs)]
pub mod messages {
    include!(concat!(env!("OUT_DIR"), "/sandtable.rpc.messages.rs"));
}

/// Longest deadline a call may have; longer ones are cut to this. The receiver's per-sender
/// memory ([`SENDER_STATE_IDLE_TTL`]) is sized from it.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// iFun's `enable_rpc_reply_checker` threshold.
pub const DEFAULT_REPLY_WARN_AFTER: Duration = Duration::from_secs(5);

/// Bytes of a body shown (as hex) at message logging level 2.
pub const LOG_BODY_MAX_BYTES: usize = 256;

/// Planted bugs, **for the simulator only** (the chaos runner switches them on to prove its
/// checkers can fail). Never set them in a real deployment. With both false, the buggy code
/// paths never run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcBugs {
    /// The receiver ignores order keys: handlers run concurrently as frames arrive, with no
    /// sequence check.
    pub reorder: bool,
    /// The receiver skips the xid dedupe: a retransmitted frame runs the handler again.
    pub double_exec: bool,
}

/// Configuration (the `RpcService` manifest section).
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Where to listen (`rpc_port`; port 0 = any free port).
    pub listen: SocketAddr,
    /// `rpc_message_logging_level`: 0, 1 or 2 (see the module docs).
    pub message_logging_level: u8,
    /// `enable_rpc_reply_checker`: warn about calls unanswered after `reply_warn_after`.
    pub enable_reply_checker: bool,
    pub reply_warn_after: Duration,
    /// Most handlers running at once (`rpc_threads_size`); at least 1.
    pub max_concurrent_handlers: usize,
    /// Deadline of calls that do not set their own.
    pub default_timeout: Duration,
    /// Test-only planted bugs; all off by default.
    pub bugs: RpcBugs,
    /// Where to record calls and handled requests ([`rpc::metrics`](self::metrics) lists
    /// what); `None` (the default) records nothing.
    pub metrics: Option<Metrics>,
}

impl RpcConfig {
    /// iFun's defaults (`rpc_threads_size` 4, reply checker on at 5 s) listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        RpcConfig {
            listen,
            message_logging_level: 0,
            enable_reply_checker: true,
            reply_warn_after: DEFAULT_REPLY_WARN_AFTER,
            max_concurrent_handlers: 4,
            default_timeout: Duration::from_secs(10),
            bugs: RpcBugs::default(),
            metrics: None,
        }
    }
}

/// Per-call options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Deadline of this call; `None` = `RpcConfig::default_timeout`.
    pub timeout: Option<Duration>,
    /// Calls with the same key (e.g. a player id) to the same peer are handled in call order.
    pub order_key: Option<String>,
}

impl CallOptions {
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    pub fn ordered(mut self, key: impl Into<String>) -> Self {
        self.order_key = Some(key.into());
        self
    }
}

/// Transaction id of one call: unique per call (the caller's incarnation and a counter).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xid {
    pub sender: PeerId,
    pub seq: u64,
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}#{}", self.sender, self.seq)
    }
}

impl fmt::Debug for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a handler learns about the call besides the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    pub sender: PeerId,
    pub xid: Xid,
    pub msg_type: String,
    pub order_key: Option<String>,
}

type HandlerFn = dyn Fn(CallInfo, Bytes) -> BoxFuture<'static, ReplyStatus> + Send + Sync;

/// A registered handler, and whether it runs under a handler permit.
#[derive(Clone)]
struct Registered {
    f: Arc<HandlerFn>,
    /// Counted against `max_concurrent_handlers` ([`Rpc::register_handler`]); false for
    /// [`Rpc::register_waiting_handler`].
    counted: bool,
}

/// The RPC service of one server process. Cheap to clone.
#[derive(Clone)]
pub struct Rpc {
    inner: Arc<Inner>,
}

impl fmt::Debug for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rpc")
            .field("self_id", &self.inner.self_id)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

struct Inner {
    env: Env,
    self_id: PeerId,
    directory: Arc<dyn PeerDirectory>,
    cfg: RpcConfig,
    local_addr: SocketAddr,
    handlers: Mutex<BTreeMap<String, Registered>>,
    /// Xid counter of this process (all destinations).
    next_xid: AtomicU64,
    shut: AtomicBool,
    /// Accept loop and sweeper.
    tasks: Mutex<Vec<TaskHandle>>,
    client: client::ClientState,
    server: server::ServerState,
    metrics: metrics::RpcMetrics,
}

use crate::env::lock;

impl Rpc {
    /// Binds `cfg.listen` and starts accepting peers. `self_id` is this process's
    /// incarnation: make a fresh one every start ([`PeerId::new_random`]).
    pub async fn start(
        env: Env,
        self_id: PeerId,
        directory: Arc<dyn PeerDirectory>,
        cfg: RpcConfig,
    ) -> Result<Rpc, RpcError> {
        let listener = env.net.listen(cfg.listen, MAX_PEER_FRAME_BYTES).await.map_err(RpcError::Listen)?;
        let local_addr = listener.local_addr();
        let permits = cfg.max_concurrent_handlers.max(1);
        let metrics = metrics::RpcMetrics::new(cfg.metrics.as_ref());
        let inner = Arc::new(Inner {
            env,
            self_id,
            directory,
            cfg,
            local_addr,
            handlers: Mutex::new(BTreeMap::new()),
            next_xid: AtomicU64::new(0),
            shut: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            client: client::ClientState::default(),
            server: server::ServerState::new(permits),
            metrics,
        });
        let accept =
            inner.env.spawn.spawn("rpc-accept", Box::pin(server::accept_loop(inner.clone(), listener)));
        let sweep = inner.env.spawn.spawn("rpc-sweep", Box::pin(server::sweep_loop(inner.clone())));
        lock(&inner.tasks).extend([accept, sweep]);
        info!(self_id = ?self_id, %local_addr, "rpc service started");
        Ok(Rpc { inner })
    }

    pub fn self_id(&self) -> PeerId {
        self.inner.self_id
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Registers the handler of `msg_type` (replacing any earlier one). The handler's reply
    /// (or error) goes back to the caller. It runs under one of the
    /// `max_concurrent_handlers` permits (iFun's `rpc_threads_size`).
    pub fn register_handler<Req, Rep, F, Fut>(&self, msg_type: &str, f: F)
    where
        Req: prost::Message + Default,
        Rep: prost::Message,
        F: Fn(CallInfo, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, HandlerError>> + Send + 'static,
    {
        self.install(msg_type, Self::handler_fn(f), true);
    }

    /// Registers the handler of `msg_type` as [`register_handler`](Self::register_handler)
    /// does, but taking no handler permit: for an engine protocol's own handlers that spend
    /// their time *waiting* — on another server (an object's owner lending it), or on work
    /// done elsewhere on this one (a gated session handling a forwarded frame) — and whose
    /// number the protocol bounds itself (one per player or object at a time). Counted, a few
    /// of them would hold every permit while they wait, the calls they wait for would queue
    /// behind them, and across servers they could wait on each other until their deadlines.
    pub fn register_waiting_handler<Req, Rep, F, Fut>(&self, msg_type: &str, f: F)
    where
        Req: prost::Message + Default,
        Rep: prost::Message,
        F: Fn(CallInfo, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, HandlerError>> + Send + 'static,
    {
        self.install(msg_type, Self::handler_fn(f), false);
    }

    fn handler_fn<Req, Rep, F, Fut>(f: F) -> Arc<HandlerFn>
    where
        Req: prost::Message + Default,
        Rep: prost::Message,
        F: Fn(CallInfo, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, HandlerError>> + Send + 'static,
    {
        let h: Arc<HandlerFn> =
            Arc::new(move |info: CallInfo, body: Bytes| -> BoxFuture<'static, ReplyStatus> {
                match Req::decode(body) {
                    Err(e) => Box::pin(futures::future::ready(ReplyStatus::DecodeError(e.to_string()))),
                    Ok(req) => {
                        let fut = f(info, req);
                        Box::pin(async move {
                            match fut.await {
                                Ok(rep) => ReplyStatus::Ok(Bytes::from(rep.encode_to_vec())),
                                Err(e) => ReplyStatus::HandlerError(e.0),
                            }
                        })
                    }
                }
            });
        h
    }

    /// Registers a handler that sends no reply of its own (iFun's
    /// `RegisterVoidReplyHandler`): the caller gets an empty reply when it has run, so it
    /// can `call::<_, ()>` and still learn that it ran.
    pub fn register_void_handler<Req, F, Fut>(&self, msg_type: &str, f: F)
    where
        Req: prost::Message + Default,
        F: Fn(CallInfo, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.register_handler(msg_type, move |info, req: Req| {
            let fut = f(info, req);
            async move {
                fut.await;
                Ok::<(), HandlerError>(())
            }
        });
    }

    fn install(&self, msg_type: &str, f: Arc<HandlerFn>, counted: bool) {
        if lock(&self.inner.handlers).insert(msg_type.to_string(), Registered { f, counted }).is_some() {
            warn!(msg_type, "rpc handler replaced");
        }
    }

    /// Calls `msg_type` on `peer` and waits for the reply, at most until the call's deadline.
    pub async fn call<Req, Rep>(
        &self,
        peer: PeerId,
        msg_type: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Rep, RpcError>
    where
        Req: prost::Message,
        Rep: prost::Message + Default,
    {
        let record =
            self.inner.metrics.enabled.then(|| self.inner.metrics.call(&*self.inner.env.clock, msg_type));
        let body = Bytes::from(req.encode_to_vec());
        let r = match self.inner.call_raw(peer, msg_type, body, opts).await {
            Ok(reply) => Rep::decode(reply).map_err(|e| RpcError::Decode(e.to_string())),
            Err(e) => Err(e),
        };
        if let Some(record) = record {
            record.finish(&r);
        }
        r
    }

    /// Stops accepting and calling: pending calls fail with `Shutdown`, connections close.
    /// Handlers already running finish, but their replies are dropped. The service's tasks
    /// hold it alive, so dropping every `Rpc` handle without `shutdown` leaves it running
    /// (as a server process would).
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.shut.swap(true, Ordering::SeqCst) {
            return;
        }
        for t in std::mem::take(&mut *lock(&inner.tasks)) {
            t.abort();
        }
        inner.server.shutdown();
        inner.client.shutdown();
        info!(self_id = ?inner.self_id, "rpc service shut down");
    }
}

impl Inner {
    fn is_shut(&self) -> bool {
        self.shut.load(Ordering::SeqCst)
    }

    /// Message logging (`rpc_message_logging_level`).
    fn log_msg(&self, what: &'static str, xid: Xid, peer: PeerId, msg_type: &str, body: &[u8]) {
        match self.cfg.message_logging_level {
            0 => {}
            1 => info!(what, %xid, ?peer, msg_type, len = body.len(), "rpc message"),
            _ => info!(
                what, %xid, ?peer, msg_type, len = body.len(),
                body = %wire::hex_prefix(body, LOG_BODY_MAX_BYTES), "rpc message"
            ),
        }
    }
}
