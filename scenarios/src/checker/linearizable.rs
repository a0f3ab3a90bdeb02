//! Per-key linearizability checking (Wing & Gong / Lowe's "WGL" search with memoisation, as
//! in Knossos and Porcupine).
//!
//! # What is checked
//! [`check_registers`] checks a history of [`KeyedOp`]s against the keyed-register model of
//! [`super::register`]. Keys are independent objects, so by P-compositionality the history
//! is linearizable iff each key's sub-history is; each key is searched on its own.
//!
//! Per key:
//! - `Fail` operations are dropped: they certainly did not take effect.
//! - `Info` (and never-completed) operations may take effect at any time after their
//!   invocation, or never: their return time is +∞ and the search may leave them
//!   un-linearized at the end. An unknown read constrains nothing and is dropped; an unknown
//!   CAS, if linearized, does whatever the register state dictates.
//! - Real-time order: `a` must be linearized before `b` iff `a` returned (`Ok`) strictly
//!   before `b` was invoked. At equal times, operations of *different* processes are treated
//!   as concurrent (no false alarm from same-nanosecond events); operations of the *same*
//!   process are sequential (a process is one sequential client), so a process's op that
//!   returned at `t` precedes the same process's later op invoked at `t`.
//!
//! # The search
//! Events (invocations and returns) are sorted by time in a doubly linked list. The search
//! repeatedly linearizes a pending operation whose invocation comes before the first return
//! still in the list, if the model accepts it in the current state and the pair
//! *(set of linearized operations, model state)* has not been explored before (the memo
//! cache: a bitset plus an interned register value); reaching a return event means its
//! operation should already have been linearized, so the search backtracks. It succeeds once
//! every `Ok` operation is linearized. The search is deterministic (the cache is only ever
//! queried for membership), so results never depend on hash iteration order.
//!
//! Each key's search is bounded by [`LinConfig::step_budget`] steps (default 5 000 000).
//! A key that exhausts it is *inconclusive*: it is not reported as a violation, but counted
//! in `linearizability.inconclusive_keys` and logged with `tracing::warn!`.
//!
//! # Capacity (measured)
//! Measured with the ignored `capacity_probe` test below
//! (`LIN_PROBE=procs,ops,info_permille[,seed[,bad]] cargo test --release -p scenarios
//! capacity_probe -- --ignored --nocapture`, timed externally) on a 2-core development VM,
//! release build, default budget of 5 000 000 steps (about 2-3 M steps/s; peak memory at
//! the full budget 80-150 MB thanks to compacted memo keys). One key; `procs` sequential
//! clients with random latency (0-100 to the effect point, 0-100 to the return, 0-20 think
//! time, so about `procs` ops in flight), 40% reads / 35% writes / 25% CAS over 5 values;
//! `info` = fraction of ops with unknown outcome (half of which took effect).
//!
//! Valid histories (the search must find a linearization):
//!
//! | clients/key | ops/key | info | steps  | time   | result       |
//! |-------------|---------|------|--------|--------|--------------|
//! | 5           | 10 000  | 0    | 43 k   | 0.09 s | ok           |
//! | 5           | 10 000  | 10%  | 45 k   | 0.06 s | ok           |
//! | 10          | 10 000  | 0-10%| 1.04 M | 0.3 s  | ok           |
//! | 12          | 10 000  | 0    | 4.5 M  | 1.6 s  | ok (near budget) |
//! | 15          | 1 000   | 0    | 1.09 M | 0.2 s  | ok           |
//! | 15          | 10 000  | 0    | 5 M    | 1.7 s  | inconclusive |
//! | 20          | 100     | 0    | 0.54 M | 0.2 s  | ok           |
//! | 20          | 300     | 0    | 5 M    | 1.2 s  | inconclusive |
//!
//! Invalid histories (a read of a never-written value planted at the *last* read, the worst
//! case: every configuration before it must be exhausted):
//!
//! | clients/key | ops/key | info | steps  | time   | result       |
//! |-------------|---------|------|--------|--------|--------------|
//! | 3           | 10 000  | 0    | 115 k  | 0.13 s | violation    |
//! | 5           | 10 000  | 0    | 573 k  | 0.27 s | violation    |
//! | 5           | 10 000  | 10%  | 5 M    | 2.9 s  | inconclusive |
//! | 8           | 2 000   | 0    | 1.2 M  | 0.35 s | violation    |
//! | 8           | 10 000  | 0    | 5 M    | 2.5 s  | inconclusive |
//! | 10          | 1 000   | 0    | 2.9 M  | 0.9 s  | violation    |
//! | 10          | 2 000   | 5%   | 5 M    | 2.0 s  | inconclusive |
//!
//! Rules of thumb: cost is driven by *concurrency per key* (clients in flight plus pending
//! `Info` writes, which stay pending forever) far more than by length. Valid histories of
//! 10 000 ops per key are fine up to about 10-12 concurrent clients per key; refuting a bad
//! op deep in a long history needs about 5 or fewer (fewer still with many `Info` ops).
//! 15-20 concurrent clients on one key only work for histories of a few hundred ops. So
//! workloads should spread clients over keys and keep `Info` rates low; an inconclusive key
//! is counted, never silently passed.
//!
//! [`KeyedOp`]: super::register::KeyedOp
//!
//! Size: about 520 lines of code (the search with its pruning and budget) and as many of
//! tests next to it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::Hash;

