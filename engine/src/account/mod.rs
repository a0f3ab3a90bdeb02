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
//! | `SendMessage(type, msg, id)` | [`AccountManager::send_message`] (local link, or RPC to the owner); [`AccountManager::send_message_dual`] for a message in both body forms, sent in the form of the account's client |
//! | `BroadcastLocally` / `BroadcastGlobally` | [`AccountManager::broadcast_locally`] / [`AccountManager::broadcast_globally`] |
//! | `RedirectClient(session, peer, extra_data)` | [`AccountManager::redirect_client`] |
//! | (engine-internal `_cs_redirect` handling) | [`AccountManager::accept_redirect`] |
//! | `RegisterRedirectionHandler(f)` | [`AccountManager::register_redirection_handler`] |
//!
//! The manager talks to client connections only through the narrow [`ClientLink`] trait, so
//! it does not depend on the session module's machinery (it names one plain data type of it,
//! [`DualBody`]: a message in both body forms) ([`attach_sessions`](AccountManager::attach_sessions)
//! wires the two together).
//!
//! # Who is logged in on a connection
//!
//! The manager is the one owner of that answer: its link table (`links.rs`) maps each local
//! account to its link and each [`LinkId`] (a session's id: `Copy`, never reused) back to
//! its account, so [`account_of`](AccountManager::account_of) is a lookup and a closed
//! connection is logged out by its id
//! ([`set_logged_out_link`](AccountManager::set_logged_out_link)). Games ask the manager;
//! they keep no copy of the account in the session. A link carries at most one account.
//!
//! # Account ids
//!
//! An account id is any UTF-8 string of 1 to [`ACCOUNT_BYTES_MAX`] (64) bytes, measured on
//! the id itself ([`validate_account`]): `/`, `.`, `..`, NUL, control characters and emoji
//! included. Anything else is [`AccountError::InvalidAccount`], whose message ("account name
//! must be 1 to 64 bytes of UTF-8, not N") is meant for the client. Ids are compared as bytes
//! (no Unicode normalisation). An id never goes into a backend key as it is, but through
//! [`crate::keyname::encode`]: the id itself if it is *plain* (non-empty, not `.` or `..`,
//! no `/`, no `%`, no character ZooKeeper refuses: so every ASCII id of letters, digits,
//! spaces and punctuation other than `/` and `%` is plain, `.` and `..` aside), else `%` and
//! the unpadded base64url of its bytes (`a/b` → `%YS9i`). The name is at most 87 bytes.
//!
//! # Layout in ZooKeeper
//!
//! ```text
//! /{app_id}/active_accounts/{name}      name = keyname::encode(account);
//!                                       ephemeral, on the manager's own session,
//!                                       data = {"peer_id": ..., "link_id": ...}
//! /{app_id}/redirect_nonces/{exp}_{nonce}  persistent; exists = that token was used
//! ```
//!
//! Plain ids are their own names, so the nodes of earlier versions (which used the id as it
//! was) keep their names for every id without `%` that ZooKeeper accepted: a rolling upgrade
//! keeps logins unique across old and new servers for those ids.
//!
//! Login is `create` of the account's ephemeral znode. `NodeExists` means logged in
//! somewhere: the node is read, and if its `ephemeral_owner` is this manager's session (a
//! create whose answer was lost, or an account this server dropped and has not deleted yet)
//! the login proceeds here; otherwise the answer is `AlreadyLoggedIn` with the owner's
//! `PeerId`. `ConnectionLoss { maybe_applied: true }` is resolved the same way, by reading
//! the node after the reconnect.
//!
//! Logins, logouts and the cleanup of dropped accounts are serialised **per account** by an
//! async lock (`keyed_lock.rs`; one or two ZooKeeper round trips each): a logout must not
//! delete the record a concurrent login of the same account just claimed, but different
//! accounts have nothing to order and run concurrently. A lock entry is created on first
//! use and forgotten as soon as nobody holds or awaits it, so the map only holds accounts
//! with an operation in flight.
//!
//! # Fencing: why two servers never act for one account at the same time
//!
//! The znode alone is not enough. ZooKeeper expires a session one timeout `T` after it last
//! *heard* from the client, and then deletes its ephemerals, so another server can log the
//! account in. The partitioned server learns of the expiry only when it reaches the service
//! again (it sees `Disconnected` until then), and without more care it would keep serving
//! the client (delivering messages, accepting its actions) while the other server does too.
//!
//! So a server acts for its accounts only while it holds a **lease** ([`lease`]). Every
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
//! token expired (a replay after that needs a verifier whose wall clock lags by more); see
//! `redirect.rs`.
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
//! - lifecycle: [`start`](AccountManager::start), [`stop`](AccountManager::stop),
//!   `attach_metrics`, `attach_sessions`;
//! - login: `check_and_set_logged_in`, `set_logged_out`, `set_logged_out_link`;
//! - queries: `account_of`, `is_logged_in_here`, `local_accounts` (sync), `locate` (reads
//!   ZooKeeper), `holds_lease`;
//! - messages: `deliver` (sync, local), `send_message`, `send_message_dual`, `broadcast_locally`,
//!   `broadcast_globally`;
//! - redirection: `redirect_client`, `accept_redirect`, `register_redirection_handler`.
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | this text, the public types, the manager's state, start and stop |
//! | [`lease`] (`lease.rs`) | the lease arithmetic, the renewer, the watchdog, new sessions after expiry |
//! | `record.rs` | the account znode: encoding, claim decision, read, delete-if-ours, cleanup of dropped accounts |
//! | `links.rs` | [`LinkId`] and the link table (account ↔ link) |
//! | `login.rs` | login, logout, and the queries |
//! | `remote.rs` | local delivery, `send_message`, broadcasts, their RPC handlers |
//! | `redirect.rs` | redirect out, accept in, nonce consumption and sweep |
//! | [`token`] (`token.rs`) | the redirect token format (pure), on the signing machinery of [`crate::signed`] |
//! | `metrics.rs` | counters and gauges |
//! | `keyed_lock`, `config`, `error`, `sessions` | the per-account lock, configuration, errors, the session-service wiring |
//!
//! Every file logs under the target `engine::account` ([`LOG_TARGET`]), so which file a line
//! lives in never changes a run's trace.

