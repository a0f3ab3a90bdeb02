//! The gate side of gateways ([`Gateway`]): client sessions, the cluster-wide login, and
//! each player's route to a backend ([`super::route`]).
//!
//! # Client protocol (on every port of the gate's session service)
//! - `cs_gate_login {user_name, session_key}`: the key is checked (signature, expiry, user;
//!   a refusal is `_error {code: "session_key_rejected"}` and the session stays open); the
//!   user is logged in cluster-wide (the account manager: one live session per user across
//!   all gates and servers); the player is bound to the least-loaded backend of
//!   [`GatewayConfig::backend_tag`]; then `sc_gate_login {error: false, backend}` (the
//!   backend's server name). Refusals: `sc_gate_login {error: true, error_message}` with
//!   `Already logged in`, `no backend`, `Server error`, or, for a user name that is not an
//!   account id (empty, or over 64 bytes; any UTF-8 is allowed),
//!   `account name must be 1 to 64 bytes of UTF-8, not N`.
//! - every other frame (any type without a handler here) goes to the player's backend as it
//!   is, in order; a frame before the login gets `_error {code: "gate_login_required"}`.
//! - what backends send the player comes back as they encoded it, in order.
//! - after a switch of backend the client gets `sc_moved {backend, recovered}`; its
//!   connection stays open. During the switch its frames are held (the gate's reader for the
//!   session waits; at most [`GatewayConfig::hold_max`], then the session is closed).
//!
//! # Who acts for a player
//! The gate forwards a player's frames only while the account manager says the player is
//! logged in *here* with the lease held (checked before each forward): a gate cut off from
//! ZooKeeper stops, and its links close when the lease lapses, like any server's.
//!
//! # Faults
//! A backend that leaves the cluster, refuses a forward, or does not answer one: its players
//! are re-bound to another backend (`recovered: true`), whose take of each player's anchor
//! object waits the old one out. A forward that failed after it may have been delivered is
//! not repeated (its fate is unknown; the client resends what was never answered); one that
//! never left, or was refused, goes to the new backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::host::HostObserver;
use super::messages::{
    BindPlayer, BindPlayerReply, DeliverFrames, DeliverFramesReply, ForwardFrame, ForwardFrameReply,
    MovePlayer, MovePlayerReply, ReleasePlayer, ReleasePlayerReply,
};
use super::outflow::{Accept, Numbered, OutOrder, OUTPUT_GAP_WAIT};
use super::route::{Bind, Phase, Route, Switched};
use super::{
    transport_to_wire, GateBugs, SessionKeys, GATE_LOAD_FIELD, LOG_TARGET, RPC_BIND, RPC_DELIVER,
    RPC_FORWARD, RPC_MOVE, RPC_RELEASE,
};
use crate::account::{self, AccountManager, LoginOutcome};
use crate::cluster::{Cluster, PeerId, ViewChange};
use crate::env::{lock, timeout, Env, MonoTime, TaskHandle};
use crate::rpc::{CallOptions, HandlerError, Rpc, RpcError};
use crate::session::{ProtocolError, Session, SessionService};

