//! Cluster-unique login, cross-server messaging and client redirection (iFun's
//! `AccountManager`), fenced so that two servers never act for one account at once.
//!
//! # What it does
//!
//! | iFun | here |
//! |---|---|
//! | `CheckAndSetLoggedIn(id, session)` | [`AccountManager::check_and_set_logged_in`] |
//! | `SetLoggedOut(id)` | [`AccountManager::set_logged_out`] |
//! | `Locate(id)` | [`AccountManager::locate`] |
//! | `SendMessage(type, msg, id)` | [`AccountManager::send_message`] (local link, or RPC to the owner) |
//! | `BroadcastLocally` / `BroadcastGlobally` | [`AccountManager::broadcast_locally`] / [`AccountManager::broadcast_globally`] |
//! | `RedirectClient(session, peer, extra_data)` | [`AccountManager::redirect_client`] |
//! | (engine-internal `_cs_redirect` handling) | [`AccountManager::accept_redirect`] |
//! | `RegisterRedirectionHandler(f)` | [`AccountManager::register_redirection_handler`] |
//!
//! The manager talks to client connections only through the narrow [`ClientLink`] trait, so
//! it does not depend on the session module.
//!
//! # Layout in ZooKeeper
//!
//! ```text
//! /{app_id}/active_accounts/{account}   ephemeral, on the manager's own session,
//!                                       data = {"peer_id": ..., "link_id": ...}
//! /{app_id}/redirect_nonces/{exp}_{nonce}  persistent; exists = that token was used
//! ```
//!
//! Login is `create` of the account's ephemeral znode. `NodeExists` means logged in
//! somewhere: the node is read, and if its `ephemeral_owner` is this manager's session (a
//! create whose answer was lost, or an account this server dropped and has not deleted yet)
//! the login proceeds here; otherwise the answer is `AlreadyLoggedIn` with the owner's
//! `PeerId`. `ConnectionLoss { maybe_applied: true }` is resolved the same way, by reading
//! the node after the reconnect. Logins, logouts and the cleanup of dropped accounts are
//! serialised per server by one async lock (one or two ZooKeeper round trips each).
//!
//! # Fencing: why two servers never act for one account at the same time
//!
//! The znode alone is not enough. ZooKeeper expires a session one timeout `T` after it last
//! *heard* from the client, and then deletes its ephemerals, so another server can log the
//! account in. The partitioned server learns of the expiry only when it reaches the service
//! again (it sees `Disconnected` until then), and without more care it would keep serving
//! the client (delivering messages, accepting its actions) while the other server does too.
//!
//! So a server acts for its accounts only while it holds a **lease** ([`fence`]). Every
//! `T/6` (and on demand, e.g. before accepting a login) the manager issues a cheap read on its
//! session. Let `s` be this node's monotonic clock reading taken *before* the read is sent.
//! When the service answers, the lease becomes
//!
//! ```text
//! lease_until = s + T·(1 − ρ) − margin        (ρ = drift_ppm_max / 10^6)
//! ```
//!
//! and every action (delivering a message to a link, accepting a login, redirecting)
//! first checks `now < lease_until`. A watchdog task wakes exactly at `lease_until`; if the
//! lease was not extended by then it closes every local link (reason `coordination lost`)
//! and forgets them. When the session is later found alive (a read succeeds again), the
//! znodes of the dropped accounts are deleted, so nothing stays logged in nowhere; when the
//! session is found expired, its ephemerals are already gone and a new session is opened.
//!
//! **Argument.** Let `t_s` be the true time the renewing read was sent and `t_h ≥ t_s` the
//! true time the service heard it. The service cannot expire the session before
//! `t_h + T ≥ t_s + T` (expiry is measured from the last time it heard the session, and the
//! read counts). Our clock may run fast or slow by at most `ρ`, so `T·(1 − ρ) − m` on our
//! clock takes at most `(T·(1 − ρ) − m)/(1 − ρ) = T − m/(1 − ρ) < T` true time: the lease
//! ends strictly before `t_s + T`, hence before the service can expire the session, hence
//! before its ephemeral can vanish, hence before any other server's `create` of the account
//! can succeed. The other server's acting interval starts after its `create` succeeded; ours
//! ended before that. The intervals never overlap. (With `T = 10 s`, `ρ = 5 %` and
//! `m = 0.5 s` the lease is 9 s after the send and is renewed every 1.67 s.)
//!
//! Only answers to *requests* renew the lease, and only from their send time; watch
//! notifications and session events never do: with a one-way partition the service's
//! traffic can still arrive while ours is cut, and the service hears nothing. Answers to
//! requests sent before the last renewal cannot move the lease (it only extends).
//!
//! **Assumptions.** (1) Every node's monotonic clock rate is within `ρ` of true time
//! (`drift_ppm_max`, default 5 %: far above real quartz). (2) The service measures its
//! timeout on a correct clock (its own drift is part of `ρ` in practice). (3) No process
//! pause longer than `margin` falls *between a lease check and the action it guards*:
//! actions therefore re-check the lease immediately before sending (no await in between),
//! and `margin` (default 500 ms) is the allowance for a pause (GC, page fault, scheduler)
//! in that instant. A pause longer than `margin` at exactly that point can still deliver
//! one message on an expired lease, or accept one login whose znode the service is already
//! deleting; no lease scheme without a fencing token checked by the *receiver* can rule
//! that out (the ORM's epoch-checked writes are where Sandtable does). Messages already
//! written to a client socket before the lease ended are not recalled.
//!
//! Cost: a server cut from ZooKeeper for longer than about `T(1 − ρ) − margin − T/6`
//! disconnects its clients even if the session would have survived; clients reconnect and
//! log in again. With [`AccountBugs::no_fencing`] the lease is ignored (links are dropped
//! only when the expiry is finally learned), which is the planted bug the checkers catch.
//!
//! # Redirect tokens
//!
//! See [`token`]: HMAC-SHA256 with the shared `redirection_secret`, bound to the target's
//! `PeerId`, expiring (`redirect_token_ttl`), and single use across the cluster: accepting
//! one creates the persistent znode `/{app_id}/redirect_nonces/{exp}_{nonce}` first
//! (`NodeExists` = replay). Nonce znodes are swept lazily, [`NONCE_RETENTION`] after their
//! token expired (a replay after that needs a verifier whose wall clock lags by more).
//!
//! # Metrics
//! After [`attach_metrics`](AccountManager::attach_metrics) the manager counts
//! [`METRIC_LOGINS`] (`result`: `ok`, `already_logged_in`, `error`), [`METRIC_LOGOUTS`],
//! [`METRIC_REDIRECTS`] (`result`: `issued`, `accepted`, `rejected`) and
//! [`METRIC_LEASE_LAPSES`] (times the lease lapsed with links open), and reports the callback
//! gauges [`METRIC_LOGGED_IN`] (accounts logged in here) and [`METRIC_LEASE_HELD`] (1 while
//! the coordination lease is held).
//!
//! # Method groups of [`AccountManager`]
//! - lifecycle: [`start`](AccountManager::start), [`stop`](AccountManager::stop);
//! - login: `check_and_set_logged_in`, `set_logged_out`;
//! - queries: `is_logged_in_here`, `local_accounts` (sync), `locate` (reads ZooKeeper),
//!   `holds_lease`;
//! - messages: `send_message`, `broadcast_locally`, `broadcast_globally`;
//! - redirection: `redirect_client`, `accept_redirect`, `register_redirection_handler`.

