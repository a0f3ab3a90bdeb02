//! The simulated Redis service and its client.
//!
//! - [`serve`] runs one Redis primary as a madsim node's main task: the keyspace
//!   ([`service::Keyspace`], pure Redis 7 semantics) behind a listener on the simulated network,
//!   with TTLs judged by that node's own (skewable, jumpable) wall clock.
//! - [`SimKv`] implements the engine's [`Kv`](engine::env::Kv) port against it: one pipelined
//!   connection, lazy (re)connection, typed timeouts and connection losses.
//! - [`RedisStore`] holds the dataset outside the node, so a `persistent` server keeps it across
//!   a kill and restart while a non-persistent one starts empty.
//!
//! Differences from real Redis are listed in [`service`] and on each function.

pub mod client;
pub mod proto;
pub mod server;
/// The keyspace model itself lives in `engine::testing`, shared with the engine's unit tests.
pub use engine::testing::redis_service as service;

#[cfg(test)]
mod tests;

pub use self::client::SimKv;
pub use self::server::{serve, RedisOptions, RedisStore, SWEEP_INTERVAL};