/// The client's login message on a gate, and its answer.
pub const CS_GATE_LOGIN: &str = "cs_gate_login";
pub const SC_GATE_LOGIN: &str = "sc_gate_login";
/// Sent to a client after its backend changed.
pub const SC_MOVED: &str = "sc_moved";
/// The tag of the backends a gate binds players to, by default.
pub const BACKEND_TAG_DEFAULT: &str = "game";
/// The status field backends are ordered by, by default (the reference game's).
pub const BACKEND_LOAD_FIELD_DEFAULT: &str = "user_count";
/// Pause between two bind attempts of one player.
pub const REBIND_PAUSE: Duration = Duration::from_millis(200);
/// How often the gate publishes its load ([`GATE_LOAD_FIELD`]) in its cluster status.
pub const LOAD_PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// Settings of a gate.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Players are bound to members with this tag.
    pub backend_tag: String,
    /// ... the least loaded first by this integer status field.
    pub backend_load_field: String,
    /// Deadline of one bind. Longer than the object store's `acquire_timeout`: a bind may
    /// wait out a dead backend's hold on the player.
    pub bind_timeout: Duration,
    /// Deadline of one forward and of one release.
    pub call_timeout: Duration,
    /// Longest a player's frames are held during a switch before its session is closed.
    pub hold_max: Duration,
    pub bugs: GateBugs,
    /// Backend side: told of each gated frame about to be handled (the scenario's evidence).
    pub host_observer: Option<Arc<dyn HostObserver>>,
    /// Backend side: longest a forward's answer waits for its frame's output
    /// ([`super::outflow::FORWARD_ANSWER_HOLD`] by default; zero answers at once and sends
    /// all output by `_gate.deliver`).
    pub forward_answer_hold: Duration,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("backend_tag", &self.backend_tag)
            .field("backend_load_field", &self.backend_load_field)
            .field("bind_timeout", &self.bind_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("hold_max", &self.hold_max)
            .field("bugs", &self.bugs)
            .field("host_observer", &self.host_observer.as_ref().map(|_| "set"))
            .field("forward_answer_hold", &self.forward_answer_hold)
            .finish()
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            backend_tag: BACKEND_TAG_DEFAULT.into(),
            backend_load_field: BACKEND_LOAD_FIELD_DEFAULT.into(),
            bind_timeout: Duration::from_secs(25),
            call_timeout: Duration::from_secs(2),
            hold_max: Duration::from_secs(30),
            bugs: GateBugs::default(),
            host_observer: None,
            forward_answer_hold: super::outflow::FORWARD_ANSWER_HOLD,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CsGateLogin {
    user_name: String,
    session_key: String,
}

#[derive(Debug, Serialize)]
struct ScGateLogin<'a> {
    error: bool,
    backend: &'a str,
}

/// Told about each switch (moves and recoveries): the scenario's and the bench's hook.
pub trait GatewayObserver: Send + Sync {
    fn switched(&self, player: &str, backend: PeerId, moved: bool, recovered: bool, pause: Duration);
}

/// One logged-in player on this gate.
struct Player {
    session: Session,
    route: Route,
    /// Readers waiting for the route to be bound again.
    waiters: Vec<oneshot::Sender<()>>,
    /// True while a task drives binds for this player.
    driving: bool,
    /// The numbering of the current binding's output (module [`super::outflow`]).
    out: OutOrder,
    /// Waiting for `out` to move on (a batch whose predecessor is in flight, a release).
    out_waiters: Vec<oneshot::Sender<()>>,
}

/// The gate side. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    env: Env,
    rpc: Rpc,
    accounts: AccountManager,
    sessions: SessionService,
    cluster: Cluster,
    keys: SessionKeys,
    cfg: GatewayConfig,
    observer: Option<Arc<dyn GatewayObserver>>,
    players: Mutex<BTreeMap<String, Player>>,
    /// Per player, the backends of its bind calls in flight (also those of an earlier login
    /// of the player here, which a new login replaced).
    binds_in_flight: Mutex<BTreeMap<String, Vec<PeerId>>>,
    /// Logins so far: the high half of their routes' epochs.
    logins: std::sync::atomic::AtomicU64,
    tasks: Mutex<Vec<TaskHandle>>,
}

impl Gateway {
    /// Wires the gate into `sessions` (the login handler, the forwarding of every other
    /// frame, the closing of sessions) and `rpc` (deliveries and move requests from
    /// backends), and starts watching the cluster for lost backends. Call between
    /// [`SessionService::bind`] and [`SessionService::serve`], after
    /// [`AccountManager::attach_sessions`].
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        env: Env,
        rpc: Rpc,
        accounts: AccountManager,
        sessions: SessionService,
        cluster: Cluster,
        keys: SessionKeys,
        cfg: GatewayConfig,
        observer: Option<Arc<dyn GatewayObserver>>,
    ) -> Gateway {
        let inner = Arc::new(Inner {
            env,
            rpc,
            accounts,
            sessions,
            cluster,
            keys,
            cfg,
            observer,
            players: Mutex::default(),
            binds_in_flight: Mutex::default(),
            logins: Default::default(),
            tasks: Mutex::default(),
        });
        register(&inner);
        let watch = inner.env.spawn.spawn("gate-watch", watch_loop(Arc::downgrade(&inner)).boxed());
        let load = inner.env.spawn.spawn("gate-load", load_loop(Arc::downgrade(&inner)).boxed());
        lock(&inner.tasks).extend([watch, load]);
        Gateway { inner }
    }

    /// Players logged in on this gate (sorted).
    pub fn players(&self) -> Vec<String> {
        lock(&self.inner.players).keys().cloned().collect()
    }

    /// The backend `player`'s frames go to now (`None` while held or not here).
    pub fn backend_of(&self, player: &str) -> Option<PeerId> {
        lock(&self.inner.players).get(player).and_then(|p| p.route.target()).map(|(b, _)| b)
    }

    /// Stops the watchers (sessions close with the session service).
    pub fn stop(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
    }
}

