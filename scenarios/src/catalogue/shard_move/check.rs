//! `shard_move`'s checks, one function per numbered invariant of the scenario doc.

use std::collections::BTreeMap;

use super::history::{switches, ShardHistory, ShardOp, ShardResult};
use crate::checker::Report;
use crate::history::Outcome;

/// Longest freeze of a shard by a move made after the heal (the bound).
pub const FREEZE_BOUND_MS: u64 = 1_000;
/// What an append adds to a freeze: its read and its write.
pub const APPEND_SLACK_MS: u64 = 300;
/// Longest wait of an append to a shard that is *not* moving, after the heal has settled.
pub const OTHER_SHARD_WAIT_MAX_MS: u64 = 500;
/// Shortest time after the heal before latency bounds apply (clients reconnect, sessions
/// renew); the scenario's liveness bound when that is longer. A client whose ZooKeeper
/// session was lost in the chaos phase may learn it only after the heal and then waits for a
/// fresh shard map: `sim run shard_move --seeds 2312..2313` had one re-establish its session
/// 3.2 s after the heal, and its append to an unmoving shard waited 2.1 s for the map.
pub const SETTLE_MS: u64 = 2_000;

const MS: u64 = 1_000_000;

/// The final content of each user's log row (`None`: the row could not be read).
pub type FinalLogs = BTreeMap<String, Option<Vec<u64>>>;

/// Invariants 1-3: nothing acknowledged is lost, nothing is applied twice, nothing refused
/// appears.
pub fn check_final_logs(history: &ShardHistory, finals: &FinalLogs) -> Report {
    let mut report = Report::default();
    let mut outcome_of: BTreeMap<u64, (&str, Outcome<&ShardResult>)> = BTreeMap::new();
    for op in &history.ops {
        if let ShardOp::Append { user, id, .. } = &op.op {
            outcome_of.insert(*id, (user.as_str(), op.outcome()));
        }
    }
    for (user, log) in finals {
        let Some(log) = log else {
            report.liveness_violation("final_read", format!("user {user}: the final row could not be read"));
            continue;
        };
        let mut seen = BTreeMap::new();
        for id in log {
            *seen.entry(*id).or_insert(0u32) += 1;
        }
        for (id, n) in &seen {
            if *n > 1 {
                report.violation("duplicate", format!("user {user}: append {id} applied {n} times"));
            }
            match outcome_of.get(id) {
                Some((_, Outcome::Fail)) => report
                    .violation("phantom", format!("user {user}: append {id} was refused but is in the row")),
                Some((owner, _)) if *owner != user.as_str() => {
                    report.violation("phantom", format!("user {user}: append {id} belongs to user {owner}"))
                }
                None => report.violation("phantom", format!("user {user}: append {id} was never issued")),
                _ => {}
            }
        }
        report.count("final_entries", log.len() as u64);
    }
    for op in &history.ops {
        if let (
            ShardOp::Append { user, id, .. },
            Outcome::Ok(ShardResult::Appended { instance, map_version }),
        ) = (&op.op, op.outcome())
        {
            let present = finals.get(user).and_then(|l| l.as_ref()).is_some_and(|l| l.contains(id));
            let readable = finals.get(user).is_some_and(|l| l.is_some());
            if readable && !present {
                report.violation(
                    "lost",
                    format!("user {user}: append {id}, acknowledged by {instance} at map v{map_version}, is not in the final row"),
                );
            }
        }
    }
    report
}

/// Invariant 4: no write is accepted by an instance after a move took its shard away (until
/// a later move brings the shard back).
pub fn check_owner(history: &ShardHistory) -> Report {
    let mut report = Report::default();
    let switches = switches(history);
    for op in &history.ops {
        let (
            ShardOp::Append { user, shard, id },
            Some((ok_ns, Outcome::Ok(ShardResult::Appended { instance, map_version }))),
        ) = (&op.op, &op.completion)
        else {
            continue;
        };
        for (i, away) in switches.iter().enumerate() {
            if away.shard != *shard || &away.from != instance || away.ok_ns >= op.invoke_ns {
                continue;
            }
            // The shard came back to `instance` by a move invoked before the append returned?
            // A move whose outcome is unknown (its mover was killed or cut off after recording
            // it) counts too: another mover may have completed it (`sim run shard_move --seeds
            // 5735..5736`: the mover died after recording a move back, which was completed).
            let back = switches[i + 1..]
                .iter()
                .any(|s| s.shard == *shard && &s.to == instance && s.invoke_ns < *ok_ns)
                || history.ops.iter().any(|m| {
                    matches!(&m.op, ShardOp::Move { shard: s, to } if s == shard && to == instance)
                        && matches!(m.outcome(), Outcome::Info)
                        && m.invoke_ns > away.invoke_ns
                        && m.invoke_ns < *ok_ns
                });
            if !back {
                report.violation(
                    "owner",
                    format!(
                        "user {user}: append {id} (invoked {} ms) accepted by {instance} at map v{map_version}, but shard {shard} moved {}->{} at {} ms",
                        op.invoke_ns / MS,
                        away.from,
                        away.to,
                        away.ok_ns / MS
                    ),
                );
                break;
            }
        }
    }
    report.count("switches", switches.len() as u64);
    report
}

