//! Building an engine [`Env`] on the real adapters: tokio for time and tasks, the OS for
//! randomness, TCP for peers, ZooKeeper and Redis for the services. The server binary, the
//! benchmarks, the live-cluster runner and the tests all build their `Env` here.

use std::net::IpAddr;
use std::sync::Arc;

use engine::env::{Env, KvError};
use engine::metrics::{instrument_env, Metrics};

use crate::adapters::{OsRand, RedisKv, RedisKvOptions, TokioClock, TokioNet, TokioSpawn, ZkConnector};

/// Where a real node finds its services.
#[derive(Debug, Clone)]
pub struct RealEnvConfig {
    /// Trace name of the node (`game-1`, ...).
    pub node: String,
    /// The IP other nodes and clients reach this node on.
    pub ip: IpAddr,
    /// ZooKeeper connect string (`host:port[,host:port...]`).
    pub zookeeper: String,
    /// Redis URL (`redis://host:port`).
    pub redis_url: String,
    pub redis: RedisKvOptions,
}

/// An `Env` on tokio, ZooKeeper and Redis. Must be called inside a tokio runtime. Connects
/// lazily: a service that is down shows up as errors on the ports, not here (servers must
/// start and recover while a service restarts). Only a malformed Redis URL fails.
pub fn real_env(cfg: &RealEnvConfig) -> Result<Env, KvError> {
    Ok(Env {
        node: Arc::from(cfg.node.as_str()),
        clock: Arc::new(TokioClock::default()),
        rand: Arc::new(OsRand),
        spawn: Arc::new(TokioSpawn),
        net: Arc::new(TokioNet::new(cfg.ip)),
        coord: Arc::new(ZkConnector::new(cfg.zookeeper.clone())),
        kv: Arc::new(RedisKv::new(&cfg.redis_url, cfg.redis)?),
        db: Arc::new(engine::env::DbInstances::empty()),
    })
}

/// [`real_env`] measured: a new [`Metrics`] registry for the node (on the `Env`'s clock),
/// with every ZooKeeper and Redis call of the `Env` recorded in it and the profile's
/// `nodes` set to the configured addresses. Hand the registry to `RpcConfig::metrics`, the
/// account manager and storage, and serve it with [`crate::admin`].
pub fn real_env_with_metrics(cfg: &RealEnvConfig) -> Result<(Env, Metrics), KvError> {
    let env = real_env(cfg)?;
    let metrics = Metrics::for_env(&env);
    metrics.set_zookeeper_nodes(cfg.zookeeper.clone());
    metrics.set_redis_nodes(redis_nodes(&cfg.redis_url));
    Ok((instrument_env(env, &metrics), metrics))
}

/// `host:port` of a Redis URL, without scheme, credentials or database (never shown a
/// password in the profile).
fn redis_nodes(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_nodes_hide_credentials() {
        assert_eq!(redis_nodes("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(redis_nodes("redis://user:secret@10.0.0.1:6380/2"), "10.0.0.1:6380");
        assert_eq!(redis_nodes("localhost:6379"), "localhost:6379");
    }
}
