//! Checkers: invariants over a finished [`History`](crate::history::History) (and, for some,
//! the final state), each producing a [`Report`].
//!
//! A checker never panics on a bad history: it records a [`Violation`] naming the operations
//! involved, and fills coverage/size counters so a run can prove the checked paths actually
//! ran. Reports from several checkers (or several runs) are combined with [`Report::merge`].
//!
//! Every violation has a [`ViolationClass`]: **safety** (something bad happened: a stale
//! read, two holders, a duplicate delivery) or **liveness** (something good did not happen
//! in time after the heal). Runners report the two apart (the simulator with its own exit
//! code each), because a liveness failure may be a bound set too tight while a safety
//! violation never is.
//!
//! # Checkers
//! - [`linearizable`]: per-key linearizability of keyed registers with compare-and-set
//!   ([`check_registers`]), over the model in [`register`]. Its module documentation states
//!   how large a history it handles.
//! - [`rows`]: linearizability of calls on SQL instances' versioned, fenced rows
//!   ([`check_rows`]), one instance at a time with the `Db` port's rules as the model (the
//!   same search).
//! - [`liveness_after_heal`]: every process active after the heal makes progress within the bound.
//!
//! # Counter naming
//! Counters are named `checker.what` (e.g. `linearizability.keys_checked`). [`Report::merge`]
//! adds counters, except those whose last dot-separated segment starts with `max_`
//! (e.g. `linearizability.max_ops_per_key`), which keep the maximum.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod linearizable;
mod liveness;
pub mod register;
pub mod rows;

pub use linearizable::{check_registers, check_registers_with, LinConfig};
pub use liveness::liveness_after_heal;
pub use register::{KeyedOp, RegisterOp, RegisterResult};
pub use rows::{check_rows, DbCall, DbOp, DbRes, Refusal, RowSeen, RowWrite, WriteSeen};

/// Whether a violation broke a safety or a liveness property.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationClass {
    /// Something that must never happen did (at any time of the run).
    #[default]
    Safety,
    /// Progress that must come within a bound after the heal did not.
    Liveness,
}

/// One broken invariant, found by a checker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Name of the checker that found it (e.g. `"linearizability"`).
    pub checker: String,
    /// Human-readable explanation naming the operations involved (ids, processes, times).
    pub message: String,
    #[serde(default)]
    pub class: ViolationClass,
    /// Ids of the history operations the violation is about, where the checker knows them
    /// (the linearizability checkers: the operations none of which can be linearized next);
    /// empty otherwise. Pictures of the run highlight them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<usize>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.checker, self.message)
    }
}

/// What a checker concluded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Broken invariants; empty means the history passed.
    pub violations: Vec<Violation>,
    /// Coverage/size counters (a `BTreeMap` for deterministic order).
    pub counters: BTreeMap<String, u64>,
}

impl Report {
    /// True iff no violation was found.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Appends `other`'s violations and combines its counters: summed, except `max_*`
    /// counters (see the module documentation), which keep the maximum.
    pub fn merge(&mut self, other: Report) {
        self.violations.extend(other.violations);
        for (name, n) in other.counters {
            if is_max_counter(&name) {
                self.count_max(&name, n);
            } else {
                self.count(&name, n);
            }
        }
    }

    /// Records a safety violation found by `checker`.
    pub fn violation(&mut self, checker: &str, msg: impl Into<String>) {
        self.push(ViolationClass::Safety, checker, msg);
    }

    /// Records a liveness failure found by `checker`.
    pub fn liveness_violation(&mut self, checker: &str, msg: impl Into<String>) {
        self.push(ViolationClass::Liveness, checker, msg);
    }

    /// Records a violation of `class` found by `checker`.
    pub fn push(&mut self, class: ViolationClass, checker: &str, msg: impl Into<String>) {
        self.push_with_ops(class, checker, msg, Vec::new());
    }

