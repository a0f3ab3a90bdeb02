//! Operation histories: what every simulated client did and saw, with simulated time.
//!
//! Each client operation is recorded as an *invoke* followed by exactly one completion:
//! - `Ok(result)`: it happened, and returned `result`;
//! - `Fail`: it certainly did **not** take effect (e.g. refused before being sent);
//! - `Info`: outcome unknown (a timeout or a lost connection after sending): it may or may
//!   not have taken effect, at any time after its invocation.
//!
//! An operation still open at the end of a run is treated as `Info`. Times are *true*
//! simulated time (the runner's clock, not a node's drifting one), so real-time order
//! between operations of different clients is meaningful to checkers.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Identifies one client (a "process" in the linearizability literature).
pub type ProcessId = u64;

/// How an operation completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<R> {
    Ok(R),
    Fail,
    Info,
}

/// One operation: its invocation, and its completion if it completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation<O, R> {
    /// Position in invocation order (unique within a history).
    pub id: usize,
    pub process: ProcessId,
    pub op: O,
    /// True simulated time of the invocation, nanoseconds.
    pub invoke_ns: u64,
    /// Completion time and outcome; `None` = never completed (treated as `Info`).
    pub completion: Option<(u64, Outcome<R>)>,
}

impl<O, R> Operation<O, R> {
    /// The outcome, with "never completed" folded into `Info`.
    pub fn outcome(&self) -> Outcome<&R> {
        match &self.completion {
            Some((_, Outcome::Ok(r))) => Outcome::Ok(r),
            Some((_, Outcome::Fail)) => Outcome::Fail,
            Some((_, Outcome::Info)) | None => Outcome::Info,
        }
    }

    /// Completion time of an `Ok` or `Fail`; `None` for unknown outcomes (they may take
    /// effect at any time after the invocation, so they have no upper bound).
    pub fn return_ns(&self) -> Option<u64> {
        match &self.completion {
            Some((t, Outcome::Ok(_) | Outcome::Fail)) => Some(*t),
            _ => None,
        }
    }
}

/// A finished history, in invocation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History<O, R> {
    pub ops: Vec<Operation<O, R>>,
}

impl<O, R> Default for History<O, R> {
    fn default() -> Self {
        History { ops: Vec::new() }
    }
}

/// Source of true simulated time for a recorder.
pub type TimeSource = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Records operations as they happen; cheap to clone and share between client tasks.
#[derive(Clone)]
pub struct Recorder<O, R> {
    inner: Arc<Mutex<History<O, R>>>,
    now: TimeSource,
}

/// Handle to one invoked operation; complete it with [`Recorder::ok`], `fail` or `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an invoked operation must be completed (ok/fail/info)"]
pub struct OpHandle(usize);

impl<O: Clone, R: Clone> Recorder<O, R> {
    pub fn new(now: TimeSource) -> Self {
        Recorder { inner: Arc::new(Mutex::new(History::default())), now }
    }

    /// Records the invocation of `op` by `process`.
    pub fn invoke(&self, process: ProcessId, op: O) -> OpHandle {
        let t = (self.now)();
        let mut h = self.inner.lock().expect("history poisoned");
        let id = h.ops.len();
        h.ops.push(Operation { id, process, op, invoke_ns: t, completion: None });
        OpHandle(id)
    }

    fn complete(&self, handle: OpHandle, outcome: Outcome<R>) {
        let t = (self.now)();
        let mut h = self.inner.lock().expect("history poisoned");
        let op = &mut h.ops[handle.0];
        assert!(op.completion.is_none(), "operation {} completed twice", handle.0);
        op.completion = Some((t, outcome));
    }

    pub fn ok(&self, handle: OpHandle, result: R) {
        self.complete(handle, Outcome::Ok(result));
    }
    pub fn fail(&self, handle: OpHandle) {
        self.complete(handle, Outcome::Fail);
    }
    pub fn info(&self, handle: OpHandle) {
        self.complete(handle, Outcome::Info);
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> History<O, R> {
        self.inner.lock().expect("history poisoned").clone()
    }

    /// Number of operations invoked so far.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("history poisoned").ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
