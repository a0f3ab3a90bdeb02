//! Simulated ZooKeeper: a service node on the simulated network ([`serve`]) and the
//! `Coord` port implementation that talks to it ([`SimCoordConnector`]).
//!
//! - [`proto`]: wire messages (bincode in length-delimited frames);
//! - [`service`]: the data tree, sessions and watches (pure; see its fault model);
//! - [`server`]: the network wrapper run as a madsim node's main task;
//! - [`client`]: sessions, heartbeats, reconnects and watch re-registration.

pub mod client;
pub mod proto;
pub mod server;
/// The ZooKeeper model itself lives in `engine::testing`, shared with the engine's unit tests.
pub use engine::testing::zk_service as service;

#[cfg(test)]
mod tests;

pub use self::client::{SimCoordConnector, ZkClientEnv};
pub use self::server::{serve, ZkOptions, ZkStore};
