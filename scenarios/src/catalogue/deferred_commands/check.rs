//! `deferred_commands`' checks, one function per numbered invariant of the scenario doc (the
//! order, replay and stale-skip rules, 2 to 4, share one replay walk: [`check_replay`]).

use std::collections::{BTreeMap, BTreeSet};

use engine::commands::{CommandSet, Outcome as PackOutcome, PackRow, QueueRecord, RealtimeRow};
use game::farm::Farm;
use serde_json::Value;

use super::history::{CmdHistory, CmdOp, CmdRes, Execution};
use crate::checker::Report;
use crate::history::{History, Outcome};
use crate::scenario::Phases;

/// What the database holds for one user after the run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserFinal {
    /// The queue record (`None`: the user never stored a pack nor bought).
    pub queue: Option<QueueRecord>,
    /// The farm object (`None`: no pack or purchase ever changed it).
    pub farm: Option<Farm>,
    /// The pack rows, by pack id.
    pub packs: BTreeMap<u64, PackRow>,
    /// The real-time rows, by purchase id.
    pub realtime: BTreeMap<String, RealtimeRow>,
    /// The pending-index row is present.
    pub pending: bool,
}

/// user -> what the database holds; a user missing from the map could not be read.
pub type Finals = BTreeMap<String, UserFinal>;

/// The sequential replay of one user's transitions: the state at every epoch it reached.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Replay {
    pub states: BTreeMap<u64, Farm>,
}

/// user -> its replay.
pub type Replays = BTreeMap<String, Replay>;

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Invariant 1, **every acknowledged pack is executed exactly once, none lost**: each pack a
/// client got `sc_commands_ack` for has a stored row (a row is written once: `Absent`) whose
/// outcome is recorded after the heal; and every stored pack is one a client sent (same id,
/// basis and commands). A pack executed twice shows in the replay (3).
pub fn check_acked_executed(history: &CmdHistory, finals: &Finals) -> Report {
    let mut report = Report::default();
    // (user, pack id) -> every (basis, commands) sent under it.
    type Sent<'a> = BTreeMap<(&'a str, u64), Vec<(u64, &'a Vec<Value>)>>;
    let mut sent: Sent = BTreeMap::new();
    let mut acked: BTreeMap<(&str, u64), (usize, u64)> = BTreeMap::new();
    for op in &history.ops {
        let CmdOp::Pack { user, pack_id, basis, commands, .. } = &op.op else { continue };
        sent.entry((user, *pack_id)).or_default().push((*basis, commands));
        if let Some((t, Outcome::Ok(CmdRes::Acked { .. }))) = &op.completion {
            acked.entry((user, *pack_id)).or_insert((op.id, *t));
        }
    }
    for ((user, pack_id), (op_id, t)) in &acked {
        let Some(f) = finals.get(*user) else { continue };
        match f.packs.get(pack_id) {
            None => report.violation(
                "exactly_once",
                format!(
                    "user {user}: pack {pack_id} was acknowledged (op {op_id} at {:.3}s) but is not stored",
                    secs(*t)
                ),
            ),
            Some(row) if row.executed.is_none() => report.liveness_violation(
                "exactly_once",
                format!("user {user}: acknowledged pack {pack_id} (op {op_id}) was never executed"),
            ),
            Some(_) => {}
        }
    }
    for (user, f) in finals {
        for (id, row) in &f.packs {
            let versions = sent.get(&(user.as_str(), *id)).map_or(&[][..], Vec::as_slice);
            if !versions.iter().any(|(b, c)| *b == row.basis && **c == row.commands) {
                report.violation(
                    "exactly_once",
                    format!(
                        "user {user}: stored pack {id} (basis {}) is no pack a client sent with that id",
                        row.basis
                    ),
                );
            }
        }
    }
    report.count("deferred_commands.packs_acked", acked.len() as u64);
    report
}

