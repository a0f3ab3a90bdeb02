//! Taking ownership of an object (claim the owner record, raise the row's fence and read it,
//! complete a pending cross-instance write), releasing it, and lending it on request.
//!
//! Every function here runs with the object's lock held by the caller (a transaction, a lend,
//! the expiry sweep), so the object's cache entry changes under nobody's feet.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use tracing::{debug, info};

use super::messages::{LendObject, LendObjectReply};
use super::stored::{decision_suffix, decision_table, Decision, StoredObject};
use super::{
    account_unavailable, coord_unavailable, db_error, shard_unavailable, Inner, ObjectRef, OrmError, Owned,
    LOG_TARGET, OWNER_POLL, RPC_LEND,
};
use crate::cluster::PeerId;
use crate::env::{
    ensure_path, parent_path, Backoff, Coord, CoordError, CreateMode, DbError, Expect, MonoTime,
};
use crate::env::{Row, WriteOp, WriteResult};
use crate::rpc::{CallOptions, HandlerError, Rpc};
use crate::shard::ShardError;

/// Pacing of retries after transient coordination or SQL failures while taking an object.
const RETRY: Backoff = Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_secs(1));

impl Inner {
    /// The owner record's path: `{root}/{model}/{name}`, the key encoded into a node name.
    pub(super) fn owner_path(&self, obj: &ObjectRef) -> String {
        format!("{}/{}/{}", self.root, obj.model, crate::keyname::encode(&obj.key))
    }

    /// The object's row key.
    pub(super) fn row_key(&self, obj: &ObjectRef) -> String {
        self.router.user_key(&obj.shard_user, &obj.row_suffix())
    }

    /// With `obj`'s lock held: makes this server its owner (borrowing it, or waiting out an
    /// unresponsive owner, until `deadline`), loaded and acting. Returns the cached state.
    pub(super) async fn ensure_owned(&self, obj: &ObjectRef, deadline: MonoTime) -> Result<Owned, OrmError> {
        let mut attempt = 0u32;
        loop {
            self.check_running()?;
            let cached = super::lock(&self.cache).get(obj).cloned();
            let failure = match cached {
                Some(o) if self.acting(o.epoch) => {
                    let now = self.now();
                    self.acted(obj, o.fence);
                    if let Some(e) = super::lock(&self.cache).get_mut(obj) {
                        e.last_used = now;
                    }
                    return Ok(Owned { last_used: now, ..o });
                }
                Some(o) => match self.accounts.coordination().await {
                    // The lease came back on the same session: the record is still ours.
                    Ok((_, epoch)) if epoch == o.epoch => {
                        crate::probe!("orm: lease lapsed and came back on the same session");
                        continue;
                    }
                    // The session was replaced: its ephemerals (our record) are gone.
                    Ok(_) => {
                        crate::probe!("orm: lease lapsed with a new session, object evicted");
                        self.evict([obj]);
                        continue;
                    }
                    Err(e) => account_unavailable(obj, &e),
                },
                None => match self.take(obj, deadline).await {
                    Ok(owned) => {
                        super::lock(&self.cache).insert(obj.clone(), owned);
                        continue;
                    }
                    Err(e @ OrmError::Unavailable { .. }) => e,
                    Err(e) => return Err(e),
                },
            };
            let delay = RETRY.delay(attempt, &*self.env.rand);
            attempt = attempt.saturating_add(1);
            if self.now() + delay >= deadline {
                return Err(failure);
            }
            debug!(target: LOG_TARGET, node = %self.env.node, object = %obj, error = %failure, "taking the object: retrying");
            self.env.clock.sleep(delay).await;
        }
    }

    /// Claims the owner record, then loads the row under the new fence. A transient failure
    /// comes back as `Unavailable` (the caller retries until its deadline).
    async fn take(&self, obj: &ObjectRef, deadline: MonoTime) -> Result<Owned, OrmError> {
        let (coord, epoch) = self.accounts.coordination().await.map_err(|e| account_unavailable(obj, &e))?;
        let fence = self.claim(obj, coord.as_ref(), deadline).await?;
        match self.load(obj, epoch, fence).await {
            Ok(owned) => {
                info!(target: LOG_TARGET, node = %self.env.node, object = %obj, fence, version = ?owned.version, "object taken");
                Ok(owned)
            }
            Err(e) => {
                // Keep the record (it is ours; a retry reloads), unless a newer owner fenced
                // us out: then our record is stale and must not block anyone.
                if matches!(e, OrmError::OwnershipLost(_)) {
                    let _ = self.delete_own_record(obj, coord.as_ref()).await;
                }
                Err(e)
            }
        }
    }

