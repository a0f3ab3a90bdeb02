//! Deferred command packs (seed 002): the client plays ahead and sends *packs* of commands;
//! the server checks a pack's format, stores it durably in the user's shard and acknowledges
//! it at once; workers execute each user's packs later, strictly in pack order, one at a time,
//! exactly once. A pack built on a state older than the user's last failed pack is skipped,
//! and a client sending one is told to reload. Real-time commands (a real-money purchase)
//! bypass the queue. A profile read answers "retry after" while the user's queue is not empty.
//!
//! ```
//! # use engine::commands::{Command, CommandSet};
//! # use engine::orm::Model;
//! # use serde::{Deserialize, Serialize};
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Farm { user: String, gold: i64 }
//! impl Model for Farm {
//!     const MODEL: &'static str = "farm";
//!     fn key(&self) -> String { self.user.clone() }
//! }
//!
//! #[derive(Deserialize)]
//! struct Earn { amount: i64 }
//! impl Command<Farm> for Earn {
//!     const NAME: &'static str = "earn";
//!     fn validate(&self) -> Result<(), String> {
//!         if (1..=50).contains(&self.amount) { Ok(()) } else { Err("amount is 1 to 50".into()) }
//!     }
//!     fn apply(&self, farm: &mut Farm) -> Result<(), String> {
//!         farm.gold += self.amount;
//!         Ok(())
//!     }
//! }
//!
//! let set = CommandSet::new(|user| Farm { user: user.into(), gold: 100 }).queued::<Earn>();
//! assert_eq!(set.names(), ["earn"]);
//! ```
//!
//! # Where things are
//!
//! A user's *queue record* ([`QueueRecord`], model `cmd_queue`) and *state* (the game's model
//! `S`) are object-store objects keyed by the user, in the user's shard, so they live on one
//! SQL instance and have one owner server at a time ([`crate::orm`]). Every operation holds
//! both in one transaction; the packs themselves, their outcomes, the pending index and the
//! real-time results are plain rows written in the same commit (`stored.rs`).
//!
//! # Guarantees, and why they hold
//!
//! - **An ack is a promise.** [`Commands::submit`] returns `Stored` only after the commit that
//!   wrote the pack row and counted it in the queue record returned. Any failure before that
//!   returns an error (the client resends; a resend of a stored pack is acknowledged again by
//!   its id, without storing it twice: ids run 1, 2, 3, ... per user, so `pack_id <=
//!   last_pack` *is* a resend).
//! - **In order, one at a time, exactly once.** Only the owner of the user's objects executes
//!   the user's packs: a worker takes the record and the state in one transaction, applies the
//!   waiting packs `done + 1, done + 2, ...` in order (at most [`PACKS_PER_TURN_MAX`], each on
//!   the state the previous one left, each under the stale rule as the previous ones left the
//!   record), and commits the new state, the record's `done + k` and each pack row's outcome
//!   in **one** fenced `transact`. A crashed worker committed all of it or none; a paused or
//!   partitioned old owner's commit is refused at the database by the fence. The record's
//!   `done` only ever moves past the packs whose outcomes that same commit writes, from the
//!   version the worker read, so packs execute in id order, each once. On one server, the
//!   [`scheduler`] gives a user to one worker at a time; across servers, the object store's
//!   single owner does. The pack contents come from an in-memory cache of the packs this
//!   server stored (`cache.rs`; a stored pack never changes), else from one scan of the rows.
//! - **No head-of-line blocking.** A worker executes at most [`PACKS_PER_TURN_MAX`] packs of a
//!   user per turn, then the user goes to the back of the round-robin; a bounded pool
//!   ([`CommandsConfig::workers`]) serves all users of the server.
//! - **Stale packs skip, without clocks.** The record's `epoch` counts state changes; every
//!   state handed out carries it; a pack names its `basis`. A failed pack sets `error_epoch`
//!   to the new epoch; a pack with `basis < error_epoch` is skipped (recorded as skipped, never
//!   applied) and refused at submit with `Reload`. The seed's scheme compares wall-clock
//!   timestamps instead: under clock skew between servers it skips good packs or applies
//!   stale ones (the test `wall_clock_staleness_breaks_under_skew` shows both).
//! - **Real-time commands** ([`Commands::realtime`]) are applied at once on the current state
//!   in their own transaction, acknowledged after commit, with an idempotency row keyed by the
//!   client's id in the same commit: a retry gets the first result, never a second
//!   application. They order *before* every pack still waiting when they commit (the waiting
//!   packs then apply on top of them); they are no error, so they make no pack stale.
//! - **Profile reads** ([`Commands::read`]) answer the state only when no pack waits, checked
//!   in the same transaction that reads the state; otherwise [`StateRead::RetryAfter`] with an
//!   estimate from the user's queue length and the server's recent execution times.
//! - **Every queue drains.** A queue's owner schedules it whenever it touches it; each server
//!   also sweeps the pending index ([`CommandsConfig::sweep_period`]) and adopts queues whose
//!   owner record is gone (their server crashed), so a user who never comes back is drained.
//!
//! # Planted bugs ([`CommandsBugs`]), each caught by the `deferred_commands` scenario
//! - `ack_before_store`: a pack is acknowledged when accepted, and stored afterwards;
//! - `parallel_user`: two workers may take one user, and a worker reads the user's state in
//!   one transaction and writes the result in another (no "traffic light");
//! - `applied_outside_txn`: the new state and the pack's outcome commit first, the record's
//!   `done` in a second transaction: a crash between the two applies the pack twice;
//! - `no_stale_skip`: packs built on a state older than the last error are applied.
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | this text, [`Commands`], [`CommandsConfig`], [`CommandsBugs`], [`CommandsError`], [`CommandsObserver`] |
//! | `registry.rs` | [`Command`], [`CommandSet`] |
//! | `pack.rs` | [`Pack`], its format checks and limits |
//! | `queue.rs` | [`QueueRecord`]: the per-user state machine (submit, execute, epochs) |
//! | `scheduler.rs` | which user a free worker takes |
//! | `cache.rs` | the packs stored here and not yet executed, so workers need not read them back |
//! | `stored.rs` | the plain rows: packs and outcomes, the pending index, real-time results |
//! | `exec.rs` | submit, execute, read, real-time, the sweep |

