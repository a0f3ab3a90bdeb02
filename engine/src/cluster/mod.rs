//! Cluster membership: iFun's `Rpc::GetPeers` / `GetPeersWithTag` / `AddTag` / `SetStatus` /
//! `GetPeerStatus` / `GetPeerExternalIp` family, over ZooKeeper (the [`Coord`] port).
//!
//! # Layout in ZooKeeper
//!
//! Servers that share an `app_id` form one cluster. Each registers one **ephemeral** znode
//!
//! ```text
//! /{app_id}/servers                  persistent, created by whoever comes first
//! /{app_id}/servers/{peer_id}        ephemeral, data = PeerInfo JSON
//!                                    {"id", "name", "flavor", "tags", "rpc_addr",
//!                                     "external_ip", "external_ports", "status"}
//! ```
//!
//! `add_tag`, `remove_tag` and `set_status` rewrite the server's own znode; every server
//! keeps a child watch on `/{app_id}/servers` and a data watch on each member znode and
//! re-arms each one-shot watch as it fires, by reading through the watch-setting calls, so
//! no change is missed. Queries are answered from that cached view and never block.
//! The view only ever contains servers whose znode was read; a member whose data is not
//! valid `PeerInfo` JSON is logged and left out.
//!
//! # Failure behaviour
//!
//! | what happens | what the view does |
//! |---|---|
//! | a server crashes | its znode vanishes one session timeout later; everyone drops it |
//! | a server restarts | it is a **new** [`PeerId`]; the old one lingers until its session expires |
//! | this server is **disconnected** from ZooKeeper | the last view is still served and [`Cluster::view_state`] says [`ViewState::Stale`]; on reconnect (same session) everything is re-read and the view is live again |
//! | this server's session **expired** (it was cut off longer than the timeout: the others have already dropped it) | a new session is opened (retrying with backoff until [`Cluster::leave`]), the znode is re-created under the **same** `PeerId` with the latest tags and status, everything is re-read |
//! | a publish meets connection loss | retried while the session lives; if the session expired, re-registration publishes the latest info |
//!
//! Being in someone's view is therefore *not* proof that a server is alive right now (it may
//! have crashed less than a session timeout ago), nor is absence proof that it is dead (it may
//! be partitioned from ZooKeeper only). Components that need exclusivity use fencing, not the
//! view.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(env: engine::env::Env) -> Result<(), engine::cluster::ClusterError> {
//! use engine::cluster::{Cluster, ClusterConfig};
//!
//! let mut cfg = ClusterConfig::new("my_app", "pvp-1", "10.0.1.1:7000".parse().unwrap());
//! cfg.tags.insert("pvp".to_string());
//! cfg.external_ports.insert("tcp_json".to_string(), 8012);
//! let cluster = Cluster::join(env, cfg).await?;
//!
//! // On a timer (iFun's UpdateServerStatus):
//! cluster.set_status(serde_json::json!({ "room_count": 3 })).await?;
//!
//! // Send a new match to the PvP server with the fewest rooms:
//! if let Some(peer) = cluster.least_loaded("pvp", "room_count", true) {
//!     let ip = cluster.peer_external_ip(peer);
//!     let ports = cluster.peer_external_ports(peer);
//!     # let _ = (ip, ports);
//! }
//! cluster.leave().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Code layout
//!
//! - `config.rs`: [`ClusterConfig`], [`ClusterBugs`], [`validate_app_id`];
//! - `membership.rs`: the public [`Cluster`] (join, publish, queries, leave);
//! - `maintainer.rs`: the background task (session events, watches, reloads) and the one
//!   registration loop used by `join` and after session expiry;
//! - `shared.rs`: the state the two share, registration, the bounded change feed
//!   ([`CHANGES_QUEUED_MAX`]);
//! - `view.rs`, `peer.rs`, `select.rs`: pure data and selection;
//! - `tests.rs`: I/O-free tests on [`crate::testing::Harness`].
//!
//! [`Coord`]: crate::env::Coord

mod config;
mod error;
mod maintainer;
mod membership;
mod peer;
pub mod select;
mod shared;
#[cfg(test)]
mod tests;
pub mod view;

/// The `tracing` target of every membership event, whichever file logs it: traces (and the
/// simulator's trace hashes) follow the component, not the file layout.
const LOG_TARGET: &str = "engine::cluster::membership";

pub use self::config::{validate_app_id, ClusterBugs, ClusterConfig};
pub use self::error::ClusterError;
pub use self::membership::Cluster;
pub use self::peer::{PeerDirectory, PeerId, PeerInfo, CLIENT_PORT_FALLBACK};
pub use self::shared::CHANGES_QUEUED_MAX;
pub use self::view::{StaleReason, ViewChange, ViewState};
