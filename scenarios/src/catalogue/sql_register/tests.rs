//! A live run's reports rebuild the history the servers recorded, and fences drawn in
//! several processes keep rising.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use engine::env::WriteResult;

use super::workload::FENCE_TIME_SCALE;
use super::*;
use crate::checker::{Refusal, RowSeen, RowWrite, WriteSeen};
use crate::evidence::EvidenceTap;
use crate::history::Outcome;

/// A tap that keeps what it is given.
fn keeping_tap() -> (EvidenceTap, Arc<Mutex<Vec<Evidence>>>) {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let k = kept.clone();
    (Arc::new(move |ev: &Evidence| k.lock().unwrap().push(ev.clone())), kept)
}

fn raise(key: &str, fence: u64) -> DbCall {
    DbCall::Transact(vec![RowWrite::RaiseFence { key: key.into(), fence }])
}

#[test]
fn a_live_servers_reports_rebuild_its_calls_in_the_runners_run() {
    let t = Arc::new(AtomicU64::new(1_000));
    let t2 = t.clone();
    let now: TimeSource = Arc::new(move || t2.load(Ordering::Relaxed));
    // The runner's clock reads another time: every time it records must be the server's.
    let (server, runner) = (Run::new(now.clone()), Run::new(Arc::new(|| 77)));
    let (tap, kept) = keeping_tap();
    // Task 1 of server incarnation 2: process 5.
    let mut log = CallLog::new(server.rec.clone(), now.clone(), 5, Some(tap));
    let read = log.invoke("db-1", DbCall::Get { key: "row-1".into() });
    t.store(2_000, Ordering::Relaxed);
    let raised = log.invoke("db-1", raise("row-5", 9));
    let refused = log.invoke("db-1", raise("row-1", 3));
    let unknown = log.invoke("db-2", raise("row-2", 4));
    let unreachable = log.invoke("db-3", DbCall::Get { key: "row-3".into() });
    let _in_flight_when_killed = log.invoke("db-0", raise("row-0", 5));
    t.store(5_000, Ordering::Relaxed);
    let row = Row { key: "row-1".into(), value: Bytes::from("p1-1"), version: 2, fence: 7 };
    log.complete_get(read, &Ok(Some(row)));
    log.complete_transact(raised, &Ok(vec![WriteResult::RaiseFence { row: None, fence: 9 }]));
    log.complete_transact(refused, &Err(DbError::Fenced { op_index: 0, row_fence: 7 }));
    log.complete_transact(unknown, &Err(DbError::Timeout { maybe_applied: true }));
    log.complete_get(unreachable, &Err(DbError::Unavailable));

    let kept = std::mem::take(&mut *kept.lock().unwrap());
    assert_eq!(kept.len(), 11, "six invocations and five completions: {kept:?}");
    for ev in kept {
        assert!(runner.absorb(ev));
    }
    let (theirs, ours) = (server.rec.snapshot(), runner.rec.snapshot());
    assert_eq!(ours, theirs);
    let outcomes: Vec<_> = ours.ops.iter().map(|o| o.completion.clone()).collect();
    let row = RowSeen { value: "p1-1".into(), version: 2, fence: 7 };
    assert_eq!(
        outcomes,
        [
            Some((5_000, Outcome::Ok(DbRes::Row(Some(row))))),
            Some((5_000, Outcome::Ok(DbRes::Written(vec![WriteSeen::RaiseFence { row: None, fence: 9 }])))),
            Some((5_000, Outcome::Ok(DbRes::Refused(Refusal::Fenced { op_index: 0, row_fence: 7 })))),
            Some((5_000, Outcome::Info)),
            Some((5_000, Outcome::Fail)),
            None,
        ]
    );
    assert_eq!(ours.ops[0].invoke_ns, 1_000);
    assert!(ours.ops.iter().all(|o| o.process == 5));
    assert_eq!(ours.ops[5].outcome(), Outcome::Info, "the call in flight at the kill stays open");
    let absorbed = runner.absorbed.lock().unwrap();
    assert_eq!(absorbed.open.len(), 1);
    assert!(absorbed.unmatched.is_empty(), "{:?}", absorbed.unmatched);
    drop(absorbed);
    assert!(!runner.absorb(Evidence::WallRead { wall_ms: 1, t_ns: 1 }), "not sql_register's evidence");
}

#[test]
fn the_simulator_reports_nothing_and_records_the_same_history() {
    let now: TimeSource = Arc::new(|| 40);
    let run = Run::new(now.clone());
    let mut log = CallLog::new(run.rec.clone(), now, 3, None);
    let call = log.invoke("db-0", DbCall::Get { key: "row-0".into() });
    log.complete_get(call, &Ok(None));
    let h = run.rec.snapshot();
    assert_eq!(h.ops.len(), 1);
    assert_eq!((h.ops[0].process, h.ops[0].invoke_ns), (3, 40));
    assert_eq!(h.ops[0].completion, Some((40, Outcome::Ok(DbRes::Row(None)))));
}

