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
//!   bounded by [`WsOptions::handshake_timeout`]; at most
//!   [`WsOptions::max_pending_handshakes`] run at once (further TCP connections wait in the
//!   kernel backlog). A failed or timed-out handshake drops that connection and is logged at
//!   debug level; the listener goes on.
//! - **Closing.** When the session drops its connection, the server sends a close frame
//!   (best effort, within [`WS_CLOSE_TIMEOUT`], on a spawned task) and the TCP connection ends.
//! - No TLS (`wss://`): terminate TLS in front of the server.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use engine::env::{Connection, Listener, MapErrSink, NetError};
use futures::future::{self, BoxFuture};
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
pub const WS_MAX_PENDING_HANDSHAKES: usize = 1024;
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
    /// Most upgrades in progress at once; beyond it, TCP connections wait to be accepted.
    pub max_pending_handshakes: usize,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            handshake_timeout: WS_HANDSHAKE_TIMEOUT,
            max_pending_handshakes: WS_MAX_PENDING_HANDSHAKES,
        }
    }
}

type WsStream = WebSocketStream<TcpStream>;
type Handshake = BoxFuture<'static, Result<Connection, (SocketAddr, String)>>;

/// A bound WebSocket port. Its connections carry one message per frame.
pub struct WebSocketListener {
    inner: TcpListener,
    local_addr: SocketAddr,
    max_frame: usize,
    opts: WsOptions,
    pending: FuturesUnordered<Handshake>,
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
            opts: WsOptions { max_pending_handshakes: opts.max_pending_handshakes.max(1), ..opts },
            pending: FuturesUnordered::new(),
        })
    }

    fn handshake(&self, stream: TcpStream, peer: SocketAddr) -> Handshake {
        let (max_frame, limit) = (self.max_frame, self.opts.handshake_timeout);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
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
                Ok(Ok(ws)) => Ok(connection(ws, peer, max_frame)),
                Ok(Err(e)) => Err((peer, e.to_string())),
                Err(_) => Err((peer, format!("no upgrade within {limit:?}"))),
            }
        }
        .boxed()
    }
}

#[async_trait]
impl Listener for WebSocketListener {
    /// The next upgraded connection. TCP accepts and handshakes progress while this is polled
    /// (the session service's accept loop always is); cancelling it loses nothing.
    async fn accept(&mut self) -> Result<Connection, NetError> {
        loop {
            let can_accept = self.pending.len() < self.opts.max_pending_handshakes;
            tokio::select! {
                Some(done) = self.pending.next(), if !self.pending.is_empty() => match done {
                    Ok(conn) => return Ok(conn),
                    Err((peer, reason)) => debug!(%peer, %reason, "websocket handshake failed"),
                },
                accepted = self.inner.accept(), if can_accept => match accepted {
                    Ok((stream, peer)) => {
                        let h = self.handshake(stream, peer);
                        self.pending.push(h);
                    }
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

/// One upgraded connection as frames: text and binary messages in, text messages out.
fn connection(ws: WsStream, peer: SocketAddr, max_frame: usize) -> Connection {
    let (sink, stream) = ws.split();
    let stream = stream.filter_map(move |r| {
        future::ready(match r {
            Ok(Message::Text(t)) => Some(Ok(Bytes::from(t))),
            Ok(Message::Binary(b)) => Some(Ok(b)),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => None,
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
