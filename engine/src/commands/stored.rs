//! The plain SQL rows of command queues, all in the user's shard and written in the same
//! commit as the user's queue record:
//!
//! | table | key suffix | value | written |
//! |---|---|---|---|
//! | [`PACK_TABLE`] | `p{pack_id:020}` | [`PackRow`]: the pack, then its outcome | at submit (`Absent`), at execution (`Version`) |
//! | [`PENDING_TABLE`] | `q` | `{}`: present exactly while packs wait | when the queue fills / drains |
//! | [`REALTIME_TABLE`] | `r.{id}` | [`RealtimeRow`]: a real-time command's result | once, when applied (`Absent`) |
//!
//! Pack rows are kept after execution (the user's journal: what ran, what failed, what was
//! skipped, at which epoch); the pending rows are the sweep's index of queues to drain;
//! real-time rows are the idempotency keys of real-money commands and are never removed.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::queue::Outcome;
use crate::env::TableName;

pub const PACK_TABLE: &str = "cmd_pack";
pub const PENDING_TABLE: &str = "cmd_pending";
pub const REALTIME_TABLE: &str = "cmd_realtime";
/// Longest real-time command id.
pub const REALTIME_ID_BYTES_MAX: usize = 64;

pub fn table(name: &str) -> TableName {
    TableName::new(name).expect("valid table name")
}

/// What every pack row's key suffix starts with (a scan of a user's packs).
pub const PACK_PREFIX: &str = "p";
/// What every real-time row's key suffix starts with.
pub const REALTIME_PREFIX: &str = "r.";
/// The pending row's key suffix.
pub const PENDING_SUFFIX: &str = "q";

/// A pack row's key suffix (zero-padded: key order is pack order).
pub fn pack_suffix(pack_id: u64) -> String {
    format!("{PACK_PREFIX}{pack_id:020}")
}

/// A real-time row's key suffix.
pub fn realtime_suffix(id: &str) -> String {
    format!("{REALTIME_PREFIX}{id}")
}

/// Checks a real-time command id: 1 to 64 bytes of `[A-Za-z0-9_.-]`.
pub fn validate_realtime_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > REALTIME_ID_BYTES_MAX {
        return Err(format!("id must be 1 to {REALTIME_ID_BYTES_MAX} bytes"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err("id may hold only A-Z a-z 0-9 _ . -".into());
    }
    Ok(())
}

/// A stored pack and, once executed, how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackRow {
    pub pack_id: u64,
    pub basis: u64,
    pub commands: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed: Option<Executed>,
}

/// How a pack ended: the outcome, the epoch the state was at after it, and for a failure the
/// failing command and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executed {
    pub outcome: Outcome,
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A real-time command's result: the epoch it moved the state to, or why it was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealtimeRow {
    pub command: Value,
    /// `Ok(epoch after it)` or `Err(why it was refused)`.
    pub result: Result<u64, String>,
}

pub fn encode<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("rows serialize"))
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}