impl Inner {
    fn now(&self) -> MonoTime {
        self.env.clock.now()
    }

    fn backend_name(&self, peer: PeerId) -> String {
        self.cluster.peers(true).get(&peer).map(|i| i.name.clone()).unwrap_or_else(|| peer.to_string())
    }

    /// The least-loaded backend, preferring any but `avoid`.
    fn choose_backend(&self, avoid: Option<PeerId>) -> Option<PeerId> {
        let all = self.cluster.peers_by_load(&self.cfg.backend_tag, &self.cfg.backend_load_field, false);
        all.iter().copied().find(|p| Some(*p) != avoid).or_else(|| all.first().copied())
    }

    async fn login(self: &Arc<Self>, s: Session, body: Value) {
        let refuse = |msg: &str| {
            let _ = s.send_json(SC_GATE_LOGIN, json!({"error": true, "error_message": msg}));
        };
        let Ok(req) = serde_json::from_value::<CsGateLogin>(body) else {
            let e = ProtocolError::BadBody {
                msg_type: CS_GATE_LOGIN.into(),
                reason: "user_name and session_key must be strings".into(),
            };
            let _ = s.send_error(&e);
            return;
        };
        let user = req.user_name;
        if !self.cfg.bugs.unchecked_session_key {
            if let Err(e) = self.keys.verify_for(&req.session_key, &user, self.env.clock.wall_now()) {
                crate::probe!("gate: session key refused");
                debug!(target: LOG_TARGET, node = %self.env.node, user, error = %e, "session key refused");
                let _ = s.send_error(&ProtocolError::SessionKeyRejected(e.to_string()));
                return;
            }
        }
        if let Err(e) = account::validate_account(&user) {
            return refuse(&e.to_string());
        }
        if self.accounts.account_of(s.id()).is_some() {
            return refuse("Already logged in");
        }
        match self.accounts.check_and_set_logged_in(&user, account::link(&s)).await {
            Ok(LoginOutcome::LoggedIn) => {}
            Ok(LoginOutcome::AlreadyLoggedIn { .. }) => return refuse("Already logged in"),
            Err(e @ account::AccountError::InvalidAccount { .. }) => return refuse(&e.to_string()),
            Err(e) => {
                info!(target: LOG_TARGET, node = %self.env.node, user, error = %e, "gate login failed");
                return refuse("Server error");
            }
        }
        // A bind of an earlier login of the player may still be in flight (its task does not
        // know it was replaced): on another backend it could end after this login's and take
        // the player's anchor from it. On the same backend the RPC order key puts this
        // login's bind behind it, and the newer binding replaces the older there.
        let in_flight = lock(&self.binds_in_flight).get(&user).and_then(|b| b.last().copied());
        let is_live_backend =
            |b: PeerId| self.cluster.peer_tags(b).is_some_and(|t| t.contains(&self.cfg.backend_tag));
        let backend = match in_flight.filter(|b| is_live_backend(*b)) {
            Some(b) => {
                crate::probe!("gate: a login follows its earlier login's bind still in flight");
                Some(b)
            }
            None => self.choose_backend(None),
        };
        let Some(backend) = backend else {
            let _ = self.accounts.set_logged_out(&user).await;
            return refuse("no backend");
        };
        // Each login's epochs start above every earlier login's (module `route`).
        let base = self.logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 32;
        let (route, _) = Route::new(backend, base, self.now());
        let waiter = {
            let mut players = lock(&self.players);
            let (tx, rx) = oneshot::channel();
            players.insert(
                user.clone(),
                Player {
                    session: s.clone(),
                    route,
                    waiters: vec![tx],
                    driving: false,
                    out: OutOrder::new(),
                    out_waiters: Vec::new(),
                },
            );
            rx
        };
        self.drive(&user);
        let bound = timeout(&*self.env.clock, self.cfg.hold_max, waiter).await;
        let target = lock(&self.players).get(&user).filter(|p| p.session == s).and_then(|p| p.route.target());
        match (bound, target) {
            (Ok(Ok(())), Some((b, _))) => {
                let name = self.backend_name(b);
                let _ = s.send_json(
                    SC_GATE_LOGIN,
                    serde_json::to_value(ScGateLogin { error: false, backend: &name }).unwrap_or_default(),
                );
            }
            _ => {
                refuse("Server error");
                s.close("no backend took the player");
            }
        }
    }

