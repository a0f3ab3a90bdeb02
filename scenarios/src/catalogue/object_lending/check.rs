//! `object_lending`'s checks, one function per numbered invariant of the scenario doc.

use std::collections::{BTreeMap, BTreeSet};

use super::history::{ActSpan, InvHistory, InvOp, InvRes, Owner, Received};
use crate::checker::Report;
use crate::history::Outcome;
use crate::scenario::Phases;

/// The final inventories: user -> `Some((gold, items))` if the user has one, `None` if not;
/// a user missing from the map could not be read.
pub type Finals = BTreeMap<String, Option<Holdings>>;
/// Every item's count, gold under `"gold"`.
pub type Holdings = BTreeMap<String, i64>;

/// Largest set of sums the exactly-once check explores for one (user, item) before giving up
/// on it (counted as `object_lending.subset_skipped`).
const SUBSETS_MAX: usize = 1 << 16;
/// After the heal, requests invoked this much later must all complete definitely: by then a
/// killed server's session (6 s) has expired and its objects can be taken.
pub const SETTLE_MS: u64 = 10_000;

const MS: u64 = 1_000_000;

/// A new user's holdings (`game::inventory`).
pub fn starting_holdings() -> Holdings {
    let mut h: Holdings = game::inventory::starting_items();
    h.insert(game::inventory::GOLD.to_string(), game::inventory::STARTING_GOLD);
    h
}

/// What an applied operation changes: (user, item) -> delta.
pub fn deltas(op: &InvOp) -> BTreeMap<(String, String), i64> {
    let mut d: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut add = |u: &str, i: &str, n: i64| *d.entry((u.to_string(), i.to_string())).or_insert(0) += n;
    match op {
        InvOp::Gift { from, to, item, count } => {
            add(from, item, -count);
            add(to, item, *count);
        }
        InvOp::Trade { user, with, give, take } => {
            for (i, n) in give {
                add(user, i, -n);
                add(with, i, *n);
            }
            for (i, n) in take {
                add(with, i, -n);
                add(user, i, *n);
            }
        }
        InvOp::Login { .. } | InvOp::Inventory { .. } => {}
    }
    d
}

fn is_change(op: &InvOp) -> bool {
    matches!(op, InvOp::Gift { .. } | InvOp::Trade { .. })
}

/// Invariant 1, **conservation**: over the users that have an inventory, every item's total
/// (gold included) is what they started with; no count is negative. Also on every inventory
/// read (no count negative) — a read is one user's committed state.
pub fn check_conservation(history: &InvHistory, finals: &Finals) -> Report {
    let mut report = Report::default();
    let present: Vec<&Holdings> = finals.values().flatten().collect();
    let start = starting_holdings();
    let mut totals: Holdings = BTreeMap::new();
    for h in &present {
        for (item, n) in *h {
            *totals.entry(item.clone()).or_insert(0) += n;
        }
    }
    let items: BTreeSet<&String> = totals.keys().chain(start.keys()).collect();
    for item in items {
        let want = start.get(item).copied().unwrap_or(0) * present.len() as i64;
        let got = totals.get(item).copied().unwrap_or(0);
        if got != want {
            report.violation(
                "conservation",
                format!(
                    "{item}: {got} over {} inventories after the run, {want} at the start",
                    present.len()
                ),
            );
        }
    }
    for (user, h) in finals {
        for (item, n) in h.iter().flatten() {
            if *n < 0 {
                report.violation("conservation", format!("user {user}: {n} {item} after the run"));
            }
        }
    }
    for op in &history.ops {
        if let (InvOp::Inventory { user }, Outcome::Ok(InvRes::Read { gold, items })) = (&op.op, op.outcome())
        {
            if *gold < 0 || items.values().any(|n| *n < 0) {
                report.violation("conservation", format!("user {user}: read {gold} gold and {items:?}"));
            }
        }
    }
    report.count("object_lending.inventories", present.len() as u64);
    report
}

/// Invariant 2, **exactly once**: for every user with an inventory and every item, the final
/// count is the starting one plus every applied operation's delta plus the deltas of some
/// subset of the unknown ones; failed and refused operations add nothing. A user without an
/// inventory was in no applied operation.
pub fn check_exactly_once(history: &InvHistory, finals: &Finals) -> Report {
    let mut report = Report::default();
    let start = starting_holdings();
    let mut applied: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut unknown: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for op in history.ops.iter().filter(|o| is_change(&o.op)) {
        match op.outcome() {
            Outcome::Ok(InvRes::Applied) => {
                for (k, d) in deltas(&op.op) {
                    if finals.get(&k.0) == Some(&None) {
                        report.violation(
                            "exactly_once",
                            format!("op {} ({:?}) applied, but user {} has no inventory", op.id, op.op, k.0),
                        );
                    }
                    *applied.entry(k).or_insert(0) += d;
                }
            }
            Outcome::Info => {
                for (k, d) in deltas(&op.op) {
                    unknown.entry(k).or_default().push(d);
                }
            }
            _ => {}
        }
    }
    for (user, h) in finals {
        let Some(h) = h else { continue };
        let items: BTreeSet<&String> = h.keys().chain(start.keys()).collect();
        let mut keys: BTreeSet<(String, String)> =
            items.into_iter().map(|i| (user.clone(), i.clone())).collect();
        keys.extend(applied.keys().chain(unknown.keys()).filter(|k| &k.0 == user).cloned());
        for key in keys {
            let got = h.get(&key.1).copied().unwrap_or(0);
            let base = start.get(&key.1).copied().unwrap_or(0) + applied.get(&key).copied().unwrap_or(0);
            let unknowns = unknown.get(&key).map_or(&[][..], Vec::as_slice);
            match subset_reaches(unknowns, got - base) {
                Some(true) => {}
                Some(false) => report.violation(
                    "exactly_once",
                    format!(
                        "user {user}, {}: {got} after the run; start + applied ops = {base}, and no subset of the {} unknown ops' deltas {unknowns:?} makes up {}",
                        key.1,
                        unknowns.len(),
                        got - base
                    ),
                ),
                None => report.count("object_lending.subset_skipped", 1),
            }
        }
    }
    report
}

