//! The backend side of gateways: hosting gated players ([`GateHost`]).
//!
//! A backend *hosts* a player for one binding (the gate that asked, and the gate's epoch for
//! the player) from a successful bind until the binding is released, replaced, or fenced:
//!
//! - **bind** (`_gate.bind`, on the player's order key): take the player's anchor object
//!   ([`GatedPlayer`], through the object store: borrowed from the previous host, or its dead
//!   owner waited out — never bypassed) and pin it; open a gated session
//!   ([`SessionService::open_gated`]) and log the player in on it *locally*
//!   ([`AccountManager::adopt_gated`]); then frames flow;
//! - **forward** (`_gate.forward`): a client frame of the binding goes into the gated
//!   session's input (waiting while it is full: backpressure to the gate); refused if the
//!   binding is not hosted here or the anchor is not held. The answer waits until the frame
//!   was handled (at most [`GatewayConfig::forward_answer_hold`]) and carries what the
//!   handling sent the client ([`super::outflow`]);
//! - **deliver**: what the game queues on the gated session at other times goes back to the
//!   gate in order (`_gate.deliver` on the player's order key, in batches, one at a time);
//!   every frame of the binding is numbered, so the gate puts the two paths back in order;
//! - **release** (`_gate.release`, on the order key, so after every forward): the input ends,
//!   the session handles what it has, delivers its replies and closes; then the binding ends
//!   (the anchor is unpinned) and the answer goes. Until then the binding is still hosted, so
//!   the guard lets the frames the session already accepted be handled here.
//!
//! **Fencing.** Each frame is handled only if, right before its handler starts, the binding
//! is still hosted here and the object store *holds* the anchor ([`Orm::holds`]: owned, and
//! the coordination lease held). The anchor moves only by lending (which happens after this
//! server stopped hosting, or it is not hosting any more by the time it answers) or by this
//! server's session expiring (after its lease ended): so two backends never handle one
//! player's frames in overlapping intervals, and a backend cut off from ZooKeeper stops before
//! its session can expire. A sweep every [`HOST_SWEEP_PERIOD`] ends hosting whose anchor is
//! gone or whose gate left the cluster (its clients are gone: DESIGN.md §10).
//!
//! Game code moves a player with [`GateHost::move_player`]: the gate does the switch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::{self, BoxFuture, FutureExt, Shared};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::messages::{
    BindPlayer, BindPlayerReply, DeliverFrames, DeliverFramesReply, ForwardFrame, ForwardFrameReply,
    MovePlayer, MovePlayerReply, ReleasePlayer, ReleasePlayerReply,
};
use super::outflow::{Numbered, Out, Outflow};
use super::GatewayConfig;
use super::{
    transport_from_wire, GateBugs, LOG_TARGET, RPC_BIND, RPC_DELIVER, RPC_FORWARD, RPC_MOVE, RPC_RELEASE,
};
use crate::account::keyed_lock::KeyedLocks;
use crate::account::{self, AccountManager};
use crate::cluster::{Cluster, PeerId, ViewState};
use crate::env::{lock, timeout, Env, NetError, TaskHandle};
use crate::orm::{Model, ObjectRef, Orm};
use crate::rpc::{CallOptions, HandlerError, Rpc};
use crate::session::{Guard, Session, SessionService};

/// Most frames in one delivery to the gate.
pub const DELIVER_BATCH_MAX: usize = 64;
/// Deadline of one delivery to the gate.
pub const DELIVER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a release waits for the player's queued frames to be handled and their replies
/// delivered (then it answers anyway; what is left is dropped with the session).
pub const RELEASE_WAIT_MAX: Duration = Duration::from_secs(5);
/// Period of the sweep that ends hosting whose anchor is gone or whose gate left.
pub const HOST_SWEEP_PERIOD: Duration = Duration::from_millis(250);
/// Deadline of a move request to the player's gate.
pub const MOVE_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A gated player's anchor object: whoever owns it hosts the player. Written at each bind
/// (so the row says which gate and binding it was last bound for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatedPlayer {
    pub player: String,
    /// The gate of the last bind (a `PeerId`'s text).
    pub gate: String,
    /// The gate's epoch of the last bind.
    pub epoch: u64,
    /// Binds so far.
    pub binds: u64,
}

impl Model for GatedPlayer {
    const MODEL: &'static str = "gate_player";
    fn key(&self) -> String {
        self.player.clone()
    }
}

