//! Tests of the row model and its linearizability check: hand-made histories, good and bad.

use super::*;

type H = History<DbOp, DbRes>;

/// Builds histories; ids are assigned in invocation order by `build`.
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
    fn fail(self, p: u64, call: DbCall, inv: u64, ret: u64) -> Self {
        self.push(p, call, inv, Some((ret, Outcome::Fail)))
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
fn raise(key: &str, fence: u64) -> RowWrite {
    RowWrite::RaiseFence { key: key.into(), fence }
}
fn row(value: &str, version: u64, fence: u64) -> RowSeen {
    RowSeen { value: value.into(), version, fence }
}
fn seen(r: Option<RowSeen>) -> DbRes {
    DbRes::Row(r)
}
fn written(ws: Vec<WriteSeen>) -> DbRes {
    DbRes::Written(ws)
}
fn pv(version: u64) -> WriteSeen {
    WriteSeen::Put { version }
}

fn check(h: &H) -> Report {
    check_rows(h, &LinConfig::default())
}

fn assert_ok(h: &H) {
    let rep = check(h);
    assert!(rep.ok(), "expected linearizable, got: {:#?}", rep.violations);
    assert_eq!(rep.counter("linearizability.inconclusive_keys"), 0);
}

fn assert_bad(h: &H) -> String {
    let rep = check(h);
    assert!(!rep.ok(), "expected a violation: {h:#?}");
    assert_eq!(rep.violations[0].checker, CHECKER);
    rep.violations[0].message.clone()
}

#[test]
fn a_sequential_history_by_the_ports_rules_is_linearizable() {
    let h = B::default()
        .ok(1, tx(vec![raise("a", 3)]), 0, 10, written(vec![WriteSeen::RaiseFence { row: None, fence: 3 }]))
        .ok(1, tx(vec![put("a", "x", Expect::Absent, 3)]), 20, 30, written(vec![pv(1)]))
        .ok(1, get("a"), 40, 50, seen(Some(row("x", 1, 3))))
        .ok(
            1,
            tx(vec![put("a", "old", Expect::Any, 2)]),
            60,
            70,
            DbRes::Refused(Refusal::Fenced { op_index: 0, row_fence: 3 }),
        )
        .ok(
            1,
            tx(vec![RowWrite::Delete { key: "a".into(), expect: Expect::Version(1), fence: 4 }]),
            80,
            90,
            written(vec![WriteSeen::Delete { version: 2, existed: true }]),
        )
        .ok(1, get("a"), 100, 110, seen(None))
        // A re-created row continues the placeholder's version.
        .ok(1, tx(vec![put("a", "y", Expect::Absent, 4)]), 120, 130, written(vec![pv(3)]))
        .ok(
            1,
            tx(vec![RowWrite::Guard { key: "a".into(), fence: 5 }, put("b", "z", Expect::Any, 1)]),
            140,
            150,
            written(vec![WriteSeen::Guard { version: 3 }, pv(1)]),
        )
        .build();
    assert_ok(&h);
}

#[test]
fn a_write_accepted_with_a_stale_fence_is_not_linearizable() {
    let h = B::default()
        .ok(1, tx(vec![put("a", "x", Expect::Any, 1)]), 0, 10, written(vec![pv(1)]))
        .ok(
            2,
            tx(vec![raise("a", 5)]),
            20,
            30,
            written(vec![WriteSeen::RaiseFence { row: Some(row("x", 1, 5)), fence: 5 }]),
        )
        // The old owner (fence 1) writes after the raise, and the instance takes it.
        .ok(1, tx(vec![put("a", "stale", Expect::Any, 1)]), 40, 50, written(vec![pv(2)]))
        .build();
    let m = assert_bad(&h);
    assert!(m.contains("db-0 is not linearizable"), "{m}");
    assert!(m.contains("\"stale\""), "{m}");
}

#[test]
fn a_refusal_must_name_the_rows_real_fence_and_version() {
    let base = || B::default().ok(1, tx(vec![put("a", "x", Expect::Any, 4)]), 0, 10, written(vec![pv(1)]));
    let wrong_fence = base()
        .ok(
            2,
            tx(vec![put("a", "y", Expect::Any, 2)]),
            20,
            30,
            DbRes::Refused(Refusal::Fenced { op_index: 0, row_fence: 9 }),
        )
        .build();
    assert_bad(&wrong_fence);
    let wrong_version = base()
        .ok(
            2,
            tx(vec![put("a", "y", Expect::Version(7), 4)]),
            20,
            30,
            DbRes::Refused(Refusal::VersionMismatch { op_index: 0, actual: 2 }),
        )
        .build();
    assert_bad(&wrong_version);
    let right = base()
        .ok(
            2,
            tx(vec![put("a", "y", Expect::Version(7), 4)]),
            20,
            30,
            DbRes::Refused(Refusal::VersionMismatch { op_index: 0, actual: 1 }),
        )
        .build();
    assert_ok(&right);
}

#[test]
fn a_multi_row_transaction_seen_half_applied_is_not_linearizable() {
    let h = B::default()
        .ok(
            1,
            tx(vec![put("a", "a1", Expect::Absent, 1), put("b", "b1", Expect::Absent, 1)]),
            0,
            10,
            written(vec![pv(1), pv(1)]),
        )
        // Unknown outcome: may have applied wholly, or not at all.
        .info(1, tx(vec![put("a", "a2", Expect::Version(1), 1), put("b", "b2", Expect::Version(1), 1)]), 20)
        .ok(2, get("a"), 100, 110, seen(Some(row("a2", 2, 1))))
        .ok(2, get("b"), 120, 130, seen(Some(row("b1", 1, 1))))
        .build();
    assert_bad(&h);
}

#[test]
fn an_unknown_transaction_may_have_applied_or_not() {
    let start = || {
        B::default().ok(1, tx(vec![put("a", "a1", Expect::Absent, 1)]), 0, 10, written(vec![pv(1)])).info(
            1,
            tx(vec![put("a", "a2", Expect::Version(1), 1)]),
            20,
        )
    };
    assert_ok(&start().ok(2, get("a"), 100, 110, seen(Some(row("a2", 2, 1)))).build());
    assert_ok(&start().ok(2, get("a"), 100, 110, seen(Some(row("a1", 1, 1)))).build());
    // ...but only once: after it was seen applied, the old value cannot come back.
    let h = start()
        .ok(2, get("a"), 100, 110, seen(Some(row("a2", 2, 1))))
        .ok(2, get("a"), 120, 130, seen(Some(row("a1", 1, 1))))
        .build();
    assert_bad(&h);
}

#[test]
fn a_failed_call_never_took_effect() {
    let h = B::default()
        .ok(1, tx(vec![put("a", "a1", Expect::Absent, 1)]), 0, 10, written(vec![pv(1)]))
        .fail(1, tx(vec![put("a", "lost", Expect::Any, 1)]), 20, 30)
        .ok(2, get("a"), 100, 110, seen(Some(row("lost", 2, 1))))
        .build();
    assert_bad(&h);
}

#[test]
fn concurrent_calls_may_take_effect_in_either_order() {
    let h = B::default()
        .ok(1, tx(vec![put("a", "p1", Expect::Any, 1)]), 0, 100, written(vec![pv(2)]))
        .ok(2, tx(vec![put("a", "p2", Expect::Any, 1)]), 10, 90, written(vec![pv(1)]))
        .ok(3, get("a"), 110, 120, seen(Some(row("p1", 2, 1))))
        .build();
    assert_ok(&h);
}

#[test]
fn a_guard_with_a_stale_fence_must_be_refused() {
    let h = B::default()
        .ok(1, tx(vec![put("g", "x", Expect::Any, 7)]), 0, 10, written(vec![pv(1)]))
        .ok(
            2,
            tx(vec![RowWrite::Guard { key: "g".into(), fence: 3 }, put("a", "y", Expect::Any, 3)]),
            20,
            30,
            written(vec![WriteSeen::Guard { version: 1 }, pv(1)]),
        )
        .build();
    assert_bad(&h);
}

#[test]
fn an_answer_of_the_wrong_kind_is_reported() {
    let h = B::default().ok(1, get("a"), 0, 10, written(vec![pv(1)])).build();
    let m = assert_bad(&h);
    assert!(m.contains("malformed"), "{m}");
}
