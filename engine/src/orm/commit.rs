//! Commits: one fenced `transact` when the changed objects share a SQL instance; pending
//! writes, a decision row and an apply pass when they do not (see the module docs).

use std::collections::{BTreeMap, BTreeSet};

use futures::FutureExt;
use serde_json::Value;
use tracing::{debug, warn};

use super::stored::{decision_suffix, decision_table, Decision, Pending, StoredObject};
use super::txn::Transaction;
use super::{Inner, ObjectRef, OrmError, Owned, LOG_TARGET};
use crate::env::{DbError, Expect, WriteOp, WriteResult};
use crate::shard::ShardError;

/// One changed object: what it is, the owner's state the transaction started from, and the
/// new state (`None`: deleted).
pub(super) struct Write {
    pub obj: ObjectRef,
    pub base: Owned,
    pub value: Option<Value>,
}

impl Transaction<'_> {
    /// Writes the transaction's changes — durably and all-or-nothing, across SQL instances too —
    /// then runs its effects (in order, in one task) and releases its objects. Read-only
    /// transactions write nothing. On an error nothing was written, except
    /// [`OrmError::Unknown`] (all or nothing was); the objects are then reloaded on next use.
    pub async fn commit(mut self) -> Result<(), OrmError> {
        let inner = self.orm.inner.clone();
        inner.check_running()?;
        for (obj, h) in &self.held {
            if !inner.acting(h.base.epoch) {
                inner.evict([obj]);
                return Err(OrmError::OwnershipLost(obj.to_string()));
            }
        }
        let writes: Vec<Write> = self
            .held
            .iter_mut()
            .filter_map(|(obj, h)| {
                h.change.take().map(|value| Write { obj: obj.clone(), base: h.base.clone(), value })
            })
            .collect();
        let rows = std::mem::take(&mut self.rows);
        if !writes.is_empty() || !rows.is_empty() {
            // The acts: every written object's state goes out under its fence, now.
            for w in &writes {
                inner.acted(&w.obj, w.base.fence);
            }
            match inner.commit_writes(&writes, rows).await {
                Ok(versions) => {
                    let mut cache = super::lock(&inner.cache);
                    for (w, version) in writes.iter().zip(versions) {
                        match (version, cache.get_mut(&w.obj)) {
                            (Some(v), Some(entry)) if entry.fence == w.base.fence => {
                                entry.version = Some(v);
                                entry.value = w.value.clone();
                            }
                            _ => {
                                cache.remove(&w.obj);
                            }
                        }
                    }
                }
                Err(e) => {
                    inner.evict(writes.iter().map(|w| &w.obj));
                    debug!(target: LOG_TARGET, node = %inner.env.node, error = %e, "commit failed; objects evicted");
                    return Err(e);
                }
            }
        }
        let effects = std::mem::take(&mut self.effects);
        if !effects.is_empty() {
            let run = async move {
                for e in effects {
                    e.await;
                }
            };
            drop(inner.env.spawn.spawn("orm-effects", run.boxed()));
        }
        Ok(())
    }
}