    /// Creates the owner record on `coord` (the account manager's session), or gets the
    /// current owner to release it, or waits its session out. Returns the record's czxid.
    async fn claim(&self, obj: &ObjectRef, coord: &dyn Coord, deadline: MonoTime) -> Result<u64, OrmError> {
        let path = self.owner_path(obj);
        let data = Bytes::copy_from_slice(self.id.as_bytes());
        // Read first: when another server owns the object (the lending path), a create would
        // only fail, and a failed create costs ZooKeeper a logged write where a read is cheap.
        let mut create = false;
        loop {
            if create {
                match coord.create(&path, data.clone(), CreateMode::Ephemeral).await {
                    Ok(_)
                    | Err(CoordError::NodeExists)
                    | Err(CoordError::ConnectionLoss { maybe_applied: true }) => {}
                    Err(CoordError::NoNode) => {
                        let parent = parent_path(&path).unwrap_or("/");
                        ensure_path(coord, parent).await.map_err(|e| coord_unavailable(obj, &e))?;
                        continue;
                    }
                    Err(e) => return Err(coord_unavailable(obj, &e)),
                }
            }
            let (owner_data, stat) = match coord.get_data(&path).await {
                Ok(v) => v,
                Err(CoordError::NoNode) => {
                    create = true;
                    continue;
                }
                Err(e) => return Err(coord_unavailable(obj, &e)),
            };
            if stat.ephemeral_owner == coord.session_id() {
                return u64::try_from(stat.czxid).map_err(|_| OrmError::Unavailable {
                    object: obj.to_string(),
                    why: "negative czxid".into(),
                });
            }
            let owner = PeerId::from_slice(&owner_data);
            let released = match owner {
                Some(peer) if peer != self.id => self.ask_to_lend(obj, peer).await,
                // Our own record on an older session (this server lost it and is waiting
                // for it to expire), or an unreadable one: only expiry removes it.
                _ => false,
            };
            create = released;
            if released {
                continue;
            }
            if self.now() >= deadline {
                return Err(OrmError::Unavailable {
                    object: obj.to_string(),
                    why: format!("owner {owner:?} neither lent it nor expired"),
                });
            }
            crate::probe!("orm: waiting out an unresponsive owner's record");
            self.wait_gone(coord, &path, deadline).await;
        }
    }

    /// Waits until `path` is deleted, `OWNER_POLL` passes, or `deadline`.
    async fn wait_gone(&self, coord: &dyn Coord, path: &str, deadline: MonoTime) {
        let until = (self.now() + OWNER_POLL).min(deadline);
        let watch = match coord.exists_w(path).await {
            Ok((Some(_), watcher)) => Some(watcher),
            Ok((None, _)) => return,
            Err(_) => None,
        };
        let sleep = self.env.clock.sleep_until(until);
        match watch {
            Some(w) => {
                futures::future::select(Box::pin(w), sleep).await;
            }
            None => sleep.await,
        }
    }

    /// Sends `_orm.lend` to `peer`; true if it says it released the object.
    async fn ask_to_lend(&self, obj: &ObjectRef, peer: PeerId) -> bool {
        let req = LendObject { model: obj.model.clone(), key: obj.key.clone() };
        let opts = CallOptions::default().with_timeout(self.cfg.lend_timeout);
        match self.rpc.call::<LendObject, LendObjectReply>(peer, RPC_LEND, &req, opts).await {
            Ok(rep) if rep.released => {
                crate::probe!("orm: object lent by its owner");
                true
            }
            Ok(rep) => {
                crate::probe!("orm: owner refused to lend");
                debug!(target: LOG_TARGET, node = %self.env.node, object = %obj, ?peer, reason = %rep.reason, "owner did not lend");
                false
            }
            Err(e) => {
                debug!(target: LOG_TARGET, node = %self.env.node, object = %obj, ?peer, error = %e, "lend request failed");
                false
            }
        }
    }

