//! The `Net` port on madsim's simulated TCP, framed with tokio-util's length-delimited codec
//! (4-byte big-endian length, the wire format of DESIGN.md §6).
//!
//! madsim's TCP is reliable and ordered; packet loss shows up as retransmission delay, a
//! partition stalls established streams and makes `connect` fail at once, and killing a
//! node ends its streams (the peer reads end-of-stream).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use engine::env::{Connection, Listener, Net, NetError};
use futures::{Sink, StreamExt, TryStreamExt};
use madsim::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::chart::{ChartTap, NodeTap};

/// Maps an I/O error of the framed stream to the port's error.
pub fn map_io(e: io::Error, max_frame: usize) -> NetError {
    match e.kind() {
        io::ErrorKind::InvalidData if e.to_string().contains("frame size too big") => {
            NetError::FrameTooLarge { len: 0, max: max_frame }
        }
        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound | io::ErrorKind::HostUnreachable => {
            NetError::Unreachable(e.to_string())
        }
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            NetError::Closed
        }
        _ => NetError::Io(e.to_string()),
    }
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec()
}

fn framed(
    stream: TcpStream,
    peer: SocketAddr,
    max_frame: usize,
    accepted: bool,
    chart: Option<&NodeTap>,
) -> Connection {
    let Some(chart) = chart else {
        let (sink, stream) = Framed::new(stream, codec(max_frame)).split();
        return Connection {
            sink: Box::pin(engine::env::MapErrSink::new(sink, move |e| map_io(e, max_frame))),
            stream: Box::pin(stream.map_ok(|b| b.freeze()).map_err(move |e| map_io(e, max_frame))),
            peer,
        };
    };
    // Charted: the same framing, with every frame noted on the run's chart as it passes (no
    // extra await point, no randomness, no trace event: the run is unchanged).
    let local = stream.local_addr().expect("simulated stream has an address");
    let conn = chart.tap.open(&chart.node, local, peer, accepted);
    let (sink, stream) = Framed::new(stream, codec(max_frame)).split();
    let sink = TapSink { inner: sink, tap: chart.tap.clone(), conn, seq: 0 };
    let (tap, mut seq) = (chart.tap.clone(), 0u64);
    let stream = stream.inspect(move |r| {
        if let Ok(b) = r {
            tap.frame(conn, false, seq, b.len());
            seq += 1;
        }
    });
    Connection {
        sink: Box::pin(engine::env::MapErrSink::new(sink, move |e| map_io(e, max_frame))),
        stream: Box::pin(stream.map_ok(|b| b.freeze()).map_err(move |e| map_io(e, max_frame))),
        peer,
    }
}

/// A frame sink that notes every frame it takes on the run's chart.
struct TapSink<S> {
    inner: S,
    tap: ChartTap,
    conn: usize,
    seq: u64,
}

impl<S: Sink<Bytes> + Unpin> Sink<Bytes> for TapSink<S> {
    type Error = S::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), Self::Error> {
        let len = item.len();
        Pin::new(&mut self.inner).start_send(item)?;
        self.tap.frame(self.conn, true, self.seq, len);
        self.seq += 1;
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The `Net` port of one simulated node.
#[derive(Clone, Debug)]
pub struct SimNet {
    ip: IpAddr,
    /// Where frames are noted when the run is charted (`replay --chart`).
    chart: Option<NodeTap>,
}

impl SimNet {
    pub fn new(ip: IpAddr) -> Self {
        SimNet { ip, chart: None }
    }

    /// A `Net` port that also notes its connections and frames on a run's chart.
    pub fn charted(ip: IpAddr, chart: Option<NodeTap>) -> Self {
        SimNet { ip, chart }
    }
}

struct SimListener {
    inner: TcpListener,
    max_frame: usize,
    chart: Option<NodeTap>,
}

#[async_trait]
impl Listener for SimListener {
    async fn accept(&mut self) -> Result<Connection, NetError> {
        let (stream, peer) = self.inner.accept().await.map_err(|e| map_io(e, self.max_frame))?;
        Ok(framed(stream, peer, self.max_frame, true, self.chart.as_ref()))
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr().expect("simulated listener has an address")
    }
}

#[async_trait]
impl Net for SimNet {
    async fn listen(&self, addr: SocketAddr, max_frame: usize) -> Result<Box<dyn Listener>, NetError> {
        let inner = TcpListener::bind(addr)
            .await
            .map_err(|e| NetError::Bind { addr: addr.to_string(), reason: e.to_string() })?;
        Ok(Box::new(SimListener { inner, max_frame, chart: self.chart.clone() }))
    }

    async fn connect(&self, addr: SocketAddr, max_frame: usize) -> Result<Connection, NetError> {
        // Any failure to establish is "unreachable" to the caller: refused, no route, clogged.
        let stream =
            TcpStream::connect(addr).await.map_err(|e| NetError::Unreachable(format!("{addr}: {e}")))?;
        Ok(framed(stream, addr, max_frame, false, self.chart.as_ref()))
    }

    fn local_ip(&self) -> IpAddr {
        self.ip
    }
}