/// Invariants 2 (**order**), 3 (**replay**) and 4 (**stale skip**), in one walk per user over
/// its executed packs and applied real-time purchases, ordered by the epoch each recorded (a
/// skipped pack after the transition whose epoch it names):
/// - 2: the transitions (applied and failed packs, applied purchases) carry the epochs 1, 2,
///   3, ... in that order, no gap or repeat; the executed packs are 1, 2, ..., `done` in id
///   order;
/// - 4: a pack is skipped iff its basis is older than the error epoch at its turn;
/// - 3: replayed from the starting farm, each pack that is not stale applies iff it was
///   recorded applied (else it fails, and changes nothing), purchases add their gold, and the
///   end is the stored farm and queue record (epoch, error epoch, packs done).
///
/// Returns the replays (the state at every epoch) for the read and purchase checks.
pub fn check_replay(finals: &Finals, set: &CommandSet<Farm>) -> (Report, Replays) {
    let mut report = Report::default();
    let mut replays = Replays::new();
    for (user, f) in finals {
        let (r, replay) = replay_user(user, f, set);
        report.merge(r);
        replays.insert(user.clone(), replay);
    }
    (report, replays)
}

enum Step<'a> {
    Pack(u64, &'a PackRow),
    Purchase(&'a str, &'a RealtimeRow),
}

