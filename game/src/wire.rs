//! What every message file shares: the [`Request`] trait (a request's wire names and the
//! answer to a body that does not parse), typed-handler registration, and replies.
//!
//! # Two body forms
//! Most messages are JSON only: on a protobuf port their body is UTF-8 JSON inside the
//! envelope, and so are their replies. The inventory messages ([`BothForms`]) are also served
//! in a protobuf form (`game/proto/inventory.proto`, [`crate::pb::inventory`]): engine dual
//! handlers (`SessionService::register_dual_handler`) take a JSON object on JSON ports and the
//! protobuf message on the protobuf port, and every answer — reply, refusal, push — goes out
//! in the form of the recipient session's transport (`reply_dual`, `refuse_dual`). Each
//! message's Rust type stays the serde struct of its JSON form (so that JSON is unchanged),
//! with a small `from_proto`/`to_proto` beside it (why not serde derives on the prost types:
//! `engine::session`'s `dual.rs`).
//!
//! # Malformed requests
//! The engine's session registry answers a body that is not a JSON object with `_error
//! bad_body` and keeps the session; so it does for a protobuf body that does not decode as
//! the message (and for a JSON body in a protobuf envelope of a [`BothForms`] type). A body
//! that is an object (or a decoded message) but lacks a field the game needs is the game's
//! business: as in the seed, it gets the message's refusal `{error: true, error_message:
//! R::MALFORMED}` and the session is closed ([`reject_malformed`], `reject_malformed_dual`).
//! In the protobuf form an absent field is its default (`""`, `0`), so only what the game
//! checks for emptiness can be malformed there: an absent `count` is `0`, refused `count must
//! be positive` without closing the session.
//!
//! # Failed sends
//! A reply goes to one session. A send fails with `SessionError::Closed` (or `SlowReader`)
//! when the session is already closed — the client left, or the server closed it — so there is
//! nobody left to receive it and nothing to undo: logged at DEBUG only. Any other failure is a
//! bug in the reply (a body that is not an object, a frame over the port's limit) and is
//! logged at WARN.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use engine::session::{DualReply, DualRequest, Session, SessionError, SessionService};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::LOG_TARGET;

/// One client request of the game: its body's shape (`Deserialize`) and its wire names.
pub trait Request: DeserializeOwned + Send + 'static {
    /// The message type the client sends.
    const TYPE: &'static str;
    /// The message type of the server's answer.
    const REPLY: &'static str;
    /// The `error_message` of the answer to a body that does not parse (then the session
    /// closes): names the fields and what they must be.
    const MALFORMED: &'static str;
}

/// `{"error": true, "error_message": ...}`: how every request is refused.
#[derive(Debug, Serialize)]
pub struct Refusal<'a> {
    pub error: bool,
    pub error_message: &'a str,
}

/// A request also served in its protobuf form (module doc): the engine's [`DualRequest`]
/// gives its decoding, and `ReplyProto` is the protobuf form of every answer to it.
pub trait BothForms: Request + DualRequest {
    /// The protobuf form of the reply (`sc_*`), success and refusal alike.
    type ReplyProto: RefusalForm;
}

/// A reply's protobuf form that can carry a refusal.
pub trait RefusalForm: prost::Message + Default {
    /// `{error: true, error_message: message}` in this form, every other field at its default.
    fn refusal(message: &str) -> Self;
}

/// A refusal of a request answered with `P`: [`Refusal`] in JSON, [`RefusalForm::refusal`]
/// in protobuf.
pub struct DualRefusal<'a, P> {
    pub error_message: &'a str,
    form: PhantomData<fn() -> P>,
}

impl<'a, P> DualRefusal<'a, P> {
    pub fn new(error_message: &'a str) -> Self {
        DualRefusal { error_message, form: PhantomData }
    }
}

impl<P> Serialize for DualRefusal<'_, P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Refusal { error: true, error_message: self.error_message }.serialize(s)
    }
}

impl<P: RefusalForm> DualReply for DualRefusal<'_, P> {
    type Proto = P;
    fn to_proto(&self) -> P {
        P::refusal(self.error_message)
    }
}

/// Registers `handler` for `R::TYPE`: the body is parsed as `R` ([`reject_malformed`] if it
/// does not parse), then the handler runs with the flavor's shared `state`.
pub(crate) fn register<R, S, F, Fut>(service: &SessionService, state: &Arc<S>, handler: F)
where
    R: Request,
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Session, R) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let state = state.clone();
    service.register_json_handler(R::TYPE, move |session, body| {
        // Building the handler's future runs none of its code: parsing here is the same as
        // parsing when the session gets to the message.
        let handling = parse::<R>(body).map(|req| handler(state.clone(), session.clone(), req));
        async move {
            match handling {
                Ok(h) => h.await,
                Err(()) => reject_malformed(&session, R::REPLY, R::MALFORMED),
            }
        }
    });
}