    /// Raises the row's fence to `fence` and reads it; completes a pending write. The raise
    /// goes through the group commit (`batch.rs`), so takes of many objects at once (a burst of
    /// players switching backends, each taking its objects) share their instance's writes
    /// with each other and with commits, instead of one durable write each.
    async fn load(&self, obj: &ObjectRef, epoch: u64, fence: u64) -> Result<Owned, OrmError> {
        let (table, key) = (obj.table(), self.row_key(obj));
        // `obj` was validated when its transaction locked it (`ObjectRef::validate`, the user
        // included), so it cannot fail its whole batch at the router.
        let instance = self.router.instance_of_user(&obj.shard_user);
        let raise = WriteOp::raise_fence(&table, key, self.db_fence(fence));
        let raised = self.group.submit(&instance, vec![obj.shard_user.clone()], vec![raise]).await;
        let row = match raised {
            Ok(mut r) => match r.pop() {
                Some(WriteResult::RaiseFence { row, .. }) => row,
                other => unreachable!("RaiseFence answered {other:?}"),
            },
            Err(e) => return Err(self.load_error(obj, &e)),
        };
        let now = self.now();
        let Some(row) = row else {
            return Ok(Owned { epoch, fence, version: None, value: None, last_used: now });
        };
        let stored = StoredObject::decode(&row.value)
            .map_err(|why| OrmError::Codec { object: obj.to_string(), why })?;
        if stored.pending.is_none() {
            return Ok(Owned {
                epoch,
                fence,
                version: Some(row.version),
                value: stored.value,
                last_used: now,
            });
        }
        crate::probe!("orm: load found a pending cross-instance write");
        let (version, value) = self.complete_pending(obj, &row, stored, fence).await?;
        Ok(Owned { epoch, fence, version: Some(version), value, last_used: now })
    }

    fn load_error(&self, obj: &ObjectRef, e: &ShardError) -> OrmError {
        match db_error(e) {
            Some(DbError::Fenced { .. }) => {
                crate::probe!("orm: load refused by a newer owner's fence");
                OrmError::OwnershipLost(obj.to_string())
            }
            _ => shard_unavailable(obj, e),
        }
    }

    /// Settles the cross-instance transaction whose pending write `row` carries: aborts it if
    /// undecided (creating its `aborted` decision), then writes the row's final state under
    /// `fence`. Returns the row's new version and the object's state.
    async fn complete_pending(
        &self,
        obj: &ObjectRef,
        row: &Row,
        stored: StoredObject,
        fence: u64,
    ) -> Result<(u64, Option<serde_json::Value>), OrmError> {
        let pending = stored.pending.expect("called with a pending write");
        let decision = self.decide(obj, &pending.primary, &pending.txn, Decision::Aborted).await?;
        info!(target: LOG_TARGET, node = %self.env.node, object = %obj, txn = %pending.txn, ?decision, "completing a pending write");
        let value = match decision {
            Decision::Committed => pending.value,
            Decision::Aborted => stored.value,
        };
        let settled = StoredObject { value: value.clone(), pending: None };
        let op = WriteOp::put(
            &obj.table(),
            row.key.clone(),
            settled.encode(),
            Expect::Version(row.version),
            self.db_fence(fence),
        );
        match self.router.transact(&obj.shard_user, vec![op]).await {
            Ok(r) => match r.first() {
                Some(WriteResult::Put { version }) => Ok((*version, value)),
                other => unreachable!("Put answered {other:?}"),
            },
            Err(e) => Err(self.load_error(obj, &e)),
        }
    }

