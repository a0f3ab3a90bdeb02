//! `gate_route`'s checks, each from the players' side (see the module doc of `gate_route`).

use std::collections::BTreeMap;

use super::history::{Arrival, GateHistory, GateOp, GateRes, Handling, Transcript};
use super::n_of;
use crate::checker::Report;
use crate::history::Outcome;
use crate::scenario::Phases;

/// Each player's counter after the run: `(value, last_seq)`; `None`: no row.
pub type Finals = BTreeMap<String, Option<(i64, u64)>>;

/// How long after the heal a move must complete on its own connection.
pub const MOVE_BOUND_NS: u64 = 10_000_000_000;
/// An add sent after the heal must be answered within this (the client's reply timeout).
pub const ANSWER_BOUND_NS: u64 = 10_000_000_000;
/// Moves and adds invoked this long after the heal are held to their bounds.
pub const SETTLE_NS: u64 = 3_000_000_000;

/// The sum of the adds `1..=seq`.
pub fn prefix(seq: u64) -> i64 {
    (1..=seq).map(n_of).sum()
}

/// 1. No bad session key is ever accepted: every `cs_gate_login` with a forged, altered,
///    expired or foreign key is answered `_error session_key_rejected`.
pub fn check_keys(history: &GateHistory) -> Report {
    let mut report = Report::default();
    for op in &history.ops {
        let GateOp::BadKeyLogin { player, gate, kind } = &op.op else { continue };
        match op.outcome() {
            Outcome::Ok(GateRes::KeyRejected) | Outcome::Info | Outcome::Fail => {}
            Outcome::Ok(res) => report.violation(
                "session_keys",
                format!("{player}: a {kind:?} key was accepted by server {gate} (answered {res:?})"),
            ),
        }
        report.count("gate_route.bad_keys", 1);
    }
    report
}

/// 2. Exactly once, in order: the final counter is the sum of the adds `1..=last_seq`; every
///    answer to an add of `seq` shows the sum up to `seq` (a duplicate: up to some later
///    applied seq); no answered `seq` is beyond the final `last_seq` (nothing acknowledged is
///    lost).
pub fn check_counters(history: &GateHistory, finals: &Finals) -> Report {
    let mut report = Report::default();
    for (player, fin) in finals {
        if let Some((value, last)) = fin {
            if *value != prefix(*last) {
                report.violation(
                    "exactly_once",
                    format!(
                        "{player}: final counter {value} is not the sum of adds 1..={last} ({})",
                        prefix(*last)
                    ),
                );
            }
        }
    }
    for op in &history.ops {
        let GateOp::Add { player, seq, .. } = &op.op else { continue };
        let Outcome::Ok(GateRes::Counter { value, duplicate, backend }) = op.outcome() else { continue };
        let last = finals.get(player).copied().flatten().map_or(0, |(_, l)| l);
        if *seq > last {
            report.violation(
                "exactly_once",
                format!("{player}: seq {seq} was acknowledged (by {backend}) but the final counter stops at {last}"),
            );
        }
        let ok = if *duplicate {
            (*seq..=last.max(*seq)).any(|s| prefix(s) == *value)
        } else {
            *value == prefix(*seq)
        };
        if !ok {
            report.violation(
                "exactly_once",
                format!(
                    "{player}: the answer to seq {seq} (duplicate: {duplicate}, by {backend}) shows {value}; applied once and in order it is {}",
                    prefix(*seq)
                ),
            );
        }
    }
    report
}

/// 3. On every connection: answers come in the order their adds were sent, and each comes
///    from the backend the client was last told it is on (`sc_gate_login`, then each
///    `sc_moved`): no message is handled by the old backend after the switch.
pub fn check_transcripts(transcripts: &BTreeMap<u64, Transcript>) -> Report {
    let mut report = Report::default();
    for (conn, t) in transcripts {
        let mut current: Option<&str> = None;
        let mut sent: Vec<u64> = Vec::new();
        let mut next_sent = 0usize;
        for (at, e) in &t.events {
            match e {
                Arrival::LoggedIn { backend } | Arrival::Moved { backend, .. } => current = Some(backend),
                Arrival::Sent { seq } => sent.push(*seq),
                Arrival::Answer { seq, backend } => {
                    match sent[next_sent..].iter().position(|s| s == seq) {
                        Some(i) => next_sent += i + 1,
                        None => report.violation(
                            "reply_order",
                            format!("{} conn {conn}: the answer to seq {seq} at {:.3}s came out of send order ({sent:?})", t.player, *at as f64 / 1e9),
                        ),
                    }
                    if !backend.is_empty() && current.is_some_and(|c| c != backend) {
                        report.violation(
                            "switch",
                            format!(
                                "{} conn {conn}: seq {seq} answered by {backend} at {:.3}s, after the switch to {}",
                                t.player,
                                *at as f64 / 1e9,
                                current.unwrap_or_default()
                            ),
                        );
                    }
                }
            }
        }
        let moves = t.events.iter().filter(|(_, e)| matches!(e, Arrival::Moved { .. })).count();
        report.count("gate_route.switches_seen", moves as u64);
    }
    report
}