mod config;
mod error;
pub mod fence;
mod keyed_lock;
mod sessions;
pub mod token;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

pub use self::config::{
    parse_secret, AccountBugs, AccountConfig, DRIFT_PPM_LIMIT, DRIFT_PPM_MAX_DEFAULT, LEASE_MARGIN_DEFAULT,
    REDIRECT_TOKEN_TTL_DEFAULT, SECRET_BYTES,
};
pub use self::error::{AccountError, TokenError};
use self::fence::{Lease, LeaseParams};
use self::keyed_lock::KeyedLocks;
pub use self::sessions::{link, ACCOUNT_CONTEXT_KEY};
use self::token::{TokenClaims, ACCOUNT_BYTES_MAX, NONCE_BYTES};
use crate::cluster::{Cluster, PeerId};
use crate::env::{Coord, CoordError, CreateMode, Env, MonoTime, RandExt, TaskHandle, WallTime};
use crate::metrics::{Counter, CounterVec, Metrics};
use crate::rpc::{CallOptions, HandlerError, Rpc};

/// Messages the managers exchange (`proto/account.proto`).
#[allow(clippy::all, missing_docs)]
pub mod messages {
    include!(concat!(env!("OUT_DIR"), "/sandtable.account.rs"));
}

/// RPC message type of a remote [`AccountManager::send_message`].
pub const RPC_SEND: &str = "_account.send";
/// RPC message type of a remote broadcast.
pub const RPC_BROADCAST: &str = "_account.broadcast";
/// Deadline of one remote send or broadcast call.
pub const REMOTE_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Message type of the redirect instruction sent to the client.
pub const SC_REDIRECT: &str = "_sc_redirect";
/// The external port (by protocol name) a redirected client is sent to when the target has
/// no port of the client's own transport.
pub const REDIRECT_PORT_NAME: &str = "tcp_json";
/// How many create/read rounds a login makes through connection loss before giving up.
const CLAIM_ATTEMPTS_MAX: u32 = 8;
/// First retry delay after connection loss; doubles per attempt up to [`RETRY_DELAY_MAX`].
const RETRY_DELAY_MIN: Duration = Duration::from_millis(100);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);
/// How long a used nonce's znode is kept after its token expired.
pub const NONCE_RETENTION: Duration = Duration::from_secs(600);
/// Least time between two sweeps of old nonce znodes by one server.
pub const NONCE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most nonce znodes one sweep deletes (the rest wait for the next sweep).
pub const NONCE_SWEEP_DELETES_MAX: usize = 256;
/// Logins by `result` (`ok`, `already_logged_in`, `error`).
pub const METRIC_LOGINS: &str = "sandtable_account_logins_total";
/// Logouts of accounts logged in here.
pub const METRIC_LOGOUTS: &str = "sandtable_account_logouts_total";
/// Redirects by `result` (`issued` here, `accepted` or `rejected` here as the target).
pub const METRIC_REDIRECTS: &str = "sandtable_account_redirects_total";
/// Times the lease lapsed while links were open (they were all closed).
pub const METRIC_LEASE_LAPSES: &str = "sandtable_account_lease_lapses_total";
/// Accounts logged in on this server (callback gauge).
pub const METRIC_LOGGED_IN: &str = "sandtable_account_logged_in";
/// 1 while this server holds its coordination lease, else 0 (callback gauge).
pub const METRIC_LEASE_HELD: &str = "sandtable_account_lease_held";

/// Counters of an account manager with metrics attached.
struct AccountMetrics {
    logins: CounterVec,
    logouts: Counter,
    redirects: CounterVec,
    lease_lapses: Counter,
}

/// Reason given to links closed because the lease lapsed.
pub const CLOSE_COORDINATION_LOST: &str = "coordination lost";

/// What the account manager needs from one client connection (implemented by the session
/// module; tests use a fake).
pub trait ClientLink: Send + Sync {
    /// Stable id of this connection (logged in the account znode).
    fn link_id(&self) -> String;
    /// Sends one `{type, body}` message; false if the link is closed.
    fn send_json(&self, msg_type: &str, body: serde_json::Value) -> bool;
    /// Closes the connection (idempotent).
    fn close(&self, reason: &str);
    fn is_open(&self) -> bool;
    /// The cluster's name of the client port this link came in on (`tcp_json`,
    /// `tcp_protobuf`, `websocket_json`): a redirect sends the client to the same kind of
    /// port on the target, falling back to [`REDIRECT_PORT_NAME`].
    fn port_name(&self) -> &'static str {
        REDIRECT_PORT_NAME
    }
}

/// A shared client link.
pub type LinkRef = Arc<dyn ClientLink>;

/// Answer of [`AccountManager::check_and_set_logged_in`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The account is now logged in here, on the given link.
    LoggedIn,
    /// Logged in elsewhere (or here, on another open link). `location` is the owner's
    /// `PeerId` (`None` if its record is unreadable). iFun's `where`, renamed: a keyword.
    AlreadyLoggedIn { location: Option<PeerId> },
}

/// A successful [`AccountManager::accept_redirect`].
#[derive(Debug, Clone, PartialEq)]
pub struct RedirectAccepted {
    pub account: String,
    /// What the old server passed to `redirect_client`.
    pub extra_data: serde_json::Value,
}

/// Data of an account znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LoginRecord {
    peer_id: PeerId,
    link_id: String,
}

type RedirectHandler = dyn Fn(String, LinkRef, bool, serde_json::Value) + Send + Sync;