/// Told by a backend each time a gated frame passed the fence and is about to be handled
/// (right after the check, as the object store's observer is told of acts).
pub trait HostObserver: Send + Sync {
    /// `binding` names the binding (`gate/epoch`) the frame is handled under.
    fn handling(&self, player: &str, binding: &str);
}

/// Why [`GateHost::move_player`] did not start a move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    #[error("the player is not hosted here")]
    NotHosted,
    #[error("the gate refused: {0}")]
    Refused(String),
    #[error("the gate did not answer: {0}")]
    Unreachable(String),
}

/// One hosted binding.
struct Hosted {
    gate: PeerId,
    epoch: u64,
    session: Session,
    /// Dropped to end the session's input (the release).
    input: Option<mpsc::Sender<Bytes>>,
    /// Completes when every frame the session queued was delivered (or dropped).
    delivered: Shared<BoxFuture<'static, ()>>,
    /// The binding's output: numbering, and the forward waiting for its frame's output.
    flow: Arc<Flow>,
}

/// An [`Outflow`] and the forwards waiting on it.
#[derive(Default)]
struct Flow {
    st: Mutex<(Outflow, BTreeMap<u64, futures::channel::oneshot::Sender<Numbered>>)>,
}

impl Flow {
    /// Runs `f` on the outflow and answers the forwards its outputs name; returns the
    /// deliveries, in order.
    fn with(&self, f: impl FnOnce(&mut Outflow) -> Vec<Out>) -> Vec<Numbered> {
        let mut st = lock(&self.st);
        let (outflow, waiting) = &mut *st;
        f(outflow).into_iter().filter_map(|out| answer(waiting, out)).collect()
    }

    /// A forward waits for its frame's output: its id and where the answer comes (at once
    /// if the output ended already).
    fn wait(&self) -> (u64, futures::channel::oneshot::Receiver<Numbered>) {
        let (tx, rx) = futures::channel::oneshot::channel();
        let mut st = lock(&self.st);
        let (outflow, waiting) = &mut *st;
        let (id, earlier) = outflow.wait();
        waiting.insert(id, tx);
        if let Some(out) = earlier {
            let delivery = answer(waiting, out);
            debug_assert!(delivery.is_none(), "waiting delivers nothing");
        }
        (id, rx)
    }

    /// `forward`'s hold ran out: what came out for it so far (`None`: answered meanwhile).
    fn give_up(&self, forward: u64) -> Option<Numbered> {
        let mut st = lock(&self.st);
        st.1.remove(&forward);
        st.0.give_up(forward)
    }
}

/// Sends an [`Out::Answer`] to its waiting forward (if it still waits); gives back a delivery.
fn answer(
    waiting: &mut BTreeMap<u64, futures::channel::oneshot::Sender<Numbered>>,
    out: Out,
) -> Option<Numbered> {
    match out {
        Out::Answer { forward, frames } => {
            if let Some(tx) = waiting.remove(&forward) {
                let _ = tx.send(frames);
            }
            None
        }
        Out::Deliver(d) => Some(d),
    }
}

/// Most delivery batches queued between a gated session's writer and the delivery task: a
/// writer that finds the queue full waits (the session's own send queue then fills, as a
/// direct session's would behind a slow socket).
pub const DELIVER_QUEUE_MAX: usize = 256;

/// A gated session's output (its connection's writing half): each frame is numbered as the
/// session's writer sends it, on the session's own task, and either goes into the answer of
/// the forward waiting for it — answered right here, with no task in between — or is queued
/// for [`deliver_loop`]. Each frame yields at most one delivery batch, so a writer that found
/// the queue ready can always send.
struct OutputSink {
    flow: Arc<Flow>,
    deliveries: mpsc::Sender<Numbered>,
}

