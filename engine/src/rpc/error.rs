//! Typed errors of the RPC service.

use crate::cluster::PeerId;
use crate::env::NetError;

/// Why a [`call`](super::Rpc::call) (or [`start`](super::Rpc::start)) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No reply by the deadline; the handler may or may not have run (at most once). Retry
    /// only if the operation is idempotent (a retry is a new call with a new xid).
    #[error("rpc timed out")]
    Timeout,
    /// The peer could not be connected to before the deadline; nothing was delivered, the
    /// handler did not run. Retry later or pick another peer.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The directory does not know this peer (it left the cluster or never joined): refresh
    /// the peer list.
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
    /// The peer has no handler for this message type: a deployment mismatch, do not retry.
    #[error("no handler for message type {0:?}")]
    NoHandler(String),
    /// The handler ran and returned an error (its message); the call was executed.
    #[error("handler failed: {0}")]
    Handler(String),
    /// A request or reply body did not decode as the expected message: a schema mismatch.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// The call was overtaken by a later call with the same order key (e.g. across a
    /// reconnect) and was not handled; the handled calls of that key stay in send order.
    /// Re-issue it as a new call if it still makes sense after the later one.
    #[error("call {seq} of order key {order_key:?} arrived after {last_seq} was handled")]
    OutOfOrder { order_key: String, seq: u64, last_seq: u64 },
    /// The address now belongs to another incarnation of the server (it restarted with a new
    /// PeerId): the target is gone, the call was not handled. Look the peer up again.
    #[error("peer incarnation is gone (fenced)")]
    Fenced,
    /// Too many calls are waiting: at the receiver for one order key, or here for one peer
    /// ([`PENDING_CALLS_PER_PEER_MAX`](super::PENDING_CALLS_PER_PEER_MAX)); not handled.
    /// Back off.
    #[error("receiver overloaded: {0}")]
    Overloaded(String),
    /// This RPC service was shut down.
    #[error("rpc service shut down")]
    Shutdown,
    /// `start` could not bind the listen address.
    #[error("cannot listen: {0}")]
    Listen(NetError),
}

/// What a request handler returns instead of a reply; the caller gets
/// [`RpcError::Handler`] with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    pub fn new(msg: impl Into<String>) -> Self {
        HandlerError(msg.into())
    }
}

impl From<String> for HandlerError {
    fn from(s: String) -> Self {
        HandlerError(s)
    }
}

impl From<&str> for HandlerError {
    fn from(s: &str) -> Self {
        HandlerError(s.to_string())
    }
}