impl Inner {
    /// Writes `writes`; returns each object's new row version (`None`: written, but the
    /// cache must reload it).
    async fn commit_writes(
        &self,
        writes: &[Write],
        rows: Vec<(String, WriteOp)>,
    ) -> Result<Vec<Option<u64>>, OrmError> {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, w) in writes.iter().enumerate() {
            groups.entry(self.router.instance_of_user(&w.obj.shard_user)).or_default().push(i);
        }
        let row_instances: BTreeSet<String> =
            rows.iter().map(|(u, _)| self.router.instance_of_user(u)).collect();
        for instance in &row_instances {
            groups.entry(instance.clone()).or_default();
        }
        if groups.len() == 1 {
            let mut ops: Vec<WriteOp> = writes.iter().map(|w| self.final_op(w, w.base.version)).collect();
            let instance = groups.into_keys().next().expect("one group");
            let mut users: BTreeSet<String> = writes.iter().map(|w| w.obj.shard_user.clone()).collect();
            for (user, op) in rows {
                users.insert(user);
                ops.push(op);
            }
            let results = self
                .group
                .submit(&instance, users.into_iter().collect(), ops)
                .await
                .map_err(|e| commit_error(writes, &e))?;
            return Ok(put_versions(&results[..writes.len()]).into_iter().map(Some).collect());
        }
        if !rows.is_empty() {
            return Err(OrmError::InvalidArgument(format!(
                "plain rows in a transaction spanning SQL instances {:?}",
                groups.keys().collect::<Vec<_>>()
            )));
        }
        if self.cfg.bugs.no_intent {
            let mut versions = vec![None; writes.len()];
            for idx in groups.values() {
                let ops = idx.iter().map(|&i| self.final_op(&writes[i], writes[i].base.version)).collect();
                let results =
                    self.transact_group(writes, idx, ops).await.map_err(|e| commit_error(writes, &e))?;
                for (&i, v) in idx.iter().zip(put_versions(&results)) {
                    versions[i] = Some(v);
                }
            }
            return Ok(versions);
        }
        self.commit_across(writes, groups).await
    }

    /// The cross-instance commit: prepare (pending writes) on every instance but the
    /// primary's, then the decision with the primary's objects, then apply.
    async fn commit_across(
        &self,
        writes: &[Write],
        mut groups: BTreeMap<String, Vec<usize>>,
    ) -> Result<Vec<Option<u64>>, OrmError> {
        let txn = self.next_txn_id();
        // The primary is the instance of the first object in the global order.
        let primary_instance = self.router.instance_of_user(&writes[0].obj.shard_user);
        let primary_user = writes[0].obj.shard_user.clone();
        let primary_idx = groups.remove(&primary_instance).expect("the first object has a group");
        let mut versions = vec![None; writes.len()];
        let mut prepared: Vec<(Vec<usize>, Vec<u64>)> = Vec::new();
        for idx in groups.values() {
            let ops = idx
                .iter()
                .map(|&i| {
                    let w = &writes[i];
                    let pending =
                        Pending { txn: txn.clone(), primary: primary_user.clone(), value: w.value.clone() };
                    let stored = StoredObject { value: w.base.value.clone(), pending: Some(pending) };
                    WriteOp::put(
                        &w.obj.table(),
                        self.row_key(&w.obj),
                        stored.encode(),
                        expect(&w.base),
                        self.db_fence(w.base.fence),
                    )
                })
                .collect();
            match self.transact_group(writes, idx, ops).await {
                Ok(results) => prepared.push((idx.clone(), put_versions(&results))),
                Err(e) => {
                    // Nothing can commit without our decision; record the abort for the
                    // loaders of the objects already prepared (best effort: they abort an
                    // undecided transaction themselves).
                    let _ = self.decide(&writes[0].obj, &primary_user, &txn, Decision::Aborted).await;
                    return Err(match commit_error(writes, &e) {
                        OrmError::Unknown(why) => OrmError::Conflict(format!("prepare failed: {why}")),
                        other => other,
                    });
                }
            }
        }
        let decision = WriteOp::put(
            &decision_table(),
            self.router.user_key(&primary_user, &decision_suffix(&txn)),
            Decision::Committed.encode(),
            Expect::Absent,
            0,
        );
        let mut ops = vec![decision];
        ops.extend(primary_idx.iter().map(|&i| self.final_op(&writes[i], writes[i].base.version)));
        match self.transact_group(writes, &primary_idx, ops).await {
            Ok(results) => {
                for (&i, v) in primary_idx.iter().zip(put_versions(&results[1..])) {
                    versions[i] = Some(v);
                }
            }
            Err(e) => {
                let err = commit_error(writes, &e);
                if !matches!(err, OrmError::Unknown(_)) {
                    let _ = self.decide(&writes[0].obj, &primary_user, &txn, Decision::Aborted).await;
                }
                return Err(err);
            }
        }
        // Committed. Apply the pending writes; one that fails is completed by the next load.
        for (idx, pversions) in prepared {
            let ops = idx.iter().zip(&pversions).map(|(&i, &v)| self.final_op(&writes[i], Some(v))).collect();
            match self.transact_group(writes, &idx, ops).await {
                Ok(results) => {
                    for (&i, v) in idx.iter().zip(put_versions(&results)) {
                        versions[i] = Some(v);
                    }
                }
                Err(e) => {
                    warn!(target: LOG_TARGET, node = %self.env.node, %txn, error = %e, "applying a committed pending write failed; the next load completes it");
                }
            }
        }
        Ok(versions)
    }

    /// The final write of one object: its new state, no pending write, conditional on
    /// `version` and carrying the owner's fence.
    fn final_op(&self, w: &Write, version: Option<u64>) -> WriteOp {
        let stored = StoredObject { value: w.value.clone(), pending: None };
        let expect = version.map_or(Expect::Absent, Expect::Version);
        WriteOp::put(
            &w.obj.table(),
            self.row_key(&w.obj),
            stored.encode(),
            expect,
            self.db_fence(w.base.fence),
        )
    }

    /// One `transact` over the shards of `writes[idx]`.
    async fn transact_group(
        &self,
        writes: &[Write],
        idx: &[usize],
        ops: Vec<WriteOp>,
    ) -> Result<Vec<WriteResult>, ShardError> {
        let users: BTreeSet<&str> = idx.iter().map(|&i| writes[i].obj.shard_user.as_str()).collect();
        let users: Vec<&str> = users.into_iter().collect();
        self.router.transact_users(&users, ops).await
    }
}

fn expect(base: &Owned) -> Expect {
    base.version.map_or(Expect::Absent, Expect::Version)
}

/// The versions of a run of `Put` results.
fn put_versions(results: &[WriteResult]) -> Vec<u64> {
    results
        .iter()
        .map(|r| match r {
            WriteResult::Put { version } => *version,
            other => unreachable!("a Put answered {other:?}"),
        })
        .collect()
}

/// What a failed commit write means for the transaction.
fn commit_error(writes: &[Write], e: &ShardError) -> OrmError {
    let object = |i: usize| writes.get(i).map_or_else(String::new, |w| w.obj.to_string());
    match e {
        ShardError::Db { error, .. } if error.maybe_applied() => {
            crate::probe!("orm: commit write outcome unknown (maybe applied)");
            OrmError::Unknown(e.to_string())
        }
        ShardError::Db { error: DbError::Fenced { op_index, .. }, .. } => {
            crate::probe!("orm: commit refused by a newer owner's fence");
            OrmError::OwnershipLost(object(*op_index))
        }
        ShardError::Db { error: DbError::VersionMismatch { .. } | DbError::NotFound { .. }, .. }
        | ShardError::Spread { .. }
        | ShardError::Frozen { .. } => OrmError::Conflict(e.to_string()),
        _ => OrmError::Unavailable { object: object(0), why: e.to_string() },
    }
}