/// 4. One backend at a time: per player, the frames handled under one binding on one server
///    incarnation span `[first, last]`; no two such spans overlap in true time.
pub fn check_tenures(handlings: &[Handling]) -> Report {
    let mut report = Report::default();
    // player -> (server, binding) -> (first, last)
    type Spans<'a> = BTreeMap<&'a str, BTreeMap<(u64, &'a str), (u64, u64)>>;
    let mut spans: Spans = BTreeMap::new();
    for h in handlings {
        let s = spans.entry(&h.player).or_default().entry((h.server, &h.binding)).or_insert((h.t_ns, h.t_ns));
        s.0 = s.0.min(h.t_ns);
        s.1 = s.1.max(h.t_ns);
    }
    for (player, tenures) in spans {
        let mut sorted: Vec<_> = tenures.into_iter().collect();
        sorted.sort_by_key(|(_, (first, _))| *first);
        let mut latest: Option<((u64, &str), u64)> = None;
        for (who, (first, last)) in sorted {
            if let Some((prev, prev_last)) = latest {
                if first < prev_last {
                    report.violation(
                        "one_backend",
                        format!(
                            "{player}: server {} (binding {}) handled a frame at {:.3}s while server {} (binding {}) handled one until {:.3}s",
                            who.0, who.1, first as f64 / 1e9, prev.0, prev.1, prev_last as f64 / 1e9
                        ),
                    );
                }
            }
            if latest.is_none_or(|(_, l)| last > l) {
                latest = Some((who, last));
            }
        }
        report.count("gate_route.tenures", 1);
    }
    report.count("gate_route.handled_frames", handlings.len() as u64);
    report
}

/// 5. Once healed, a move loses nothing and needs no reconnect: every move started
///    [`SETTLE_NS`] after the heal is followed by `sc_moved` on its own connection within
///    [`MOVE_BOUND_NS`], and every add and move sent then is answered (none is left unknown),
///    on every connection logged in after the heal. Nor is any such add answered `gap`: a
///    client starts each connection from its first unanswered `seq`, so the backend expecting
///    an earlier `seq` than it got means that an add sent on this connection, after the heal,
///    was dropped on its way (an answer, so "never answered" alone would not see it when the
///    client sends again from the gap).
pub fn check_clean_after_heal(
    history: &GateHistory,
    transcripts: &BTreeMap<u64, Transcript>,
    phases: &Phases,
) -> Report {
    let mut report = Report::default();
    let from = phases.heal_at.as_nanos() as u64 + SETTLE_NS;
    let end = phases.end_at.as_nanos() as u64;
    let heal = phases.heal_at.as_nanos() as u64;
    // Only connections logged in after the heal: an older one may have been closed by a fault
    // (a gate's lease lapsed), which the client learns only at its next request.
    let opened_after_heal =
        |conn: &u64| transcripts.get(conn).and_then(|t| t.events.first()).is_some_and(|(at, _)| *at >= heal);
    for op in &history.ops {
        let (what, conn) = match &op.op {
            GateOp::Add { player, conn, seq, .. } => {
                (format!("{player} conn {conn}: the add of seq {seq}"), conn)
            }
            GateOp::Move { player, conn, to } => (format!("{player} conn {conn}: the move to {to}"), conn),
            GateOp::Login { .. } | GateOp::BadKeyLogin { .. } => continue,
        };
        if op.invoke_ns < from || op.invoke_ns + ANSWER_BOUND_NS > end || !opened_after_heal(conn) {
            continue;
        }
        if let (GateOp::Add { seq, .. }, Outcome::Ok(GateRes::Gap { expected })) = (&op.op, op.outcome()) {
            report.violation(
                "nothing_lost",
                format!(
                    "{what} sent at {:.3}s, after the heal, was answered gap: the backend expected seq {expected}, so adds {expected}..{} sent before it were lost",
                    op.invoke_ns as f64 / 1e9,
                    seq.saturating_sub(1)
                ),
            );
        }
        if matches!(op.outcome(), Outcome::Info) {
            report.liveness_violation(
                "nothing_lost",
                format!(
                    "{what} sent at {:.3}s, after the heal, was never answered",
                    op.invoke_ns as f64 / 1e9
                ),
            );
        }
    }
    for op in &history.ops {
        let GateOp::Move { player, conn, to } = &op.op else { continue };
        let Some((done, Outcome::Ok(GateRes::MoveStarted))) = &op.completion else { continue };
        report.count("gate_route.moves_started", 1);
        if op.invoke_ns < from || done + MOVE_BOUND_NS > end || !opened_after_heal(conn) {
            continue;
        }
        let switched = transcripts.get(conn).is_some_and(|t| {
            t.events.iter().any(|(at, e)| {
                *at >= *done && *at <= done + MOVE_BOUND_NS && matches!(e, Arrival::Moved { .. })
            })
        });
        if !switched {
            report.liveness_violation(
                "move_completes",
                format!("{player} conn {conn}: the move to {to} started at {:.3}s never switched on that connection", *done as f64 / 1e9),
            );
        }
    }
    report
}
