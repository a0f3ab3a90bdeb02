//! The accept loops (one per port) and the per-session task.
//!
//! Each accepted connection gets one task running two halves side by side:
//! - the **reader** reads one frame (until the idle deadline), decodes and routes it, and
//!   awaits the handler's future before reading the next frame. That await is what makes
//!   handling ordered per session; sessions are separate tasks, so they run concurrently.
//!   Frames that arrive meanwhile wait in the transport (TCP flow control on a real socket);
//!   the idle deadline restarts when a handler returns, so a slow handler never counts as
//!   client silence.
//! - the **writer** sends the session's queued frames in order and, when configured, queues
//!   a `_ping` every `heartbeat_interval`.
//!
//! Either half may close the session; the other sees the close signal and stops. The task
//! then removes the session from the table, runs the closed callbacks and fires `done`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures::future::{self, poll_fn, BoxFuture, Either, FutureExt};
use futures::{SinkExt, StreamExt};
use tracing::{debug, info, warn};

use super::budget::SESSION_BASE_BYTES;
use super::codec::{self, Route};
use super::error::{CloseReason, ProtocolError};
use super::handle::{lock, Limits, Session, SessionId};
use super::{Entry, Inner, SessionConfig, ACCEPT_RETRY_DELAY, CLOSE_DRAIN_TIMEOUT};
use crate::env::{send_batch, Connection, FrameSink, FrameStream, Listener, NetError};
use crate::session::gated::Rules;

