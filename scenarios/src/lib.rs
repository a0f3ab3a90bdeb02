//! Sandtable's scenarios: backend-agnostic workloads, fault plans, histories and invariant
//! checkers. Depends on `engine` and on the reference game (`game`, itself on `engine` only);
//! the `sim` runner and the real-cluster runner drive the same scenarios.
//!
//! # Layout
//! - [`scenario`]: the `Scenario` trait, topology and phases.
//! - [`faults`]: seeded fault plans (chaos, then heal) and the fault space a scenario allows.
//! - [`history`]: invoke/ok/fail/info operation records with true simulated time.
//! - [`checker`]: the checker framework and the per-key linearizability checker.
//! - [`coord_lock`], [`kv_register`]: the first scenarios (coordination and KV fakes).
//! - [`membership`]: cluster membership, tags, shared status.
//! - [`rpc`]: typed RPC: replies, per-key order, at-most-once, timeouts.
//! - [`game_host`], [`game_client`], [`pvp_transfer`]: how scenarios host the reference game
//!   (the `game` crate), a wire client for workloads, and its auth-key transfer under chaos.
//! - [`acting`], [`login_unique`]: acting intervals of logins and cluster-unique, fenced login.
//! - [`redirect`], [`broadcast`]: signed client redirection; send/broadcast to accounts.
//! - [`evidence`]: what servers report for the checkers, as data (out-of-process servers).

pub mod acting;
pub mod broadcast;
pub mod checker;
pub mod coord_lock;
pub mod evidence;
pub mod faults;
pub mod game_client;
pub mod game_host;
pub mod history;
pub mod kv_register;
pub mod login_unique;
pub mod membership;
pub mod pvp_transfer;
pub mod redirect;
pub mod rpc;
pub mod scenario;
pub mod seed_rng;

use std::sync::Arc;

pub use scenario::{
    ClientCtx, Phases, PlantedBug, RedisSpec, Scenario, ScenarioRun, ServerCtx, ServerDirectory, ServerSpec,
    Topology,
};

/// Every scenario, in the order `list` shows them.
pub fn all() -> Vec<Arc<dyn Scenario>> {
    vec![
        Arc::new(coord_lock::CoordLock),
        Arc::new(kv_register::KvRegister),
        Arc::new(membership::Membership),
        Arc::new(rpc::RpcScenario),
        Arc::new(pvp_transfer::PvpTransfer),
        Arc::new(redirect::RedirectScenario),
        Arc::new(broadcast::BroadcastScenario),
        Arc::new(login_unique::LoginUnique),
    ]
}

/// Looks a scenario up by name.
pub fn by_name(name: &str) -> Option<Arc<dyn Scenario>> {
    all().into_iter().find(|s| s.name() == name)
}
