//! The client protobuf envelope: `engine::session::codec::decode_protobuf` (`decode(TcpProtobuf,
//! payload)`), then what a JSON handler on a protobuf port does with the body
//! (`json_body_from_bytes`).
//!
//! Properties: never panics; `decode(TcpProtobuf, ..)` is `decode_protobuf`; a decoded envelope
//! re-encoded with `encode_protobuf` decodes to the same message, byte for byte; the `_error`
//! frame for any refusal decodes as an envelope whose body is the error's JSON.
#![no_main]

use engine::session::codec::{self, InBody, ERROR_TYPE, MSG_TYPE_MAX_BYTES};
use engine::session::Transport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let direct = codec::decode_protobuf(payload);
    assert_eq!(codec::decode(Transport::TcpProtobuf, payload), direct);
    match direct {
        Ok(m) => {
            assert!(!m.msg_type.is_empty() && m.msg_type.len() <= MSG_TYPE_MAX_BYTES);
            let _ = codec::route(&m.msg_type);
            let InBody::Bytes(body) = &m.body else { panic!("a protobuf envelope has a bytes body") };
            let again = codec::decode_protobuf(&codec::encode_protobuf(&m.msg_type, body))
                .expect("a re-encoded envelope decodes");
            assert_eq!(again, m);
            if let Ok(v) = codec::json_body_from_bytes(&m.msg_type, body) {
                assert!(v.is_object());
            }
        }
        Err(e) => {
            let frame = codec::encode_error(Transport::TcpProtobuf, &e);
            let back = codec::decode_protobuf(&frame).expect("an _error frame is a valid envelope");
            assert_eq!(back.msg_type, ERROR_TYPE);
            assert_eq!(back.body, InBody::Bytes(codec::error_body_json(&e).into_bytes().into()));
        }
    }
});
