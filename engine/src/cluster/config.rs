//! What a server says about itself when it joins: its [`ClusterConfig`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use super::error::ClusterError;
use super::peer::PeerId;
use crate::env::SessionOptions;

/// Configuration of one server's membership (iFun's `AppInfo.app_id` and `RpcService.rpc_tags`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Servers with the same `app_id` form one cluster. See [`validate_app_id`].
    pub app_id: String,
    /// Human name of this server (`game-1`), published for logs.
    pub name: String,
    /// The flavor this server runs, if any.
    pub flavor: Option<String>,
    /// Initial tags (the manifest's `rpc_tags`); code may add more with `add_tag`.
    pub tags: BTreeSet<String>,
    /// Where this server's RPC service listens (what [`PeerDirectory`] answers).
    pub rpc_addr: SocketAddr,
    /// The address clients use to reach this server.
    pub external_ip: IpAddr,
    /// Client-facing ports by protocol name.
    pub external_ports: BTreeMap<String, u16>,
    /// Session options for every ZooKeeper session this server opens. The session timeout
    /// is how long a crashed server lingers in the others' views.
    pub session: SessionOptions,
    /// This process's identity. `None` draws a fresh one from the `Rand` port at `join`.
    /// Set it when a process retries a failed `join`: a join can fail after its
    /// registration reached ZooKeeper, and the retry must not look like a second server.
    pub peer_id: Option<PeerId>,
    /// Planted bugs for checker tests; all off by default.
    pub bugs: ClusterBugs,
}

impl ClusterConfig {
    /// A configuration with no tags, no external ports and default session options.
    pub fn new(app_id: impl Into<String>, name: impl Into<String>, rpc_addr: SocketAddr) -> Self {
        ClusterConfig {
            app_id: app_id.into(),
            name: name.into(),
            flavor: None,
            tags: BTreeSet::new(),
            rpc_addr,
            external_ip: rpc_addr.ip(),
            external_ports: BTreeMap::new(),
            session: SessionOptions::default(),
            peer_id: None,
            bugs: ClusterBugs::default(),
        }
    }
}

/// Deliberately broken behaviours, so tests can prove the checkers catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterBugs {
    /// After the first reconnect or re-registration, ignore watch events and skip the
    /// re-read: the view silently freezes while claiming to be live.
    pub stale_view: bool,
}

/// Checks an `app_id` (it becomes the first segment of every znode path): the one rule
/// shared with the manifest, [`crate::env::validate_app_id`].
pub fn validate_app_id(app_id: &str) -> Result<(), ClusterError> {
    crate::env::validate_app_id(app_id).map_err(|_| ClusterError::InvalidAppId(app_id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_follow_the_manifest_rule() {
        assert!(validate_app_id("my_app").is_ok());
        for bad in ["", "a/b", "/", ".", "..", "a\0", "a b"] {
            assert_eq!(validate_app_id(bad), Err(ClusterError::InvalidAppId(bad.to_string())));
        }
    }
}
