//! The shard map: which instance holds each logical shard, versioned, as stored in ZooKeeper.
//!
//! One znode, `/{app_id}/shard_map`, holds the map as JSON:
//!
//! ```json
//! { "version": 3, "shards": ["db-0", "db-0", "db-1", ...],
//!   "moving": { "shard": 7, "from": "db-0", "to": "db-1", "fence": 4, "phase": "frozen" } }
//! ```
//!
//! `version` grows by one with every change of where a shard lives (a finished or rolled-back
//! move). It is also the **fence** of shard routing: each instance keeps one guard row per
//! shard it holds (table [`GUARD_TABLE`], key [`guard_key`]) whose fence is the map version
//! that put the shard there, and every routed write carries the map version it routed by in
//! a `Guard` on that row. A server routing by an older map than the shard's last change is
//! therefore refused by the instance (`Fenced`, or `NotFound` once the guard is gone), and
//! re-reads the map. `moving` records a move in progress so that any mover can resume or
//! roll it back (see [`super::mover`]).

use serde::{Deserialize, Serialize};

use super::key::ShardId;
use crate::env::TableName;

/// The table of guard rows and of the registry of sharded tables, on every instance.
pub const GUARD_TABLE: &str = "sandtable_shards";
/// Registry rows: `table/{name}` marks a table that holds sharded rows on this instance.
pub const TABLE_REGISTRY_PREFIX: &str = "table/";

/// The guard table's name.
pub fn guard_table() -> TableName {
    TableName::new(GUARD_TABLE).expect("a valid table name")
}

/// The guard row of `shard`: `shard/0007`.
pub fn guard_key(shard: ShardId) -> String {
    format!("shard/{:04}", shard.0)
}

/// The registry row of `table`: `table/{name}`.
pub fn registry_key(table: &TableName) -> String {
    format!("{TABLE_REGISTRY_PREFIX}{table}")
}

/// The znode holding the map.
pub fn map_path(app_id: &str) -> String {
    format!("/{app_id}/shard_map")
}

/// How far a move has gone; each phase's steps are idempotent, so a mover resumes by
/// re-running the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovePhase {
    /// Rows are being copied while writes continue at the source. Rolling back = forgetting.
    Copying,
    /// The source's guard is (being) removed: no writes to the shard anywhere until the map
    /// switches. Rolling back = putting the source's guard back at the move's fence.
    Frozen,
}

/// A move in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub shard: ShardId,
    pub from: String,
    pub to: String,
    /// The map version the move ends at (`version + 1` when it started): the fence of the
    /// guard rows it writes.
    pub fence: u64,
    pub phase: MovePhase,
}

/// The map as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    pub version: u64,
    /// Instance of shard `i`.
    pub shards: Vec<String>,
    #[serde(default)]
    pub moving: Option<MoveRecord>,
}

/// Why a stored map cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("shard map is not valid JSON: {0}")]
    Json(String),
    #[error("shard map has {found} shards, the configuration {expected}")]
    ShardCount { expected: usize, found: usize },
    #[error("shard map puts shard {shard} on unknown instance {instance:?}")]
    UnknownInstance { shard: u32, instance: String },
    #[error("shard map move record is inconsistent: {0}")]
    BadMove(String),
}

impl ShardMap {
    /// The first map: version 1, the configured layout, no move.
    pub fn initial(shards: Vec<String>) -> ShardMap {
        ShardMap { version: 1, shards, moving: None }
    }

    /// The instance of `shard`.
    pub fn instance_of(&self, shard: ShardId) -> &str {
        &self.shards[shard.0 as usize]
    }

    /// True if writes to `shard` are refused at the moment (a move of it is frozen).
    pub fn is_frozen(&self, shard: ShardId) -> bool {
        self.moving.as_ref().is_some_and(|m| m.shard == shard && m.phase == MovePhase::Frozen)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a map serialises")
    }

    /// Decodes and checks a stored map against the configured shard count and instances.
    pub fn decode(bytes: &[u8], logical_shards: u32, instances: &[String]) -> Result<ShardMap, MapError> {
        let map: ShardMap = serde_json::from_slice(bytes).map_err(|e| MapError::Json(e.to_string()))?;
        if map.shards.len() != logical_shards as usize {
            return Err(MapError::ShardCount { expected: logical_shards as usize, found: map.shards.len() });
        }
        let known = |name: &str| instances.iter().any(|i| i == name);
        for (i, name) in map.shards.iter().enumerate() {
            if !known(name) {
                return Err(MapError::UnknownInstance { shard: i as u32, instance: name.clone() });
            }
        }
        if let Some(m) = &map.moving {
            let bad = |why: &str| Err(MapError::BadMove(why.to_string()));
            if m.shard.0 >= logical_shards {
                return bad("shard out of range");
            }
            if map.shards[m.shard.0 as usize] != m.from {
                return bad("the moving shard is not on the move's source");
            }
            if !known(&m.to) || m.to == m.from {
                return bad("the destination is unknown or the source");
            }
            if m.fence != map.version + 1 {
                return bad("the move's fence is not the next version");
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["db-0".into(), "db-1".into()]
    }

    #[test]
    fn a_map_round_trips_through_its_json() {
        let mut map = ShardMap::initial(vec!["db-0".into(), "db-1".into()]);
        map.moving = Some(MoveRecord {
            shard: ShardId(1),
            from: "db-1".into(),
            to: "db-0".into(),
            fence: 2,
            phase: MovePhase::Frozen,
        });
        let back = ShardMap::decode(&map.encode(), 2, &names()).unwrap();
        assert_eq!(back, map);
        assert!(back.is_frozen(ShardId(1)));
        assert!(!back.is_frozen(ShardId(0)));
        assert!(String::from_utf8(map.encode()).unwrap().contains("\"phase\":\"frozen\""));
    }

    #[test]
    fn a_stored_map_that_does_not_fit_the_configuration_is_refused() {
        let map = ShardMap::initial(vec!["db-0".into(), "db-9".into()]);
        assert_eq!(
            ShardMap::decode(&map.encode(), 2, &names()),
            Err(MapError::UnknownInstance { shard: 1, instance: "db-9".into() })
        );
        assert!(matches!(ShardMap::decode(&map.encode(), 3, &names()), Err(MapError::ShardCount { .. })));
        assert!(matches!(ShardMap::decode(b"{", 2, &names()), Err(MapError::Json(_))));
        let mut moving = ShardMap::initial(names());
        moving.moving = Some(MoveRecord {
            shard: ShardId(0),
            from: "db-1".into(),
            to: "db-0".into(),
            fence: 2,
            phase: MovePhase::Copying,
        });
        assert!(matches!(ShardMap::decode(&moving.encode(), 2, &names()), Err(MapError::BadMove(_))));
    }

    #[test]
    fn guard_and_registry_keys_are_fixed() {
        assert_eq!(guard_key(ShardId(7)), "shard/0007");
        assert_eq!(registry_key(&TableName::new("inventory").unwrap()), "table/inventory");
        assert_eq!(map_path("MyGame"), "/MyGame/shard_map");
    }
}
