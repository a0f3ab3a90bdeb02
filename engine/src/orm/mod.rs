//! Distributed objects (iFun's ORM): game objects with one owner server at a time, lent
//! between servers on demand, fenced at the database, changed in deadlock-free transactions
//! whose effects are released only after commit.
//!
//! # What it does
//!
//! | iFun | here |
//! |---|---|
//! | object model (JSON/IDL) | a serde struct implementing [`Model`] |
//! | `Create` | [`Transaction::create`] |
//! | `Fetch(key)` | [`Transaction::fetch`] (in a transaction), [`Orm::fetch`] (a one-object read) |
//! | `FetchBy<field>(value)` | [`Transaction::fetch_by`] on a field [`Model::unique_fields`] declares |
//! | setters / `Delete` | [`Transaction::put`] / [`Transaction::delete`] |
//! | cross-server object fetch | lending: `fetch` on a non-owner borrows the object from its owner |
//! | `Object.cache_expiration_in_ms` | [`OrmConfig::cache_expiration`]: an owned object unused this long is released |
//!
//! ```
//! # use engine::orm::{Model, Orm, OrmError};
//! # use serde::{Deserialize, Serialize};
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Inventory { user: String, gold: i64 }
//! impl Model for Inventory {
//!     const MODEL: &'static str = "inventory";
//!     fn key(&self) -> String { self.user.clone() }
//! }
//!
//! /// Moves `amount` gold from `from` to `to`, wherever the two inventories are.
//! async fn give_gold(orm: &Orm, from: &str, to: &str, amount: i64) -> Result<bool, OrmError> {
//!     let mut tx = orm.begin();
//!     // Both objects at once: taken in the global order, whatever the argument order.
//!     tx.lock_all::<Inventory>(&[from, to]).await?;
//!     let (Some(mut a), Some(mut b)) = (tx.get::<Inventory>(from)?, tx.get::<Inventory>(to)?) else {
//!         return Ok(false); // dropping `tx` aborts it: nothing was written
//!     };
//!     if a.gold < amount {
//!         return Ok(false);
//!     }
//!     a.gold -= amount;
//!     b.gold += amount;
//!     tx.put(&a)?;
//!     tx.put(&b)?;
//!     tx.after_commit(async move { /* tell the recipient: only runs if the commit succeeded */ });
//!     tx.commit().await?; // durable (and atomic, even across SQL instances) when it returns Ok
//!     Ok(true)
//! }
//! ```
//!
//! # Single owner, fenced
//!
//! An object is *owned* — cached and writable — by at most one server. The owner record is the
//! ephemeral znode `/{app_id}/objects/{model}/{name}` (`name`: the object key encoded by
//! [`crate::keyname::encode`], the key itself for plain keys; data: the owner's `PeerId`), created on
//! the **account manager's** coordination session; the object's **fence** is that znode's
//! creation zxid, which grows with every change of owner. Taking ownership is:
//!
//! 1. create the znode (if it exists, ask the owner it names to lend the object, or wait
//!    until its session expires — never bypass it);
//! 2. `RaiseFence` the object's row in SQL to the new fence and read it, in one operation;
//! 3. finish any cross-instance transaction the row is part of (below), then cache it.
//!
//! Every later write of the object carries that fence. A previous owner — paused, partitioned,
//! or whose session expired — writes with an older fence, and the database refuses it
//! (`Fenced`), whatever that server believes. That is the safety of the *data*.
//!
//! The owner also stops *acting* on its own (serving cached state, sending writes) before its
//! session can expire: it acts only while the account manager's lease on the session its
//! znode was created on is held (`AccountManager::acting_on`), checked immediately before
//! each act. The argument is the account manager's ([`crate::account`], "Fencing"): the lease
//! ends at `s + T·(1 − ρ) − margin` on the owner's clock, strictly before the service can
//! expire the session (hence delete the znode, hence let another server create it). So the
//! acting intervals of two owners of one object never overlap in true time, up to a process
//! pause longer than `margin` exactly between a lease check and its act — and then the
//! database fence still refuses the write.
//!
//! # Lending
//!
//! [`Transaction::fetch`] of an object owned elsewhere sends the owner `_orm.lend`. The owner
//! takes the object's lock (waiting for the transactions holding it — whose writes are
//! durable when they finish, as every commit is), forgets the object and deletes its znode;
//! the borrower then takes ownership as above. An owner that does not answer is waited out:
//! the borrower watches the znode until the owner's session expires (at most
//! [`OrmConfig::acquire_timeout`]). Objects stay cached at their owner for
//! [`OrmConfig::cache_expiration`] after last use, then are released the same way.
//!
//! # Keys and rows
//!
//! An object key is any UTF-8 string of 1 to [`OBJECT_KEY_BYTES_MAX`] bytes, and so is the
//! user whose shard holds it ([`Model::shard_user`]). Its row is `s0007/{user}/{model}.{key}`
//! in table `{model}`, with the user and the key each encoded by [`crate::keyname::encode`]
//! (plain ids as they are; others `%` and the base64url of their bytes), so neither can
//! split the key or reach another object's row. A row key has at most 255 bytes:
//! [`ObjectRef::validate`] refuses an object whose key would be longer, and an object keyed
//! by an account id in that account's shard (a user's inventory, the gate's player anchor)
//! always fits, whatever the id's characters (a compile-time check in `model.rs`).
//!
//! # Transactions
//!
//! A [`Transaction`] takes its objects' locks (one async lock per object on each server) in
//! one global order (unique-field index entries first, then `(model, key)`, see [`ObjectRef`]): [`Transaction::lock_all`] sorts, and taking an object that
//! sorts before one already held fails with [`OrmError::LockOrder`] (declare it up front).
//! Waits only ever go from a smaller object to a larger one, on one server or across servers
//! (a lend waits for the holders of the one object it asks for, which hold nothing smaller
//! they wait on), so there is no cycle: deadlock-free by construction, no wound-wait needed.
//!
//! Changes are made in memory and written at [`Transaction::commit`], conditional on each
//! object's row version and fence:
//! - objects whose shards are on **one SQL instance**: one `transact` (shard guards
//!   included) — atomic by the instance;
//! - objects on **several instances**: the store picks a *primary* instance; on every other
//!   instance it writes each object's row with the new state as a *pending write* (the redo
//!   record: new state, transaction id, primary user); then, in one `transact` on the primary,
//!   it creates the decision row `committed` and writes the primary's objects — the commit
//!   point; then it applies the pending writes. Whoever next takes ownership of an object with
//!   a pending write completes it first: it creates the decision row `aborted` if there is none
//!   (so the transaction can no longer commit), reads the decision, and writes the row's final
//!   state. A crash anywhere leaves all of the transaction or none of it.
//!
//! One-instance commits are batched (group commit, `batch.rs`): commits that arrive while a
//! write to their instance is in flight go together in its next `transact`, and one commit's
//! refused check does not fail the others.
//!
//! A commit is acknowledged only once its writes are durable. An abort (dropping the
//! transaction, a game error, a fence, a timeout) leaves no trace: a failed or uncertain
//! commit evicts its objects from the cache, so their next use reloads them from SQL.
//!
//! # Effects after commit
//!
//! [`Transaction::after_commit`] queues a future (a client message, a `send_message`, an RPC,
//! a timer); the queue is run in order, in one task, after the commit succeeded, and dropped
//! otherwise.
//!
//! # Planted bugs ([`OrmBugs`]), each caught by the `object_lending` scenario
//! - `no_fence`: writes and loads carry fence 0 and the lease is not checked (acts are still
//!   reported with the owner record's fence, so overlapping owners are visible);
//! - `effects_before_commit`: effects run when queued;
//! - `unordered_locks`: objects are locked in the caller's order, with no order check;
//! - `no_intent`: a cross-instance commit writes each instance in turn, with no pending writes
//!   or decision.
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | this text, [`Orm`], [`OrmConfig`], [`OrmBugs`], [`OrmError`], [`OrmObserver`], start/stop, expiry |
//! | `model.rs` | [`Model`], [`ObjectRef`] |
//! | `stored.rs` | row encodings: objects, pending writes, decisions |
//! | `owner.rs` | taking ownership (claim, load, completing pending writes), releasing, lending |
//! | `txn.rs` | [`Transaction`] |
//! | `commit.rs` | the one-instance and cross-instance commits |
//! | `batch.rs` | group commit of one-instance commits |

