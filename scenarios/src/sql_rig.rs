//! What the scenarios with SQL instances share: the shard layout over the topology's
//! instances, and the router a checker reads the final rows through after the run.

use std::time::Duration;

use engine::env::{Env, SessionOptions};
use engine::shard::{ShardConfig, ShardRouter};

use crate::checker::Report;
use crate::scenario::{Phases, Topology};

/// How long after the end of the run a checker keeps trying to start its router.
const FINAL_ROUTER_GRACE: Duration = Duration::from_secs(30);
/// Pause between attempts.
const FINAL_ROUTER_RETRY: Duration = Duration::from_millis(200);

/// `logical` shards round-robin over the topology's `instances` SQL instances (`db-0`, ...).
pub fn round_robin_shards(instances: usize, logical: u32) -> ShardConfig {
    let names: Vec<String> = (0..instances).map(Topology::sql_name).collect();
    ShardConfig::round_robin(&names, logical)
}

/// A router for reading the final rows after the run (every fault healed), retried until
/// [`FINAL_ROUTER_GRACE`] after the end; `None` (a liveness violation in `report`) if none
/// could start.
pub async fn final_router(
    env: &Env,
    app: &str,
    cfg: ShardConfig,
    phases: &Phases,
    report: &mut Report,
) -> Option<ShardRouter> {
    loop {
        match ShardRouter::start(env.clone(), app, cfg.clone(), SessionOptions::default()).await {
            Ok(r) => return Some(r),
            Err(e) => tracing::debug!(error = %e, "final read: shard router start failed; retrying"),
        }
        if phases.elapsed() > phases.end_at + FINAL_ROUTER_GRACE {
            report.liveness_violation("final_read", "no shard router could start after the run");
            return None;
        }
        env.clock.sleep(FINAL_ROUTER_RETRY).await;
    }
}
