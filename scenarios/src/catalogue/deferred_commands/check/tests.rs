//! Each checker of `check.rs` fed a bad history (and a good one).

use super::*;
use crate::history::Operation;
use engine::commands::Executed;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn set() -> CommandSet<Farm> {
    game::farm::command_set()
}

fn earn(n: i64) -> Value {
    json!({"op": "earn", "amount": n})
}

fn build(cost: i64) -> Value {
    json!({"op": "build", "building": "barn", "cost": cost})
}

fn pack(id: u64, basis: u64, commands: Vec<Value>, outcome: PackOutcome, epoch: u64) -> PackRow {
    PackRow { pack_id: id, basis, commands, executed: Some(Executed { outcome, epoch, error: None }) }
}

fn farm(gold: i64, barns: u32) -> Farm {
    let mut f = Farm::new_user("u");
    f.gold = gold;
    if barns > 0 {
        f.buildings.insert("barn".into(), barns);
    }
    f
}

fn queue(last_pack: u64, done: u64, epoch: u64, error_epoch: u64) -> QueueRecord {
    QueueRecord { user: "u".into(), last_pack, done, epoch, error_epoch }
}

/// Packs 1 (applied), 2 (a cheat: failed), 3 (built before the failure: skipped), a
/// purchase, 4 (built on the reloaded state: applied).
fn good_final() -> UserFinal {
    let packs = BTreeMap::from([
        (1, pack(1, 0, vec![earn(10)], PackOutcome::Applied, 1)),
        (2, pack(2, 1, vec![build(500)], PackOutcome::Failed, 2)),
        (3, pack(3, 1, vec![earn(5)], PackOutcome::Skipped, 2)),
        (4, pack(4, 3, vec![build(200)], PackOutcome::Applied, 4)),
    ]);
    let realtime = BTreeMap::from([(
        "c1-0".to_string(),
        RealtimeRow { command: json!({"op": "buy_now", "gold": 100}), result: Ok(3) },
    )]);
    UserFinal { queue: Some(queue(4, 4, 4, 2)), farm: Some(farm(10, 1)), packs, realtime, pending: false }
}

fn finals(f: UserFinal) -> Finals {
    BTreeMap::from([("u".to_string(), f)])
}

fn op(id: usize, at: u64, op: CmdOp, done: Option<(u64, Outcome<CmdRes>)>) -> Operation<CmdOp, CmdRes> {
    Operation { id, process: 1, op, invoke_ns: at, completion: done }
}

fn sent(id: u64, basis: u64, commands: Vec<Value>) -> CmdOp {
    CmdOp::Pack { user: "u".into(), conn: 1, pack_id: id, basis, commands, resend: false }
}

fn acked() -> Outcome<CmdRes> {
    Outcome::Ok(CmdRes::Acked { resent: false })
}

fn good_history() -> CmdHistory {
    History {
        ops: vec![
            op(0, 1, sent(1, 0, vec![earn(10)]), Some((2, acked()))),
            op(1, 3, sent(2, 1, vec![build(500)]), Some((4, acked()))),
            op(2, 5, sent(3, 1, vec![earn(5)]), Some((6, acked()))),
            op(
                3,
                7,
                CmdOp::BuyNow { user: "u".into(), purchase_id: "c1-0".into(), gold: 100, retry: false },
                Some((8, Outcome::Ok(CmdRes::Bought { gold: 210, epoch: 3, duplicate: false }))),
            ),
            op(4, 9, sent(4, 3, vec![build(200)]), Some((10, acked()))),
            op(
                5,
                11,
                CmdOp::State { user: "u".into(), conn: 1 },
                Some((
                    12,
                    Outcome::Ok(CmdRes::State(super::super::history::StateSeen {
                        gold: 10,
                        buildings: BTreeMap::from([("barn".into(), 1)]),
                        epoch: 4,
                        next_pack: 5,
                    })),
                )),
            ),
        ],
    }
}

fn all_checks(h: &CmdHistory, f: &Finals) -> Report {
    let mut r = check_acked_executed(h, f);
    let (rr, replays) = check_replay(f, &set());
    r.merge(rr);
    r.merge(check_reads(h, &replays));
    r.merge(check_purchases(h, f, &replays));
    r.merge(check_drained(f));
    r
}

fn checkers(r: &Report) -> BTreeSet<String> {
    r.violations.iter().map(|v| v.checker.clone()).collect()
}

