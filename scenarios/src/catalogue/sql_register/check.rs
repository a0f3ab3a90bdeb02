//! The invariants of `sql_register` (numbered as in the module documentation), one function
//! per rule, over the history of calls. [`check_sql_register`] runs them all and adds the
//! coverage counters.

use std::collections::{BTreeMap, BTreeSet};

use engine::env::Expect;

use super::OBSERVER;
use crate::checker::rows::describe;
use crate::checker::{check_rows, liveness_after_heal, DbCall, DbOp, DbRes, LinConfig, Refusal, Report};
use crate::checker::{RowWrite, WriteSeen};
use crate::history::{History, Operation, Outcome};
use crate::scenario::Phases;

type H = History<DbOp, DbRes>;
type Op = Operation<DbOp, DbRes>;

/// Every rule, and the coverage counters.
pub fn check_sql_register(history: &H, phases: &Phases, lin: &LinConfig) -> Report {
    let mut report = check_rows(history, lin);
    report.merge(check_fencing(history));
    report.merge(check_atomicity(history));
    report.merge(liveness_after_heal(history, phases, |p| p != OBSERVER));
    report.merge(coverage(history));
    report
}

/// How many stale-fence acceptances [`check_fencing`] describes one by one (the rest are
/// counted in one more violation and in `fencing.stale_accepted`).
const FENCING_VIOLATIONS_SHOWN: u64 = 8;

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// `(instance, key)` of a row.
type RowId<'a> = (&'a str, &'a str);

/// A moment from which a row's fence was known to be at least `fence`.
#[derive(Debug, Clone, Copy)]
struct FenceSeen {
    at_ns: u64,
    fence: u64,
    op: usize,
}

/// Rule 2, **fencing**: an operation carrying fence `f` (a `Put`, `Delete`, `RaiseFence` or
/// `Guard`) is never accepted on a row after an answer showed the row's fence above `f` —
/// an answer received before the operation was invoked: a committed raise or write (the row's
/// fence is then at least its fence), a read (the row's fence), a `Fenced` refusal (the
/// `row_fence` it names). Fences never go down, so such an operation must be refused.
pub fn check_fencing<'h>(history: &'h H) -> Report {
    const CHECKER: &str = "fencing";
    let mut report = Report::default();
    let mut seen: BTreeMap<RowId<'_>, Vec<FenceSeen>> = BTreeMap::new();
    let mut accepted: Vec<(RowId<'_>, u64, &Op)> = Vec::new();
    for o in &history.ops {
        let Some((at_ns, Outcome::Ok(res))) = &o.completion else { continue };
        let instance = o.op.instance.as_str();
        let mut saw = |key: &'h str, fence: u64| {
            seen.entry((instance, key)).or_default().push(FenceSeen { at_ns: *at_ns, fence, op: o.id });
        };
        match (&o.op.call, res) {
            (DbCall::Get { key }, DbRes::Row(Some(row))) => saw(key, row.fence),
            (DbCall::Transact(ops), DbRes::Written(results)) => {
                for (w, r) in ops.iter().zip(results) {
                    match (w, r) {
                        (RowWrite::RaiseFence { .. }, WriteSeen::RaiseFence { fence, .. }) => {
                            saw(w.key(), *fence)
                        }
                        (RowWrite::Put { .. } | RowWrite::Delete { .. }, _) => saw(w.key(), w.fence()),
                        _ => {}
                    }
                }
            }
            (DbCall::Transact(ops), DbRes::Refused(Refusal::Fenced { op_index, row_fence })) => {
                if let Some(w) = ops.get(*op_index) {
                    saw(w.key(), *row_fence);
                }
            }
            _ => {}
        }
        if let (DbCall::Transact(ops), DbRes::Written(_)) = (&o.op.call, res) {
            for w in ops {
                accepted.push(((instance, w.key()), w.fence(), o));
            }
        }
    }
    // Per row: evidence by time, with the running maximum.
    let mut highest: BTreeMap<RowId<'_>, Vec<FenceSeen>> = BTreeMap::new();
    for (row, mut v) in seen {
        v.sort_by_key(|s| (s.at_ns, s.op));
        let mut best: Option<FenceSeen> = None;
        let running = v
            .into_iter()
            .map(|s| {
                if best.is_none_or(|b| s.fence > b.fence) {
                    best = Some(s);
                }
                FenceSeen { at_ns: s.at_ns, ..best.expect("set above") }
            })
            .collect();
        highest.insert(row, running);
    }
    let (mut checked, mut stale) = (0u64, 0u64);
    for (row, fence, o) in accepted {
        checked += 1;
        let Some(evidence) = highest.get(&row) else { continue };
        let before = evidence.partition_point(|s| s.at_ns < o.invoke_ns);
        let Some(known) = before.checked_sub(1).map(|i| evidence[i]) else { continue };
        if known.fence > fence {
            stale += 1;
            if stale > FENCING_VIOLATIONS_SHOWN {
                continue;
            }
            let by = history.ops.get(known.op).map(describe).unwrap_or_default();
            report.violation(
                CHECKER,
                format!(
                    "{}/{}: accepted with fence {fence} although fence {} was acknowledged on the row \
                     at {:.3}s, before it was invoked at {:.3}s:\n  accepted: {}\n  acknowledged by: {by}",
                    row.0,
                    row.1,
                    known.fence,
                    secs(known.at_ns),
                    secs(o.invoke_ns),
                    describe(o),
                ),
            );
        }
    }
    if stale > FENCING_VIOLATIONS_SHOWN {
        report.violation(
            CHECKER,
            format!(
                "... and {} more operations accepted with a stale fence",
                stale - FENCING_VIOLATIONS_SHOWN
            ),
        );
    }
    report.count("fencing.accepted_ops_checked", checked);
    report.count("fencing.stale_accepted", stale);
    report
}