    /// Starts a task binding `player` until bound (unless one runs already).
    fn drive(self: &Arc<Self>, player: &str) {
        {
            let mut players = lock(&self.players);
            let Some(p) = players.get_mut(player) else { return };
            if p.driving {
                return;
            }
            p.driving = true;
        }
        let me = self.clone();
        let player = player.to_string();
        drop(self.env.spawn.spawn("gate-bind", async move { me.bind_until_bound(&player).await }.boxed()));
    }

    /// Binds `player` (choosing a backend again after each failure) until it is bound, it
    /// left, a move took over, or it was held for `hold_max`.
    async fn bind_until_bound(self: &Arc<Self>, player: &str) {
        let started = self.now();
        loop {
            let step = {
                let mut players = lock(&self.players);
                let Some(p) = players.get_mut(player) else { return };
                let step = match p.route.phase() {
                    Phase::Binding { to, .. } => Some(Bind { to, epoch: p.route.epoch() }),
                    Phase::Recovering { lost } => match self.choose_backend(Some(lost)) {
                        Some(to) => p.route.begin_rebind(to),
                        None => None,
                    },
                    Phase::Bound { .. } | Phase::Releasing { .. } => {
                        p.driving = false;
                        return;
                    }
                };
                step.map(|b| (b, p.session.clone()))
            };
            if let Some((bind, session)) = step {
                let req = BindPlayer {
                    player: player.to_string(),
                    epoch: bind.epoch,
                    transport: transport_to_wire(session.transport()),
                    client_addr: session.peer_addr().to_string(),
                };
                let opts =
                    CallOptions::default().with_timeout(self.cfg.bind_timeout).ordered(player.to_string());
                lock(&self.binds_in_flight).entry(player.to_string()).or_default().push(bind.to);
                let reply = self.rpc.call::<_, BindPlayerReply>(bind.to, RPC_BIND, &req, opts).await;
                {
                    let mut in_flight = lock(&self.binds_in_flight);
                    if let Some(b) = in_flight.get_mut(player) {
                        if let Some(i) = b.iter().position(|p| *p == bind.to) {
                            b.remove(i);
                        }
                        if b.is_empty() {
                            in_flight.remove(player);
                        }
                    }
                }
                let bound = match &reply {
                    Ok(r) if r.bound => true,
                    Ok(r) => {
                        crate::probe!("gate: bind refused by the backend");
                        debug!(target: LOG_TARGET, node = %self.env.node, player, reason = r.reason, "bind refused");
                        false
                    }
                    Err(e) => {
                        crate::probe!("gate: bind call failed");
                        debug!(target: LOG_TARGET, node = %self.env.node, player, error = %e, "bind failed");
                        false
                    }
                };
                let now = self.now();
                let switched = {
                    let mut players = lock(&self.players);
                    let Some(p) = players.get_mut(player) else { return };
                    if bound {
                        let sw = p.route.on_bound(bind.epoch, now);
                        if sw.is_some() {
                            p.driving = false;
                            for w in p.waiters.drain(..) {
                                let _ = w.send(());
                            }
                        }
                        sw.map(|sw| (sw, p.session.clone()))
                    } else {
                        p.route.on_bind_failed(bind.epoch, now);
                        None
                    }
                };
                if let Some((sw, session)) = switched {
                    self.switched(player, &session, sw);
                    return;
                }
                if bound {
                    continue; // stale answer: look at the route again
                }
            }
            if self.now().saturating_since(started) >= self.cfg.hold_max {
                let session = lock(&self.players).get_mut(player).map(|p| {
                    p.driving = false;
                    p.session.clone()
                });
                if let Some(s) = session {
                    crate::probe!("gate: no backend took the player, session closed");
                    warn!(target: LOG_TARGET, node = %self.env.node, player, "no backend took the player: closing its session");
                    s.close("no backend");
                }
                return;
            }
            self.env.clock.sleep(REBIND_PAUSE).await;
        }
    }