#[test]
fn a_run_with_a_cheat_a_skip_a_purchase_and_a_reload_passes() {
    let r = all_checks(&good_history(), &finals(good_final()));
    assert!(r.ok(), "{:#?}", r.violations);
    assert_eq!(r.counter("deferred_commands.packs_skipped"), 1);
}

#[test]
fn an_acknowledged_pack_that_was_never_stored_is_caught() {
    let mut f = good_final();
    f.packs.remove(&4);
    f.queue = Some(queue(3, 3, 3, 2));
    f.farm = Some(farm(210, 0));
    let r = all_checks(&good_history(), &finals(f));
    assert!(
        r.violations.iter().any(|v| v.checker == "exactly_once" && v.message.contains("not stored")),
        "{r:#?}"
    );
    assert!(checkers(&r).contains("reads"), "the read after the ack counted pack 4: {r:#?}");
}

#[test]
fn a_stored_pack_nobody_sent_is_caught() {
    let mut f = good_final();
    f.packs.get_mut(&1).unwrap().commands = vec![earn(11)];
    let r = check_acked_executed(&good_history(), &finals(f));
    assert!(r.violations.iter().any(|v| v.message.contains("no pack a client sent")), "{r:#?}");
}

#[test]
fn a_pack_applied_twice_is_caught_by_the_replay() {
    let mut f = good_final();
    f.farm = Some(farm(20, 1)); // pack 1's +10 applied twice
    let r = all_checks(&good_history(), &finals(f));
    assert_eq!(checkers(&r), BTreeSet::from(["replay".to_string()]), "{r:#?}");
}

#[test]
fn a_repeated_epoch_or_packs_out_of_order_are_caught() {
    let mut f = good_final();
    f.packs.get_mut(&4).unwrap().executed.as_mut().unwrap().epoch = 3; // same epoch as the purchase
    let r = all_checks(&good_history(), &finals(f));
    assert!(checkers(&r).contains("order"), "{r:#?}");
    let mut f = good_final();
    // Pack 1 recorded after pack 2.
    f.packs.get_mut(&1).unwrap().executed.as_mut().unwrap().epoch = 2;
    f.packs.get_mut(&2).unwrap().executed.as_mut().unwrap().epoch = 1;
    let r = all_checks(&good_history(), &finals(f));
    assert!(r.violations.iter().any(|v| v.checker == "order" && v.message.contains("right after")), "{r:#?}");
}

#[test]
fn a_stale_pack_that_was_applied_is_caught() {
    let mut f = good_final();
    // The no-stale-skip bug: pack 3 (basis 1 < error epoch 2) applied.
    f.packs.insert(3, pack(3, 1, vec![earn(5)], PackOutcome::Applied, 3));
    f.realtime.get_mut("c1-0").unwrap().result = Ok(4);
    f.packs.get_mut(&4).unwrap().executed.as_mut().unwrap().epoch = 5;
    f.queue = Some(queue(4, 4, 5, 2));
    f.farm = Some(farm(15, 1));
    let (r, _) = check_replay(&finals(f), &set());
    assert_eq!(checkers(&r), BTreeSet::from(["stale_skip".to_string()]), "{r:#?}");
}

#[test]
fn a_skipped_pack_that_was_not_stale_is_caught() {
    let mut f = good_final();
    f.packs.get_mut(&4).unwrap().executed =
        Some(Executed { outcome: PackOutcome::Skipped, epoch: 3, error: None });
    f.queue = Some(queue(4, 4, 3, 2));
    f.farm = Some(farm(210, 0));
    let (r, _) = check_replay(&finals(f), &set());
    assert!(checkers(&r).contains("stale_skip"), "{r:#?}");
}

#[test]
fn a_state_read_that_misses_an_acknowledged_pack_or_differs_from_the_replay_is_caught() {
    let mut h = good_history();
    if let Some((_, Outcome::Ok(CmdRes::State(s)))) = &mut h.ops[5].completion {
        s.next_pack = 4;
    }
    let r = all_checks(&h, &finals(good_final()));
    assert!(
        r.violations.iter().any(|v| v.checker == "reads" && v.message.contains("had been acknowledged")),
        "{r:#?}"
    );
    let mut h = good_history();
    if let Some((_, Outcome::Ok(CmdRes::State(s)))) = &mut h.ops[5].completion {
        s.gold = 11;
    }
    let r = all_checks(&h, &finals(good_final()));
    assert!(
        r.violations.iter().any(|v| v.checker == "reads" && v.message.contains("the replay has")),
        "{r:#?}"
    );
}

