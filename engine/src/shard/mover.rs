//! Moving one logical shard to another instance while the cluster runs.
//!
//! Phases, recorded in the map's `moving` field so that any mover can resume or roll back
//! after a crash (every step of a phase is idempotent):
//!
//! 1. **Record** (`moving = {shard, from, to, fence: version + 1, phase: copying}`).
//! 2. **Copying**: passes of `export_prefix` over every registered table at the source and
//!    `Restore` at the destination, while writes continue at the source, until a pass copies
//!    at most [`MoveOptions::quiet_rows`] rows (or [`MoveOptions::live_passes_max`] passes).
//!    `Restore` is a max-merge by version, so a pass never undoes a newer copy.
//! 3. **Frozen** (recorded first): the source's guard row is deleted at the move's fence.
//!    From here no instance accepts writes for the shard; the freeze has begun. A final pass
//!    copies what changed since the last one (the source is now immutable for the shard).
//! 4. **Switch**: the destination's guard row is put at the fence, then the map is replaced by
//!    `version = fence`, the shard on the destination, no move. Servers learn it by their
//!    watch (or when the source refuses them) and retry there. The freeze has ended.
//!
//! The freeze lasts one final pass, two single-row transactions and one ZooKeeper write; the
//! final pass is short because the live passes left little to copy. Rows left at the source
//! stay there (unreachable: the guard is gone); copies at an aborted destination are harmless
//! (a later move's `Restore` keeps whichever version is newer).
//!
//! **Rollback**: from `copying`, forget the record; from `frozen`, put the source's guard back
//! at the fence, delete the destination's, and publish `version = fence` with the shard where
//! it was. Either way the shard ends on exactly one instance.

use std::time::Duration;

use bytes::Bytes;
use tracing::info;

use super::key::{shard_prefix, ShardId};
use super::map::{guard_key, guard_table, map_path, MovePhase, MoveRecord, ShardMap, TABLE_REGISTRY_PREFIX};
use super::router::{read_map, ShardRouter};
use super::ShardError;
use crate::env::{
    CoordError, Db, DbError, Expect, Stat, TableName, WriteOp, WriteResult, DB_SCAN_LIMIT_MAX,
    DB_TRANSACT_OPS_MAX,
};

/// How a move copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveOptions {
    /// A live pass that copies at most this many rows ends the live copying.
    pub quiet_rows: u64,
    /// Most live passes before freezing anyway.
    pub live_passes_max: u32,
    /// Planted bug `stale-map-write`, **for the simulator only**: the source's guard is never
    /// removed, so the old instance keeps accepting writes after the switch.
    pub bug_keep_source_guard: bool,
}

impl Default for MoveOptions {
    fn default() -> Self {
        MoveOptions { quiet_rows: 16, live_passes_max: 4, bug_keep_source_guard: false }
    }
}

/// What a finished (or rolled back) move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveReport {
    pub shard: ShardId,
    pub from: String,
    pub to: String,
    /// The map version published at the end.
    pub version: u64,
    /// Copy passes run (live ones and the final one) by this call.
    pub passes: u32,
    /// Row states this call installed at the destination.
    pub rows_copied: u64,
    /// From the source's guard removal to the new map's publication, as this mover saw it
    /// (zero if this call did not run the frozen phase).
    pub frozen_for: Duration,
    pub rolled_back: bool,
}

/// Moves `shard` to instance `to`. Resumes the same move if it is already recorded.
pub async fn move_shard(
    router: &ShardRouter,
    shard: ShardId,
    to: &str,
    opts: MoveOptions,
) -> Result<MoveReport, ShardError> {
    if shard.0 >= router.config().logical_shards {
        return Err(ShardError::InvalidArgument(format!("shard {shard} does not exist")));
    }
    router.instance(to)?;
    let (map, stat) = load(router).await?;
    let record = match &map.moving {
        Some(m) if m.shard == shard && m.to == to => m.clone(),
        Some(m) => return Err(ShardError::MoveInProgress(m.clone())),
        None if map.instance_of(shard) == to => {
            return Err(ShardError::InvalidArgument(format!("shard {shard} is already on {to}")));
        }
        None => {
            let record = MoveRecord {
                shard,
                from: map.instance_of(shard).to_string(),
                to: to.to_string(),
                fence: map.version + 1,
                phase: MovePhase::Copying,
            };
            let next = ShardMap { moving: Some(record.clone()), ..(*map).clone() };
            cas(router, stat, &next).await?;
            info!(%shard, from = %record.from, to, fence = record.fence, "shard move recorded");
            record
        }
    };
    run(router, record, opts).await
}

