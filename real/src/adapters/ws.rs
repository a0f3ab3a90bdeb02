//! WebSocket client ports (DESIGN.md §6: one text message = one JSON envelope) on
//! tokio-tungstenite, as an engine [`Listener`] whose connections carry one message per frame,
//! so the engine's session service serves them like any other port.
//!
//! # Behaviour
//! - **Messages.** Each text message's bytes are one frame for the session. A *binary*
//!   message is treated as a frame too (its bytes go to the JSON decoder: a binary message
//!   holding a JSON envelope works, anything else is answered `_error bad_json`). Text with
//!   invalid UTF-8 is a WebSocket protocol violation: the connection fails (no `_error`).
//!   Ping/pong frames are answered by tungstenite and never reach the session. A client's
//!   close frame ends the session (closed by peer). Frames the server sends are text messages.
//! - **Limits.** `max_message_size` and `max_frame_size` are the port's `max_frame_bytes`. An
//!   oversized message is refused from its header (its payload is never buffered) and surfaces
//!   as [`NetError::FrameTooLarge`], so the session sends `_error frame_too_large` and closes.
//! - **Handshakes never block the port.** The HTTP upgrade of each accepted TCP connection runs
//!   beside the accept loop (inside [`Listener::accept`], so dropping the listener drops them),
//!   bounded by [`WsOptions::handshake_timeout`]. At most [`WsOptions::max_pending_handshakes`]
//!   run at once, and at most [`WsOptions::max_pending_handshakes_per_address`] from one IP
//!   address: a connection arriving at a limit is still accepted, and the *oldest* pending
//!   handshake (of its address, else of all) is dropped to make room, so connections that
//!   send nothing cannot keep a new client waiting. A failed, timed-out or evicted handshake
//!   drops that connection and is logged at debug level; the listener goes on.
//! - **Memory per connection is bounded.** The write buffer holds at most
//!   [`WS_WRITE_BUFFER_BYTES`] plus one largest message; a reply to a ping that cannot be
//!   written (the client does not read) replaces the previous unsent one instead of queueing.
//!   A client sending more than [`WsOptions::control_frames_per_second_max`] ping or pong
//!   frames in a second is closed ([`NetError::Abuse`]): control-frame floods are closed, not
//!   absorbed.
//! - **Closing.** When the session drops its connection, the server sends a close frame
//!   (best effort, within [`WS_CLOSE_TIMEOUT`], on a spawned task) and the TCP connection ends.
//! - No TLS (`wss://`): terminate TLS in front of the server.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use engine::env::{Connection, Listener, MapErrSink, NetError};
use futures::future::{self, AbortHandle, Abortable, Aborted, BoxFuture};
use futures::sink::Sink;
use futures::stream::{FuturesUnordered, SplitSink};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// Default [`WsOptions::handshake_timeout`].
pub const WS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`WsOptions::max_pending_handshakes`].
pub const WS_MAX_PENDING_HANDSHAKES: usize = 512;
/// Default [`WsOptions::max_pending_handshakes_per_address`].
pub const WS_MAX_PENDING_HANDSHAKES_PER_ADDRESS: usize = 64;
/// Default [`WsOptions::control_frames_per_second_max`]: far above any client's keep-alive.
pub const WS_CONTROL_FRAMES_PER_SECOND_MAX: u32 = 64;
/// Bytes the write buffer gathers before it is flushed; it may hold one message more.
pub const WS_WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// How long the close frame of a dropped connection may take to go out.
pub const WS_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Read chunk per connection (tungstenite's default, 128 KiB, is allocated eagerly per
/// connection; game messages are small).
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Knobs of a WebSocket port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsOptions {
    /// A TCP connection that has not completed the upgrade within this is dropped.
    pub handshake_timeout: Duration,
    /// Most upgrades in progress at once; a new connection beyond it evicts the oldest.
    pub max_pending_handshakes: usize,
    /// Most upgrades in progress at once from one IP address; a new connection from an
    /// address at its limit evicts that address's oldest.
    pub max_pending_handshakes_per_address: usize,
    /// Most ping and pong frames a client may send in one second; more closes it.
    pub control_frames_per_second_max: u32,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            handshake_timeout: WS_HANDSHAKE_TIMEOUT,
            max_pending_handshakes: WS_MAX_PENDING_HANDSHAKES,
            max_pending_handshakes_per_address: WS_MAX_PENDING_HANDSHAKES_PER_ADDRESS,
            control_frames_per_second_max: WS_CONTROL_FRAMES_PER_SECOND_MAX,
        }
    }
}

type WsStream = WebSocketStream<TcpStream>;
/// A pending upgrade: its arrival number, and its outcome (`Err` with the reason).
type Handshake = BoxFuture<'static, (u64, Result<Connection, (SocketAddr, String)>)>;