    fn switched(&self, player: &str, session: &Session, sw: Switched) {
        info!(target: LOG_TARGET, node = %self.env.node, player, backend = ?sw.backend, moved = sw.moved,
            recovered = sw.recovered, pause_us = sw.pause.as_micros() as u64, "player bound");
        crate::probe!(sw.moved && sw.recovered, "gate: player recovered on a new backend after a failure");
        crate::probe!(sw.moved && !sw.recovered, "gate: player moved between backends without a reconnect");
        if sw.moved {
            let name = self.backend_name(sw.backend);
            let _ = session.send_json(SC_MOVED, json!({"backend": name, "recovered": sw.recovered}));
        }
        if let Some(o) = &self.observer {
            o.switched(player, sw.backend, sw.moved, sw.recovered, sw.pause);
        }
    }

    /// A client frame for the backend: forward it (waiting while the route is held).
    async fn forward(self: &Arc<Self>, s: Session, frame: Bytes) {
        let Some(player) = self.accounts.account_of(s.id()) else {
            let _ = s.send_error(&ProtocolError::GateLoginRequired);
            return;
        };
        let started = self.now();
        loop {
            if !self.accounts.is_logged_in_here(&player) {
                return; // the lease lapsed or the player left: the link is being closed
            }
            let (target, waiter) = {
                let mut players = lock(&self.players);
                let Some(p) = players.get_mut(&player).filter(|p| p.session == s) else { return };
                let target = match (p.route.target(), p.route.phase()) {
                    (Some(t), _) => Some(t),
                    // The planted bug: during a move, frames keep going to the old backend.
                    (None, Phase::Releasing { from, .. }) if self.cfg.bugs.forward_during_move => {
                        Some((from, p.route.epoch()))
                    }
                    (None, _) => None,
                };
                if target.is_some() {
                    (target, None)
                } else {
                    let (tx, rx) = oneshot::channel();
                    p.waiters.push(tx);
                    (None, Some(rx))
                }
            };
            let Some((backend, epoch)) = target else {
                let left = self.cfg.hold_max.saturating_sub(self.now().saturating_since(started));
                if let Some(w) = waiter {
                    if timeout(&*self.env.clock, left, w).await.is_err() {
                        crate::probe!("gate: frames held too long, session closed");
                        warn!(target: LOG_TARGET, node = %self.env.node, player, "frames held too long: closing the session");
                        s.close("backend unavailable");
                        return;
                    }
                }
                continue;
            };
            let req = ForwardFrame { player: player.clone(), epoch, frame: frame.clone() };
            let opts = CallOptions::default().with_timeout(self.cfg.call_timeout).ordered(player.clone());
            let mut reply = self.rpc.call::<_, ForwardFrameReply>(backend, RPC_FORWARD, &req, opts).await;
            if let Ok(r) = &mut reply {
                if !r.frames.is_empty() {
                    let batch = Numbered { first: r.first_out, frames: std::mem::take(&mut r.frames) };
                    self.output(&player, backend, epoch, batch).await;
                }
            }
            match reply {
                Ok(r) if r.accepted => return,
                Ok(r) => {
                    // Not taken: safe to send again once re-bound.
                    crate::probe!("gate: forward refused by the backend, held for a re-bind");
                    debug!(target: LOG_TARGET, node = %self.env.node, player, reason = r.reason, "forward refused");
                    self.lost(&player, backend, epoch);
                }
                Err(RpcError::Unreachable(_)) => self.lost(&player, backend, epoch),
                Err(e) => {
                    // Maybe delivered: not repeated.
                    crate::probe!("gate: forward outcome unknown, frame not repeated");
                    debug!(target: LOG_TARGET, node = %self.env.node, player, error = %e, "forward failed: frame dropped");
                    self.lost(&player, backend, epoch);
                    return;
                }
            }
        }
    }

    /// `backend` failed the binding `epoch` of `player`: re-bind elsewhere.
    fn lost(self: &Arc<Self>, player: &str, backend: PeerId, epoch: u64) {
        let changed = {
            let mut players = lock(&self.players);
            let Some(p) = players.get_mut(player) else { return };
            p.route.epoch() == epoch && p.route.on_backend_lost(backend, self.now())
        };
        if changed {
            self.drive(player);
        }
    }

    async fn deliver(&self, backend: PeerId, req: DeliverFrames) -> DeliverFramesReply {
        let batch = Numbered { first: req.first_out, frames: req.frames };
        DeliverFramesReply { delivered: self.output(&req.player, backend, req.epoch, batch).await }
    }

