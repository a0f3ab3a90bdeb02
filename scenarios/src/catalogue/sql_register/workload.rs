//! The clients of `sql_register`: tasks on the server nodes calling the SQL instances through
//! their `Env`'s `Db` directory, as owners (and deposed owners) of rows.
//!
//! A task holds, per row, the fence it owns the row with (if any) and the last version it saw,
//! and mostly visits rows it owns. A row it does not own it reads, or now and then takes over
//! with a fresh fence from [`Fences`] (a `RaiseFence`). A row it owns it reads, writes (`Put`
//! with `Expect::Version`, `Any` or `Absent`), deletes, writes together with its partner row
//! on the same instance (one `transact`), or writes under a `Guard` on the partner. Any other
//! task may take a row over at any time, so several owners of one row coexist; a deposed
//! owner learns of it only from a `Fenced` refusal, and even then keeps its old fence half of
//! the time (it keeps trying to write: the writes the instance must refuse).
//!
//! In a live run each server is a process of its own, so [`Fences`] draws its fences from the
//! run's true time instead of a counter shared in memory ([`Fences::across_processes`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::env::{lock, Db, DbError, Env, Expect, RandExt, TableName, WriteResult};

use super::history::{write_op, CallLog};
use super::{INSTANCES, ROWS};
use crate::checker::{DbCall, RowWrite};
use crate::history::{ProcessId, TimeSource};
use crate::scenario::{Phases, Topology};
use crate::workload::OpBudget;

/// The one table of the scenario.
pub const TABLE: &str = "registers";
/// Chance that a task visiting a row it does not own takes it over (else it reads it).
const TAKEOVER_PROBABILITY: f64 = 0.1;
/// Chance that a task takes over a row it already owns again (a new fence for the same task,
/// as after a restart of its owner role).
const RETAKE_PROBABILITY: f64 = 0.02;
/// Chance that a task owning rows visits one of them rather than any row.
const OWN_ROWS_PROBABILITY: f64 = 0.7;
/// Chance that a deposed owner believes a `Fenced` refusal and drops its fence.
const BELIEVE_FENCED_PROBABILITY: f64 = 0.5;
/// Pause between two calls of a task, in ms.
const THINK_MS: std::ops::Range<u64> = 10..90;

/// Key of row `k`.
pub fn row_key(k: usize) -> String {
    format!("row-{k}")
}

/// The instance row `k` lives on: rows `k` and `k + INSTANCES` share instance `k % INSTANCES`.
pub fn instance_of(k: usize) -> String {
    Topology::sql_name(k % INSTANCES)
}

/// The other row on row `k`'s instance.
fn partner(k: usize) -> usize {
    (k + INSTANCES) % ROWS
}

/// Hands out fences per row, in increasing order: every new owner of a row gets a fence
/// above every earlier owner's.
///
/// In the simulator every server runs in one process and shares one `Fences`: a per-row
/// counter, deterministic. In a live run each server process has its own, so a counter would
/// hand two processes' owners the same fences; there the fences come from the run's true
/// time ([`Fences::across_processes`]).
#[derive(Clone, Default)]
pub struct Fences {
    /// Per row, the last fence handed out here.
    last: Arc<Mutex<[u64; ROWS]>>,
    /// Set in a live run: fences from the run's true time.
    across: Option<Across>,
}

/// What a live server process draws its fences from: the run's true time and its own
/// incarnation's process id.
#[derive(Clone)]
struct Across {
    now: TimeSource,
    incarnation: ProcessId,
}

/// Fences drawn from true time are `t_ns * FENCE_TIME_SCALE + incarnation % FENCE_TIME_SCALE`:
/// room for 1024 server incarnations per run (a run has its servers plus one per kill) below
/// each nanosecond. `u64` holds such fences for 208 days of a run.
pub(super) const FENCE_TIME_SCALE: u64 = 1024;

