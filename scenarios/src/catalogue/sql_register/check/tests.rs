//! Each rule of `sql_register` fed a bad history (and a good neighbour of it).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::checker::RowSeen;

/// Builds histories on `db-0`; ids are assigned in invocation order by `build`.
#[derive(Default)]
struct B {
    ops: Vec<Op>,
}

impl B {
    fn push(mut self, p: u64, call: DbCall, inv: u64, completion: Option<(u64, Outcome<DbRes>)>) -> Self {
        let op = DbOp { instance: "db-0".into(), call };
        self.ops.push(Operation { id: 0, process: p, op, invoke_ns: inv, completion });
        self
    }
    fn ok(self, p: u64, call: DbCall, inv: u64, ret: u64, r: DbRes) -> Self {
        self.push(p, call, inv, Some((ret, Outcome::Ok(r))))
    }
    fn info(self, p: u64, call: DbCall, inv: u64) -> Self {
        self.push(p, call, inv, Some((inv + 1, Outcome::Info)))
    }
    fn build(mut self) -> H {
        self.ops.sort_by_key(|o| o.invoke_ns);
        for (i, o) in self.ops.iter_mut().enumerate() {
            o.id = i;
        }
        History { ops: self.ops }
    }
}

fn put(key: &str, value: &str, expect: Expect, fence: u64) -> RowWrite {
    RowWrite::Put { key: key.into(), value: value.into(), expect, fence }
}
fn tx(ops: Vec<RowWrite>) -> DbCall {
    DbCall::Transact(ops)
}
fn get(key: &str) -> DbCall {
    DbCall::Get { key: key.into() }
}
fn row(value: &str, version: u64, fence: u64) -> DbRes {
    DbRes::Row(Some(RowSeen { value: value.into(), version, fence }))
}
fn pv(versions: &[u64]) -> DbRes {
    DbRes::Written(versions.iter().map(|&version| WriteSeen::Put { version }).collect())
}
fn raised(fence: u64) -> DbRes {
    DbRes::Written(vec![WriteSeen::RaiseFence { row: None, fence }])
}
fn raise(key: &str, fence: u64) -> DbCall {
    tx(vec![RowWrite::RaiseFence { key: key.into(), fence }])
}

#[test]
fn fencing_flags_a_write_accepted_after_a_higher_fence_was_acknowledged() {
    let h = B::default()
        .ok(1, raise("a", 5), 0, 10, raised(5))
        .ok(2, tx(vec![put("a", "stale", Expect::Any, 3)]), 20, 30, pv(&[1]))
        .build();
    let r = check_fencing(&h);
    assert_eq!(r.violations.len(), 1, "{r:#?}");
    assert_eq!(r.violations[0].checker, "fencing");
    assert!(r.violations[0].message.contains("accepted with fence 3 although fence 5"), "{r:#?}");
}

#[test]
fn fencing_learns_the_fence_from_reads_refusals_and_guards_too() {
    // A read showed fence 4; a later guard with fence 2 passes: flagged.
    let h = B::default()
        .ok(1, get("a"), 0, 10, row("x", 1, 4))
        .ok(
            2,
            tx(vec![RowWrite::Guard { key: "a".into(), fence: 2 }, put("b", "y", Expect::Any, 2)]),
            20,
            30,
            DbRes::Written(vec![WriteSeen::Guard { version: 1 }, WriteSeen::Put { version: 1 }]),
        )
        .build();
    assert!(!check_fencing(&h).ok());
    // A refusal named fence 6; a later write with 6 is fine, with 5 is not.
    let refused = |p| {
        B::default()
            .ok(
                1,
                tx(vec![put("a", "x", Expect::Any, 1)]),
                0,
                10,
                DbRes::Refused(Refusal::Fenced { op_index: 0, row_fence: 6 }),
            )
            .ok(2, tx(vec![put("a", "y", Expect::Any, p)]), 20, 30, pv(&[2]))
            .build()
    };
    assert!(check_fencing(&refused(6)).ok());
    assert!(!check_fencing(&refused(5)).ok());
}