/// Rule 3, **atomicity**: a transaction takes effect wholly or not at all. Checked where the
/// history can tell directly: each versioned `Put` of a `transact` (`Expect::Version(v)`)
/// can only land at version `v + 1` of its row, with a value no other call writes, and a
/// version names one value for ever, so what any answer showed at that version (a read, a
/// committed write's new version, a raise's row) tells whether the part took effect. A
/// refused or unsent transaction must show in none of its parts; one with an unknown outcome
/// must not show in one part while another part's landing version shows a different value.
/// (A `Delete` leaves no value of its own to recognise, so it is left to rule 1.)
pub fn check_atomicity(history: &H) -> Report {
    const CHECKER: &str = "atomicity";
    let mut report = Report::default();
    // (instance, key, version) -> values seen there (`None`: deleted).
    let mut at: BTreeMap<(&str, &str, u64), BTreeSet<Option<&str>>> = BTreeMap::new();
    for o in &history.ops {
        let Some((_, Outcome::Ok(res))) = &o.completion else { continue };
        let instance = o.op.instance.as_str();
        match (&o.op.call, res) {
            (DbCall::Get { key }, DbRes::Row(Some(row))) => {
                at.entry((instance, key, row.version)).or_default().insert(Some(&row.value));
            }
            (DbCall::Transact(ops), DbRes::Written(results)) => {
                for (w, r) in ops.iter().zip(results) {
                    let (version, value) = match (w, r) {
                        (RowWrite::Put { value, .. }, WriteSeen::Put { version }) => {
                            (*version, Some(value.as_str()))
                        }
                        (RowWrite::Delete { .. }, WriteSeen::Delete { version, .. }) => (*version, None),
                        (_, WriteSeen::RaiseFence { row: Some(row), .. }) => {
                            (row.version, Some(row.value.as_str()))
                        }
                        _ => continue,
                    };
                    at.entry((instance, w.key(), version)).or_default().insert(value);
                }
            }
            _ => {}
        }
    }
    let (mut multi_unknown, mut resolved) = (0u64, 0u64);
    for o in &history.ops {
        let DbCall::Transact(ops) = &o.op.call else { continue };
        // Each versioned part: did it show (Some(true)), did another value show at its
        // landing version (Some(false)), or nothing seen there (None).
        let parts: Vec<(&RowWrite, Option<bool>)> = ops
            .iter()
            .filter_map(|w| {
                let RowWrite::Put { expect: Expect::Version(v), value, .. } = w else { return None };
                let value = Some(value.as_str());
                let seen = at.get(&(o.op.instance.as_str(), w.key(), v + 1));
                let shown = seen.map(|s| s.contains(&value));
                let other = seen.is_some_and(|s| s.iter().any(|x| *x != value));
                Some((
                    w,
                    if shown == Some(true) {
                        Some(true)
                    } else if other {
                        Some(false)
                    } else {
                        None
                    },
                ))
            })
            .collect();
        if parts.is_empty() {
            continue;
        }
        let definitely_not = matches!(o.outcome(), Outcome::Fail | Outcome::Ok(DbRes::Refused(_)));
        if definitely_not {
            for (w, shown) in &parts {
                if *shown == Some(true) {
                    report.violation(
                        CHECKER,
                        format!(
                            "{}: a transaction that was refused or never sent took effect ({w} shows):\n  {}",
                            o.op.instance,
                            describe(o)
                        ),
                    );
                }
            }
        } else if matches!(o.outcome(), Outcome::Info) && parts.len() >= 2 {
            multi_unknown += 1;
            let applied = parts.iter().find(|(_, s)| *s == Some(true));
            let missing = parts.iter().find(|(_, s)| *s == Some(false));
            if applied.is_some() || missing.is_some() {
                resolved += 1;
            }
            if let (Some((a, _)), Some((m, _))) = (applied, missing) {
                report.violation(
                    CHECKER,
                    format!(
                        "{}: a transaction took effect in part ({a} shows, {m} does not: another value \
                         holds its version):\n  {}",
                        o.op.instance,
                        describe(o)
                    ),
                );
            }
        }
    }
    report.count("atomicity.multi_row_unknown", multi_unknown);
    report.count("atomicity.multi_row_unknown_resolved", resolved);
    report
}

