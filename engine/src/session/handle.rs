//! [`Session`]: the cheap, cloneable handle to one client connection (iFun's `Ptr<Session>`).
//!
//! Method groups:
//! - identity: [`id`](Session::id), [`peer_addr`](Session::peer_addr), [`transport`](Session::transport);
//! - output: [`send_json`](Session::send_json), [`send_proto`](Session::send_proto),
//!   [`send_dual`](Session::send_dual), [`send_dual_body`](Session::send_dual_body) — they
//!   queue a frame and return at once; the session's writer sends queued frames in order;
//! - lifetime: [`close`](Session::close), [`is_open`](Session::is_open), [`close_reason`](Session::close_reason);
//! - context: [`set_context`](Session::set_context), [`context`](Session::context),
//!   [`remove_context`](Session::remove_context) — typed values under string keys (the
//!   account logged in on a session is not one of them: ask the account manager's
//!   `account_of(session.id())`).

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use serde_json::Value;

use super::budget::MemoryBudget;
use super::codec;
use super::dual::{self, DualBody, DualReply};
use super::error::{CloseReason, ProtocolError, SessionError};
use super::signal::Signal;
use super::Transport;
use crate::env::Rand;
use crate::env::RandExt;

/// Identifies a session for its whole life; random (from the `Rand` port), never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(uuid::Uuid);

impl SessionId {
    /// A fresh random id.
    pub fn new_random(rand: &dyn Rand) -> Self {
        SessionId(rand.uuid())
    }
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        SessionId(u)
    }
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

pub(super) use crate::env::lock;

/// The outbound queue and the close state, under one lock so that "open" and "queued" agree.
struct Outbox {
    queue: VecDeque<Bytes>,
    /// Bytes of the frames in `queue`, all charged to the service's [`MemoryBudget`].
    queued_bytes: usize,
    close: Option<CloseReason>,
    writer: Option<Waker>,
    /// The session's own task is polling its reader half now and polls the writer half right
    /// after (`service::run_session`): a frame queued meanwhile needs no wake-up, and waking
    /// the running task would requeue it where the other worker steals it.
    owner_reading: bool,
}

impl Outbox {
    fn pop(&mut self, budget: &MemoryBudget) -> Option<Bytes> {
        let f = self.queue.pop_front()?;
        self.queued_bytes -= f.len();
        budget.release(f.len());
        Some(f)
    }

    fn clear(&mut self, budget: &MemoryBudget) {
        self.queue.clear();
        budget.release(self.queued_bytes);
        self.queued_bytes = 0;
    }
}

/// Which limit a refused frame met (for the log line).
enum Overflow {
    /// `send_queue_max`, with this many frames queued.
    Frames(usize),
    /// `send_queue_bytes_max`, with this many bytes queued.
    Bytes(usize),
    /// The service's memory budget, with this many bytes charged.
    Budget(usize),
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overflow::Frames(n) => write!(f, "send_queue_max reached ({n} frames queued)"),
            Overflow::Bytes(n) => write!(f, "send_queue_bytes_max reached ({n} bytes queued)"),
            Overflow::Budget(n) => {
                write!(f, "session memory budget reached ({n} bytes held by all sessions)")
            }
        }
    }
}

/// A session's own limits (from its port's [`SessionConfig`](super::SessionConfig)).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub max_frame_bytes: usize,
    pub send_queue_max: usize,
    pub send_queue_bytes_max: usize,
}

impl Limits {
    pub fn of(cfg: &super::SessionConfig) -> Limits {
        Limits {
            max_frame_bytes: cfg.max_frame_bytes,
            send_queue_max: cfg.send_queue_max,
            send_queue_bytes_max: cfg.send_queue_bytes_max,
        }
    }
}

pub(super) struct SessionShared {
    id: SessionId,
    peer: SocketAddr,
    transport: Transport,
    limits: Limits,
    budget: Arc<MemoryBudget>,
    outbox: Mutex<Outbox>,
    context: Mutex<BTreeMap<String, Arc<dyn Any + Send + Sync>>>,
    /// Fired at the first close of any kind: the reader stops, the writer drains.
    pub(super) closed: Signal,
    /// Fired at an immediate close: the writer drops what is queued and stops at once.
    pub(super) abort: Signal,
    /// Fired when the session's task has finished (after the closed callbacks).
    pub(super) done: Signal,
}

