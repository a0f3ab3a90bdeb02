//! `shard_move`'s processes: writers appending to their users' log rows, and the mover.

use std::time::Duration;

use bytes::Bytes;
use engine::env::{Env, Expect, RandExt, SessionOptions, TableName, WriteOp};
use engine::shard::{
    move_shard, resume_move, rollback_move, MoveOptions, MoveReport, ShardConfig, ShardError, ShardId,
    ShardRouter,
};

use super::history::{ShardOp, ShardResult};
use super::{APP, LOGICAL_SHARDS, USERS_PER_WRITER};
use crate::history::{ProcessId, Recorder};
use crate::scenario::Phases;
use crate::workload::OpBudget;

/// The table of log rows.
pub const LOG_TABLE: &str = "logs";
/// Pause between a writer's appends, ms (drawn uniformly).
const APPEND_PAUSE_MS: std::ops::Range<u64> = 10..60;
/// Pause between the mover's moves, ms.
const MOVE_PAUSE_MS: std::ops::Range<u64> = 200..900;
/// The mover starts no move this close to the end of the run (a move takes ~0.2 s unfaulted),
/// so the run never ends with one in flight.
const MOVE_QUIET_BEFORE_END: Duration = Duration::from_secs(2);
/// Pause before retrying to start a router.
const START_RETRY: Duration = Duration::from_millis(200);

pub type Rec = Recorder<ShardOp, ShardResult>;

pub fn log_table() -> TableName {
    TableName::new(LOG_TABLE).expect("valid")
}

/// The users of writer `w`: numeric ids `w * USERS_PER_WRITER + j`, so every shard has users.
pub fn users_of(writer: usize) -> Vec<String> {
    (0..USERS_PER_WRITER).map(|j| (writer * USERS_PER_WRITER + j).to_string()).collect()
}

/// A router for this process, retried while ZooKeeper or SQL is unreachable.
pub async fn start_router(env: &Env, cfg: &ShardConfig, phases: &Phases) -> Option<ShardRouter> {
    loop {
        match ShardRouter::start(env.clone(), APP, cfg.clone(), SessionOptions::default()).await {
            Ok(r) => return Some(r),
            Err(e) => tracing::debug!(error = %e, "shard router start failed; retrying"),
        }
        if phases.finished() {
            return None;
        }
        env.clock.sleep(START_RETRY).await;
    }
}

/// Decodes a log row (a JSON array of ids).
pub fn decode_log(value: &[u8]) -> Vec<u64> {
    serde_json::from_slice(value).unwrap_or_default()
}

/// Appends `id` to `user`'s log: read, then write conditional on the version read.
async fn append(router: &ShardRouter, user: &str, id: u64) -> Result<ShardResult, ShardError> {
    let key = router.user_key(user, "log");
    let row = router.get(user, &log_table(), &key).await?;
    let (mut log, expect) = match row {
        Some(r) => (decode_log(&r.value), Expect::Version(r.version)),
        None => (Vec::new(), Expect::Absent),
    };
    log.push(id);
    let value = Bytes::from(serde_json::to_vec(&log).expect("ids serialise"));
    let (_, route) =
        router.transact_routed(user, vec![WriteOp::put(&log_table(), key, value, expect, 0)]).await?;
    Ok(ShardResult::Appended { instance: route.instance, map_version: route.map_version })
}

/// A writer: appends to its users' logs until the run ends or its budget is spent (one
/// operation: an append).
pub async fn writer(
    env: Env,
    cfg: ShardConfig,
    rec: Rec,
    process: ProcessId,
    index: usize,
    phases: Phases,
    budget: OpBudget,
) {
    let Some(router) = start_router(&env, &cfg, &phases).await else { return };
    let users = users_of(index);
    let mut n = 0u64;
    while !phases.finished() && budget.take() {
        let user = &users[env.rand.gen_range(0..users.len() as u64) as usize];
        n += 1;
        let id = (process << 24) | n;
        let shard = router.shard_of(user).0;
        let h = rec.invoke(process, ShardOp::Append { user: user.clone(), shard, id });
        match append(&router, user, id).await {
            Ok(r) => rec.ok(h, r),
            Err(e) if e.maybe_applied() => rec.info(h),
            Err(_) => rec.fail(h),
        }
        env.clock.sleep(Duration::from_millis(env.rand.gen_range(APPEND_PAUSE_MS))).await;
    }
    router.stop();
}

fn moved(r: MoveReport) -> ShardResult {
    ShardResult::Moved {
        shard: r.shard.0,
        from: r.from,
        to: r.to,
        version: r.version,
        frozen_ms: r.frozen_for.as_millis() as u64,
        rolled_back: r.rolled_back,
    }
}

/// The mover: moves random shards between instances; a new incarnation (after a kill)
/// first finishes or rolls back what the last one left. One operation: a new move; finishing
/// or undoing a pending one takes nothing (no move may be left unfinished), and the mover
/// stops once its budget is spent with no move pending.
pub async fn mover(
    env: Env,
    cfg: ShardConfig,
    rec: Rec,
    process: ProcessId,
    phases: Phases,
    opts: MoveOptions,
    budget: OpBudget,
) {
    let Some(router) = start_router(&env, &cfg, &phases).await else { return };
    let instances = cfg.instance_names();
    while !phases.finished() {
        env.clock.sleep(Duration::from_millis(env.rand.gen_range(MOVE_PAUSE_MS))).await;
        let map = match router.refresh().await {
            Ok(m) => m,
            Err(_) => continue,
        };
        if map.moving.is_some() {
            // After the heal always finish; during chaos sometimes undo instead.
            let undo = !phases.healed() && env.rand.gen_range(0..10) < 3;
            let op = if undo { ShardOp::Rollback } else { ShardOp::Resume };
            let h = rec.invoke(process, op);
            let r = if undo { rollback_move(&router).await } else { resume_move(&router, opts).await };
            match r {
                Ok(Some(report)) => rec.ok(h, moved(report)),
                Ok(None) => rec.ok(h, ShardResult::Nothing),
                Err(e) => definite_or_unknown(&rec, h, &e),
            }
            continue;
        }
        if phases.elapsed() + MOVE_QUIET_BEFORE_END >= phases.end_at {
            continue;
        }
        if !budget.take() {
            break;
        }
        let shard = ShardId(env.rand.gen_range(0..u64::from(LOGICAL_SHARDS)) as u32);
        let here = map.instance_of(shard).to_string();
        let others: Vec<&String> = instances.iter().filter(|i| **i != here).collect();
        let to = others[env.rand.gen_range(0..others.len() as u64) as usize].clone();
        let h = rec.invoke(process, ShardOp::Move { shard: shard.0, to: to.clone() });
        match move_shard(&router, shard, &to, opts).await {
            Ok(report) => rec.ok(h, moved(report)),
            Err(e) => definite_or_unknown(&rec, h, &e),
        }
    }
    router.stop();
}

/// A move refused before it changed anything is a failure; any other error leaves a move
/// part-way (recorded in the map, finished or undone by the next round): unknown until then.
fn definite_or_unknown(rec: &Rec, h: crate::history::OpHandle, e: &ShardError) {
    match e {
        ShardError::MoveInProgress(_) | ShardError::InvalidArgument(_) | ShardError::UnknownInstance(_) => {
            rec.fail(h)
        }
        _ => rec.info(h),
    }
}
