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
mod tests;
