//! Message types served in both body forms: a JSON object (serde) on the JSON and WebSocket
//! ports, the protobuf message (prost) on the protobuf port — one Rust type for the handler,
//! one for each reply, and replies that go out in each session's own form.
//!
//! - [`DualRequest`]: a client message's Rust type, its JSON form (`Deserialize`) and its
//!   protobuf form ([`DualRequest::Proto`] and [`DualRequest::from_proto`]). Registered with
//!   [`SessionService::register_dual_handler`](super::SessionService::register_dual_handler).
//! - [`DualReply`]: a server message's Rust type, its JSON form (`Serialize`) and its protobuf
//!   form ([`DualReply::to_proto`]). Sent with [`Session::send_dual`](super::Session::send_dual)
//!   (the form of that session's transport), or encoded once in both forms as a [`DualBody`]
//!   for a recipient whose transport the sender does not know (a push through the account
//!   manager, possibly to another server).
//!
//! # Two levels of "does not decode"
//! As for JSON handlers, the engine checks the *form* and the game checks the *fields*:
//! - **form** (the engine answers `_error bad_body`, the handler does not run, the session
//!   stays open): on the protobuf port, body bytes that are not an encoding of `Proto`, or a
//!   JSON object (see below). On a JSON port the envelope check already guarantees an object.
//! - **fields** (the handler runs with `Err(ProtocolError::BadBody)`): the JSON object does
//!   not deserialize as the type, or [`DualRequest::from_proto`] refuses the decoded message.
//!   The handler decides: send that error as an `_error` frame
//!   ([`Session::send_error`](super::Session::send_error)), or refuse in its own words (the
//!   reference game answers its refusal and closes the session, as for malformed JSON).
//!
//! # A JSON body in a protobuf envelope
//! On the protobuf port a dual type's body is its protobuf form only. A body whose first byte
//! is `{` is answered `bad_body` ("JSON body on the protobuf port") without a decode attempt:
//! byte `0x7B` would be field 15 with wire type 3 (a group start), which no proto3 encoder
//! emits, so no valid protobuf body is refused by this rule, and a client that sends JSON by
//! mistake is told so instead of getting a decoder's complaint about wire types. The body is
//! not accepted as JSON because the answer could not follow it: replies and pushes go out in
//! the form of the session's transport, so such a client would send JSON and get protobuf.
//! (JSON handlers keep taking JSON in protobuf envelopes; only dual types are strict.)
//!
//! # Why an explicit conversion, not serde derives on the prost types
//! prost-build could put `#[derive(Serialize, Deserialize)]` on the generated types
//! (`type_attribute`), making them the one type. It would change the wire JSON: proto3
//! scalars have no presence, so a derived `Serialize` writes every field — a refusal would
//! become `{error, error_message, user_name: "", gold: 0, items: {}}` instead of `{error,
//! error_message}`, and a success would gain `error_message: ""` — and skipping defaults
//! instead (`skip_serializing_if`) would drop a real `gold: 0`. On the way in, the JSON
//! types check what proto3 cannot say (a field is required, a name is non-empty) with serde
//! attributes that would have to be threaded into generated code as strings. A small
//! `from_proto`/`to_proto` per type keeps the existing JSON byte for byte, keeps the checks in
//! Rust next to the type, and makes each protobuf field's meaning a line of reviewed code.

use bytes::Bytes;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::codec;
use super::error::{ProtocolError, SessionError};
use super::Transport;

/// A client message type served in both forms, decoded into `Self` from either.
pub trait DualRequest: DeserializeOwned + Send + 'static {
    /// The protobuf form (a prost-generated message).
    type Proto: Message + Default + Send + 'static;

    /// The request from its decoded protobuf form. Checks what the JSON form's `Deserialize`
    /// checks, as far as proto3 can tell (an absent string is `""`, an absent number `0`);
    /// `Err` names the field, and reaches the handler as a `bad_body` error.
    fn from_proto(msg: Self::Proto) -> Result<Self, String>;
}

/// A server message type sent in both forms.
pub trait DualReply: Serialize {
    /// The protobuf form (a prost-generated message).
    type Proto: Message;

    /// The protobuf form of this message.
    fn to_proto(&self) -> Self::Proto;
}

/// A server message encoded in both forms at once: for a recipient whose transport is not
/// known where the message is made (a push to an account, which may be logged in on another
/// server and on any port). The JSON form is always an object.
#[derive(Clone, Debug, PartialEq)]
pub struct DualBody {
    json: Value,
    proto: Bytes,
}