mod config;
mod error;
pub(crate) mod keyed_lock;
pub mod lease;
mod links;
mod login;
mod metrics;
mod record;
mod redirect;
mod remote;
mod sessions;
pub mod token;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use tracing::{info, warn};

pub use self::config::{
    parse_secret, AccountBugs, AccountConfig, DRIFT_PPM_LIMIT, DRIFT_PPM_MAX_DEFAULT, LEASE_MARGIN_DEFAULT,
    REDIRECT_TOKEN_TTL_DEFAULT, SECRET_BYTES,
};
pub use self::error::{AccountError, TokenError};
use self::keyed_lock::KeyedLocks;
use self::lease::{Lease, LeaseParams, Watchdog};
pub use self::links::LinkId;
use self::links::LinkTable;
use self::metrics::AccountMetrics;
pub use self::metrics::{
    METRIC_LEASE_HELD, METRIC_LEASE_LAPSES, METRIC_LOGGED_IN, METRIC_LOGINS, METRIC_LOGOUTS, METRIC_REDIRECTS,
};
use self::redirect::RedirectHandler;
pub use self::redirect::{
    RedirectAccepted, NONCE_RETENTION, NONCE_SWEEP_DELETES_MAX, NONCE_SWEEP_INTERVAL, REDIRECT_PORT_NAME,
    SC_REDIRECT,
};
pub use self::remote::{REMOTE_CALL_TIMEOUT, RPC_BROADCAST, RPC_SEND};
pub use self::sessions::link;
use crate::cluster::{Cluster, PeerId};
use crate::env::{lock, Backoff, Coord, Env, MonoTime, TaskHandle};
use crate::rpc::Rpc;
use crate::session::DualBody;
pub use crate::signed::ACCOUNT_BYTES_MAX;

/// Messages the managers exchange (`proto/account.proto`).
#[allow(clippy::all, missing_docs)]
pub mod messages {
    include!(concat!(env!("OUT_DIR"), "/sandtable.account.rs"));
}

/// The `tracing` target of every event the manager logs, whichever file it is in.
pub const LOG_TARGET: &str = "engine::account";
/// How many create/read rounds a login makes through connection loss before giving up.
const CLAIM_ATTEMPTS_MAX: u32 = 8;
/// Pacing of the retries after connection loss: the first waits up to 100 ms, each further
/// one doubles that, up to 2 s.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// Reason given to links closed because the lease lapsed.
pub const CLOSE_COORDINATION_LOST: &str = "coordination lost";

