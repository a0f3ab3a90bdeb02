//! The RPC wire format: one protobuf [`pb::Frame`] per Net frame, and its validated Rust view
//! [`WireFrame`].
//!
//! [`decode`] never panics: any byte string either decodes into a well-formed frame (PeerIds
//! of exactly 16 bytes, a known status) or yields a [`WireError`], after which the connection
//! is dropped.

use bytes::Bytes;
use prost::Message;

use crate::cluster::PeerId;

/// The generated envelope types (`proto/rpc.proto`).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/sandtable.rpc.wire.rs"));
}

/// A request as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFrame {
    pub xid: u64,
    pub msg_type: String,
    pub body: Bytes,
    /// Order key and its per-(sender, receiver, key) sequence number (from 1).
    pub order: Option<(String, u64)>,
    /// Xids below this are finished for the caller (see `proto/rpc.proto`).
    pub floor: u64,
}

/// How a request ended at the receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyStatus {
    Ok(Bytes),
    NoHandler,
    HandlerError(String),
    DecodeError(String),
    OutOfOrder { last_seq: u64 },
    Overloaded(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyFrame {
    pub xid: u64,
    pub replier: PeerId,
    pub status: ReplyStatus,
}

/// One frame of an RPC connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireFrame {
    Hello { sender: PeerId, receiver: PeerId },
    Fenced { actual: PeerId },
    Request(RequestFrame),
    Reply(ReplyFrame),
    Ping,
    Pong,
}

/// A frame that is not a valid RPC frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a protobuf frame: {0}")]
    Protobuf(String),
    #[error("frame has no kind")]
    Empty,
    #[error("bad peer id in field {0}")]
    BadPeerId(&'static str),
    #[error("unknown reply status {0}")]
    UnknownStatus(i32),
}

fn peer(b: &[u8], field: &'static str) -> Result<PeerId, WireError> {
    if b.len() != 16 {
        return Err(WireError::BadPeerId(field));
    }
    PeerId::from_slice(b).ok_or(WireError::BadPeerId(field))
}

fn peer_bytes(id: &PeerId) -> Bytes {
    Bytes::copy_from_slice(id.as_bytes())
}

/// Encodes a frame for the Net port.
pub fn encode(frame: &WireFrame) -> Bytes {
    use pb::frame::Kind;
    let kind = match frame {
        WireFrame::Hello { sender, receiver } => {
            Kind::Hello(pb::Hello { sender: peer_bytes(sender), receiver: peer_bytes(receiver) })
        }
        WireFrame::Fenced { actual } => Kind::Fenced(pb::Fenced { actual: peer_bytes(actual) }),
        WireFrame::Request(r) => Kind::Request(pb::Request {
            xid: r.xid,
            msg_type: r.msg_type.clone(),
            body: r.body.clone(),
            order_key: r.order.as_ref().map(|(k, _)| k.clone()),
            order_seq: r.order.as_ref().map_or(0, |(_, s)| *s),
            floor: r.floor,
        }),
        WireFrame::Reply(r) => {
            let mut rep = pb::Reply { xid: r.xid, replier: peer_bytes(&r.replier), ..Default::default() };
            let status = match &r.status {
                ReplyStatus::Ok(body) => {
                    rep.body = body.clone();
                    pb::Status::Ok
                }
                ReplyStatus::NoHandler => pb::Status::NoHandler,
                ReplyStatus::HandlerError(e) => {
                    rep.error = e.clone();
                    pb::Status::HandlerError
                }
                ReplyStatus::DecodeError(e) => {
                    rep.error = e.clone();
                    pb::Status::DecodeError
                }
                ReplyStatus::OutOfOrder { last_seq } => {
                    rep.last_seq = *last_seq;
                    pb::Status::OutOfOrder
                }
                ReplyStatus::Overloaded(e) => {
                    rep.error = e.clone();
                    pb::Status::Overloaded
                }
            };
            rep.status = status as i32;
            Kind::Reply(rep)
        }
        WireFrame::Ping => Kind::Ping(pb::Ping {}),
        WireFrame::Pong => Kind::Pong(pb::Pong {}),
    };
    Bytes::from(pb::Frame { kind: Some(kind) }.encode_to_vec())
}

/// Decodes and validates one frame. Never panics.
pub fn decode(bytes: &[u8]) -> Result<WireFrame, WireError> {
    decode_buf(bytes)
}

/// [`decode`] of a frame as the Net port hands it over: the bodies of requests and replies
/// are slices of `frame` (no copy).
pub fn decode_shared(frame: Bytes) -> Result<WireFrame, WireError> {
    decode_buf(frame)
}

