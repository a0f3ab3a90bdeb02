//! One client frame on any transport: `engine::session::codec::decode(transport, payload)`, the
//! first input byte choosing the transport (TcpJson, TcpProtobuf, WebSocketJson), followed by
//! the session's next steps: `route` for a message, `json_body_from_bytes` for a protobuf body
//! (a JSON handler on a protobuf port), `encode_error` for a refusal.
//!
//! Properties: never panics; the `_error` frame sent back on the same transport decodes.
//! (Length prefixes are not the codec's: the `Net` port's adapters frame with tokio-util's
//! `LengthDelimitedCodec` in `real`/`sim`, outside the engine.)
#![no_main]

use engine::session::codec::{self, InBody};
use engine::session::Transport;
use libfuzzer_sys::fuzz_target;
use sandtable_fuzz::split_mode;

const TRANSPORTS: [Transport; 3] = [Transport::TcpJson, Transport::TcpProtobuf, Transport::WebSocketJson];

fuzz_target!(|data: &[u8]| {
    let Some((mode, payload)) = split_mode(data, 3) else { return };
    let transport = TRANSPORTS[usize::from(mode)];
    match codec::decode(transport, payload) {
        Ok(m) => {
            let _ = codec::route(&m.msg_type);
            match (&m.body, transport) {
                (InBody::Bytes(b), Transport::TcpProtobuf) => {
                    let _ = codec::json_body_from_bytes(&m.msg_type, b);
                }
                (InBody::Json(_), Transport::TcpJson | Transport::WebSocketJson) => {}
                (body, t) => panic!("{t:?} decoded a {body:?} body"),
            }
        }
        Err(e) => {
            let frame = codec::encode_error(transport, &e);
            codec::decode(transport, &frame).expect("an _error frame decodes on its own transport");
        }
    }
});
