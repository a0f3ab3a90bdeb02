//! The WGL search (see the module doc of [`super`] for what it decides).
//!
//! Events (invocations and returns) are sorted by time in a doubly linked list. The search
//! repeatedly linearizes a pending operation whose invocation comes before the first return
//! still in the list, if the model accepts it in the current state and the pair
//! *(set of linearized operations, model state)* has not been explored before (the memo
//! cache: a bitset plus the state); reaching a return event means its operation should
//! already have been linearized, so the search backtracks. It succeeds once every operation
//! with a finite return is linearized. The search is deterministic (the cache is only ever
//! queried for membership), so results never depend on hash iteration order.
//!
//! # Identical optional operations
//! An *optional* operation (return +∞: `Info` or never completed) may be linearized at any
//! time after its invocation, or never, so every subset of the pending ones that has been
//! linearized is a distinct configuration. Optional operations with the same operation and
//! result are interchangeable, so they form a *chain* in invocation order and one may only be
//! linearized once its chain predecessor is: the linearized members of a chain are always a
//! prefix of it, and `k` identical pending writes cost `k + 1` configurations instead of
//! `2^k`. Exact: if a later member `b` is linearized where an earlier `a` is not, `a` could go
//! there instead (it was invoked no later, and nothing has to follow an operation that never
//! returns), and swapping `a` for `b`, or their places if `a` comes later, changes no state.
//! Two members invoked at the same instant are only chained if the earlier one's
//! same-process predecessors are among the later one's (else `a` might not be allowed where
//! `b` is). The test `search_agrees_with_the_reference_search_on_info_heavy_histories`
//! compares the verdicts with the search without chains on thousands of random histories.

use std::collections::{HashMap, HashSet};

use crate::history::ProcessId;

use super::{Model, SearchOp, SearchOutcome};

pub(super) const NIL: usize = usize::MAX;

/// Doubly linked list of events: node `2i` = call of op `i`, `2i + 1` = its return; the
/// head sentinel is node `2n`.
pub(super) struct Events {
    pub(super) next: Vec<usize>,
    pub(super) prev: Vec<usize>,
    pub(super) head: usize,
}

impl Events {
    pub(super) fn new<O, R>(ops: &[SearchOp<O, R>]) -> Events {
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

    pub(super) fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    pub(super) fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Removes op `i`'s call and return.
    pub(super) fn lift(&mut self, i: usize) {
        self.unlink(2 * i);
        self.unlink(2 * i + 1);
    }

    /// Undoes [`Events::lift`] (must be called in reverse order of lifts).
    pub(super) fn unlift(&mut self, i: usize) {
        self.relink(2 * i + 1);
        self.relink(2 * i);
    }

    /// Ops whose calls precede the first return in the list, and that return's op.
    pub(super) fn frontier(&self) -> (Vec<usize>, Option<usize>) {
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
pub(super) fn compact_into(bits: &[u64], out: &mut Vec<u64>) {
    out.clear();
    let k = bits.iter().take_while(|&&w| w == u64::MAX).count();
    let last = bits.iter().rposition(|&w| w != 0).map_or(k, |l| l + 1).max(k);
    out.push(k as u64);
    out.extend_from_slice(&bits[k..last]);
}

/// Searches for a linearization of `ops` (given in invocation order) under `model`, within
/// `budget` steps.
pub fn search<M: Model>(model: &M, ops: &[SearchOp<M::Op, M::Result>], budget: u64) -> SearchOutcome<M::State>
where
    M::Op: PartialEq,
    M::Result: PartialEq,
{
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

    // Chain predecessor of each optional op: the previous identical optional op.
    let mut chain_pred = vec![NIL; n];
    {
        let mut order: Vec<usize> = (0..n).filter(|&i| ops[i].return_ns.is_none()).collect();
        order.sort_unstable_by_key(|&i| (ops[i].invoke_ns, i));
        let mut tails: Vec<usize> = Vec::new();
        for &b in &order {
            let same = |a: usize| ops[a].op == ops[b].op && ops[a].result == ops[b].result;
            let may_lead = |a: usize| {
                ops[a].invoke_ns < ops[b].invoke_ns || preds[a].iter().all(|p| preds[b].contains(p))
            };
            match tails.iter().rposition(|&a| same(a)) {
                Some(c) if may_lead(tails[c]) => {
                    chain_pred[b] = tails[c];
                    tails[c] = b;
                }
                _ => tails.push(b),
            }
        }
    }
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
            let next_state = if preds[i].iter().all(|&a| is_set(&linearized, a))
                && (chain_pred[i] == NIL || is_set(&linearized, chain_pred[i]))
            {
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