/// `body` as `R`; `Err` if it does not parse (serde's reason is logged at DEBUG: the client
/// gets `R::MALFORMED`).
pub(crate) fn parse<R: Request>(body: Value) -> Result<R, ()> {
    serde_json::from_value::<R>(body).map_err(|e| {
        tracing::debug!(target: LOG_TARGET, msg_type = R::TYPE, error = %e, "malformed request");
    })
}

/// A string field that must not be empty (names, keys): `deserialize_with = "non_empty"`.
pub(crate) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(serde::de::Error::custom("must be a non-empty string"));
    }
    Ok(s)
}

/// Sends `reply` as a `msg_type` message on `session` (see the module doc for failures).
pub(crate) fn reply<T: Serialize>(session: &Session, msg_type: &str, reply: &T) {
    let body = match serde_json::to_value(reply) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(target: LOG_TARGET, msg_type, error = %e, "reply does not serialize; not sent");
            return;
        }
    };
    log_send(msg_type, session.send_json(msg_type, body));
}

/// Sends `reply` as a `msg_type` message on `session` in the form of the session's transport
/// (module doc; failures as for [`reply`]).
pub(crate) fn reply_dual<T: DualReply>(session: &Session, msg_type: &str, reply: &T) {
    log_send(msg_type, session.send_dual(msg_type, reply));
}

fn log_send(msg_type: &str, sent: Result<(), SessionError>) {
    match sent {
        Ok(()) => {}
        // The session is closed: nobody is left to receive the reply (module doc).
        Err(e @ (SessionError::Closed(_) | SessionError::SlowReader)) => {
            tracing::debug!(target: LOG_TARGET, msg_type, error = %e, "reply to a closed session dropped");
        }
        Err(e) => tracing::warn!(target: LOG_TARGET, msg_type, error = %e, "reply not sent"),
    }
}

/// Refuses a [`BothForms`] request `R` in the session's form: `{error: true, error_message}`
/// as an `R::REPLY` message.
pub(crate) fn refuse_dual<R: BothForms>(session: &Session, message: &str) {
    reply_dual(session, R::REPLY, &DualRefusal::<R::ReplyProto>::new(message));
}

/// [`reject_malformed`] for a [`BothForms`] request: the refusal in the session's form, then close.
pub(crate) fn reject_malformed_dual<R: BothForms>(session: &Session, message: &str) {
    refuse_dual::<R>(session, message);
    session.close(format!("malformed {}: {message}", R::REPLY));
}

/// Refuses a request: `{error: true, error_message: message}` as a `msg_type` message.
pub(crate) fn refuse(session: &Session, msg_type: &str, message: &str) {
    reply(session, msg_type, &Refusal { error: true, error_message: message });
}

/// The refusal, then close: the reaction to a malformed request.
pub(crate) fn reject_malformed(session: &Session, msg_type: &str, message: &str) {
    refuse(session, msg_type, message);
    session.close(format!("malformed {msg_type}: {message}"));
}

/// A pushed message's body as JSON (`None`, logged, if it does not serialize).
pub(crate) fn to_body<T: Serialize>(msg_type: &str, msg: &T) -> Option<Value> {
    serde_json::to_value(msg)
        .map_err(|e| {
            tracing::warn!(target: LOG_TARGET, msg_type, error = %e, "message does not serialize; not sent");
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Probe {
        #[serde(deserialize_with = "non_empty")]
        name: String,
        message: Value,
        #[serde(default)]
        extra: Value,
    }

    impl Request for Probe {
        const TYPE: &'static str = "cs_probe";
        const REPLY: &'static str = "sc_probe";
        const MALFORMED: &'static str = "name must be a non-empty string, message present";
    }

    #[test]
    fn a_body_with_every_field_parses_and_unknown_fields_are_ignored() {
        let p = parse::<Probe>(json!({"name": "a", "message": {"x": 1}, "other": 3})).unwrap();
        assert_eq!(p, Probe { name: "a".into(), message: json!({"x": 1}), extra: Value::Null });
    }

    #[test]
    fn a_present_null_counts_as_present_and_a_missing_value_does_not() {
        assert!(parse::<Probe>(json!({"name": "a", "message": null})).is_ok());
        assert!(parse::<Probe>(json!({"name": "a"})).is_err());
    }

    #[test]
    fn empty_missing_and_wrongly_typed_names_are_malformed() {
        for body in
            [json!({"name": "", "message": 1}), json!({"message": 1}), json!({"name": 7, "message": 1})]
        {
            assert!(parse::<Probe>(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn a_dual_refusal_is_the_same_json_as_a_refusal() {
        use crate::pb::inventory::ScGift;
        let dual = DualRefusal::<ScGift>::new("not enough items");
        assert_eq!(
            serde_json::to_value(&dual).unwrap(),
            serde_json::to_value(Refusal { error: true, error_message: "not enough items" }).unwrap()
        );
        assert_eq!(dual.to_proto(), ScGift { error: true, error_message: "not enough items".into() });
    }

    #[test]
    fn a_refusal_is_error_true_with_the_message() {
        let v = serde_json::to_value(Refusal { error: true, error_message: "Not logged in" }).unwrap();
        assert_eq!(v, json!({"error": true, "error_message": "Not logged in"}));
    }
}