    /// Frames of `player`'s binding (`backend`, `epoch`) for its client: sent in number order,
    /// after waiting (at most [`OUTPUT_GAP_WAIT`]) for numbers still in flight on the other
    /// path. False if the gate no longer routes the player to that binding.
    async fn output(&self, player: &str, backend: PeerId, epoch: u64, batch: Numbered) -> bool {
        let started = self.now();
        let mut skip = false;
        loop {
            let wait = {
                let mut players = lock(&self.players);
                let Some(p) = players.get_mut(player).filter(|p| p.route.delivers(backend, epoch)) else {
                    return false;
                };
                match p.out.accept(epoch, &batch, skip) {
                    Accept::Send(frames) => {
                        // Under the lock: two paths' frames leave in number order.
                        for f in frames {
                            if p.session.send_encoded(f).is_err() {
                                break;
                            }
                        }
                        for w in p.out_waiters.drain(..) {
                            let _ = w.send(());
                        }
                        return true;
                    }
                    Accept::Wait => {
                        let (tx, rx) = oneshot::channel();
                        p.out_waiters.push(tx);
                        rx
                    }
                }
            };
            if !self.out_moved(wait, started).await {
                crate::probe!("gate: output numbers missing past the wait, skipped");
                debug!(target: LOG_TARGET, node = %self.env.node, player, first = batch.first, "output numbers missing: skipped");
                skip = true;
            }
        }
    }

    /// Waits for a player's output numbering to move on (`wait`, a registered out-waiter),
    /// until [`OUTPUT_GAP_WAIT`] after `started`. False once that has passed.
    async fn out_moved(&self, wait: oneshot::Receiver<()>, started: MonoTime) -> bool {
        let left = OUTPUT_GAP_WAIT.saturating_sub(self.now().saturating_since(started));
        !left.is_zero() && timeout(&*self.env.clock, left, wait).await.is_ok()
    }

    /// Waits (at most [`OUTPUT_GAP_WAIT`]) until the gate has sent `player`'s client the
    /// frames numbered below `end` of binding `epoch`.
    async fn output_sent(&self, player: &str, epoch: u64, end: u64) {
        let started = self.now();
        loop {
            let wait = {
                let mut players = lock(&self.players);
                let Some(p) = players.get_mut(player) else { return };
                if p.out.next(epoch) >= end {
                    return;
                }
                let (tx, rx) = oneshot::channel();
                p.out_waiters.push(tx);
                rx
            };
            if !self.out_moved(wait, started).await {
                crate::probe!("gate: a released binding's last output never came");
                return;
            }
        }
    }

    fn start_move(self: &Arc<Self>, backend: PeerId, req: MovePlayer) -> MovePlayerReply {
        let refuse = |reason: String| MovePlayerReply { started: false, reason };
        let Some(target) = PeerId::from_slice(&req.target) else { return refuse("bad target id".into()) };
        let is_backend = self.cluster.peer_tags(target).is_some_and(|t| t.contains(&self.cfg.backend_tag));
        if !is_backend {
            return refuse(format!("{target} is not a live {} server", self.cfg.backend_tag));
        }
        let release = {
            let mut players = lock(&self.players);
            let Some(p) = players.get_mut(&req.player) else {
                return refuse("the player is not on this gate".into());
            };
            if !p.route.delivers(backend, req.epoch) {
                return refuse("the asking backend does not hold the player".into());
            }
            match p.route.begin_move(target, req.epoch, self.now()) {
                Ok(r) => r,
                Err(e) => return refuse(e.to_string()),
            }
        };
        let me = self.clone();
        let player = req.player.clone();
        let _detached = self.env.spawn.spawn(
            "gate-move",
            async move {
                if !me.cfg.bugs.forward_during_move {
                    let req =
                        ReleasePlayer { player: player.clone(), epoch: release.epoch, client_gone: false };
                    let opts =
                        CallOptions::default().with_timeout(me.cfg.call_timeout * 3).ordered(player.clone());
                    match me.rpc.call::<_, ReleasePlayerReply>(release.from, RPC_RELEASE, &req, opts).await {
                        // What the old backend sent the client goes out before anything else.
                        Ok(r) => me.output_sent(&player, release.epoch, r.out_end).await,
                        // The target's take of the anchor waits the old backend out.
                        Err(e) => debug!(target: LOG_TARGET, player, error = %e, "release failed"),
                    }
                }
                let next =
                    lock(&me.players).get_mut(&player).is_some_and(|p| p.route.on_released(release.epoch));
                if next {
                    me.drive(&player);
                }
            }
            .boxed(),
        );
        MovePlayerReply { started: true, reason: String::new() }
    }

