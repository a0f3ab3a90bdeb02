//! How scenarios host the reference game (the [`game`] crate): the fixed ports and secret of
//! a scenario's game servers, the topology of the scenarios that run only game servers, and
//! [`run_server`], the server program of a scenario's game node — in the simulator and, as
//! the same program, on a live cluster (`real cluster run`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engine::account::{AccountBugs, AccountConfig};
use engine::env::Env;
use engine::gate::{GateConfig, GatewayConfig};
use engine::rpc::RpcConfig;
use engine::session::{SessionConfig, Transport};
use engine::storage::StorageConfig;
use game::{
    FarmConfig, Flavor, GameBugs, GameConfig, GameObserver, GameServer, ObjectsConfig, UnknownFlavor,
    GAME_TAG, LOG_TARGET,
};

use crate::catalogue::membership::cluster_config;
use crate::scenario::{ServerCtx, ServerSpec};

/// The client-facing JSON port of every flavor (announced as external port `tcp_json`).
pub const TCP_JSON_PORT: u16 = 8012;
/// The RPC port of every server (account messages and broadcasts travel on it).
pub const RPC_PORT: u16 = 8015;
/// The `redirection_secret` of the simulated cluster (64 hex characters).
pub const SIM_REDIRECTION_SECRET: &str = "5a4e4454414245c52d73696d756c61746f722d7265646972656374696f6e2d31";
/// The `session_key_secret` of the simulated cluster's login servers and gates (64 hex
/// characters; not the redirection secret).
pub const SIM_SESSION_KEY_SECRET: &str = "5a4e4454414245c52d73696d2d73657373696f6e2d6b65792d7365637265742d";
/// How often [`run_server`] checks whether the run has ended.
const FINISHED_POLL: Duration = Duration::from_millis(500);

/// `n` game-flavor servers `game-0`, `game-1`, ..., each tagged [`GAME_TAG`]: the topology of
/// the scenarios that run only game servers.
pub fn game_servers(n: usize) -> Vec<ServerSpec> {
    (0..n)
        .map(|i| ServerSpec {
            name: format!("game-{i}"),
            flavor: Some(Flavor::Game.to_string()),
            tags: vec![GAME_TAG.to_string()],
        })
        .collect()
}

/// How the simulator's scenarios run a game server.
#[derive(Clone, Default)]
pub struct SimGameOptions {
    pub bugs: GameBugs,
    pub account_bugs: AccountBugs,
    pub tick_period: Option<Duration>,
    pub observer: Option<Arc<dyn GameObserver>>,
    /// Overrides the account manager's `redirect_token_ttl`.
    pub redirect_token_ttl: Option<Duration>,
    /// The object store (game flavor); `None`: none, as in every scenario before
    /// `object_lending`.
    pub objects: Option<ObjectsConfig>,
    /// The farm's command queues (with `objects`); `None`: no farm, as in every scenario
    /// before `deferred_commands`.
    pub farm: Option<FarmConfig>,
    /// Gate flavor: routing settings and the gate's planted bugs (their backend-side ones
    /// apply to game servers).
    pub gateway: GatewayConfig,
    /// Overrides the ZooKeeper session timeout (default: the cluster's, 6 s).
    pub zk_session_timeout: Option<Duration>,
}

/// The session configuration of the simulated game's client port (one TCP JSON port): short
/// idle timeout so that the sessions of vanished clients (and their logins) go away quickly.
fn sim_session_config(env: &Env) -> SessionConfig {
    let mut cfg = SessionConfig::new(SocketAddr::new(env.net.local_ip(), TCP_JSON_PORT), Transport::TcpJson);
    cfg.idle_timeout = Duration::from_secs(6);
    cfg.heartbeat_interval = Some(Duration::from_secs(2));
    cfg
}

/// The configuration of one simulated server of the reference game. The spec's flavor
/// defaults to `game`; any other name than `game`, `pvp` or `login` is an error.
pub fn sim_config(ctx: &ServerCtx, opts: &SimGameOptions) -> Result<GameConfig, UnknownFlavor> {
    let env = &ctx.env;
    let flavor: Flavor = ctx.spec.flavor.as_deref().map_or(Ok(Flavor::Game), str::parse)?;
    let mut cluster = cluster_config(ctx, RPC_PORT, Default::default());
    match flavor {
        Flavor::Game => {
            cluster.tags.insert(GAME_TAG.to_string());
        }
        Flavor::Gate => {
            cluster.tags.insert(engine::gate::GATE_TAG.to_string());
        }
        Flavor::Pvp | Flavor::Login => {}
    }
    if let Some(t) = opts.zk_session_timeout {
        cluster.session.session_timeout = t;
    }
    let mut account = AccountConfig::new(cluster.app_id.clone());
    account.session = cluster.session;
    account.redirection_secret = Some(SIM_REDIRECTION_SECRET.to_string());
    account.bugs = opts.account_bugs;
    if let Some(ttl) = opts.redirect_token_ttl {
        account.redirect_token_ttl = ttl;
    }
    Ok(GameConfig {
        flavor,
        sessions: vec![sim_session_config(env)],
        session_limits: Default::default(),
        listeners: None,
        rpc: RpcConfig::new(cluster.rpc_addr),
        cluster,
        account,
        gate: GateConfig {
            session_key_secret: Some(SIM_SESSION_KEY_SECRET.to_string()),
            ..GateConfig::default()
        },
        gateway: opts.gateway.clone(),
        storage: StorageConfig::enabled(),
        bugs: opts.bugs,
        tick_period: opts.tick_period,
        observer: opts.observer.clone(),
        objects: opts.objects.clone(),
        metrics: None,
    })
}

/// Runs one simulated server of the reference game until the run ends (or the node is
/// killed), retrying the start while services are unreachable. A topology naming an unknown
/// flavor gets no server on that node (logged as an error).
pub async fn run_server(ctx: ServerCtx, opts: SimGameOptions) {
    let cfg = match sim_config(&ctx, &opts) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target: LOG_TARGET, node = %ctx.spec.name, error = %e, "no game server on this node");
            return;
        }
    };
    let server = loop {
        if ctx.phases.finished() {
            return;
        }
        match GameServer::start_with(ctx.env.clone(), cfg.clone(), opts.farm.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::info!(target: LOG_TARGET, error = %e, "game server start failed; retrying");
                ctx.env.clock.sleep(Duration::from_millis(500)).await;
            }
        }
    };
    while !ctx.phases.finished() {
        ctx.env.clock.sleep(FINISHED_POLL).await;
    }
    drop(server);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn game_only_topologies_name_game_servers_tagged_game() {
        let specs = game_servers(2);
        assert_eq!(specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["game-0", "game-1"]);
        for s in &specs {
            assert_eq!(s.flavor.as_deref().map(str::parse), Some(Ok(Flavor::Game)));
            assert_eq!(s.tags, [GAME_TAG]);
        }
    }
}
