//! The search as it was before optional operations got their own treatment (commit
//! ba2fc73): every operation, `Info` ones included, in one event list, tried in event order,
//! memoised on (set of linearized operations, state). Kept, for tests only, as the reference
//! the faster [`super::search`] is compared against: it is simple enough to trust, and the
//! two must agree on every verdict.

use std::collections::{HashMap, HashSet};

use crate::history::ProcessId;

use super::{Model, SearchOp, SearchOutcome};

use super::search::{compact_into, Events, NIL};

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