/// What the account manager needs from one client connection (implemented by the session
/// module; tests use a fake).
pub trait ClientLink: Send + Sync {
    /// Stable id of this connection (recorded in the account znode as its text).
    fn link_id(&self) -> LinkId;
    /// Sends one `{type, body}` message; false if the link is closed.
    fn send_json(&self, msg_type: &str, body: serde_json::Value) -> bool;
    /// Sends one message given in both forms, in the form of the link's client (a session:
    /// its transport's, [`Session::send_dual_body`](crate::session::Session::send_dual_body));
    /// false if the link is closed. The default sends the JSON form (a link that only speaks
    /// JSON).
    fn send_dual(&self, msg_type: &str, body: &DualBody) -> bool {
        self.send_json(msg_type, body.json().clone())
    }
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

/// Checks an account id: 1 to [`ACCOUNT_BYTES_MAX`] bytes of UTF-8, nothing else. Any
/// character is allowed (`/`, `.`, NUL, control characters, emoji): the id reaches
/// ZooKeeper and SQL only through [`crate::keyname::encode`]. Refusal:
/// [`AccountError::InvalidAccount`], whose message is meant for the client.
pub fn validate_account(account: &str) -> Result<(), AccountError> {
    if account.is_empty() || account.len() > ACCOUNT_BYTES_MAX {
        return Err(AccountError::InvalidAccount { bytes: account.len() });
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
    st: Mutex<State>,
    /// Set once by [`AccountManager::attach_metrics`].
    metrics: OnceLock<AccountMetrics>,
}

struct State {
    /// The current session; replaced (and `epoch` bumped) after expiry.
    coord: Arc<dyn Coord>,
    /// Counts sessions; only grows.
    epoch: u64,
    params: LeaseParams,
    lease: Lease,
    /// Wakes the watchdog when a lapsed lease is renewed.
    watchdog: Watchdog,
    /// Accounts logged in here, with their links. Only non-empty while the lease is held
    /// (unless `bugs.no_fencing`).
    links: LinkTable,
    /// Accounts dropped here whose znode (on the current session) may still exist: deleted
    /// by the renewer once the session answers again.
    dropped: BTreeSet<String>,
    handlers: Vec<Arc<RedirectHandler>>,
    last_nonce_sweep: Option<MonoTime>,
    stopped: bool,
    tasks: Vec<TaskHandle>,
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

    fn backoff(&self, attempt: u32) -> Duration {
        RETRY.delay(attempt, &*self.env.rand)
    }

    fn current(&self) -> Result<(Arc<dyn Coord>, u64), AccountError> {
        let st = self.st();
        if st.stopped {
            return Err(AccountError::Stopped);
        }
        Ok((st.coord.clone(), st.epoch))
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
        let (watchdog, wake_rx) = Watchdog::new();
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
            metrics: OnceLock::new(),
            st: Mutex::new(State {
                coord: coord.clone(),
                epoch: 0,
                params,
                lease: Lease::default(),
                watchdog,
                links: LinkTable::default(),
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
        remote::register_rpc(&rpc, Arc::downgrade(&shared));
        let renew = env.spawn.spawn("account-lease-renew", shared.clone().renew_loop().boxed());
        let watch = env.spawn.spawn("account-lease-watchdog", shared.clone().watchdog(wake_rx).boxed());
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
            (st.coord.clone(), st.links.take_all(), std::mem::take(&mut st.tasks))
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
}

#[cfg(test)]
mod manager_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_id_is_any_utf8_of_1_to_64_bytes() {
        let longest = "a".repeat(ACCOUNT_BYTES_MAX);
        let longest_wide = "日".repeat(ACCOUNT_BYTES_MAX / 3);
        for good in
            ["alice", "user-42", "日本", "a/b", ".", "..", "a\0", "%41", "😀", " ", &longest, &longest_wide]
        {
            assert!(validate_account(good).is_ok(), "{good:?}");
        }
        assert_eq!(ACCOUNT_BYTES_MAX, 64);
        let too_long = "a".repeat(ACCOUNT_BYTES_MAX + 1);
        let too_long_wide = "日".repeat(ACCOUNT_BYTES_MAX / 3 + 1);
        for (bad, bytes) in [("", 0), (too_long.as_str(), 65), (too_long_wide.as_str(), 66)] {
            assert_eq!(validate_account(bad), Err(AccountError::InvalidAccount { bytes }), "{bad:?}");
        }
    }

    #[test]
    fn a_refused_account_id_says_what_the_rule_is() {
        assert_eq!(
            validate_account("").unwrap_err().to_string(),
            "account name must be 1 to 64 bytes of UTF-8, not 0"
        );
        assert_eq!(
            validate_account(&"x".repeat(100)).unwrap_err().to_string(),
            "account name must be 1 to 64 bytes of UTF-8, not 100"
        );
    }
}
