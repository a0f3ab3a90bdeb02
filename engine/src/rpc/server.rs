//! The receiving side: accept loop, per-connection reader, dedupe, ordering, handler tasks.
//!
//! State per sender incarnation ([`SenderState`]): its xid window ([`DedupeWindow`]), its
//! order keys ([`KeyOrder`]), and its live connections in the order their Hellos arrived.
//! Replies go to the newest of them (a reply to a retransmitted call goes wherever the sender
//! is connected *now*). Replies finished while the sender has no connection stay cached in
//! the window; the sender's retransmission after it reconnects picks them up.
//!
//! Connections do not always arrive in the order the sender opened them: one the sender
//! already abandoned (it stalled, e.g. while this server was paused) can say Hello after the
//! sender's current one, take the route, and then close. Replies routed to it are lost with
//! it, and the sender will not retransmit them: its own connection is healthy. So when a
//! connection closes while another from the same sender is live, the route falls back to the
//! newest remaining one and every cached reply of the sender is sent on it again (the caller
//! ignores replies it no longer waits for).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{select, Either, FutureExt};
use futures::{SinkExt, StreamExt};
use tracing::{debug, error, info, warn};

use super::dedupe::{Admit, DedupeWindow};
use super::metrics::{status_kind, UNREGISTERED_METHOD};
use super::order::{Arrival, KeyOrder};
use super::outbox::{outbox, OutboxTx, PushError};
use super::sem::Semaphore;
use super::wire::{self, ReplyFrame, ReplyStatus, RequestFrame, WireFrame};
use super::{lock, CallInfo, HandlerFn, Inner, Xid, MAX_CALL_TIMEOUT};
use crate::cluster::PeerId;
use crate::env::{send_batch, timeout, Connection, Listener, MonoTime, TaskHandle};

/// A sender silent this long (no frame, no connection, nothing running or queued) is
/// forgotten with its xid window and order keys; so is an idle order key. Twice the longest
/// call deadline: the sender stopped retransmitting long before.
pub const SENDER_STATE_IDLE_TTL: Duration = Duration::from_secs(2 * MAX_CALL_TIMEOUT.as_secs());
/// How often idle senders and keys are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// A new connection must say Hello within this time or is dropped.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most frames (replies, pongs) queued for one incoming connection's writer. A connection
/// whose queue is full is closed: the caller is not reading. Nothing is lost: finished
/// replies stay in the sender's dedupe window and are re-sent when the caller reconnects and
/// retransmits.
pub const REPLY_QUEUE_MAX: usize = 4096;
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

pub(super) struct ServerState {
    senders: Mutex<BTreeMap<PeerId, SenderState>>,
    conns: Mutex<BTreeMap<u64, TaskHandle>>,
    next_conn: AtomicU64,
    sem: Semaphore,
}

struct SenderState {
    dedupe: DedupeWindow<Bytes>,
    orders: BTreeMap<String, KeyOrder<Job>>,
    /// Live connections from the sender, oldest Hello first: replies go to the last.
    conns: Vec<(u64, OutboxTx)>,
    last_seen: MonoTime,
}

impl SenderState {
    fn new(now: MonoTime) -> Self {
        SenderState {
            dedupe: DedupeWindow::default(),
            orders: BTreeMap::new(),
            conns: Vec::new(),
            last_seen: now,
        }
    }

    /// Where replies go now.
    fn route(&self) -> Option<&OutboxTx> {
        self.conns.last().map(|(_, tx)| tx)
    }

