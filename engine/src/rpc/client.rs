//! The calling side: pending calls per destination peer, one connection task per peer.
//!
//! A call registers itself as pending on its peer's [`OutPeer`] and hands its frame to the
//! peer's current connection, if any. The peer's connection task (started when a call finds
//! none running) connects, sends the Hello and then *every* pending frame, reads replies and
//! hands each to the call with that xid. When the connection fails or stalls while calls
//! are pending, it reconnects after a randomised backoff and re-sends them all (same xids);
//! when no call is pending and the connection ends, the task exits.
//!
//! Everything a connection attempt and a call must agree on (is the frame sent? which
//! connection is current?) changes under the `OutPeer`'s one mutex, so each pending frame is
//! handed to each connection exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{select_all, BoxFuture, FutureExt};
use futures::StreamExt;
use tracing::{debug, info, warn};

use super::outbox::{outbox, OutboxRx, OutboxTx};
use super::wire::{self, ReplyFrame, ReplyStatus, RequestFrame, WireFrame};
use super::{lock, CallOptions, Inner, RpcError, Xid, MAX_CALL_TIMEOUT};
use crate::cluster::PeerId;
use crate::env::{
    send_batch, timeout, Backoff, Connection, FrameSink, FrameStream, TaskHandle, MAX_PEER_FRAME_BYTES,
};

/// A connect attempt taking longer than this counts as failed (the real backend's TCP
/// connect can hang on a blackholed route; the simulated one fails at once).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// First reconnect backoff; doubles per failed attempt up to [`RECONNECT_BACKOFF_MAX`],
/// each sleep drawn uniformly from its upper half (jitter from the `Rand` port).
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// The reconnect pacing (its draws include the cap, as they always have).
const RECONNECT_BACKOFF: Backoff = Backoff::new(RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX).cap_inclusive();
/// Most calls one caller may have pending to one peer. A call beyond it fails at once with
/// [`RpcError::Overloaded`] (nothing is sent): the peer is not keeping up, back off.
pub const PENDING_CALLS_PER_PEER_MAX: usize = 4096;
/// Most frames queued for one outgoing connection's writer: every pending call's request
/// (each is queued at most once per connection), the Hello and one ping. So the queue only
/// fills if the writer is stuck; then a new call's frame stays unsent (sent with the others
/// on the next connection, after the stall is detected) and a ping is skipped.
pub const OUTBOX_FRAMES_MAX: usize = PENDING_CALLS_PER_PEER_MAX + 2;
/// While calls are pending, a ping goes out this often...
pub const PING_INTERVAL: Duration = Duration::from_millis(200);
/// ...and a connection that has received nothing for this long after a ping is declared
/// stalled (a partitioned TCP stream neither fails nor delivers) and replaced.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(1);

type ReplyTx = oneshot::Sender<Result<Bytes, RpcError>>;

#[derive(Default)]
pub(super) struct ClientState {
    peers: Mutex<BTreeMap<PeerId, Arc<OutPeer>>>,
}

impl ClientState {
    fn peer(&self, id: PeerId) -> Arc<OutPeer> {
        lock(&self.peers).entry(id).or_insert_with(|| Arc::new(OutPeer { id, st: Mutex::default() })).clone()
    }

    pub(super) fn shutdown(&self) {
        let peers: Vec<_> = lock(&self.peers).values().cloned().collect();
        for p in peers {
            let (pending, task) = {
                let mut st = lock(&p.st);
                st.outbox = None;
                (std::mem::take(&mut st.pending), st.task.take())
            };
            if let Some(t) = task {
                t.abort();
            }
            for (_, call) in pending {
                let _ = call.tx.send(Err(RpcError::Shutdown));
            }
        }
    }
}

/// Calls to one destination peer.
struct OutPeer {
    id: PeerId,
    st: Mutex<OutState>,
}

#[derive(Default)]
struct OutState {
    pending: BTreeMap<u64, Pending>,
    /// The current connection's outbox, with the connection's number.
    outbox: Option<(u64, OutboxTx)>,
    conn_seq: u64,
    /// A connection task runs (or is about to).
    task_running: bool,
    task: Option<TaskHandle>,
    /// Last sequence number stamped per order key.
    order_seqs: BTreeMap<String, u64>,
    /// Why the last connection attempt failed (for `Unreachable`).
    last_error: Option<String>,
}

