//! Gated sessions: a client connected to a gate, as its backend sees it.
//!
//! A backend hosts a gated player as an ordinary [`Session`] of its session service — same
//! handler registry, same open and closed callbacks, same ordered handling, same `Session`
//! handle to reply, push and close — whose connection is not a socket: frames the gate
//! forwarded go in through a bounded in-memory queue ([`GatedSession::input`]), and frames
//! for the client, in the client's own transport encoding, go out into a sink its host gives
//! ([`SessionService::open_gated`]), which passes them on through the gate. A game written
//! for direct connections therefore runs behind gates unchanged (`engine::gate` drives both).
//!
//! What differs from a direct session ([`Rules`]):
//! - the end of the input (the gate released the player) closes the session *gracefully*:
//!   frames already queued are still handled, and replies already queued still go out;
//! - a **guard** is asked right before each frame is handled; once it says no (the backend
//!   no longer hosts the player), the frame is dropped and the session closes;
//! - no heartbeat and no idle timeout: the gate watches the client, the backend watches the gate;
//! - after each client frame was handled (or refused), an empty frame comes out
//!   ([`HANDLED_MARKER`]): where the output of that frame's handling ends, so the gate's
//!   forward can be answered with it (`engine::gate::outflow`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};

use super::handle::{lock, Limits, Session, SessionId};
use super::{service, Entry, SessionConfig, SessionError, SessionService, Transport};
use crate::env::{Connection, FrameSink};

/// Most client frames queued on a gated session before its handler takes them; a forward
/// beyond that waits (backpressure to the gate, and through it to the client's socket).
pub const GATED_INPUT_MAX: usize = 64;
/// A gated session's idle timeout: in effect none (the gate watches the client).
const GATED_IDLE: Duration = Duration::from_secs(365 * 24 * 3600);
/// The close reason of a gated session whose guard said no.
pub const NOT_HOSTED: &str = "player no longer hosted here";

/// Comes out of a gated session after each client frame was handled: an empty frame, which
/// no encoding of a client message is.
pub const HANDLED_MARKER: Bytes = Bytes::new();

/// Asked right before each frame of a gated session is handled.
pub type Guard = Arc<dyn Fn() -> bool + Send + Sync>;

/// How a session's task treats the end of its input and each frame.
pub(super) struct Rules {
    /// Close gracefully (drain the outbox) when the input ends.
    pub(super) drain_at_end: bool,
    pub(super) guard: Option<Guard>,
    /// Queue [`HANDLED_MARKER`] after each frame taken.
    pub(super) mark_handled: bool,
}

impl Rules {
    /// A socket's session: an ended stream is a vanished client (nothing left to send to).
    pub(super) const DIRECT: Rules = Rules { drain_at_end: false, guard: None, mark_handled: false };
}

/// A gated session and its input queue. Dropping `input` ends the session gracefully.
pub struct GatedSession {
    pub session: Session,
    pub input: mpsc::Sender<Bytes>,
}

impl SessionService {
    /// Opens a gated session for a client of `transport` at `client` (as its gate sees it),
    /// handled while `guard` says yes. Its limits are those of this service's port of the same
    /// transport, else of its first port (frame size, send queue). What it sends the client
    /// goes into `output`, in order, from the session's own task (its writer), with
    /// [`HANDLED_MARKER`] after the output of each client frame's handling; `output` is
    /// dropped once the session has closed and its last frame went in. An error from `output`
    /// ends the session as a broken connection would. Fails after
    /// [`shutdown`](Self::shutdown).
    pub fn open_gated(
        &self,
        transport: Transport,
        client: SocketAddr,
        guard: Guard,
        output: FrameSink,
    ) -> Result<GatedSession, SessionError> {
        let inner = &self.inner;
        if inner.shut.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SessionError::Config("session service is shut down".into()));
        }
        let port = inner.ports.iter().find(|p| p.cfg.transport == transport).unwrap_or(&inner.ports[0]);
        let cfg = SessionConfig {
            transport,
            idle_timeout: GATED_IDLE,
            heartbeat_interval: None,
            ..port.cfg.clone()
        };
        let (input, input_rx) = mpsc::channel::<Bytes>(GATED_INPUT_MAX);
        let conn = Connection { sink: output, stream: Box::pin(input_rx.map(Ok)), peer: client };
        let id = SessionId::new_random(&*inner.env.rand);
        let session = Session::new(id, client, transport, Limits::of(&cfg), inner.budget.clone());
        lock(&inner.sessions).insert(id, Entry { session: session.clone(), task: None });
        let rules = Rules { drain_at_end: true, guard: Some(guard), mark_handled: true };
        let task = inner.env.spawn.spawn(
            "gated-session",
            service::run_session(inner.clone(), cfg, session.clone(), conn, rules).boxed(),
        );
        if let Some(e) = lock(&inner.sessions).get_mut(&id) {
            e.task = Some(task);
        }
        Ok(GatedSession { session, input })
    }
}

impl Session {
    /// Queues a frame already in this session's transport encoding (a gate passing on what a
    /// backend encoded for this client). Same limits and failures as [`Session::send_json`].
    pub fn send_encoded(&self, frame: Bytes) -> Result<(), SessionError> {
        self.push(frame)
    }

    /// Completes once the session has closed and its closed callbacks have run.
    pub fn done(&self) -> futures::future::BoxFuture<'static, ()> {
        futures::FutureExt::boxed(self.shared.done.wait())
    }
}
