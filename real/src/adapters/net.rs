//! The `Net` port on tokio TCP with length-delimited frames (DESIGN.md §6 framing).
//!
//! # Memory per connection
//! A connection holds no buffer while it is idle: thousands of idle client sessions must not
//! each pin the two 8 KiB buffers tokio-util's `Framed` keeps for a connection's whole life.
//! - [`FrameReader`] waits for the socket to be readable *before* it allocates, reads up to
//!   [`READ_CHUNK`] bytes at a time (more when a frame announces a larger body), hands out
//!   every complete frame as a slice of that buffer, and reads the next bytes into the same
//!   buffer's spare room while the socket has more. It drops its own reference to the buffer
//!   when the socket is about to wait and no partial frame is left in it (giving it up after
//!   every drained read instead cost a fresh allocation per read on a busy connection).
//!   Frames are cut from the buffer by their 4-byte header alone, so the reader never holds a
//!   half-decoded header: "nothing buffered" means "between frames". (`LengthDelimitedCodec`
//!   keeps its header state private, which is why the decode is written here; the encode is
//!   the codec's.) Reads go through tokio's `poll_read`, which marks the socket drained after
//!   a short read, so a drained socket costs no extra read that would block.
//! - [`FrameWriter`] encodes frames with `LengthDelimitedCodec` into a buffer allocated at the
//!   first frame of a batch and freed once the batch is flushed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use engine::env::{Connection, Listener, Net, NetError};
use futures::{Sink, Stream};
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Encoder, LengthDelimitedCodec};
use tokio_util::io::poll_read_buf;

/// Length of the big-endian length header in front of every frame.
const HEADER_BYTES: usize = 4;
/// Bytes a reader asks the socket for at once while frames arrive (tokio-util's `Framed`
/// starts its read buffer at the same size). Allocated only once the socket is readable.
pub const READ_CHUNK: usize = 8 * 1024;
/// Bytes a writer gathers before `poll_ready` flushes them (tokio-util's `Framed`'s
/// backpressure boundary).
pub const WRITE_BACKPRESSURE: usize = 8 * 1024;

/// An oversized incoming frame is caught by [`FrameReader::decode`]; an oversized outgoing
/// one fails the codec's encode with `InvalidInput` and stays an `Io` error.
fn map_io(e: io::Error) -> NetError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable => NetError::Unreachable(e.to_string()),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            NetError::Closed
        }
        _ => NetError::Io(e.to_string()),
    }
}

fn framed(stream: TcpStream, peer: SocketAddr, max_frame: usize) -> Connection {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    Connection {
        sink: Box::pin(FrameWriter::new(write, max_frame)),
        stream: Box::pin(FrameReader::new(read, max_frame)),
        peer,
    }
}

/// The frames of a TCP stream's read half; see the module docs for its buffer.
struct FrameReader {
    io: OwnedReadHalf,
    /// Bytes read and not yet handed out: empty (and unallocated) between frames.
    buf: BytesMut,
    max_frame: usize,
    /// The peer closed its end: what is buffered is the last of the stream.
    eof: bool,
    /// An error was returned: the stream ends (as `Framed`'s does after an error).
    failed: bool,
}

impl FrameReader {
    fn new(io: OwnedReadHalf, max_frame: usize) -> Self {
        FrameReader { io, buf: BytesMut::new(), max_frame, eof: false, failed: false }
    }

    /// The next complete frame in `buf`, if there is one. A frame whose header announces
    /// more than `max_frame` bytes fails, before any of its body is buffered.
    fn decode(&mut self) -> Result<Option<Bytes>, NetError> {
        let Some(header) = self.buf.get(..HEADER_BYTES) else { return Ok(None) };
        let mut len_bytes = [0u8; HEADER_BYTES];
        len_bytes.copy_from_slice(header);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > self.max_frame {
            return Err(NetError::FrameTooLarge { len, max: self.max_frame });
        }
        let whole = HEADER_BYTES + len;
        if self.buf.len() < whole {
            // Room for the rest of this frame, so a large body is read without regrowing.
            self.buf.reserve(whole - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_BYTES);
        // An emptied buffer is let go by `poll_next` once the socket has to be waited for.
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// The socket has nothing more for now: between frames, let go of the buffer (the
    /// frames handed out keep their own bytes alive) so that an idle connection holds none.
    fn wait(&mut self) -> Poll<Option<Result<Bytes, NetError>>> {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        Poll::Pending
    }

    fn fail(&mut self, e: NetError) -> Poll<Option<Result<Bytes, NetError>>> {
        self.failed = true;
        self.buf = BytesMut::new();
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for FrameReader {
    type Item = Result<Bytes, NetError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.failed {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => return this.fail(e),
            }
            if this.eof {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                // The peer closed in the middle of a frame (`Framed`'s error text).
                return this.fail(NetError::Io("bytes remaining on stream".into()));
            }
            if this.buf.is_empty() {
                // Between frames: the buffer's spare room is reused while bytes keep coming,
                // and let go only when the socket is about to wait (below).
                match this.io.as_ref().poll_read_ready(cx) {
                    Poll::Pending => return this.wait(),
                    Poll::Ready(Err(e)) => return this.fail(map_io(e)),
                    Poll::Ready(Ok(())) => {}
                }
            }
            if this.buf.len() == this.buf.capacity() {
                this.buf.reserve(READ_CHUNK);
            }
            // tokio's read marks the socket drained after a short read, so the next poll
            // waits for readiness instead of trying a read that would block.
            match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Pending => return this.wait(),
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(map_io(e)),
            }
        }
    }
}

/// The frame sink of a TCP stream's write half; see the module docs for its buffer.
struct FrameWriter {
    /// `None` only inside `drop`.
    io: Option<OwnedWriteHalf>,
    codec: LengthDelimitedCodec,
    /// Encoded frames not yet written: unallocated when nothing is pending.
    buf: BytesMut,
}

impl FrameWriter {
    fn new(io: OwnedWriteHalf, max_frame: usize) -> Self {
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(HEADER_BYTES)
            .big_endian()
            .max_frame_length(max_frame)
            .new_codec();
        FrameWriter { io: Some(io), codec, buf: BytesMut::new() }
    }

