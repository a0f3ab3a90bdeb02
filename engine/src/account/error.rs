//! Typed errors of the account manager and of redirect tokens.

use crate::cluster::PeerId;
use crate::env::CoordError;
use crate::rpc::RpcError;
use crate::signed::{OpenError, ACCOUNT_BYTES_MAX};

/// Why a redirect token was refused ([`AccountError::BadToken`]). Every reason is final for
/// that token: the client must go back to a server that can issue a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this engine issues (bad hex, wrong length, unknown version, bad fields).
    #[error("malformed")]
    Malformed,
    /// The signature does not match: tampered, or signed with another `redirection_secret`.
    #[error("bad signature")]
    BadSignature,
    /// Signed for another server (`redirection_strict_check_server_id`).
    #[error("issued for another server")]
    WrongServer,
    /// Past its expiry (plus the allowed clock skew) on this server's wall clock.
    #[error("expired")]
    Expired,
    /// Already used once, on this or another server.
    #[error("already used")]
    Replayed,
}

impl From<OpenError> for TokenError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Malformed => TokenError::Malformed,
            OpenError::BadSignature => TokenError::BadSignature,
        }
    }
}

/// Errors of [`AccountManager`](super::AccountManager) calls.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    /// The account id is empty or longer than [`ACCOUNT_BYTES_MAX`] bytes (`bytes`: its
    /// length); any other UTF-8 string is an account id. The message is written for the
    /// client that chose the name: games send it as their refusal's `error_message`.
    #[error("account name must be 1 to {ACCOUNT_BYTES_MAX} bytes of UTF-8, not {bytes}")]
    InvalidAccount { bytes: usize },
    /// The configuration is unusable (e.g. a malformed `redirection_secret`); fix it.
    #[error("invalid account manager config: {0}")]
    Config(String),
    /// No `redirection_secret` is configured, so tokens can be neither issued nor checked.
    #[error("no redirection_secret configured")]
    NoSecret,
    /// A redirect token was refused; the client must obtain a new one.
    #[error("bad redirect token: {0}")]
    BadToken(TokenError),
    /// The account is not logged in on this server (redirect needs a local login).
    #[error("account {0:?} is not logged in on this server")]
    NotLoggedInHere(String),
    /// The account is logged in elsewhere (`None`: its owner's record is unreadable); only
    /// returned where a [`LoginOutcome`](super::LoginOutcome) cannot be (accepting a redirect).
    #[error("account {account:?} is already logged in on {location:?}")]
    AlreadyLoggedIn { account: String, location: Option<PeerId> },
    /// The link is already logged in here as another account (a link carries at most one);
    /// log that one out first.
    #[error("this link is already logged in as {account:?}")]
    LinkInUse { account: String },
    /// The target server is not in the cluster view, or publishes no `tcp_json` port.
    #[error("peer {0} is unknown or has no client port")]
    UnknownPeer(PeerId),
    /// This server does not hold its coordination lease right now (partitioned from
    /// ZooKeeper, or the session just expired): it must not act for accounts. Nothing was
    /// done; retry after the session is back.
    #[error("coordination lease not held; not acting for accounts")]
    CoordinationLost,
    /// A coordination call failed (the operation may be retried if the error is transient).
    #[error("coordination: {0}")]
    Coord(#[from] CoordError),
    /// A cross-server call failed (see [`RpcError`] for what the caller may do).
    #[error("rpc: {0}")]
    Rpc(#[from] RpcError),
    /// A message body or extra_data is too large or not encodable.
    #[error("bad payload: {0}")]
    Payload(String),
    /// [`AccountManager::stop`](super::AccountManager::stop) was called.
    #[error("account manager stopped")]
    Stopped,
}

impl From<TokenError> for AccountError {
    fn from(e: TokenError) -> Self {
        AccountError::BadToken(e)
    }
}