impl Fences {
    /// The same per-row counters, drawing fences for server incarnation `incarnation` of a
    /// live run, where every server process has its own `Fences`: every draw is above every
    /// draw that returned before it started, in any process of the run, and two draws never
    /// give one fence.
    ///
    /// A draw reads the run's true time `t` (`now`, `CLOCK_MONOTONIC` since the run's epoch:
    /// one clock for every process of the machine, never going back), then waits until the
    /// clock reads more than `t` before it returns, and hands out
    /// `t * FENCE_TIME_SCALE + incarnation % FENCE_TIME_SCALE`, and never less than one above
    /// this process's last fence for the row. Why every new owner's fence is higher:
    /// - if draw A returned before draw B started (in any processes), B read its time after
    ///   A's clock read more than `t_A`, so `t_B > t_A`, and B's fence is at least
    ///   `(t_A + 1) * FENCE_TIME_SCALE`, above A's, whatever the low parts;
    /// - draws that overlap in time may read the same `t`; they are in different processes
    ///   (one process draws under its lock, one at a time), so their low parts, the
    ///   incarnations' process ids, differ (ids are unique in a run, and a run has fewer than
    ///   [`FENCE_TIME_SCALE`] incarnations): distinct fences, in either order, as two
    ///   concurrent takeovers may come in either order in the simulator too.
    ///
    /// The floor (one above the last fence for the row here) changes nothing while the clock
    /// behaves, since those fences grow by the first rule; it keeps one process's fences
    /// increasing even if it did not. The simulator never calls this: its fences, and so its
    /// traces, stay the counter's.
    pub fn across_processes(&self, now: TimeSource, incarnation: ProcessId) -> Fences {
        Fences { last: self.last.clone(), across: Some(Across { now, incarnation }) }
    }

    pub fn next(&self, k: usize) -> u64 {
        let mut g = lock(&self.last);
        g[k] = match &self.across {
            None => g[k] + 1,
            Some(a) => a.draw().max(g[k] + 1),
        };
        g[k]
    }
}

impl Across {
    /// See [`Fences::across_processes`].
    fn draw(&self) -> u64 {
        let t = (self.now)();
        // Until the clock has passed `t` (at most a clock read or two: it counts in ns), so
        // a draw that starts after this one returns reads a later time.
        while (self.now)() <= t {
            std::hint::spin_loop();
        }
        t.saturating_mul(FENCE_TIME_SCALE).saturating_add(self.incarnation % FENCE_TIME_SCALE)
    }
}

/// One client task.
pub(super) struct Task {
    env: Env,
    process: ProcessId,
    calls: CallLog,
    fences: Fences,
    table: TableName,
    dbs: Vec<Arc<dyn Db>>,
    /// Values written so far (each value is unique: `p{process}-{n}`).
    n: u64,
    /// The fence this task owns each row with, if it believes it owns it.
    fence: [Option<u64>; ROWS],
    /// The row's version as last seen (`None`: absent, or never seen).
    version: [Option<u64>; ROWS],
}

impl Task {
    /// Task `process`, recording its calls through `calls` (the log of `process`).
    pub(super) fn new(env: Env, process: ProcessId, calls: CallLog, fences: Fences) -> Task {
        let dbs = (0..INSTANCES)
            .map(|i| {
                let name = Topology::sql_name(i);
                env.db.instance(&name).unwrap_or_else(|| panic!("the runner gives every server {name}"))
            })
            .collect();
        Task {
            env,
            process,
            calls,
            fences,
            table: TableName::new(TABLE).expect("a valid table name"),
            dbs,
            n: 0,
            fence: [None; ROWS],
            version: [None; ROWS],
        }
    }

    /// Calls until the run ends or the server's budget (shared by its tasks) is spent. One
    /// operation: a loop round (a read, a takeover or one `transact`).
    pub(super) async fn run(mut self, phases: Phases, budget: OpBudget) {
        while !phases.finished() && budget.take() {
            let k = self.pick_row();
            let f = match self.fence[k] {
                None if !self.env.rand.gen_bool(TAKEOVER_PROBABILITY) => {
                    self.get(k).await;
                    self.think().await;
                    continue;
                }
                Some(f) if !self.env.rand.gen_bool(RETAKE_PROBABILITY) => f,
                _ => {
                    self.take_over(k).await;
                    self.think().await;
                    continue;
                }
            };
            let p = partner(k);
            let ops = match self.env.rand.gen_range(0..100) {
                0..30 => {
                    self.get(k).await;
                    self.think().await;
                    continue;
                }
                30..50 => {
                    let expect = self.version[k].map_or(Expect::Absent, Expect::Version);
                    vec![self.put(k, expect, f)]
                }
                50..58 => vec![self.put(k, Expect::Any, f)],
                58..64 => vec![self.put(k, Expect::Absent, f)],
                64..72 => {
                    let expect = self.version[k].map_or(Expect::Any, Expect::Version);
                    vec![RowWrite::Delete { key: row_key(k), expect, fence: f }]
                }
                r => match self.fence[p] {
                    None => {
                        self.take_over(p).await;
                        self.think().await;
                        continue;
                    }
                    Some(fp) if r < 88 => {
                        // Both rows, all or nothing; versioned when both versions are known.
                        let (ek, ep) = match (self.version[k], self.version[p]) {
                            (Some(vk), Some(vp)) => (Expect::Version(vk), Expect::Version(vp)),
                            _ => (Expect::Any, Expect::Any),
                        };
                        vec![self.put(k, ek, f), self.put(p, ep, fp)]
                    }
                    Some(fp) => {
                        // Write row k only while still owning the partner row.
                        let expect = self.version[k].map_or(Expect::Any, Expect::Version);
                        vec![RowWrite::Guard { key: row_key(p), fence: fp }, self.put(k, expect, f)]
                    }
                },
            };
            // Refusals are answers the task learns from (in `write`); nothing else to do.
            let _ = self.write(ops).await;
            self.think().await;
        }
    }