#[test]
fn fencing_allows_a_lower_fence_that_was_invoked_before_the_raise_returned() {
    // Concurrent with the raise: the instance may have taken the write first.
    let h = B::default()
        .ok(1, raise("a", 5), 0, 30, raised(5))
        .ok(2, tx(vec![put("a", "early", Expect::Any, 3)]), 20, 40, pv(&[1]))
        // Another row's fence says nothing about this one.
        .ok(3, raise("b", 9), 0, 10, raised(9))
        .ok(2, tx(vec![put("a", "fine", Expect::Any, 5)]), 50, 60, pv(&[2]))
        .build();
    let r = check_fencing(&h);
    assert!(r.ok(), "{r:#?}");
    assert_eq!(r.counter("fencing.accepted_ops_checked"), 4);
}

#[test]
fn atomicity_flags_a_refused_transaction_that_took_effect() {
    let h = B::default()
        .ok(1, tx(vec![put("a", "a1", Expect::Absent, 1)]), 0, 10, pv(&[1]))
        .ok(
            1,
            tx(vec![put("a", "a2", Expect::Version(1), 1), put("b", "b2", Expect::Absent, 1)]),
            20,
            30,
            DbRes::Refused(Refusal::VersionMismatch { op_index: 1, actual: 3 }),
        )
        .ok(2, get("a"), 40, 50, row("a2", 2, 1))
        .build();
    let r = check_atomicity(&h);
    assert_eq!(r.violations.len(), 1, "{r:#?}");
    assert!(r.violations[0].message.contains("refused or never sent took effect"), "{r:#?}");
}

#[test]
fn atomicity_flags_an_unknown_transaction_seen_in_part() {
    let start = || {
        B::default()
            .ok(
                1,
                tx(vec![put("a", "a1", Expect::Any, 1), put("b", "b1", Expect::Any, 1)]),
                0,
                10,
                pv(&[1, 1]),
            )
            .info(
                1,
                tx(vec![put("a", "a2", Expect::Version(1), 1), put("b", "b2", Expect::Version(1), 1)]),
                20,
            )
    };
    let half =
        start().ok(2, get("a"), 40, 50, row("a2", 2, 1)).ok(2, get("b"), 60, 70, row("other", 2, 1)).build();
    let r = check_atomicity(&half);
    assert_eq!(r.violations.len(), 1, "{r:#?}");
    assert!(r.violations[0].message.contains("took effect in part"), "{r:#?}");
    assert_eq!(r.counter("atomicity.multi_row_unknown_resolved"), 1);

    let whole =
        start().ok(2, get("a"), 40, 50, row("a2", 2, 1)).ok(2, get("b"), 60, 70, row("b2", 2, 1)).build();
    assert!(check_atomicity(&whole).ok());
    let none =
        start().ok(2, get("a"), 40, 50, row("x", 2, 1)).ok(2, get("b"), 60, 70, row("y", 2, 1)).build();
    assert!(check_atomicity(&none).ok());
}

#[test]
fn every_rule_reports_through_check_sql_register() {
    let phases = Phases {
        now: Arc::new(|| 0),
        heal_at: Duration::from_nanos(1_000),
        end_at: Duration::from_nanos(100_000),
        liveness_bound: Duration::from_nanos(10_000),
    };
    let h = B::default()
        .ok(1, raise("a", 5), 0, 10, raised(5))
        .ok(2, tx(vec![put("a", "stale", Expect::Any, 3)]), 20, 30, pv(&[1]))
        // Process 3 tries after the heal and never succeeds.
        .info(3, tx(vec![put("a", "late", Expect::Any, 5)]), 2_000)
        .build();
    let r = check_sql_register(&h, &phases, &LinConfig::default());
    let checkers: BTreeSet<&str> = r.violations.iter().map(|v| v.checker.as_str()).collect();
    assert!(checkers.contains("linearizability"), "{r:#?}");
    assert!(checkers.contains("fencing"), "{r:#?}");
    assert!(checkers.contains("liveness"), "{r:#?}");
    assert_eq!(r.counter("sql_register.calls"), 3);
    assert_eq!(r.counter("sql_register.maybe_applied"), 1);
}
