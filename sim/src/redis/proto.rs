//! Wire messages between [`SimKv`](super::SimKv) and the simulated Redis node.
//!
//! Each frame of a connection (4-byte big-endian length + payload, see the `Net` port) carries
//! one bincode-encoded [`Request`] (client -> server) or [`Response`] (server -> client).
//! Requests are pipelined: the client may send many before the first answer; the server
//! answers them in order, each tagged with its request's `id`.

use std::time::Duration;

use bincode::Options;
use bytes::Bytes;
use engine::env::{SetOptions, Ttl, MAX_PEER_FRAME_BYTES};
use serde::{Deserialize, Serialize};

/// One Redis command, as the `Kv` port names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Get {
        key: String,
    },
    Set {
        key: String,
        value: Bytes,
        opts: SetOptions,
    },
    Del {
        key: String,
    },
    /// `PEXPIRE key ms`.
    PExpire {
        key: String,
        ttl_ms: u64,
    },
    PTtl {
        key: String,
    },
    /// The atomic compare-and-set (a Lua script on real Redis).
    CompareAndSet {
        key: String,
        expected: Option<Bytes>,
        new: Option<Bytes>,
        px: Option<Duration>,
    },
    /// `GETDEL`.
    Take {
        key: String,
    },
    RPush {
        key: String,
        values: Vec<Bytes>,
    },
    LPop {
        key: String,
    },
    LRange {
        key: String,
        start: i64,
        stop: i64,
    },
    LLen {
        key: String,
    },
}

impl Command {
    /// The Redis name of the command (for logs).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "GET",
            Command::Set { .. } => "SET",
            Command::Del { .. } => "DEL",
            Command::PExpire { .. } => "PEXPIRE",
            Command::PTtl { .. } => "PTTL",
            Command::CompareAndSet { .. } => "CAS",
            Command::Take { .. } => "GETDEL",
            Command::RPush { .. } => "RPUSH",
            Command::LPop { .. } => "LPOP",
            Command::LRange { .. } => "LRANGE",
            Command::LLen { .. } => "LLEN",
        }
    }

    /// The key the command touches.
    pub fn key(&self) -> &str {
        match self {
            Command::Get { key }
            | Command::Set { key, .. }
            | Command::Del { key }
            | Command::PExpire { key, .. }
            | Command::PTtl { key }
            | Command::CompareAndSet { key, .. }
            | Command::Take { key }
            | Command::RPush { key, .. }
            | Command::LPop { key }
            | Command::LRange { key, .. }
            | Command::LLen { key } => key,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A bulk string or nil (`GET`, `GETDEL`, `LPOP`).
    Value(Option<Bytes>),
    /// A yes/no answer (`SET`, `DEL`, `PEXPIRE`, CAS).
    Bool(bool),
    /// An integer (`RPUSH`, `LLEN`).
    Int(u64),
    /// `PTTL`.
    Ttl(Ttl),
    /// `LRANGE`.
    List(Vec<Bytes>),
}

/// A command the server refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// Redis's own error text (e.g. `ERR invalid expire time in 'set' command`).
    #[error("{0}")]
    Server(String),
}

/// Client -> server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client, unique per connection; echoed in the response.
    pub id: u64,
    pub command: Command,
}

/// Server -> client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub result: Result<Reply, CommandError>,
}

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_PEER_FRAME_BYTES as u64).reject_trailing_bytes()
}

/// Encodes a message as one frame payload.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, bincode::Error> {
    options().serialize(msg).map(Bytes::from)
}

/// Decodes a frame payload; a malformed or oversized payload is an error, never a panic.
pub fn decode<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::env::SetCondition;

    #[test]
    fn request_and_response_round_trip() {
        let req = Request {
            id: 7,
            command: Command::Set {
                key: "k".into(),
                value: Bytes::from_static(b"v"),
                opts: SetOptions {
                    condition: SetCondition::IfAbsent,
                    px: Some(Duration::from_millis(5)),
                    keep_ttl: false,
                },
            },
        };
        assert_eq!(decode::<Request>(&encode(&req).unwrap()).unwrap(), req);
        let resp = Response { id: 7, result: Err(CommandError::WrongType) };
        assert_eq!(decode::<Response>(&encode(&resp).unwrap()).unwrap(), resp);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<Request>(&[]).is_err());
        assert!(decode::<Request>(&[0xff; 64]).is_err());
        // A huge announced length must not allocate it.
        let mut evil = vec![0u8, 0];
        evil.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<Request>(&evil).is_err());
    }
}
