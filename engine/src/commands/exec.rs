//! The operations on a user's queue (submit, execute a turn of packs, read, real-time) and the
//! worker pool and sweep that drive execution. Each operation is one object-store transaction
//! holding the user's queue record and state.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use serde_json::Value;
use tracing::{debug, warn};

use super::cache::PACK_ROW_VERSION_STORED;
use super::queue::{Outcome, QueueRecord, SubmitDecision};
use super::stored::{
    self, Executed, PackRow, RealtimeRow, PACK_TABLE, PENDING_SUFFIX, PENDING_TABLE, REALTIME_TABLE,
};
use super::{CommandsError, Inner, Pack, RealtimeDone, StateRead, Submitted, LOG_TARGET};
use crate::env::{lock, Backoff, Expect, Row, WriteOp};
use crate::orm::{Model, ObjectRef, OrmError, Transaction, TXN_ROWS_MAX};
use crate::shard::key::validate_user;
use crate::shard::ShardId;

/// Pacing of a user's turns after failed ones (SQL or coordination trouble, lost ownership).
const TURN_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// After this many failed turns in a row a server stops retrying a user; the sweep adopts the
/// queue again if nobody owns it.
const TURN_FAILURES_MAX: u32 = 12;
/// Most pending rows one sweep pass reads per shard page.
const SWEEP_PAGE: usize = 128;
/// Most packs of one user a worker executes in one turn (one transaction): a transaction's
/// plain-row budget less the pending row. The user then goes to the back of the round-robin.
pub const PACKS_PER_TURN_MAX: usize = TXN_ROWS_MAX - 1;

/// How a worker's turn on a user ended.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// `packs` packs executed; `more`: packs still wait.
    Executed { packs: usize, more: bool },
    /// Nothing waits.
    Idle,
    /// Another server owns the user's queue: it executes it.
    Elsewhere,
}

impl<S: Model + Clone> Inner<S> {
    fn refs(user: &str) -> [ObjectRef; 2] {
        [ObjectRef::of::<QueueRecord>(user), ObjectRef::of::<S>(user)]
    }