impl futures::Sink<Bytes> for OutputSink {
    type Error = NetError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        self.deliveries.poll_ready(cx).map_err(|_| NetError::Closed)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> Result<(), NetError> {
        let this = &mut *self;
        for batch in this.flow.with(|o| o.take(std::iter::once(frame))) {
            this.deliveries.start_send(batch).map_err(|_| NetError::Closed)?;
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        self.deliveries.close_channel();
        Poll::Ready(Ok(()))
    }
}

/// The backend side of gateways. Cheap to clone.
#[derive(Clone)]
pub struct GateHost {
    inner: Arc<Inner>,
}

struct Inner {
    env: Env,
    rpc: Rpc,
    orm: Orm,
    accounts: AccountManager,
    sessions: SessionService,
    cluster: Cluster,
    bugs: GateBugs,
    observer: Option<Arc<dyn HostObserver>>,
    /// [`GatewayConfig::forward_answer_hold`].
    answer_hold: Duration,
    hosted: Mutex<BTreeMap<String, Hosted>>,
    /// Serialises binds and releases of one player.
    ops: KeyedLocks,
    tasks: Mutex<Vec<TaskHandle>>,
}

impl GateHost {
    /// Registers the gate handlers on `rpc` (the sweep starts with the first bind). All parts
    /// belong to this backend; `sessions` is the service whose handlers gated players reach.
    /// Of `cfg` the backend side uses `bugs`, `host_observer` and `forward_answer_hold`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        env: Env,
        rpc: Rpc,
        orm: Orm,
        accounts: AccountManager,
        sessions: SessionService,
        cluster: Cluster,
        cfg: &GatewayConfig,
    ) -> GateHost {
        let inner = Arc::new(Inner {
            env,
            rpc,
            orm,
            accounts,
            sessions,
            cluster,
            bugs: cfg.bugs,
            observer: cfg.host_observer.clone(),
            answer_hold: cfg.forward_answer_hold,
            hosted: Mutex::default(),
            ops: KeyedLocks::default(),
            tasks: Mutex::default(),
        });
        register(&inner);
        GateHost { inner }
    }

    /// Players hosted here now (sorted).
    pub fn hosted(&self) -> Vec<String> {
        lock(&self.inner.hosted).keys().cloned().collect()
    }

    /// True if `session` is a gated session hosted here.
    pub fn is_gated(&self, session: &Session) -> bool {
        lock(&self.inner.hosted).values().any(|h| h.session == *session)
    }

    /// Asks `player`'s gate to move the player to backend `target`. Returns once the switch
    /// has *started* (the gate holds the player's frames); the gate finishes it after this
    /// backend handled every frame it already has, and tells the client `sc_moved`. So a
    /// handler may call it and return: its own reply still reaches the client, before
    /// `sc_moved`.
    pub async fn move_player(&self, player: &str, target: PeerId) -> Result<(), MoveError> {
        let binding = lock(&self.inner.hosted).get(player).map(|h| (h.gate, h.epoch));
        let Some((gate, epoch)) = binding else { return Err(MoveError::NotHosted) };
        let req = MovePlayer {
            player: player.to_string(),
            epoch,
            target: Bytes::copy_from_slice(target.as_bytes()),
        };
        let opts = CallOptions::default().with_timeout(MOVE_CALL_TIMEOUT);
        match self.inner.rpc.call::<_, MovePlayerReply>(gate, RPC_MOVE, &req, opts).await {
            Ok(r) if r.started => Ok(()),
            Ok(r) => Err(MoveError::Refused(r.reason)),
            Err(e) => Err(MoveError::Unreachable(e.to_string())),
        }
    }

    /// Stops the sweep and ends every hosted binding (their sessions close).
    pub async fn stop(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        let all = std::mem::take(&mut *lock(&self.inner.hosted));
        for (player, h) in all {
            self.inner.orm.unpin(&anchor(&player));
            h.session.close("backend stopping");
        }
    }
}

fn anchor(player: &str) -> ObjectRef {
    ObjectRef::of::<GatedPlayer>(player)
}

impl Inner {
    /// Starts the sweep at the first bind (a server no gate ever used runs no extra task).
    fn ensure_sweep(self: &Arc<Self>) {
        let mut tasks = lock(&self.tasks);
        if tasks.is_empty() {
            tasks.push(self.env.spawn.spawn("gate-host-sweep", sweep_loop(Arc::downgrade(self)).boxed()));
        }
    }

    /// May a frame of `player` under (`gate`, `epoch`) be handled here now?
    fn may_handle(&self, player: &str, gate: PeerId, epoch: u64) -> bool {
        let yes = self.bugs.no_player_fence || {
            let hosted = lock(&self.hosted).get(player).is_some_and(|h| h.gate == gate && h.epoch == epoch);
            hosted && self.orm.holds(&anchor(player)).is_some()
        };
        if yes {
            if let Some(o) = &self.observer {
                o.handling(player, &format!("{gate}/{epoch}"));
            }
        }
        yes
    }