struct Pending {
    frame: Bytes,
    msg_type: String,
    order: Option<(String, u64)>,
    tx: ReplyTx,
    /// Handed to a connection at least once: the peer may have it.
    sent: bool,
}

/// Forgets a pending call when its `call` future ends, however it ends.
struct PendingGuard<'a> {
    peer: &'a OutPeer,
    xid: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.peer.st).pending.remove(&self.xid);
    }
}

fn status_to_result(status: ReplyStatus, p: &Pending) -> Result<Bytes, RpcError> {
    match status {
        ReplyStatus::Ok(body) => Ok(body),
        ReplyStatus::NoHandler => Err(RpcError::NoHandler(p.msg_type.clone())),
        ReplyStatus::HandlerError(e) => Err(RpcError::Handler(e)),
        ReplyStatus::DecodeError(e) => Err(RpcError::Decode(e)),
        ReplyStatus::OutOfOrder { last_seq } => {
            let (order_key, seq) = p.order.clone().unwrap_or_default();
            Err(RpcError::OutOfOrder { order_key, seq, last_seq })
        }
        ReplyStatus::Overloaded(e) => Err(RpcError::Overloaded(e)),
    }
}

/// How a connection ended.
enum End {
    Closed(String),
    Stalled,
    Fenced(PeerId),
    Malformed(String),
}