impl DualBody {
    /// Both forms of `msg`. Fails if its JSON form is not an object or does not serialize.
    pub fn of<T: DualReply>(msg: &T) -> Result<DualBody, SessionError> {
        let json = json_form(msg)?;
        Ok(DualBody { json, proto: Bytes::from(msg.to_proto().encode_to_vec()) })
    }

    /// Both forms as they travelled (between servers): `json` must be an object.
    pub fn from_parts(json: Value, proto: Bytes) -> Result<DualBody, SessionError> {
        if !json.is_object() {
            return Err(SessionError::BodyNotAnObject);
        }
        Ok(DualBody { json, proto })
    }

    /// The JSON form (an object).
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The protobuf form: the encoded message.
    pub fn proto(&self) -> &Bytes {
        &self.proto
    }

    /// The frame of a `msg_type` message in `transport`'s form.
    pub fn encode(&self, transport: Transport, msg_type: &str) -> Bytes {
        match transport {
            Transport::TcpJson | Transport::WebSocketJson => codec::encode_json(msg_type, &self.json),
            Transport::TcpProtobuf => codec::encode_protobuf(msg_type, &self.proto),
        }
    }
}

/// `msg`'s JSON form, which must be an object.
fn json_form<T: Serialize>(msg: &T) -> Result<Value, SessionError> {
    let json = serde_json::to_value(msg).map_err(|e| SessionError::BodyNotSerializable(e.to_string()))?;
    if !json.is_object() {
        return Err(SessionError::BodyNotAnObject);
    }
    Ok(json)
}

/// The frame of reply `msg` as a `msg_type` message in `transport`'s form (only that form is
/// built).
pub(super) fn encode_reply<T: DualReply>(
    transport: Transport,
    msg_type: &str,
    msg: &T,
) -> Result<Bytes, SessionError> {
    match transport {
        Transport::TcpJson | Transport::WebSocketJson => Ok(codec::encode_json(msg_type, &json_form(msg)?)),
        Transport::TcpProtobuf => Ok(codec::encode_protobuf(msg_type, &msg.to_proto().encode_to_vec())),
    }
}

/// A dual request's body as the registry hands it over: the JSON object of a JSON port, or
/// the body bytes of a protobuf envelope.
pub(super) enum DualIn {
    Json(Value),
    Proto(Bytes),
}

/// The request in `body`. The outer `Err` is a form-level failure (the engine answers
/// `bad_body`, the handler does not run); the inner one a field-level failure for the
/// handler (module doc).
pub(super) fn decode_request<M: DualRequest>(
    msg_type: &str,
    body: DualIn,
) -> Result<Result<M, ProtocolError>, ProtocolError> {
    let bad = |reason: String| ProtocolError::BadBody { msg_type: msg_type.to_string(), reason };
    match body {
        DualIn::Json(v) => Ok(serde_json::from_value::<M>(v).map_err(|e| bad(e.to_string()))),
        DualIn::Proto(b) => {
            if b.first() == Some(&b'{') {
                return Err(bad(format!(
                    "JSON body on the protobuf port: {msg_type:?} takes its protobuf form here"
                )));
            }
            let proto = M::Proto::decode(b).map_err(|e| bad(format!("not a protobuf {msg_type}: {e}")))?;
            Ok(M::from_proto(proto).map_err(bad))
        }
    }
}

/// Dual message types the session module's tests share (`dual.rs`, `registry.rs`, `handle.rs`).
#[cfg(test)]
pub(super) mod fixtures {
    use super::{DualReply, DualRequest};
    use crate::rpc::messages::{EchoReply, EchoRequest};
    use serde::{Deserialize, Serialize};

    /// A request with a required non-empty field, served in both forms (as a game's would be).
    #[derive(Debug, PartialEq, Deserialize)]
    pub struct Shout {
        pub message: String,
    }

    impl DualRequest for Shout {
        type Proto = EchoRequest;
        fn from_proto(msg: EchoRequest) -> Result<Self, String> {
            if msg.message.is_empty() {
                return Err("message must be a non-empty string".into());
            }
            Ok(Shout { message: msg.message })
        }
    }

    #[derive(Debug, Serialize)]
    /// A reply in both forms.
    pub struct Shouted {
        pub message: String,
    }