mod cache;
mod exec;
mod pack;
mod queue;
mod registry;
pub mod scheduler;
mod stored;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use self::cache::{PACK_CACHE_BYTES_MAX, PACK_ROW_VERSION_STORED};
pub use self::exec::PACKS_PER_TURN_MAX;
pub use self::pack::{Pack, PackError, PACK_BYTES_MAX, PACK_COMMANDS_MAX};
pub use self::queue::{Outcome, QueueRecord, SubmitDecision, QUEUE_MODEL, QUEUE_PACKS_MAX};
pub use self::registry::{Command, CommandSet};
pub use self::stored::{
    pack_suffix, realtime_suffix, Executed, PackRow, RealtimeRow, PACK_PREFIX, PACK_TABLE, PENDING_SUFFIX,
    PENDING_TABLE, REALTIME_ID_BYTES_MAX, REALTIME_PREFIX, REALTIME_TABLE,
};
use crate::env::{lock, Env, TaskHandle};
use crate::orm::{Model, Orm, OrmError};

/// The `tracing` target of command queues.
pub const LOG_TARGET: &str = "engine::commands";
/// Bounds of a `RetryAfter` answer.
pub const RETRY_AFTER_MIN: Duration = Duration::from_millis(50);
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(10);
/// Execution time assumed per pack before any was measured.
const PACK_TIME_INITIAL: Duration = Duration::from_millis(20);

/// Settings of a server's command queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandsConfig {
    /// Workers executing packs on this server (users at once). Default 8.
    pub workers: usize,
    /// How often the server sweeps the pending index for queues nobody executes (their owner
    /// crashed). Default 2 s.
    pub sweep_period: Duration,
    pub bugs: CommandsBugs,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig { workers: 8, sweep_period: Duration::from_secs(2), bugs: CommandsBugs::default() }
    }
}

/// Planted bugs (see the module docs); all off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommandsBugs {
    pub ack_before_store: bool,
    pub parallel_user: bool,
    pub applied_outside_txn: bool,
    pub no_stale_skip: bool,
}

