//! Group commit: one-instance commits that arrive while a write to the same instance is in
//! flight wait, and go together as one `transact` when it returns.
//!
//! Inputs: [`GroupCommit::submit`] calls (a commit's users and operations); the instances'
//! answers. Per instance there is a queue and up to the instance's
//! [`Db::write_concurrency`](crate::env::Db::write_concurrency) flusher tasks (at most
//! [`GROUP_COMMIT_FLUSHERS_MAX`]; spawned by submits that find fewer; tasks, so that a
//! cancelled committer cannot strand the queue). A flusher takes the longest prefix of the
//! queue that fits one `transact`
//! ([`GROUP_COMMIT_OPS_MAX`] operations and shard guards together), sends it, and answers each
//! commit with its own slice of the results — until the queue is empty. Several flushers keep
//! a server-class instance (MariaDB, many connections) busy; on SQLite (one writer) the
//! batches simply queue at the file.
//!
//! A batch is all-or-nothing at the instance, but commits are independent, so one commit's
//! definite refusal (a version or fence check of *its* operation) must not fail the others:
//! the refused commit gets its error, and the rest of the batch is sent again without it (a
//! definite refusal applied nothing). An uncertain failure (`maybe_applied`) or a failure of
//! reaching the instance goes to every commit of the batch: each may or may not have applied,
//! together. Bounded: the queue of an instance holds at most [`GROUP_COMMIT_QUEUE_MAX`]
//! commits; a commit beyond that is refused at once (`Frozen`-like back-pressure, retryable).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use futures::channel::oneshot;
use futures::FutureExt;

use crate::env::{lock, DbError, WriteOp, WriteResult, WRITE_CONCURRENCY_DEFAULT};
use crate::shard::{ShardError, ShardRouter};

/// Most operations plus shard guards in one batched `transact` (the port allows 64; the rest
/// is room for the router's table registrations).
pub const GROUP_COMMIT_OPS_MAX: usize = 56;
/// Most batches in flight to one instance at once, whatever its
/// [`Db::write_concurrency`](crate::env::Db::write_concurrency) says.
pub const GROUP_COMMIT_FLUSHERS_MAX: usize = 32;
/// Most commits waiting for one instance.
pub const GROUP_COMMIT_QUEUE_MAX: usize = 1024;

type Reply = oneshot::Sender<Result<Vec<WriteResult>, ShardError>>;

struct Entry {
    users: Vec<String>,
    ops: Vec<WriteOp>,
    reply: Reply,
}

struct Queue {
    waiting: VecDeque<Entry>,
    /// Flusher tasks running.
    flushers: usize,
    /// Most flusher tasks for this instance (its write concurrency, capped).
    flushers_max: usize,
}

/// The group-commit queues of one object store.
pub(super) struct GroupCommit {
    router: ShardRouter,
    spawn: Arc<dyn crate::env::Spawn>,
    queues: Mutex<BTreeMap<String, Queue>>,
}

impl GroupCommit {
    pub(super) fn new(router: ShardRouter, spawn: Arc<dyn crate::env::Spawn>) -> Arc<GroupCommit> {
        Arc::new(GroupCommit { router, spawn, queues: Mutex::default() })
    }

