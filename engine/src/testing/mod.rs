//! Deterministic, I/O-free test support for engine components (behind `cfg(test)` or the
//! `testing` feature): drive account, cluster and other stateful logic in unit tests the way
//! quinn's test pair drives a connection, stepping time from deadline to deadline.
//!
//! | piece | what it is |
//! |---|---|
//! | [`ManualClock`] | the `Clock` port; time moves only when the test moves it; `next_deadline()` |
//! | [`Executor`] | the `Spawn` port; a single-threaded FIFO executor run by `run_until_stalled()` |
//! | [`SeedRand`] | the `Rand` port; seeded splitmix64 |
//! | [`FakeZk`] / [`FakeCoord`] | the `CoordConnector` / `Coord` ports in memory, on [`zk_service`], with test-driven faults |
//! | [`FakeKv`] | the `Kv` port in memory, on [`redis_service`], with test-driven faults |
//! | [`FakeDb`] | one SQL instance (the `Db` port) in memory, on [`sql_service`], with test-driven faults |
//! | [`NoNet`] | a `Net` port where nobody reaches anybody (listeners never accept) |
//! | [`Harness`] | all of the above behind one [`Env`](crate::env::Env) per node: `run_until_stalled`, `advance_to_next_deadline`, `step`, `block_on` |
//! | [`CountingWaker`] | a waker that counts its wake-ups (who wakes whom) |
//!
//! [`zk_service`], [`redis_service`] and [`sql_service`] are the project's only ZooKeeper,
//! Redis and SQL models:
//! the simulator (`sim`, which enables this module's feature) serves the same state machines
//! over the simulated network, so a unit test and a chaos run agree on the services'
//! semantics, and both are held to the real services by the conformance suite.
//!
//! (Not compiled as a doctest: doctests build the crate without `cfg(test)` or the feature.)
//!
//! ```ignore
//! # use std::time::Duration;
//! use engine::env::Clock;
//! use engine::testing::Harness;
//!
//! let h = Harness::new(7);
//! let env = h.env("game-1");
//! let clock = env.clock.clone();
//! let slept = h.block_on(async move {
//!     let start = clock.now();
//!     clock.sleep(Duration::from_secs(3)).await;
//!     clock.now().saturating_since(start)
//! });
//! assert_eq!(slept, Duration::from_secs(3));
//! ```

mod clock;
mod coord;
mod db;
mod exec;
mod harness;
mod kv;
mod net;
mod rand;
pub mod redis_service;
pub mod sql_service;
mod waker;
pub mod zk_service;

#[cfg(test)]
mod tests;

pub use self::clock::ManualClock;
pub use self::coord::{FakeCoord, FakeZk};
pub use self::db::FakeDb;
pub use self::exec::{Executor, POLLS_PER_RUN_MAX};
pub use self::harness::{Harness, BLOCK_ON_STEPS_MAX};
pub use self::kv::FakeKv;
pub use self::net::NoNet;
pub use self::rand::SeedRand;
pub use self::waker::CountingWaker;
