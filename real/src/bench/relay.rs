//! The floor of any relay hop, for the `gate` bench: a raw TCP relay (tokio's
//! `copy_bidirectional`) on a thread and a current-thread runtime of its own, so it is
//! scheduled like a separate process. A client connected to it talks to the target as if
//! directly; each frame costs the relay one read and one write per direction, nothing else:
//! what a gate hop costs before it does any work of its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::BenchError;

/// A running relay; stops (and its connections close) when dropped.
pub(crate) struct RawRelay {
    /// Where clients connect.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RawRelay {
    /// A relay on an ephemeral loopback port, passing every connection on to `target`.
    pub fn start(target: SocketAddr) -> Result<RawRelay, BenchError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::io("building the relay's runtime"))?;
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(BenchError::io("binding the relay"))?;
        std_listener.set_nonblocking(true).map_err(BenchError::io("binding the relay"))?;
        let addr = std_listener.local_addr().map_err(BenchError::io("binding the relay"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-relay".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else { return };
                    let accept = async {
                        while let Ok((client, _)) = listener.accept().await {
                            tokio::spawn(relay(client, target));
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(BenchError::io("starting the relay thread"))?;
        Ok(RawRelay { addr, stop: Some(stop), thread: Some(thread) })
    }
}

/// One client connection: connect to `target`, copy both ways until either side closes.
async fn relay(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    if client.set_nodelay(true).is_err() || server.set_nodelay(true).is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

impl Drop for RawRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