    /// Commits `ops` (keys in the shards of `users`, all on `instance`) with whatever else is
    /// waiting for `instance`.
    pub(super) async fn submit(
        self: &Arc<Self>,
        instance: &str,
        users: Vec<String>,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<WriteResult>, ShardError> {
        let (reply, answer) = oneshot::channel();
        let start_flusher = {
            let mut queues = lock(&self.queues);
            let q = queues.entry(instance.to_string()).or_insert_with(|| self.queue_for(instance));
            if q.waiting.len() >= GROUP_COMMIT_QUEUE_MAX {
                return Err(ShardError::Db { instance: instance.to_string(), error: DbError::Unavailable });
            }
            q.waiting.push_back(Entry { users, ops, reply });
            let start = q.flushers < q.flushers_max;
            q.flushers += usize::from(start);
            start
        };
        if start_flusher {
            let weak = Arc::downgrade(self);
            let name = instance.to_string();
            drop(self.spawn.spawn("orm-group-commit", flush(weak, name).boxed()));
        }
        answer.await.unwrap_or(Err(ShardError::Db {
            instance: instance.to_string(),
            error: DbError::ConnectionLoss { maybe_applied: true },
        }))
    }

    /// A new queue for `instance`, with as many flushers as the instance takes writes at once.
    fn queue_for(&self, instance: &str) -> Queue {
        let writers =
            self.router.instance(instance).map_or(WRITE_CONCURRENCY_DEFAULT, |db| db.write_concurrency());
        Queue {
            waiting: VecDeque::new(),
            flushers: 0,
            flushers_max: writers.clamp(1, GROUP_COMMIT_FLUSHERS_MAX),
        }
    }

    /// The next batch of `instance`'s queue; `None` (and one flusher fewer) if empty.
    fn take(&self, instance: &str) -> Option<Vec<Entry>> {
        let mut queues = lock(&self.queues);
        let q = queues.get_mut(instance)?;
        if q.waiting.is_empty() {
            debug_assert!(q.flushers > 0, "only a running flusher takes");
            q.flushers -= 1;
            return None;
        }
        let mut batch = Vec::new();
        let (mut ops, mut users) = (0, BTreeSet::new());
        while let Some(e) = q.waiting.front() {
            let more_users: BTreeSet<&String> = e.users.iter().filter(|u| !users.contains(*u)).collect();
            let cost = e.ops.len() + more_users.len();
            if !batch.is_empty() && ops + users.len() + cost > GROUP_COMMIT_OPS_MAX {
                break;
            }
            let e = q.waiting.pop_front().expect("front exists");
            ops += e.ops.len();
            users.extend(e.users.iter().cloned());
            batch.push(e);
        }
        Some(batch)
    }

    /// Puts `entries` back at the head of the queue (in order).
    fn requeue(&self, instance: &str, entries: Vec<Entry>) {
        let mut queues = lock(&self.queues);
        let q = queues.entry(instance.to_string()).or_insert_with(|| self.queue_for(instance));
        for e in entries.into_iter().rev() {
            q.waiting.push_front(e);
        }
    }
}

/// The flusher of one instance: batches until the queue is empty.
async fn flush(weak: Weak<GroupCommit>, instance: String) {
    loop {
        let Some(gc) = weak.upgrade() else { return };
        let Some(mut batch) = gc.take(&instance) else { return };
        let users: BTreeSet<&str> = batch.iter().flat_map(|e| e.users.iter().map(String::as_str)).collect();
        let users: Vec<&str> = users.into_iter().collect();
        let ops: Vec<WriteOp> = batch.iter().flat_map(|e| e.ops.iter().cloned()).collect();
        let result = gc.router.transact_users(&users, ops).await;
        match result {
            Ok(mut results) => {
                for e in batch {
                    let rest = results.split_off(e.ops.len());
                    let _ = e.reply.send(Ok(std::mem::replace(&mut results, rest)));
                }
            }
            Err(ShardError::Db { instance: name, error })
                if batch.len() > 1 && definite_op(&error).is_some() =>
            {
                // One commit's own check failed: answer it, send the others again.
                let op_index = definite_op(&error).expect("checked");
                let mut start = 0;
                let culprit = batch
                    .iter()
                    .position(|e| {
                        let hit = op_index < start + e.ops.len();
                        start += e.ops.len();
                        hit
                    })
                    .unwrap_or(0);
                let offset: usize = batch[..culprit].iter().map(|e| e.ops.len()).sum();
                let e = batch.remove(culprit);
                let _ = e.reply.send(Err(ShardError::Db { instance: name, error: shift(error, offset) }));
                gc.requeue(&instance, batch);
            }
            Err(e) => {
                for entry in batch {
                    let _ = entry.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The operation a definite, per-operation refusal names.
fn definite_op(e: &DbError) -> Option<usize> {
    match e {
        DbError::VersionMismatch { op_index, .. }
        | DbError::Fenced { op_index, .. }
        | DbError::NotFound { op_index }
        | DbError::UniqueViolation { op_index, .. } => Some(*op_index),
        _ => None,
    }
}

/// `e` with its operation index made relative to a commit whose ops start at `offset`.
fn shift(e: DbError, offset: usize) -> DbError {
    match e {
        DbError::VersionMismatch { op_index, actual } => {
            DbError::VersionMismatch { op_index: op_index - offset, actual }
        }
        DbError::Fenced { op_index, row_fence } => DbError::Fenced { op_index: op_index - offset, row_fence },
        DbError::NotFound { op_index } => DbError::NotFound { op_index: op_index - offset },
        DbError::UniqueViolation { op_index, index } => {
            DbError::UniqueViolation { op_index: op_index - offset, index }
        }
        other => other,
    }
}