fn replay_user(user: &str, f: &UserFinal, set: &CommandSet<Farm>) -> (Report, Replay) {
    let mut report = Report::default();
    // (epoch, 0 = a transition / 1 = a skip after it, pack id) -> step.
    let mut steps: Vec<((u64, u8, u64), Step<'_>)> = Vec::new();
    for (id, row) in &f.packs {
        if let Some(ex) = &row.executed {
            let after = u8::from(ex.outcome == PackOutcome::Skipped);
            steps.push(((ex.epoch, after, *id), Step::Pack(*id, row)));
        }
    }
    for (pid, row) in &f.realtime {
        if let Ok(epoch) = row.result {
            steps.push(((epoch, 0, 0), Step::Purchase(pid, row)));
        }
    }
    steps.sort_by_key(|(k, _)| *k);
    let mut state = set.initial(user);
    let (mut epoch, mut error_epoch, mut done) = (0u64, 0u64, 0u64);
    let mut replay = Replay::default();
    replay.states.insert(0, state.clone());
    for (_, step) in &steps {
        match step {
            Step::Pack(id, row) => {
                let ex = row.executed.as_ref().expect("only executed packs are steps");
                if *id != done + 1 {
                    report.violation(
                        "order",
                        format!(
                            "user {user}: pack {id} executed (epoch {}) right after pack {done}",
                            ex.epoch
                        ),
                    );
                }
                done = done.max(*id);
                let stale = row.basis < error_epoch;
                let applied = set.apply_all(&row.commands, &state);
                match (stale, ex.outcome) {
                    (true, PackOutcome::Skipped) | (false, PackOutcome::Applied | PackOutcome::Failed) => {}
                    (true, o) => report.violation(
                        "stale_skip",
                        format!(
                            "user {user}: pack {id} was built on epoch {} before the error epoch {error_epoch} and was {o:?}, not skipped",
                            row.basis
                        ),
                    ),
                    (false, o) => report.violation(
                        "stale_skip",
                        format!(
                            "user {user}: pack {id} (basis {}, error epoch {error_epoch}) was {o:?} though not stale",
                            row.basis
                        ),
                    ),
                }
                if !stale {
                    match (&applied, ex.outcome) {
                        (Ok(_), PackOutcome::Failed) => report.violation(
                            "replay",
                            format!(
                                "user {user}: pack {id} failed ({:?}) but applies to the replayed state (gold {})",
                                ex.error, state.gold
                            ),
                        ),
                        (Err((i, why)), PackOutcome::Applied) => report.violation(
                            "replay",
                            format!(
                                "user {user}: pack {id} was applied but its command {i} fails on the replayed state (gold {}): {why}",
                                state.gold
                            ),
                        ),
                        _ => {}
                    }
                }
                // Follow what was recorded, so one wrong step is reported once.
                match ex.outcome {
                    PackOutcome::Applied => {
                        if let Ok(next) = applied {
                            state = next;
                        }
                        epoch += 1;
                    }
                    PackOutcome::Failed => {
                        epoch += 1;
                        error_epoch = epoch;
                    }
                    PackOutcome::Skipped => {}
                }
                if ex.epoch != epoch {
                    report.violation(
                        "order",
                        format!(
                            "user {user}: pack {id} ({:?}) recorded epoch {}, the replay is at epoch {epoch}",
                            ex.outcome, ex.epoch
                        ),
                    );
                }
                if ex.outcome != PackOutcome::Skipped {
                    replay.states.insert(epoch, state.clone());
                }
            }
            Step::Purchase(pid, row) => {
                match set.apply(&row.command, &mut state) {
                    Ok(()) => {}
                    Err(why) => report
                        .violation("replay", format!("user {user}: purchase {pid} does not apply: {why}")),
                }
                epoch += 1;
                if row.result != Ok(epoch) {
                    report.violation(
                        "order",
                        format!(
                            "user {user}: purchase {pid} recorded epoch {:?}, the replay is at epoch {epoch}",
                            row.result
                        ),
                    );
                }
                replay.states.insert(epoch, state.clone());
            }
        }
    }
    let q = f.queue.clone().unwrap_or_else(|| QueueRecord::new(user));
    let stored = f.farm.clone().unwrap_or_else(|| set.initial(user));
    if (stored.gold, &stored.buildings) != (state.gold, &state.buildings) {
        report.violation(
            "replay",
            format!(
                "user {user}: the stored farm is {} gold {:?}, the replay of {} steps gives {} gold {:?}",
                stored.gold,
                stored.buildings,
                steps.len(),
                state.gold,
                state.buildings
            ),
        );
    }
    if (q.epoch, q.error_epoch, q.done) != (epoch, error_epoch, done) {
        report.violation(
            "replay",
            format!(
                "user {user}: the queue record says epoch {}, error epoch {}, {} packs done; the replay {epoch}, {error_epoch}, {done}",
                q.epoch, q.error_epoch, q.done
            ),
        );
    }
    if let Some((&last, _)) = f.packs.last_key_value() {
        if last != q.last_pack || f.packs.len() as u64 != last {
            report.violation(
                "order",
                format!(
                    "user {user}: {} pack rows up to pack {last}, the queue record's last pack is {}",
                    f.packs.len(),
                    q.last_pack
                ),
            );
        }
    }
    for row in f.packs.values() {
        if let Some(ex) = &row.executed {
            let name = match ex.outcome {
                PackOutcome::Applied => "deferred_commands.packs_applied",
                PackOutcome::Failed => "deferred_commands.packs_failed",
                PackOutcome::Skipped => "deferred_commands.packs_skipped",
            };
            report.count(name, 1);
        }
    }
    report.count(
        "deferred_commands.purchases_applied",
        f.realtime.values().filter(|r| r.result.is_ok()).count() as u64,
    );
    (report, replay)
}

/// One acknowledged pack: when the ack came, the pack id, and the connection its request was
/// sent on and the request's place in invocation order (the op id: requests invoked at one
/// instant keep their order).
struct Ack {
    at_ns: u64,
    pack_id: u64,
    conn: u64,
    op_id: usize,
}

/// Every acknowledged pack, by user.
fn acks(history: &CmdHistory) -> BTreeMap<&str, Vec<Ack>> {
    let mut acks: BTreeMap<&str, Vec<Ack>> = BTreeMap::new();
    for op in &history.ops {
        if let (CmdOp::Pack { user, pack_id, conn, .. }, Some((t, Outcome::Ok(CmdRes::Acked { .. })))) =
            (&op.op, &op.completion)
        {
            acks.entry(user).or_default().push(Ack {
                at_ns: *t,
                pack_id: *pack_id,
                conn: *conn,
                op_id: op.id,
            });
        }
    }
    acks
}

/// Invariant 6, **no state while an acknowledged pack waits**: every `sc_state` answer (and
/// every `gap` refusal, which also reveals the queue's last pack) counts every pack
/// acknowledged to that user before the request was sent, or acknowledged in answer to a
/// request sent before it on the same connection (the server handled that one first):
/// `next_pack - 1` (`expected - 1`) is at least the highest such pack id; and the state it
/// shows is the replay's state at its epoch.
pub fn check_reads(history: &CmdHistory, replays: &Replays) -> Report {
    let mut report = Report::default();
    let acks = acks(history);
    for op in &history.ops {
        let Some((_, Outcome::Ok(res))) = &op.completion else { continue };
        let user = op.op.user();
        let (last, what, conn) = match (&op.op, res) {
            (CmdOp::State { conn, .. }, CmdRes::State(s)) => {
                (s.next_pack.saturating_sub(1), "sc_state", *conn)
            }
            (CmdOp::Pack { conn, .. }, CmdRes::Refused { code, expected: Some(e) }) if code == "gap" => {
                (e.saturating_sub(1), "a gap refusal", *conn)
            }
            _ => continue,
        };
        let acked_before = acks
            .get(user)
            .into_iter()
            .flatten()
            .filter(|a| a.at_ns < op.invoke_ns || (a.conn == conn && a.op_id < op.id))
            .map(|a| a.pack_id)
            .max()
            .unwrap_or(0);
        if last < acked_before {
            report.violation(
                "reads",
                format!(
                    "user {user}: {what} (op {} at {:.3}s) counts packs up to {last}, but pack {acked_before} had been acknowledged before",
                    op.id,
                    secs(op.invoke_ns)
                ),
            );
        }
        let CmdRes::State(s) = res else { continue };
        report.count("deferred_commands.states_read", 1);
        let Some(replay) = replays.get(user) else { continue };
        match replay.states.get(&s.epoch) {
            None => report.violation(
                "reads",
                format!("user {user}: sc_state (op {}) at epoch {}, which the replay never reaches", op.id, s.epoch),
            ),
            Some(want) if (want.gold, &want.buildings) != (s.gold, &s.buildings) => report.violation(
                "reads",
                format!(
                    "user {user}: sc_state (op {} at {:.3}s) shows {} gold {:?} at epoch {}; the replay has {} gold {:?}",
                    op.id,
                    secs(op.invoke_ns),
                    s.gold,
                    s.buildings,
                    s.epoch,
                    want.gold,
                    want.buildings
                ),
            ),
            Some(_) => {}
        }
    }
    report
}

/// Invariant 5, **a purchase is applied once**: every acknowledged purchase has its row (keyed
/// by its id: one per id) with the gold sent and the epoch answered, and a first answer's
/// balance is the replay's at that epoch; every row is a purchase a client sent. (A second
/// application under the same id would change the farm without a row: the replay (3) sees it.)
pub fn check_purchases(history: &CmdHistory, finals: &Finals, replays: &Replays) -> Report {
    let mut report = Report::default();
    let mut sent: BTreeSet<(&str, &str)> = BTreeSet::new();
    for op in &history.ops {
        let CmdOp::BuyNow { user, purchase_id, gold, .. } = &op.op else { continue };
        sent.insert((user, purchase_id));
        let Some((_, Outcome::Ok(CmdRes::Bought { gold: balance, epoch, duplicate }))) = &op.completion
        else {
            continue;
        };
        report.count("deferred_commands.purchases_acked", 1);
        let Some(f) = finals.get(user) else { continue };
        let Some(row) = f.realtime.get(purchase_id) else {
            report.violation(
                "purchases",
                format!("user {user}: purchase {purchase_id} was acknowledged (op {}) but has no row", op.id),
            );
            continue;
        };
        if row.result != Ok(*epoch) || row.command.get("gold").and_then(Value::as_i64) != Some(*gold) {
            report.violation(
                "purchases",
                format!(
                    "user {user}: purchase {purchase_id} of {gold} gold answered epoch {epoch}; its row says {:?} {}",
                    row.result, row.command
                ),
            );
        }
        if *duplicate {
            report.count("deferred_commands.purchases_duplicate", 1);
            continue;
        }
        let want = replays.get(user.as_str()).and_then(|r| r.states.get(epoch)).map(|s| s.gold);
        if want != Some(*balance) {
            report.violation(
                "purchases",
                format!(
                    "user {user}: purchase {purchase_id} (op {}) answered a balance of {balance} at epoch {epoch}; the replay has {want:?}",
                    op.id
                ),
            );
        }
    }
    for (user, f) in finals {
        for pid in f.realtime.keys() {
            if !sent.contains(&(user.as_str(), pid.as_str())) {
                report.violation(
                    "purchases",
                    format!("user {user}: a row for purchase {pid}, which no client sent"),
                );
            }
        }
    }
    report
}

/// Invariant 7, **one execution of a user at a time per server**: on each server incarnation,
/// the executions of one user whose commit succeeded never overlap in true time.
pub fn check_exclusive(executions: &[Execution]) -> Report {
    let mut report = Report::default();
    type Spans<'a> = BTreeMap<(u64, &'a str), Vec<(u64, u64, u64)>>;
    let mut by: Spans = BTreeMap::new();
    for e in executions {
        if let (Some(end), Some(_)) = (e.end_ns, e.committed) {
            by.entry((e.server, &e.user)).or_default().push((e.start_ns, end, e.pack_id));
        }
    }
    let mut flagged = 0;
    for ((server, user), mut spans) in by {
        spans.sort_unstable();
        let mut reach: Option<(u64, u64)> = None;
        for (start, end, pack) in spans {
            match reach {
                Some((r_end, r_pack)) if start < r_end => {
                    flagged += 1;
                    if flagged <= 5 {
                        report.violation(
                            "exclusive",
                            format!(
                                "user {user}: server process {server} executed pack {pack} from {:.6}s while pack {r_pack} ran until {:.6}s",
                                secs(start),
                                secs(r_end)
                            ),
                        );
                    }
                    if end > r_end {
                        reach = Some((end, pack));
                    }
                }
                _ => reach = Some((end, pack)),
            }
        }
    }
    report.count("deferred_commands.executions", executions.len() as u64);
    report.count(
        "deferred_commands.executions_committed",
        executions.iter().filter(|e| e.committed.is_some()).count() as u64,
    );
    report
}