impl Drop for SessionShared {
    /// Frames still queued when the last handle goes (a graceful close whose drain timed out)
    /// give their bytes back to the budget.
    fn drop(&mut self) {
        let out = self.outbox.get_mut().unwrap_or_else(|p| p.into_inner());
        out.clear(&self.budget);
    }
}

/// A handle to one client session. Cheap to clone; all clones are the same session.
/// Handles stay valid after the session closed (sends then fail with `Closed`).
#[derive(Clone)]
pub struct Session {
    pub(super) shared: Arc<SessionShared>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.shared.id)
            .field("peer", &self.shared.peer)
            .field("transport", &self.shared.transport)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Session {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Session {}

impl Session {
    pub(super) fn new(
        id: SessionId,
        peer: SocketAddr,
        transport: Transport,
        limits: Limits,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        assert!(limits.send_queue_max >= 1, "send_queue_max must be at least 1");
        Session {
            shared: Arc::new(SessionShared {
                id,
                peer,
                transport,
                limits,
                budget,
                outbox: Mutex::new(Outbox {
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                    close: None,
                    writer: None,
                    owner_reading: false,
                }),
                context: Mutex::new(BTreeMap::new()),
                closed: Signal::new(),
                abort: Signal::new(),
                done: Signal::new(),
            }),
        }
    }

    pub fn id(&self) -> SessionId {
        self.shared.id
    }

    /// The client's address as the server sees it.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    pub fn transport(&self) -> Transport {
        self.shared.transport
    }

    /// Queues `{"type": msg_type, "body": body}` (iFun's `Session::SendMessage` with JSON).
    /// On a protobuf port the body travels as UTF-8 JSON inside the envelope.
    ///
    /// Returns once queued; success does not mean the client received it. Fails without
    /// queuing if the session is closed, the body is not an object, or the frame is too
    /// large; overflowing the queue closes the session as a slow reader.
    pub fn send_json(&self, msg_type: &str, body: Value) -> Result<(), SessionError> {
        if !body.is_object() {
            return Err(SessionError::BodyNotAnObject);
        }
        self.push(codec::encode_json_message(self.shared.transport, msg_type, &body))
    }

    /// Queues a protobuf message (iFun's `SendMessage` with a `FunMessage`). Protobuf ports
    /// only: on a JSON port it fails with [`SessionError::ProtobufOnJsonPort`].
    pub fn send_proto<M: prost::Message>(&self, msg_type: &str, msg: &M) -> Result<(), SessionError> {
        match self.shared.transport {
            Transport::TcpJson | Transport::WebSocketJson => Err(SessionError::ProtobufOnJsonPort),
            Transport::TcpProtobuf => self.push(codec::encode_protobuf(msg_type, &msg.encode_to_vec())),
        }
    }

    /// Queues `msg` in this session's own form: its JSON object on a JSON or WebSocket port,
    /// its protobuf message ([`DualReply::to_proto`]) on the protobuf port. The reply of a
    /// dual handler ([`SessionService::register_dual_handler`](super::SessionService::register_dual_handler)). Fails as [`send_json`](Self::send_json) does, and with
    /// [`SessionError::BodyNotSerializable`] if the JSON form does not serialize.
    pub fn send_dual<T: DualReply>(&self, msg_type: &str, msg: &T) -> Result<(), SessionError> {
        self.push(dual::encode_reply(self.shared.transport, msg_type, msg)?)
    }

    /// Queues a message already encoded in both forms, in this session's own form (a push
    /// made where the recipient's transport was not known).
    pub fn send_dual_body(&self, msg_type: &str, body: &DualBody) -> Result<(), SessionError> {
        self.push(body.encode(self.shared.transport, msg_type))
    }

    /// Queues an `_error {code, message}` frame for `e` (handlers of engine-reserved types
    /// answer with it; the session stays open unless the caller closes it).
    pub fn send_error(&self, e: &ProtocolError) -> Result<(), SessionError> {
        self.push(codec::encode_error(self.shared.transport, e))
    }

    /// Queues an encoded frame (already in this session's transport encoding).
    ///
    /// A frame that would take the queue past `send_queue_max` frames or
    /// `send_queue_bytes_max` bytes, or the service past its memory budget, is not queued and
    /// closes the session as a slow reader (dropping what was queued).
    pub(super) fn push(&self, frame: Bytes) -> Result<(), SessionError> {
        let limits = &self.shared.limits;
        let len = frame.len();
        if len > limits.max_frame_bytes {
            return Err(SessionError::FrameTooLarge { len, max: limits.max_frame_bytes });
        }
        let overflow = {
            let mut out = lock(&self.shared.outbox);
            if let Some(r) = &out.close {
                return Err(SessionError::Closed(r.clone()));
            }
            if out.queue.len() >= limits.send_queue_max {
                Overflow::Frames(out.queue.len())
            } else if out.queued_bytes + len > limits.send_queue_bytes_max {
                Overflow::Bytes(out.queued_bytes)
            } else if !self.shared.budget.try_charge(len) {
                Overflow::Budget(self.shared.budget.used())
            } else {
                out.queue.push_back(frame);
                out.queued_bytes += len;
                if !out.owner_reading {
                    if let Some(w) = out.writer.take() {
                        w.wake();
                    }
                }
                return Ok(());
            }
        };
        crate::probe!("session: slow reader closed");
        tracing::info!(session = %self.shared.id, frame = len, %overflow, "slow reader: send queue full");
        self.close_with(CloseReason::SlowReader, false);
        Err(SessionError::SlowReader)
    }

    /// Bytes queued for the client now.
    pub fn queued_bytes(&self) -> usize {
        lock(&self.shared.outbox).queued_bytes
    }

    /// Closes the session (iFun's `Session::Close`): frames already queued are still sent,
    /// later sends fail, no further client message is handled, and the connection ends once
    /// the handler running now (if any) has returned. Idempotent; the first reason wins.
    pub fn close(&self, reason: impl Into<String>) {
        self.close_with(CloseReason::Server(reason.into()), true);
    }

    /// Records the first close; with `drain` false the queue is dropped and the writer stops
    /// at once. Returns whether this call closed the session.
    pub(super) fn close_with(&self, reason: CloseReason, drain: bool) -> bool {
        let waker = {
            let mut out = lock(&self.shared.outbox);
            if out.close.is_some() {
                return false;
            }
            out.close = Some(reason);
            if !drain {
                out.clear(&self.shared.budget);
            }
            out.writer.take()
        };
        if !drain {
            self.shared.abort.fire();
        }
        self.shared.closed.fire();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// False once the session is closing or closed.
    pub fn is_open(&self) -> bool {
        lock(&self.shared.outbox).close.is_none()
    }

    /// Why the session closed; `None` while open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.shared.outbox).close.clone()
    }

    /// Set while the session's task polls its reader half (the writer half is polled right
    /// after it, in the same pass).
    pub(super) fn set_owner_reading(&self, on: bool) {
        lock(&self.shared.outbox).owner_reading = on;
    }

    /// The next queued frame if there is one now; never waits, registers no waker.
    pub(super) fn try_next_frame(&self) -> Option<Bytes> {
        lock(&self.shared.outbox).pop(&self.shared.budget)
    }

    /// The writer's next frame: `Some` while frames are queued, `None` once closed and
    /// drained, pending otherwise.
    pub(super) fn poll_next_frame(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut out = lock(&self.shared.outbox);
        if let Some(f) = out.pop(&self.shared.budget) {
            return Poll::Ready(Some(f));
        }
        if out.close.is_some() {
            return Poll::Ready(None);
        }
        out.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Stores `value` under `key`, replacing what was there (of any type).
    pub fn set_context<T: Any + Send + Sync>(&self, key: &str, value: T) {
        lock(&self.shared.context).insert(key.to_string(), Arc::new(value));
    }

    /// The value under `key`, if there is one of type `T`.
    pub fn context<T: Any + Send + Sync + Clone>(&self, key: &str) -> Option<T> {
        lock(&self.shared.context).get(key).and_then(|v| v.downcast_ref::<T>()).cloned()
    }

    /// Removes `key`; true if it was there.
    pub fn remove_context(&self, key: &str) -> bool {
        lock(&self.shared.context).remove(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;
    use serde_json::json;

    fn session(queue_max: usize, transport: Transport) -> Session {
        session_with(queue_max, usize::MAX, Arc::new(MemoryBudget::new(usize::MAX)), transport)
    }

    fn session_with(
        queue_max: usize,
        bytes_max: usize,
        budget: Arc<MemoryBudget>,
        transport: Transport,
    ) -> Session {
        let id = SessionId::from_uuid(uuid::Uuid::from_u128(7));
        let limits =
            Limits { max_frame_bytes: 256, send_queue_max: queue_max, send_queue_bytes_max: bytes_max };
        Session::new(id, "10.0.0.1:5000".parse().unwrap(), transport, limits, budget)
    }

    #[test]
    fn a_queue_over_its_byte_limit_closes_as_slow_reader_and_gives_its_bytes_back() {
        let budget = Arc::new(MemoryBudget::new(usize::MAX));
        let s = session_with(100, 100, budget.clone(), Transport::TcpJson);
        s.send_json("a", json!({"pad": "x".repeat(40)})).unwrap();
        let held = s.queued_bytes();
        assert!(held > 40 && held <= 100, "{held}");
        assert_eq!(budget.used(), held, "the queued frame is charged to the budget");
        assert_eq!(s.send_json("b", json!({"pad": "x".repeat(60)})), Err(SessionError::SlowReader));
        assert!(!s.is_open());
        assert_eq!((s.queued_bytes(), budget.used()), (0, 0), "the dropped queue is released");
    }

    #[test]
    fn frames_taken_by_the_writer_are_released_from_the_budget() {
        let budget = Arc::new(MemoryBudget::new(usize::MAX));
        let s = session_with(100, 10_000, budget.clone(), Transport::TcpJson);
        s.send_json("a", json!({})).unwrap();
        s.send_json("b", json!({})).unwrap();
        assert!(budget.used() > 0);
        assert_eq!(drain(&s).len(), 2);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_full_service_budget_closes_the_session_whose_frame_did_not_fit() {
        let budget = Arc::new(MemoryBudget::new(60));
        let a = session_with(100, 10_000, budget.clone(), Transport::TcpJson);
        a.send_json("a", json!({"pad": "x".repeat(20)})).unwrap();
        let b = session_with(100, 10_000, budget.clone(), Transport::TcpJson);
        assert_eq!(b.send_json("b", json!({"pad": "x".repeat(20)})), Err(SessionError::SlowReader));
        assert!(a.is_open() && !b.is_open(), "only the session that could not queue is closed");
        assert_eq!(budget.refused(), 1);
    }

    #[test]
    fn frames_left_queued_are_released_when_the_last_handle_goes() {
        let budget = Arc::new(MemoryBudget::new(usize::MAX));
        let s = session_with(100, 10_000, budget.clone(), Transport::TcpJson);
        s.send_json("a", json!({})).unwrap();
        s.close("bye");
        assert!(budget.used() > 0, "a graceful close keeps the queue for the writer");
        drop(s);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_frame_queued_while_the_session_task_reads_does_not_wake_its_writer_and_one_queued_otherwise_does() {
        let s = session(100, Transport::TcpJson);
        let count = crate::testing::CountingWaker::new();
        let woken = || count.woken();
        let mut cx = Context::from_waker(count.waker());
        assert_eq!(s.poll_next_frame(&mut cx), Poll::Pending, "the writer waits");

        s.set_owner_reading(true);
        s.send_json("a", json!({})).unwrap();
        s.set_owner_reading(false);
        assert_eq!(woken(), 0, "the session's own task polls its writer half next, in the same pass");
        assert!(matches!(s.poll_next_frame(&mut cx), Poll::Ready(Some(_))), "... and finds the frame");

        assert_eq!(s.poll_next_frame(&mut cx), Poll::Pending);
        s.send_json("b", json!({})).unwrap();
        assert_eq!(woken(), 1, "a frame queued from elsewhere wakes the writer");
        assert!(matches!(s.poll_next_frame(&mut cx), Poll::Ready(Some(_))));
    }

    fn drain(s: &Session) -> Vec<Bytes> {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(f)) = s.poll_next_frame(&mut cx) {
            out.push(f);
        }
        out
    }

    #[test]
    fn sends_queue_in_order_and_overflow_closes_as_slow_reader() {
        let s = session(2, Transport::TcpJson);
        s.send_json("a", json!({})).unwrap();
        s.send_json("b", json!({"x": 1})).unwrap();
        assert_eq!(s.send_json("c", json!({})), Err(SessionError::SlowReader));
        assert!(!s.is_open());
        assert_eq!(s.close_reason(), Some(CloseReason::SlowReader));
        assert!(drain(&s).is_empty(), "an immediate close drops the queue");
        assert_eq!(s.send_json("d", json!({})), Err(SessionError::Closed(CloseReason::SlowReader)));
    }

    #[test]
    fn graceful_close_keeps_queued_frames_and_first_reason_wins() {
        let s = session(8, Transport::TcpJson);
        s.send_json("bye", json!({"error": true})).unwrap();
        s.close("malformed fields");
        s.close("again");
        assert!(matches!(s.send_json("x", json!({})), Err(SessionError::Closed(_))));
        let frames = drain(&s);
        assert_eq!(frames, vec![Bytes::from_static(br#"{"type":"bye","body":{"error":true}}"#)]);
        assert_eq!(s.close_reason(), Some(CloseReason::Server("malformed fields".into())));
    }

    #[test]
    fn bad_sends_fail_without_closing() {
        let s = session(8, Transport::TcpJson);
        assert_eq!(s.send_json("a", json!([1])), Err(SessionError::BodyNotAnObject));
        let big = json!({"k": "x".repeat(300)});
        assert!(matches!(s.send_json("a", big), Err(SessionError::FrameTooLarge { max: 256, .. })));
        assert_eq!(s.send_proto("a", &()), Err(SessionError::ProtobufOnJsonPort));
        assert!(s.is_open());
        let p = session(8, Transport::TcpProtobuf);
        assert_eq!(p.send_proto("a", &()), Ok(()));
    }

    #[test]
    fn a_dual_reply_goes_out_in_each_sessions_own_form() {
        use crate::rpc::messages::EchoReply;
        use crate::session::dual::fixtures::Shouted as Said;
        use prost::Message;
        let said = Said { message: "hi".into() };
        let pushed = DualBody::of(&Said { message: "pushed".into() }).unwrap();
        for t in [Transport::TcpJson, Transport::WebSocketJson] {
            let s = session(8, t);
            s.send_dual("said", &said).unwrap();
            s.send_dual_body("pushed", &pushed).unwrap();
            let frames = drain(&s);
            assert_eq!(
                frames,
                vec![
                    Bytes::from_static(br#"{"type":"said","body":{"message":"hi"}}"#),
                    Bytes::from_static(br#"{"type":"pushed","body":{"message":"pushed"}}"#),
                ],
                "{t:?}"
            );
        }
        let p = session(8, Transport::TcpProtobuf);
        p.send_dual("said", &said).unwrap();
        p.send_dual_body("pushed", &pushed).unwrap();
        let bodies: Vec<(String, EchoReply)> = drain(&p)
            .iter()
            .map(|f| {
                let env = codec::pb::Envelope::decode(&f[..]).unwrap();
                (env.r#type, EchoReply::decode(&env.body[..]).unwrap())
            })
            .collect();
        assert_eq!(
            bodies,
            vec![
                ("said".to_string(), EchoReply { message: "hi".into() }),
                ("pushed".to_string(), EchoReply { message: "pushed".into() }),
            ]
        );
    }

    #[test]
    fn context_is_typed() {
        let s = session(1, Transport::TcpJson);
        s.set_context("account", "kim".to_string());
        assert_eq!(s.context::<String>("account"), Some("kim".to_string()));
        assert_eq!(s.context::<u64>("account"), None, "wrong type");
        assert!(s.remove_context("account"));
        assert_eq!(s.context::<String>("account"), None);
        assert!(!s.remove_context("account"));
    }
}
