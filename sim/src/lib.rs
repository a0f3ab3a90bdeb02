//! Sandtable's simulator: madsim adapters for every engine port, simulated ZooKeeper, Redis
//! and SQL services, fault injection, run traces and the chaos runner.
//!
//! # Layout
//! - [`adapters`]: `Clock` (with per-node skew, jumps and drift), `Rand`, `Spawn`, `Net` on madsim.
//! - [`zk`]: the simulated ZooKeeper service and its `Coord` client.
//! - [`redis`]: the simulated Redis service and its `Kv` client.
//! - [`sql`]: simulated SQL instances and their `Db` client.
//! - [`faults`]: applies a scenario's fault plan to the running simulation.
//! - [`trace`]: per-node, simulated-time trace lines and the trace hash.
//! - [`chart`]: a picture of one run as a self-contained HTML page (`replay --chart`).
//! - [`runner`]: one seed of one scenario, start to verdict.
//! - [`verdict`]: how a seed ended, and the exit code of many.
//! - [`shrink`]: minimises the fault plan of a failing seed.
//! - [`sweep`]: many seeds, in worker subprocesses, with a progress bar and a report table.
//! - [`testkit`]: shared harness for madsim tests of engine modules.
//! - [`bench`]: simulator throughput against a raw madsim baseline.

pub mod adapters;
pub mod bench;
pub mod chart;
pub mod faults;
pub mod redis;
pub mod runner;
pub mod shrink;
pub mod sql;
pub mod sweep;
pub mod testkit;
pub mod trace;
pub mod verdict;
pub mod zk;
