//! Wire messages between [`SimKv`](super::SimKv) and the simulated Redis node.
//!
//! Each frame of a connection (4-byte big-endian length + payload, see the `Net` port) carries
//! one bincode-encoded [`Request`] (client -> server) or [`Response`] (server -> client).
//! Requests are pipelined: the client may send many before the first answer; the server
//! answers them in order, each tagged with its request's `id`.

use bincode::Options;
use bytes::Bytes;
use engine::env::MAX_PEER_FRAME_BYTES;
use serde::{Deserialize, Serialize};

pub use engine::testing::redis_service::{Command, CommandError, Reply};

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
    use std::time::Duration;

    use engine::env::SetOptions;

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