    impl DualReply for Shouted {
        type Proto = EchoReply;
        fn to_proto(&self) -> EchoReply {
            EchoReply { message: self.message.clone() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{Shout, Shouted};
    use super::*;
    use crate::rpc::messages::{EchoReply, EchoRequest};
    use crate::session::codec::{decode, InBody};
    use serde_json::json;

    fn code<T>(r: Result<T, ProtocolError>) -> &'static str {
        r.map_or_else(|e| e.code(), |_| "ok")
    }

    #[test]
    fn a_json_body_deserializes_into_the_request() {
        let r = decode_request::<Shout>("shout", DualIn::Json(json!({"message": "hi", "extra": 1})));
        assert_eq!(r, Ok(Ok(Shout { message: "hi".into() })));
    }

    #[test]
    fn a_json_body_missing_a_field_reaches_the_handler_as_bad_body() {
        let r = decode_request::<Shout>("shout", DualIn::Json(json!({"messge": "hi"})));
        let inner = r.expect("the form is fine: the handler runs");
        assert_eq!(code(inner), "bad_body");
    }

    #[test]
    fn a_protobuf_body_decodes_into_the_same_request() {
        let bytes = Bytes::from(EchoRequest { message: "hi".into() }.encode_to_vec());
        let r = decode_request::<Shout>("shout", DualIn::Proto(bytes));
        assert_eq!(r, Ok(Ok(Shout { message: "hi".into() })));
    }

    #[test]
    fn a_protobuf_message_that_from_proto_refuses_reaches_the_handler_as_bad_body() {
        // The empty message: every field absent, so `message` is "".
        let r = decode_request::<Shout>("shout", DualIn::Proto(Bytes::new()));
        let inner = r.expect("the form is fine: the handler runs");
        let Err(ProtocolError::BadBody { msg_type, reason }) = inner else { panic!("bad_body expected") };
        assert_eq!((msg_type.as_str(), reason.as_str()), ("shout", "message must be a non-empty string"));
    }

    #[test]
    fn malformed_protobuf_bytes_are_bad_body_before_the_handler() {
        // Wire type 7 does not exist; field 1 announced 5 bytes long with 1 present.
        for bytes in [&b"\x0f"[..], b"\x0a\x05a", b"\xff\xff\xff"] {
            let r = decode_request::<Shout>("shout", DualIn::Proto(Bytes::copy_from_slice(bytes)));
            assert_eq!(r.map(|_| ()).map_err(|e| e.code()), Err("bad_body"), "{bytes:?}");
        }
    }

    #[test]
    fn a_json_body_in_a_protobuf_envelope_is_bad_body_naming_the_form() {
        let r = decode_request::<Shout>("shout", DualIn::Proto(Bytes::from_static(br#"{"message": "hi"}"#)));
        let Err(ProtocolError::BadBody { reason, .. }) = r else { panic!("form-level bad_body expected") };
        assert!(reason.contains("JSON body on the protobuf port"), "{reason}");
    }

    #[test]
    fn a_reply_is_a_json_object_on_json_ports_and_the_protobuf_message_on_the_protobuf_port() {
        let reply = Shouted { message: "hi".into() };
        for t in [Transport::TcpJson, Transport::WebSocketJson] {
            let m = decode(t, &encode_reply(t, "shouted", &reply).unwrap()).unwrap();
            assert_eq!(m.body, InBody::Json(json!({"message": "hi"})), "{t:?}");
        }
        let t = Transport::TcpProtobuf;
        let m = decode(t, &encode_reply(t, "shouted", &reply).unwrap()).unwrap();
        let InBody::Bytes(b) = m.body else { panic!("bytes body expected") };
        assert_eq!((m.msg_type.as_str(), EchoReply::decode(b).unwrap()), ("shouted", reply.to_proto()));
    }

    #[test]
    fn a_dual_body_encodes_the_same_frames_as_a_direct_reply() {
        let reply = Shouted { message: "pushed".into() };
        let both = DualBody::of(&reply).unwrap();
        for t in [Transport::TcpJson, Transport::TcpProtobuf, Transport::WebSocketJson] {
            assert_eq!(both.encode(t, "shouted"), encode_reply(t, "shouted", &reply).unwrap(), "{t:?}");
        }
        let parts = DualBody::from_parts(both.json().clone(), both.proto().clone()).unwrap();
        assert_eq!(parts, both);
    }

    #[test]
    fn a_reply_whose_json_form_is_not_an_object_is_refused() {
        #[derive(Serialize)]
        struct Bare(u32);
        impl DualReply for Bare {
            type Proto = EchoReply;
            fn to_proto(&self) -> EchoReply {
                EchoReply::default()
            }
        }
        assert_eq!(DualBody::of(&Bare(1)), Err(SessionError::BodyNotAnObject));
        assert_eq!(encode_reply(Transport::TcpJson, "bare", &Bare(1)), Err(SessionError::BodyNotAnObject));
        assert_eq!(DualBody::from_parts(json!([1]), Bytes::new()), Err(SessionError::BodyNotAnObject));
    }
}