    /// Begins a transaction holding `user`'s queue record and state.
    async fn hold(&self, user: &str) -> Result<Transaction<'_>, CommandsError> {
        self.check_running()?;
        validate_user(user).map_err(CommandsError::InvalidArgument)?;
        let mut tx = self.orm.begin();
        tx.lock(&Self::refs(user)).await?;
        Ok(tx)
    }

    fn key(&self, user: &str, suffix: &str) -> String {
        self.orm.router().user_key(user, suffix)
    }

    fn record(tx: &Transaction<'_>, user: &str) -> Result<QueueRecord, CommandsError> {
        Ok(tx.get::<QueueRecord>(user)?.unwrap_or_else(|| QueueRecord::new(user)))
    }

    fn state(&self, tx: &Transaction<'_>, user: &str) -> Result<S, CommandsError> {
        Ok(tx.get::<S>(user)?.unwrap_or_else(|| self.set.initial(user)))
    }

    pub(super) async fn submit(self: &Arc<Self>, user: &str, pack: Pack) -> Result<Submitted, CommandsError> {
        let mut tx = self.hold(user).await?;
        let mut q = Self::record(&tx, user)?;
        let was_waiting = q.waiting();
        match q.on_submit(pack.pack_id, pack.basis, true) {
            SubmitDecision::Store => {}
            SubmitDecision::Resend => {
                crate::probe!("commands: resent pack acknowledged again, not stored twice");
                drop(tx);
                if was_waiting > 0 {
                    self.schedule(user);
                }
                return Ok(Submitted::Resent);
            }
            SubmitDecision::Reload { epoch } => {
                crate::probe!("commands: pack on a state older than the last failure refused (sc_reload)");
                return Ok(Submitted::Reload { epoch });
            }
            SubmitDecision::Gap { expected } => return Err(CommandsError::Gap { expected }),
            SubmitDecision::FutureBasis { epoch } => return Err(CommandsError::FutureBasis { epoch }),
            SubmitDecision::Full { waiting } => {
                drop(tx);
                self.schedule(user);
                return Err(CommandsError::Full { waiting, retry_after: self.retry_after(waiting) });
            }
        }
        if self.cfg.bugs.ack_before_store {
            // The bug: acknowledge now, store in the background (a failure loses the pack).
            drop(tx);
            let (me, user) = (self.clone(), user.to_string());
            let store = async move {
                if let Ok(mut tx) = me.hold(&user).await {
                    if let Ok(mut q) = Self::record(&tx, &user) {
                        if q.on_submit(pack.pack_id, pack.basis, true) == SubmitDecision::Store {
                            if let Ok((row, bytes)) = me.stage_store(&mut tx, &user, &q, &pack) {
                                if tx.commit().await.is_ok() {
                                    lock(&me.packs).stored(&user, row, bytes);
                                    me.schedule(&user);
                                }
                            }
                        }
                    }
                }
            };
            drop(self.env.spawn.spawn("cmd-store", store.boxed()));
            return Ok(Submitted::Stored);
        }
        let (row, bytes) = self.stage_store(&mut tx, user, &q, &pack)?;
        tx.commit().await?;
        lock(&self.packs).stored(user, row, bytes);
        self.schedule(user);
        Ok(Submitted::Stored)
    }

    /// Stages a pack's storage in `tx`: the record `q` (already counting it), the pack row,
    /// and the pending row if the queue was empty. Returns the row and its encoded size.
    fn stage_store(
        &self,
        tx: &mut Transaction<'_>,
        user: &str,
        q: &QueueRecord,
        pack: &Pack,
    ) -> Result<(PackRow, usize), CommandsError> {
        tx.put(q)?;
        let row = PackRow {
            pack_id: pack.pack_id,
            basis: pack.basis,
            commands: pack.commands.clone(),
            executed: None,
        };
        let key = self.key(user, &stored::pack_suffix(pack.pack_id));
        let value = stored::encode(&row);
        let bytes = value.len();
        tx.write_row(user, WriteOp::put(&stored::table(PACK_TABLE), key, value, Expect::Absent, 0))?;
        if q.waiting() == 1 {
            let key = self.key(user, PENDING_SUFFIX);
            tx.write_row(
                user,
                WriteOp::put(
                    &stored::table(PENDING_TABLE),
                    key,
                    Bytes::from_static(b"{}"),
                    Expect::Absent,
                    0,
                ),
            )?;
        }
        Ok((row, bytes))
    }

    pub(super) async fn read(self: &Arc<Self>, user: &str) -> Result<StateRead<S>, CommandsError> {
        let tx = self.hold(user).await?;
        let q = Self::record(&tx, user)?;
        if q.waiting() > 0 {
            drop(tx);
            self.schedule(user);
            crate::probe!("commands: state read answered retry-after");
            return Ok(StateRead::RetryAfter { after: self.retry_after(q.waiting()), waiting: q.waiting() });
        }
        let state = self.state(&tx, user)?;
        // A read-only commit: checks this server still owned both when it answered.
        tx.commit().await?;
        Ok(StateRead::State { state, epoch: q.epoch, next_pack: q.last_pack + 1 })
    }

    pub(super) async fn realtime(
        self: &Arc<Self>,
        user: &str,
        id: &str,
        command: &Value,
    ) -> Result<RealtimeDone<S>, CommandsError> {
        stored::validate_realtime_id(id).map_err(CommandsError::InvalidArgument)?;
        self.set.check(command, true).map_err(CommandsError::InvalidArgument)?;
        let mut tx = self.hold(user).await?;
        let mut q = Self::record(&tx, user)?;
        let state = self.state(&tx, user)?;
        let key = self.key(user, &stored::realtime_suffix(id));
        let table = stored::table(REALTIME_TABLE);
        if let Some(row) = tx.read_row(user, &table, &key).await? {
            let done: RealtimeRow = stored::decode(&row.value).map_err(CommandsError::Corrupt)?;
            if &done.command != command {
                return Err(CommandsError::IdReused(id.to_string()));
            }
            tx.commit().await?;
            if q.waiting() > 0 {
                self.schedule(user);
            }
            return Ok(RealtimeDone { result: done.result, state, duplicate: true });
        }
        let (result, after) = match self.set.apply_all(std::slice::from_ref(command), &state) {
            Ok(next) => {
                let epoch = q.on_realtime();
                tx.put(&q)?;
                tx.put(&next)?;
                (Ok(epoch), next)
            }
            Err((_, why)) => (Err(why), state),
        };
        let row = RealtimeRow { command: command.clone(), result: result.clone() };
        tx.write_row(user, WriteOp::put(&table, key, stored::encode(&row), Expect::Absent, 0))?;
        tx.commit().await?;
        if q.waiting() > 0 {
            // This server now owns the user's queue: its packs run here, not only at the
            // next sweep.
            self.schedule(user);
        }
        Ok(RealtimeDone { result, state: after, duplicate: false })
    }

    /// Executes `user`'s next waiting packs (at most [`PACKS_PER_TURN_MAX`], in pack order) in
    /// one fenced transaction, if this server may.
    async fn execute_turn(&self, user: &str) -> Result<Turn, CommandsError> {
        let [qref, _] = Self::refs(user);
        if self.orm.owner_of(&qref).await?.is_some_and(|o| o != self.orm.id()) {
            crate::probe!("commands: turn left to the user's owner elsewhere");
            return Ok(Turn::Elsewhere);
        }
        let mut tx = self.hold(user).await?;
        let mut q = Self::record(&tx, user)?;
        let Some(first) = q.next_pack() else { return Ok(Turn::Idle) };
        if self.cfg.bugs.applied_outside_txn {
            return self.execute_outside_txn(tx, user, q, first).await;
        }
        let want = usize::try_from(q.waiting()).unwrap_or(usize::MAX).min(PACKS_PER_TURN_MAX);
        let cached = lock(&self.packs).run(user, first, want);
        let packs = if cached.is_empty() {
            let after = self.key(user, &stored::pack_suffix(first - 1));
            let scan =
                tx.scan_rows(user, &stored::table(PACK_TABLE), stored::PACK_PREFIX, Some(&after), want);
            Self::waiting_packs(user, first, scan.await?)?
        } else {
            cached.into_iter().map(|p| (p, PACK_ROW_VERSION_STORED)).collect()
        };
        let pack_table = stored::table(PACK_TABLE);
        let mut state = self.state(&tx, user)?;
        let mut changed = false;
        let mut done = Vec::with_capacity(packs.len());
        self.executing(user, first);
        for (mut pack, version) in packs {
            let (outcome, next, error) = self.run_pack(&q, &pack, &state);
            if let Some(next) = next {
                state = next;
                changed = true;
            }
            let epoch = q.on_executed(outcome);
            pack.executed = Some(Executed { outcome, epoch, error });
            let key = self.key(user, &stored::pack_suffix(pack.pack_id));
            tx.write_row(
                user,
                WriteOp::put(&pack_table, key, stored::encode(&pack), Expect::Version(version), 0),
            )?;
            done.push((pack.pack_id, outcome, epoch));
        }
        tx.put(&q)?;
        if changed {
            tx.put(&state)?;
        }
        if q.waiting() == 0 {
            let key = self.key(user, PENDING_SUFFIX);
            tx.write_row(user, WriteOp::delete(&stored::table(PENDING_TABLE), key, Expect::Present, 0))?;
        }
        let result = tx.commit().await.map_err(CommandsError::from);
        match &result {
            Ok(()) => lock(&self.packs).executed(user, q.done),
            Err(_) => {
                crate::probe!("commands: execution transaction failed, nothing applied");
                lock(&self.packs).forget(user)
            }
        }
        // One turn is one execution span: the first pack's covers the transaction, the others
        // are reported in order at its end.
        for (i, &(pack_id, outcome, epoch)) in done.iter().enumerate() {
            if i > 0 {
                self.executing(user, pack_id);
            }
            self.executed(user, pack_id, result.as_ref().ok().map(|()| (outcome, epoch)));
        }
        result?;
        Ok(Turn::Executed { packs: done.len(), more: q.waiting() > 0 })
    }

    /// The scanned rows of `user`'s packs `first`, `first + 1`, ... with their versions (at
    /// least one; the run stops at a gap). Each must be waiting.
    fn waiting_packs(user: &str, first: u64, rows: Vec<Row>) -> Result<Vec<(PackRow, u64)>, CommandsError> {
        let mut packs = Vec::with_capacity(rows.len());
        for (row, id) in rows.into_iter().zip(first..) {
            let pack: PackRow = stored::decode(&row.value).map_err(CommandsError::Corrupt)?;
            if pack.pack_id != id {
                break;
            }
            if pack.executed.is_some() {
                return Err(CommandsError::Corrupt(format!(
                    "{user}: pack {id} is waiting but has an outcome"
                )));
            }
            packs.push((pack, row.version));
        }
        if packs.is_empty() {
            return Err(CommandsError::Corrupt(format!("{user}: pack {first} is counted but has no row")));
        }
        Ok(packs)
    }

    /// The planted bug `applied_outside_txn`'s turn: one pack, its new state and outcome
    /// committed first, the record's `done` in a second transaction.
    async fn execute_outside_txn(
        &self,
        mut tx: Transaction<'_>,
        user: &str,
        mut q: QueueRecord,
        pack_id: u64,
    ) -> Result<Turn, CommandsError> {
        let pack_table = stored::table(PACK_TABLE);
        let pack_key = self.key(user, &stored::pack_suffix(pack_id));
        let row = tx.read_row(user, &pack_table, &pack_key).await?.ok_or_else(|| {
            CommandsError::Corrupt(format!("{user}: pack {pack_id} is counted but has no row"))
        })?;
        let mut pack: PackRow = stored::decode(&row.value).map_err(CommandsError::Corrupt)?;
        let state = self.state(&tx, user)?;
        self.executing(user, pack_id);
        let (outcome, next, error) = self.run_pack(&q, &pack, &state);
        let epoch = q.on_executed(outcome);
        pack.executed = Some(Executed { outcome, epoch, error });
        tx.write_row(
            user,
            WriteOp::put(&pack_table, pack_key, stored::encode(&pack), Expect::Version(row.version), 0),
        )?;
        if let Some(next) = &next {
            tx.put(next)?;
        }
        let result = match tx.commit().await {
            Ok(()) => self.mark_done(user, pack_id, outcome).await,
            Err(e) => Err(e.into()),
        };
        self.executed(user, pack_id, result.as_ref().ok().map(|()| (outcome, epoch)));
        result?;
        Ok(Turn::Executed { packs: 1, more: q.waiting() > 0 })
    }

    /// Runs a pack on `state` under the staleness rule: its outcome, the new state if it
    /// applied, and why it failed if it did.
    fn run_pack(&self, q: &QueueRecord, pack: &PackRow, state: &S) -> (Outcome, Option<S>, Option<String>) {
        if q.is_stale(pack.basis) && !self.cfg.bugs.no_stale_skip {
            crate::probe!("commands: stale pack skipped");
            return (Outcome::Skipped, None, None);
        }
        match self.set.apply_all(&pack.commands, state) {
            Ok(next) => (Outcome::Applied, Some(next), None),
            Err((i, why)) => {
                crate::probe!("commands: pack failed logically, error epoch advanced");
                (Outcome::Failed, None, Some(format!("command {i}: {why}")))
            }
        }
    }

    /// The planted bug `applied_outside_txn`'s second transaction: counts `pack_id` as done.
    async fn mark_done(&self, user: &str, pack_id: u64, outcome: Outcome) -> Result<(), CommandsError> {
        let mut tx = self.hold(user).await?;
        let mut q = Self::record(&tx, user)?;
        if q.next_pack() != Some(pack_id) {
            return Ok(());
        }
        q.on_executed(outcome);
        tx.put(&q)?;
        if q.waiting() == 0 {
            let key = self.key(user, PENDING_SUFFIX);
            tx.write_row(user, WriteOp::delete(&stored::table(PENDING_TABLE), key, Expect::Present, 0))?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The planted bug `parallel_user`'s execution: read in one transaction, write the result
    /// in another, with no hold on the user in between.
    async fn execute_unlocked(&self, user: &str) -> Result<Turn, CommandsError> {
        let (mut q, pack_id, row, state) = {
            let tx = self.hold(user).await?;
            let q = Self::record(&tx, user)?;
            let Some(pack_id) = q.next_pack() else { return Ok(Turn::Idle) };
            let key = self.key(user, &stored::pack_suffix(pack_id));
            let Some(row) = tx.read_row(user, &stored::table(PACK_TABLE), &key).await? else {
                return Err(CommandsError::Corrupt(format!("{user}: pack {pack_id} has no row")));
            };
            let state = self.state(&tx, user)?;
            (q, pack_id, row, state)
        };
        let mut pack: PackRow = stored::decode(&row.value).map_err(CommandsError::Corrupt)?;
        self.executing(user, pack_id);
        let (outcome, next, error) = self.run_pack(&q, &pack, &state);
        // Lets another worker in between the read and the write.
        self.env.clock.sleep(Duration::from_millis(1)).await;
        let epoch = q.on_executed(outcome);
        pack.executed = Some(Executed { outcome, epoch, error });
        let result: Result<(), CommandsError> = async {
            let mut tx = self.hold(user).await?;
            tx.put(&q)?;
            if let Some(next) = &next {
                tx.put(next)?;
            }
            let key = self.key(user, &stored::pack_suffix(pack_id));
            tx.write_row(
                user,
                WriteOp::put(&stored::table(PACK_TABLE), key, stored::encode(&pack), Expect::Any, 0),
            )?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.executed(user, pack_id, result.as_ref().ok().map(|()| (outcome, epoch)));
        result?;
        Ok(Turn::Executed { packs: 1, more: q.waiting() > 0 })
    }

    fn executing(&self, user: &str, pack_id: u64) {
        if let Some(o) = &self.observer {
            o.executing(user, pack_id);
        }
    }

    fn executed(&self, user: &str, pack_id: u64, committed: Option<(Outcome, u64)>) {
        if let Some(o) = &self.observer {
            o.executed(user, pack_id, committed);
        }
    }

    /// `user` may have waiting packs: queue it for a worker here.
    pub(super) fn schedule(self: &Arc<Self>, user: &str) {
        if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if !lock(&self.sched).schedule(user) {
            warn!(target: LOG_TARGET, node = %self.env.node, user, "ready queue full: left to the sweep");
        }
        self.pump();
    }

    /// Starts workers while some are free and users wait.
    pub(super) fn pump(self: &Arc<Self>) {
        loop {
            let user = {
                let mut busy = lock(&self.busy);
                if *busy >= self.workers.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Some(user) = lock(&self.sched).take() else { return };
                *busy += 1;
                user
            };
            let me = self.clone();
            drop(self.env.spawn.spawn("cmd-worker", me.turn(user).boxed()));
        }
    }

    /// One worker turn on `user`: up to [`PACKS_PER_TURN_MAX`] packs, then back to the pool.
    async fn turn(self: Arc<Self>, user: String) {
        let started = self.env.clock.now();
        let result = if self.cfg.bugs.parallel_user {
            self.execute_unlocked(&user).await
        } else {
            self.execute_turn(&user).await
        };
        let mut retry = None;
        let more = match result {
            Ok(Turn::Executed { packs, more }) => {
                let took = self.env.clock.now().saturating_since(started);
                self.record_pack_time(took / u32::try_from(packs.max(1)).unwrap_or(u32::MAX));
                lock(&self.failures).remove(&user);
                more
            }
            Ok(Turn::Idle | Turn::Elsewhere) => {
                lock(&self.failures).remove(&user);
                false
            }
            Err(CommandsError::Stopped | CommandsError::Orm(OrmError::Stopped)) => false,
            Err(e) => {
                let attempt = {
                    let mut f = lock(&self.failures);
                    let n = f.entry(user.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                debug!(target: LOG_TARGET, node = %self.env.node, user, attempt, error = %e, "turn failed");
                if attempt <= TURN_FAILURES_MAX {
                    retry = Some(TURN_RETRY.delay(attempt - 1, &*self.env.rand));
                } else {
                    warn!(target: LOG_TARGET, node = %self.env.node, user, error = %e, "giving up on the queue here; the sweep adopts it if nobody owns it");
                    lock(&self.failures).remove(&user);
                }
                false
            }
        };
        lock(&self.sched).finish(&user, more);
        *lock(&self.busy) -= 1;
        self.pump();
        if let Some(delay) = retry {
            let me = self.clone();
            let again = async move {
                me.env.clock.sleep(delay).await;
                me.schedule(&user);
            };
            drop(self.env.spawn.spawn("cmd-retry", again.boxed()));
        }
    }

    /// One pass over every shard's pending index: adopts queues nobody here runs and nobody
    /// owns.
    async fn sweep(self: &Arc<Self>) {
        let table = stored::table(PENDING_TABLE);
        let shards = self.orm.router().config().logical_shards;
        for shard in 0..shards {
            let mut after: Option<String> = None;
            loop {
                let rows = match self
                    .orm
                    .router()
                    .scan_shard(ShardId(shard), &table, after.as_deref(), SWEEP_PAGE)
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        debug!(target: LOG_TARGET, node = %self.env.node, shard, error = %e, "sweep: shard unreadable");
                        break;
                    }
                };
                for row in &rows {
                    let Some(user) = pending_user(&row.key) else { continue };
                    let user = user.as_str();
                    if lock(&self.sched).knows(user) {
                        continue;
                    }
                    let [qref, _] = Self::refs(user);
                    match self.orm.owner_of(&qref).await {
                        Ok(None) => {
                            debug!(target: LOG_TARGET, node = %self.env.node, user, "sweep: adopting an unowned queue");
                            self.schedule(user);
                        }
                        Ok(Some(owner)) if owner == self.orm.id() => self.schedule(user),
                        Ok(Some(_)) | Err(_) => {}
                    }
                }
                if rows.len() < SWEEP_PAGE {
                    break;
                }
                after = rows.last().map(|r| r.key.clone());
            }
        }
    }
}

/// The user of a pending row key `s{shard}/{name}/q` (`name`: the user id encoded,
/// [`crate::keyname`]; it holds no `/`).
fn pending_user(key: &str) -> Option<String> {
    let name = key.split_once('/')?.1.strip_suffix(PENDING_SUFFIX)?.strip_suffix('/')?;
    crate::keyname::decode(name).ok().map(|user| user.into_owned())
}

pub(super) async fn sweep_loop<S: Model + Clone>(weak: Weak<Inner<S>>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let (clock, period) = (inner.env.clock.clone(), inner.cfg.sweep_period);
        inner.sweep().await;
        drop(inner);
        clock.sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pending_key_names_its_user() {
        assert_eq!(super::pending_user("s0007/alice/q").as_deref(), Some("alice"));
        assert_eq!(super::pending_user("s0007/q"), None);
    }

    #[test]
    fn a_pending_key_of_a_user_with_any_characters_names_that_user() {
        use crate::shard::{key::user_key, ShardId};
        for user in ["a/b", "a/q", "%", "😀", "."] {
            let key = user_key(ShardId(7), user, super::PENDING_SUFFIX);
            assert_eq!(super::pending_user(&key).as_deref(), Some(user), "{key}");
        }
    }
}