/// Invariant 8, **every queue drains** (liveness): after the run no pending-index row is left
/// and every queue record has executed every pack it stored.
pub fn check_drained(finals: &Finals) -> Report {
    let mut report = Report::default();
    for (user, f) in finals {
        if f.pending {
            report.liveness_violation(
                "drained",
                format!("user {user}: a pending-index row is left after the run"),
            );
        }
        if let Some(q) = &f.queue {
            if q.done != q.last_pack {
                report.liveness_violation(
                    "drained",
                    format!("user {user}: packs {}..={} still wait after the run", q.done + 1, q.last_pack),
                );
            }
        }
    }
    report.count("deferred_commands.users_read", finals.len() as u64);
    report
}

/// Invariant 8, second half (liveness): a client that asks for its state after the heal gets
/// an `sc_state` (not only `sc_retry_after`) within the liveness bound.
pub fn check_states_answered(history: &CmdHistory, phases: &Phases) -> Report {
    let states = History {
        ops: history
            .ops
            .iter()
            .filter(|o| matches!(o.op, CmdOp::State { .. }))
            .map(|o| {
                let mut o = o.clone();
                if let Some((t, Outcome::Ok(CmdRes::RetryAfter { .. }))) = o.completion {
                    o.completion = Some((t, Outcome::Info));
                }
                o
            })
            .collect(),
    };
    let mut report = crate::checker::liveness_after_heal(&states, phases, |_| true);
    // Keep the generic counter apart from the other liveness checks'.
    if let Some(n) = report.counters.remove("liveness.processes_after_heal") {
        report.count("deferred_commands.state_readers_after_heal", n);
    }
    report
}

#[cfg(test)]
mod tests {
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
        assert!(
            r.violations.iter().any(|v| v.checker == "order" && v.message.contains("right after")),
            "{r:#?}"
        );
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
            ops: vec![
                read(0, 11, CmdRes::RetryAfter { ms: 100 }),
                read(1, 12, CmdRes::RetryAfter { ms: 100 }),
            ],
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
}