    /// Connection `id` ended. If it was the route and another connection is live, the
    /// replies it may have swallowed are sent again on the new route.
    fn conn_closed(&mut self, id: u64) {
        let Some(at) = self.conns.iter().position(|(c, _)| *c == id) else { return };
        let was_route = at + 1 == self.conns.len();
        self.conns.remove(at);
        if let (true, Some(tx)) = (was_route, self.route()) {
            for reply in self.dedupe.done_replies() {
                send_or_close(tx, reply.clone());
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.conns.is_empty() && !self.dedupe.has_in_progress() && self.orders.values().all(|k| k.is_idle())
    }
}

/// An admitted request waiting to run or running.
#[derive(Debug)]
pub(super) struct Job {
    sender: PeerId,
    req: RequestFrame,
}

impl ServerState {
    pub(super) fn new(permits: usize) -> Self {
        ServerState {
            senders: Mutex::new(BTreeMap::new()),
            conns: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(0),
            sem: Semaphore::new(permits),
        }
    }

    pub(super) fn shutdown(&self) {
        for (_, t) in std::mem::take(&mut *lock(&self.conns)) {
            t.abort();
        }
        let mut senders = lock(&self.senders);
        for s in senders.values_mut() {
            s.conns.clear();
            for k in s.orders.values_mut() {
                k.drain();
            }
        }
    }
}

pub(super) async fn accept_loop(inner: Arc<Inner>, mut listener: Box<dyn Listener>) {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                if inner.is_shut() {
                    return;
                }
                let id = inner.server.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
                let task =
                    inner.env.spawn.spawn("rpc-serve-conn", serve_conn(inner.clone(), id, conn).boxed());
                lock(&inner.server.conns).insert(id, task);
            }
            Err(e) => {
                warn!(error = %e, "rpc accept failed");
                inner.env.clock.sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

pub(super) async fn sweep_loop(inner: Arc<Inner>) {
    loop {
        inner.env.clock.sleep(SWEEP_INTERVAL).await;
        let now = inner.env.clock.now();
        let expired = |t: MonoTime| now.saturating_since(t) >= SENDER_STATE_IDLE_TTL;
        let mut senders = lock(&inner.server.senders);
        senders.retain(|_, s| !(s.is_idle() && expired(s.last_seen)));
        for s in senders.values_mut() {
            s.orders.retain(|_, k| !(k.is_idle() && expired(k.last_activity)));
        }
    }
}

async fn serve_conn(inner: Arc<Inner>, id: u64, conn: Connection) {
    let Connection { mut sink, mut stream, peer: addr } = conn;
    let clock = inner.env.clock.clone();
    let sender = match timeout(&*clock, HELLO_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(b))) => match wire::decode_shared(b) {
            Ok(WireFrame::Hello { sender, receiver }) if receiver == inner.self_id => sender,
            Ok(WireFrame::Hello { sender, receiver }) => {
                crate::probe!("rpc: connection for an older incarnation fenced");
                info!(%addr, ?sender, intended = ?receiver, "rpc connection fenced: meant for another incarnation");
                let _ = sink.send(wire::encode(&WireFrame::Fenced { actual: inner.self_id })).await;
                lock(&inner.server.conns).remove(&id);
                return;
            }
            Ok(other) => {
                warn!(%addr, frame = ?other, "rpc connection dropped: first frame is not a Hello");
                lock(&inner.server.conns).remove(&id);
                return;
            }
            Err(e) => {
                warn!(%addr, error = %e, "rpc connection dropped: malformed hello");
                lock(&inner.server.conns).remove(&id);
                return;
            }
        },
        _ => {
            debug!(%addr, "rpc connection ended before its hello");
            lock(&inner.server.conns).remove(&id);
            return;
        }
    };
    let (tx, mut rx) = outbox(REPLY_QUEUE_MAX);
    {
        let now = clock.now();
        let mut senders = lock(&inner.server.senders);
        let s = senders.entry(sender).or_insert_with(|| SenderState::new(now));
        debug_assert!(s.conns.iter().all(|(c, _)| *c != id), "a connection says Hello once");
        s.conns.push((id, tx.clone()));
        s.last_seen = now;
    }
    info!(%addr, ?sender, conn = id, "rpc connection established (incoming)");

    // The writer is a task of its own, so that a reply queued by a handler run on the reader
    // (`start_job`) wakes another task, not the one that is running: a task woken during its
    // own poll is requeued where the other worker steals it, which measured 16 -> 31 us per
    // call at 1 in flight (`real bench rpc`, docs/gate.md).
    let (ended_tx, ended_rx) = futures::channel::oneshot::channel::<String>();
    let _writer_task = inner
        .env
        .spawn
        .spawn(
            "rpc-serve-writer",
            async move {
                let why = async {
                    while let Some(frame) = rx.next().await {
                        if let Err(e) = send_batch(&mut sink, frame, || rx.try_next()).await {
                            return format!("send failed: {e}");
                        }
                    }
                    "outbox closed".to_string()
                }
                .await;
                let _ = ended_tx.send(why);
            }
            .boxed(),
        )
        .abort_on_drop();
    let writer = async { ended_rx.await.unwrap_or_else(|_| "writer gone".to_string()) };
    let reader = async {
        loop {
            let frame = match stream.next().await {
                None => return "closed by peer".to_string(),
                Some(Err(e)) => return format!("receive failed: {e}"),
                Some(Ok(f)) => f,
            };
            match wire::decode_shared(frame) {
                Ok(WireFrame::Request(r)) => inner.on_request(sender, &tx, r),
                Ok(WireFrame::Ping) => send_or_close(&tx, wire::encode(&WireFrame::Pong)),
                Ok(other) => {
                    warn!(%addr, ?sender, frame = ?other, "rpc connection dropped: unexpected frame");
                    return "unexpected frame".to_string();
                }
                Err(e) => {
                    warn!(%addr, ?sender, error = %e, "rpc connection dropped: malformed frame");
                    return format!("malformed frame: {e}");
                }
            }
        }
    };
    let why = match select(writer.boxed(), reader.boxed()).await {
        Either::Left((w, _)) => w,
        Either::Right((r, _)) => r,
    };
    {
        let mut senders = lock(&inner.server.senders);
        if let Some(s) = senders.get_mut(&sender) {
            s.conn_closed(id);
        }
    }
    lock(&inner.server.conns).remove(&id);
    info!(%addr, ?sender, conn = id, reason = %why, "rpc connection lost (incoming)");
}

/// Queues a frame for an incoming connection; a full queue closes the connection (see
/// [`REPLY_QUEUE_MAX`]), a closed one drops the frame (the reply stays cached).
fn send_or_close(tx: &OutboxTx, frame: Bytes) {
    if tx.push(frame) == Err(PushError::Full) {
        warn!(
            queued_max = REPLY_QUEUE_MAX,
            "rpc reply queue full: the caller is not reading; closing its connection"
        );
        tx.close();
    }
}

impl Inner {
    /// A request frame from `sender` arrived on the connection whose outbox is `tx`.
    fn on_request(self: &Arc<Self>, sender: PeerId, tx: &OutboxTx, req: RequestFrame) {
        let xid = Xid { sender, seq: req.xid };
        self.log_msg("request received", xid, sender, &req.msg_type, &req.body);
        let now = self.env.clock.now();
        let bugs = self.cfg.bugs;
        let mut to_start = None;
        let mut rejected = None;
        {
            let mut senders = lock(&self.server.senders);
            let s = senders.entry(sender).or_insert_with(|| SenderState::new(now));
            s.last_seen = now;
            if !bugs.double_exec {
                s.dedupe.advance_floor(req.floor);
                match s.dedupe.admit(req.xid) {
                    Admit::New => {}
                    Admit::InProgress => {
                        self.metrics.duplicates.inc();
                        crate::probe!("rpc: duplicate of a running call ignored");
                        debug!(%xid, "rpc duplicate of a running call ignored");
                        return;
                    }
                    Admit::Done(reply) => {
                        self.metrics.duplicates.inc();
                        crate::probe!("rpc: duplicate of a finished call answered from the dedupe window");
                        debug!(%xid, "rpc duplicate of a finished call: cached reply re-sent");
                        send_or_close(tx, reply);
                        return;
                    }
                    Admit::Stale => {
                        self.metrics.duplicates.inc();
                        crate::probe!("rpc: stale copy of an abandoned call dropped");
                        debug!(%xid, floor = s.dedupe.floor(), "rpc stale copy of an abandoned call dropped");
                        return;
                    }
                }
            }
            let job = Job { sender, req };
            match job.req.order.clone() {
                Some((key, seq)) if !bugs.reorder => {
                    let k = s.orders.entry(key.clone()).or_insert_with(|| KeyOrder::new(now));
                    match k.arrive(seq, job, now) {
                        Arrival::Start(job) => to_start = Some(job),
                        Arrival::Queued { gap_deadline } => {
                            debug!(%xid, order_key = %key, seq, "rpc ordered call queued");
                            let inner = self.clone();
                            let timer = async move {
                                inner.env.clock.sleep_until(gap_deadline).await;
                                inner.order_gap_expired(sender, &key);
                            };
                            // Detached: the timer only re-checks the queue.
                            drop(self.env.spawn.spawn("rpc-order-gap", timer.boxed()));
                        }
                        Arrival::OutOfOrder { item, last_seq } => {
                            rejected = Some((item, ReplyStatus::OutOfOrder { last_seq }));
                        }
                        Arrival::Overloaded(item) => {
                            let msg = format!("too many calls queued for order key {key:?}");
                            rejected = Some((item, ReplyStatus::Overloaded(msg)));
                        }
                    }
                }
                _ => to_start = Some(job),
            }
        }
        if let Some(job) = to_start {
            self.start_job(job, true);
        }
        if let Some((job, status)) = rejected {
            debug!(%xid, ?status, "rpc ordered call rejected");
            self.complete(job, status, false);
        }
    }

