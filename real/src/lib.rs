//! Sandtable's real backend: the engine's ports on tokio, the OS clock and randomness, real
//! TCP, and real ZooKeeper and Redis clients. This crate never depends on madsim.
//!
//! # Layout
//! - [`adapters`]: `Clock`, `Rand`, `Spawn`, `Net` on tokio; `CoordConnector`/`Coord` on
//!   ZooKeeper ([`adapters::ZkConnector`]); `Kv` on Redis ([`adapters::RedisKv`]); the
//!   session service's client ports ([`adapters::RealClientListeners`]: TCP JSON and TCP
//!   protobuf on tokio TCP, WebSocket JSON on [`adapters::WebSocketListener`]).
//! - [`cluster`]: `real cluster run`, a scenario's workload and checkers against a live
//!   local cluster of server processes, with kill -9 and restart.
//! - [`env`]: an engine `Env` on those adapters (optionally measured into a metrics registry).
//! - [`admin`]: the admin HTTP API (iFun's `ApiService`): health, iFun's ZooKeeper latency
//!   profile, Prometheus metrics.
//! - [`bench`]: `real bench`, the engine on this backend measured against raw tokio, Redis
//!   and ZooKeeper clients in the same run.
//! - [`server`]: the reference game as a server process (`sandtable-server`): manifest,
//!   start with retries, admin API, graceful stop.
//! - [`services`]: private `redis-server` and ZooKeeper processes for hermetic tests.
//!   (`scripts/services.sh` installs the Debian packages and runs a long-lived local pair.)

pub mod adapters;
pub mod admin;
pub mod bench;
pub mod cluster;
pub mod env;
pub mod server;
pub mod services;