/// Whether some subset of `deltas` sums to `target` (`None`: too many sums to explore).
fn subset_reaches(deltas: &[i64], target: i64) -> Option<bool> {
    let mut sums: BTreeSet<i64> = BTreeSet::from([0]);
    for d in deltas {
        let more: Vec<i64> = sums.iter().map(|s| s + d).collect();
        sums.extend(more);
        if sums.len() > SUBSETS_MAX {
            return None;
        }
    }
    Some(sums.contains(&target))
}

/// Invariant 3, **single owner**: for every object, the acting spans of different owner
/// instances (server incarnation, fence) never overlap in true time, and each owner instance
/// that starts acting has a higher fence than the ones before it (the fence grows with every
/// change of owner).
pub fn check_single_owner(acts: &BTreeMap<String, BTreeMap<Owner, ActSpan>>) -> Report {
    let mut report = Report::default();
    for (object, owners) in acts {
        report.count("object_lending.owner_instances", owners.len() as u64);
        let mut spans: Vec<(&Owner, &ActSpan)> = owners.iter().collect();
        spans.sort_by_key(|(o, s)| (s.start_ns, s.end_ns, **o));
        for pair in spans.windows(2) {
            let ((a, sa), (b, sb)) = (pair[0], pair[1]);
            if b.1 <= a.1 {
                report.violation(
                    "single_owner",
                    format!(
                        "{object}: server process {} started acting at {:.3}s with fence {}, not above fence {} of server process {} (from {:.3}s)",
                        b.0, secs(sb.start_ns), b.1, a.1, a.0, secs(sa.start_ns)
                    ),
                );
            }
        }
        let mut reach: Option<(&Owner, &ActSpan)> = None;
        for (owner, span) in spans {
            report.count("object_lending.acts", span.acts);
            match reach {
                Some((po, ps)) if span.start_ns < ps.end_ns => {
                    report.violation(
                        "single_owner",
                        format!(
                            "{object}: server process {} (fence {}) acted {:.3}s..{:.3}s while server process {} (fence {}) acted {:.3}s..{:.3}s",
                            owner.0, owner.1, secs(span.start_ns), secs(span.end_ns), po.0, po.1, secs(ps.start_ns), secs(ps.end_ns)
                        ),
                    );
                    if span.end_ns > ps.end_ns {
                        reach = Some((owner, span));
                    }
                }
                Some((_, ps)) if span.end_ns <= ps.end_ns => {}
                _ => reach = Some((owner, span)),
            }
        }
    }
    report
}

/// Invariant 4, **effects after commit**: every `sc_gift_received` matches a gift (same
/// giver, recipient, item and count) that committed or may have: as many receipts of one
/// kind as such gifts at most.
pub fn check_effects(history: &InvHistory, received: &[Received]) -> Report {
    let mut report = Report::default();
    let mut allowed: BTreeMap<(&str, &str, &str, i64), i64> = BTreeMap::new();
    for op in &history.ops {
        if let InvOp::Gift { from, to, item, count } = &op.op {
            if matches!(op.outcome(), Outcome::Ok(InvRes::Applied) | Outcome::Info) {
                *allowed.entry((from, to, item, *count)).or_insert(0) += 1;
            }
        }
    }
    let mut got: BTreeMap<(&str, &str, &str, i64), (i64, u64)> = BTreeMap::new();
    for r in received {
        let e = got.entry((&r.from, &r.user, &r.item, r.count)).or_insert((0, r.at_ns));
        e.0 += 1;
    }
    for (k, (n, first_ns)) in got {
        let ok = allowed.get(&k).copied().unwrap_or(0);
        if n > ok {
            report.violation(
                "effects",
                format!(
                    "user {} got sc_gift_received {{from {}, {} x{}}} {n} times (first at {:.3}s), but only {ok} such gifts committed or may have",
                    k.1, k.0, k.2, k.3, secs(first_ns)
                ),
            );
        }
    }
    report.count("object_lending.gifts_received", received.len() as u64);
    report
}

