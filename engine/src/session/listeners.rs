//! Where a session port's listener comes from: [`ClientListeners`] binds one listener per
//! port configuration, and [`NetClientListeners`] is the default on the `Net` port.
//!
//! A listener's connections carry **one client message per frame** in the port's encoding:
//! a length-prefixed TCP frame for [`Transport::TcpJson`] and [`Transport::TcpProtobuf`], one
//! text message for [`Transport::WebSocketJson`]. The `Net` port only speaks length-prefixed
//! TCP, so a real WebSocket port needs a backend listener (the real backend's
//! `RealClientListeners`); [`NetClientListeners::modelling_websocket`] serves a WebSocket
//! port on `Net` frames instead, which is how the simulator models one (a WebSocket message
//! boundary is a frame boundary; the upgrade handshake is not modelled).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::error::SessionError;
use super::{SessionConfig, Transport};
use crate::env::{Listener, Net};

/// Binds the listener of one session port (see [`SessionService::bind`](super::SessionService::bind)).
#[async_trait]
pub trait ClientListeners: Send + Sync {
    /// Binds `cfg.listen` for `cfg.transport`. The listener must bound incoming messages by
    /// `cfg.max_frame_bytes` (a larger one surfaces as `NetError::FrameTooLarge` on the
    /// connection's stream, so the session answers `_error frame_too_large`), and its
    /// connections must carry one client message per frame.
    ///
    /// Fails with [`SessionError::Listen`] if the address cannot be bound, and with
    /// [`SessionError::UnsupportedTransport`] if these listeners cannot serve the transport.
    async fn listen(&self, cfg: &SessionConfig) -> Result<Box<dyn Listener>, SessionError>;
}

/// The default [`ClientListeners`]: TCP JSON and TCP protobuf ports on the `Net` port.
/// A WebSocket JSON port is refused with [`SessionError::UnsupportedTransport`] unless built
/// with [`modelling_websocket`](Self::modelling_websocket).
#[derive(Clone)]
pub struct NetClientListeners {
    net: Arc<dyn Net>,
    websocket_on_net_frames: bool,
}

impl fmt::Debug for NetClientListeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetClientListeners")
            .field("websocket_on_net_frames", &self.websocket_on_net_frames)
            .finish_non_exhaustive()
    }
}

impl NetClientListeners {
    /// TCP JSON and TCP protobuf on `net`; no WebSocket.
    pub fn new(net: Arc<dyn Net>) -> Self {
        NetClientListeners { net, websocket_on_net_frames: false }
    }

    /// Also serves WebSocket JSON ports on `net`, one `Net` frame standing for one WebSocket
    /// text message: a model for simulations and tests, not a WebSocket server (a real
    /// WebSocket client cannot talk to it).
    pub fn modelling_websocket(net: Arc<dyn Net>) -> Self {
        NetClientListeners { net, websocket_on_net_frames: true }
    }
}

#[async_trait]
impl ClientListeners for NetClientListeners {
    async fn listen(&self, cfg: &SessionConfig) -> Result<Box<dyn Listener>, SessionError> {
        if cfg.transport == Transport::WebSocketJson && !self.websocket_on_net_frames {
            return Err(SessionError::UnsupportedTransport {
                transport: cfg.transport,
                reason: "the Net port speaks length-prefixed TCP only; a WebSocket port needs a \
                         backend WebSocket listener"
                    .into(),
            });
        }
        self.net.listen(cfg.listen, cfg.max_frame_bytes).await.map_err(SessionError::Listen)
    }
}
