//! The reference game as a real server process: configuration from the manifest
//! ([`config`]), start with retries while ZooKeeper or Redis are unreachable, the admin API,
//! and a graceful stop (stop accepting, log accounts out, drain sessions, deregister).

pub mod config;
pub mod sql;

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::env::Env;
use engine::metrics::{HealthStatus, Metrics};
use engine::shard::{ShardError, ShardRouter};
use game::{GameError, GameServer};
use tracing::{info, warn};

use self::config::ServerPlan;
use crate::admin::{self, Admin};
use crate::env::real_env_with_metrics;

/// Pause between start attempts while a service is unreachable.
pub const START_RETRY: Duration = Duration::from_secs(1);

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("redis: {0}")]
    Redis(#[from] engine::env::KvError),
    #[error("game server: {0}")]
    Game(#[from] GameError),
    #[error("admin API: {0}")]
    Admin(String),
    #[error("SQL: {0}")]
    Sql(String),
}

/// What the health endpoint reports about the game server itself.
const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const STOPPING: u8 = 2;

/// Runs `plan` until `shutdown` completes, then stops gracefully. The admin API comes up
/// first (health says `starting` until the game server runs). Start failures caused by
/// unreachable services are retried every [`START_RETRY`] (a server started before its
/// ZooKeeper or Redis comes up once they do); configuration errors are returned at once.
pub async fn run(plan: ServerPlan, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let (env, metrics): (Env, Metrics) = real_env_with_metrics(&plan.env)?;
    let state = Arc::new(AtomicU8::new(STARTING));
    let admin = {
        let state = state.clone();
        Admin::from_config(metrics.clone(), &plan.api).health_check("game", move || {
            match state.load(Ordering::SeqCst) {
                RUNNING => HealthStatus::Ok,
                STARTING => HealthStatus::Unhealthy("starting: waiting for ZooKeeper/Redis".into()),
                _ => HealthStatus::Unhealthy("shutting down".into()),
            }
        })
    };
    let admin = admin::serve(plan.api.listen_addr(), admin)
        .await
        .map_err(|e| ServerError::Admin(format!("cannot listen on {}: {e}", plan.api.listen_addr())))?;
    info!(addr = %admin.local_addr(), "admin API listening");
    let mut game = plan.game.clone();
    game.rpc.metrics = Some(metrics.clone());
    game.metrics = Some(metrics.clone());

    let mut shutdown = std::pin::pin!(shutdown);
    // SQL first: the instances (the embedded SQLite files are created here) and the shard map
    // (stored from the manifest's layout by the cluster's first server).
    let (env, router) = match &plan.sql {
        None => (env, None),
        Some(cfg) => {
            let started = loop {
                let attempt = async {
                    let env = sql::env_with_sql(env.clone(), cfg).await.map_err(ShardError::from_db)?;
                    let session = plan.game.cluster.session;
                    let router =
                        ShardRouter::start(env.clone(), &plan.manifest.app_info.app_id, cfg.clone(), session)
                            .await?;
                    Ok::<_, ShardError>((env, router))
                };
                tokio::select! {
                    r = attempt => match r {
                        Ok(ok) => break Some(ok),
                        Err(e) if e.is_transient() => warn!(error = %e, "SQL start failed; retrying in {START_RETRY:?}"),
                        Err(e) => {
                            admin.shutdown().await;
                            return Err(ServerError::Sql(e.to_string()));
                        }
                    },
                    () = &mut shutdown => break None,
                }
                tokio::select! {
                    () = tokio::time::sleep(START_RETRY) => {}
                    () = &mut shutdown => break None,
                }
            };
            let Some((env, router)) = started else {
                info!("stopped before the server started");
                admin.shutdown().await;
                return Ok(());
            };
            info!(
                instances = cfg.instances.len(),
                version = router.map().version,
                "SQL instances open, shard map loaded"
            );
            (env, Some(router))
        }
    };
    let started = loop {
        let attempt = GameServer::start_with(env.clone(), game.clone(), plan.farm.clone());
        tokio::select! {
            r = attempt => match r {
                Ok(s) => break Some(s),
                Err(e) if retryable(&e) => {
                    warn!(error = %e, "start failed; retrying in {START_RETRY:?}");
                }
                Err(e) => {
                    admin.shutdown().await;
                    return Err(e.into());
                }
            },
            () = &mut shutdown => break None,
        }
        tokio::select! {
            () = tokio::time::sleep(START_RETRY) => {}
            () = &mut shutdown => break None,
        }
    };
    let Some(server) = started else {
        info!("stopped before the server started");
        admin.shutdown().await;
        return Ok(());
    };
    state.store(RUNNING, Ordering::SeqCst);
    let ports: Vec<String> =
        server.sessions().local_addrs().iter().map(|(t, a)| format!("{}={a}", t.name())).collect();
    info!(name = %plan.name, flavor = %plan.flavor, id = %server.cluster().id(), ports = %ports.join(" "), "server started");
    shutdown.await;
    state.store(STOPPING, Ordering::SeqCst);
    info!("shutting down: no new clients, logging accounts out, deregistering");
    server.stop().await;
    if let Some(router) = router {
        router.stop();
    }
    admin.shutdown().await;
    info!("stopped");
    Ok(())
}

/// Whether a start failure may go away by itself (a service down or slow), rather than
/// being a configuration error that retrying cannot fix.
fn retryable(e: &GameError) -> bool {
    use engine::account::AccountError;
    use engine::session::SessionError;
    use engine::storage::StorageError;
    if let GameError::Shard(s) = e {
        return s.is_transient();
    }
    !matches!(
        e,
        GameError::Storage(StorageError::Disabled | StorageError::InvalidConfig(_))
            | GameError::Session(SessionError::Config(_))
            | GameError::Account(AccountError::Config(_))
            | GameError::Objects(engine::orm::OrmError::InvalidArgument(_))
    )
}