/// Invariant 5, **liveness** (with [`crate::checker::liveness_after_heal`]): every gift or
/// trade invoked [`SETTLE_MS`] after the heal completes definitely (committed or refused by
/// the game's rules), within the liveness bound (if the run lasted that long after it).
pub fn check_settled(history: &InvHistory, phases: &Phases) -> Report {
    let mut report = Report::default();
    let from = phases.heal_at.as_nanos() as u64 + SETTLE_MS * MS;
    let bound = phases.liveness_bound.as_nanos() as u64;
    let end = phases.end_at.as_nanos() as u64;
    let mut flagged = 0;
    // Ops invoked less than the bound before the end had no time to complete: not judged.
    for op in
        history.ops.iter().filter(|o| is_change(&o.op) && o.invoke_ns >= from && o.invoke_ns + bound <= end)
    {
        let late = match &op.completion {
            Some((t, Outcome::Ok(_))) => *t > op.invoke_ns + bound,
            _ => true,
        };
        if late {
            flagged += 1;
            if flagged <= 3 {
                report.liveness_violation(
                    "liveness",
                    format!(
                        "op {} by process {} at {:.3}s ({:?}): {:?}, after the heal had settled",
                        op.id,
                        op.process,
                        secs(op.invoke_ns),
                        op.op,
                        op.completion.as_ref().map(|(t, o)| (secs(*t), o))
                    ),
                );
            }
        }
    }
    report
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;

    fn op(id: usize, op: InvOp, outcome: Option<Outcome<InvRes>>) -> Operation<InvOp, InvRes> {
        Operation { id, process: 1, op, invoke_ns: 0, completion: outcome.map(|o| (1, o)) }
    }

    fn gift(from: &str, to: &str, item: &str, count: i64) -> InvOp {
        InvOp::Gift { from: from.into(), to: to.into(), item: item.into(), count }
    }

    fn finals(v: &[(&str, i64, i64, i64)]) -> Finals {
        v.iter()
            .map(|(u, g, p, s)| {
                let mut h = Holdings::new();
                h.insert("gold".into(), *g);
                h.insert("potion".into(), *p);
                if *s != 0 {
                    h.insert("sword".into(), *s);
                }
                (u.to_string(), Some(h))
            })
            .collect()
    }

    #[test]
    fn an_applied_gift_and_an_unknown_one_pass_and_a_lost_half_is_caught() {
        let h = InvHistory {
            ops: vec![
                op(0, gift("0", "1", "gold", 10), Some(Outcome::Ok(InvRes::Applied))),
                op(1, gift("1", "0", "sword", 1), None),
                op(2, gift("1", "0", "potion", 3), Some(Outcome::Fail)),
            ],
        };
        let ok = finals(&[("0", 90, 10, 2), ("1", 110, 10, 0)]);
        assert!(check_conservation(&h, &ok).ok());
        assert!(check_exactly_once(&h, &ok).ok(), "{:?}", check_exactly_once(&h, &ok).violations);
        // The failed gift applied: conservation holds, exactly-once does not.
        let applied_failed = finals(&[("0", 90, 13, 1), ("1", 110, 7, 1)]);
        assert!(check_conservation(&h, &applied_failed).ok());
        assert!(!check_exactly_once(&h, &applied_failed).ok());
        // Half a gift: conservation breaks.
        let half = finals(&[("0", 90, 10, 1), ("1", 100, 10, 1)]);
        assert!(!check_conservation(&h, &half).ok());
    }

    #[test]
    fn overlapping_owners_are_caught_and_successive_ones_pass() {
        let span = |s, e| ActSpan { start_ns: s, end_ns: e, acts: 1 };
        let mut acts = BTreeMap::new();
        acts.insert(
            "inventory/0".to_string(),
            BTreeMap::from([((1, 5), span(0, 10)), ((2, 9), span(11, 20))]),
        );
        assert!(check_single_owner(&acts).ok());
        acts.get_mut("inventory/0").unwrap().insert((3, 12), span(15, 16));
        assert_eq!(check_single_owner(&acts).violations.len(), 1);
        // Owners taking turns under one fence (no fence at all).
        let mut acts = BTreeMap::new();
        acts.insert(
            "inventory/1".to_string(),
            BTreeMap::from([((1, 0), span(0, 10)), ((2, 0), span(11, 20))]),
        );
        let r = check_single_owner(&acts);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].message.contains("not above fence 0"));
    }

    #[test]
    fn a_receipt_needs_a_gift_that_committed_or_may_have() {
        let h = InvHistory {
            ops: vec![
                op(0, gift("0", "1", "gold", 10), Some(Outcome::Ok(InvRes::Applied))),
                op(
                    1,
                    gift("0", "1", "sword", 1),
                    Some(Outcome::Ok(InvRes::Refused("not enough items".into()))),
                ),
            ],
        };
        let r = |item: &str, count| Received {
            user: "1".into(),
            from: "0".into(),
            item: item.into(),
            count,
            at_ns: 5,
        };
        assert!(check_effects(&h, &[r("gold", 10)]).ok());
        assert!(!check_effects(&h, &[r("gold", 10), r("gold", 10)]).ok());
        assert!(!check_effects(&h, &[r("sword", 1)]).ok());
    }
}
