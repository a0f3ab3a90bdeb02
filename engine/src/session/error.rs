//! Typed errors of the session service: what a client did wrong ([`ProtocolError`], sent
//! back as an `_error` frame), why a session ended ([`CloseReason`]) and what an API call on
//! the service or a session can fail with ([`SessionError`]).

use std::fmt;

use super::Transport;
use crate::env::NetError;

/// A client frame the server could not accept. Each variant has a stable machine-readable
/// [`code`](ProtocolError::code) that goes to the client in an `_error` frame, next to the
/// human-readable `Display` text.
///
/// Frame-level problems (the frame or its envelope is unusable) close the session after the
/// `_error` frame; message-level problems (a well-formed envelope the server cannot route or
/// decode) leave it open, see [`closes_session`](ProtocolError::closes_session).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The frame's length prefix is above the port's `max_frame_bytes`. Closes the session:
    /// the rest of the stream cannot be re-synchronised. `len` is 0 when the transport does
    /// not report it.
    #[error("{}", too_large_text(*len, *max))]
    FrameTooLarge { len: usize, max: usize },
    /// A JSON port's payload is not UTF-8, not JSON, or not a JSON object. Closes the session.
    #[error("payload is not a JSON object: {0}")]
    BadJson(String),
    /// The envelope is unusable: `type` missing, empty or not a string, `body` missing or
    /// not an object (JSON), or the payload is not a protobuf `Envelope`. Closes the session.
    #[error("bad envelope: {0}")]
    BadEnvelope(String),
    /// No handler is registered for this message type. The session stays open (a client newer
    /// than the server can go on with the messages the server knows).
    #[error("no handler for message type {0:?}")]
    UnknownType(String),
    /// The client sent an engine-reserved type (starting with `_`) that clients may not send.
    /// The session stays open.
    #[error("message type {0:?} is reserved for the engine")]
    ReservedType(String),
    /// The envelope was fine but its body does not decode as the handler's message (a
    /// protobuf handler's message, or a JSON handler's object on a protobuf port). The
    /// session stays open; the handler did not run.
    #[error("body of {msg_type:?} does not decode: {reason}")]
    BadBody { msg_type: String, reason: String },
    /// A `_cs_redirect` was refused (bad, expired, replayed or misdirected token, or the
    /// account could not be logged in here). The session stays open: the client may log in
    /// normally or go back for a new token. `reason` says which check failed.
    #[error("redirect refused: {0}")]
    RedirectRejected(String),
    /// A gate refused `cs_gate_login`'s session key (malformed, forged or altered, expired,
    /// or issued for another user). The session stays open: the client may get a new key
    /// from a login server and try again. `reason` says which check failed.
    #[error("session key refused: {0}")]
    SessionKeyRejected(String),
    /// A gate got a frame for the backend from a client that has not logged in on it
    /// (`cs_gate_login` first). The session stays open.
    #[error("log in on the gate first (cs_gate_login)")]
    GateLoginRequired,
    /// The server holds as much session memory as it may (`session_memory_max_bytes`): this
    /// new connection is refused and closed. Try again later or elsewhere.
    #[error("server busy: session memory limit of {max} bytes reached")]
    ServerBusy { max: usize },
}

fn too_large_text(len: usize, max: usize) -> String {
    if len == 0 {
        format!("frame exceeds the limit of {max} bytes")
    } else {
        format!("frame of {len} bytes exceeds the limit of {max} bytes")
    }
}

impl ProtocolError {
    /// The stable machine-readable code sent to the client (`_error.body.code`).
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::FrameTooLarge { .. } => "frame_too_large",
            ProtocolError::BadJson(_) => "bad_json",
            ProtocolError::BadEnvelope(_) => "bad_envelope",
            ProtocolError::UnknownType(_) => "unknown_type",
            ProtocolError::ReservedType(_) => "reserved_type",
            ProtocolError::BadBody { .. } => "bad_body",
            ProtocolError::RedirectRejected(_) => "redirect_rejected",
            ProtocolError::SessionKeyRejected(_) => "session_key_rejected",
            ProtocolError::GateLoginRequired => "gate_login_required",
            ProtocolError::ServerBusy { .. } => "server_busy",
        }
    }

    /// True for frame-level problems, after which the server closes the session
    /// (DESIGN.md §6); false for message-level ones, after which it reads the next frame.
    pub fn closes_session(&self) -> bool {
        match self {
            ProtocolError::FrameTooLarge { .. }
            | ProtocolError::BadJson(_)
            | ProtocolError::BadEnvelope(_)
            | ProtocolError::ServerBusy { .. } => true,
            ProtocolError::UnknownType(_)
            | ProtocolError::ReservedType(_)
            | ProtocolError::BadBody { .. }
            | ProtocolError::RedirectRejected(_)
            | ProtocolError::SessionKeyRejected(_)
            | ProtocolError::GateLoginRequired => false,
        }
    }
}