/// Coverage: what the history shows happened (`sql_register.*`).
fn coverage(history: &H) -> Report {
    let mut r = Report::default();
    for name in [
        "calls",
        "reads",
        "committed",
        "fenced",
        "version_mismatch",
        "not_found",
        "maybe_applied",
        "unreachable",
        "takeovers",
        "multi_row_committed",
        "guards_committed",
    ] {
        r.count(&format!("sql_register.{name}"), 0);
    }
    for o in history.ops.iter().filter(|o| o.process != OBSERVER) {
        r.count("sql_register.calls", 1);
        let what = match o.outcome() {
            Outcome::Info => "maybe_applied",
            Outcome::Fail => "unreachable",
            Outcome::Ok(DbRes::Refused(Refusal::Fenced { .. })) => "fenced",
            Outcome::Ok(DbRes::Refused(Refusal::VersionMismatch { .. })) => "version_mismatch",
            Outcome::Ok(DbRes::Refused(Refusal::NotFound { .. })) => "not_found",
            Outcome::Ok(DbRes::Row(_)) => "reads",
            Outcome::Ok(DbRes::Written(_)) => "committed",
        };
        r.count(&format!("sql_register.{what}"), 1);
        if let (DbCall::Transact(ops), Outcome::Ok(DbRes::Written(_))) = (&o.op.call, o.outcome()) {
            if ops.iter().filter(|w| w.writes_data()).count() >= 2 {
                r.count("sql_register.multi_row_committed", 1);
            }
            if ops.iter().any(|w| matches!(w, RowWrite::Guard { .. })) {
                r.count("sql_register.guards_committed", 1);
            }
            if matches!(ops.as_slice(), [RowWrite::RaiseFence { .. }]) {
                r.count("sql_register.takeovers", 1);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests;