    /// A client session closed: forget its player and release it on its backend.
    async fn closed(&self, s: Session) {
        let gone = {
            let mut players = lock(&self.players);
            let player = players.iter().find(|(_, p)| p.session == s).map(|(k, _)| k.clone());
            player.and_then(|k| players.remove(&k).map(|p| (k, p)))
        };
        let Some((player, p)) = gone else { return };
        let binding = match p.route.phase() {
            Phase::Bound { backend } | Phase::Releasing { from: backend, .. } => Some(backend),
            Phase::Binding { to, .. } => Some(to),
            Phase::Recovering { .. } => None,
        };
        if let Some(backend) = binding {
            let req = ReleasePlayer { player: player.clone(), epoch: p.route.epoch(), client_gone: true };
            let opts = CallOptions::default().with_timeout(self.cfg.call_timeout).ordered(player.clone());
            let _ = self.rpc.call::<_, ReleasePlayerReply>(backend, RPC_RELEASE, &req, opts).await;
        }
    }

    fn backend_left(self: &Arc<Self>, peer: PeerId) {
        let now = self.now();
        let affected: Vec<String> = {
            let mut players = lock(&self.players);
            players
                .iter_mut()
                .filter_map(|(k, p)| p.route.on_backend_lost(peer, now).then(|| k.clone()))
                .collect()
        };
        if !affected.is_empty() {
            info!(target: LOG_TARGET, node = %self.env.node, backend = ?peer, players = affected.len(), "backend left: re-binding its players");
        }
        for p in affected {
            self.drive(&p);
        }
    }
}

async fn watch_loop(weak: Weak<Inner>) {
    use futures::StreamExt;
    let Some(inner) = weak.upgrade() else { return };
    let mut changes = inner.cluster.changes();
    drop(inner);
    while let Some(c) = changes.next().await {
        let Some(inner) = weak.upgrade() else { return };
        if let ViewChange::Removed(peer) = c {
            inner.backend_left(peer);
        }
    }
}

async fn load_loop(weak: Weak<Inner>) {
    let mut last: Option<usize> = None;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let n = lock(&inner.players).len();
        if last != Some(n) && inner.cluster.set_status(json!({ GATE_LOAD_FIELD: n })).await.is_ok() {
            last = Some(n);
        }
        let clock = inner.env.clock.clone();
        drop(inner);
        clock.sleep(LOAD_PUBLISH_PERIOD).await;
    }
}

fn register(inner: &Arc<Inner>) {
    let w = Arc::downgrade(inner);
    inner.sessions.register_json_handler(CS_GATE_LOGIN, move |s, body| {
        let inner = w.upgrade();
        async move {
            if let Some(inner) = inner {
                inner.login(s, body).await;
            }
        }
    });
    let w = Arc::downgrade(inner);
    inner.sessions.on_unhandled(move |s, _msg_type, frame| {
        let inner = w.upgrade();
        async move {
            if let Some(inner) = inner {
                inner.forward(s, frame).await;
            }
        }
    });
    let w = Arc::downgrade(inner);
    inner.sessions.on_session_closed(move |s, _reason| {
        let inner = w.upgrade();
        async move {
            if let Some(inner) = inner {
                inner.closed(s).await;
            }
        }
    });
    // A waiting handler (no handler permit): a delivery may wait for the batch in flight on
    // the other path (`OUTPUT_GAP_WAIT`); one at a time per binding.
    let w = Arc::downgrade(inner);
    inner.rpc.register_waiting_handler(RPC_DELIVER, move |info, req: DeliverFrames| {
        let inner = w.upgrade();
        async move {
            let inner = inner.ok_or_else(|| HandlerError::new("gate stopped"))?;
            Ok(inner.deliver(info.sender, req).await)
        }
    });
    let w = Arc::downgrade(inner);
    inner.rpc.register_handler(RPC_MOVE, move |info, req: MovePlayer| {
        let inner = w.upgrade();
        async move {
            let inner = inner.ok_or_else(|| HandlerError::new("gate stopped"))?;
            Ok(inner.start_move(info.sender, req))
        }
    });
}