/// Checks an account id: non-empty, at most [`ACCOUNT_BYTES_MAX`] bytes, no `/` or NUL, not
/// `.` or `..` (it becomes a znode name).
pub fn validate_account(account: &str) -> Result<(), AccountError> {
    if account.is_empty()
        || account.len() > ACCOUNT_BYTES_MAX
        || account.contains('/')
        || account.contains('\0')
        || account == "."
        || account == ".."
    {
        return Err(AccountError::InvalidAccount(account.to_string()));
    }
    Ok(())
}

/// The account manager of one server. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct AccountManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AccountManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountManager").field("id", &self.shared.id).finish_non_exhaustive()
    }
}

struct Shared {
    env: Env,
    cluster: Cluster,
    rpc: Rpc,
    id: PeerId,
    cfg: AccountConfig,
    secret: Option<[u8; SECRET_BYTES]>,
    /// `/{app_id}/active_accounts`.
    accounts_path: String,
    /// `/{app_id}/redirect_nonces`.
    nonces_path: String,
    /// Serialises the logins, logouts and dropped-record cleanup of each account on this
    /// server (different accounts run concurrently).
    ops: KeyedLocks,
    /// Wakes the watchdog when a lapsed lease is renewed.
    poke: mpsc::UnboundedSender<()>,
    st: Mutex<State>,
    /// Set once by [`AccountManager::attach_metrics`].
    metrics: OnceLock<AccountMetrics>,
}