mod batch;
mod commit;
mod model;
mod owner;
mod stored;
mod txn;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use tracing::debug;

pub use self::model::{Model, ObjectRef, OBJECT_KEY_BYTES_MAX, UNIQUE_MODEL};
pub use self::stored::{read_committed, CommittedRead, DECISION_TABLE};
pub use self::txn::{Transaction, TXN_OBJECTS_MAX, TXN_ROWS_MAX};
use crate::account::keyed_lock::KeyedLocks;
use crate::account::{AccountError, AccountManager};
use crate::cluster::PeerId;
use crate::env::{lock, CoordError, DbError, Env, MonoTime, TaskHandle};
use crate::manifest::reader::Fields;
use crate::manifest::{Manifest, ManifestError};
use crate::rpc::Rpc;
use crate::shard::config::{OBJECT_KEYS, OBJECT_SECTION};
use crate::shard::{ShardError, ShardRouter};

/// Messages the object stores of a cluster exchange.
pub mod messages {
    include!(concat!(env!("OUT_DIR"), "/sandtable.orm.rs"));
}

/// RPC message type of a lend request.
pub const RPC_LEND: &str = "_orm.lend";
/// The `tracing` target of the object store.
pub const LOG_TARGET: &str = "engine::orm";
/// Shortest period of the expiry sweep.
const SWEEP_PERIOD_MIN: Duration = Duration::from_millis(100);
/// How often a borrower looks again at an owner record it is waiting out (a watch also wakes it).
const OWNER_POLL: Duration = Duration::from_millis(250);

