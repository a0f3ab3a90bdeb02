//! The catalogue: every scenario the runners know, one module each. A scenario module
//! starts with its doc (what it exercises, its numbered invariants, its planted bugs), then
//! its constant header (`const META: ScenarioMeta`), topology and fault space, then the
//! workload and the checks. The largest, [`redirect`], [`broadcast`] and [`sql_register`], are
//! folders split into `workload`, `history` and `check` (one function per numbered rule).
//!
//! A new scenario goes here and into [`all`]; the runners find it by name through
//! [`crate::lookup`].

use std::sync::Arc;

use crate::scenario::Scenario;

pub mod broadcast;
pub mod coord_lock;
pub mod deferred_commands;
pub mod gate_route;
pub mod kv_register;
pub mod login_unique;
pub mod membership;
pub mod object_lending;
pub mod pvp_transfer;
pub mod redirect;
pub mod rpc;
pub mod shard_move;
pub mod sql_register;

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
        Arc::new(sql_register::SqlRegister),
        Arc::new(shard_move::ShardMove),
        Arc::new(object_lending::ObjectLending),
        Arc::new(deferred_commands::DeferredCommands),
        Arc::new(gate_route::GateRoute),
    ]
}
