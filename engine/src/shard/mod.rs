//! User-id sharding over SQL instances, with online shard moves (DESIGN.md §10, seed 004).
//!
//! - [`key`]: user id -> logical shard (`id % 32` for numeric ids, a fixed FNV-1a hash
//!   otherwise) and the `s0007/{user}/...` row keys that carry their shard;
//! - [`config`]: the layout as configuration (iFun's `Object` section, plus `Sharding`);
//! - [`map`]: the versioned shard map in ZooKeeper and the guard rows that fence it;
//! - [`router`]: [`ShardRouter`], which routes a user's reads and writes to the instance of
//!   the user's shard and fences every write by the map version it routed by;
//! - [`mover`]: [`move_shard`], [`resume_move`], [`rollback_move`]: moving one shard to
//!   another instance while the cluster runs (copy, freeze, final copy, switch).
//!
//! The guarantee: at every instant at most one instance accepts writes for a shard (its guard
//! row is present there and nowhere else), a server with an old map is refused by the instance
//! and re-routes, and a move loses no row, duplicates none, and keeps every row's version and
//! fence (so conditional writes and object-owner fences stay valid across the move).

pub mod config;
pub mod key;
pub mod map;
pub mod mover;
pub mod router;

#[cfg(test)]
mod tests;

pub use self::config::ShardConfig;
pub use self::key::{shard_of, ShardId, LOGICAL_SHARDS_DEFAULT};
pub use self::map::{MoveRecord, ShardMap};
pub use self::mover::{move_shard, resume_move, rollback_move, MoveOptions, MoveReport};
pub use self::router::{Route, ShardRouter};

use crate::env::{CoordError, DbError};

/// Why a sharded call or a move failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// An instance answered with an error (op indexes refer to the caller's ops).
    #[error("db instance {instance}: {error}")]
    Db { instance: String, error: DbError },
    /// ZooKeeper failed (reading or changing the map).
    #[error("shard map: {0}")]
    Coord(#[from] CoordError),
    /// The stored map does not fit the configuration.
    #[error(transparent)]
    Map(#[from] map::MapError),
    /// The shard stayed frozen (or unreachable through the map) for the whole wait.
    #[error("shard {shard} is frozen by a move; try again")]
    Frozen { shard: ShardId },
    /// A name the configuration or the `Env` does not know.
    #[error("unknown db instance {0:?}")]
    UnknownInstance(String),
    /// The call breaks a rule; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Another move is recorded; resume or roll it back first.
    #[error("a move of shard {} to {} is in progress", .0.shard, .0.to)]
    MoveInProgress(MoveRecord),
    /// A write's users are on several instances ([`ShardRouter::transact_users`]); nothing
    /// was sent.
    #[error("the users are on several db instances: {instances:?}")]
    Spread { instances: Vec<String> },
    /// The map changed under the mover (another mover, or a rollback).
    #[error("the shard map changed during the move; re-run to resume")]
    Conflict,
}

impl ShardError {
    /// An error of opening or reaching an instance whose name the error does not carry.
    pub fn from_db(error: DbError) -> ShardError {
        ShardError::Db { instance: String::new(), error }
    }

    /// True for failures of reaching something (retrying later may succeed as is).
    pub fn is_transient(&self) -> bool {
        match self {
            ShardError::Db { error, .. } => error.is_transient(),
            ShardError::Coord(e) => e.is_transient(),
            ShardError::Frozen { .. } | ShardError::Conflict => true,
            _ => false,
        }
    }

    /// True if a write may have been applied despite the error.
    pub fn maybe_applied(&self) -> bool {
        matches!(self, ShardError::Db { error, .. } if error.maybe_applied())
    }
}
