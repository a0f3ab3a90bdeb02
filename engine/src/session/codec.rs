//! The client wire codec (DESIGN.md §6): one payload (the bytes of one Net frame) in, one
//! validated [`Inbound`] message or a [`ProtocolError`] out; and the encoders for what the
//! server sends.
//!
//! | transport | payload |
//! |---|---|
//! | [`Transport::TcpJson`] | UTF-8 JSON object `{"type": "<t>", "body": {...}}` |
//! | [`Transport::TcpProtobuf`] | protobuf [`pb::Envelope`] `{ string type = 1; bytes body = 2; }`; `body` is the encoded message (protobuf and dual types, [`super::DualRequest`]), or UTF-8 JSON for JSON handlers and engine frames |
//!
//! The JSON codec works on payload *bytes* and knows nothing of length prefixes, so a
//! text-message transport (WebSocket JSON, where one text message is one envelope) reuses
//! [`decode_json`] and [`encode_json`] unchanged: the WebSocket adapter feeds each text
//! message's bytes in and sends each encoded payload as one text message.
//!
//! Decoders never panic: any byte string is either a message or a typed error (checked by
//! proptest below). Server-to-client frames are built here too, so the `_error` frame of each
//! code has one snapshot.

use bytes::Bytes;
use prost::Message;
use serde_json::Value;

use super::error::ProtocolError;
use super::Transport;

/// The generated envelope type (`proto/client.proto`).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/sandtable.client.rs"));
}

/// Server -> client: a frame-level or message-level problem, body `{code, message}`.
pub const ERROR_TYPE: &str = "_error";
/// Server -> client heartbeat, body `{}`.
pub const PING_TYPE: &str = "_ping";
/// Client -> server answer to `_ping` (any body); handled by the engine, never dispatched.
pub const PONG_TYPE: &str = "_pong";
/// Client -> server redirect login (reserved for the account module's handler).
pub const CS_REDIRECT_TYPE: &str = "_cs_redirect";
/// Engine-reserved types a client may send. Every other type starting with `_` is
/// answered with `reserved_type`.
pub const CLIENT_RESERVED_TYPES: [&str; 2] = [PONG_TYPE, CS_REDIRECT_TYPE];
/// Longest accepted message type. Longer ones are `bad_envelope`: a type is a name, and
/// error messages echo it back.
pub const MSG_TYPE_MAX_BYTES: usize = 128;

/// The body of a decoded client message.
#[derive(Clone, Debug, PartialEq)]
pub enum InBody {
    /// From a JSON port: always a JSON object.
    Json(Value),
    /// From a protobuf port: the envelope's `body` bytes, decoded by the handler's type.
    Bytes(Bytes),
}

/// One client message whose envelope is valid.
#[derive(Clone, Debug, PartialEq)]
pub struct Inbound {
    pub msg_type: String,
    pub body: InBody,
}

/// Decodes one payload of `transport`.
pub fn decode(transport: Transport, payload: &[u8]) -> Result<Inbound, ProtocolError> {
    match transport {
        Transport::TcpJson | Transport::WebSocketJson => decode_json(payload),
        Transport::TcpProtobuf => decode_protobuf(payload),
    }
}

/// Decodes a JSON envelope. Not UTF-8, not JSON or not an object: `bad_json`; `type` missing,
/// not a string, empty or too long, or `body` missing or not an object: `bad_envelope`.
/// Other top-level fields are ignored.
pub fn decode_json(payload: &[u8]) -> Result<Inbound, ProtocolError> {
    let text =
        std::str::from_utf8(payload).map_err(|e| ProtocolError::BadJson(format!("not UTF-8 ({e})")))?;
    let value: Value = serde_json::from_str(text).map_err(|e| ProtocolError::BadJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(ProtocolError::BadJson(format!("expected an object, found {}", kind(&value))));
    };
    let msg_type = match obj.remove("type") {
        None => return Err(ProtocolError::BadEnvelope("missing \"type\"".into())),
        Some(Value::String(t)) => check_type_name(t)?,
        Some(other) => {
            return Err(ProtocolError::BadEnvelope(format!(
                "\"type\" must be a string, found {}",
                kind(&other)
            )))
        }
    };
    match obj.remove("body") {
        None => Err(ProtocolError::BadEnvelope("missing \"body\"".into())),
        Some(body @ Value::Object(_)) => Ok(Inbound { msg_type, body: InBody::Json(body) }),
        Some(other) => {
            Err(ProtocolError::BadEnvelope(format!("\"body\" must be an object, found {}", kind(&other))))
        }
    }
}

