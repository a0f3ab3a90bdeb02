//! Sandtable's scenarios: backend-agnostic workloads, fault plans, histories and invariant
//! checkers. Depends on `engine` only; the `sim` runner and (later) the real-cluster runner
//! drive the same scenarios.
//!
//! # Layout
//! - [`history`]: invoke/ok/fail/info operation records with true simulated time.
//! - [`checker`]: the checker framework and the per-key linearizability checker.

pub mod checker;
pub mod history;
