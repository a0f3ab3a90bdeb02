//! A real client of a session port on any transport (4-byte length frames on TCP, one text
//! message per frame on WebSocket), shared by the client-port and server-process tests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use engine::session::codec::{self, InBody};
use engine::session::Transport;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// What the next frame was.
#[derive(Clone, Debug, PartialEq)]
pub enum Recv {
    Msg(String, Value),
    /// A protobuf message whose body is not JSON.
    Bytes(String, Bytes),
    Eof,
    Timeout,
}

enum Conn {
    Tcp(Framed<TcpStream, LengthDelimitedCodec>),
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// One client connection.
pub struct WireClient {
    pub transport: Transport,
    conn: Conn,
}

impl WireClient {
    pub async fn connect(addr: SocketAddr, transport: Transport) -> WireClient {
        Self::try_connect(addr, transport).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`connect`](Self::connect), but a refused connection or a failed WebSocket
    /// handshake is an error naming the address.
    pub async fn try_connect(addr: SocketAddr, transport: Transport) -> Result<WireClient, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let conn = match transport {
            Transport::TcpJson | Transport::TcpProtobuf => {
                // Accepts big frames, so tests can also send oversized ones.
                let codec = LengthDelimitedCodec::builder()
                    .length_field_length(4)
                    .big_endian()
                    .max_frame_length(64 << 20)
                    .new_codec();
                Conn::Tcp(Framed::new(tcp, codec))
            }
            Transport::WebSocketJson => {
                let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
                    .await
                    .map_err(|e| format!("WebSocket upgrade on {addr}: {e}"))?;
                Conn::Ws(Box::new(ws))
            }
        };
        Ok(WireClient { transport, conn })
    }

    pub async fn send_raw(&mut self, payload: Bytes) {
        self.try_send_raw(payload).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`send_raw`](Self::send_raw), but a broken connection is an error.
    pub async fn try_send_raw(&mut self, payload: Bytes) -> Result<(), String> {
        let r = match &mut self.conn {
            Conn::Tcp(f) => f.send(payload).await.map_err(|e| e.to_string()),
            Conn::Ws(ws) => {
                let text = String::from_utf8(payload.to_vec()).expect("test payloads on ws are text");
                ws.send(Message::text(text)).await.map_err(|e| e.to_string())
            }
        };
        r.map_err(|e| format!("{:?}: send: {e}", self.transport))
    }

    /// Sends `payload` as a binary WebSocket message (a WebSocket client only).
    pub async fn send_ws_binary(&mut self, payload: Bytes) {
        match &mut self.conn {
            Conn::Ws(ws) => ws.send(Message::binary(payload)).await.expect("send"),
            Conn::Tcp(_) => panic!("{:?}: not a WebSocket client", self.transport),
        }
    }

    pub async fn send(&mut self, msg_type: &str, body: Value) {
        self.send_raw(codec::encode_json_message(self.transport, msg_type, &body)).await;
    }

    pub async fn try_send(&mut self, msg_type: &str, body: Value) -> Result<(), String> {
        self.try_send_raw(codec::encode_json_message(self.transport, msg_type, &body)).await
    }

    /// The next frame's payload; `None` when the connection ended.
    pub async fn next_payload(&mut self) -> Option<Bytes> {
        match &mut self.conn {
            Conn::Tcp(f) => f.next().await.and_then(Result::ok).map(|b| b.freeze()),
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Some(Bytes::from(t)),
                    Some(Ok(Message::Binary(b))) => return Some(b),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                }
            },
        }
    }

    /// The next message other than `_ping` (answered with `_pong`), waiting at most `limit`
    /// for each frame.
    pub async fn recv_within(&mut self, limit: Duration) -> Recv {
        loop {
            let frame = match tokio::time::timeout(limit, self.next_payload()).await {
                Err(_) => return Recv::Timeout,
                Ok(None) => return Recv::Eof,
                Ok(Some(f)) => f,
            };
            let m =
                codec::decode(self.transport, &frame).expect("server frames decode in the port's encoding");
            let r = match m.body {
                InBody::Json(v) => Recv::Msg(m.msg_type, v),
                InBody::Bytes(b) => match codec::json_body_from_bytes(&m.msg_type, &b) {
                    Ok(v) => Recv::Msg(m.msg_type, v),
                    Err(_) => Recv::Bytes(m.msg_type, b),
                },
            };
            match r {
                Recv::Msg(t, _) if t == codec::PING_TYPE => {
                    let pong = codec::encode_json_message(self.transport, codec::PONG_TYPE, &json!({}));
                    // The connection may be closing; the next read says so.
                    let _ = match &mut self.conn {
                        Conn::Tcp(f) => f.send(pong).await.is_ok(),
                        Conn::Ws(ws) => {
                            let text = String::from_utf8(pong.to_vec()).unwrap_or_default();
                            ws.send(Message::text(text)).await.is_ok()
                        }
                    };
                }
                other => return other,
            }
        }
    }
}