impl Inner {
    pub(super) async fn call_raw(
        self: &Arc<Self>,
        peer: PeerId,
        msg_type: &str,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, RpcError> {
        if self.is_shut() {
            return Err(RpcError::Shutdown);
        }
        if self.directory.rpc_addr(peer).is_none() {
            return Err(RpcError::UnknownPeer(peer));
        }
        let clock = self.env.clock.clone();
        let limit = opts.timeout.unwrap_or(self.cfg.default_timeout).min(MAX_CALL_TIMEOUT);
        let out = self.client.peer(peer);

        let (seq, mut rx, spawn_task) = {
            let mut st = lock(&out.st);
            if st.pending.len() >= PENDING_CALLS_PER_PEER_MAX {
                return Err(RpcError::Overloaded(format!(
                    "{} calls to {peer:?} already pending (PENDING_CALLS_PER_PEER_MAX)",
                    st.pending.len()
                )));
            }
            let seq = self.next_xid.fetch_add(1, Ordering::Relaxed) + 1;
            let order = opts.order_key.clone().map(|k| {
                let s = st.order_seqs.entry(k.clone()).or_insert(0);
                *s += 1;
                (k, *s)
            });
            // Smallest xid still awaited from this peer (this call included): the receiver
            // may forget everything below.
            let floor = st.pending.keys().next().copied().unwrap_or(seq).min(seq);
            let frame = wire::encode(&WireFrame::Request(RequestFrame {
                xid: seq,
                msg_type: msg_type.to_string(),
                body: body.clone(),
                order,
                floor,
            }));
            let (tx, rx) = oneshot::channel();
            let order = opts.order_key.clone().map(|k| (k.clone(), st.order_seqs[&k]));
            let mut sent = false;
            if let Some((_, outbox)) = &st.outbox {
                sent = outbox.push(frame.clone()).is_ok();
            }
            let fresh =
                st.pending.insert(seq, Pending { frame, msg_type: msg_type.to_string(), order, tx, sent });
            debug_assert!(fresh.is_none(), "xid {seq} reused");
            debug_assert!(st.pending.len() <= PENDING_CALLS_PER_PEER_MAX);
            let spawn_task = !st.task_running;
            st.task_running = true;
            (seq, rx, spawn_task)
        };
        let xid = Xid { sender: self.self_id, seq };
        let guard = PendingGuard { peer: &out, xid: seq };
        if spawn_task {
            let task = self.env.spawn.spawn("rpc-peer-conn", conn_task(self.clone(), out.clone()).boxed());
            let mut st = lock(&out.st);
            if st.task_running {
                st.task = Some(task);
            }
        }
        self.log_msg("request sent", xid, peer, msg_type, &body);
        debug!(%xid, ?peer, msg_type, order_key = ?opts.order_key, timeout_ms = limit.as_millis() as u64, "rpc call");

        let warn_after = self.cfg.reply_warn_after;
        let checker = self.cfg.enable_reply_checker && warn_after < limit;
        let wait = async {
            if checker {
                match timeout(&*clock, warn_after, &mut rx).await {
                    Ok(r) => return r,
                    Err(_) => warn!(
                        %xid, ?peer, msg_type, waited_ms = warn_after.as_millis() as u64,
                        "rpc reply checker: no reply yet"
                    ),
                }
            }
            (&mut rx).await
        };
        let outcome = match timeout(&*clock, limit, wait).await {
            Ok(Ok(r)) => r,
            // The pending entry was dropped unanswered: only shutdown does that.
            Ok(Err(oneshot::Canceled)) => Err(RpcError::Shutdown),
            Err(_) => {
                let st = lock(&out.st);
                match st.pending.get(&seq) {
                    Some(p) if !p.sent => Err(RpcError::Unreachable(
                        st.last_error.clone().unwrap_or_else(|| "not connected before the deadline".into()),
                    )),
                    _ => {
                        crate::probe!("rpc: call timed out after it was sent (maybe applied)");
                        Err(RpcError::Timeout)
                    }
                }
            }
        };
        drop(guard);
        debug!(%xid, ?peer, msg_type, ok = outcome.is_ok(), error = ?outcome.as_ref().err(), "rpc call done");
        outcome
    }

    /// A reply arrived from `out` on one of its connections.
    fn deliver(&self, out: &OutPeer, r: ReplyFrame) {
        if r.replier != out.id {
            warn!(expected = ?out.id, replier = ?r.replier, xid = r.xid, "rpc reply from the wrong peer dropped");
            return;
        }
        let p = lock(&out.st).pending.remove(&r.xid);
        let Some(p) = p else {
            debug!(peer = ?out.id, xid = r.xid, "rpc reply for a call nobody waits for");
            return;
        };
        let xid = Xid { sender: self.self_id, seq: r.xid };
        if let ReplyStatus::Ok(body) = &r.status {
            self.log_msg("reply received", xid, out.id, &p.msg_type, body);
        }
        let result = status_to_result(r.status, &p);
        // The caller may have given up in the meantime.
        let _ = p.tx.send(result);
    }
}

/// Keeps `out` connected while it has pending calls.
async fn conn_task(inner: Arc<Inner>, out: Arc<OutPeer>) {
    let clock = inner.env.clock.clone();
    let mut attempt: u32 = 0;
    loop {
        {
            let mut st = lock(&out.st);
            if st.pending.is_empty() || inner.is_shut() {
                st.task_running = false;
                st.task = None;
                return;
            }
        }
        if attempt > 0 {
            clock.sleep(RECONNECT_BACKOFF.delay(attempt - 1, &*inner.env.rand)).await;
        }
        attempt += 1;
        let Some(addr) = inner.directory.rpc_addr(out.id) else {
            lock(&out.st).last_error = Some(format!("{:?} left the directory", out.id));
            continue;
        };
        let conn = match timeout(&*clock, CONNECT_TIMEOUT, inner.env.net.connect(addr, MAX_PEER_FRAME_BYTES))
            .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                debug!(peer = ?out.id, %addr, error = %e, "rpc connect failed");
                lock(&out.st).last_error = Some(e.to_string());
                continue;
            }
            Err(_) => {
                lock(&out.st).last_error = Some(format!("connect to {addr} timed out"));
                continue;
            }
        };
        let Connection { sink, stream, .. } = conn;
        let (tx, rx) = outbox(OUTBOX_FRAMES_MAX);
        let hello = wire::encode(&WireFrame::Hello { sender: inner.self_id, receiver: out.id });
        let (id, resent) = {
            let mut st = lock(&out.st);
            st.conn_seq += 1;
            let id = st.conn_seq;
            debug_assert!(
                st.outbox.as_ref().is_none_or(|(old, _)| *old < id),
                "connections are numbered in order"
            );
            debug_assert!(
                st.pending.len() < OUTBOX_FRAMES_MAX,
                "the pending calls and the Hello fit the outbox"
            );
            let _ = tx.push(hello);
            let mut resent = 0;
            for p in st.pending.values_mut() {
                if p.sent {
                    resent += 1;
                }
                p.sent = true;
                let _ = tx.push(p.frame.clone());
            }
            st.outbox = Some((id, tx.clone()));
            st.last_error = None;
            (id, resent)
        };
        crate::probe!(resent > 0, "rpc: calls retransmitted on a new connection");
        info!(peer = ?out.id, %addr, conn = id, resent, "rpc connection established");
        let end = drive(&inner, &out, sink, stream, rx, tx).await;
        {
            let mut st = lock(&out.st);
            if st.outbox.as_ref().is_some_and(|(c, _)| *c == id) {
                st.outbox = None;
            }
        }
        match end {
            End::Fenced(actual) => {
                crate::probe!("rpc: calls failed, the peer's incarnation is gone");
                info!(peer = ?out.id, %addr, ?actual, "rpc connection fenced: the peer's incarnation is gone");
                let failed = std::mem::take(&mut lock(&out.st).pending);
                for (_, p) in failed {
                    let _ = p.tx.send(Err(RpcError::Fenced));
                }
                attempt = 0;
            }
            End::Closed(why) => {
                info!(peer = ?out.id, %addr, conn = id, reason = %why, "rpc connection lost");
                attempt = 1;
            }
            End::Stalled => {
                crate::probe!("rpc: stalled connection replaced");
                info!(peer = ?out.id, %addr, conn = id, "rpc connection stalled; reconnecting");
                attempt = 1;
            }
            End::Malformed(why) => {
                warn!(peer = ?out.id, %addr, conn = id, reason = %why, "rpc connection dropped: malformed frame");
                attempt = 1;
            }
        }
    }
}

