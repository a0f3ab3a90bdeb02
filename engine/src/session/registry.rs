//! The handler registry (iFun's `HandlerRegistry::Register`): message type -> handler, and
//! the routing of one decoded client message to the future that handles it.
//!
//! A handler is registered as JSON, protobuf or dual (both forms, [`super::dual`]); what it
//! accepts per transport (WebSocket JSON is a JSON port):
//!
//! | handler | JSON port | protobuf port |
//! |---|---|---|
//! | JSON | the envelope's `body` object | the envelope's body bytes parsed as a UTF-8 JSON object (`bad_body` if not) |
//! | protobuf | `bad_body` (a JSON port has no protobuf form) | the body bytes decoded as `M` (`bad_body` if not) |
//! | dual | the `body` object deserialized as `M` (serde) | the body bytes decoded as `M::Proto` (prost), then `M::from_proto`; a JSON object here (first byte `{`) is `bad_body` |
//!
//! For a dual handler, a body of the wrong *form* (bytes that are not `M::Proto`, JSON on the
//! protobuf port) is `bad_body` and the handler does not run; a body of the right form whose
//! *fields* do not make an `M` reaches the handler as `Err(bad_body)`, so a game can refuse
//! in its own words ([`super::dual`]). A dual handler's replies go out with
//! [`Session::send_dual`] in the session's own form.
//!
//! A game that listens on both kinds of port registers each type in the form its clients
//! use, or dual; the table makes a mismatch a typed client error, not a panic.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use tracing::warn;

use super::codec::{self, InBody, Inbound, CS_REDIRECT_TYPE, MSG_TYPE_MAX_BYTES};
use super::dual::{self, DualIn, DualRequest};
use super::error::ProtocolError;
use super::handle::{lock, Session};

type JsonFn = dyn Fn(Session, Value) -> BoxFuture<'static, ()> + Send + Sync;
type ProtoFn = dyn Fn(Session, Bytes) -> Result<BoxFuture<'static, ()>, String> + Send + Sync;
type DualFn = dyn Fn(Session, DualIn) -> Result<BoxFuture<'static, ()>, ProtocolError> + Send + Sync;

#[derive(Clone)]
enum Handler {
    Json(Arc<JsonFn>),
    Proto(Arc<ProtoFn>),
    Dual(Arc<DualFn>),
}

/// Message type -> handler. Shared by all sessions of one service.
#[derive(Default)]
pub(super) struct HandlerRegistry {
    handlers: Mutex<BTreeMap<String, Handler>>,
}

impl HandlerRegistry {
    pub(super) fn register_json<F, Fut>(&self, msg_type: &str, f: F)
    where
        F: Fn(Session, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let h: Arc<JsonFn> = Arc::new(move |s, body| f(s, body).boxed());
        self.install(msg_type, Handler::Json(h));
    }

    pub(super) fn register_proto<M, F, Fut>(&self, msg_type: &str, f: F)
    where
        M: prost::Message + Default + 'static,
        F: Fn(Session, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let h: Arc<ProtoFn> = Arc::new(move |s, body: Bytes| match M::decode(body) {
            Ok(m) => Ok(f(s, m).boxed()),
            Err(e) => Err(e.to_string()),
        });
        self.install(msg_type, Handler::Proto(h));
    }

    pub(super) fn register_dual<M, F, Fut>(&self, msg_type: &str, f: F)
    where
        M: DualRequest,
        F: Fn(Session, Result<M, ProtocolError>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = msg_type.to_string();
        let h: Arc<DualFn> =
            Arc::new(move |s, body| dual::decode_request::<M>(&name, body).map(|req| f(s, req).boxed()));
        self.install(msg_type, Handler::Dual(h));
    }

