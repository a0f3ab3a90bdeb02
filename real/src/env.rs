//! Building an engine [`Env`] on the real adapters: tokio for time and tasks, the OS for
//! randomness, TCP for peers, ZooKeeper and Redis for the services. The server binary, the
//! benchmarks, the live-cluster runner and the tests all build their `Env` here.

use std::net::IpAddr;
use std::sync::Arc;

use engine::env::{Env, KvError};

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
    })
}
