//! The `Net` port on madsim's simulated TCP, framed with tokio-util's length-delimited codec
//! (4-byte big-endian length, the wire format of DESIGN.md §6).
//!
//! madsim's TCP is reliable and ordered; packet loss shows up as retransmission delay, a
//! partition stalls established streams and makes `connect` fail at once, and killing a
//! node ends its streams (the peer reads end-of-stream).

use std::io;
use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use engine::env::{Connection, Listener, Net, NetError};
use futures::{StreamExt, TryStreamExt};
use madsim::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

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

fn framed(stream: TcpStream, peer: SocketAddr, max_frame: usize) -> Connection {
    let (sink, stream) = Framed::new(stream, codec(max_frame)).split();
    Connection {
        sink: Box::pin(engine::env::MapErrSink::new(sink, move |e| map_io(e, max_frame))),
        stream: Box::pin(stream.map_ok(|b| b.freeze()).map_err(move |e| map_io(e, max_frame))),
        peer,
    }
}

/// The `Net` port of one simulated node.
#[derive(Clone, Debug)]
pub struct SimNet {
    ip: IpAddr,
}

impl SimNet {
    pub fn new(ip: IpAddr) -> Self {
        SimNet { ip }
    }
}

struct SimListener {
    inner: TcpListener,
    max_frame: usize,
}

#[async_trait]
impl Listener for SimListener {
    async fn accept(&mut self) -> Result<Connection, NetError> {
        let (stream, peer) = self.inner.accept().await.map_err(|e| map_io(e, self.max_frame))?;
        Ok(framed(stream, peer, self.max_frame))
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
        Ok(Box::new(SimListener { inner, max_frame }))
    }

    async fn connect(&self, addr: SocketAddr, max_frame: usize) -> Result<Connection, NetError> {
        // Any failure to establish is "unreachable" to the caller: refused, no route, clogged.
        let stream =
            TcpStream::connect(addr).await.map_err(|e| NetError::Unreachable(format!("{addr}: {e}")))?;
        Ok(framed(stream, addr, max_frame))
    }

    fn local_ip(&self) -> IpAddr {
        self.ip
    }
}
