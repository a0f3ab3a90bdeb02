//! Sandtable's real backend: the engine's ports on tokio, the OS clock and randomness, real
//! TCP, and real ZooKeeper and Redis clients. This crate never depends on madsim.
//!
//! # Layout
//! - [`adapters`]: `Clock`, `Rand`, `Spawn`, `Net` on tokio; `CoordConnector`/`Coord` on
//!   ZooKeeper ([`adapters::ZkConnector`]); `Kv` on Redis ([`adapters::RedisKv`]).
//! - [`env`]: an engine `Env` on those adapters (optionally measured into a metrics registry).
//! - [`admin`]: the admin HTTP API (iFun's `ApiService`): health, iFun's ZooKeeper latency
//!   profile, Prometheus metrics.
//! - [`services`]: private `redis-server` and ZooKeeper processes for hermetic tests.
//!   (`scripts/services.sh` installs the Debian packages and runs a long-lived local pair.)

pub mod adapters;
pub mod admin;
pub mod env;
pub mod services;