    /// Records a safety violation found by `checker` about the history operations `ops` (ids).
    pub fn violation_with_ops(&mut self, checker: &str, msg: impl Into<String>, ops: Vec<usize>) {
        self.push_with_ops(ViolationClass::Safety, checker, msg, ops);
    }

    /// Records a violation of `class` found by `checker` about the history operations `ops`.
    pub fn push_with_ops(
        &mut self,
        class: ViolationClass,
        checker: &str,
        msg: impl Into<String>,
        ops: Vec<usize>,
    ) {
        self.violations.push(Violation { checker: checker.to_string(), message: msg.into(), class, ops });
    }

    /// True iff some violation is a safety violation.
    pub fn has_safety_violation(&self) -> bool {
        self.violations.iter().any(|v| v.class == ViolationClass::Safety)
    }

    /// The worst class among the violations (`None` if the report passed): safety over liveness.
    pub fn worst_class(&self) -> Option<ViolationClass> {
        self.violations.iter().map(|v| v.class).min()
    }

    /// Adds `n` to counter `name` (creating it at 0 first; `n = 0` just makes it visible).
    pub fn count(&mut self, name: &str, n: u64) {
        let c = self.counters.entry(name.to_string()).or_insert(0);
        *c = c.saturating_add(n);
    }

    /// Raises counter `name` to at least `n` (creating it if absent).
    pub fn count_max(&mut self, name: &str, n: u64) {
        let c = self.counters.entry(name.to_string()).or_insert(0);
        *c = (*c).max(n);
    }

    /// Value of counter `name` (0 if absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

fn is_max_counter(name: &str) -> bool {
    name.rsplit('.').next().is_some_and(|last| last.starts_with("max_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_report_is_ok() {
        assert!(Report::default().ok());
    }

    #[test]
    fn report_with_violation_is_not_ok() {
        let mut r = Report::default();
        r.count("x.things", 3);
        assert!(r.ok());
        r.violation("x", "broken");
        assert!(!r.ok());
        assert_eq!(
            r.violations[0],
            Violation {
                checker: "x".into(),
                message: "broken".into(),
                class: ViolationClass::Safety,
                ops: vec![]
            }
        );
        assert_eq!(r.violations[0].to_string(), "[x] broken");
    }

    #[test]
    fn safety_is_worse_than_liveness() {
        let mut r = Report::default();
        assert_eq!(r.worst_class(), None);
        r.liveness_violation("liveness", "late");
        assert!(!r.ok());
        assert!(!r.has_safety_violation());
        assert_eq!(r.worst_class(), Some(ViolationClass::Liveness));
        r.violation("lin", "stale read");
        assert!(r.has_safety_violation());
        assert_eq!(r.worst_class(), Some(ViolationClass::Safety));
    }

    #[test]
    fn a_violation_without_a_class_reads_as_safety() {
        let v: Violation = serde_json::from_str(r#"{"checker":"a","message":"m"}"#).unwrap();
        assert_eq!(v.class, ViolationClass::Safety);
    }

    #[test]
    fn merge_sums_counters_and_keeps_max_of_max_counters() {
        let mut a = Report::default();
        a.count("lin.keys", 2);
        a.count_max("lin.max_ops", 10);
        let mut b = Report::default();
        b.count("lin.keys", 3);
        b.count("other.n", 1);
        b.count_max("lin.max_ops", 7);
        b.violation("lin", "bad");
        a.merge(b);
        assert_eq!(a.counter("lin.keys"), 5);
        assert_eq!(a.counter("lin.max_ops"), 10);
        assert_eq!(a.counter("other.n"), 1);
        assert_eq!(a.counter("absent"), 0);
        assert!(!a.ok());
        // Deterministic, sorted counter order.
        let names: Vec<_> = a.counters.keys().cloned().collect();
        assert_eq!(names, vec!["lin.keys", "lin.max_ops", "other.n"]);
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut r = Report::default();
        r.count("a.b", 1);
        r.violation("a", "m");
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&s).unwrap(), r);
    }
}