    /// Mostly a row this task owns (if any), else any row.
    fn pick_row(&self) -> usize {
        let owned: Vec<usize> = (0..ROWS).filter(|&k| self.fence[k].is_some()).collect();
        if !owned.is_empty() && self.env.rand.gen_bool(OWN_ROWS_PROBABILITY) {
            *self.env.rand.choose(&owned).expect("not empty")
        } else {
            self.env.rand.gen_range(0..ROWS as u64) as usize
        }
    }

    async fn think(&self) {
        let ms = self.env.rand.gen_range(THINK_MS);
        self.env.clock.sleep(Duration::from_millis(ms)).await;
    }

    /// A `Put` of a fresh value on row `k`.
    fn put(&mut self, k: usize, expect: Expect, fence: u64) -> RowWrite {
        self.n += 1;
        RowWrite::Put { key: row_key(k), value: format!("p{}-{}", self.process, self.n), expect, fence }
    }

    async fn get(&mut self, k: usize) {
        let key = row_key(k);
        let call = self.calls.invoke(&instance_of(k), DbCall::Get { key: key.clone() });
        let r = self.dbs[k % INSTANCES].get(&self.table, &key).await;
        self.calls.complete_get(call, &r);
        if let Ok(row) = r {
            self.version[k] = row.map(|r| r.version);
        }
    }

    /// Becomes row `k`'s newest owner: a fresh fence, raised on the row.
    async fn take_over(&mut self, k: usize) {
        let fence = self.fences.next(k);
        tracing::info!(process = self.process, row = k, fence, "take over");
        match self.write(vec![RowWrite::RaiseFence { key: row_key(k), fence }]).await {
            // Raised (or maybe raised): act as the owner; the instance will say if not.
            Ok(_) | Err(DbError::Timeout { .. } | DbError::ConnectionLoss { .. }) => {
                self.fence[k] = Some(fence)
            }
            // A newer owner came first, or the instance was unreachable: not the owner.
            Err(_) => self.fence[k] = None,
        }
    }

    /// One `transact` of `ops` (all on one instance), recorded, and what it taught the task.
    async fn write(&mut self, ops: Vec<RowWrite>) -> Result<Vec<WriteResult>, DbError> {
        let rows: Vec<usize> = ops.iter().map(|o| row_index(o.key())).collect();
        let instance = rows[0] % INSTANCES;
        debug_assert!(rows.iter().all(|r| r % INSTANCES == instance), "one transact, one instance");
        let port_ops = ops.iter().map(|o| write_op(&self.table, o)).collect();
        let call = self.calls.invoke(&Topology::sql_name(instance), DbCall::Transact(ops.clone()));
        let r = self.dbs[instance].transact(port_ops).await;
        self.calls.complete_transact(call, &r);
        match &r {
            Ok(results) => {
                for ((k, op), res) in rows.iter().zip(&ops).zip(results) {
                    match res {
                        WriteResult::Put { version } | WriteResult::Guard { version } => {
                            self.version[*k] = Some(*version)
                        }
                        WriteResult::Delete { .. } => self.version[*k] = None,
                        WriteResult::RaiseFence { row, .. } => {
                            self.version[*k] = row.as_ref().map(|r| r.version);
                            self.fence[*k] = Some(op.fence());
                        }
                        _ => {}
                    }
                }
            }
            Err(DbError::Fenced { op_index, row_fence }) => {
                let k = rows[*op_index];
                tracing::debug!(process = self.process, row = k, row_fence, "fenced");
                if self.env.rand.gen_bool(BELIEVE_FENCED_PROBABILITY) {
                    self.fence[k] = None;
                }
            }
            Err(DbError::VersionMismatch { op_index, actual }) => {
                self.version[rows[*op_index]] = Some(*actual)
            }
            Err(DbError::NotFound { op_index }) => self.version[rows[*op_index]] = None,
            Err(_) => {}
        }
        r
    }
}

/// The row number of a key made by [`row_key`].
fn row_index(key: &str) -> usize {
    key.strip_prefix("row-").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not a row key: {key:?}"))
}