/// Settings of the object store (iFun's `Object` section where names exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrmConfig {
    pub app_id: String,
    /// `cache_expiration_in_ms`: an owned object unused this long is released (default 3 s).
    pub cache_expiration: Duration,
    /// Longest a transaction waits to take one object: to borrow it, or to wait out an owner
    /// that does not answer (its session must expire first, so keep this above the session
    /// timeout). Default 20 s.
    pub acquire_timeout: Duration,
    /// Deadline of one lend request (default 2 s).
    pub lend_timeout: Duration,
    pub bugs: OrmBugs,
}

impl OrmConfig {
    pub fn new(app_id: impl Into<String>) -> OrmConfig {
        OrmConfig {
            app_id: app_id.into(),
            cache_expiration: Duration::from_millis(3000),
            acquire_timeout: Duration::from_secs(20),
            lend_timeout: Duration::from_secs(2),
            bugs: OrmBugs::default(),
        }
    }
}

impl OrmConfig {
    /// The store's settings from the manifest: iFun's `Object.cache_expiration_in_ms`
    /// (default 3000; `copy_cache_expiration_in_ms` is accepted and unused: no read-only
    /// copies are kept, see docs/objects.md), the app id from `AppInfo`.
    pub fn from_manifest(m: &Manifest) -> Result<OrmConfig, ManifestError> {
        let empty = serde_json::Value::Object(Default::default());
        let object = Fields::new(OBJECT_SECTION, m.section(OBJECT_SECTION).unwrap_or(&empty), OBJECT_KEYS)?;
        let expiry = object.uint("cache_expiration_in_ms", 0..=86_400_000, 3000)?;
        let mut cfg = OrmConfig::new(m.app_info.app_id.clone());
        cfg.cache_expiration = Duration::from_millis(expiry);
        Ok(cfg)
    }
}

/// Planted bugs (see the module docs); all off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrmBugs {
    pub no_fence: bool,
    pub effects_before_commit: bool,
    pub unordered_locks: bool,
    pub no_intent: bool,
}

