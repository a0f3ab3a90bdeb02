//! The server's SQL instances and shard map: opened from the plan's layout at start, and the
//! operator's `shard` commands (status, move, resume, rollback) run against them.

use std::path::Path;
use std::sync::Arc;

use engine::env::{DbError, DbInstances, Env, SessionOptions};
use engine::shard::{
    move_shard, resume_move, rollback_move, MoveOptions, MoveReport, ShardConfig, ShardId, ShardRouter,
};
use serde_json::{json, Value};

use crate::adapters::db::open_db;

/// `sqlite://relative/path` -> `sqlite://{data_dir}/relative/path`; other URLs unchanged.
pub fn resolve_sqlite_url(url: &str, data_dir: &Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') => format!("sqlite://{}", data_dir.join(path).display()),
        _ => url.to_string(),
    }
}

/// Opens every instance of `cfg` (creating SQLite files and every schema if missing).
pub async fn open_instances(cfg: &ShardConfig) -> Result<DbInstances, DbError> {
    let mut dir = DbInstances::empty();
    for (name, url) in &cfg.instances {
        dir = dir.with(open_db(name, url).await?)?;
    }
    Ok(dir)
}

/// `env` with the instances of `cfg` as its `Db` directory.
pub async fn env_with_sql(mut env: Env, cfg: &ShardConfig) -> Result<Env, DbError> {
    env.db = Arc::new(open_instances(cfg).await?);
    Ok(env)
}

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardCommand {
    /// Print the map.
    Status,
    /// Move a shard to an instance.
    Move { shard: u32, to: String },
    /// Finish a recorded move.
    Resume,
    /// Undo a recorded move.
    Rollback,
}

/// Runs `cmd` with a router of its own (the cluster's servers learn any change through their
/// watches) and describes the outcome as JSON.
pub async fn run_shard_command(
    env: Env,
    app_id: &str,
    cfg: &ShardConfig,
    session: SessionOptions,
    cmd: &ShardCommand,
) -> Result<Value, String> {
    let env = env_with_sql(env, cfg).await.map_err(|e| format!("opening the SQL instances: {e}"))?;
    let router =
        ShardRouter::start(env, app_id, cfg.clone(), session).await.map_err(|e| format!("shard map: {e}"))?;
    let outcome = match cmd {
        ShardCommand::Status => router.refresh().await.map(|m| json!({ "map": *m })),
        ShardCommand::Move { shard, to } => {
            move_shard(&router, ShardId(*shard), to, MoveOptions::default()).await.map(|r| report_json(&r))
        }
        ShardCommand::Resume => resume_move(&router, MoveOptions::default())
            .await
            .map(|r| r.map_or(json!({ "moving": null }), |r| report_json(&r))),
        ShardCommand::Rollback => {
            rollback_move(&router).await.map(|r| r.map_or(json!({ "moving": null }), |r| report_json(&r)))
        }
    };
    router.stop();
    outcome.map_err(|e| e.to_string())
}

fn report_json(r: &MoveReport) -> Value {
    json!({
        "shard": r.shard.0,
        "from": r.from,
        "to": r.to,
        "version": r.version,
        "passes": r.passes,
        "rows_copied": r.rows_copied,
        "frozen_ms": r.frozen_for.as_secs_f64() * 1000.0,
        "rolled_back": r.rolled_back,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_sqlite_paths_live_in_the_data_dir() {
        let dir = Path::new("/var/lib/sandtable");
        assert_eq!(
            resolve_sqlite_url("sqlite://db-0.sqlite", dir),
            "sqlite:///var/lib/sandtable/db-0.sqlite"
        );
        assert_eq!(resolve_sqlite_url("sqlite:///abs/x.db", dir), "sqlite:///abs/x.db");
        assert_eq!(resolve_sqlite_url("mysql://u:p@h:3306/d", dir), "mysql://u:p@h:3306/d");
    }
}
