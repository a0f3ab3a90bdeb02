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

use std::fmt;
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

/// A finished history, in invocation order (per process only, for one rebuilt from several
/// processes' reports with [`Recorder::invoke_at`]).
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
        self.invoke_at(process, op, (self.now)())
    }

    /// Records the invocation of `op` by `process` at `invoke_ns`, a time read elsewhere: for
    /// a history rebuilt from what another process reported (a live run's evidence, timed on
    /// the clock every process of the run shares), or recorded at the instant it was reported.
    /// Ids are positions in recording order, so a history merged from several processes'
    /// reports is in invocation order per process, not across them.
    pub fn invoke_at(&self, process: ProcessId, op: O, invoke_ns: u64) -> OpHandle {
        let mut h = self.inner.lock().expect("history poisoned");
        let id = h.ops.len();
        h.ops.push(Operation { id, process, op, invoke_ns, completion: None });
        OpHandle(id)
    }

    fn complete(&self, handle: OpHandle, outcome: Outcome<R>) {
        self.complete_at(handle, outcome, (self.now)());
    }

    /// Completes `handle` with `outcome` at `return_ns`, a time read elsewhere (see
    /// [`Recorder::invoke_at`]). An operation never completed stays open: unknown, as if it
    /// had been invoked here and its process killed.
    pub fn complete_at(&self, handle: OpHandle, outcome: Outcome<R>, return_ns: u64) {
        let mut h = self.inner.lock().expect("history poisoned");
        let op = &mut h.ops[handle.0];
        assert!(op.completion.is_none(), "operation {} completed twice", handle.0);
        assert!(
            return_ns >= op.invoke_ns,
            "operation {} returned at {return_ns} ns, before its invocation at {} ns",
            handle.0,
            op.invoke_ns
        );
        op.completion = Some((return_ns, outcome));
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

/// How a [`OpView`] completed, without its result type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewOutcome {
    Ok,
    Fail,
    /// Unknown: may have taken effect (also operations that never completed).
    Info,
}

/// One operation of a history with its types erased to text, for pictures of a run (the
/// simulator's `replay --chart`): what a reader needs, not what a checker needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpView {
    /// The operation's id in its history (what [`Violation::ops`](crate::checker::Violation) names).
    pub id: usize,
    /// The process that invoked it: for the runner to find its node, a node incarnation's
    /// process id (`ClientCtx::process` / `ServerCtx::process`); anything else (an observer's
    /// reads after the run) is drawn apart.
    pub process: ProcessId,
    /// A short name (`Read`, `Login`, ...).
    pub name: String,
    /// The whole operation (`Debug`).
    pub detail: String,
    pub outcome: ViewOutcome,
    /// The result of an `Ok` (`Debug`); empty otherwise.
    pub result: String,
    pub invoke_ns: u64,
    /// Completion time of an `Ok` or `Fail`, or the time an `Info` was recorded; `None` if it
    /// never completed.
    pub complete_ns: Option<u64>,
}

/// The leading identifier of `x`'s `Debug` rendering (`Write("x")` → `Write`): an enum's variant.
pub fn debug_name(x: &impl fmt::Debug) -> String {
    leading_ident(&format!("{x:?}")).to_string()
}

/// The leading identifier of a `Debug` rendering (`Write("x")` → `Write`), or all of it.
fn leading_ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    if end == 0 {
        s
    } else {
        &s[..end]
    }
}

impl<O: fmt::Debug, R: fmt::Debug> History<O, R> {
    /// Every operation as an [`OpView`], named by the leading identifier of its `Debug` form
    /// (an enum's variant).
    pub fn views(&self) -> Vec<OpView> {
        self.views_named(debug_name)
    }

    /// [`History::views`] with the short names given by `name`.
    pub fn views_named(&self, name: impl Fn(&O) -> String) -> Vec<OpView> {
        self.ops
            .iter()
            .map(|o| {
                let (outcome, result, complete_ns) = match &o.completion {
                    Some((t, Outcome::Ok(r))) => (ViewOutcome::Ok, format!("{r:?}"), Some(*t)),
                    Some((t, Outcome::Fail)) => (ViewOutcome::Fail, String::new(), Some(*t)),
                    Some((t, Outcome::Info)) => (ViewOutcome::Info, String::new(), Some(*t)),
                    None => (ViewOutcome::Info, String::new(), None),
                };
                OpView {
                    id: o.id,
                    process: o.process,
                    name: name(&o.op),
                    detail: format!("{:?}", o.op),
                    outcome,
                    result,
                    invoke_ns: o.invoke_ns,
                    complete_ns,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The field is read only through `Debug`, which dead-code analysis ignores.
    #[allow(dead_code)]
    #[derive(Debug, Clone)]
    enum Op {
        Write(String),
        Read,
    }

    #[test]
    fn views_name_operations_by_their_variant_and_fold_open_ones_into_info() {
        let t = Arc::new(std::sync::atomic::AtomicU64::new(5));
        let t2 = t.clone();
        let rec: Recorder<Op, Option<String>> =
            Recorder::new(Arc::new(move || t2.load(std::sync::atomic::Ordering::Relaxed)));
        let w = rec.invoke(1, Op::Write("a<b".into()));
        let _open = rec.invoke(2, Op::Read);
        t.store(9, std::sync::atomic::Ordering::Relaxed);
        rec.ok(w, None);
        let v = rec.snapshot().views();
        assert_eq!((v[0].name.as_str(), v[0].detail.as_str()), ("Write", "Write(\"a<b\")"));
        assert_eq!(
            (v[0].outcome, v[0].result.as_str(), v[0].complete_ns),
            (ViewOutcome::Ok, "None", Some(9))
        );
        assert_eq!((v[1].name.as_str(), v[1].outcome, v[1].complete_ns), ("Read", ViewOutcome::Info, None));
    }

    #[test]
    fn operations_recorded_at_reported_times_keep_those_times_and_unanswered_ones_stay_open() {
        // The recorder's own clock says 1000: reported times must not be replaced by it.
        let rec: Recorder<Op, u64> = Recorder::new(Arc::new(|| 1_000));
        let answered = rec.invoke_at(7, Op::Read, 10);
        let unanswered = rec.invoke_at(7, Op::Write("x".into()), 20);
        let failed = rec.invoke_at(8, Op::Read, 5);
        rec.complete_at(answered, Outcome::Ok(3), 30);
        rec.complete_at(failed, Outcome::Fail, 5);
        let h = rec.snapshot();
        assert_eq!(
            h.ops.iter().map(|o| (o.id, o.process, o.invoke_ns)).collect::<Vec<_>>(),
            [(0, 7, 10), (1, 7, 20), (2, 8, 5)]
        );
        assert_eq!(h.ops[0].completion, Some((30, Outcome::Ok(3))));
        assert_eq!((h.ops[0].outcome(), h.ops[0].return_ns()), (Outcome::Ok(&3), Some(30)));
        // Never completed: open, read as unknown with no return time, as a killed client's.
        assert_eq!(h.ops[unanswered.0].completion, None);
        assert_eq!((h.ops[1].outcome(), h.ops[1].return_ns()), (Outcome::Info, None));
        assert_eq!(h.ops[2].return_ns(), Some(5));
    }

    #[test]
    #[should_panic(expected = "before its invocation")]
    fn an_operation_cannot_return_before_it_was_invoked() {
        let rec: Recorder<Op, u64> = Recorder::new(Arc::new(|| 0));
        let h = rec.invoke_at(1, Op::Read, 50);
        rec.complete_at(h, Outcome::Info, 49);
    }
}