/// Why an object store call failed. After any error the transaction is over (drop it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrmError {
    /// A name breaks a rule (model, key, user); fix the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object was not taken before its lock, or was used without being locked.
    #[error("object {0} is not locked by this transaction")]
    NotLocked(String),
    /// Taking `object` now would break the global lock order: it sorts before an object the
    /// transaction holds. Take every object of a transaction with one `lock_all` up front.
    #[error("object {object} sorts before {held}, which this transaction holds: take both in one lock_all")]
    LockOrder { object: String, held: String },
    /// `create` of an object that exists.
    #[error("object {0} already exists")]
    Exists(String),
    /// A unique field's value (`model.field.value`) is held by another object.
    #[error("unique value {0} is taken")]
    UniqueTaken(String),
    /// The object could not be taken in time (its owner did not lend it and its session did
    /// not expire, or coordination or SQL was unreachable). Nothing was written; retry later.
    #[error("object {object} unavailable: {why}")]
    Unavailable { object: String, why: String },
    /// This server lost an object during the transaction (its lease lapsed, or the database
    /// refused its fence). Nothing was written; retry (the object is taken again).
    #[error("ownership of {0} lost; nothing was written")]
    OwnershipLost(String),
    /// The commit was refused (a row changed under it, a shard moved); nothing was written.
    /// Retry.
    #[error("commit refused: {0}")]
    Conflict(String),
    /// The commit's outcome is unknown (SQL did not answer after the request was sent): it
    /// took effect wholly or not at all. Read the objects again to know.
    #[error("commit outcome unknown: {0}")]
    Unknown(String),
    /// A stored object could not be decoded as its model (or not encoded).
    #[error("object {object}: {why}")]
    Codec { object: String, why: String },
    /// The store was stopped.
    #[error("object store stopped")]
    Stopped,
}

impl OrmError {
    /// True if retrying the whole transaction later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, OrmError::Unavailable { .. } | OrmError::OwnershipLost(_) | OrmError::Conflict(_))
    }
}

/// Told each time the store *acts* on an object as its owner, right after the lease check that
/// allowed it: state served to a transaction, or a commit of it sent. The `object_lending`
/// scenario's single-owner checker is built on it.
///
/// Every act happens inside a transaction (taking an object for it, or its commit), and each
/// object a transaction took is [`released`](Self::released) when the transaction ends
/// (committed, failed or dropped), so an observer can also tell which server holds objects in
/// a transaction still under way: the simulator aims pauses at that moment.
pub trait OrmObserver: Send + Sync {
    fn acted(&self, object: &ObjectRef, fence: u64);
    /// The transaction holding `object` on this server ended (after its commit, if any).
    fn released(&self, _object: &ObjectRef) {}
}

/// What the owner knows of one object it owns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Owned {
    /// The account manager session epoch its owner record was created on.
    pub epoch: u64,
    /// The owner record's creation zxid.
    pub fence: u64,
    /// The row's version; `None` if there is no row (absent or a placeholder).
    pub version: Option<u64>,
    /// The committed state; `None` if the object does not exist.
    pub value: Option<Value>,
    pub last_used: MonoTime,
}