/// Finishes the recorded move, if any.
pub async fn resume_move(router: &ShardRouter, opts: MoveOptions) -> Result<Option<MoveReport>, ShardError> {
    let (map, _) = load(router).await?;
    match map.moving.clone() {
        None => Ok(None),
        Some(record) => run(router, record, opts).await.map(Some),
    }
}

/// Undoes the recorded move, if any: the shard stays where it was.
pub async fn rollback_move(router: &ShardRouter) -> Result<Option<MoveReport>, ShardError> {
    let (map, stat) = load(router).await?;
    let Some(record) = map.moving.clone() else { return Ok(None) };
    let next = match record.phase {
        MovePhase::Copying => ShardMap { moving: None, ..(*map).clone() },
        MovePhase::Frozen => {
            let (from, to) = (router.instance(&record.from)?, router.instance(&record.to)?);
            put_guard(from.as_ref(), &record).await?;
            delete_guard(to.as_ref(), &record).await?;
            ShardMap { version: record.fence, shards: map.shards.clone(), moving: None }
        }
    };
    cas(router, stat, &next).await?;
    info!(shard = %record.shard, version = next.version, "shard move rolled back");
    Ok(Some(MoveReport {
        shard: record.shard,
        from: record.from,
        to: record.to,
        version: next.version,
        passes: 0,
        rows_copied: 0,
        frozen_for: Duration::ZERO,
        rolled_back: true,
    }))
}

/// Runs `record` from its phase to the switch.
async fn run(
    router: &ShardRouter,
    mut record: MoveRecord,
    opts: MoveOptions,
) -> Result<MoveReport, ShardError> {
    let clock = router.env().clock.clone();
    let (from, to) = (router.instance(&record.from)?, router.instance(&record.to)?);
    let mut report = MoveReport {
        shard: record.shard,
        from: record.from.clone(),
        to: record.to.clone(),
        version: record.fence,
        passes: 0,
        rows_copied: 0,
        frozen_for: Duration::ZERO,
        rolled_back: false,
    };
    if record.phase == MovePhase::Copying {
        loop {
            let copied = copy_pass(from.as_ref(), to.as_ref(), record.shard).await?;
            report.passes += 1;
            report.rows_copied += copied;
            if copied <= opts.quiet_rows || report.passes >= opts.live_passes_max {
                break;
            }
        }
        let (map, stat) = load(router).await?;
        if map.moving.as_ref() != Some(&record) {
            return Err(ShardError::Conflict);
        }
        record.phase = MovePhase::Frozen;
        cas(router, stat, &ShardMap { moving: Some(record.clone()), ..(*map).clone() }).await?;
    }
    let frozen_at = clock.now();
    if !opts.bug_keep_source_guard {
        delete_guard(from.as_ref(), &record).await?;
    }
    let copied = copy_pass(from.as_ref(), to.as_ref(), record.shard).await?;
    report.passes += 1;
    report.rows_copied += copied;
    put_guard(to.as_ref(), &record).await?;
    let (map, stat) = load(router).await?;
    if map.moving.as_ref() != Some(&record) {
        return Err(ShardError::Conflict);
    }
    let mut shards = map.shards.clone();
    shards[record.shard.0 as usize] = record.to.clone();
    cas(router, stat, &ShardMap { version: record.fence, shards, moving: None }).await?;
    report.frozen_for = clock.now().saturating_since(frozen_at);
    info!(
        shard = %record.shard, to = %record.to, version = record.fence, passes = report.passes,
        rows = report.rows_copied, frozen_ms = report.frozen_for.as_millis() as u64, "shard moved"
    );
    Ok(report)
}

