//! The search as it was before optional operations got their own treatment (commit
//! ba2fc73): every operation, `Info` ones included, in one event list, tried in event order,
//! memoised on (set of linearized operations, state). Kept, for tests only, as the reference
//! the faster [`super::search`] is compared against: it is simple enough to trust, and the
//! two must agree on every verdict.

use std::collections::{HashMap, HashSet};

use crate::history::ProcessId;

use super::{Model, SearchOp, SearchOutcome};

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
pub fn reference_search<M: Model>(
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
