//! [`NoNet`]: a `Net` port with no network, for components that never talk to peers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use async_trait::async_trait;

use crate::env::{Connection, Listener, Net, NetError};

/// Nobody can reach anybody: `listen` binds a listener no connection ever arrives on, and
/// every `connect` fails with `Unreachable`. Cluster and account logic talk to ZooKeeper and
/// Redis through their own ports; an RPC service can start on it (and its calls to peers
/// fail as to an unreachable peer).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNet;

/// A listener bound to an address nobody can connect to: `accept` never returns.
struct Unreachable(SocketAddr);

#[async_trait]
impl Listener for Unreachable {
    async fn accept(&mut self) -> Result<Connection, NetError> {
        std::future::pending().await
    }
    fn local_addr(&self) -> SocketAddr {
        self.0
    }
}

#[async_trait]
impl Net for NoNet {
    async fn listen(&self, addr: SocketAddr, _max_frame: usize) -> Result<Box<dyn Listener>, NetError> {
        Ok(Box::new(Unreachable(addr)))
    }
    async fn connect(&self, addr: SocketAddr, _max_frame: usize) -> Result<Connection, NetError> {
        Err(NetError::Unreachable(format!("{addr}: no network in this test")))
    }
    fn local_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}
