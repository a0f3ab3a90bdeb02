//! [`NoNet`]: a `Net` port with no network, for components that never touch it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use async_trait::async_trait;

use crate::env::{Connection, Listener, Net, NetError};

/// Every `listen` and `connect` fails (`Bind` / `Unreachable`). Cluster and account logic
/// talk to ZooKeeper and Redis through their own ports and need no network.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNet;

#[async_trait]
impl Net for NoNet {
    async fn listen(&self, addr: SocketAddr, _max_frame: usize) -> Result<Box<dyn Listener>, NetError> {
        Err(NetError::Bind { addr: addr.to_string(), reason: "no network in this test".into() })
    }
    async fn connect(&self, addr: SocketAddr, _max_frame: usize) -> Result<Connection, NetError> {
        Err(NetError::Unreachable(format!("{addr}: no network in this test")))
    }
    fn local_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}