#[test]
fn a_gap_refusal_that_misses_an_acknowledged_pack_is_caught() {
    let mut h = good_history();
    h.ops.push(op(
        6,
        20,
        sent(5, 4, vec![earn(1)]),
        Some((21, Outcome::Ok(CmdRes::Refused { code: "gap".into(), expected: Some(4) }))),
    ));
    let r = check_reads(&h, &Replays::new());
    assert_eq!(r.violations.len(), 1, "{r:#?}");
}

#[test]
fn a_pipelined_request_must_see_the_packs_acknowledged_before_it_on_its_connection() {
    // Packs 5 and 6 sent back to back on connection 1: 5 acknowledged, 6 refused as a gap
    // expecting 5, although the server handled 6 after acknowledging 5.
    let mut h = good_history();
    h.ops.push(op(6, 20, sent(5, 4, vec![earn(1)]), Some((23, acked()))));
    let gap = Outcome::Ok(CmdRes::Refused { code: "gap".into(), expected: Some(5) });
    h.ops.push(op(7, 20, sent(6, 4, vec![earn(1)]), Some((24, gap))));
    let r = check_reads(&h, &Replays::new());
    assert_eq!(r.violations.len(), 1, "{r:#?}");
    // The same answers on two connections prove nothing.
    if let CmdOp::Pack { conn, .. } = &mut h.ops[7].op {
        *conn = 2;
    }
    assert!(check_reads(&h, &Replays::new()).ok());
}

#[test]
fn a_purchase_without_its_row_or_applied_twice_is_caught() {
    let mut f = good_final();
    f.realtime.clear();
    let r = all_checks(&good_history(), &finals(f));
    assert!(checkers(&r).contains("purchases"), "{r:#?}");
    // Applied twice: the farm has the gold twice (the replay) — and the answer's balance is
    // not the replay's.
    let mut h = good_history();
    if let Some((_, Outcome::Ok(CmdRes::Bought { gold, .. }))) = &mut h.ops[3].completion {
        *gold = 310;
    }
    let mut f = good_final();
    f.farm = Some(farm(110, 1));
    let r = all_checks(&h, &finals(f));
    assert_eq!(checkers(&r), BTreeSet::from(["purchases".to_string(), "replay".to_string()]), "{r:#?}");
}

#[test]
fn overlapping_committed_executions_on_one_server_are_caught() {
    let e = |server, pack_id, start_ns, end_ns, committed: bool| Execution {
        server,
        user: "u".into(),
        pack_id,
        start_ns,
        end_ns: Some(end_ns),
        committed: committed.then_some((PackOutcome::Applied, pack_id)),
    };
    // One after the other, an overlap with an uncommitted one, and one on another server.
    let ok = [e(1, 1, 0, 10, true), e(1, 2, 10, 20, true), e(1, 3, 15, 30, false), e(2, 3, 12, 25, true)];
    assert!(check_exclusive(&ok).ok());
    let bad = [e(1, 1, 0, 10, true), e(1, 1, 5, 12, true)];
    assert_eq!(check_exclusive(&bad).violations.len(), 1);
}

#[test]
fn a_queue_left_waiting_is_a_liveness_failure() {
    let mut f = good_final();
    f.pending = true;
    f.queue = Some(queue(5, 4, 4, 2));
    let r = check_drained(&finals(f));
    assert_eq!(r.violations.len(), 2);
    assert_eq!(r.worst_class(), Some(crate::checker::ViolationClass::Liveness));
}

#[test]
fn a_reader_that_only_gets_retry_after_after_the_heal_fails_liveness() {
    let phases = Phases {
        now: Arc::new(|| 0),
        heal_at: Duration::from_secs(10),
        end_at: Duration::from_secs(30),
        liveness_bound: Duration::from_secs(5),
    };
    let read = |id, at: u64, res| {
        op(
            id,
            at * 1_000_000_000,
            CmdOp::State { user: "u".into(), conn: 1 },
            Some((at * 1_000_000_000 + 1, Outcome::Ok(res))),
        )
    };
    let h = History {
        ops: vec![read(0, 11, CmdRes::RetryAfter { ms: 100 }), read(1, 12, CmdRes::RetryAfter { ms: 100 })],
    };
    assert!(!check_states_answered(&h, &phases).ok());
    let mut h2 = h.clone();
    h2.ops.push(read(
        2,
        13,
        CmdRes::State(super::super::history::StateSeen {
            gold: 100,
            buildings: BTreeMap::new(),
            epoch: 0,
            next_pack: 1,
        }),
    ));
    assert!(check_states_answered(&h2, &phases).ok());
}