/// Why a command-queue call failed. Nothing was stored or applied, except where said.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandsError {
    /// The pack is malformed; it was not stored. Fix the client.
    #[error("malformed pack: {0}")]
    Malformed(#[from] PackError),
    /// A real-time command or its id is malformed, or the user id is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The pack id is not the next one: send `expected` first.
    #[error("pack id out of order: expected {expected}")]
    Gap { expected: u64 },
    /// The pack names a state epoch the server never issued (it is at `epoch`).
    #[error("pack basis is ahead of the state (at epoch {epoch})")]
    FutureBasis { epoch: u64 },
    /// The user's queue is full; retry after `retry_after`.
    #[error("queue full ({waiting} packs wait); retry after {retry_after:?}")]
    Full { waiting: u64, retry_after: Duration },
    /// A real-time command id was used before for a different command.
    #[error("real-time id {0} was used for another command")]
    IdReused(String),
    /// The object store could not do it (retry if [`OrmError::is_retryable`]; on
    /// [`OrmError::Unknown`] the operation happened wholly or not at all: resend it, it is
    /// idempotent).
    #[error(transparent)]
    Orm(#[from] OrmError),
    /// A stored row could not be read back (a bug or a damaged database).
    #[error("stored row unreadable: {0}")]
    Corrupt(String),
    #[error("command queues stopped")]
    Stopped,
}

/// What [`Commands::submit`] did with a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Stored durably: it will be executed (or skipped by the rule), exactly once.
    Stored,
    /// A resend of a stored pack: acknowledged again, stored once.
    Resent,
    /// Built on a state older than the last error: not stored; reload the state (at `epoch`).
    Reload { epoch: u64 },
}

/// What [`Commands::read`] answers.
#[derive(Debug, Clone, PartialEq)]
pub enum StateRead<S> {
    /// No pack waits: the state, the epoch it is at, and the next pack id to send.
    State { state: S, epoch: u64, next_pack: u64 },
    /// Packs wait: ask again after this long.
    RetryAfter { after: Duration, waiting: u64 },
}

/// What [`Commands::realtime`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeDone<S> {
    /// `Ok(epoch after it)`, or `Err(why)` if the command was refused logically (the state
    /// did not change).
    pub result: Result<u64, String>,
    /// The state after it.
    pub state: S,
    /// True if this id had been applied before: `result` is the first application's.
    pub duplicate: bool,
}

/// Told about each pack execution on this server. The `deferred_commands` scenario checks
/// that one user's executions never overlap on a server.
pub trait CommandsObserver: Send + Sync {
    /// A worker starts executing `user`'s pack `pack_id` (it holds the user's objects). A turn
    /// that executes several packs in one transaction reports the first at its start and
    /// each further one, in order, right before its `executed` at the turn's end.
    fn executing(&self, user: &str, pack_id: u64);
    /// That execution ended: `Some((outcome, epoch))` if its commit succeeded.
    fn executed(&self, user: &str, pack_id: u64, committed: Option<(Outcome, u64)>);
}

/// The command queues of one server for one game's command set. Cheap to clone.
pub struct Commands<S: Model + Clone> {
    inner: Arc<Inner<S>>,
}

impl<S: Model + Clone> Clone for Commands<S> {
    fn clone(&self) -> Self {
        Commands { inner: self.inner.clone() }
    }
}

impl<S: Model + Clone> std::fmt::Debug for Commands<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").field("set", &self.inner.set).finish_non_exhaustive()
    }
}

pub(crate) struct Inner<S: Model + Clone> {
    env: Env,
    orm: Orm,
    set: CommandSet<S>,
    cfg: CommandsConfig,
    observer: Option<Arc<dyn CommandsObserver>>,
    sched: Mutex<scheduler::Scheduler>,
    /// Packs stored here and not yet executed (so workers need not read them back).
    packs: Mutex<cache::PackCache>,
    /// Workers running now.
    busy: Mutex<usize>,
    /// Most workers allowed now ([`Commands::set_workers`]; starts at `cfg.workers`).
    workers: std::sync::atomic::AtomicUsize,
    /// Failed turns in a row per user (for the retry pacing).
    failures: Mutex<BTreeMap<String, u32>>,
    /// Recent pack execution time, microseconds (exponentially weighted, 1/8 per sample).
    pack_time_us: AtomicU64,
    tasks: Mutex<Vec<TaskHandle>>,
    stopped: AtomicBool,
}