#[test]
fn completions_without_their_invocation_or_before_it_are_kept_for_the_check_to_fail() {
    let runner = Run::new(Arc::new(|| 0));
    assert!(runner.absorb(Evidence::SqlCompleted { process: 1, call: 4, outcome: Outcome::Fail, t_ns: 10 }));
    // Numbers are per process: call 4 of process 2 does not complete call 4 of process 1.
    let get = DbOp { instance: "db-0".into(), call: DbCall::Get { key: "row-0".into() } };
    assert!(runner.absorb(Evidence::SqlInvoked { process: 2, call: 4, op: get.clone(), t_ns: 50 }));
    assert!(runner.absorb(Evidence::SqlCompleted { process: 2, call: 4, outcome: Outcome::Info, t_ns: 49 }));
    assert!(runner.absorb(Evidence::SqlInvoked { process: 2, call: 5, op: get.clone(), t_ns: 60 }));
    assert!(runner.absorb(Evidence::SqlInvoked { process: 2, call: 5, op: get, t_ns: 61 }));
    let h = runner.rec.snapshot();
    assert!(h.ops.iter().all(|o| o.completion.is_none()), "nothing completed: {h:?}");
    let unmatched = &runner.absorbed.lock().unwrap().unmatched;
    assert_eq!(unmatched.len(), 3, "{unmatched:?}");
    assert!(unmatched[0].contains("process 1 reported call 4 completed"), "{unmatched:?}");
    assert!(unmatched[0].contains("never invoked"), "{unmatched:?}");
    assert!(unmatched[1].contains("before its invocation"), "{unmatched:?}");
    assert!(unmatched[2].contains("invoked twice"), "{unmatched:?}");
}

#[test]
fn simulator_fences_count_up_per_row_from_one() {
    let fences = Fences::default();
    let drawn: Vec<u64> = [0, 0, 3, 0, 3, 7].iter().map(|&k| fences.next(k)).collect();
    assert_eq!(drawn, [1, 2, 1, 3, 2, 1]);
    // Shared by every server of the run: a clone continues the same counters.
    assert_eq!(fences.clone().next(0), 4);
}

/// A clock that counts in coarse steps: each read moves it on by a quarter of a tick, so up
/// to four reads in a row see one time (as two processes reading the same nanosecond).
fn coarse_clock() -> TimeSource {
    let reads = Arc::new(AtomicU64::new(4_000));
    Arc::new(move || reads.fetch_add(1, Ordering::SeqCst) / 4)
}

#[test]
fn live_fences_drawn_one_after_another_in_several_processes_keep_rising() {
    let now = coarse_clock();
    // Three server processes' own `Fences` (no memory shared), on the run's one clock.
    let procs: Vec<Fences> =
        [0, 1, 7].iter().map(|&i| Fences::default().across_processes(now.clone(), i)).collect();
    let mut last = 0;
    for n in 0..300usize {
        let f = procs[n * 7 % 3].next(n % 2);
        assert!(f > last, "draw {n}: fence {f} not above the previous {last}");
        last = f;
    }
}

#[test]
fn a_live_fence_is_never_below_the_last_one_handed_out_for_its_row_in_its_process() {
    let fences = Fences::default();
    for _ in 0..5 {
        let _ = fences.next(2);
    }
    // A clock just started: its time gives fences below 5.
    let reads = Arc::new(AtomicU64::new(0));
    let now: TimeSource = Arc::new(move || reads.fetch_add(1, Ordering::SeqCst) / 8);
    let live = fences.across_processes(now, 3);
    assert_eq!(live.next(2), 6);
    assert_eq!(live.next(1), FENCE_TIME_SCALE + 3, "another row: the clock's time, read after a tick");
}

#[test]
fn a_history_rebuilt_process_by_process_is_checked_in_invocation_order() {
    let runner = Run::new(Arc::new(|| 0));
    let get = |k: usize| DbOp { instance: instance_of(k), call: DbCall::Get { key: row_key(k) } };
    // Process 0's file, then process 2's: their calls interleaved in time.
    for (process, call, t_ns) in [(0, 0, 10), (0, 1, 30), (2, 0, 20), (2, 1, 20)] {
        assert!(runner.absorb(Evidence::SqlInvoked { process, call, op: get(process as usize), t_ns }));
    }
    let h = in_invocation_order(runner.rec.snapshot());
    let order: Vec<_> = h.ops.iter().map(|o| (o.id, o.process, o.invoke_ns)).collect();
    assert_eq!(order, [(0, 0, 10), (1, 2, 20), (2, 2, 20), (3, 0, 30)]);
    // In invocation order already (a simulator's history): unchanged.
    assert_eq!(in_invocation_order(h.clone()), h);
}
