//! Who a server is, as the rest of the cluster sees it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Identity of one server *process*: a fresh random UUID (from the `Rand` port) every time a
/// server starts. A restarted server is therefore a new peer, which is what lets RPC fence
/// frames addressed to, or sent by, a previous incarnation (iFun's `Rpc::PeerId`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub uuid::Uuid);

impl PeerId {
    pub fn new_random(rand: &dyn crate::env::Rand) -> Self {
        use crate::env::RandExt;
        PeerId(rand.uuid())
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        uuid::Uuid::from_slice(b).ok().map(PeerId)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form keeps traces readable; the full id is in `Display`.
        write!(f, "peer:{}", &self.0.simple().to_string()[..8])
    }
}

impl FromStr for PeerId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(PeerId)
    }
}

/// What a server publishes about itself in its membership znode
/// (`/{app_id}/servers/{peer_id}`, ephemeral, JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: PeerId,
    /// Human name of the server (e.g. `game-1`), for logs.
    pub name: String,
    /// Flavor the server runs (`game`, `pvp`, ...), if any.
    pub flavor: Option<String>,
    /// Tags from the manifest (`rpc_tags`) and from code (`add_tag`).
    pub tags: BTreeSet<String>,
    /// Where its RPC service listens.
    pub rpc_addr: SocketAddr,
    /// Address clients use to reach it.
    pub external_ip: IpAddr,
    /// Client-facing ports by protocol name (`tcp_json`, `tcp_protobuf`, `websocket_json`, ...).
    pub external_ports: BTreeMap<String, u16>,
    /// Shared status (`Rpc::SetStatus`), `null` until set.
    pub status: serde_json::Value,
    /// The zxid that created the membership znode (not published: read from its `Stat`;
    /// 0 for this server's own entry). Orders registrations: when a restarted server's new
    /// incarnation and its old, not yet expired one are both listed under the same name,
    /// the larger `registered_zxid` is the newer.
    #[serde(skip)]
    pub registered_zxid: i64,
}

/// The client port a server is reached on when it has no port of the client's own transport:
/// every server of the reference game listens for TCP JSON.
pub const CLIENT_PORT_FALLBACK: &str = "tcp_json";

impl PeerInfo {
    /// Where a client of the transport named `port_name` reaches this server: its
    /// `external_ip` and its port of that name, else its [`CLIENT_PORT_FALLBACK`] port;
    /// `None` if it publishes neither. What redirects, `cs_enter_pvp` and the login server's
    /// gate list hand to clients.
    pub fn client_addr(&self, port_name: &str) -> Option<SocketAddr> {
        let ports = &self.external_ports;
        let port = ports.get(port_name).or_else(|| ports.get(CLIENT_PORT_FALLBACK))?;
        Some(SocketAddr::new(self.external_ip, *port))
    }
}

/// Resolves peers to RPC addresses; the cluster view implements it, tests may use a map.
pub trait PeerDirectory: Send + Sync {
    /// The RPC address of `peer`, if it is a known live member.
    fn rpc_addr(&self, peer: PeerId) -> Option<SocketAddr>;
}

impl PeerDirectory for BTreeMap<PeerId, SocketAddr> {
    fn rpc_addr(&self, peer: PeerId) -> Option<SocketAddr> {
        self.get(&peer).copied()
    }
}

impl<T: PeerDirectory + ?Sized> PeerDirectory for std::sync::Arc<T> {
    fn rpc_addr(&self, peer: PeerId) -> Option<SocketAddr> {
        (**self).rpc_addr(peer)
    }
}

impl<T: PeerDirectory> PeerDirectory for std::sync::Mutex<T> {
    fn rpc_addr(&self, peer: PeerId) -> Option<SocketAddr> {
        self.lock().ok().and_then(|g| g.rpc_addr(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::view::tests::info;

    #[test]
    fn a_client_gets_the_port_of_its_transport_else_the_tcp_json_port() {
        let mut i = info(3, &["gate"], serde_json::Value::Null);
        i.external_ports.insert("websocket_json".into(), 8032);
        let at = |port| Some(SocketAddr::new("10.0.1.3".parse().unwrap(), port));
        assert_eq!(i.client_addr("websocket_json"), at(8032));
        assert_eq!(i.client_addr("tcp_protobuf"), at(8012), "no such port: the fallback");
        i.external_ports.remove(CLIENT_PORT_FALLBACK);
        assert_eq!(i.client_addr("tcp_protobuf"), None);
    }
}