impl<S: Model + Clone> Commands<S> {
    /// Starts the command queues of this server on its object store: the worker pool (idle
    /// until packs arrive) and the sweep. `S` must be keyed by the user id and live in the
    /// user's shard (the default [`Model::shard_user`]).
    pub fn start(
        env: Env,
        orm: Orm,
        set: CommandSet<S>,
        cfg: CommandsConfig,
        observer: Option<Arc<dyn CommandsObserver>>,
    ) -> Result<Commands<S>, CommandsError> {
        if S::shard_user("probe") != "probe" {
            return Err(CommandsError::InvalidArgument(format!(
                "model {} must live in its key's shard (keyed by the user id)",
                S::MODEL
            )));
        }
        if cfg.workers == 0 {
            return Err(CommandsError::InvalidArgument("workers must be at least 1".into()));
        }
        let workers = cfg.workers;
        let inner = Arc::new(Inner {
            sched: Mutex::new(scheduler::Scheduler::new(cfg.bugs.parallel_user)),
            packs: Mutex::default(),
            env,
            orm,
            set,
            cfg,
            observer,
            busy: Mutex::new(0),
            workers: std::sync::atomic::AtomicUsize::new(workers),
            failures: Mutex::default(),
            pack_time_us: AtomicU64::new(PACK_TIME_INITIAL.as_micros() as u64),
            tasks: Mutex::default(),
            stopped: AtomicBool::new(false),
        });
        let sweep = inner.env.spawn.spawn("cmd-sweep", Box::pin(exec::sweep_loop(Arc::downgrade(&inner))));
        lock(&inner.tasks).push(sweep);
        Ok(Commands { inner })
    }

    /// Checks a pack's format against the command set ([`Pack::parse`]).
    pub fn parse(&self, body: &Value) -> Result<Pack, PackError> {
        Pack::parse(body, &self.inner.set)
    }

    /// Stores `pack` for `user` and returns once it is durable (`Stored`), or recognises a
    /// resend, or refuses a stale pack (`Reload`).
    pub async fn submit(&self, user: &str, pack: Pack) -> Result<Submitted, CommandsError> {
        self.inner.submit(user, pack).await
    }

    /// The user's state, if no pack waits (else when to ask again).
    pub async fn read(&self, user: &str) -> Result<StateRead<S>, CommandsError> {
        self.inner.read(user).await
    }

    /// Applies the real-time command `command` (a registered real-time command) with the
    /// client's idempotency id `id` at once; returns after it is durable.
    pub async fn realtime(
        &self,
        user: &str,
        id: &str,
        command: &Value,
    ) -> Result<RealtimeDone<S>, CommandsError> {
        self.inner.realtime(user, id, command).await
    }

    /// Makes sure `user`'s waiting packs (if any) get executed here (e.g. at login).
    pub fn schedule(&self, user: &str) {
        self.inner.schedule(user);
    }

    /// Resizes the worker pool: `0` pauses execution (packs are still accepted, stored and
    /// acknowledged while their queues have room; they run when workers are back), e.g. for
    /// maintenance. Turns in flight finish.
    pub fn set_workers(&self, workers: usize) {
        self.inner.workers.store(workers, Ordering::SeqCst);
        self.inner.pump();
    }

    /// Users waiting for a worker and users being executed on this server now.
    pub fn load(&self) -> (usize, usize) {
        let s = lock(&self.inner.sched);
        (s.ready_len(), s.running_len())
    }

    /// Stops the sweep and refuses new calls; turns in flight finish.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
    }
}

impl<S: Model + Clone> Inner<S> {
    fn check_running(&self) -> Result<(), CommandsError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(CommandsError::Stopped);
        }
        Ok(())
    }

    /// How long a client should wait before reading again, with `waiting` packs queued for it:
    /// its packs at the recent execution time, slowed by the users ahead of it per worker.
    fn retry_after(&self, waiting: u64) -> Duration {
        let per_pack = Duration::from_micros(self.pack_time_us.load(Ordering::Relaxed));
        let ahead = lock(&self.sched).ready_len() as u32 / self.workers.load(Ordering::Relaxed).max(1) as u32;
        per_pack
            .saturating_mul((waiting as u32).saturating_mul(1 + ahead))
            .clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
    }

    /// Folds one execution time into the estimate.
    fn record_pack_time(&self, took: Duration) {
        let sample = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.pack_time_us.load(Ordering::Relaxed);
        self.pack_time_us.store(old - old / 8 + sample / 8, Ordering::Relaxed);
    }
}
