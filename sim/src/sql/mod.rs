//! Simulated SQL instances and their `Db` client.
//!
//! - [`serve`] runs one SQL instance as a madsim node's main task: the data
//!   ([`service::Instance`], the `Db` port's reference semantics) behind a listener on the
//!   simulated network, with an optional commit latency ([`SqlOptions`]).
//! - [`SimDb`] implements the engine's [`Db`](engine::env::Db) port against one node: one
//!   pipelined connection, lazy (re)connection, typed timeouts and connection losses.
//! - [`SqlStore`] holds an instance's committed data outside the node, so it survives a kill
//!   and restart (a SQL server's durable storage).
//!
//! Instance `i` of a simulation is the node `sql-{i}` at `10.0.3.{i+1}:3306`
//! ([`sql_node_name`], [`sql_addr`]); [`start_sql`] starts it and [`sql_directory`] builds
//! a node's [`DbInstances`] with a client of each. What is and is not modelled is listed in
//! [`service`].

pub mod client;
pub mod proto;
pub mod scenario;
pub mod server;
pub use engine::testing::sql_service as service;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use engine::env::{Clock, DbInstances, Net, Spawn};

pub use self::client::SimDb;
pub use self::server::{serve, SqlOptions, SqlStore};

use crate::adapters::ClockControl;

/// The port every simulated SQL node listens on (MariaDB's).
pub const SQL_PORT: u16 = 3306;
/// Most SQL instances one simulation can address (`10.0.3.1` to `10.0.3.254`).
pub const SQL_INSTANCES_MAX: usize = 254;
/// Client-side timeout of one `Db` call (above the default commit latency by far, below the
/// RPC timeouts of callers).
pub const DB_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Trace and instance name of SQL instance `i`: `sql-{i}`.
pub fn sql_node_name(i: usize) -> String {
    format!("sql-{i}")
}

/// Address of SQL instance `i`: `10.0.3.{i+1}:3306`.
pub fn sql_addr(i: usize) -> SocketAddr {
    assert!(i < SQL_INSTANCES_MAX, "at most {SQL_INSTANCES_MAX} SQL instances");
    let host = u8::try_from(i + 1).expect("checked above");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 3, host)), SQL_PORT)
}

/// A started SQL node: its madsim id (to kill, restart, pause or partition it) and its
/// durable store (to inspect committed data).
#[derive(Debug, Clone)]
pub struct SqlNode {
    pub id: madsim::task::NodeId,
    pub store: SqlStore,
}

/// Starts SQL instance `i` as node `sql-{i}` at [`sql_addr`]`(i)`, with a fresh store that
/// survives its restarts.
pub fn start_sql(
    handle: &madsim::runtime::Handle,
    clocks: &ClockControl,
    i: usize,
    opts: SqlOptions,
) -> SqlNode {
    let store = SqlStore::new();
    let (name, addr) = (sql_node_name(i), sql_addr(i));
    let node_store = store.clone();
    let clocks = clocks.clone();
    let id = handle
        .create_node()
        .name(&name)
        .ip(addr.ip())
        .init(move || {
            let env = crate::runner::node_env(&name, addr.ip(), &clocks);
            serve(env.net, env.clock, env.spawn, addr, node_store.clone(), opts)
        })
        .build()
        .id();
    SqlNode { id, store }
}

/// A directory with a client of each of SQL instances `0..count`, as seen from the node whose
/// ports are `net`, `clock` and `spawn`.
pub fn sql_directory(
    net: Arc<dyn Net>,
    clock: Arc<dyn Clock>,
    spawn: Arc<dyn Spawn>,
    count: usize,
) -> DbInstances {
    (0..count).fold(DbInstances::empty(), |dir, i| {
        let db = SimDb::new(
            sql_node_name(i),
            net.clone(),
            clock.clone(),
            spawn.clone(),
            sql_addr(i),
            DB_CALL_TIMEOUT,
        );
        dir.with(Arc::new(db)).expect("instance names are distinct")
    })
}
