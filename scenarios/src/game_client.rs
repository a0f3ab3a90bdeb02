//! A client of the reference game (the `game` crate) speaking the raw wire protocol (DESIGN.md
//! §6) over the `Net` port, for scenario workloads: requests with a reply deadline, pushed
//! messages kept in an inbox with their true arrival time, `_ping` answered, `_sc_redirect`
//! followed on request.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use engine::env::{timeout, Connection, Env};
use engine::session::codec::{self, InBody};
use engine::session::Transport;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::history::TimeSource;

/// How long a connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for its reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ReqError {
    /// Sent (or maybe sent); no answer came in time. It may have taken effect.
    Lost,
    /// The server closed the connection (after whatever it sent, which is in the inbox).
    Closed,
    /// An `_error {code, message}` frame came instead of the reply (its body). On a
    /// connection with one request at a time it answers that request; callers that cannot
    /// be sure treat it like `Lost`.
    Error(Value),
}

/// A message the server sent that was not the reply being waited for.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    pub msg_type: String,
    pub body: Value,
    /// True simulated time of arrival, ns.
    pub at_ns: u64,
}

/// Where `_sc_redirect` sends a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub addr: SocketAddr,
    pub token: String,
    pub flavor: Option<String>,
}

impl Redirect {
    /// Parses an `_sc_redirect` body.
    pub fn from_body(body: &Value) -> Option<Redirect> {
        let host: IpAddr = body.get("host")?.as_str()?.parse().ok()?;
        let port = u16::try_from(body.get("port")?.as_u64()?).ok()?;
        let token = body.get("token")?.as_str()?.to_string();
        let flavor = body.get("flavor").and_then(Value::as_str).map(str::to_string);
        Some(Redirect { addr: SocketAddr::new(host, port), token, flavor })
    }
}

/// One client connection.
pub struct GameClient {
    env: Env,
    now: TimeSource,
    conn: Connection,
    inbox: Vec<Pushed>,
    closed: bool,
}

impl GameClient {
    /// Connects within [`CONNECT_TIMEOUT`]; `None` if that fails.
    pub async fn connect(env: &Env, now: TimeSource, addr: SocketAddr) -> Option<GameClient> {
        match timeout(&*env.clock, CONNECT_TIMEOUT, env.net.connect(addr, engine::env::MAX_PEER_FRAME_BYTES))
            .await
        {
            Ok(Ok(conn)) => {
                Some(GameClient { env: env.clone(), now, conn, inbox: Vec::new(), closed: false })
            }
            _ => None,
        }
    }

    /// False once the server closed the connection (or it broke).
    pub fn is_open(&self) -> bool {
        !self.closed
    }

    /// Sends one message (no reply expected).
    pub async fn send(&mut self, msg_type: &str, body: &Value) -> Result<(), ReqError> {
        if self.closed {
            return Err(ReqError::Closed);
        }
        let frame = codec::encode_json_message(Transport::TcpJson, msg_type, body);
        match self.conn.sink.send(frame).await {
            Ok(()) => Ok(()),
            Err(_) => {
                self.closed = true;
                Err(ReqError::Lost)
            }
        }
    }

    /// Sends several messages in one write (no reply expected): they reach the server
    /// together, so it handles them back to back (a pipelined burst).
    pub async fn send_many(&mut self, messages: &[(&str, Value)]) -> Result<(), ReqError> {
        if self.closed {
            return Err(ReqError::Closed);
        }
        for (msg_type, body) in messages {
            let frame = codec::encode_json_message(Transport::TcpJson, msg_type, body);
            if self.conn.sink.feed(frame).await.is_err() {
                self.closed = true;
                return Err(ReqError::Lost);
            }
        }
        if self.conn.sink.flush().await.is_err() {
            self.closed = true;
            return Err(ReqError::Lost);
        }
        Ok(())
    }

