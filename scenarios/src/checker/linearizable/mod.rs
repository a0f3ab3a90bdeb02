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
                    report.violation_with_ops(
                        CHECKER,
                        format!(
                            "key {key:?}: malformed operation {} (result kind does not match the \
                             operation; left out of the search)",
                            describe(o)
                        ),
                        vec![o.id],
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

    // Before any search: a read of a value that no write or compare-and-set of this key
    // (completed or of unknown outcome) could have stored is a violation in every order. This
    // needs no search budget, so such a key is never left inconclusive.
    if let Some(bad) = read_of_unwritten_value(&searched) {
        report.count(&format!("{CHECKER}.non_linearizable_keys"), 1);
        report.violation_with_ops(
            CHECKER,
            format!(
                "key {key:?} is not linearizable: {} read a value no write or compare-and-set of this key \
                 could have stored",
                describe(bad)
            ),
            vec![bad.id],
        );
        return;
    }

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
            // The operations none of which can go next: where the history stops making sense.
            let mut involved: Vec<usize> = stuck.iter().map(|&i| searched[i].id).collect();
            involved.sort_unstable();
            report.violation_with_ops(CHECKER, m.trim_end().to_string(), involved);
        }
    }
}

/// The first successful read (by id) of a value that none of `ops` writes: not a `Write`'s
/// value nor a compare-and-set's new value (failed operations are already left out).
fn read_of_unwritten_value<'a>(
    ops: &[&'a Operation<KeyedOp, RegisterResult>],
) -> Option<&'a Operation<KeyedOp, RegisterResult>> {
    use super::register::RegisterOp;
    let written: std::collections::BTreeSet<&str> = ops
        .iter()
        .filter_map(|o| match &o.op.op {
            RegisterOp::Write(v) | RegisterOp::Cas { new: v, .. } => Some(v.as_str()),
            RegisterOp::Read => None,
        })
        .collect();
    ops.iter().copied().find(|o| {
        matches!(o.outcome(), Outcome::Ok(RegisterResult::Read(Some(v))) if !written.contains(v.as_str()))
    })
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
mod tests;
