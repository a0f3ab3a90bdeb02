//! The `Net` port: stream connections carrying length-delimited byte frames.
//!
//! On the wire each frame is a 4-byte big-endian length followed by the payload (DESIGN.md §6),
//! so a simulated peer, a real peer and a real client all speak the same framing.

use std::net::SocketAddr;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Sink, Stream};

/// Largest frame accepted on server-to-server and server-to-service connections.
/// A larger incoming frame fails the connection with [`NetError::FrameTooLarge`].
pub const MAX_PEER_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Why a network operation failed. All of them mean "this connection is unusable"; the
/// caller reconnects if it wants to go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// Nothing listens there, or the path is cut (partition): retry later.
    #[error("connection refused or unreachable: {0}")]
    Unreachable(String),
    /// The peer closed or reset the connection; frames sent before may or may not have arrived.
    #[error("connection closed")]
    Closed,
    /// A peer announced a frame larger than the limit; the connection is dropped.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    /// The address is in use or cannot be bound.
    #[error("cannot bind {addr}: {reason}")]
    Bind { addr: String, reason: String },
    /// Any other I/O failure, with the OS's description.
    #[error("i/o error: {0}")]
    Io(String),
    /// The transport dropped the connection because the peer abused it (e.g. a flood of
    /// WebSocket control frames); the text says how.
    #[error("peer abuse: {0}")]
    Abuse(String),
}

/// The sending half of a connection. `send` hands the frame to the transport and flushes;
/// success does not mean the peer received it.
pub type FrameSink = Pin<Box<dyn Sink<Bytes, Error = NetError> + Send>>;
/// The receiving half: frames in send order; `None` at an orderly end of stream.
pub type FrameStream = Pin<Box<dyn Stream<Item = Result<Bytes, NetError>> + Send>>;

