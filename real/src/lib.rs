//! Sandtable's real backend: the engine's ports on tokio, the OS clock and randomness, and
//! real TCP. (Real ZooKeeper and Redis clients, the server binary and the admin API arrive
//! with issue 5; this crate never depends on madsim.)
//!
//! # Layout
//! - [`adapters`]: `Clock`, `Rand`, `Spawn`, `Net` on tokio.

pub mod adapters;