/// The object store of one server. Cheap to clone.
#[derive(Clone)]
pub struct Orm {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Orm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orm").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    env: Env,
    cfg: OrmConfig,
    id: PeerId,
    accounts: AccountManager,
    router: ShardRouter,
    rpc: Rpc,
    /// `/{app_id}/objects`.
    root: String,
    /// One lock per object; transactions and lends take it.
    locks: KeyedLocks,
    /// Objects owned here. An entry is only read or changed by the holder of its lock.
    cache: Mutex<BTreeMap<ObjectRef, Owned>>,
    /// Objects the expiry sweep leaves alone ([`Orm::pin`]).
    pinned: Mutex<std::collections::BTreeSet<ObjectRef>>,
    /// Prefix of this store's transaction ids (random per start) and the counter after it.
    txn_prefix: String,
    txn_seq: AtomicU64,
    observer: Option<Arc<dyn OrmObserver>>,
    /// Batches concurrent one-instance commits.
    group: Arc<batch::GroupCommit>,
    tasks: Mutex<Vec<TaskHandle>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl Orm {
    /// Starts the object store of this server: registers the lend handler on `rpc` and starts
    /// the expiry sweep. `accounts` (whose coordination session and lease it acts on) and
    /// `router` must belong to this server.
    pub async fn start(
        env: Env,
        cfg: OrmConfig,
        accounts: AccountManager,
        router: ShardRouter,
        rpc: Rpc,
        id: PeerId,
        observer: Option<Arc<dyn OrmObserver>>,
    ) -> Result<Orm, OrmError> {
        crate::env::validate_app_id(&cfg.app_id).map_err(|e| OrmError::InvalidArgument(e.to_string()))?;
        let txn_prefix = format!("{:016x}", env.rand.next_u64());
        let group = batch::GroupCommit::new(router.clone(), env.spawn.clone());
        let inner = Arc::new(Inner {
            group,
            root: format!("/{}/objects", cfg.app_id),
            env,
            cfg,
            id,
            accounts,
            router,
            rpc,
            locks: KeyedLocks::default(),
            cache: Mutex::default(),
            pinned: Mutex::default(),
            txn_prefix,
            txn_seq: AtomicU64::new(0),
            observer,
            tasks: Mutex::default(),
            stopped: Default::default(),
        });
        owner::register_rpc(&inner.rpc, Arc::downgrade(&inner));
        let weak = Arc::downgrade(&inner);
        let sweep = inner.env.spawn.spawn("orm-expiry", Box::pin(expiry_loop(weak)));
        lock(&inner.tasks).push(sweep);
        Ok(Orm { inner })
    }

    /// Starts a transaction. Dropping it without [`Transaction::commit`] aborts it.
    pub fn begin(&self) -> Transaction<'_> {
        Transaction::new(self)
    }

    /// Reads one object (a transaction that only reads it): iFun's `Fetch` outside a
    /// transaction.
    pub async fn fetch<M: Model>(&self, key: &str) -> Result<Option<M>, OrmError> {
        let mut tx = self.begin();
        let value = tx.fetch::<M>(key).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// The shard router the store writes through (for plain rows:
    /// [`Transaction::write_row`]).
    pub fn router(&self) -> &ShardRouter {
        &self.inner.router
    }

    /// This server's id.
    pub fn id(&self) -> PeerId {
        self.inner.id
    }

    /// The server that owns `obj` now, as its owner record says (`None`: nobody). A read, not
    /// a claim: the answer may be stale by the time it is used.
    pub async fn owner_of(&self, obj: &ObjectRef) -> Result<Option<PeerId>, OrmError> {
        if lock(&self.inner.cache).contains_key(obj) {
            return Ok(Some(self.inner.id));
        }
        let (coord, _) =
            self.inner.accounts.coordination().await.map_err(|e| account_unavailable(obj, &e))?;
        match coord.get_data(&self.inner.owner_path(obj)).await {
            Ok((data, _)) => Ok(PeerId::from_slice(&data)),
            Err(CoordError::NoNode) => Ok(None),
            Err(e) => Err(coord_unavailable(obj, &e)),
        }
    }

    /// Keeps `obj` cached while this server owns it: the expiry sweep skips it (a lend still
    /// releases it, so a pinned object moves when another server needs it). A gate's backend
    /// pins the anchors of the players it hosts.
    pub fn pin(&self, obj: &ObjectRef) {
        lock(&self.inner.pinned).insert(obj.clone());
    }

    /// Undoes [`pin`](Self::pin): the object expires as usual from now on.
    pub fn unpin(&self, obj: &ObjectRef) {
        lock(&self.inner.pinned).remove(obj);
    }

    /// The fence under which this server owns `obj` and may act on it *now* (owned, and the
    /// lease its owner record lives under is held), without I/O; `None` otherwise. Check it
    /// immediately before the act it guards.
    pub fn holds(&self, obj: &ObjectRef) -> Option<u64> {
        let owned = lock(&self.inner.cache).get(obj).map(|o| (o.epoch, o.fence));
        owned.filter(|(epoch, _)| self.inner.acting(*epoch)).map(|(_, fence)| fence)
    }

    /// Objects this server owns now (sorted), whatever the lease says.
    pub fn owned(&self) -> Vec<ObjectRef> {
        lock(&self.inner.cache).keys().cloned().collect()
    }

    /// Releases every owned object (their owner records are deleted, so other servers need
    /// not wait out this one) and stops the expiry sweep. Transactions in flight finish first.
    pub async fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        for obj in self.owned() {
            // A transaction still holding it past its own deadline is not waited for: the
            // record then goes with the session.
            let clock = self.inner.env.clock.clone();
            let name = obj.name();
            let lock = self.inner.locks.lock(&name);
            if let Ok(guard) = crate::env::timeout(&*clock, self.inner.cfg.acquire_timeout, lock).await {
                self.inner.release(&obj).await;
                drop(guard);
            }
        }
    }
}