    /// Removes `player`'s binding if it is (`gate`, `epoch`) (any binding with `None`).
    fn take_hosted(&self, player: &str, binding: Option<(PeerId, u64)>) -> Option<Hosted> {
        let mut hosted = lock(&self.hosted);
        let matches =
            hosted.get(player).is_some_and(|h| binding.is_none_or(|(g, e)| h.gate == g && h.epoch == e));
        if !matches {
            return None;
        }
        let h = hosted.remove(player);
        drop(hosted);
        self.orm.unpin(&anchor(player));
        h
    }

    async fn bind(self: &Arc<Self>, gate: PeerId, req: BindPlayer) -> BindPlayerReply {
        let refuse = |reason: String| BindPlayerReply { bound: false, reason };
        let player = req.player;
        if let Err(e) = account::validate_account(&player) {
            return refuse(format!("invalid player name: {e}"));
        }
        let Some(transport) = transport_from_wire(req.transport) else {
            return refuse(format!("unknown transport {}", req.transport));
        };
        let client: SocketAddr =
            req.client_addr.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _g = self.ops.lock(&player).await;
        if lock(&self.hosted).get(&player).is_some_and(|h| h.gate == gate && h.epoch == req.epoch) {
            crate::probe!("gate host: retransmitted bind answered again");
            return BindPlayerReply { bound: true, reason: String::new() }; // a retransmission
        }
        // An older binding of this player here (another gate's, or an earlier epoch) ends.
        if let Some(old) = self.take_hosted(&player, None) {
            old.session.close("rebound");
        }
        // Take the anchor: owning it is hosting the player (the planted bug skips it).
        if !self.bugs.no_player_fence {
            if let Err(e) = self.take_anchor(&player, gate, req.epoch).await {
                crate::probe!("gate host: bind refused, the player's anchor is not taken");
                return refuse(format!("anchor not taken: {e}"));
            }
        }
        self.orm.pin(&anchor(&player));
        let guard: Guard = {
            let weak = Arc::downgrade(self);
            let (player, epoch) = (player.clone(), req.epoch);
            Arc::new(move || weak.upgrade().is_some_and(|i| i.may_handle(&player, gate, epoch)))
        };
        let flow = Arc::new(Flow::default());
        let (deliveries, to_deliver) = mpsc::channel::<Numbered>(DELIVER_QUEUE_MAX);
        let output = Box::pin(OutputSink { flow: flow.clone(), deliveries });
        let gated = match self.sessions.open_gated(transport, client, guard, output) {
            Ok(g) => g,
            Err(e) => {
                self.orm.unpin(&anchor(&player));
                return refuse(format!("no gated session: {e}"));
            }
        };
        if let Err(e) = self.accounts.adopt_gated(&player, account::link(&gated.session)).await {
            self.orm.unpin(&anchor(&player));
            gated.session.close("not adopted");
            return refuse(format!("not logged in here: {e}"));
        }
        let delivered = {
            let task =
                deliver_loop(self.rpc.clone(), gate, player.clone(), req.epoch, to_deliver, flow.clone());
            let (tx, rx) = futures::channel::oneshot::channel::<()>();
            let _detached = self.env.spawn.spawn(
                "gate-deliver",
                async move {
                    task.await;
                    let _ = tx.send(());
                }
                .boxed(),
            );
            rx.map(|_| ()).boxed().shared()
        };
        let hosted = Hosted {
            gate,
            epoch: req.epoch,
            session: gated.session,
            input: Some(gated.input),
            delivered,
            flow,
        };
        lock(&self.hosted).insert(player.clone(), hosted);
        self.ensure_sweep();
        info!(target: LOG_TARGET, node = %self.env.node, player, gate = ?gate, epoch = req.epoch, "player hosted");
        BindPlayerReply { bound: true, reason: String::new() }
    }