/// Why a session ended; passed to the `on_session_closed` callbacks and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection (end of stream).
    ClosedByPeer,
    /// No frame from the client for `idle_timeout`.
    IdleTimeout,
    /// The session's outbound queue overflowed (`send_queue_max`): the client does not read
    /// fast enough. Queued frames are dropped.
    SlowReader,
    /// The client sent a frame-level malformed frame; an `_error` frame went out first.
    Protocol(ProtocolError),
    /// Server code called [`Session::close`](super::Session::close) with this reason.
    Server(String),
    /// The connection failed (reset, I/O error).
    Network(String),
    /// The service shut down.
    Shutdown,
    /// The connection had sent no handled message yet and was closed to make room for a
    /// newer one (`unauthenticated_max` or `unauthenticated_per_address_max` reached).
    Evicted,
    /// The transport closed the connection for abuse it detected (e.g. a WebSocket
    /// control-frame flood); the text says what.
    Abuse(String),
}

impl CloseReason {
    /// A short stable name of the reason's kind (metrics label, logs).
    pub fn kind(&self) -> &'static str {
        match self {
            CloseReason::ClosedByPeer => "closed_by_peer",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SlowReader => "slow_reader",
            CloseReason::Protocol(_) => "protocol",
            CloseReason::Server(_) => "server",
            CloseReason::Network(_) => "network",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Evicted => "evicted",
            CloseReason::Abuse(_) => "abuse",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClosedByPeer => f.write_str("closed by peer"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::SlowReader => f.write_str("slow reader"),
            CloseReason::Protocol(e) => write!(f, "protocol error {}: {e}", e.code()),
            CloseReason::Server(r) => write!(f, "closed by server: {r}"),
            CloseReason::Network(e) => write!(f, "network error: {e}"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::Evicted => f.write_str("evicted: unauthenticated connection limit reached"),
            CloseReason::Abuse(what) => write!(f, "abuse: {what}"),
        }
    }
}

/// Why a call on [`SessionService`](super::SessionService) or [`Session`](super::Session)
/// failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session is closed (or closing); nothing was queued. Its reason is given.
    #[error("session closed: {0}")]
    Closed(CloseReason),
    /// This send overflowed the outbound queue: the session is now closed as a slow reader.
    #[error("session closed: slow reader")]
    SlowReader,
    /// The encoded frame is larger than the port's `max_frame_bytes`; nothing was sent and
    /// the session stays open. Split the message.
    #[error("outgoing frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    /// A JSON body must be a JSON object (DESIGN.md §6); nothing was sent.
    #[error("message body must be a JSON object")]
    BodyNotAnObject,
    /// A message's JSON form did not serialize (serde's reason); nothing was sent.
    #[error("message body does not serialize: {0}")]
    BodyNotSerializable(String),
    /// `send_proto` on a JSON port: a protobuf message has no JSON form here. Use `send_json`.
    #[error("cannot send a protobuf message on a JSON port")]
    ProtobufOnJsonPort,
    /// `bind`/`start` was given an unusable configuration (the text says which field or
    /// port), e.g. no port at all or two ports of one transport.
    #[error("bad session config: {0}")]
    Config(String),
    /// `bind`/`start` could not bind a listen address.
    #[error("cannot listen: {0}")]
    Listen(NetError),
    /// The [`ClientListeners`](super::ClientListeners) given to `bind` cannot serve this
    /// transport (e.g. WebSocket JSON on the bare `Net` port); nothing was bound.
    #[error("cannot serve a {transport:?} port: {reason}")]
    UnsupportedTransport { transport: Transport, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_distinct() {
        let all = [
            ProtocolError::FrameTooLarge { len: 1, max: 0 },
            ProtocolError::BadJson(String::new()),
            ProtocolError::BadEnvelope(String::new()),
            ProtocolError::UnknownType(String::new()),
            ProtocolError::ReservedType(String::new()),
            ProtocolError::BadBody { msg_type: String::new(), reason: String::new() },
        ];
        let codes: Vec<_> = all.iter().map(|e| e.code()).collect();
        assert_eq!(
            codes,
            ["frame_too_large", "bad_json", "bad_envelope", "unknown_type", "reserved_type", "bad_body"]
        );
        let closing: Vec<_> = all.iter().map(|e| e.closes_session()).collect();
        assert_eq!(closing, [true, true, true, false, false, false]);
    }

    #[test]
    fn slow_reader_reason_reads_slow_reader() {
        assert_eq!(CloseReason::SlowReader.to_string(), "slow reader");
    }
}