/// The pending upgrades in arrival order, so the oldest can be evicted.
#[derive(Default)]
struct PendingOrder {
    next: u64,
    /// Arrival number -> (client IP, how to drop it).
    by_seq: BTreeMap<u64, (IpAddr, AbortHandle)>,
    by_address: BTreeMap<IpAddr, BTreeSet<u64>>,
}

impl PendingOrder {
    fn add(&mut self, ip: IpAddr, abort: AbortHandle) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.by_seq.insert(seq, (ip, abort));
        self.by_address.entry(ip).or_default().insert(seq);
        seq
    }

    fn remove(&mut self, seq: u64) -> Option<(IpAddr, AbortHandle)> {
        let (ip, abort) = self.by_seq.remove(&seq)?;
        if let Some(set) = self.by_address.get_mut(&ip) {
            set.remove(&seq);
            if set.is_empty() {
                self.by_address.remove(&ip);
            }
        }
        Some((ip, abort))
    }

    /// Drops the oldest pending upgrade (of `ip` if given), if any.
    fn evict_oldest(&mut self, ip: Option<IpAddr>) -> Option<IpAddr> {
        let seq = match ip {
            Some(ip) => self.by_address.get(&ip)?.first().copied()?,
            None => *self.by_seq.first_key_value()?.0,
        };
        let (ip, abort) = self.remove(seq)?;
        abort.abort();
        Some(ip)
    }

    fn len(&self) -> usize {
        self.by_seq.len()
    }

    fn of_address(&self, ip: IpAddr) -> usize {
        self.by_address.get(&ip).map_or(0, BTreeSet::len)
    }
}

/// A bound WebSocket port. Its connections carry one message per frame.
pub struct WebSocketListener {
    inner: TcpListener,
    local_addr: SocketAddr,
    max_frame: usize,
    opts: WsOptions,
    pending: FuturesUnordered<Handshake>,
    order: PendingOrder,
    /// Upgrades dropped to make room for newer connections, since the start.
    evicted: u64,
}

impl std::fmt::Debug for WebSocketListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketListener")
            .field("local_addr", &self.local_addr)
            .field("max_frame", &self.max_frame)
            .field("pending_handshakes", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl WebSocketListener {
    /// Binds `addr` (port 0 = any free port). Messages above `max_frame` bytes are refused.
    pub async fn bind(addr: SocketAddr, max_frame: usize, opts: WsOptions) -> Result<Self, NetError> {
        let inner = TcpListener::bind(addr)
            .await
            .map_err(|e| NetError::Bind { addr: addr.to_string(), reason: e.to_string() })?;
        let local_addr = inner
            .local_addr()
            .map_err(|e| NetError::Bind { addr: addr.to_string(), reason: e.to_string() })?;
        Ok(WebSocketListener {
            inner,
            local_addr,
            max_frame,
            opts: WsOptions {
                max_pending_handshakes: opts.max_pending_handshakes.max(1),
                max_pending_handshakes_per_address: opts.max_pending_handshakes_per_address.max(1),
                control_frames_per_second_max: opts.control_frames_per_second_max.max(1),
                ..opts
            },
            pending: FuturesUnordered::new(),
            order: PendingOrder::default(),
            evicted: 0,
        })
    }

    /// Starts the upgrade of a new connection, first evicting the oldest pending ones its
    /// address or the listener are full of.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let ip = peer.ip();
        if self.order.of_address(ip) >= self.opts.max_pending_handshakes_per_address
            && self.order.evict_oldest(Some(ip)).is_some()
        {
            self.evicted += 1;
            debug!(%peer, evicted = self.evicted, "websocket handshakes per address full: oldest of the address dropped");
        }
        if self.order.len() >= self.opts.max_pending_handshakes {
            if let Some(victim) = self.order.evict_oldest(None) {
                self.evicted += 1;
                debug!(%peer, %victim, evicted = self.evicted, "websocket handshakes full: oldest dropped");
            }
        }
        let (abort, registration) = AbortHandle::new_pair();
        let seq = self.order.add(ip, abort);
        let upgrade = Abortable::new(self.handshake(stream, peer), registration);
        self.pending.push(
            upgrade
                .map(move |r| match r {
                    Ok(outcome) => (seq, outcome),
                    Err(Aborted) => (seq, Err((peer, "evicted by a newer connection".to_string()))),
                })
                .boxed(),
        );
    }

    fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> BoxFuture<'static, Result<Connection, (SocketAddr, String)>> {
        let (max_frame, limit, opts) = (self.max_frame, self.opts.handshake_timeout, self.opts);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WS_WRITE_BUFFER_BYTES)
            .max_write_buffer_size(WS_WRITE_BUFFER_BYTES + max_frame + WS_FRAME_HEADER_MAX)
            .max_message_size(Some(max_frame))
            .max_frame_size(Some(max_frame));
        async move {
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(
                limit,
                tokio_tungstenite::accept_async_with_config(stream, Some(config)),
            )
            .await
            {
                Ok(Ok(ws)) => Ok(connection(ws, peer, max_frame, opts.control_frames_per_second_max)),
                Ok(Err(e)) => Err((peer, e.to_string())),
                Err(_) => Err((peer, format!("no upgrade within {limit:?}"))),
            }
        }
        .boxed()
    }

    /// Upgrades dropped to make room for newer connections so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[async_trait]