    /// Writes everything buffered, then frees the buffer.
    fn poll_write_buf(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Err(NetError::Closed)) };
        while !self.buf.is_empty() {
            match ready!(Pin::new(&mut *io).poll_write(cx, &self.buf)) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "failed to write frame to transport");
                    return Poll::Ready(Err(map_io(e)));
                }
                Ok(n) => self.buf.advance(n),
                Err(e) => return Poll::Ready(Err(map_io(e))),
            }
        }
        self.buf = BytesMut::new();
        Poll::Ready(Ok(()))
    }
}

impl Sink<Bytes> for FrameWriter {
    type Error = NetError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        let this = self.get_mut();
        if this.buf.len() >= WRITE_BACKPRESSURE {
            return this.poll_write_buf(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> Result<(), NetError> {
        let this = self.get_mut();
        this.codec.encode(frame, &mut this.buf).map_err(map_io)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        let this = self.get_mut();
        ready!(this.poll_write_buf(cx))?;
        let Some(io) = this.io.as_mut() else { return Poll::Ready(Err(NetError::Closed)) };
        Pin::new(io).poll_flush(cx).map_err(map_io)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        let this = self.get_mut();
        ready!(this.poll_write_buf(cx))?;
        let Some(io) = this.io.as_mut() else { return Poll::Ready(Err(NetError::Closed)) };
        Pin::new(io).poll_shutdown(cx).map_err(map_io)
    }
}

impl Drop for FrameWriter {
    /// Dropping the sink does not shut the socket's write side down (the connection closes
    /// once both halves are gone), as with the halves of a split `Framed`.
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            io.forget();
        }
    }
}

/// Real TCP. `local_ip` is the address peers should use to reach this node.
#[derive(Debug, Clone)]
pub struct TokioNet {
    ip: IpAddr,
}

impl TokioNet {
    pub fn new(ip: IpAddr) -> Self {
        TokioNet { ip }
    }
}

struct TokioListener {
    inner: TcpListener,
    max_frame: usize,
}

#[async_trait]
impl Listener for TokioListener {
    async fn accept(&mut self) -> Result<Connection, NetError> {
        let (s, peer) = self.inner.accept().await.map_err(map_io)?;
        Ok(framed(s, peer, self.max_frame))
    }
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr().expect("bound listener has an address")
    }
}

#[async_trait]
impl Net for TokioNet {
    async fn listen(&self, addr: SocketAddr, max_frame: usize) -> Result<Box<dyn Listener>, NetError> {
        let inner = bind_listener(addr)
            .map_err(|e| NetError::Bind { addr: addr.to_string(), reason: e.to_string() })?;
        Ok(Box::new(TokioListener { inner, max_frame }))
    }

    async fn connect(&self, addr: SocketAddr, max_frame: usize) -> Result<Connection, NetError> {
        let s = TcpStream::connect(addr).await.map_err(|e| NetError::Unreachable(format!("{addr}: {e}")))?;
        Ok(framed(s, addr, max_frame))
    }

    fn local_ip(&self) -> IpAddr {
        self.ip
    }
}

/// Accept backlog of every listener. tokio's `TcpListener::bind` uses 128, which a burst of
/// client connects overflows (the kernel then drops SYNs and clients stall for a second);
/// the kernel caps it at `net.core.somaxconn` anyway.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with `SO_REUSEADDR` (a restarted server rebinds its port at once, while the
/// old connections sit in TIME_WAIT) and a [`LISTEN_BACKLOG`]-deep accept queue.
pub(crate) fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::{SinkExt, StreamExt};

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_fail() {
        let net = TokioNet::new("127.0.0.1".parse().unwrap());
        let mut l = net.listen("127.0.0.1:0".parse().unwrap(), 1024).await.unwrap();
        let addr = l.local_addr();
        let server = tokio::spawn(async move {
            let mut c = l.accept().await.unwrap();
            let f = c.stream.next().await.unwrap().unwrap();
            c.sink.send(f).await.unwrap();
            // The next frame is too large for this side's limit.
            c.stream.next().await.unwrap()
        });
        let mut c = net.connect(addr, 1 << 20).await.unwrap();
        c.sink.send(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(c.stream.next().await.unwrap().unwrap(), Bytes::from_static(b"hello"));
        c.sink.send(Bytes::from(vec![0u8; 4096])).await.unwrap();
        assert!(matches!(server.await.unwrap(), Err(NetError::FrameTooLarge { .. })));
    }
}