/// Copies every registered table's rows of `shard` from `from` to `to`; returns how many row
/// states were newer at the source (installed at the destination).
async fn copy_pass(from: &dyn Db, to: &dyn Db, shard: ShardId) -> Result<u64, ShardError> {
    let guards = guard_table();
    let mut tables = Vec::new();
    for state in export_all(from, &guards, TABLE_REGISTRY_PREFIX).await? {
        let name = &state.key[TABLE_REGISTRY_PREFIX.len()..];
        tables.push(TableName::new(name).map_err(|e| db_err(from, e))?);
    }
    let mut copied = 0;
    for table in tables {
        // Register at the destination first, so a later move from there copies it too.
        let register = WriteOp::raise_fence(&guards, super::map::registry_key(&table), 0);
        to.transact(vec![register]).await.map_err(|e| db_err(to, e))?;
        let prefix = shard_prefix(shard);
        let mut after: Option<String> = None;
        loop {
            let page = from
                .export_prefix(&table, &prefix, after.as_deref(), DB_SCAN_LIMIT_MAX)
                .await
                .map_err(|e| db_err(from, e))?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            let full = page.len() == DB_SCAN_LIMIT_MAX;
            let ops: Vec<WriteOp> = page.into_iter().map(|s| WriteOp::restore(&table, s)).collect();
            for chunk in ops.chunks(DB_TRANSACT_OPS_MAX) {
                let results = to.transact(chunk.to_vec()).await.map_err(|e| db_err(to, e))?;
                copied +=
                    results.iter().filter(|r| matches!(r, WriteResult::Restore { applied: true })).count()
                        as u64;
            }
            if !full {
                break;
            }
        }
    }
    Ok(copied)
}

/// Every state under `prefix`, paged.
async fn export_all(
    db: &dyn Db,
    table: &TableName,
    prefix: &str,
) -> Result<Vec<crate::env::RowState>, ShardError> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map(|s: &crate::env::RowState| s.key.clone());
        let page = db
            .export_prefix(table, prefix, after.as_deref(), DB_SCAN_LIMIT_MAX)
            .await
            .map_err(|e| db_err(db, e))?;
        let n = page.len();
        all.extend(page);
        if n < DB_SCAN_LIMIT_MAX {
            return Ok(all);
        }
    }
}

async fn put_guard(db: &dyn Db, record: &MoveRecord) -> Result<(), ShardError> {
    let value = Bytes::from(db.name().to_string());
    let op = WriteOp::put(&guard_table(), guard_key(record.shard), value, Expect::Any, record.fence);
    db.transact(vec![op]).await.map(drop).map_err(|e| db_err(db, e))
}

async fn delete_guard(db: &dyn Db, record: &MoveRecord) -> Result<(), ShardError> {
    let op = WriteOp::delete(&guard_table(), guard_key(record.shard), Expect::Any, record.fence);
    db.transact(vec![op]).await.map(drop).map_err(|e| db_err(db, e))
}

fn db_err(db: &dyn Db, error: DbError) -> ShardError {
    ShardError::Db { instance: db.name().to_string(), error }
}

async fn load(router: &ShardRouter) -> Result<(std::sync::Arc<ShardMap>, Stat), ShardError> {
    let coord = router.coord();
    let (map, stat) = read_map(coord.as_ref(), &map_path(router.app_id()), router.config()).await?;
    Ok((router.offer(map, stat), stat))
}

/// Replaces the map read with `stat` by `next`. A lost answer is settled by re-reading: if
/// `next` is stored the write went through.
async fn cas(router: &ShardRouter, stat: Stat, next: &ShardMap) -> Result<(), ShardError> {
    let coord = router.coord();
    let path = map_path(router.app_id());
    match coord.set_data(&path, Bytes::from(next.encode()), Some(stat.version)).await {
        Ok(new_stat) => {
            router.offer(next.clone(), new_stat);
            Ok(())
        }
        Err(CoordError::BadVersion) => Err(ShardError::Conflict),
        Err(CoordError::ConnectionLoss { maybe_applied: true }) => {
            let (stored, _) = load(router).await?;
            if *stored == *next {
                Ok(())
            } else {
                Err(ShardError::Conflict)
            }
        }
        Err(e) => Err(e.into()),
    }
}