fn decode_buf(bytes: impl bytes::Buf) -> Result<WireFrame, WireError> {
    use pb::frame::Kind;
    let frame = pb::Frame::decode(bytes).map_err(|e| WireError::Protobuf(e.to_string()))?;
    Ok(match frame.kind.ok_or(WireError::Empty)? {
        Kind::Hello(h) => {
            WireFrame::Hello { sender: peer(&h.sender, "sender")?, receiver: peer(&h.receiver, "receiver")? }
        }
        Kind::Fenced(f) => WireFrame::Fenced { actual: peer(&f.actual, "actual")? },
        Kind::Request(r) => WireFrame::Request(RequestFrame {
            xid: r.xid,
            msg_type: r.msg_type,
            body: r.body,
            order: r.order_key.map(|k| (k, r.order_seq)),
            floor: r.floor,
        }),
        Kind::Reply(r) => {
            let status = match pb::Status::try_from(r.status) {
                Ok(pb::Status::Ok) => ReplyStatus::Ok(r.body),
                Ok(pb::Status::NoHandler) => ReplyStatus::NoHandler,
                Ok(pb::Status::HandlerError) => ReplyStatus::HandlerError(r.error),
                Ok(pb::Status::DecodeError) => ReplyStatus::DecodeError(r.error),
                Ok(pb::Status::OutOfOrder) => ReplyStatus::OutOfOrder { last_seq: r.last_seq },
                Ok(pb::Status::Overloaded) => ReplyStatus::Overloaded(r.error),
                Err(_) => return Err(WireError::UnknownStatus(r.status)),
            };
            WireFrame::Reply(ReplyFrame { xid: r.xid, replier: peer(&r.replier, "replier")?, status })
        }
        Kind::Ping(_) => WireFrame::Ping,
        Kind::Pong(_) => WireFrame::Pong,
    })
}

/// Hex of at most `max` bytes of `body` (for message logging level 2), with a `...` marker
/// when cut.
pub fn hex_prefix(body: &[u8], max: usize) -> String {
    let mut s = String::with_capacity(2 * body.len().min(max) + 3);
    for b in body.iter().take(max) {
        s.push_str(&format!("{b:02x}"));
    }
    if body.len() > max {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pid(n: u8) -> PeerId {
        PeerId(uuid::Uuid::from_bytes([n; 16]))
    }

    fn samples() -> Vec<WireFrame> {
        vec![
            WireFrame::Hello { sender: pid(1), receiver: pid(2) },
            WireFrame::Fenced { actual: pid(3) },
            WireFrame::Request(RequestFrame {
                xid: 7,
                msg_type: "echo".into(),
                body: Bytes::from_static(b"\x0a\x02hi"),
                order: Some((String::new(), 1)),
                floor: 3,
            }),
            WireFrame::Request(RequestFrame {
                xid: u64::MAX,
                msg_type: String::new(),
                body: Bytes::new(),
                order: None,
                floor: 0,
            }),
            WireFrame::Reply(ReplyFrame { xid: 7, replier: pid(2), status: ReplyStatus::Ok(Bytes::new()) }),
            WireFrame::Reply(ReplyFrame { xid: 8, replier: pid(2), status: ReplyStatus::NoHandler }),
            WireFrame::Reply(ReplyFrame {
                xid: 9,
                replier: pid(2),
                status: ReplyStatus::HandlerError("boom".into()),
            }),
            WireFrame::Reply(ReplyFrame {
                xid: 10,
                replier: pid(2),
                status: ReplyStatus::OutOfOrder { last_seq: 4 },
            }),
            WireFrame::Reply(ReplyFrame {
                xid: 11,
                replier: pid(2),
                status: ReplyStatus::DecodeError("x".into()),
            }),
            WireFrame::Reply(ReplyFrame {
                xid: 12,
                replier: pid(2),
                status: ReplyStatus::Overloaded("y".into()),
            }),
            WireFrame::Ping,
            WireFrame::Pong,
        ]
    }

    #[test]
    fn every_frame_kind_round_trips() {
        for f in samples() {
            assert_eq!(decode(&encode(&f)).as_ref(), Ok(&f), "{f:?}");
        }
    }

    #[test]
    fn an_empty_order_key_is_still_a_key() {
        let f = &samples()[2];
        let WireFrame::Request(r) = decode(&encode(f)).unwrap() else { panic!("not a request") };
        assert_eq!(r.order, Some((String::new(), 1)));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        let short = pb::Frame {
            kind: Some(pb::frame::Kind::Hello(pb::Hello {
                sender: Bytes::from(vec![1; 15]),
                receiver: Bytes::from(vec![2; 16]),
            })),
        }
        .encode_to_vec();
        assert_eq!(decode(&short), Err(WireError::BadPeerId("sender")));
        let bad_status = pb::Frame {
            kind: Some(pb::frame::Kind::Reply(pb::Reply {
                status: 99,
                replier: Bytes::from(vec![0; 16]),
                ..Default::default()
            })),
        }
        .encode_to_vec();
        assert_eq!(decode(&bad_status), Err(WireError::UnknownStatus(99)));
        assert!(matches!(decode(&[0xff, 0xff, 0xff]), Err(WireError::Protobuf(_))));
    }

    #[test]
    fn hex_prefix_caps_the_body() {
        assert_eq!(hex_prefix(&[0xab, 0x01], 8), "ab01");
        assert_eq!(hex_prefix(&[1, 2, 3], 2), "0102...");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_valid_frames_never_panic_the_decoder(
            which in 0usize..12, pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()
        ) {
            let mut b = encode(&samples()[which]).to_vec();
            if !b.is_empty() {
                let i = pos % b.len();
                b[i] = byte;
                b.truncate(cut % (b.len() + 1));
            }
            if let Ok(f) = decode(&b) {
                // Whatever decodes re-encodes to something that decodes to the same frame.
                prop_assert_eq!(decode(&encode(&f)), Ok(f));
            }
        }
    }
}
