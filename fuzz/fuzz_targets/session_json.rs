//! The client JSON envelope: `engine::session::codec::decode_json`, as reached through
//! `decode(TcpJson | WebSocketJson, payload)`, then what the session does with a decoded
//! message (`route`) or an error (the `_error` frame it sends back).
//!
//! Properties: never panics; both JSON transports decode identically; a decoded envelope
//! re-encoded with `encode_json` decodes to the same message (bodies holding floats: to the
//! same type, see `has_float`); the `_error` frame for any refusal is itself a valid envelope.
#![no_main]

use engine::session::codec::{self, InBody, ERROR_TYPE, MSG_TYPE_MAX_BYTES};
use engine::session::Transport;
use libfuzzer_sys::fuzz_target;
use sandtable_fuzz::has_float;
use serde_json::Value;

fuzz_target!(|payload: &[u8]| {
    let direct = codec::decode_json(payload);
    assert_eq!(codec::decode(Transport::TcpJson, payload), direct);
    assert_eq!(codec::decode(Transport::WebSocketJson, payload), direct);
    match direct {
        Ok(m) => {
            assert!(!m.msg_type.is_empty() && m.msg_type.len() <= MSG_TYPE_MAX_BYTES);
            let _ = codec::route(&m.msg_type);
            let InBody::Json(body) = &m.body else { panic!("a JSON envelope has a JSON body") };
            assert!(matches!(body, Value::Object(_)));
            let again = codec::decode_json(&codec::encode_json(&m.msg_type, body))
                .expect("a re-encoded envelope decodes");
            assert_eq!(again.msg_type, m.msg_type);
            if !has_float(body) {
                assert_eq!(again.body, m.body);
            }
        }
        Err(e) => {
            let frame = codec::encode_error(Transport::TcpJson, &e);
            let back = codec::decode_json(&frame).expect("an _error frame is a valid envelope");
            assert_eq!(back.msg_type, ERROR_TYPE);
            let _ = e.closes_session();
        }
    }
});