    fn order_gap_expired(self: &Arc<Self>, sender: PeerId, key: &str) {
        let now = self.env.clock.now();
        let next = {
            let mut senders = lock(&self.server.senders);
            senders.get_mut(&sender).and_then(|s| s.orders.get_mut(key)).and_then(|k| k.poll_expired(now))
        };
        if let Some((seq, job)) = next {
            debug!(?sender, order_key = key, seq, "rpc order gap skipped after waiting");
            self.start_job(job, false);
        }
    }

    /// Runs `job`'s handler: on a task of its own, or (`inline`, from the connection's reader)
    /// first on the caller, moved to a task only if it has to wait. A handler that finishes
    /// at once (most do: a gate's `_gate.deliver`, a backend's `_gate.forward`) then costs no
    /// task hand-off. The inline poll has a no-op waker; the task re-polls with its own, so a
    /// handler's future must register its waker on every poll that waits, as those of
    /// `futures`, tokio and madsim do.
    fn start_job(self: &Arc<Self>, job: Job, inline: bool) {
        let sender = job.sender;
        let inner = self.clone();
        // Looked up once; an unregistered type is answered at once, under no permit.
        let handler = lock(&self.handlers).get(&job.req.msg_type).cloned();
        let task = async move {
            let counted = handler.as_ref().is_some_and(|h| h.counted);
            let _permit = if counted { Some(inner.server.sem.acquire().await) } else { None };
            let handler = handler.map(|h| h.f);
            let status = if inner.metrics.enabled {
                let start = inner.env.clock.now();
                let status = inner.run_handler(&job, handler).await;
                let took = inner.env.clock.now().saturating_since(start);
                inner.metrics.handler_duration.with(&[inner.method_label(&job.req.msg_type)]).observe(took);
                status
            } else {
                inner.run_handler(&job, handler).await
            };
            let ordered = job.req.order.is_some() && !inner.cfg.bugs.reorder;
            inner.complete(job, status, ordered);
        };
        let mut task = task.boxed();
        if inline {
            // A handler that panics ends as it does on a task of its own (no reply; its caller
            // times out), not taking the connection's reader, and every call behind it on
            // other keys, with it.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (&mut task).now_or_never())) {
                Ok(Some(())) => return,
                Ok(None) => {}
                Err(_) => {
                    error!(?sender, "rpc handler panicked (run on the connection's reader)");
                    return;
                }
            }
        }
        drop(self.env.spawn.spawn("rpc-handler", task));
    }