use crate::history::{History, Operation, Outcome, ProcessId};

use super::register::{IOp, IRes, Interner, KeyedOp, RegisterModel, RegisterResult, ShowValue};
use super::Report;

/// Name under which the linearizability checker reports.
pub const CHECKER: &str = "linearizability";

/// Default per-key search budget, in steps.
pub const DEFAULT_STEP_BUDGET: u64 = 5_000_000;

/// How many operations of the longest linearizable prefix a violation message shows.
const PREFIX_TAIL_SHOWN: usize = 12;
/// How many unplaceable operations a violation message lists.
const STUCK_SHOWN: usize = 16;

/// Configuration of the linearizability checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinConfig {
    /// Search steps allowed per key before the key is declared inconclusive.
    pub step_budget: u64,
}

impl Default for LinConfig {
    fn default() -> Self {
        LinConfig { step_budget: DEFAULT_STEP_BUDGET }
    }
}

/// A sequential specification, for the generic search.
pub trait Model {
    type Op;
    type Result;
    type State: Clone + Eq + Hash;

    /// The initial state.
    fn init(&self) -> Self::State;

    /// Applies `op` with observed `result` (`None` = unknown, any result is acceptable) to
    /// `state`; `None` if that result is impossible in that state.
    fn step(&self, state: &Self::State, op: &Self::Op, result: Option<&Self::Result>) -> Option<Self::State>;
}

/// One operation as the search sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchOp<O, R> {
    pub op: O,
    /// Observed result; `None` = unknown.
    pub result: Option<R>,
    pub process: ProcessId,
    pub invoke_ns: u64,
    /// `None` = +∞: the operation may take effect at any time after invocation, or never.
    pub return_ns: Option<u64>,
}

/// What the search concluded. Operation numbers are indexes into the searched slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchOutcome<S> {
    Linearizable {
        steps: u64,
    },
    NotLinearizable {
        steps: u64,
        /// The longest linearizable prefix found (first time it was reached), in order.
        prefix: Vec<usize>,
        /// Model state after `prefix`.
        state: S,
        /// Pending operations that could have come next after `prefix` (invoked before the
        /// earliest pending return); none of them led to a full linearization.
        stuck: Vec<usize>,
        /// The operation whose return was the deadline at that point (it is in `stuck`).
        deadline: Option<usize>,
    },
    Inconclusive {
        steps: u64,
    },
}

const NIL: usize = usize::MAX;

