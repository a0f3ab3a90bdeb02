//! The handler registry (iFun's `HandlerRegistry::Register`): message type -> handler, and
//! the routing of one decoded client message to the future that handles it.
//!
//! A handler is registered as JSON or protobuf; what it accepts per transport:
//!
//! | handler | JSON port | protobuf port |
//! |---|---|---|
//! | JSON | the envelope's `body` object | the envelope's body bytes parsed as a UTF-8 JSON object (`bad_body` if not) |
//! | protobuf | `bad_body` (a JSON port has no protobuf form) | the body bytes decoded as `M` (`bad_body` if not) |
//!
//! A game that listens on both kinds of port registers its types in the form each port's
//! clients use; the table makes a mismatch a typed client error, not a panic.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use tracing::warn;

use super::codec::{self, InBody, Inbound, CS_REDIRECT_TYPE, MSG_TYPE_MAX_BYTES};
use super::error::ProtocolError;
use super::handle::{lock, Session};

type JsonFn = dyn Fn(Session, Value) -> BoxFuture<'static, ()> + Send + Sync;
type ProtoFn = dyn Fn(Session, Bytes) -> Result<BoxFuture<'static, ()>, String> + Send + Sync;

#[derive(Clone)]
enum Handler {
    Json(Arc<JsonFn>),
    Proto(Arc<ProtoFn>),
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

    fn session() -> Session {
        let id = SessionId::from_uuid(uuid::Uuid::from_u128(1));
        Session::new(id, "10.0.0.1:1".parse().unwrap(), Transport::TcpProtobuf, 1 << 20, 8)
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
