//! Sandtable's simulator: madsim adapters for every engine port, simulated ZooKeeper and
//! Redis services, fault injection, history recording and the chaos runner.
//!
//! # Layout
//! - [`adapters`]: `Clock` (with per-node skew, jumps and drift), `Rand`, `Spawn`, `Net` on madsim.

pub mod adapters;