/// Runs one connection until it ends: writer, reader and (while calls are pending) pings.
async fn drive(
    inner: &Arc<Inner>,
    out: &Arc<OutPeer>,
    mut sink: FrameSink,
    mut stream: FrameStream,
    mut rx: OutboxRx,
    tx: OutboxTx,
) -> End {
    let clock = inner.env.clock.clone();
    // Monotonic nanos (+1, so never 0) of the first unanswered ping; 0 = none outstanding.
    let ping_since = AtomicU64::new(0);
    let writer = async {
        while let Some(frame) = rx.next().await {
            if let Err(e) = send_batch(&mut sink, frame, || rx.try_next()).await {
                return End::Closed(format!("send failed: {e}"));
            }
        }
        End::Closed("outbox closed".into())
    };
    let reader = async {
        loop {
            let frame = match stream.next().await {
                None => return End::Closed("closed by peer".into()),
                Some(Err(e)) => return End::Closed(format!("receive failed: {e}")),
                Some(Ok(f)) => f,
            };
            ping_since.store(0, Ordering::Relaxed);
            match wire::decode_shared(frame) {
                Ok(WireFrame::Reply(r)) => inner.deliver(out, r),
                Ok(WireFrame::Pong) => {}
                Ok(WireFrame::Fenced { actual }) => return End::Fenced(actual),
                Ok(other) => return End::Malformed(format!("unexpected frame {other:?}")),
                Err(e) => return End::Malformed(e.to_string()),
            }
        }
    };
    let pinger = async {
        loop {
            clock.sleep(PING_INTERVAL).await;
            if lock(&out.st).pending.is_empty() {
                ping_since.store(0, Ordering::Relaxed);
                continue;
            }
            let now = clock.now().as_nanos().saturating_add(1);
            match ping_since.load(Ordering::Relaxed) {
                0 => {
                    ping_since.store(now, Ordering::Relaxed);
                    // A full outbox means the writer is stuck: the stall check will catch it.
                    let _ = tx.push(wire::encode(&WireFrame::Ping));
                }
                since if Duration::from_nanos(now - since.min(now)) >= STALL_TIMEOUT => return End::Stalled,
                _ => {}
            }
        }
    };
    let futs: [BoxFuture<'_, End>; 3] = [writer.boxed(), reader.boxed(), pinger.boxed()];
    let (end, _, _) = select_all(futs).await;
    end
}
