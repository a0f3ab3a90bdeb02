//! The `Net` port on tokio TCP with the length-delimited codec (DESIGN.md §6 framing).

use std::io;
use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use engine::env::{Connection, Listener, Net, NetError};
use futures::{StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

fn map_io(e: io::Error, max_frame: usize) -> NetError {
    match e.kind() {
        io::ErrorKind::InvalidData if e.to_string().contains("frame size too big") => {
            NetError::FrameTooLarge { len: 0, max: max_frame }
        }
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
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec();
    let (sink, stream) = Framed::new(stream, codec).split();
    Connection {
        sink: Box::pin(engine::env::MapErrSink::new(sink, move |e| map_io(e, max_frame))),
        stream: Box::pin(stream.map_ok(|b| b.freeze()).map_err(move |e| map_io(e, max_frame))),
        peer,
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
        let (s, peer) = self.inner.accept().await.map_err(|e| map_io(e, self.max_frame))?;
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
    use futures::SinkExt;

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
