//! The real backend's client-port listeners: TCP JSON and TCP protobuf on [`TokioNet`],
//! WebSocket JSON on [`WebSocketListener`].

use std::net::{IpAddr, Ipv4Addr};

use async_trait::async_trait;
use engine::env::{Listener, Net};
use engine::session::{ClientListeners, SessionConfig, SessionError, Transport};

use super::net::TokioNet;
use super::ws::{WebSocketListener, WsOptions};

/// [`ClientListeners`] for every transport the engine has, on real sockets.
#[derive(Debug, Clone)]
pub struct RealClientListeners {
    net: TokioNet,
    ws: WsOptions,
}

impl Default for RealClientListeners {
    fn default() -> Self {
        RealClientListeners::new(WsOptions::default())
    }
}

impl RealClientListeners {
    /// TCP ports on tokio TCP, WebSocket ports with `ws`.
    pub fn new(ws: WsOptions) -> Self {
        // The Net port's `local_ip` is not used for listening: any value will do.
        RealClientListeners { net: TokioNet::new(IpAddr::V4(Ipv4Addr::LOCALHOST)), ws }
    }
}

#[async_trait]
impl ClientListeners for RealClientListeners {
    async fn listen(&self, cfg: &SessionConfig) -> Result<Box<dyn Listener>, SessionError> {
        match cfg.transport {
            Transport::TcpJson | Transport::TcpProtobuf => {
                self.net.listen(cfg.listen, cfg.max_frame_bytes).await.map_err(SessionError::Listen)
            }
            Transport::WebSocketJson => {
                let l = WebSocketListener::bind(cfg.listen, cfg.max_frame_bytes, self.ws)
                    .await
                    .map_err(SessionError::Listen)?;
                Ok(Box::new(l))
            }
        }
    }
}
