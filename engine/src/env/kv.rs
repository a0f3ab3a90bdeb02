//! The `Kv` port: the subset of Redis the engine uses, with Redis's semantics.
//!
//! Semantics both backends promise (Redis 7, one primary):
//! - Every call is atomic and linearizable at the Redis node.
//! - TTLs are judged by the **Redis node's own wall clock**: a key set with `px` is gone once
//!   that clock passes its expiry (a skewed or jumping clock on the Redis host shortens or
//!   stretches TTLs; the simulator models this). A plain `SET` clears an existing TTL unless
//!   `keep_ttl`; `GET`/`DEL`/`PEXPIRE` never see an expired key.
//! - A call that times out or loses its connection fails with `maybe_applied: true` when the
//!   request had been sent: it may have taken effect. The client reconnects by itself.
//! - Without persistence a restarted Redis node has lost every key.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Why a KV call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    /// No answer within the client's command timeout.
    #[error("kv call timed out (maybe applied: {maybe_applied})")]
    Timeout { maybe_applied: bool },
    /// The connection failed (or could not be made).
    #[error("kv connection lost (maybe applied: {maybe_applied})")]
    ConnectionLoss { maybe_applied: bool },
    /// The key holds a value of another type (e.g. `GET` on a list).
    #[error("WRONGTYPE operation against a key holding the wrong kind of value")]
    WrongType,
    /// The server rejected the command (message is Redis's own error text).
    #[error("kv server error: {0}")]
    Server(String),
}

impl KvError {
    /// True if the call may have taken effect despite the error.
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            KvError::Timeout { maybe_applied: true } | KvError::ConnectionLoss { maybe_applied: true }
        )
    }
}

/// `SET`'s existence condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SetCondition {
    #[default]
    Always,
    /// `NX`: only if the key does not exist.
    IfAbsent,
    /// `XX`: only if the key exists.
    IfPresent,
}

/// Options of `SET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SetOptions {
    pub condition: SetCondition,
    /// `PX`: expire after this long (by the Redis node's clock). Must be at least 1 ms.
    pub px: Option<Duration>,
    /// `KEEPTTL`: keep an existing TTL (ignored when `px` is set).
    pub keep_ttl: bool,
}

/// Answer of `PTTL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ttl {
    /// `-2`: no such key.
    NoKey,
    /// `-1`: the key exists and has no expiry.
    NoExpiry,
    /// Remaining time to live.
    Remaining(Duration),
}

/// A Redis client. Keys and values are binary; callers choose their encoding.
#[async_trait]
pub trait Kv: Send + Sync {
    /// `GET`: the value, or `None` if absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError>;
    /// `SET key value [NX|XX] [PX ms] [KEEPTTL]`: true if the value was written.
    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool, KvError>;
    /// `DEL`: true if a key was removed.
    async fn del(&self, key: &str) -> Result<bool, KvError>;
    /// `PEXPIRE`: sets a TTL on an existing key; false if there is no such key.
    async fn pexpire(&self, key: &str, ttl: Duration) -> Result<bool, KvError>;
    /// `PTTL`.
    async fn pttl(&self, key: &str) -> Result<Ttl, KvError>;
    /// Atomic compare-and-set (a Lua script on real Redis): if the current value equals
    /// `expected` (`None` = key absent), replace it with `new` (`None` = delete) with TTL `px`
    /// (`None` = no expiry), and return true; otherwise change nothing and return false.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Bytes>,
        new: Option<Bytes>,
        px: Option<Duration>,
    ) -> Result<bool, KvError>;
    /// `GETDEL`: atomically read and delete; `None` if absent.
    async fn take(&self, key: &str) -> Result<Option<Bytes>, KvError>;
    /// `RPUSH`: appends; returns the new length.
    async fn rpush(&self, key: &str, values: Vec<Bytes>) -> Result<u64, KvError>;
    /// `LPOP`: removes and returns the head; `None` if empty or absent.
    async fn lpop(&self, key: &str) -> Result<Option<Bytes>, KvError>;
    /// `LRANGE key start stop` with Redis's inclusive, negative-from-end indices.
    async fn lrange(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Bytes>, KvError>;
    /// `LLEN`.
    async fn llen(&self, key: &str) -> Result<u64, KvError>;
}