    /// One transaction on the anchor: borrows it (or waits out its dead owner) and records
    /// the binding.
    async fn take_anchor(&self, player: &str, gate: PeerId, epoch: u64) -> Result<(), crate::orm::OrmError> {
        let mut tx = self.orm.begin();
        let prev = tx.fetch::<GatedPlayer>(player).await?;
        // A gate's epochs for a player only grow (each login's above every earlier one's): a
        // bind of an older epoch is a stale one of an earlier login, still in flight. Taking
        // the player for it would end the hosting of the login that replaced it, and drop the
        // frames that binding had accepted.
        if let Some(p) = prev.as_ref().filter(|p| p.gate == gate.to_string() && p.epoch > epoch) {
            crate::probe!("gate host: stale bind of an earlier login refused");
            return Err(crate::orm::OrmError::Unavailable {
                object: format!("{}/{player}", GatedPlayer::MODEL),
                why: format!("stale bind: epoch {epoch} is older than the bound {}", p.epoch),
            });
        }
        let binds = prev.as_ref().map_or(0, |p| p.binds) + 1;
        let row = GatedPlayer { player: player.to_string(), gate: gate.to_string(), epoch, binds };
        if prev.is_some() {
            tx.put(&row)?;
        } else {
            tx.create(&row)?;
        }
        tx.commit().await
    }

    async fn forward(&self, gate: PeerId, req: ForwardFrame) -> ForwardFrameReply {
        let refuse = |reason: &str| ForwardFrameReply {
            accepted: false,
            reason: reason.into(),
            first_out: 0,
            frames: Vec::new(),
        };
        let input = lock(&self.hosted)
            .get(&req.player)
            .filter(|h| self.bugs.no_player_fence || (h.gate == gate && h.epoch == req.epoch))
            .and_then(|h| h.input.clone().map(|i| (i, h.flow.clone())));
        let Some((mut input, flow)) = input else {
            crate::probe!("gate host: frame for a player not hosted here refused");
            return refuse("not hosted here");
        };
        if !self.bugs.no_player_fence && self.orm.holds(&anchor(&req.player)).is_none() {
            crate::probe!("gate host: frame refused, the anchor is no longer held");
            return refuse("anchor not held");
        }
        // Waiting starts before the frame is queued, so its handling's end cannot be missed.
        let (id, mut answer) = flow.wait();
        let accepted = input.send(req.frame).await.is_ok();
        let out = if accepted {
            match timeout(&*self.env.clock, self.answer_hold, &mut answer).await {
                Ok(Ok(out)) => Some(out),
                _ => None,
            }
        } else {
            None
        };
        // Not answered in time (or the frame was refused): what came out so far, if the
        // outflow did not answer meanwhile.
        let out = out.or_else(|| flow.give_up(id)).or_else(|| answer.try_recv().ok().flatten());
        if out.is_none() {
            crate::probe!("gate host: forward answered without its frame's output");
        }
        let Numbered { first, frames } = out.unwrap_or(Numbered { first: 0, frames: Vec::new() });
        if accepted {
            ForwardFrameReply { accepted: true, reason: String::new(), first_out: first, frames }
        } else {
            ForwardFrameReply { first_out: first, frames, ..refuse("session closed") }
        }
    }

    async fn release(&self, gate: PeerId, req: ReleasePlayer) -> ReleasePlayerReply {
        let _g = self.ops.lock(&req.player).await;
        // Ends the input (later forwards of this binding are refused) but keeps the binding,
        // and the anchor pinned, while the session handles the frames it already accepted:
        // each was acknowledged to the gate, which will not send it to the next backend, and
        // the guard lets a frame be handled only while its binding is hosted here.
        let draining = lock(&self.hosted)
            .get_mut(&req.player)
            .filter(|h| h.gate == gate && h.epoch == req.epoch)
            .map(|h| {
                drop(h.input.take());
                (h.session.clone(), h.delivered.clone(), h.flow.clone())
            });
        let Some((session, delivered, flow)) = draining else {
            return ReleasePlayerReply { released: true, out_end: 0 };
        };
        if self.bugs.release_before_drain {
            drop(self.take_hosted(&req.player, Some((gate, req.epoch))));
        }
        if req.client_gone {
            session.close("client gone");
        }
        let done = future::join(session.done(), delivered);
        if timeout(&*self.env.clock, RELEASE_WAIT_MAX, done).await.is_err() {
            warn!(target: LOG_TARGET, node = %self.env.node, player = req.player, "release: the session did not finish in time");
            session.close("release timed out");
        }
        // Only now may the anchor go (unpinned) to the next backend.
        drop(self.take_hosted(&req.player, Some((gate, req.epoch))));
        info!(target: LOG_TARGET, node = %self.env.node, player = req.player, epoch = req.epoch, "player released");
        let out_end = lock(&flow.st).0.numbered();
        ReleasePlayerReply { released: true, out_end }
    }