impl Inner {
    fn now(&self) -> MonoTime {
        self.env.clock.now()
    }

    fn check_running(&self) -> Result<(), OrmError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(OrmError::Stopped);
        }
        Ok(())
    }

    /// True if this server may act on an object owned on session `epoch` now.
    fn acting(&self, epoch: u64) -> bool {
        self.cfg.bugs.no_fence || self.accounts.acting_on(epoch)
    }

    /// The fence a write of an object owned under `fence` carries (0 under the planted bug
    /// `no_fence`; acts are still reported with the owner record's fence).
    fn db_fence(&self, fence: u64) -> u64 {
        if self.cfg.bugs.no_fence {
            0
        } else {
            fence
        }
    }

    /// Reports an act to the observer.
    fn acted(&self, obj: &ObjectRef, fence: u64) {
        if let Some(o) = &self.observer {
            o.acted(obj, fence);
        }
    }

    /// Reports to the observer that a transaction let go of `obj`.
    fn released(&self, obj: &ObjectRef) {
        if let Some(o) = &self.observer {
            o.released(obj);
        }
    }

    /// A new transaction id, unique in the cluster (random prefix per start, then a counter).
    fn next_txn_id(&self) -> String {
        let n = self.txn_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.txn_prefix)
    }

    /// Forgets objects (their next use reloads them from SQL); the caller holds their locks.
    fn evict<'a>(&self, objects: impl IntoIterator<Item = &'a ObjectRef>) {
        let mut cache = lock(&self.cache);
        for o in objects {
            cache.remove(o);
        }
    }
}

/// Releases objects unused for `cache_expiration` (skipping any a transaction holds).
async fn expiry_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let period = (inner.cfg.cache_expiration / 2).max(SWEEP_PERIOD_MIN);
        let clock = inner.env.clock.clone();
        let now = inner.now();
        let due: Vec<ObjectRef> = {
            let pinned = lock(&inner.pinned);
            let cache = lock(&inner.cache);
            cache
                .iter()
                .filter(|(k, _)| !pinned.contains(*k))
                .filter(|(_, o)| now.saturating_since(o.last_used) >= inner.cfg.cache_expiration)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for obj in due {
            let Some(guard) = inner.locks.try_lock(&obj.name()) else { continue };
            let still_due = lock(&inner.cache)
                .get(&obj)
                .is_some_and(|o| inner.now().saturating_since(o.last_used) >= inner.cfg.cache_expiration);
            if still_due {
                debug!(target: LOG_TARGET, node = %inner.env.node, object = %obj, "cache expiry: releasing");
                inner.release(&obj).await;
            }
            drop(guard);
        }
        drop(inner);
        clock.sleep(period).await;
    }
}

/// Maps a shard router error met while reaching `object`.
fn shard_unavailable(object: &ObjectRef, e: &ShardError) -> OrmError {
    OrmError::Unavailable { object: object.to_string(), why: e.to_string() }
}

fn coord_unavailable(object: &ObjectRef, e: &CoordError) -> OrmError {
    OrmError::Unavailable { object: object.to_string(), why: format!("coordination: {e}") }
}

fn account_unavailable(object: &ObjectRef, e: &AccountError) -> OrmError {
    OrmError::Unavailable { object: object.to_string(), why: format!("no coordination lease: {e}") }
}

/// The db error inside a shard error, if any.
fn db_error(e: &ShardError) -> Option<&DbError> {
    match e {
        ShardError::Db { error, .. } => Some(error),
        _ => None,
    }
}
