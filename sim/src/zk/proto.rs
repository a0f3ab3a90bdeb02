//! Wire messages between the simulated ZooKeeper service and its clients.
//!
//! Every frame (length-delimited by the `Net` port) carries one bincode-encoded message.
//! A frame that does not decode is a protocol violation: the receiver logs it and drops the
//! connection (never panics).

use bytes::Bytes;
use engine::env::{CoordError, CreateMode, EventKind, MultiError, Op, OpResult, Stat};
use serde::{Deserialize, Serialize};

/// The `xid` of heartbeat pings (never used by a request).
pub const PING_XID: u64 = u64::MAX;

/// Client -> service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First frame of every connection: open a new session (`session_id == 0`) or resume one.
    Connect { session_id: i64, password: u64, timeout_ms: u64, last_zxid_seen: i64 },
    /// A request; the reply carries the same `xid`.
    Request { xid: u64, req: Request },
}

/// One request of an established session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    Create {
        path: String,
        data: Bytes,
        mode: CreateMode,
    },
    Delete {
        path: String,
        version: Option<i32>,
    },
    GetData {
        path: String,
        watch: bool,
    },
    Exists {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Bytes,
        version: Option<i32>,
    },
    GetChildren {
        path: String,
        watch: bool,
    },
    Multi {
        ops: Vec<Op>,
    },
    /// Re-registers the client's outstanding watches after a reconnect. Watches whose node
    /// changed after `relative_zxid` fire at once instead.
    SetWatches {
        relative_zxid: i64,
        data: Vec<String>,
        exist: Vec<String>,
        child: Vec<String>,
    },
    /// Ends the session (its ephemerals are deleted at once).
    Close,
}

/// The successful answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Pong,
    Create(String),
    Delete,
    GetData(Bytes, Stat),
    Exists(Option<Stat>),
    SetData(Stat),
    GetChildren(Vec<String>),
    Multi(Vec<OpResult>),
    SetWatches,
    Close,
}

/// What the service answers to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Ok(Response),
    Err(CoordError),
    MultiErr(MultiError),
}

/// Service -> client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answer to [`ClientMsg::Connect`].
    Connected { session_id: i64, password: u64, timeout_ms: u64 },
    /// The session asked for does not exist (any more) or the password is wrong.
    Expired,
    /// Answer to a request. `zxid` is the last transaction the service had applied when it
    /// answered (every watch notification for changes up to it was sent before this frame).
    Reply { xid: u64, zxid: i64, reply: Reply },
    /// A one-shot watch of this session fired.
    Watch { kind: EventKind, path: String },
}

/// Encodes a message (bincode 1).
pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    Bytes::from(bincode::serialize(msg).expect("in-memory bincode serialisation cannot fail"))
}

/// Decodes a message; `Err` with a description on malformed input.
pub fn decode<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<T, String> {
    bincode::deserialize(frame).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_garbage() {
        let m = ClientMsg::Request {
            xid: 7,
            req: Request::Multi {
                ops: vec![
                    Op::Create {
                        path: "/a".into(),
                        data: Bytes::from_static(b"x"),
                        mode: CreateMode::Ephemeral,
                    },
                    Op::Check { path: "/a".into(), version: Some(3) },
                ],
            },
        };
        let b = encode(&m);
        assert_eq!(decode::<ClientMsg>(&b).unwrap(), m);
        assert!(decode::<ClientMsg>(&[0xff, 0xff, 0xff, 0xff, 1, 2]).is_err());
        assert!(decode::<ServerMsg>(&[]).is_err());
    }
}