/// Doubly linked list of events: node `2i` = call of op `i`, `2i + 1` = its return; the
/// head sentinel is node `2n`.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl Events {
    fn new<O, R>(ops: &[SearchOp<O, R>]) -> Events {
        // Sort key: (infinite?, time, call-before-return, op index). Calls sort before
        // returns at equal times, so equal-time ops are concurrent; infinite returns last.
        let mut order: Vec<(bool, u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            order.push((false, o.invoke_ns, 0, i));
            match o.return_ns {
                Some(t) => order.push((false, t.max(o.invoke_ns), 1, i)),
                None => order.push((true, 0, 1, i)),
            }
        }
        order.sort_unstable();
        let n = ops.len();
        let head = 2 * n;
        let mut next = vec![NIL; 2 * n + 1];
        let mut prev = vec![NIL; 2 * n + 1];
        let mut last = head;
        for &(_, _, kind, i) in &order {
            let node = 2 * i + kind as usize;
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        Events { next, prev, head }
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Removes op `i`'s call and return.
    fn lift(&mut self, i: usize) {
        self.unlink(2 * i);
        self.unlink(2 * i + 1);
    }

    /// Undoes [`Events::lift`] (must be called in reverse order of lifts).
    fn unlift(&mut self, i: usize) {
        self.relink(2 * i + 1);
        self.relink(2 * i);
    }

    /// Ops whose calls precede the first return in the list, and that return's op.
    fn frontier(&self) -> (Vec<usize>, Option<usize>) {
        let mut calls = Vec::new();
        let mut node = self.next[self.head];
        while node != NIL {
            if node & 1 == 1 {
                return (calls, Some(node / 2));
            }
            calls.push(node / 2);
            node = self.next[node];
        }
        (calls, None)
    }
}

/// Exact compact encoding of a bitset of fixed length: `[k, words[k..=last]]` where `k` is
/// the number of leading all-ones words and `last` the last non-zero word. Linearized sets
/// are mostly "everything old, plus a few recent ops", so this is usually 2-3 words.
fn compact_into(bits: &[u64], out: &mut Vec<u64>) {
    out.clear();
    let k = bits.iter().take_while(|&&w| w == u64::MAX).count();
    let last = bits.iter().rposition(|&w| w != 0).map_or(k, |l| l + 1).max(k);
    out.push(k as u64);
    out.extend_from_slice(&bits[k..last]);
}

/// Searches for a linearization of `ops` (given in invocation order) under `model`, within
/// `budget` steps.
pub fn search<M: Model>(
    model: &M,
    ops: &[SearchOp<M::Op, M::Result>],
    budget: u64,
) -> SearchOutcome<M::State> {
    let n = ops.len();
    let words = n.div_ceil(64).max(1);

    // Same-process, equal-time predecessors: ops `a` of the same process with
    // `a.return == c.invoke` and `a` invoked earlier must be linearized before `c`.
    let mut by_proc_return: HashMap<(ProcessId, u64), Vec<usize>> = HashMap::new();
    for (i, o) in ops.iter().enumerate() {
        if let Some(t) = o.return_ns {
            by_proc_return.entry((o.process, t.max(o.invoke_ns))).or_default().push(i);
        }
    }
    let preds: Vec<Vec<usize>> = ops
        .iter()
        .enumerate()
        .map(|(c, o)| {
            by_proc_return
                .get(&(o.process, o.invoke_ns))
                .map(|v| v.iter().copied().filter(|&a| a < c).collect())
                .unwrap_or_default()
        })
        .collect();

    let mut events = Events::new(ops);
    let mut linearized = vec![0u64; words];
    let is_set = |bits: &[u64], i: usize| bits[i / 64] & (1 << (i % 64)) != 0;
    let mut state = model.init();
    let mut remaining_known = ops.iter().filter(|o| o.return_ns.is_some()).count();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    // Memo cache of explored (linearized set, state) pairs; sets are stored compacted.
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut scratch: Vec<u64> = Vec::new();

    let mut best_len = 0usize;
    let mut best_prefix: Vec<usize> = Vec::new();
    let mut best_state = state.clone();
    let mut best_frontier = events.frontier();

    let mut entry = events.next[events.head];
    let mut steps = 0u64;
    loop {
        if remaining_known == 0 {
            return SearchOutcome::Linearizable { steps };
        }
        if steps >= budget {
            return SearchOutcome::Inconclusive { steps };
        }
        steps += 1;
        // A finite return is still in the list (remaining_known > 0) and the scan stops at
        // the first return, so `entry` is never NIL here.
        debug_assert_ne!(entry, NIL);
        let i = entry / 2;
        if entry & 1 == 0 {
            let o = &ops[i];
            let next_state = if preds[i].iter().all(|&a| is_set(&linearized, a)) {
                model.step(&state, &o.op, o.result.as_ref())
            } else {
                None
            };
            if let Some(ns) = next_state {
                linearized[i / 64] |= 1 << (i % 64);
                compact_into(&linearized, &mut scratch);
                let key = (std::mem::take(&mut scratch), ns);
                let seen = cache.contains(&key);
                let (bits, ns) = key;
                if seen {
                    scratch = bits;
                } else {
                    cache.insert((bits, ns.clone()));
                    stack.push((i, std::mem::replace(&mut state, ns)));
                    events.lift(i);
                    if o.return_ns.is_some() {
                        remaining_known -= 1;
                    }
                    if stack.len() > best_len {
                        best_len = stack.len();
                        best_prefix = stack.iter().map(|&(j, _)| j).collect();
                        best_state = state.clone();
                        best_frontier = events.frontier();
                    }
                    entry = events.next[events.head];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = events.next[entry];
        } else {
            // Op `i` returned without being linearized: backtrack.
            let Some((j, prev_state)) = stack.pop() else {
                let (stuck, deadline) = best_frontier;
                return SearchOutcome::NotLinearizable {
                    steps,
                    prefix: best_prefix,
                    state: best_state,
                    stuck,
                    deadline,
                };
            };
            state = prev_state;
            linearized[j / 64] &= !(1 << (j % 64));
            events.unlift(j);
            if ops[j].return_ns.is_some() {
                remaining_known += 1;
            }
            entry = events.next[2 * j];
        }
    }
}

/// Checks a keyed-register history for linearizability, key by key, with the default
/// [`LinConfig`].
pub fn check_registers(history: &History<KeyedOp, RegisterResult>) -> Report {
    check_registers_with(history, &LinConfig::default())
}

/// Checks a keyed-register history for linearizability, key by key.
///
/// Counters: `linearizability.keys_checked`, `.ops_checked` (operations searched),
/// `.max_ops_per_key`, `.info_ops` (unknown writes/CAS searched), `.info_reads_dropped`,
/// `.failed_ops_dropped`, `.search_steps`, `.non_linearizable_keys`, `.inconclusive_keys`.
pub fn check_registers_with(history: &History<KeyedOp, RegisterResult>, cfg: &LinConfig) -> Report {
    let mut report = Report::default();
    for name in [
        "keys_checked",
        "ops_checked",
        "info_ops",
        "info_reads_dropped",
        "failed_ops_dropped",
        "search_steps",
        "non_linearizable_keys",
        "inconclusive_keys",
    ] {
        report.count(&format!("{CHECKER}.{name}"), 0);
    }
    report.count_max(&format!("{CHECKER}.max_ops_per_key"), 0);

    let mut by_key: BTreeMap<&str, Vec<&Operation<KeyedOp, RegisterResult>>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.op.key.as_str()).or_default().push(op);
    }
    for (key, mut key_ops) in by_key {
        key_ops.sort_by_key(|o| o.id);
        check_key(key, &key_ops, cfg, &mut report);
    }
    report
}

fn check_key(
    key: &str,
    key_ops: &[&Operation<KeyedOp, RegisterResult>],
    cfg: &LinConfig,
    report: &mut Report,
) {
    let mut interner = Interner::default();
    let mut searched: Vec<&Operation<KeyedOp, RegisterResult>> = Vec::new();
    let mut ops: Vec<SearchOp<IOp, IRes>> = Vec::new();
    for &o in key_ops {
        let result = match o.outcome() {
            Outcome::Fail => {
                report.count(&format!("{CHECKER}.failed_ops_dropped"), 1);
                continue;
            }
            Outcome::Info => {
                if o.op.op == super::register::RegisterOp::Read {
                    report.count(&format!("{CHECKER}.info_reads_dropped"), 1);
                    continue;
                }
                report.count(&format!("{CHECKER}.info_ops"), 1);
                None
            }
            Outcome::Ok(r) => {
                if !o.op.op.accepts(r) {
                    report.violation(
                        CHECKER,
                        format!(
                            "key {key:?}: malformed operation {} (result kind does not match the \
                             operation; left out of the search)",
                            describe(o)
                        ),
                    );
                    continue;
                }
                Some(IRes::intern(r, &mut interner))
            }
        };
        ops.push(SearchOp {
            op: IOp::intern(&o.op.op, &mut interner),
            result,
            process: o.process,
            invoke_ns: o.invoke_ns,
            return_ns: o.return_ns(),
        });
        searched.push(o);
    }

    report.count(&format!("{CHECKER}.keys_checked"), 1);
    report.count(&format!("{CHECKER}.ops_checked"), ops.len() as u64);
    report.count_max(&format!("{CHECKER}.max_ops_per_key"), ops.len() as u64);

    match search(&RegisterModel, &ops, cfg.step_budget) {
        SearchOutcome::Linearizable { steps } => {
            report.count(&format!("{CHECKER}.search_steps"), steps);
        }
        SearchOutcome::Inconclusive { steps } => {
            report.count(&format!("{CHECKER}.search_steps"), steps);
            report.count(&format!("{CHECKER}.inconclusive_keys"), 1);
            tracing::warn!(
                key,
                ops = ops.len(),
                steps,
                "linearizability search budget exhausted; key is inconclusive (not a violation)"
            );
        }
        SearchOutcome::NotLinearizable { steps, prefix, state, stuck, deadline } => {
            report.count(&format!("{CHECKER}.search_steps"), steps);
            report.count(&format!("{CHECKER}.non_linearizable_keys"), 1);
            let mut m = String::new();
            let _ = writeln!(
                m,
                "key {key:?} is not linearizable ({} ops on this key, {steps} search steps).",
                ops.len()
            );
            let _ = write!(m, "Longest linearizable prefix: {} ops", prefix.len());
            if prefix.len() > PREFIX_TAIL_SHOWN {
                let _ = write!(m, " (last {PREFIX_TAIL_SHOWN} shown)");
            }
            let _ = writeln!(m, ":");
            for &i in &prefix[prefix.len().saturating_sub(PREFIX_TAIL_SHOWN)..] {
                let _ = writeln!(m, "  {}", describe(searched[i]));
            }
            let _ = writeln!(m, "after which the register is {}.", ShowValue(interner.name(state)));
            let _ = writeln!(m, "None of these pending ops can be linearized next:");
            for &i in stuck.iter().take(STUCK_SHOWN) {
                let mark = if Some(i) == deadline { "  <- must take effect by its return" } else { "" };
                let _ = writeln!(m, "  {}{mark}", describe(searched[i]));
            }
            if stuck.len() > STUCK_SHOWN {
                let _ = writeln!(m, "  ... and {} more", stuck.len() - STUCK_SHOWN);
            }
            report.violation(CHECKER, m.trim_end().to_string());
        }
    }
}

/// `#id p<process> <op> -> <result> [invoke..return]`, times in ns.
fn describe(o: &Operation<KeyedOp, RegisterResult>) -> String {
    let (result, end) = match &o.completion {
        Some((t, Outcome::Ok(r))) => (r.to_string(), t.to_string()),
        Some((t, Outcome::Fail)) => ("fail".to_string(), t.to_string()),
        Some((t, Outcome::Info)) => (format!("info@{t}"), "∞)".to_string()),
        None => ("info (never completed)".to_string(), "∞)".to_string()),
    };
    let end = if end.ends_with(')') { end } else { format!("{end}]") };
    format!("#{} p{} {} -> {result} [{}..{end}", o.id, o.process, o.op.op, o.invoke_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::register::RegisterOp;
    use proptest::prelude::*;

    type H = History<KeyedOp, RegisterResult>;
    type Op = Operation<KeyedOp, RegisterResult>;

    /// Builds histories; ids are assigned in invocation order by `build`.
    #[derive(Default)]
    struct B {
        ops: Vec<Op>,
    }

    impl B {
        fn push(
            mut self,
            p: u64,
            op: KeyedOp,
            inv: u64,
            completion: Option<(u64, Outcome<RegisterResult>)>,
        ) -> Self {
            self.ops.push(Operation { id: 0, process: p, op, invoke_ns: inv, completion });
            self
        }
        fn ok(self, p: u64, op: KeyedOp, inv: u64, ret: u64, r: RegisterResult) -> Self {
            self.push(p, op, inv, Some((ret, Outcome::Ok(r))))
        }
        fn info(self, p: u64, op: KeyedOp, inv: u64, at: u64) -> Self {
            self.push(p, op, inv, Some((at, Outcome::Info)))
        }
        fn open(self, p: u64, op: KeyedOp, inv: u64) -> Self {
            self.push(p, op, inv, None)
        }
        fn fail(self, p: u64, op: KeyedOp, inv: u64, ret: u64) -> Self {
            self.push(p, op, inv, Some((ret, Outcome::Fail)))
        }
        fn build(mut self) -> H {
            // Stable: equal invocation times keep insertion order.
            self.ops.sort_by_key(|o| o.invoke_ns);
            for (i, o) in self.ops.iter_mut().enumerate() {
                o.id = i;
            }
            History { ops: self.ops }
        }
    }

    fn w(v: &str) -> KeyedOp {
        KeyedOp::write("k", v)
    }
    fn r() -> KeyedOp {
        KeyedOp::read("k")
    }
    fn cas(e: Option<&str>, n: &str) -> KeyedOp {
        KeyedOp::cas("k", e, n)
    }
    fn wr() -> RegisterResult {
        RegisterResult::Written
    }
    fn rd(v: Option<&str>) -> RegisterResult {
        RegisterResult::Read(v.map(str::to_string))
    }
    fn cr(b: bool) -> RegisterResult {
        RegisterResult::Cas(b)
    }

    fn assert_ok(h: &H) -> Report {
        let rep = check_registers(h);
        assert!(rep.ok(), "expected linearizable, got: {:#?}", rep.violations);
        assert_eq!(rep.counter("linearizability.inconclusive_keys"), 0);
        rep
    }

    fn assert_bad(h: &H) -> Report {
        let rep = check_registers(h);
        assert!(!rep.ok(), "expected a violation: {h:#?}");
        assert_eq!(rep.violations[0].checker, CHECKER);
        assert_eq!(rep.counter("linearizability.inconclusive_keys"), 0);
        rep
    }

    // ---- histories that must fail ----

    #[test]
    fn bad_stale_read_after_completed_write() {
        let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, r(), 20, 30, rd(None)).build();
        let rep = assert_bad(&h);
        let m = &rep.violations[0].message;
        assert!(m.contains("key \"k\""), "{m}");
        assert!(m.contains("#1 p2 read -> absent [20..30]"), "{m}");
        assert!(m.contains("#0 p1 write \"a\" -> ok [0..10]"), "{m}");
        assert!(m.contains("Longest linearizable prefix: 1 ops"), "{m}");
    }

    #[test]
    fn violation_message_format() {
        let h = B::default()
            .ok(1, w("a"), 0, 10, wr())
            .ok(1, w("b"), 20, 30, wr())
            .info(3, w("c"), 25, 1_000)
            .ok(2, r(), 40, 50, rd(Some("a")))
            .build();
        let rep = assert_bad(&h);
        assert_eq!(
            rep.violations[0].message,
            "key \"k\" is not linearizable (4 ops on this key, 14 search steps).\n\
             Longest linearizable prefix: 3 ops:\n  \
             #0 p1 write \"a\" -> ok [0..10]\n  \
             #1 p1 write \"b\" -> ok [20..30]\n  \
             #2 p3 write \"c\" -> info@1000 [25..∞)\n\
             after which the register is \"c\".\n\
             None of these pending ops can be linearized next:\n  \
             #3 p2 read -> \"a\" [40..50]  <- must take effect by its return"
        );
    }

    #[test]
    fn bad_read_of_never_written_value() {
        let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, r(), 5, 30, rd(Some("zzz"))).build();
        let rep = assert_bad(&h);
        assert!(rep.violations[0].message.contains("read -> \"zzz\""));
    }

    #[test]
    fn bad_lost_write() {
        let h = B::default()
            .ok(1, w("a"), 0, 10, wr())
            .ok(1, w("b"), 20, 30, wr())
            .ok(2, r(), 40, 50, rd(Some("a")))
            .build();
        let rep = assert_bad(&h);
        let m = &rep.violations[0].message;
        assert!(m.contains("after which the register is \"b\""), "{m}");
        assert!(m.contains("#2 p2 read -> \"a\" [40..50]  <- must take effect by its return"), "{m}");
    }

    #[test]
    fn bad_cas_true_with_wrong_expected() {
        let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, cas(Some("b"), "c"), 20, 30, cr(true)).build();
        assert_bad(&h);
        // Also from absent.
        let h = B::default().ok(2, cas(Some("b"), "c"), 20, 30, cr(true)).build();
        assert_bad(&h);
    }

    #[test]
    fn bad_cas_false_when_it_must_have_matched() {
        let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, cas(Some("a"), "c"), 20, 30, cr(false)).build();
        assert_bad(&h);
        let h = B::default().ok(2, cas(None, "c"), 20, 30, cr(false)).build();
        assert_bad(&h);
    }

    #[test]
    fn bad_read_goes_back_in_time() {
        let h = B::default()
            .ok(1, w("a"), 0, 10, wr())
            .ok(2, w("b"), 20, 100, wr())
            .ok(3, r(), 30, 40, rd(Some("b")))
            .ok(4, r(), 50, 60, rd(Some("a")))
            .build();
        assert_bad(&h);
    }

    #[test]
    fn bad_info_write_cannot_unhappen() {
        // Once a later read saw the info write, it cannot be undone.
        let h = B::default()
            .ok(1, w("a"), 0, 10, wr())
            .info(2, w("b"), 20, 25)
            .ok(3, r(), 30, 40, rd(Some("b")))
            .ok(3, r(), 50, 60, rd(Some("a")))
            .build();
        assert_bad(&h);
    }

    #[test]
    fn bad_same_process_is_sequential_at_equal_times() {
        // p1's read is invoked at the instant its write returned: it must see the write.
        let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(1, r(), 10, 20, rd(None)).build();
        assert_bad(&h);
    }

    #[test]
    fn bad_key_is_named_and_other_keys_pass() {
        let h = B::default()
            .ok(1, KeyedOp::write("x", "1"), 0, 10, wr())
            .ok(2, KeyedOp::write("y", "1"), 0, 10, wr())
            .ok(1, KeyedOp::read("x"), 20, 30, rd(Some("1")))
            .ok(2, KeyedOp::read("y"), 20, 30, rd(Some("2")))
            .build();
        let rep = assert_bad(&h);
        assert_eq!(rep.violations.len(), 1);
        assert!(rep.violations[0].message.starts_with("key \"y\""));
        assert_eq!(rep.counter("linearizability.keys_checked"), 2);
        assert_eq!(rep.counter("linearizability.non_linearizable_keys"), 1);
    }

    #[test]
    fn bad_malformed_result_kind() {
        let h = B::default().ok(1, w("a"), 0, 10, rd(None)).build();
        let rep = assert_bad(&h);
        assert!(rep.violations[0].message.contains("malformed"));
    }

    // ---- histories that must pass ----

    #[test]
    fn good_concurrent_writes_either_order() {
        // Overlapping writes: a later read may see either value.
        for final_value in ["a", "b"] {
            let h = B::default()
                .ok(1, w("a"), 0, 100, wr())
                .ok(2, w("b"), 10, 90, wr())
                .ok(3, r(), 5, 15, rd(None))
                .ok(4, r(), 50, 60, rd(Some(final_value)))
                .ok(5, r(), 110, 120, rd(Some(final_value)))
                .build();
            assert_ok(&h);
        }
        // Concurrent reads observing b then a fix the order b < a: the final read sees a.
        let h = B::default()
            .ok(1, w("a"), 0, 100, wr())
            .ok(2, w("b"), 10, 90, wr())
            .ok(3, r(), 20, 30, rd(Some("b")))
            .ok(4, r(), 40, 50, rd(Some("a")))
            .ok(5, r(), 110, 120, rd(Some("a")))
            .build();
        assert_ok(&h);
        let mut bad = h.clone();
        bad.ops[4].completion = Some((120, Outcome::Ok(rd(Some("b")))));
        assert_bad(&bad);
    }

    #[test]
    fn good_equal_times_across_processes_are_concurrent() {
        let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, r(), 10, 20, rd(None)).build();
        assert_ok(&h);
    }

    #[test]
    fn good_info_write_that_did_or_did_not_take_effect() {
        // Took effect.
        let h = B::default()
            .ok(1, w("a"), 0, 10, wr())
            .info(2, w("b"), 20, 25)
            .ok(3, r(), 30, 40, rd(Some("a")))
            .ok(3, r(), 50, 60, rd(Some("b")))
            .build();
        assert_ok(&h);
        // Never took effect.
        let h = B::default()
            .ok(1, w("a"), 0, 10, wr())
            .info(2, w("b"), 20, 25)
            .ok(3, r(), 30, 40, rd(Some("a")))
            .ok(3, r(), 500, 600, rd(Some("a")))
            .build();
        let rep = assert_ok(&h);
        assert_eq!(rep.counter("linearizability.info_ops"), 1);
    }

    #[test]
    fn good_info_write_observed_by_later_read() {
        let h = B::default().open(1, w("a"), 0).ok(2, r(), 1_000, 1_100, rd(Some("a"))).build();
        assert_ok(&h);
        // An info CAS that took effect, observed later.
        let h = B::default()
            .ok(1, w("a"), 0, 10, wr())
            .info(2, cas(Some("a"), "b"), 20, 30)
            .ok(3, r(), 1_000, 1_100, rd(Some("b")))
            .build();
        assert_ok(&h);
    }

    #[test]
    fn good_fail_ops_are_ignored() {
        let h = B::default().fail(1, w("z"), 0, 10).ok(2, r(), 20, 30, rd(None)).fail(1, r(), 40, 50).build();
        let rep = assert_ok(&h);
        assert_eq!(rep.counter("linearizability.failed_ops_dropped"), 2);
        assert_eq!(rep.counter("linearizability.ops_checked"), 1);
    }

    #[test]
    fn good_info_reads_are_dropped() {
        let h = B::default()
            .ok(1, w("a"), 0, 10, wr())
            .info(2, r(), 20, 30)
            .open(3, r(), 40)
            .ok(2, r(), 50, 60, rd(Some("a")))
            .build();
        let rep = assert_ok(&h);
        assert_eq!(rep.counter("linearizability.info_reads_dropped"), 2);
    }

    #[test]
    fn good_multiple_keys_are_independent() {
        let h = B::default()
            .ok(1, KeyedOp::write("x", "1"), 0, 10, wr())
            .ok(2, KeyedOp::read("y"), 20, 30, rd(None))
            .ok(2, KeyedOp::read("x"), 40, 50, rd(Some("1")))
            .ok(1, KeyedOp::write("y", "1"), 60, 70, wr())
            .ok(2, KeyedOp::read("y"), 80, 90, rd(Some("1")))
            .build();
        let rep = assert_ok(&h);
        assert_eq!(rep.counter("linearizability.keys_checked"), 2);
        assert_eq!(rep.counter("linearizability.ops_checked"), 5);
        assert_eq!(rep.counter("linearizability.max_ops_per_key"), 3);
    }

    #[test]
    fn good_cas_sequence() {
        let h = B::default()
            .ok(1, cas(None, "a"), 0, 10, cr(true))
            .ok(2, cas(None, "x"), 20, 30, cr(false))
            .ok(1, cas(Some("a"), "b"), 40, 50, cr(true))
            .ok(2, cas(Some("a"), "c"), 45, 55, cr(false))
            .ok(3, r(), 60, 70, rd(Some("b")))
            .build();
        assert_ok(&h);
    }

    #[test]
    fn empty_history_is_ok() {
        let rep = assert_ok(&H::default());
        assert_eq!(rep.counter("linearizability.keys_checked"), 0);
        assert!(rep.counters.contains_key("linearizability.inconclusive_keys"));
    }

    #[test]
    fn exhausted_budget_is_inconclusive_not_a_violation() {
        let h = B::default()
            .ok(1, w("a"), 0, 10, wr())
            .ok(2, w("b"), 0, 10, wr())
            .ok(3, r(), 20, 30, rd(Some("zzz")))
            .build();
        let rep = check_registers_with(&h, &LinConfig { step_budget: 2 });
        assert!(rep.ok());
        assert_eq!(rep.counter("linearizability.inconclusive_keys"), 1);
        assert_eq!(rep.counter("linearizability.search_steps"), 2);
        assert!(!check_registers(&h).ok());
    }

    // ---- generated histories ----

    /// SplitMix64: a tiny deterministic generator for test histories.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn chance(&mut self, permille: u64) -> bool {
            self.below(1000) < permille
        }
    }

    #[derive(Debug, Clone, Copy)]
    struct Gen {
        procs: u64,
        keys: u64,
        ops: usize,
        values: u64,
        /// Max latency from invocation to effect and from effect to return.
        latency: u64,
        /// Max think time between a process's ops (0 = back-to-back, equal times).
        think: u64,
        info_permille: u64,
        fail_permille: u64,
    }

    /// A history of sequential clients on atomic registers: every op takes effect at a
    /// point inside its real-time window (the reference execution is linearizable).
    fn generate(g: Gen, seed: u64) -> H {
        let mut rng = Rng(seed);
        let mut free_at: Vec<u64> = (0..g.procs).map(|_| rng.below(g.latency + 1)).collect();
        struct Raw {
            p: u64,
            op: KeyedOp,
            inv: u64,
            lp: u64,
            ret: u64,
            kind: u8, // 0 ok, 1 info+happened, 2 info+not happened, 3 fail
            closed: bool,
            result: Option<RegisterResult>,
        }
        let mut raws: Vec<Raw> = Vec::with_capacity(g.ops);
        let value = |rng: &mut Rng| format!("v{}", rng.below(g.values));
        for _ in 0..g.ops {
            let p = rng.below(g.procs) as usize;
            let inv = free_at[p] + rng.below(g.think + 1);
            let lp = inv + rng.below(g.latency + 1);
            let ret = lp + rng.below(g.latency + 1);
            free_at[p] = ret;
            let key = format!("k{}", rng.below(g.keys));
            let op = match rng.below(100) {
                0..40 => RegisterOp::Read,
                40..75 => RegisterOp::Write(value(&mut rng)),
                _ => RegisterOp::Cas {
                    expected: if rng.chance(200) { None } else { Some(value(&mut rng)) },
                    new: value(&mut rng),
                },
            };
            let kind = if rng.chance(g.fail_permille) {
                3
            } else if rng.chance(g.info_permille) {
                if rng.chance(500) {
                    1
                } else {
                    2
                }
            } else {
                0
            };
            let closed = rng.chance(500);
            raws.push(Raw { p: p as u64, op: KeyedOp { key, op }, inv, lp, ret, kind, closed, result: None });
        }
        // Execute in linearization-point order (ties: generation order, which is
        // chronological per process).
        let mut order: Vec<usize> = (0..raws.len()).collect();
        order.sort_by_key(|&i| (raws[i].lp, i));
        let mut regs: BTreeMap<String, Option<String>> = BTreeMap::new();
        for i in order {
            let raw = &mut raws[i];
            if raw.kind >= 2 {
                continue;
            }
            let cur = regs.entry(raw.op.key.clone()).or_default();
            raw.result = Some(match &raw.op.op {
                RegisterOp::Read => RegisterResult::Read(cur.clone()),
                RegisterOp::Write(v) => {
                    *cur = Some(v.clone());
                    RegisterResult::Written
                }
                RegisterOp::Cas { expected, new } => {
                    let hit = cur == expected;
                    if hit {
                        *cur = Some(new.clone());
                    }
                    RegisterResult::Cas(hit)
                }
            });
        }
        let mut ops: Vec<(u64, usize, Op)> = raws
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let completion = match raw.kind {
                    0 => Some((raw.ret, Outcome::Ok(raw.result.expect("executed")))),
                    3 => Some((raw.ret, Outcome::Fail)),
                    _ if raw.closed => Some((raw.ret, Outcome::Info)),
                    _ => None,
                };
                let op = Operation { id: 0, process: raw.p, op: raw.op, invoke_ns: raw.inv, completion };
                (raw.inv, i, op)
            })
            .collect();
        ops.sort_by_key(|(inv, i, _)| (*inv, *i));
        History {
            ops: ops
                .into_iter()
                .enumerate()
                .map(|(id, (_, _, mut op))| {
                    op.id = id;
                    op
                })
                .collect(),
        }
    }

    fn gen_strategy() -> impl Strategy<Value = (Gen, u64)> {
        (1u64..6, 1u64..4, 1usize..80, 1u64..6, 0u64..30, 0u64..10, 0u64..200, 0u64..150, any::<u64>())
            .prop_map(|(procs, keys, ops, values, latency, think, info, fail, seed)| {
                let g = Gen {
                    procs,
                    keys,
                    ops,
                    values,
                    latency,
                    think,
                    info_permille: info,
                    fail_permille: fail,
                };
                (g, seed)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn prop_generated_linearizable_histories_pass((g, seed) in gen_strategy()) {
            let h = generate(g, seed);
            let rep = check_registers(&h);
            prop_assert!(rep.ok(), "{:#?}", rep.violations);
            prop_assert_eq!(rep.counter("linearizability.inconclusive_keys"), 0);
        }

        #[test]
        fn prop_read_of_unwritten_value_is_reported((g, seed) in gen_strategy(), pick in any::<prop::sample::Index>()) {
            let mut h = generate(g, seed);
            let reads: Vec<usize> = h
                .ops
                .iter()
                .filter(|o| matches!(o.completion, Some((_, Outcome::Ok(RegisterResult::Read(_))))))
                .map(|o| o.id)
                .collect();
            prop_assume!(!reads.is_empty());
            let id = reads[pick.index(reads.len())];
            let Some((_, Outcome::Ok(r))) = &mut h.ops[id].completion else { unreachable!() };
            *r = RegisterResult::Read(Some("never-written".to_string()));
            let rep = check_registers(&h);
            prop_assert!(!rep.ok());
            prop_assert_eq!(rep.violations.len(), 1);
            let m = &rep.violations[0].message;
            prop_assert!(m.contains(&format!("key {:?}", h.ops[id].op.key)), "{}", m);
            prop_assert!(m.contains("\"never-written\""), "{}", m);
        }
    }

    #[test]
    fn generated_histories_are_deterministic() {
        let g = Gen {
            procs: 4,
            keys: 2,
            ops: 200,
            values: 3,
            latency: 20,
            think: 5,
            info_permille: 100,
            fail_permille: 50,
        };
        let h = generate(g, 7);
        let a = check_registers(&h);
        let b = check_registers(&h);
        assert_eq!(a, b);
        assert!(a.ok());
    }

    /// Capacity probe (a measurement, not an assertion on time): one key, `procs`
    /// sequential clients, `ops` operations, `info_permille` unknown outcomes. Prints the
    /// search steps; time it externally. `LIN_PROBE=procs,ops,info_permille[,seed[,bad]]`.
    #[test]
    #[ignore = "capacity measurement; run with LIN_PROBE=... --ignored --nocapture"]
    fn capacity_probe() {
        let spec = std::env::var("LIN_PROBE").unwrap_or_else(|_| "5,1000,0".to_string());
        let v: Vec<u64> = spec.split(',').map(|s| s.trim().parse().expect("number")).collect();
        let g = Gen {
            procs: v[0],
            keys: 1,
            ops: v[1] as usize,
            values: 5,
            latency: 100,
            think: 20,
            info_permille: v[2],
            fail_permille: 0,
        };
        let mut h = generate(g, v.get(3).copied().unwrap_or(1));
        if v.get(4).copied().unwrap_or(0) == 1 {
            // Plant a bad read near the end.
            let id = h
                .ops
                .iter()
                .rev()
                .find(|o| matches!(o.completion, Some((_, Outcome::Ok(RegisterResult::Read(_))))))
                .map(|o| o.id)
                .expect("a read");
            h.ops[id].completion.as_mut().unwrap().1 = Outcome::Ok(rd(Some("never")));
        }
        let rep = check_registers(&h);
        println!(
            "PROBE procs={} ops={} info={}‰ ok={} steps={} inconclusive={} searched={}",
            v[0],
            v[1],
            v[2],
            rep.ok(),
            rep.counter("linearizability.search_steps"),
            rep.counter("linearizability.inconclusive_keys"),
            rep.counter("linearizability.ops_checked"),
        );
    }
}
