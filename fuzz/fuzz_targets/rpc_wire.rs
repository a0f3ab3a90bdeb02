//! The RPC wire format: `engine::rpc::wire::decode(bytes)`.
//!
//! Properties: never panics; a decoded frame re-encodes (`wire::encode`) to bytes that decode to
//! the same frame, and re-encoding that is a fixed point (encode . decode . encode = encode).
#![no_main]

use engine::rpc::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(frame) = wire::decode(bytes) else { return };
    let encoded = wire::encode(&frame);
    assert_eq!(wire::decode(&encoded).as_ref(), Ok(&frame), "round trip of {frame:?}");
    assert_eq!(wire::encode(&wire::decode(&encoded).unwrap()), encoded);
    if let wire::WireFrame::Request(r) = &frame {
        let _ = wire::hex_prefix(&r.body, 64);
    }
});