    /// The decision of transaction `txn` (whose decision row is in `primary`'s shard): creates
    /// it as `proposal` if there is none, else reads it.
    pub(super) async fn decide(
        &self,
        obj: &ObjectRef,
        primary: &str,
        txn: &str,
        proposal: Decision,
    ) -> Result<Decision, OrmError> {
        let (table, key) = (decision_table(), self.router.user_key(primary, &decision_suffix(txn)));
        let create = WriteOp::put(&table, key.clone(), proposal.encode(), Expect::Absent, 0);
        match self.router.transact(primary, vec![create]).await {
            Ok(_) => return Ok(proposal),
            Err(ShardError::Db { error: DbError::VersionMismatch { .. }, .. }) => {}
            Err(e) => return Err(shard_unavailable(obj, &e)),
        }
        match self.router.get(primary, &table, &key).await {
            Ok(Some(row)) => {
                Decision::decode(&row.value).map_err(|why| OrmError::Codec { object: obj.to_string(), why })
            }
            Ok(None) => {
                Err(OrmError::Unavailable { object: obj.to_string(), why: "decision row vanished".into() })
            }
            Err(e) => Err(shard_unavailable(obj, &e)),
        }
    }

    /// With `obj`'s lock held: forgets it and deletes its owner record if it is ours.
    pub(super) async fn release(&self, obj: &ObjectRef) -> bool {
        let owned = super::lock(&self.cache).remove(obj);
        let Ok((coord, epoch)) = self.accounts.coordination().await else { return false };
        if owned.is_some_and(|o| o.epoch == epoch) {
            // Our record on the live session (the lease is held on it): nobody else deletes
            // another server's record, and it cannot have expired, so it is ours — no read.
            return match coord.delete(&self.owner_path(obj), None).await {
                Ok(()) | Err(CoordError::NoNode) => true,
                Err(e) => {
                    debug!(target: LOG_TARGET, node = %self.env.node, object = %obj, error = %e, "owner record not deleted");
                    false
                }
            };
        }
        self.delete_own_record(obj, coord.as_ref()).await.unwrap_or(false)
    }

    /// Deletes the owner record if this session created it. True if the record is not ours
    /// (any more) when this returns.
    async fn delete_own_record(&self, obj: &ObjectRef, coord: &dyn Coord) -> Result<bool, CoordError> {
        let path = self.owner_path(obj);
        let (data, stat) = match coord.get_data(&path).await {
            Ok(v) => v,
            Err(CoordError::NoNode) => return Ok(true),
            Err(e) => return Err(e),
        };
        if stat.ephemeral_owner != coord.session_id() {
            // Another owner's record, or ours on an older session (it expires on its own).
            return Ok(PeerId::from_slice(&data) != Some(self.id));
        }
        match coord.delete(&path, Some(stat.version)).await {
            Ok(()) | Err(CoordError::NoNode) => {
                debug!(target: LOG_TARGET, node = %self.env.node, object = %obj, "owner record deleted");
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// The lend handler's work: waits for the transactions holding `obj` (at most
    /// `lend_timeout`: the borrower has given up by then), releases it.
    async fn lend(&self, obj: ObjectRef) -> LendObjectReply {
        let name = obj.name();
        let wait = crate::env::timeout(&*self.env.clock, self.cfg.lend_timeout, self.locks.lock(&name));
        let Ok(guard) = wait.await else {
            return LendObjectReply { released: false, reason: "the object is busy here".into() };
        };
        let released = self.release(&obj).await;
        drop(guard);
        LendObjectReply {
            released,
            reason: if released { String::new() } else { "owner record could not be deleted yet".into() },
        }
    }
}

/// Registers the `_orm.lend` handler (it holds the store weakly): a waiting handler (no
/// handler permit), since it waits for this server's transactions on the object, at most
/// `lend_timeout`, and a borrower whose own handler waits for the lend must not find every
/// permit here held by handlers waiting for lends from it.
pub(super) fn register_rpc(rpc: &Rpc, weak: Weak<Inner>) {
    rpc.register_waiting_handler(RPC_LEND, move |_info, req: LendObject| {
        let inner: Option<Arc<Inner>> = weak.upgrade();
        async move {
            let inner = inner.ok_or_else(|| HandlerError::new("object store gone"))?;
            let obj = ObjectRef { shard_user: String::new(), model: req.model, key: req.key };
            // The shard user only matters for SQL; a lend needs the model and key.
            if crate::env::validate_name(&obj.model).is_err() || obj.key.is_empty() || obj.key.contains('/') {
                return Err(HandlerError::new("bad object name"));
            }
            // `ObjectRef` compares by model and key only, so this finds the cache entry as is.
            Ok(inner.lend(obj).await)
        }
    });
}
