//! [`StorageError`]: why a cross-server storage call failed.

use std::time::Duration;

use crate::env::KvError;

/// Why a [`CrossServerStorage`](super::CrossServerStorage) call failed.
///
/// Where iFun answers a `CrossServerStorage::Result` code (`kSuccess` or a failure code),
/// Sandtable answers `Ok` or one of these variants, each saying what the caller can do.
///
/// Only [`Backend`](StorageError::Backend) can hide an applied change (see
/// [`StorageError::maybe_applied`]); every other error means nothing was changed, except where
/// [`CrossServerStorage::take`](super::CrossServerStorage::take) documents otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// `CrossServerStorage.enable_cross_server_storage` is false: turn it on in the manifest.
    #[error("cross-server storage is disabled (CrossServerStorage.enable_cross_server_storage is false)")]
    Disabled,
    /// The configuration is unusable (see [`StorageConfig`](super::StorageConfig)): fix it.
    #[error("invalid cross-server storage configuration: {0}")]
    InvalidConfig(String),
    /// No value under the key: it never existed, expired, or was deleted or taken. Treat an
    /// authentication key as invalid; do not retry.
    #[error("no value under this key (never created, expired, deleted or taken)")]
    NotFound,
    /// `create_with_key` found the key already in use: choose another key (or `read` it).
    #[error("a value already exists under this key")]
    AlreadyExists,
    /// `compare_and_write` expected another version: re-read (`read_versioned`) and decide again.
    #[error("version mismatch: the value is at version {current}")]
    VersionMismatch { current: u64 },
    /// The value's JSON text is longer than the configured maximum: store less (or raise
    /// `StorageConfig::max_value_bytes`). Nothing was sent to Redis.
    #[error("value is {len} bytes of JSON, more than the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    /// The TTL is under 1 ms or over [`TTL_MAX`](super::TTL_MAX): pass a sensible expiry.
    /// Nothing was sent to Redis.
    #[error("invalid ttl {ttl:?}: must be between 1 ms and {:?}", super::TTL_MAX)]
    InvalidTtl { ttl: Duration },
    /// Too many concurrent updates of one key made every optimistic attempt lose
    /// ([`UPDATE_ATTEMPTS_MAX`](super::UPDATE_ATTEMPTS_MAX)): nothing was changed; retry later.
    #[error("gave up after {attempts} attempts: the key is being updated concurrently")]
    Contended { attempts: u32 },
    /// The key holds something this module did not write (not a version envelope, or not a
    /// string): someone else writes under the key prefix. Delete the key or fix the prefix.
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    /// Redis could not be reached or refused the call; if
    /// [`maybe_applied`](StorageError::maybe_applied) the change may have happened anyway.
    #[error("redis: {0}")]
    Backend(KvError),
}

impl StorageError {
    /// True if the call may have changed the stored value despite failing (a timeout or a
    /// connection loss after the command was sent). Re-read before acting on the failure.
    pub fn maybe_applied(&self) -> bool {
        matches!(self, StorageError::Backend(e) if e.maybe_applied())
    }
}

impl From<KvError> for StorageError {
    /// `WRONGTYPE` means a non-string sits under one of our keys: that is [`StorageError::Corrupt`].
    fn from(e: KvError) -> StorageError {
        match e {
            KvError::WrongType => StorageError::Corrupt("the key holds a list, not a string".to_owned()),
            e => StorageError::Backend(e),
        }
    }
}