    /// The `method` label of `msg_type`: itself if it has a handler here, else
    /// [`UNREGISTERED_METHOD`] (a peer must not choose label values freely).
    fn method_label<'a>(&self, msg_type: &'a str) -> &'a str {
        if lock(&self.handlers).contains_key(msg_type) {
            msg_type
        } else {
            UNREGISTERED_METHOD
        }
    }

    /// Runs `handler`, the one registered for `job`'s type when it started (`None`: none was).
    async fn run_handler(&self, job: &Job, handler: Option<Arc<HandlerFn>>) -> ReplyStatus {
        let Some(h) = handler else {
            debug!(msg_type = %job.req.msg_type, "rpc request for a type with no handler");
            return ReplyStatus::NoHandler;
        };
        let info = CallInfo {
            sender: job.sender,
            xid: Xid { sender: job.sender, seq: job.req.xid },
            msg_type: job.req.msg_type.clone(),
            order_key: job.req.order.as_ref().map(|(k, _)| k.clone()),
        };
        h(info, job.req.body.clone()).await
    }

    /// Records the outcome of `job`, sends it to the sender's newest connection, and starts
    /// the next call of its order key (`ran_ordered`: it held its key's turn).
    fn complete(self: &Arc<Self>, job: Job, status: ReplyStatus, ran_ordered: bool) {
        let xid = Xid { sender: job.sender, seq: job.req.xid };
        if self.metrics.enabled {
            self.metrics.handled.with(&[self.method_label(&job.req.msg_type), status_kind(&status)]).inc();
        }
        if let ReplyStatus::Ok(body) = &status {
            self.log_msg("reply sent", xid, job.sender, &job.req.msg_type, body);
        }
        let reply =
            wire::encode(&WireFrame::Reply(ReplyFrame { xid: job.req.xid, replier: self.self_id, status }));
        let now = self.env.clock.now();
        let (route, next) = {
            let mut senders = lock(&self.server.senders);
            let s = senders.entry(job.sender).or_insert_with(|| SenderState::new(now));
            if !self.cfg.bugs.double_exec {
                s.dedupe.finish(job.req.xid, reply.clone());
            }
            let next = match (&job.req.order, ran_ordered) {
                (Some((key, _)), true) => s.orders.get_mut(key).and_then(|k| k.finish(now)),
                _ => None,
            };
            (s.route().cloned(), next)
        };
        if let Some((_, next)) = next {
            self.start_job(next, false);
        }
        match route {
            Some(tx) => send_or_close(&tx, reply),
            None => debug!(%xid, "rpc reply cached: the sender has no connection now"),
        }
    }
}
