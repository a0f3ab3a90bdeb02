//! Sandtable's engine: the game-server framework, written as pure logic over *ports*.
//!
//! The engine never reads a clock, draws OS randomness, spawns a thread, opens a socket or
//! names an async runtime. Everything with time, randomness, I/O or an external service
//! enters through the traits in [`env`], bundled in one [`env::Env`] value. The `sim` crate
//! implements them on madsim (deterministic, fault-injected), the `real` crate on tokio and
//! real ZooKeeper/Redis. `engine/Cargo.toml` makes this true: no tokio, no madsim.
//!
//! # Layout
//! - [`account`]: cluster-unique login on `/{app_id}/active_accounts` (iFun's `AccountManager`),
//!   fenced by a coordination lease; cross-server send/broadcast; signed single-use redirect tokens.
//! - [`cluster`]: membership of servers of one `app_id` (ephemeral znodes under
//!   `/{app_id}/servers`): peers, tags, shared JSON status, external addresses, a view that
//!   says when it is stale and survives session expiry under the same `PeerId`.
//! - [`env`]: the ports (`Clock`, `Rand`, `Spawn`, `Net`, `Coord`, `Kv`) and their typed errors.
//!   Each method's doc states the semantics both backends promise.
//! - [`gate`]: gateways (seeds 003/004): signed session keys issued by login servers and
//!   checked by gates, the gate tag and load field a login server lists gates by.
//! - [`keyname`]: the one encoding of an id (account id, shard user, object key: any UTF-8)
//!   into a ZooKeeper node name and SQL row-key segment; the identity for plain ids.
//! - [`manifest`]: the per-server JSON config (iFun's `MANIFEST.json` sections and parameter
//!   names, plus flavors), parsed into typed, validated structs.
//! - [`metrics`]: a deterministic metrics registry (counters, gauges, latency histograms,
//!   iFun's ZooKeeper latency profile), decorators that measure the `Coord` and `Kv` ports,
//!   Prometheus text and iFun's `distribution_profiling` JSON for the admin API.
//! - [`probe`]: coverage probes (`probe!("area: what happened")`): every site declared at
//!   link time, hits counted per run by the simulator, a relaxed atomic load elsewhere.
//! - [`rpc`]: typed cross-server RPC over prost messages: xids, timeouts, at-most-once
//!   execution, per-key ordering, incarnation fencing.
//! - [`session`]: client sessions (iFun's `SessionService`): the client wire protocol (TCP JSON
//!   and protobuf envelopes), handlers run in order per session, `_error` frames with stable
//!   codes, heartbeats and idle timeouts, bounded send queues, local broadcast.
//! - [`signed`]: the HMAC-SHA256 + lowercase-hex signed strings shared by redirect tokens
//!   and session keys: kind byte, length-prefixed fields, length caps, clock-skew allowance.
//! - [`storage`]: cross-server storage (iFun's `CrossServerStorage`): JSON values in Redis
//!   under random UUID keys with expiry; versioned `compare_and_write` and one-shot `take`.
//! - [`timer`]: one-shot and repeating timers on the `Clock` and `Spawn` ports (iFun's `Timer`).
//! - `testing` (only with `cfg(test)` or the `testing` feature): a manual clock, a
//!   deterministic executor, in-memory ZooKeeper and Redis (the same service models the
//!   simulator serves) and a harness that steps time, for I/O-free unit tests.

pub mod account;
pub mod cluster;
pub mod commands;
pub mod env;
pub mod gate;
pub mod keyname;
pub mod manifest;
pub mod metrics;
pub mod orm;
pub mod probe;
pub mod rpc;
pub mod session;
pub mod shard;
pub mod signed;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod timer;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