/// Decodes a protobuf envelope: not an `Envelope` (including a `type` that is not UTF-8), or
/// `type` empty or too long: `bad_envelope`. The body is not looked at here.
pub fn decode_protobuf(payload: &[u8]) -> Result<Inbound, ProtocolError> {
    let env = pb::Envelope::decode(payload)
        .map_err(|e| ProtocolError::BadEnvelope(format!("not a protobuf envelope: {e}")))?;
    let msg_type = check_type_name(env.r#type)?;
    Ok(Inbound { msg_type, body: InBody::Bytes(Bytes::from(env.body)) })
}

fn check_type_name(t: String) -> Result<String, ProtocolError> {
    if t.is_empty() {
        return Err(ProtocolError::BadEnvelope("\"type\" is empty".into()));
    }
    if t.len() > MSG_TYPE_MAX_BYTES {
        return Err(ProtocolError::BadEnvelope(format!(
            "\"type\" is {} bytes long, the limit is {MSG_TYPE_MAX_BYTES}",
            t.len()
        )));
    }
    Ok(t)
}

/// What the session does with a valid envelope's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `_pong`: proves the client alive, nothing else.
    Pong,
    /// Look up the handler (including `_cs_redirect`, whose handler the engine installs).
    Dispatch,
}

/// Sorts a client-sent type: `_pong`, a dispatchable type, or `reserved_type`.
pub fn route(msg_type: &str) -> Result<Route, ProtocolError> {
    if msg_type == PONG_TYPE {
        Ok(Route::Pong)
    } else if msg_type.starts_with('_') && !CLIENT_RESERVED_TYPES.contains(&msg_type) {
        Err(ProtocolError::ReservedType(msg_type.to_string()))
    } else {
        Ok(Route::Dispatch)
    }
}

/// The JSON object carried in a protobuf envelope's body, for JSON handlers on a protobuf
/// port. Not a UTF-8 JSON object: `bad_body` (the envelope itself was valid).
pub fn json_body_from_bytes(msg_type: &str, body: &[u8]) -> Result<Value, ProtocolError> {
    let bad = |reason: String| ProtocolError::BadBody { msg_type: msg_type.to_string(), reason };
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("not UTF-8 ({e})")))?;
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(bad(format!("expected a JSON object, found {}", kind(&other)))),
        Err(e) => Err(bad(format!("not JSON ({e})"))),
    }
}

/// A JSON envelope `{"type": msg_type, "body": body}`. `type` comes first (written by hand so
/// the byte layout does not depend on serde_json's map features).
pub fn encode_json(msg_type: &str, body: &Value) -> Bytes {
    let mut out = String::with_capacity(msg_type.len() + 24);
    out.push_str("{\"type\":");
    out.push_str(&Value::String(msg_type.to_string()).to_string());
    out.push_str(",\"body\":");
    out.push_str(&body.to_string());
    out.push('}');
    Bytes::from(out)
}