impl Listener for WebSocketListener {
    /// The next upgraded connection. TCP accepts and handshakes progress while this is polled
    /// (the session service's accept loop always is); cancelling it loses nothing.
    async fn accept(&mut self) -> Result<Connection, NetError> {
        loop {
            tokio::select! {
                Some((seq, done)) = self.pending.next(), if !self.pending.is_empty() => {
                    self.order.remove(seq);
                    match done {
                        Ok(conn) => return Ok(conn),
                        Err((peer, reason)) => debug!(%peer, %reason, "websocket handshake failed"),
                    }
                }
                accepted = self.inner.accept() => match accepted {
                    Ok((stream, peer)) => self.admit(stream, peer),
                    // E.g. out of file descriptors: the session service retries after a pause.
                    Err(e) => return Err(map_io(e)),
                },
            }
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

fn map_io(e: io::Error) -> NetError {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => NetError::Closed,
        _ => NetError::Io(e.to_string()),
    }
}

fn map_ws(e: WsError, max_frame: usize) -> NetError {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => {
            NetError::FrameTooLarge { len: size, max: max_frame }
        }
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => NetError::Closed,
        WsError::Io(e) => map_io(e),
        other => NetError::Io(format!("websocket: {other}")),
    }
}

/// Counts a client's control frames per one-second window.
struct ControlRate {
    max: u32,
    window_start: tokio::time::Instant,
    in_window: u32,
}

impl ControlRate {
    /// Counts one control frame; false once more than `max` arrived in the current second.
    fn allow(&mut self, now: tokio::time::Instant) -> bool {
        if now.duration_since(self.window_start) >= CONTROL_RATE_WINDOW {
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window += 1;
        self.in_window <= self.max
    }
}

/// The window of [`WsOptions::control_frames_per_second_max`].
const CONTROL_RATE_WINDOW: Duration = Duration::from_secs(1);
/// Room in the write buffer for one message's frame header beside its payload.
const WS_FRAME_HEADER_MAX: usize = 14;

/// One upgraded connection as frames: text and binary messages in, text messages out.
fn connection(ws: WsStream, peer: SocketAddr, max_frame: usize, control_max: u32) -> Connection {
    let (sink, stream) = ws.split();
    let mut rate = ControlRate { max: control_max, window_start: tokio::time::Instant::now(), in_window: 0 };
    let stream = stream.filter_map(move |r| {
        future::ready(match r {
            Ok(Message::Text(t)) => Some(Ok(Bytes::from(t))),
            Ok(Message::Binary(b)) => Some(Ok(b)),
            Ok(Message::Ping(_) | Message::Pong(_)) => {
                if rate.allow(tokio::time::Instant::now()) {
                    None
                } else {
                    Some(Err(NetError::Abuse(format!(
                        "websocket control-frame flood: more than {control_max} ping/pong frames in a second"
                    ))))
                }
            }
            Ok(Message::Frame(_)) => None,
            Ok(Message::Close(_)) => Some(Err(NetError::Closed)),
            Err(e) => Some(Err(map_ws(e, max_frame))),
        })
    });
    Connection {
        sink: Box::pin(MapErrSink::new(WsSink { inner: Some(sink) }, move |e| map_ws(e, max_frame))),
        stream: Box::pin(stream),
        peer,
    }
}

/// Sends each frame as a text message (binary if it is not UTF-8, which the engine's JSON
/// encoders never produce); sends a close frame when dropped.
struct WsSink {
    inner: Option<SplitSink<WsStream, Message>>,
}

impl WsSink {
    fn inner(&mut self) -> Result<Pin<&mut SplitSink<WsStream, Message>>, WsError> {
        self.inner.as_mut().map(Pin::new).ok_or(WsError::AlreadyClosed)
    }
}

impl Sink<Bytes> for WsSink {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        match self.inner() {
            Ok(s) => s.poll_ready(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), WsError> {
        let msg = match Utf8Bytes::try_from(item.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(item),
        };
        self.inner()?.start_send(msg)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        match self.inner() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        match self.inner() {
            Ok(s) => s.poll_close(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for WsSink {
    fn drop(&mut self) {
        let Some(mut sink) = self.inner.take() else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(WS_CLOSE_TIMEOUT, sink.close()).await;
            });
        }
    }
}