    /// # Panics
    /// If `msg_type` is empty, longer than [`MSG_TYPE_MAX_BYTES`], or engine-reserved (starts
    /// with `_`) other than `_cs_redirect`: clients could never reach such a handler, so this
    /// is a programming error caught at startup.
    fn install(&self, msg_type: &str, h: Handler) {
        assert!(
            !msg_type.is_empty() && msg_type.len() <= MSG_TYPE_MAX_BYTES,
            "message type must be 1..={MSG_TYPE_MAX_BYTES} bytes: {msg_type:?}"
        );
        assert!(
            !msg_type.starts_with('_') || msg_type == CS_REDIRECT_TYPE,
            "message type {msg_type:?} is reserved for the engine"
        );
        if lock(&self.handlers).insert(msg_type.to_string(), h).is_some() {
            warn!(msg_type, "session handler replaced");
        }
    }

    /// True if a handler is registered for `msg_type`.
    pub(super) fn has(&self, msg_type: &str) -> bool {
        lock(&self.handlers).contains_key(msg_type)
    }

    /// The future that handles `msg` on `session`, or why there is none. `msg` has passed
    /// [`codec::route`] already.
    pub(super) fn dispatch(
        &self,
        session: &Session,
        msg: Inbound,
    ) -> Result<BoxFuture<'static, ()>, ProtocolError> {
        let handler = lock(&self.handlers).get(&msg.msg_type).cloned();
        let Some(handler) = handler else {
            return Err(ProtocolError::UnknownType(msg.msg_type));
        };
        let bad = |reason: String| ProtocolError::BadBody { msg_type: msg.msg_type.clone(), reason };
        match (handler, msg.body) {
            (Handler::Json(h), InBody::Json(v)) => Ok(h(session.clone(), v)),
            (Handler::Json(h), InBody::Bytes(b)) => {
                let v = codec::json_body_from_bytes(&msg.msg_type, &b)?;
                Ok(h(session.clone(), v))
            }
            (Handler::Proto(h), InBody::Bytes(b)) => h(session.clone(), b).map_err(bad),
            (Handler::Proto(_), InBody::Json(_)) => {
                Err(bad("this type takes a protobuf body, which a JSON port cannot carry".into()))
            }
            (Handler::Dual(h), InBody::Json(v)) => h(session.clone(), DualIn::Json(v)),
            (Handler::Dual(h), InBody::Bytes(b)) => h(session.clone(), DualIn::Proto(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::messages::EchoRequest;
    use crate::session::handle::SessionId;
    use crate::session::Transport;
    use prost::Message;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn session() -> Session {
        let id = SessionId::from_uuid(uuid::Uuid::from_u128(1));
        let limits = crate::session::handle::Limits {
            max_frame_bytes: 1 << 20,
            send_queue_max: 8,
            send_queue_bytes_max: 1 << 22,
        };
        let budget = std::sync::Arc::new(crate::session::budget::MemoryBudget::new(usize::MAX));
        Session::new(id, "10.0.0.1:1".parse().unwrap(), Transport::TcpProtobuf, limits, budget)
    }

    fn code(r: Result<BoxFuture<'static, ()>, ProtocolError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn dispatch_matches_bodies_to_handler_kinds() {
        let reg = HandlerRegistry::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        reg.register_json("j", move |_s, _v| {
            r.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        let r = runs.clone();
        reg.register_proto("p", move |_s, m: EchoRequest| {
            assert_eq!(m.message, "hi");
            r.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        let s = session();
        let msg = |t: &str, body: InBody| Inbound { msg_type: t.into(), body };
        let pb = Bytes::from(EchoRequest { message: "hi".into() }.encode_to_vec());
        assert_eq!(code(reg.dispatch(&s, msg("j", InBody::Json(json!({}))))), "ok");
        assert_eq!(code(reg.dispatch(&s, msg("j", InBody::Bytes(Bytes::from_static(b"{}"))))), "ok");
        assert_eq!(code(reg.dispatch(&s, msg("j", InBody::Bytes(Bytes::from_static(b"{"))))), "bad_body");
        assert_eq!(code(reg.dispatch(&s, msg("p", InBody::Bytes(pb)))), "ok");
        assert_eq!(code(reg.dispatch(&s, msg("p", InBody::Bytes(Bytes::from_static(b"\x0f"))))), "bad_body");
        assert_eq!(code(reg.dispatch(&s, msg("p", InBody::Json(json!({}))))), "bad_body");
        assert_eq!(code(reg.dispatch(&s, msg("nope", InBody::Json(json!({}))))), "unknown_type");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// What a dual handler got: the request's message, or the error's code.
    type Got = Arc<Mutex<Vec<Result<String, &'static str>>>>;

    /// A dual registry: `shout` ([`Shout`](super::super::dual::fixtures::Shout): both forms of an `EchoRequest`; `message` must be non-empty)
    /// records what its handler got.
    fn dual_registry() -> (HandlerRegistry, Got) {
        use super::super::dual::fixtures::Shout;
        let reg = HandlerRegistry::default();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        reg.register_dual("shout", move |_s, req: Result<Shout, ProtocolError>| {
            g.lock().unwrap().push(req.map(|r| r.message).map_err(|e| e.code()));
            async {}
        });
        (reg, got)
    }

    fn inbound(body: InBody) -> Inbound {
        Inbound { msg_type: "shout".into(), body }
    }

    #[test]
    fn a_dual_handler_on_a_json_port_gets_the_deserialized_request() {
        let (reg, got) = dual_registry();
        assert_eq!(code(reg.dispatch(&session(), inbound(InBody::Json(json!({"message": "hi"}))))), "ok");
        assert_eq!(*got.lock().unwrap(), vec![Ok("hi".to_string())]);
    }

    #[test]
    fn a_dual_handler_on_the_protobuf_port_gets_the_decoded_request() {
        let (reg, got) = dual_registry();
        let pb = Bytes::from(EchoRequest { message: "hi".into() }.encode_to_vec());
        assert_eq!(code(reg.dispatch(&session(), inbound(InBody::Bytes(pb)))), "ok");
        assert_eq!(*got.lock().unwrap(), vec![Ok("hi".to_string())]);
    }

    #[test]
    fn a_malformed_protobuf_body_is_bad_body_and_the_dual_handler_does_not_run() {
        let (reg, got) = dual_registry();
        for bytes in [&b"\x0f"[..], b"\x0a\x05a", b"\x0a\x02\xff\xfe"] {
            let r = reg.dispatch(&session(), inbound(InBody::Bytes(Bytes::copy_from_slice(bytes))));
            assert_eq!(code(r), "bad_body", "{bytes:?}");
        }
        assert!(got.lock().unwrap().is_empty(), "the handler never ran");
    }

    #[test]
    fn a_json_body_in_a_protobuf_envelope_is_bad_body_for_a_dual_handler() {
        let (reg, got) = dual_registry();
        let json_bytes = Bytes::from_static(br#"{"message": "hi"}"#);
        let Err(e) = reg.dispatch(&session(), inbound(InBody::Bytes(json_bytes))) else {
            panic!("refused before the handler")
        };
        assert_eq!(e.code(), "bad_body");
        assert!(e.to_string().contains("JSON body on the protobuf port"), "{e}");
        assert!(got.lock().unwrap().is_empty(), "the handler never ran");
    }

    #[test]
    fn fields_that_do_not_make_the_request_reach_the_dual_handler_as_bad_body() {
        let (reg, got) = dual_registry();
        let s = session();
        assert_eq!(code(reg.dispatch(&s, inbound(InBody::Json(json!({"message": 7}))))), "ok");
        // The empty protobuf message: `message` absent, so "".
        assert_eq!(code(reg.dispatch(&s, inbound(InBody::Bytes(Bytes::new())))), "ok");
        assert_eq!(*got.lock().unwrap(), vec![Err("bad_body"), Err("bad_body")]);
    }

    #[test]
    #[should_panic(expected = "reserved for the engine")]
    fn reserved_types_cannot_be_registered() {
        HandlerRegistry::default().register_json("_ping", |_s, _v| async {});
    }

    #[test]
    fn cs_redirect_can_be_registered() {
        HandlerRegistry::default().register_json(CS_REDIRECT_TYPE, |_s, _v| async {});
    }
}