    /// Ends hosting whose anchor is no longer held or whose gate left the cluster.
    fn sweep(&self) {
        let live_view = self.cluster.view_state() == ViewState::Live;
        let ended: Vec<(String, Hosted)> = {
            let mut hosted = lock(&self.hosted);
            let gone: Vec<String> = hosted
                .iter()
                .filter(|(p, h)| {
                    let anchor_lost = !self.bugs.no_player_fence && self.orm.holds(&anchor(p)).is_none();
                    let gate_left = live_view && self.cluster.peer_tags(h.gate).is_none();
                    anchor_lost || gate_left
                })
                .map(|(p, _)| p.clone())
                .collect();
            gone.into_iter().filter_map(|p| hosted.remove(&p).map(|h| (p, h))).collect()
        };
        for (player, h) in ended {
            self.orm.unpin(&anchor(&player));
            debug!(target: LOG_TARGET, node = %self.env.node, player, "hosting ended by the sweep");
            h.session.close(crate::session::NOT_HOSTED);
        }
    }
}

/// Delivers what a gated session sent outside its forwards' answers ([`OutputSink`]), in
/// order, one delivery at a time, joining batches whose numbers follow on (up to
/// [`DELIVER_BATCH_MAX`] frames); once the output ended, a forward still waiting gets what
/// came out for it.
async fn deliver_loop(
    rpc: Rpc,
    gate: PeerId,
    player: String,
    epoch: u64,
    mut queued: mpsc::Receiver<Numbered>,
    flow: Arc<Flow>,
) {
    let mut next = None;
    loop {
        let batch = match next.take() {
            Some(b) => b,
            None => match queued.next().await {
                Some(b) => b,
                None => break,
            },
        };
        let (Numbered { first, frames }, after) = join_following(batch, || queued.try_recv().ok());
        next = after;
        let n = frames.len();
        let req = DeliverFrames { player: player.clone(), epoch, frames, first_out: first };
        let opts = CallOptions::default().with_timeout(DELIVER_TIMEOUT).ordered(player.clone());
        match rpc.call::<_, DeliverFramesReply>(gate, RPC_DELIVER, &req, opts).await {
            Ok(r) if r.delivered => {}
            Ok(_) => {
                crate::probe!("gate host: delivery refused, the gate routes the player elsewhere");
                debug!(target: LOG_TARGET, player, frames = n, "delivery refused: the gate routes the player elsewhere")
            }
            Err(e) => debug!(target: LOG_TARGET, player, frames = n, error = %e, "delivery failed"),
        }
    }
    flow.with(|o| o.end().into_iter().collect());
}

/// `batch` joined with the batches `ready` has now whose numbers follow on, up to
/// [`DELIVER_BATCH_MAX`] frames; and the first batch taken that does not follow on (it
/// starts the next delivery). `ready` must not wait.
fn join_following(
    batch: Numbered,
    mut ready: impl FnMut() -> Option<Numbered>,
) -> (Numbered, Option<Numbered>) {
    let Numbered { first, mut frames } = batch;
    while frames.len() < DELIVER_BATCH_MAX {
        match ready() {
            Some(b)
                if b.first == first + frames.len() as u64
                    && frames.len() + b.frames.len() <= DELIVER_BATCH_MAX =>
            {
                frames.extend(b.frames)
            }
            Some(b) => return (Numbered { first, frames }, Some(b)),
            None => break,
        }
    }
    (Numbered { first, frames }, None)
}

async fn sweep_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        inner.sweep();
        let clock = inner.env.clock.clone();
        drop(inner);
        clock.sleep(HOST_SWEEP_PERIOD).await;
    }
}

/// Registers one handler that runs `f` on the host while it exists. A waiting handler (no
/// handler permit): a bind waits for the anchor's lend, a forward for its frame's handling, a
/// release for the session to drain; one of each at a time per player (the order key).
fn handle<Req, Rep, F, Fut>(inner: &Arc<Inner>, msg_type: &str, f: F)
where
    Req: prost::Message + Default + 'static,
    Rep: prost::Message + 'static,
    F: Fn(Arc<Inner>, PeerId, Req) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Rep> + Send + 'static,
{
    let w = Arc::downgrade(inner);
    inner.rpc.register_waiting_handler(msg_type, move |info, req: Req| {
        let inner = w.upgrade();
        async move {
            let inner = inner.ok_or_else(|| HandlerError::new("gate host stopped"))?;
            Ok(f(inner, info.sender, req).await)
        }
    });
}