struct State {
    /// The current session; replaced (and `epoch` bumped) after expiry.
    coord: Arc<dyn Coord>,
    epoch: u64,
    params: LeaseParams,
    lease: Lease,
    /// Accounts logged in here, with their links. Only non-empty while the lease is held
    /// (unless `bugs.no_fencing`).
    links: BTreeMap<String, LinkRef>,
    /// Accounts dropped here whose znode (on the current session) may still exist: deleted
    /// by the renewer once the session answers again.
    dropped: BTreeSet<String>,
    handlers: Vec<Arc<RedirectHandler>>,
    last_nonce_sweep: Option<MonoTime>,
    stopped: bool,
    tasks: Vec<TaskHandle>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a claim of the account znode ended.
enum Claim {
    /// The znode is ours (created now, or found owned by our session).
    Ours,
    Taken(Option<PeerId>),
}

impl Shared {
    fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.st)
    }

    /// Runs `f` on the counters if metrics are attached.
    fn count(&self, f: impl FnOnce(&AccountMetrics)) {
        if let Some(m) = self.metrics.get() {
            f(m);
        }
    }

    fn node(&self) -> &str {
        &self.env.node
    }

    fn now(&self) -> MonoTime {
        self.env.clock.now()
    }

    fn account_path(&self, account: &str) -> String {
        format!("{}/{account}", self.accounts_path)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = RETRY_DELAY_MIN.saturating_mul(1 << attempt.min(8)).min(RETRY_DELAY_MAX);
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(2);
        Duration::from_millis(self.env.rand.gen_range(cap_ms / 2..cap_ms))
    }

    /// True if this server may act for its accounts now. With `no_fencing` always true.
    fn acting(st: &State, bugs: AccountBugs, now: MonoTime) -> bool {
        bugs.no_fencing || st.lease.is_valid(now)
    }

    fn current(&self) -> Result<(Arc<dyn Coord>, u64), AccountError> {
        let st = self.st();
        if st.stopped {
            return Err(AccountError::Stopped);
        }
        Ok((st.coord.clone(), st.epoch))
    }

    /// The service answered a request sent at `sent` on session `epoch`.
    fn renewed(&self, epoch: u64, sent: MonoTime) {
        let mut st = self.st();
        if st.epoch != epoch {
            return;
        }
        let was_valid = st.lease.is_valid(self.now());
        let params = st.params;
        if st.lease.renewed(sent, &params) && !was_valid {
            debug!(node = %self.node(), until = ?st.lease.until(), "coordination lease acquired");
            let _ = self.poke.unbounded_send(());
        }
    }

    /// Makes sure the lease is held, renewing it with one read if needed.
    async fn ensure_lease(&self) -> Result<(Arc<dyn Coord>, u64), AccountError> {
        let (coord, epoch) = self.current()?;
        if self.st().lease.is_valid(self.now()) {
            return Ok((coord, epoch));
        }
        let sent = self.now();
        match coord.exists(&self.accounts_path).await {
            Ok(_) => self.renewed(epoch, sent),
            Err(e) => {
                debug!(node = %self.node(), error = %e, "lease renewal on demand failed");
                return Err(AccountError::CoordinationLost);
            }
        }
        let st = self.st();
        if st.epoch == epoch && st.lease.is_valid(self.now()) {
            Ok((coord, epoch))
        } else {
            Err(AccountError::CoordinationLost)
        }
    }

    /// Drops every local link if the lease has lapsed (no-op with `no_fencing`).
    fn lapse_if_due(&self) {
        if self.cfg.bugs.no_fencing {
            return;
        }
        let dropped = {
            let mut st = self.st();
            if st.lease.is_valid(self.now()) || st.links.is_empty() {
                return;
            }
            let links = std::mem::take(&mut st.links);
            st.dropped.extend(links.keys().cloned());
            links
        };
        self.count(|m| m.lease_lapses.inc());
        warn!(node = %self.node(), accounts = dropped.len(),
            "coordination lease lapsed: closing every local link");
        for (account, link) in dropped {
            debug!(node = %self.node(), account, "link closed: coordination lost");
            link.close(CLOSE_COORDINATION_LOST);
        }
    }

    /// Creates `/{app_id}`, the accounts and the nonces directories if missing.
    async fn ensure_dirs(&self, coord: &dyn Coord) -> Result<(), CoordError> {
        for path in [format!("/{}", self.cfg.app_id), self.accounts_path.clone(), self.nonces_path.clone()] {
            match coord.create(&path, Bytes::new(), CreateMode::Persistent).await {
                Ok(_) | Err(CoordError::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads an account znode: `(record, ours?, version)`; `None` if absent.
    async fn read_record(
        &self,
        coord: &dyn Coord,
        epoch: u64,
        path: &str,
    ) -> Result<Option<(Option<LoginRecord>, bool, i32)>, CoordError> {
        let sent = self.now();
        match coord.get_data(path).await {
            Ok((data, stat)) => {
                self.renewed(epoch, sent);
                let rec = serde_json::from_slice::<LoginRecord>(&data).ok();
                if rec.is_none() {
                    warn!(node = %self.node(), path, "unreadable account record");
                }
                Ok(Some((rec, stat.ephemeral_owner == coord.session_id(), stat.version)))
            }
            Err(CoordError::NoNode) => {
                self.renewed(epoch, sent);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the account znode, resolving `NodeExists` and lost answers by reading it.
    async fn claim(
        &self,
        coord: &dyn Coord,
        epoch: u64,
        account: &str,
        rec: &LoginRecord,
    ) -> Result<Claim, AccountError> {
        let path = self.account_path(account);
        let data = Bytes::from(serde_json::to_vec(rec).map_err(|e| AccountError::Payload(e.to_string()))?);
        let mut read_first = false;
        let mut maybe_ours = false;
        for attempt in 0..CLAIM_ATTEMPTS_MAX {
            if attempt > 0 {
                self.env.clock.sleep(self.backoff(attempt)).await;
            }
            if !read_first {
                let sent = self.now();
                match coord.create(&path, data.clone(), CreateMode::Ephemeral).await {
                    Ok(_) => {
                        self.renewed(epoch, sent);
                        return Ok(Claim::Ours);
                    }
                    Err(CoordError::NodeExists) => self.renewed(epoch, sent),
                    Err(CoordError::NoNode) => {
                        warn!(node = %self.node(), "accounts directory missing; re-creating");
                        self.ensure_dirs(coord).await.map_err(AccountError::Coord)?;
                        continue;
                    }
                    Err(CoordError::ConnectionLoss { maybe_applied }) => {
                        maybe_ours |= maybe_applied;
                        read_first = maybe_applied;
                        continue;
                    }
                    Err(CoordError::SessionExpired | CoordError::Closed) => {
                        return Err(AccountError::CoordinationLost)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match self.read_record(coord, epoch, &path).await {
                Ok(Some((cur, true, version))) => {
                    if cur.as_ref() != Some(rec) {
                        // Ours, from an earlier login here: point it at the new link.
                        let _ = coord.set_data(&path, data.clone(), Some(version)).await;
                    }
                    return Ok(Claim::Ours);
                }
                Ok(Some((other, false, _))) => return Ok(Claim::Taken(other.map(|r| r.peer_id))),
                Ok(None) => read_first = false,
                Err(CoordError::ConnectionLoss { .. }) => read_first = true,
                Err(CoordError::SessionExpired | CoordError::Closed) => {
                    return Err(AccountError::CoordinationLost)
                }
                Err(e) => return Err(e.into()),
            }
        }
        if maybe_ours {
            // A create may have landed: let the cleanup delete it once the session answers.
            self.st().dropped.insert(account.to_string());
        }
        Err(AccountError::Coord(CoordError::ConnectionLoss { maybe_applied: maybe_ours }))
    }

    /// Deletes the account znode if it belongs to our session. True if it is gone.
    async fn delete_if_ours(&self, coord: &dyn Coord, epoch: u64, account: &str) -> Result<bool, CoordError> {
        let path = self.account_path(account);
        match self.read_record(coord, epoch, &path).await? {
            Some((_, true, version)) => match coord.delete(&path, Some(version)).await {
                Ok(()) | Err(CoordError::NoNode) => Ok(true),
                Err(CoordError::BadVersion) => Ok(false),
                Err(e) => Err(e),
            },
            // Absent, or someone else's: nothing of ours to delete.
            Some((_, false, _)) | None => Ok(true),
        }
    }

    /// Deletes the znodes of dropped accounts (after the session answered again).
    async fn cleanup_dropped(&self) {
        let todo: Vec<String> = self.st().dropped.iter().cloned().collect();
        for account in todo {
            let _g = self.ops.lock(&account).await;
            let Ok((coord, epoch)) = self.current() else { return };
            if !self.st().dropped.contains(&account) {
                continue; // a login or logout of it got there first
            }
            if self.st().links.contains_key(&account) {
                self.st().dropped.remove(&account);
                continue;
            }
            match self.delete_if_ours(&*coord, epoch, &account).await {
                Ok(true) => {
                    info!(node = %self.node(), account, "deleted the record of a dropped account");
                    self.st().dropped.remove(&account);
                }
                Ok(false) => {}
                Err(e) => {
                    debug!(node = %self.node(), error = %e, "cleanup of dropped accounts interrupted");
                    return;
                }
            }
        }
    }

    /// Opens a new session after expiry (retrying until it works or the manager stops).
    async fn new_session(&self) {
        let links = {
            let mut st = self.st();
            st.lease = Lease::default();
            std::mem::take(&mut st.links)
        };
        if !links.is_empty() {
            if self.cfg.bugs.no_fencing {
                warn!(node = %self.node(), accounts = links.len(), "session expired: closing links (no_fencing)");
            } else {
                error!(node = %self.node(), accounts = links.len(),
                    "session expired while links were open: the fencing assumptions were violated");
            }
        }
        for link in links.values() {
            link.close("coordination session expired");
        }
        let mut attempt = 0u32;
        loop {
            if self.st().stopped {
                return;
            }
            if attempt > 0 {
                self.env.clock.sleep(self.backoff(attempt)).await;
            }
            attempt = attempt.saturating_add(1);
            let coord = match self.env.coord.connect(self.cfg.session).await {
                Ok(c) => c,
                Err(e) => {
                    info!(node = %self.node(), error = %e, attempt, "account manager: new session failed");
                    continue;
                }
            };
            if let Err(e) = self.ensure_dirs(&*coord).await {
                info!(node = %self.node(), error = %e, "account manager: new session unusable");
                coord.close().await;
                continue;
            }
            let installed = {
                let mut st = self.st();
                if !st.stopped {
                    st.params.session_timeout = coord.negotiated_timeout();
                    st.coord = coord.clone();
                    st.epoch += 1;
                    st.lease = Lease::default();
                    st.dropped.clear(); // the old session's ephemerals are gone with it
                    info!(node = %self.node(), epoch = st.epoch, "account manager: new coordination session");
                }
                !st.stopped
            };
            if !installed {
                coord.close().await;
            }
            return;
        }
    }

    /// Renews the lease every `T/6`; on expiry opens a new session; cleans up dropped accounts.
    async fn renew_loop(self: Arc<Self>) {
        loop {
            let Ok((coord, epoch)) = self.current() else { return };
            let period = self.st().params.renew_period();
            let sent = self.now();
            match coord.exists(&self.accounts_path).await {
                Ok(_) => {
                    self.renewed(epoch, sent);
                    if !self.st().dropped.is_empty() {
                        self.cleanup_dropped().await;
                    }
                }
                Err(CoordError::SessionExpired | CoordError::Closed) => {
                    if self.st().stopped {
                        return;
                    }
                    info!(node = %self.node(), "account manager: session expired");
                    self.new_session().await;
                    continue;
                }
                Err(e) => debug!(node = %self.node(), error = %e, "lease renewal failed"),
            }
            self.env.clock.sleep_until(sent.saturating_add(period)).await;
        }
    }

    /// Wakes when the lease ends and drops the links if it was not extended.
    async fn watchdog(self: Arc<Self>, mut poke: mpsc::UnboundedReceiver<()>) {
        loop {
            if self.st().stopped {
                return;
            }
            let until = self.st().lease.until();
            match until {
                Some(u) if self.now() < u => self.env.clock.sleep_until(u).await,
                _ => {
                    self.lapse_if_due();
                    if poke.next().await.is_none() {
                        return;
                    }
                }
            }
        }
    }

    /// The local link of `account`, if this server may act for it now.
    fn local_link(&self, account: &str) -> Option<LinkRef> {
        let st = self.st();
        if !Self::acting(&st, self.cfg.bugs, self.now()) {
            return None;
        }
        st.links.get(account).cloned()
    }

    fn deliver_locally(&self, account: &str, msg_type: &str, body: serde_json::Value) -> bool {
        match self.local_link(account) {
            Some(link) => link.send_json(msg_type, body),
            None => false,
        }
    }

    fn broadcast_locally(&self, msg_type: &str, body: &serde_json::Value) -> usize {
        let links: Vec<LinkRef> = {
            let st = self.st();
            if !Self::acting(&st, self.cfg.bugs, self.now()) {
                return 0;
            }
            st.links.values().cloned().collect()
        };
        links.iter().filter(|l| l.send_json(msg_type, body.clone())).count()
    }

    fn run_handlers(&self, account: &str, link: &LinkRef, success: bool, extra: &serde_json::Value) {
        let handlers = self.st().handlers.clone();
        for h in handlers {
            h(account.to_string(), link.clone(), success, extra.clone());
        }
    }

    /// Marks the token's nonce used in ZooKeeper; `Replayed` if it already was.
    async fn consume_nonce(&self, claims: &TokenClaims) -> Result<(), AccountError> {
        let (coord, _epoch) = self.current()?;
        let path = format!("{}/{}", self.nonces_path, claims.nonce_node());
        let mut mine = [0u8; NONCE_BYTES];
        self.env.rand.fill_bytes(&mut mine);
        let mine = Bytes::from(token::to_hex(&mine));
        let mut read_back = false;
        for attempt in 0..CLAIM_ATTEMPTS_MAX {
            if attempt > 0 {
                self.env.clock.sleep(self.backoff(attempt)).await;
            }
            if read_back {
                match coord.get_data(&path).await {
                    Ok((data, _)) if data == mine => return Ok(()),
                    Ok(_) => return Err(TokenError::Replayed.into()),
                    Err(CoordError::NoNode) => read_back = false,
                    Err(CoordError::ConnectionLoss { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            match coord.create(&path, mine.clone(), CreateMode::Persistent).await {
                Ok(_) => return Ok(()),
                Err(CoordError::NodeExists) => return Err(TokenError::Replayed.into()),
                Err(CoordError::ConnectionLoss { maybe_applied }) => read_back = maybe_applied,
                Err(CoordError::NoNode) => self.ensure_dirs(&*coord).await?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AccountError::Coord(CoordError::ConnectionLoss { maybe_applied: read_back }))
    }

    /// Starts a sweep of old nonce znodes if none ran for [`NONCE_SWEEP_INTERVAL`].
    fn maybe_sweep_nonces(self: &Arc<Self>) {
        let now = self.now();
        {
            let mut st = self.st();
            if st.last_nonce_sweep.is_some_and(|t| now.saturating_since(t) < NONCE_SWEEP_INTERVAL) {
                return;
            }
            st.last_nonce_sweep = Some(now);
        }
        let me = self.clone();
        let task = async move {
            let Ok((coord, _)) = me.current() else { return };
            let Ok(names) = coord.get_children(&me.nonces_path).await else { return };
            let horizon = me.env.clock.wall_now().as_millis()
                - i64::try_from(NONCE_RETENTION.as_millis()).unwrap_or(i64::MAX);
            let old = names.iter().filter(|n| token::nonce_node_expiry(n).is_some_and(|exp| exp < horizon));
            let mut deleted = 0usize;
            for name in old.take(NONCE_SWEEP_DELETES_MAX) {
                if coord.delete(&format!("{}/{name}", me.nonces_path), None).await.is_ok() {
                    deleted += 1;
                }
            }
            if deleted > 0 {
                info!(node = %me.node(), deleted, "swept used redirect nonces");
            }
        };
        drop(self.env.spawn.spawn("account-nonce-sweep", task.boxed()));
    }
}

impl AccountManager {
    /// Opens the manager's own ZooKeeper session, creates `/{app_id}/active_accounts` (and
    /// the nonces directory), registers the RPC handlers for remote send and broadcast, and
    /// starts the lease renewer and watchdog. `cluster` and `rpc` must belong to this server.
    pub async fn start(
        env: Env,
        cluster: Cluster,
        rpc: Rpc,
        cfg: AccountConfig,
    ) -> Result<Self, AccountError> {
        let secret = cfg.validate()?;
        let coord = env.coord.connect(cfg.session).await?;
        let params = LeaseParams {
            session_timeout: coord.negotiated_timeout(),
            drift_ppm_max: cfg.drift_ppm_max,
            margin: cfg.lease_margin,
        };
        if let Err(why) = params.check() {
            coord.close().await;
            return Err(AccountError::Config(why));
        }
        let (poke, poke_rx) = mpsc::unbounded();
        let shared = Arc::new(Shared {
            id: cluster.id(),
            accounts_path: format!("/{}/active_accounts", cfg.app_id),
            nonces_path: format!("/{}/redirect_nonces", cfg.app_id),
            env: env.clone(),
            cluster,
            rpc: rpc.clone(),
            secret,
            cfg,
            ops: KeyedLocks::default(),
            poke,
            metrics: OnceLock::new(),
            st: Mutex::new(State {
                coord: coord.clone(),
                epoch: 0,
                params,
                lease: Lease::default(),
                links: BTreeMap::new(),
                dropped: BTreeSet::new(),
                handlers: Vec::new(),
                last_nonce_sweep: None,
                stopped: false,
                tasks: Vec::new(),
            }),
        });
        if let Err(e) = shared.ensure_dirs(&*coord).await {
            coord.close().await;
            return Err(e.into());
        }
        if shared.cfg.bugs.no_fencing {
            warn!(node = %env.node, "PLANTED BUG no_fencing: account links ignore the coordination lease");
        }
        if shared.cfg.bugs.replayable_token {
            warn!(node = %env.node, "PLANTED BUG replayable_token: redirect tokens are not single-use");
        }
        if shared.cfg.bugs.dup_delivery {
            warn!(node = %env.node, "PLANTED BUG dup_delivery: global broadcasts reach local accounts twice");
        }
        register_rpc(&rpc, Arc::downgrade(&shared));
        let renew = env.spawn.spawn("account-lease-renew", shared.clone().renew_loop().boxed());
        let watch = env.spawn.spawn("account-lease-watchdog", shared.clone().watchdog(poke_rx).boxed());
        shared.st().tasks.extend([renew, watch]);
        info!(node = %env.node, peer = ?shared.id, lease = ?params.length(), renew_every = ?params.renew_period(),
            "account manager started");
        Ok(AccountManager { shared })
    }

    /// Stops the manager: closes every local link, stops the tasks and closes the session
    /// (its account znodes vanish with it). Idempotent.
    pub async fn stop(&self) {
        let (coord, links, tasks) = {
            let mut st = self.shared.st();
            if st.stopped {
                return;
            }
            st.stopped = true;
            (st.coord.clone(), std::mem::take(&mut st.links), std::mem::take(&mut st.tasks))
        };
        for t in tasks {
            t.abort();
        }
        for link in links.values() {
            link.close("server stopping");
        }
        coord.close().await;
        info!(node = %self.shared.node(), "account manager stopped");
    }

    /// This server's id (the cluster's).
    pub fn id(&self) -> PeerId {
        self.shared.id
    }

    /// Starts counting logins, logouts, redirects and lease lapses in `metrics`, and
    /// registers the callback gauges of logged-in accounts and the lease (see the module's
    /// "Metrics"). Only the first call has an effect. The gauges hold the manager weakly.
    pub fn attach_metrics(&self, metrics: &Metrics) {
        let m = AccountMetrics {
            logins: metrics.counter_vec(
                METRIC_LOGINS,
                "Account logins on this server, by result.",
                &["result"],
            ),
            logouts: metrics.counter(METRIC_LOGOUTS, "Account logouts on this server."),
            redirects: metrics.counter_vec(
                METRIC_REDIRECTS,
                "Client redirects issued and received, by result.",
                &["result"],
            ),
            lease_lapses: metrics.counter(
                METRIC_LEASE_LAPSES,
                "Times the coordination lease lapsed with accounts logged in (their links were closed).",
            ),
        };
        if self.shared.metrics.set(m).is_err() {
            return;
        }
        let weak = Arc::downgrade(&self.shared);
        metrics.register_gauge_fn(METRIC_LOGGED_IN, "Accounts logged in on this server.", move || {
            weak.upgrade().map_or(0.0, |s| s.st().links.len() as f64)
        });
        let weak = Arc::downgrade(&self.shared);
        metrics.register_gauge_fn(
            METRIC_LEASE_HELD,
            "1 while this server holds its coordination lease.",
            move || weak.upgrade().map_or(0.0, |s| if s.st().lease.is_valid(s.now()) { 1.0 } else { 0.0 }),
        );
    }

    /// True while this server holds its coordination lease (may act for accounts).
    pub fn holds_lease(&self) -> bool {
        self.shared.st().lease.is_valid(self.shared.now())
    }

    /// Logs `account` in on `link`, cluster-wide (iFun's `CheckAndSetLoggedIn`).
    ///
    /// `LoggedIn` if it now is (idempotent for the same link); `AlreadyLoggedIn` if another
    /// server holds it, or this server holds it on another open link. Fails with
    /// `CoordinationLost` while the lease is not held (nothing is left logged in).
    pub async fn check_and_set_logged_in(
        &self,
        account: &str,
        link: LinkRef,
    ) -> Result<LoginOutcome, AccountError> {
        let r = self.login(account, link).await;
        self.shared.count(|m| {
            let result = match &r {
                Ok(LoginOutcome::LoggedIn) => "ok",
                Ok(LoginOutcome::AlreadyLoggedIn { .. }) => "already_logged_in",
                Err(_) => "error",
            };
            m.logins.with(&[result]).inc();
        });
        r
    }

    async fn login(&self, account: &str, link: LinkRef) -> Result<LoginOutcome, AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        let _g = s.ops.lock(account).await;
        let link_id = link.link_id();
        {
            let st = s.st();
            if let Some(cur) = st.links.get(account) {
                if Shared::acting(&st, s.cfg.bugs, s.now()) {
                    if cur.link_id() == link_id {
                        return Ok(LoginOutcome::LoggedIn);
                    }
                    if cur.is_open() {
                        return Ok(LoginOutcome::AlreadyLoggedIn { location: Some(s.id) });
                    }
                }
            }
        }
        let (coord, epoch) = if s.cfg.bugs.no_fencing { s.current()? } else { s.ensure_lease().await? };
        let rec = LoginRecord { peer_id: s.id, link_id: link_id.clone() };
        match s.claim(&*coord, epoch, account, &rec).await? {
            Claim::Taken(location) => {
                debug!(node = %s.node(), account, ?location, "login refused: already logged in");
                return Ok(LoginOutcome::AlreadyLoggedIn { location });
            }
            Claim::Ours => {}
        }
        // Accept only under the lease, checked together with the insertion.
        let accepted = {
            let mut st = s.st();
            if st.epoch == epoch && Shared::acting(&st, s.cfg.bugs, s.now()) {
                st.dropped.remove(account);
                st.links.insert(account.to_string(), link);
                true
            } else {
                false
            }
        };
        if !accepted {
            match s.delete_if_ours(&*coord, epoch, account).await {
                Ok(true) => {}
                _ => {
                    s.st().dropped.insert(account.to_string());
                }
            }
            return Err(AccountError::CoordinationLost);
        }
        info!(node = %s.node(), account, link = %link_id, "logged in");
        Ok(LoginOutcome::LoggedIn)
    }

    /// Logs `account` out of this server (iFun's `SetLoggedOut`): forgets its link (without
    /// closing it) and deletes its znode. False if it was not logged in here. If the delete
    /// cannot be confirmed now, it is retried once the session answers again.
    pub async fn set_logged_out(&self, account: &str) -> Result<bool, AccountError> {
        self.logout(account, None).await
    }

    /// [`set_logged_out`](Self::set_logged_out), but only if `account` is logged in here on
    /// the link `link_id`: a late logout for a closed connection must not log out the same
    /// account's newer login on another connection.
    pub async fn set_logged_out_link(&self, account: &str, link_id: &str) -> Result<bool, AccountError> {
        self.logout(account, Some(link_id)).await
    }

    async fn logout(&self, account: &str, link_id: Option<&str>) -> Result<bool, AccountError> {
        let r = self.logout_inner(account, link_id).await;
        if let Ok(true) = r {
            self.shared.count(|m| m.logouts.inc());
        }
        r
    }

    async fn logout_inner(&self, account: &str, link_id: Option<&str>) -> Result<bool, AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        let _g = s.ops.lock(account).await;
        let (coord, epoch) = s.current()?;
        {
            let mut st = s.st();
            match st.links.get(account) {
                Some(cur) if link_id.is_none_or(|id| cur.link_id() == id) => {
                    st.links.remove(account);
                }
                _ => return Ok(false),
            }
        }
        match s.delete_if_ours(&*coord, epoch, account).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                debug!(node = %s.node(), account, "logout: record deletion deferred");
                s.st().dropped.insert(account.to_string());
            }
        }
        info!(node = %s.node(), account, "logged out");
        Ok(true)
    }

    /// Accounts logged in here on the link `link_id` (sorted; normally at most one).
    pub fn accounts_of_link(&self, link_id: &str) -> Vec<String> {
        let st = self.shared.st();
        st.links.iter().filter(|(_, l)| l.link_id() == link_id).map(|(a, _)| a.clone()).collect()
    }

    /// Sends one message to `account`'s client if it is logged in *here* and this server
    /// may act for it now (lease checked in the same instant as the send). Returns the id of
    /// the link that took it; `None` otherwise. The synchronous, local-only form of
    /// [`send_message`](Self::send_message).
    pub fn deliver(&self, account: &str, msg_type: &str, body: serde_json::Value) -> Option<String> {
        let link = self.shared.local_link(account)?;
        link.send_json(msg_type, body).then(|| link.link_id())
    }

    /// True if `account` is logged in here and this server may act for it now.
    pub fn is_logged_in_here(&self, account: &str) -> bool {
        self.shared.local_link(account).is_some()
    }

    /// Accounts logged in here (sorted).
    pub fn local_accounts(&self) -> Vec<String> {
        self.shared.st().links.keys().cloned().collect()
    }

    /// Which server `account` is logged in on (iFun's `Locate`), read from ZooKeeper.
    /// `None` if nowhere (or only in a record this server dropped and is about to delete).
    pub async fn locate(&self, account: &str) -> Result<Option<PeerId>, AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        if s.local_link(account).is_some() {
            return Ok(Some(s.id));
        }
        let (coord, epoch) = s.current()?;
        match s.read_record(&*coord, epoch, &s.account_path(account)).await? {
            None => Ok(None),
            Some((Some(rec), _, _)) if rec.peer_id == s.id => Ok(None),
            Some((rec, _, _)) => Ok(rec.map(|r| r.peer_id)),
        }
    }

    /// Sends one message to `account`'s client (iFun's `SendMessage`): through the local
    /// link, or by RPC to the server it is logged in on. False if it is logged in nowhere or
    /// its link is closed.
    pub async fn send_message(
        &self,
        account: &str,
        msg_type: &str,
        body: serde_json::Value,
    ) -> Result<bool, AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        if s.local_link(account).is_some() {
            return Ok(s.deliver_locally(account, msg_type, body));
        }
        let Some(peer) = self.locate(account).await? else { return Ok(false) };
        if peer == s.id {
            return Ok(s.deliver_locally(account, msg_type, body));
        }
        let req = messages::SendToAccount {
            account: account.to_string(),
            msg_type: msg_type.to_string(),
            body_json: body.to_string(),
        };
        let opts = CallOptions::default().with_timeout(REMOTE_CALL_TIMEOUT).ordered(account);
        let rep: messages::SendToAccountReply = s.rpc.call(peer, RPC_SEND, &req, opts).await?;
        Ok(rep.delivered)
    }

    /// Sends to every account logged in here (iFun's `BroadcastLocally`); returns how many
    /// links took it. Nothing is sent while the lease is not held.
    pub fn broadcast_locally(&self, msg_type: &str, body: &serde_json::Value) -> usize {
        self.shared.broadcast_locally(msg_type, body)
    }

    /// Sends to every account logged in on `peers` (all members, this server included, if
    /// empty) (iFun's `BroadcastGlobally`). Returns the number of links that took it;
    /// unreachable peers are logged and skipped.
    pub async fn broadcast_globally(
        &self,
        msg_type: &str,
        body: &serde_json::Value,
        peers: &[PeerId],
    ) -> Result<usize, AccountError> {
        let s = &self.shared;
        s.current()?;
        let targets: BTreeSet<PeerId> = if peers.is_empty() {
            s.cluster.peers(true).into_keys().collect()
        } else {
            peers.iter().copied().collect()
        };
        let req =
            messages::BroadcastToAccounts { msg_type: msg_type.to_string(), body_json: body.to_string() };
        // Planted bug `dup_delivery`: this server is also called over RPC, on top of the
        // local delivery below, so its own accounts get the message twice.
        let dup = s.cfg.bugs.dup_delivery;
        let calls = targets.iter().filter(|p| dup || **p != s.id).map(|&peer| {
            let req = req.clone();
            async move {
                let opts = CallOptions::default().with_timeout(REMOTE_CALL_TIMEOUT);
                let r: Result<messages::BroadcastToAccountsReply, _> =
                    s.rpc.call(peer, RPC_BROADCAST, &req, opts).await;
                (peer, r)
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut total = if targets.contains(&s.id) { s.broadcast_locally(msg_type, body) } else { 0 };
        for (peer, r) in results {
            match r {
                Ok(rep) => total += usize::try_from(rep.delivered).unwrap_or(usize::MAX),
                Err(e) => warn!(node = %s.node(), ?peer, error = %e, "broadcast: peer skipped"),
            }
        }
        Ok(total)
    }

    /// Moves `account`'s client to `target` (iFun's `RedirectClient`): logs it out here,
    /// sends `_sc_redirect {host, port, flavor, token}` on its link and closes the link.
    pub async fn redirect_client(
        &self,
        account: &str,
        target: PeerId,
        extra_data: serde_json::Value,
    ) -> Result<(), AccountError> {
        let r = self.redirect_inner(account, target, extra_data).await;
        if r.is_ok() {
            self.shared.count(|m| m.redirects.with(&["issued"]).inc());
        }
        r
    }

    async fn redirect_inner(
        &self,
        account: &str,
        target: PeerId,
        extra_data: serde_json::Value,
    ) -> Result<(), AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        let secret = s.secret.ok_or(AccountError::NoSecret)?;
        let Some(link) = s.local_link(account) else {
            return Err(if self.local_accounts().iter().any(|a| a == account) {
                AccountError::CoordinationLost
            } else {
                AccountError::NotLoggedInHere(account.to_string())
            });
        };
        let host = s.cluster.peer_external_ip(target).ok_or(AccountError::UnknownPeer(target))?;
        let port = s
            .cluster
            .peer_external_ports(target)
            .and_then(|p| p.get(link.port_name()).or_else(|| p.get(REDIRECT_PORT_NAME)).copied())
            .ok_or(AccountError::UnknownPeer(target))?;
        let flavor = s.cluster.peers(true).get(&target).and_then(|i| i.flavor.clone());
        let mut nonce = [0u8; NONCE_BYTES];
        s.env.rand.fill_bytes(&mut nonce);
        let expires_at: WallTime = s.env.clock.wall_now().saturating_add(s.cfg.redirect_token_ttl);
        let claims = TokenClaims { account: account.to_string(), target, expires_at, nonce, extra_data };
        let token = token::issue(&secret, &claims)?;
        if !self.set_logged_out(account).await? {
            return Err(AccountError::NotLoggedInHere(account.to_string()));
        }
        let body =
            serde_json::json!({ "host": host.to_string(), "port": port, "flavor": flavor, "token": token });
        link.send_json(SC_REDIRECT, body);
        link.close("redirected");
        info!(node = %s.node(), account, ?target, "client redirected");
        Ok(())
    }

    /// Handles a redirected client's `_cs_redirect {token}`: verifies the token (signature,
    /// target, expiry, single use) and logs the account in on `link`. Registered redirection
    /// handlers run with the outcome whenever the token's signature was valid (a forged
    /// token names no trustworthy account, so they do not run for it).
    pub async fn accept_redirect(
        &self,
        token: &str,
        link: LinkRef,
    ) -> Result<RedirectAccepted, AccountError> {
        self.accept_redirect_with(token, link, |_| {}).await
    }

    /// [`accept_redirect`](Self::accept_redirect) that calls `on_logged_in(account)` after a
    /// successful login and before the redirection handlers run (e.g. to tag the session).
    pub async fn accept_redirect_with(
        &self,
        token: &str,
        link: LinkRef,
        on_logged_in: impl FnOnce(&str),
    ) -> Result<RedirectAccepted, AccountError> {
        let r = self.accept_redirect_inner(token, link, on_logged_in).await;
        let result = if r.is_ok() { "accepted" } else { "rejected" };
        self.shared.count(|m| m.redirects.with(&[result]).inc());
        r
    }

    async fn accept_redirect_inner(
        &self,
        token: &str,
        link: LinkRef,
        on_logged_in: impl FnOnce(&str),
    ) -> Result<RedirectAccepted, AccountError> {
        let s = &self.shared;
        let secret = s.secret.ok_or(AccountError::NoSecret)?;
        let claims = token::verify(&secret, token)?;
        let r = self.accept_claims(&claims, link.clone()).await;
        if r.is_ok() {
            on_logged_in(&claims.account);
        }
        s.run_handlers(&claims.account, &link, r.is_ok(), &claims.extra_data);
        match &r {
            Ok(_) => info!(node = %s.node(), account = %claims.account, "redirected client accepted"),
            Err(e) => {
                info!(node = %s.node(), account = %claims.account, error = %e, "redirected client refused")
            }
        }
        r
    }

    async fn accept_claims(
        &self,
        claims: &TokenClaims,
        link: LinkRef,
    ) -> Result<RedirectAccepted, AccountError> {
        let s = &self.shared;
        token::check_claims(claims, s.id, s.cfg.redirection_strict_check_server_id, s.env.clock.wall_now())?;
        validate_account(&claims.account).map_err(|_| TokenError::Malformed)?;
        if !s.cfg.bugs.no_fencing {
            // Do not burn the token on a server that could not log the client in anyway.
            s.ensure_lease().await?;
        }
        if !s.cfg.bugs.replayable_token {
            s.consume_nonce(claims).await?;
            s.maybe_sweep_nonces();
        }
        match self.check_and_set_logged_in(&claims.account, link).await? {
            LoginOutcome::LoggedIn => Ok(RedirectAccepted {
                account: claims.account.clone(),
                extra_data: claims.extra_data.clone(),
            }),
            LoginOutcome::AlreadyLoggedIn { location } => {
                Err(AccountError::AlreadyLoggedIn { account: claims.account.clone(), location })
            }
        }
    }

    /// Adds a handler run after every redirect attempt with a validly signed token (iFun's
    /// `RegisterRedirectionHandler`): `(account, link, success, extra_data)`.
    pub fn register_redirection_handler(
        &self,
        f: impl Fn(String, LinkRef, bool, serde_json::Value) + Send + Sync + 'static,
    ) {
        self.shared.st().handlers.push(Arc::new(f));
    }
}

fn register_rpc(rpc: &Rpc, weak: Weak<Shared>) {
    let w = weak.clone();
    rpc.register_handler(RPC_SEND, move |_info, req: messages::SendToAccount| {
        let shared = w.upgrade();
        async move {
            let s = shared.ok_or_else(|| HandlerError::new("account manager gone"))?;
            let body: serde_json::Value = serde_json::from_str(&req.body_json)
                .map_err(|e| HandlerError::new(format!("bad body: {e}")))?;
            let delivered = s.deliver_locally(&req.account, &req.msg_type, body);
            Ok(messages::SendToAccountReply { delivered })
        }
    });
    rpc.register_handler(RPC_BROADCAST, move |_info, req: messages::BroadcastToAccounts| {
        let shared = weak.upgrade();
        async move {
            let s = shared.ok_or_else(|| HandlerError::new("account manager gone"))?;
            let body: serde_json::Value = serde_json::from_str(&req.body_json)
                .map_err(|e| HandlerError::new(format!("bad body: {e}")))?;
            let delivered = s.broadcast_locally(&req.msg_type, &body) as u64;
            Ok(messages::BroadcastToAccountsReply { delivered })
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for good in ["alice", "user-42", "日本", &"a".repeat(ACCOUNT_BYTES_MAX)] {
            assert!(validate_account(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", ".", "..", "a\0", &"a".repeat(ACCOUNT_BYTES_MAX + 1)] {
            assert_eq!(validate_account(bad), Err(AccountError::InvalidAccount(bad.to_string())));
        }
    }
}