/// One established connection, split into halves so reader and writer can be separate tasks.
pub struct Connection {
    pub sink: FrameSink,
    pub stream: FrameStream,
    /// Address of the other end, as this side sees it.
    pub peer: SocketAddr,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// A bound listening socket.
#[async_trait]
pub trait Listener: Send {
    /// Waits for the next incoming connection.
    async fn accept(&mut self) -> Result<Connection, NetError>;
    /// The bound address (with the real port if 0 was asked for).
    fn local_addr(&self) -> SocketAddr;
}

/// Opens and accepts framed connections.
#[async_trait]
pub trait Net: Send + Sync {
    /// Binds `addr` (port 0 = any free port). `max_frame` bounds incoming frames.
    async fn listen(&self, addr: SocketAddr, max_frame: usize) -> Result<Box<dyn Listener>, NetError>;
    /// Connects to `addr`. Fails with `Unreachable` at once if nothing listens or the path is
    /// cut; an established connection whose path is cut later *stalls* (as TCP does) rather
    /// than failing, so protocols need their own heartbeats and timeouts.
    async fn connect(&self, addr: SocketAddr, max_frame: usize) -> Result<Connection, NetError>;
    /// This node's own address as other nodes reach it (IP only; ports come from `listen`).
    fn local_ip(&self) -> std::net::IpAddr;
}

/// Most frames a connection's writer hands to the transport before it flushes once
/// ([`send_batch`]): bounds how long one batch holds the writer.
pub const WRITE_BATCH_FRAMES_MAX: usize = 64;

/// Sends `first`, then the frames `next_ready` has at once (at most [`WRITE_BATCH_FRAMES_MAX`]
/// in all), then flushes once: frames queued while the writer was busy reach the transport in
/// one write instead of one write each. Order is kept. `next_ready` must not wait; `None` ends
/// the batch. On error the connection is unusable, as after any failed send.
pub async fn send_batch(
    sink: &mut FrameSink,
    first: Bytes,
    mut next_ready: impl FnMut() -> Option<Bytes>,
) -> Result<(), NetError> {
    use futures::SinkExt;
    sink.feed(first).await?;
    for _ in 1..WRITE_BATCH_FRAMES_MAX {
        match next_ready() {
            Some(frame) => sink.feed(frame).await?,
            None => break,
        }
    }
    sink.flush().await
}

/// A sink whose every error is mapped by `f`. Adapters use it instead of futures'
/// `sink_map_err`, which maps only the *first* error and panics ("polled MapErr after
/// completion") if the sink is used again: a caller that keeps sending on a broken
/// connection must get an error each time, never a panic.
pub struct MapErrSink<S, F> {
    inner: S,
    f: F,
}

impl<S, F> MapErrSink<S, F> {
    pub fn new(inner: S, f: F) -> Self {
        MapErrSink { inner, f }
    }
}

impl<S, F, E> Sink<Bytes> for MapErrSink<S, F>
where
    S: Sink<Bytes> + Unpin,
    F: Fn(S::Error) -> E + Unpin,
{
    type Error = E;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), E>> {
        let this = &mut *self;
        Pin::new(&mut this.inner).poll_ready(cx).map_err(&this.f)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), E> {
        let this = &mut *self;
        Pin::new(&mut this.inner).start_send(item).map_err(&this.f)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), E>> {
        let this = &mut *self;
        Pin::new(&mut this.inner).poll_flush(cx).map_err(&this.f)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), E>> {
        let this = &mut *self;
        Pin::new(&mut this.inner).poll_close(cx).map_err(&this.f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;

    /// A sink that fails every call.
    struct Broken;
    impl Sink<Bytes> for Broken {
        type Error = &'static str;
        fn poll_ready(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Err("broken"))
        }
        fn start_send(self: Pin<&mut Self>, _: Bytes) -> Result<(), Self::Error> {
            Err("broken")
        }
        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Err("broken"))
        }
        fn poll_close(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Err("broken"))
        }
    }

    /// What a [`SharedSink`] was given, and after how many frames each flush came.
    #[derive(Default)]
    struct Recording {
        sent: Vec<Bytes>,
        flushes_after: Vec<usize>,
    }

    fn frames(n: usize) -> std::collections::VecDeque<Bytes> {
        (0..n).map(|i| Bytes::from(i.to_string())).collect()
    }

    #[test]
    fn a_batch_sends_what_is_ready_in_order_and_flushes_once() {
        let rec = std::sync::Arc::new(std::sync::Mutex::new(Recording::default()));
        let mut sink: FrameSink = Box::pin(SharedSink(rec.clone()));
        let mut ready = frames(3);
        futures::executor::block_on(send_batch(&mut sink, Bytes::from_static(b"first"), || {
            ready.pop_front()
        }))
        .unwrap();
        let r = rec.lock().unwrap();
        let expected: Vec<Bytes> = std::iter::once(Bytes::from_static(b"first")).chain(frames(3)).collect();
        assert_eq!(r.sent, expected);
        assert_eq!(r.flushes_after, vec![4], "one flush, after the last frame");
    }

    #[test]
    fn a_batch_stops_at_its_bound_and_leaves_the_rest_queued() {
        let rec = std::sync::Arc::new(std::sync::Mutex::new(Recording::default()));
        let mut sink: FrameSink = Box::pin(SharedSink(rec.clone()));
        let mut ready = frames(WRITE_BATCH_FRAMES_MAX + 5);
        futures::executor::block_on(send_batch(&mut sink, Bytes::from_static(b"first"), || {
            ready.pop_front()
        }))
        .unwrap();
        assert_eq!(rec.lock().unwrap().flushes_after, vec![WRITE_BATCH_FRAMES_MAX]);
        assert_eq!(ready.len(), 6, "the bound counts the first frame: 5 + 1 left for the next batch");
    }

    /// A sink that records into a [`Recording`] a test can read while a `FrameSink` owns it.
    struct SharedSink(std::sync::Arc<std::sync::Mutex<Recording>>);
    impl Sink<Bytes> for SharedSink {
        type Error = NetError;
        fn poll_ready(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Bytes) -> Result<(), Self::Error> {
            self.0.lock().unwrap().sent.push(item);
            Ok(())
        }
        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            let mut r = self.0.lock().unwrap();
            let n = r.sent.len();
            r.flushes_after.push(n);
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_broken_sink_errors_every_time_instead_of_panicking() {
        let mut s = MapErrSink::new(Broken, |e: &'static str| e.len());
        for _ in 0..3 {
            assert_eq!(futures::executor::block_on(s.send(Bytes::from_static(b"x"))), Err(6));
        }
    }
}