fn register(inner: &Arc<Inner>) {
    handle(inner, RPC_BIND, |i, gate, req: BindPlayer| async move { i.bind(gate, req).await });
    handle(inner, RPC_FORWARD, |i, gate, req: ForwardFrame| async move { i.forward(gate, req).await });
    handle(inner, RPC_RELEASE, |i, gate, req: ReleasePlayer| async move { i.release(gate, req).await });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::HANDLED_MARKER;
    use futures::{FutureExt, SinkExt};

    fn f(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn numbered(first: u64, frames: &[&'static str]) -> Numbered {
        Numbered { first, frames: frames.iter().map(|s| f(s)).collect() }
    }

    #[test]
    fn the_session_writer_answers_a_waiting_forward_itself_and_queues_the_rest_for_delivery() {
        let flow = Arc::new(Flow::default());
        let (tx, mut queued) = mpsc::channel::<Numbered>(DELIVER_QUEUE_MAX);
        let mut sink = OutputSink { flow: flow.clone(), deliveries: tx };
        // A push before any forward waits: delivered.
        sink.send(f("push")).now_or_never().expect("never waits").expect("sent");
        assert_eq!(queued.try_recv().ok(), Some(numbered(0, &["push"])));
        // A forward waits; its frame's reply and the marker come out of the writer.
        let (_, mut answer) = flow.wait();
        sink.send(f("reply")).now_or_never().expect("never waits").expect("sent");
        assert_eq!(answer.try_recv().ok().flatten(), None, "not answered before the marker");
        sink.send(HANDLED_MARKER).now_or_never().expect("never waits").expect("sent");
        assert_eq!(
            answer.try_recv().ok().flatten(),
            Some(numbered(1, &["reply"])),
            "answered by the send itself"
        );
        assert_eq!(
            queued.try_recv(),
            Err(mpsc::TryRecvError::Empty),
            "nothing of the answer is delivered too"
        );
        // Closing ends the deliveries' queue.
        sink.close().now_or_never().expect("never waits").expect("closed");
        assert_eq!(queued.try_recv(), Err(mpsc::TryRecvError::Closed), "the queue ended (not merely empty)");
    }

    #[test]
    fn a_full_delivery_queue_holds_the_writer_until_a_batch_is_taken() {
        let flow = Arc::new(Flow::default());
        let (tx, mut queued) = mpsc::channel::<Numbered>(0);
        let mut sink = OutputSink { flow, deliveries: tx };
        sink.send(f("a")).now_or_never().expect("one slot per sender").expect("sent");
        assert!(sink.send(f("b")).now_or_never().is_none(), "the queue is full: the writer waits");
        assert_eq!(queued.try_recv().ok(), Some(numbered(0, &["a"])));
        sink.send(f("b")).now_or_never().expect("room again").expect("sent");
        assert_eq!(queued.try_recv().ok(), Some(numbered(1, &["b"])));
    }

    #[test]
    fn batches_that_follow_on_go_in_one_delivery_and_a_gap_starts_the_next() {
        let mut ready =
            vec![numbered(1, &["b"]), numbered(2, &["c", "d"]), numbered(7, &["x"]), numbered(8, &["y"])]
                .into_iter();
        let (joined, next) = join_following(numbered(0, &["a"]), || ready.next());
        assert_eq!(joined, numbered(0, &["a", "b", "c", "d"]));
        assert_eq!(next, Some(numbered(7, &["x"])), "numbers 4..7 went in answers: a delivery of its own");
        assert_eq!(ready.next(), Some(numbered(8, &["y"])), "nothing taken beyond the gap");
    }

    #[test]
    fn a_delivery_never_grows_past_its_frame_limit() {
        let big: Vec<&'static str> = vec!["f"; DELIVER_BATCH_MAX - 1];
        let mut ready = vec![numbered(63, &["g", "h"]), numbered(65, &["i"])].into_iter();
        let (joined, next) = join_following(numbered(0, &big), || ready.next());
        assert_eq!(joined.frames.len(), DELIVER_BATCH_MAX - 1, "two more would pass the limit");
        assert_eq!(next, Some(numbered(63, &["g", "h"])));
        let (full, none) = join_following(numbered(0, &vec!["f"; DELIVER_BATCH_MAX]), || panic!("not asked"));
        assert_eq!((full.frames.len(), none), (DELIVER_BATCH_MAX, None));
    }
}