    /// Reads one frame within `left`: `Ok(Some)` a message (pings answered and skipped are
    /// not returned), `Ok(None)` the time ran out, `Err(Closed)` the connection ended.
    async fn next_message(&mut self, left: Duration) -> Result<Option<(String, Value)>, ReqError> {
        let frame: Bytes = match timeout(&*self.env.clock, left, self.conn.stream.next()).await {
            Err(_) => return Ok(None),
            Ok(Some(Ok(f))) => f,
            Ok(_) => {
                self.closed = true;
                return Err(ReqError::Closed);
            }
        };
        let Ok(m) = codec::decode(Transport::TcpJson, &frame) else {
            self.closed = true;
            return Err(ReqError::Closed);
        };
        let InBody::Json(body) = m.body else { return Ok(Some((m.msg_type, Value::Null))) };
        Ok(Some((m.msg_type, body)))
    }

    /// Sends and waits for a reply of one of `reply_types` (answering pings; other messages
    /// go to the inbox). Returns the reply's type and body.
    pub async fn request_any(
        &mut self,
        msg_type: &str,
        body: Value,
        reply_types: &[&str],
    ) -> Result<(String, Value), ReqError> {
        self.send(msg_type, &body).await?;
        self.wait_for(reply_types, REPLY_TIMEOUT).await
    }

    /// [`request_any`](Self::request_any) with one reply type; returns its body.
    pub async fn request(
        &mut self,
        msg_type: &str,
        body: Value,
        reply_type: &str,
    ) -> Result<Value, ReqError> {
        self.request_any(msg_type, body, &[reply_type]).await.map(|(_, v)| v)
    }

    /// Waits up to `within` for a message of one of `types`.
    pub async fn wait_for(&mut self, types: &[&str], within: Duration) -> Result<(String, Value), ReqError> {
        let deadline = self.env.clock.now() + within;
        loop {
            let left = deadline.saturating_since(self.env.clock.now());
            if left.is_zero() {
                return Err(ReqError::Lost);
            }
            match self.next_message(left).await? {
                None => return Err(ReqError::Lost),
                Some((t, v)) => {
                    if t == codec::PING_TYPE {
                        let _ = self.send(codec::PONG_TYPE, &json!({})).await;
                    } else if types.contains(&t.as_str()) {
                        return Ok((t, v));
                    } else if t == codec::ERROR_TYPE {
                        return Err(ReqError::Error(v));
                    } else {
                        self.push(t, v);
                    }
                }
            }
        }
    }

    /// Reads for `d`, keeping pushed messages and answering pings. False if the connection
    /// ended meanwhile.
    pub async fn pump(&mut self, d: Duration) -> bool {
        let deadline = self.env.clock.now() + d;
        while !self.closed {
            let left = deadline.saturating_since(self.env.clock.now());
            if left.is_zero() {
                return true;
            }
            match self.next_message(left).await {
                Ok(None) => return true,
                Ok(Some((t, v))) => {
                    if t == codec::PING_TYPE {
                        let _ = self.send(codec::PONG_TYPE, &json!({})).await;
                    } else {
                        self.push(t, v);
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn push(&mut self, msg_type: String, body: Value) {
        self.inbox.push(Pushed { msg_type, body, at_ns: (self.now)() });
    }

    /// Takes the pushed messages received so far.
    pub fn take_inbox(&mut self) -> Vec<Pushed> {
        std::mem::take(&mut self.inbox)
    }

    /// The first pushed `_sc_redirect`, if one arrived (removed from the inbox).
    pub fn take_redirect(&mut self) -> Option<Redirect> {
        let i = self.inbox.iter().position(|p| p.msg_type == engine::account::SC_REDIRECT)?;
        Redirect::from_body(&self.inbox.remove(i).body)
    }
}

/// `true` unless the reply says `"error": false`.
pub fn is_error(v: &Value) -> bool {
    v.get("error").and_then(Value::as_bool) != Some(false)
}
