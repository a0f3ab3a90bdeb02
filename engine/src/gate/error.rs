//! Typed errors of session keys and of the gate configuration.

use crate::signed::{BadSecret, OpenError};

/// Why a session key was refused. Every reason is final for that key: the client must log in
/// on a login server again for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionKeyError {
    /// Not a session key (wrong length, not lowercase hex, another kind of signed string such
    /// as a redirect token, bad fields). Nothing to retry: the client sent garbage.
    #[error("malformed")]
    Malformed,
    /// The signature does not match: forged, altered, or signed with another
    /// `session_key_secret` (check that every login server and gate share one).
    #[error("bad signature")]
    BadSignature,
    /// Past its expiry (plus the allowed clock skew) on the verifier's wall clock: log in again.
    #[error("expired")]
    Expired,
    /// A valid key, but for another user than the one the client claims to be.
    #[error("issued for another user")]
    WrongUser,
}

impl From<OpenError> for SessionKeyError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Malformed => SessionKeyError::Malformed,
            OpenError::BadSignature => SessionKeyError::BadSignature,
        }
    }
}

/// Why a session key could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The user name is not a valid account id (empty, or longer than
    /// [`ACCOUNT_BYTES_MAX`](crate::account::ACCOUNT_BYTES_MAX) bytes; `bytes`: its length):
    /// the same refusal, with the same message, a login would give; fix the request.
    #[error("account name must be 1 to {} bytes of UTF-8, not {bytes}", crate::account::ACCOUNT_BYTES_MAX)]
    InvalidUser { bytes: usize },
}

/// Why a [`GateConfig`](super::GateConfig) is unusable. Fix the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateConfigError {
    /// No `session_key_secret`: keys can be neither issued nor checked.
    #[error("no session_key_secret configured")]
    NoSecret,
    /// `session_key_secret` is not 64 hex characters.
    #[error("session_key_secret {0}")]
    BadSecret(BadSecret),
    /// `session_key_ttl` is zero or above [`SESSION_KEY_TTL_MAX`](super::SESSION_KEY_TTL_MAX).
    #[error("session_key_ttl {0:?} must be positive and at most {max:?}", max = super::SESSION_KEY_TTL_MAX)]
    Ttl(std::time::Duration),
}