/// A protobuf envelope with `body` as its body bytes.
pub fn encode_protobuf(msg_type: &str, body: &[u8]) -> Bytes {
    let env = pb::Envelope { r#type: msg_type.to_string(), body: body.to_vec() };
    Bytes::from(env.encode_to_vec())
}

/// A message with a JSON body, for `transport`: a JSON envelope, or a protobuf envelope whose
/// body is the UTF-8 JSON.
pub fn encode_json_message(transport: Transport, msg_type: &str, body: &Value) -> Bytes {
    match transport {
        Transport::TcpJson | Transport::WebSocketJson => encode_json(msg_type, body),
        Transport::TcpProtobuf => encode_protobuf(msg_type, body.to_string().as_bytes()),
    }
}

/// The `_error` body for `e`: `{"code": ..., "message": ...}` (keys in that order).
pub fn error_body_json(e: &ProtocolError) -> String {
    format!(
        "{{\"code\":{},\"message\":{}}}",
        Value::String(e.code().to_string()),
        Value::String(e.to_string())
    )
}

/// The `_error` frame for `e` on `transport`.
pub fn encode_error(transport: Transport, e: &ProtocolError) -> Bytes {
    let body = error_body_json(e);
    match transport {
        Transport::TcpJson | Transport::WebSocketJson => {
            Bytes::from(format!("{{\"type\":\"{ERROR_TYPE}\",\"body\":{body}}}"))
        }
        Transport::TcpProtobuf => encode_protobuf(ERROR_TYPE, body.as_bytes()),
    }
}

/// The `_ping` frame on `transport`.
pub fn encode_ping(transport: Transport) -> Bytes {
    encode_json_message(transport, PING_TYPE, &Value::Object(serde_json::Map::new()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn code_of(r: Result<Inbound, ProtocolError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn json_envelope_decodes() {
        let m = decode_json(br#"{"type": "cs_game_server_login", "body": {"user_name": "kim"}, "x": 1}"#)
            .unwrap();
        assert_eq!(m.msg_type, "cs_game_server_login");
        assert_eq!(m.body, InBody::Json(json!({"user_name": "kim"})));
    }

    #[test]
    fn bad_json_inputs_map_to_their_codes() {
        let cases: [(&[u8], &str); 16] = [
            (b"", "bad_json"),
            (b"{", "bad_json"),
            (b"\xff\xfe", "bad_json"),
            (b"[1, 2]", "bad_json"),
            (b"\"str\"", "bad_json"),
            (b"null", "bad_json"),
            (br#"{"type": "a", "body": {}} trailing"#, "bad_json"),
            (br#"{"body": {}}"#, "bad_envelope"),
            (br#"{"type": 7, "body": {}}"#, "bad_envelope"),
            (br#"{"type": "", "body": {}}"#, "bad_envelope"),
            (br#"{"type": "a"}"#, "bad_envelope"),
            (br#"{"type": "a", "body": null}"#, "bad_envelope"),
            (br#"{"type": "a", "body": [1]}"#, "bad_envelope"),
            (br#"{"type": "a", "body": "x"}"#, "bad_envelope"),
            (br#"{"type": "a", "body": {}}"#, "ok"),
            (br#"{"type": "_ping", "body": {}}"#, "ok"),
        ];
        for (input, code) in cases {
            assert_eq!(code_of(decode_json(input)), code, "{:?}", String::from_utf8_lossy(input));
        }
        let long = format!(r#"{{"type": "{}", "body": {{}}}}"#, "t".repeat(MSG_TYPE_MAX_BYTES + 1));
        assert_eq!(code_of(decode_json(long.as_bytes())), "bad_envelope");
        let just = format!(r#"{{"type": "{}", "body": {{}}}}"#, "t".repeat(MSG_TYPE_MAX_BYTES));
        assert_eq!(code_of(decode_json(just.as_bytes())), "ok");
    }

    #[test]
    fn protobuf_envelope_decodes_and_rejects() {
        let m = decode_protobuf(&encode_protobuf("echo", b"\x0a\x02hi")).unwrap();
        assert_eq!(
            m,
            Inbound { msg_type: "echo".into(), body: InBody::Bytes(Bytes::from_static(b"\x0a\x02hi")) }
        );
        // Empty payload = default envelope = empty type.
        assert_eq!(code_of(decode_protobuf(b"")), "bad_envelope");
        // Field 1 announced as 5 bytes long with 1 byte present.
        assert_eq!(code_of(decode_protobuf(b"\x0a\x05a")), "bad_envelope");
        // Field 1 with invalid UTF-8.
        assert_eq!(code_of(decode_protobuf(b"\x0a\x02\xff\xfe")), "bad_envelope");
        // A wire type 7 (invalid).
        assert_eq!(code_of(decode_protobuf(b"\x0f")), "bad_envelope");
    }

    #[test]
    fn routes() {
        assert_eq!(route("_pong"), Ok(Route::Pong));
        assert_eq!(route("_cs_redirect"), Ok(Route::Dispatch));
        assert_eq!(route("cs_enter_pvp"), Ok(Route::Dispatch));
        for t in ["_ping", "_error", "_sc_redirect", "_"] {
            assert_eq!(route(t).map_err(|e| e.code()), Err("reserved_type"), "{t}");
        }
    }

    #[test]
    fn json_bodies_in_protobuf_envelopes() {
        assert_eq!(json_body_from_bytes("t", br#"{"a": 1}"#), Ok(json!({"a": 1})));
        for bad in [&b"\xff"[..], b"[]", b"nope", b""] {
            assert_eq!(json_body_from_bytes("t", bad).map_err(|e| e.code()), Err("bad_body"));
        }
    }

    #[test]
    fn encoders_round_trip_through_decoders() {
        let body = json!({"error": false, "level": 3});
        let m = decode(Transport::TcpJson, &encode_json_message(Transport::TcpJson, "sc_x", &body)).unwrap();
        assert_eq!(m, Inbound { msg_type: "sc_x".into(), body: InBody::Json(body.clone()) });
        let m = decode(Transport::TcpProtobuf, &encode_json_message(Transport::TcpProtobuf, "sc_x", &body))
            .unwrap();
        let InBody::Bytes(b) = m.body else { panic!("bytes body expected") };
        assert_eq!(json_body_from_bytes("sc_x", &b), Ok(body));
        let ping = decode_json(&encode_ping(Transport::TcpJson)).unwrap();
        assert_eq!(ping.msg_type, PING_TYPE);
    }

    fn all_errors() -> Vec<ProtocolError> {
        vec![
            ProtocolError::FrameTooLarge { len: 2_000_000, max: 1_048_576 },
            // The simulated transport does not report the announced length.
            ProtocolError::FrameTooLarge { len: 0, max: 4096 },
            decode_json(b"{\"type\": ").unwrap_err(),
            decode_json(br#"{"body": {}}"#).unwrap_err(),
            ProtocolError::UnknownType("cs_no_such_thing".into()),
            route("_ping").unwrap_err(),
            ProtocolError::BadBody { msg_type: "echo".into(), reason: "invalid wire type".into() },
            ProtocolError::RedirectRejected("bad redirect token: already used".into()),
        ]
    }

    #[test]
    fn error_frames_snapshot() {
        let mut out = String::new();
        for e in all_errors() {
            let json = encode_error(Transport::TcpJson, &e);
            let pb = decode_protobuf(&encode_error(Transport::TcpProtobuf, &e)).unwrap();
            let InBody::Bytes(pb_body) = pb.body else { panic!("bytes body expected") };
            // The protobuf frame carries the same JSON body under the same type.
            assert_eq!(pb.msg_type, ERROR_TYPE);
            assert_eq!(&pb_body[..], error_body_json(&e).as_bytes());
            // The JSON frame is itself a valid envelope (a client decodes it like any message).
            let decoded = decode_json(&json).unwrap();
            assert_eq!(decoded.msg_type, ERROR_TYPE);
            out.push_str(&format!(
                "{} (closes: {})\n  {}\n",
                e.code(),
                e.closes_session(),
                String::from_utf8_lossy(&json)
            ));
        }
        insta::assert_snapshot!("error_frames", out);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_json_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_json(&bytes);
            let _ = json_body_from_bytes("t", &bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_protobuf_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(m) = decode_protobuf(&bytes) {
                prop_assert!(!m.msg_type.is_empty() && m.msg_type.len() <= MSG_TYPE_MAX_BYTES);
            }
        }

        #[test]
        fn json_like_inputs_never_panic(s in r#"[{}\[\]":,a-z0-9 _\\]{0,64}"#) {
            if let Ok(m) = decode_json(s.as_bytes()) {
                prop_assert!(matches!(m.body, InBody::Json(Value::Object(_))));
                prop_assert!(!m.msg_type.is_empty());
            }
        }

        #[test]
        fn json_envelopes_round_trip(t in "[a-z_]{1,20}", k in "[a-z]{0,8}", v in any::<i64>()) {
            let body = serde_json::json!({ k: v });
            let m = decode_json(&encode_json(&t, &body)).unwrap();
            prop_assert_eq!(m, Inbound { msg_type: t, body: InBody::Json(body) });
        }

        #[test]
        fn protobuf_envelopes_round_trip(t in "[a-z_]{1,20}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let m = decode_protobuf(&encode_protobuf(&t, &body)).unwrap();
            prop_assert_eq!(m, Inbound { msg_type: t, body: InBody::Bytes(Bytes::from(body)) });
        }
    }
}
