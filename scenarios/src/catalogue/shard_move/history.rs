//! What `shard_move`'s processes record: writers' appends and the mover's moves.

use serde::{Deserialize, Serialize};

use crate::history::{History, Outcome};

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardOp {
    /// Append `id` to `user`'s log row (read, then a version-conditional write).
    Append { user: String, shard: u32, id: u64 },
    /// Move `shard` to instance `to`.
    Move { shard: u32, to: String },
    /// Finish the recorded move.
    Resume,
    /// Undo the recorded move.
    Rollback,
}

/// What a completed operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardResult {
    /// The append was accepted by `instance`, routed by map `map_version`.
    Appended { instance: String, map_version: u64 },
    /// A move ended: `shard` went from `from` to `to` (or stayed, if `rolled_back`), and the
    /// map is at `version`.
    Moved { shard: u32, from: String, to: String, version: u64, frozen_ms: u64, rolled_back: bool },
    /// Resume or rollback found nothing to do.
    Nothing,
}

pub type ShardHistory = History<ShardOp, ShardResult>;

/// The moves that finished (not rolled back), in completion order:
/// `(shard, from, to, invoke_ns, ok_ns, frozen_ms)`.
pub fn switches(history: &ShardHistory) -> Vec<Switch> {
    let mut out: Vec<Switch> = history
        .ops
        .iter()
        .filter_map(|op| match (&op.completion, op.outcome()) {
            (
                Some((ok_ns, _)),
                Outcome::Ok(ShardResult::Moved { shard, from, to, frozen_ms, rolled_back: false, .. }),
            ) => Some(Switch {
                shard: *shard,
                from: from.clone(),
                to: to.clone(),
                invoke_ns: op.invoke_ns,
                ok_ns: *ok_ns,
                frozen_ms: *frozen_ms,
            }),
            _ => None,
        })
        .collect();
    out.sort_by_key(|s| (s.ok_ns, s.shard));
    out
}

/// One finished move of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub shard: u32,
    pub from: String,
    pub to: String,
    pub invoke_ns: u64,
    pub ok_ns: u64,
    pub frozen_ms: u64,
}