/// Accepts the connections of port `port` (an index into `inner.ports`).
pub(super) async fn accept_loop(inner: Arc<Inner>, port: usize, mut listener: Box<dyn Listener>) {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                if inner.shut.load(Ordering::SeqCst) {
                    return;
                }
                start_session(&inner, port, conn);
            }
            Err(e) => {
                warn!(error = %e, transport = ?inner.ports[port].cfg.transport, "session accept failed");
                inner.env.clock.sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// How long a refused connection's `_error server_busy` frame may take to go out.
const REFUSAL_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn start_session(inner: &Arc<Inner>, port: usize, conn: Connection) {
    let cfg = &inner.ports[port].cfg;
    if !inner.budget.try_charge(SESSION_BASE_BYTES) {
        refuse_busy(inner, cfg.transport, conn);
        return;
    }
    let id = SessionId::new_random(&*inner.env.rand);
    let session = Session::new(id, conn.peer, cfg.transport, Limits::of(cfg), inner.budget.clone());
    let evicted = lock(&inner.unproven).admit(id, conn.peer.ip());
    {
        let mut sessions = lock(&inner.sessions);
        for victim in &evicted {
            if let Some(e) = sessions.get(victim) {
                info!(session = %victim, peer = %e.session.peer_addr(), newcomer = %conn.peer, "unauthenticated connection evicted");
                crate::probe!("session: oldest unauthenticated connection evicted");
                e.session.close_with(CloseReason::Evicted, false);
            }
        }
        sessions.insert(id, Entry { session: session.clone(), task: None });
    }
    let cfg = cfg.clone();
    let budget = inner.budget.clone();
    // `map`, not an `async` block awaiting the session: an awaited captured future is stored
    // twice in the block's state (once captured, once being awaited), and this state is
    // per-session memory.
    let run = run_session(inner.clone(), cfg, session, conn, Rules::DIRECT)
        .map(move |()| budget.release(SESSION_BASE_BYTES));
    let task = inner.env.spawn.spawn("session", run.boxed());
    // The task may already have finished (and removed its entry): then the handle is dropped.
    if let Some(e) = lock(&inner.sessions).get_mut(&id) {
        e.task = Some(task);
    }
}

/// Answers a connection the budget has no room for with `_error server_busy` (written
/// straight to the connection: nothing is charged) and drops it.
fn refuse_busy(inner: &Arc<Inner>, transport: super::Transport, conn: Connection) {
    let n = inner.refused.fetch_add(1, Ordering::Relaxed) + 1;
    let max = inner.budget.max();
    warn!(peer = %conn.peer, used = inner.budget.used(), max, refused = n, "session memory budget full: connection refused");
    let frame = codec::encode_error(transport, &ProtocolError::ServerBusy { max });
    let clock = inner.env.clock.clone();
    let mut sink = conn.sink;
    inner.env.spawn.spawn(
        "session-refuse",
        async move {
            let _ = crate::env::timeout(&*clock, REFUSAL_SEND_TIMEOUT, sink.send(frame)).await;
        }
        .boxed(),
    );
}

/// Runs one session to its end: `cfg` holds its limits, `rules` what differs for a gated
/// session (see [`super::gated`]).
pub(super) async fn run_session(
    inner: Arc<Inner>,
    cfg: SessionConfig,
    session: Session,
    conn: Connection,
    rules: Rules,
) {
    let Connection { sink, stream, peer } = conn;
    let cfg = &cfg;
    let id = session.id();
    info!(session = %id, %peer, transport = ?session.transport(), "session opened");
    // One copy of each half in this future's state (per-session memory): the reader half is
    // pinned here and polled through a reference, the writer half built inside the `join` (a
    // future bound to a local and then moved into the `join` would be stored twice). `join`
    // polls the reader half, then the writer half, on every pass: what a handler queues while
    // the reader half runs is picked up in the same pass, without a wake-up
    // (`Session::set_owner_reading`).
    let mut reader = std::pin::pin!(async {
        let opened = lock(&inner.opened).clone();
        for cb in opened {
            cb(session.clone()).await;
        }
        read_loop(&inner, cfg, &session, stream, &rules).await;
    });
    future::join(
        poll_fn(|cx| {
            session.set_owner_reading(true);
            let r = reader.as_mut().poll_unpin(cx);
            session.set_owner_reading(false);
            r
        }),
        write_loop(&inner, cfg, &session, sink),
    )
    .await;
    // Both halves have stopped, so the session is closed; `ClosedByPeer` only covers a
    // close that was never recorded (not expected).
    let reason = session.close_reason().unwrap_or(CloseReason::ClosedByPeer);
    lock(&inner.sessions).remove(&id);
    lock(&inner.unproven).forget(id);
    *lock(&inner.closed_by_kind).entry(reason.kind()).or_insert(0) += 1;
    info!(session = %id, %peer, reason = %reason, "session closed");
    let closed = lock(&inner.closed).clone();
    for cb in closed {
        cb(session.clone(), reason.clone()).await;
    }
    session.shared.done.fire();
}

enum ReadEvent {
    Frame(Option<Result<Bytes, NetError>>),
    Idle,
    Closed,
}

/// `cfg` is the session's port's configuration (its limits).
async fn read_loop(
    inner: &Inner,
    cfg: &SessionConfig,
    session: &Session,
    mut stream: FrameStream,
    rules: &Rules,
) {
    let clock = &inner.env.clock;
    let id = session.id();
    let mut alive_at = clock.now();
    let mut proven = false;
    // A frame was taken and its handling is over: a gated session says so (`mark_handled`).
    let mut owe_marker = false;
    loop {
        if std::mem::take(&mut owe_marker) {
            let _ = session.push(super::gated::HANDLED_MARKER);
        }
        if !session.is_open() {
            return;
        }
        let ev = {
            let mut closed = session.shared.closed.wait();
            let mut idle = clock.sleep_until(alive_at + cfg.idle_timeout);
            let mut next = stream.next();
            poll_fn(|cx| {
                if closed.poll_unpin(cx).is_ready() {
                    return Poll::Ready(ReadEvent::Closed);
                }
                if let Poll::Ready(f) = next.poll_unpin(cx) {
                    return Poll::Ready(ReadEvent::Frame(f));
                }
                if idle.poll_unpin(cx).is_ready() {
                    return Poll::Ready(ReadEvent::Idle);
                }
                Poll::Pending
            })
            .await
        };
        let payload = match ev {
            ReadEvent::Closed => return,
            ReadEvent::Idle => {
                crate::probe!("session: client session expired (idle timeout)");
                session.close_with(CloseReason::IdleTimeout, true);
                return;
            }
            ReadEvent::Frame(None) => {
                // A gated session's input ends when its gate releases the player: what is
                // queued for the client still goes out (to the gate).
                session.close_with(CloseReason::ClosedByPeer, rules.drain_at_end);
                return;
            }
            ReadEvent::Frame(Some(Err(NetError::FrameTooLarge { len, .. }))) => {
                reject(session, ProtocolError::FrameTooLarge { len, max: cfg.max_frame_bytes });
                return;
            }
            ReadEvent::Frame(Some(Err(NetError::Closed))) => {
                session.close_with(CloseReason::ClosedByPeer, false);
                return;
            }
            ReadEvent::Frame(Some(Err(NetError::Abuse(what)))) => {
                warn!(session = %id, peer = %session.peer_addr(), %what, "connection closed for abuse");
                session.close_with(CloseReason::Abuse(what), false);
                return;
            }
            ReadEvent::Frame(Some(Err(e))) => {
                session.close_with(CloseReason::Network(e.to_string()), false);
                return;
            }
            ReadEvent::Frame(Some(Ok(p))) => p,
        };
        owe_marker = rules.mark_handled;
        alive_at = clock.now();
        let msg = match codec::decode(session.transport(), &payload) {
            Ok(m) => m,
            Err(e) => {
                reject(session, e);
                continue;
            }
        };
        debug!(session = %id, msg_type = %msg.msg_type, len = payload.len(), "session message");
        match codec::route(&msg.msg_type) {
            Ok(Route::Pong) => continue,
            Ok(Route::Dispatch) => {}
            Err(e) => {
                reject(session, e);
                continue;
            }
        }
        if let Some(guard) = &rules.guard {
            // Checked right before the handler starts: a gated session is handled only while
            // this server still hosts its player.
            if !guard() {
                debug!(session = %id, msg_type = %msg.msg_type, "gated session no longer hosted: frame dropped");
                session.close_with(CloseReason::Server(super::gated::NOT_HOSTED.into()), true);
                return;
            }
        }
        if !proven && inner.registry.has(&msg.msg_type) {
            // A message the game handles: the connection is no longer unauthenticated. A
            // frame for the unhandled-type taker proves nothing: on a gate that is every type
            // but the login, answered `gate_login_required` until the login handler ran.
            proven = true;
            lock(&inner.unproven).prove(id);
        }
        if !inner.registry.has(&msg.msg_type) {
            let unhandled = lock(&inner.unhandled).clone();
            if let Some(f) = unhandled {
                f(session.clone(), msg.msg_type, payload).await;
                alive_at = clock.now();
                continue;
            }
        }
        match inner.registry.dispatch(session, msg) {
            Ok(fut) => {
                fut.await;
                alive_at = clock.now();
            }
            Err(e) => reject(session, e),
        }
    }
}

/// Answers a bad client frame with `_error`, and closes the session if the problem is at
/// the frame level (the queued `_error` still goes out first).
fn reject(session: &Session, e: ProtocolError) {
    debug!(session = %session.id(), code = e.code(), error = %e, "session rejected a client frame");
    let _ = session.push(codec::encode_error(session.transport(), &e));
    if e.closes_session() {
        session.close_with(CloseReason::Protocol(e), true);
    }
}

enum WriteEvent {
    Abort,
    Frame(Option<Bytes>),
    Ping,
}

async fn write_loop(inner: &Inner, cfg: &SessionConfig, session: &Session, mut sink: FrameSink) {
    let clock = inner.env.clock.clone();
    // Stop at an immediate close, or CLOSE_DRAIN_TIMEOUT after any close (a graceful close
    // whose client does not read must not hold the connection forever).
    let mut abort: BoxFuture<'static, ()> = {
        let abort = session.shared.abort.wait();
        let closed = session.shared.closed.wait();
        let clock = clock.clone();
        future::select(abort, closed.then(move |()| clock.sleep(CLOSE_DRAIN_TIMEOUT))).map(|_| ()).boxed()
    };
    let heartbeat = cfg.heartbeat_interval;
    let next_ping = || match heartbeat {
        Some(d) => clock.sleep(d),
        None => future::pending().boxed(),
    };
    let mut ping = next_ping();
    loop {
        let ev = poll_fn(|cx| {
            if abort.poll_unpin(cx).is_ready() {
                return Poll::Ready(WriteEvent::Abort);
            }
            if let Poll::Ready(f) = session.poll_next_frame(cx) {
                return Poll::Ready(WriteEvent::Frame(f));
            }
            if ping.poll_unpin(cx).is_ready() {
                return Poll::Ready(WriteEvent::Ping);
            }
            Poll::Pending
        })
        .await;
        match ev {
            WriteEvent::Abort | WriteEvent::Frame(None) => return,
            WriteEvent::Ping => {
                ping = next_ping();
                // A full queue here closes the session as a slow reader, as any send would.
                let _ = session.push(codec::encode_ping(session.transport()));
            }
            WriteEvent::Frame(Some(frame)) => {
                let batch = std::pin::pin!(send_batch(&mut sink, frame, || session.try_next_frame()));
                match future::select(batch, &mut abort).await {
                    Either::Left((Ok(()), _)) => {}
                    Either::Left((Err(e), _)) => {
                        let reason = match e {
                            NetError::Closed => CloseReason::ClosedByPeer,
                            e => CloseReason::Network(e.to_string()),
                        };
                        session.close_with(reason, false);
                        return;
                    }
                    Either::Right(((), _)) => return,
                }
            }
        }
    }
}