/// Invariants 5-6: after the heal has settled, a move freezes its shard for at most
/// [`FREEZE_BOUND_MS`], appends to it wait no longer than that, and appends to other shards
/// do not wait at all (beyond [`OTHER_SHARD_WAIT_MAX_MS`]).
pub fn check_freeze(history: &ShardHistory, heal_ns: u64, liveness_bound_ns: u64) -> Report {
    let mut report = Report::default();
    let settled = heal_ns + (SETTLE_MS * MS).max(liveness_bound_ns);
    let switches = switches(history);
    let mut frozen: Vec<u64> = switches.iter().map(|s| s.frozen_ms).collect();
    frozen.sort_unstable();
    if let Some(p99) = frozen.get((frozen.len() * 99).div_ceil(100).saturating_sub(1)) {
        report.count_max("max_freeze_p99_ms", *p99);
    }
    for s in switches.iter().filter(|s| s.invoke_ns >= settled) {
        report.count_max("max_settled_freeze_ms", s.frozen_ms);
        if s.frozen_ms > FREEZE_BOUND_MS {
            report.violation(
                "freeze",
                format!(
                    "shard {} move {}->{} froze it for {} ms (bound {FREEZE_BOUND_MS})",
                    s.shard, s.from, s.to, s.frozen_ms
                ),
            );
        }
    }
    for op in &history.ops {
        let (ShardOp::Append { shard, id, .. }, Some((ok_ns, Outcome::Ok(_)))) = (&op.op, &op.completion)
        else {
            continue;
        };
        if op.invoke_ns < settled {
            continue;
        }
        let waited_ms = (ok_ns - op.invoke_ns) / MS;
        let during_move =
            switches.iter().any(|s| s.shard == *shard && s.invoke_ns < *ok_ns && op.invoke_ns < s.ok_ns);
        if during_move {
            report.count_max("max_moving_shard_append_ms", waited_ms);
            if waited_ms > FREEZE_BOUND_MS + APPEND_SLACK_MS {
                report.violation(
                    "freeze",
                    format!("append {id} to moving shard {shard} waited {waited_ms} ms"),
                );
            }
        } else {
            report.count_max("max_other_shard_append_ms", waited_ms);
            if waited_ms > OTHER_SHARD_WAIT_MAX_MS {
                report.liveness_violation(
                    "other_shards",
                    format!("append {id} to shard {shard} (not moving) waited {waited_ms} ms"),
                );
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;

    fn op(
        id: usize,
        op: ShardOp,
        invoke_ms: u64,
        done: Option<(u64, Outcome<ShardResult>)>,
    ) -> crate::history::Operation<ShardOp, ShardResult> {
        Operation {
            id,
            process: 1,
            op,
            invoke_ns: invoke_ms * MS,
            completion: done.map(|(t, o)| (t * MS, o)),
        }
    }

    fn append(
        n: usize,
        user: &str,
        shard: u32,
        id: u64,
        at: u64,
        done: Option<(u64, Outcome<ShardResult>)>,
    ) -> crate::history::Operation<ShardOp, ShardResult> {
        op(n, ShardOp::Append { user: user.into(), shard, id }, at, done)
    }

    fn appended(instance: &str, v: u64) -> Outcome<ShardResult> {
        Outcome::Ok(ShardResult::Appended { instance: instance.into(), map_version: v })
    }

    fn moved(shard: u32, from: &str, to: &str, frozen_ms: u64) -> Outcome<ShardResult> {
        Outcome::Ok(ShardResult::Moved {
            shard,
            from: from.into(),
            to: to.into(),
            version: 2,
            frozen_ms,
            rolled_back: false,
        })
    }

    #[test]
    fn a_lost_a_duplicated_and_a_phantom_append_are_each_reported() {
        let h = ShardHistory {
            ops: vec![
                append(0, "1", 1, 10, 0, Some((5, appended("db-0", 1)))),
                append(1, "1", 1, 11, 6, Some((9, appended("db-0", 1)))),
                append(2, "1", 1, 12, 10, Some((12, Outcome::Fail))),
                append(3, "1", 1, 13, 13, None),
            ],
        };
        let good = FinalLogs::from([("1".to_string(), Some(vec![10, 11, 13]))]);
        assert!(check_final_logs(&h, &good).ok());
        let lost = FinalLogs::from([("1".to_string(), Some(vec![10]))]);
        assert_eq!(check_final_logs(&h, &lost).violations[0].checker, "lost");
        let dup = FinalLogs::from([("1".to_string(), Some(vec![10, 11, 11]))]);
        assert_eq!(check_final_logs(&h, &dup).violations[0].checker, "duplicate");
        let phantom = FinalLogs::from([("1".to_string(), Some(vec![10, 11, 12]))]);
        assert_eq!(check_final_logs(&h, &phantom).violations[0].checker, "phantom");
    }

    #[test]
    fn a_write_after_a_move_back_of_unknown_outcome_is_not_reported() {
        let mv = op(
            0,
            ShardOp::Move { shard: 1, to: "db-1".into() },
            100,
            Some((200, moved(1, "db-0", "db-1", 30))),
        );
        // Its mover died after recording the move back: no completion.
        let back = op(1, ShardOp::Move { shard: 1, to: "db-0".into() }, 300, None);
        let later = append(2, "1", 1, 12, 400, Some((450, appended("db-0", 3))));
        assert!(check_owner(&ShardHistory { ops: vec![mv.clone(), back, later.clone()] }).ok());
        // A move back that failed, or to another instance, does not excuse it.
        let failed = op(1, ShardOp::Move { shard: 1, to: "db-0".into() }, 300, Some((350, Outcome::Fail)));
        assert!(!check_owner(&ShardHistory { ops: vec![mv.clone(), failed, later.clone()] }).ok());
        let elsewhere = op(1, ShardOp::Move { shard: 1, to: "db-2".into() }, 300, None);
        assert!(!check_owner(&ShardHistory { ops: vec![mv.clone(), elsewhere, later.clone()] }).ok());
        // Nor does one invoked after the append returned.
        let late = op(1, ShardOp::Move { shard: 1, to: "db-0".into() }, 460, None);
        assert!(!check_owner(&ShardHistory { ops: vec![mv, late, later] }).ok());
    }

    #[test]
    fn a_write_accepted_by_the_old_instance_after_the_switch_is_reported() {
        let mv = op(
            0,
            ShardOp::Move { shard: 1, to: "db-1".into() },
            100,
            Some((200, moved(1, "db-0", "db-1", 30))),
        );
        let before = append(1, "1", 1, 10, 150, Some((210, appended("db-0", 1))));
        let after_ok = append(2, "1", 1, 11, 250, Some((260, appended("db-1", 2))));
        assert!(check_owner(&ShardHistory { ops: vec![mv.clone(), before, after_ok] }).ok());
        let stale = append(3, "1", 1, 12, 250, Some((260, appended("db-0", 1))));
        let r = check_owner(&ShardHistory { ops: vec![mv.clone(), stale.clone()] });
        assert_eq!(r.violations[0].checker, "owner");
        // Unless the shard came back first.
        let back = op(
            4,
            ShardOp::Move { shard: 1, to: "db-0".into() },
            220,
            Some((240, moved(1, "db-1", "db-0", 20))),
        );
        assert!(check_owner(&ShardHistory { ops: vec![mv, back, stale] }).ok());
    }

    #[test]
    fn a_long_freeze_after_the_heal_and_a_waiting_other_shard_are_reported() {
        let heal = 10_000;
        let t = heal + SETTLE_MS + 100;
        let quick = op(
            0,
            ShardOp::Move { shard: 1, to: "db-1".into() },
            t,
            Some((t + 100, moved(1, "db-0", "db-1", 40))),
        );
        let ok_append = append(1, "1", 1, 10, t + 10, Some((t + 90, appended("db-1", 2))));
        assert!(check_freeze(&ShardHistory { ops: vec![quick.clone(), ok_append] }, heal * MS, 0).ok());
        let slow = op(
            0,
            ShardOp::Move { shard: 1, to: "db-1".into() },
            t,
            Some((t + 2_000, moved(1, "db-0", "db-1", 1_500))),
        );
        assert_eq!(
            check_freeze(&ShardHistory { ops: vec![slow] }, heal * MS, 0).violations[0].checker,
            "freeze"
        );
        let other = append(2, "2", 2, 11, t + 10, Some((t + 900, appended("db-0", 1))));
        let r = check_freeze(&ShardHistory { ops: vec![quick, other] }, heal * MS, 0);
        assert_eq!(r.violations[0].checker, "other_shards");
        // Chaos-phase freezes only feed the p99 counter.
        let chaos = op(
            0,
            ShardOp::Move { shard: 1, to: "db-1".into() },
            100,
            Some((5_000, moved(1, "db-0", "db-1", 4_000))),
        );
        let r = check_freeze(&ShardHistory { ops: vec![chaos] }, heal * MS, 0);
        assert!(r.ok());
        assert_eq!(r.counter("max_freeze_p99_ms"), 4_000);
    }

    #[test]
    fn latency_bounds_wait_for_the_liveness_bound_when_it_is_longer_than_the_settle_time() {
        let heal = 10_000;
        let t = heal + SETTLE_MS + 100;
        let waited = append(2, "2", 2, 11, t, Some((t + 2_100, appended("db-0", 1))));
        let h = ShardHistory { ops: vec![waited] };
        assert_eq!(check_freeze(&h, heal * MS, 0).violations[0].checker, "other_shards");
        assert!(check_freeze(&h, heal * MS, 5_000 * MS).ok());
    }
}
