//! `rpc`'s checks: replies match requests, per-key order, no call run twice, no call waiting
//! past its timeout beyond the time its caller was frozen (heartbeat gaps).

use std::collections::{BTreeMap, BTreeSet};

use engine::cluster::PeerId;

use super::{
    CallOp, CallResult, Handled, CALL_TIMEOUT, DRIFT_PPM_MAX, FREEZE_GAP_NS, HEARTBEAT, TIMEOUT_SLACK,
};
use crate::checker::Report;
use crate::history::{History, Outcome, ProcessId};

/// Time (ns) within `from..to` during which `process` was frozen: heartbeat gaps longer than
/// one and a half periods. `beats` are ascending.
///
/// Only the gaps that overlap `from..to` can count, so the search starts at the last beat at
/// or before `from` and ends at the first beat at or after `to`: the check calls this once
/// per call over a run's whole heartbeat list, and scanning every gap each time was 12% of
/// an `rpc` seed's instructions (issue 19).
pub(super) fn frozen_ns(beats: &[u64], from: u64, to: u64) -> u64 {
    let period = HEARTBEAT.as_nanos() as u64;
    let first = beats.partition_point(|&b| b <= from).saturating_sub(1);
    let last = beats.partition_point(|&b| b < to).min(beats.len().saturating_sub(1));
    let beats = beats.get(first..=last).unwrap_or_default();
    beats
        .windows(2)
        .filter(|w| w[1] - w[0] > FREEZE_GAP_NS)
        .map(|w| {
            let (a, b) = (w[0] + period, w[1]);
            b.min(to).saturating_sub(a.max(from))
        })
        .sum()
}

pub(super) fn check_rpc(
    calls: &History<CallOp, CallResult>,
    handled: &[Handled],
    alive: &BTreeMap<ProcessId, Vec<u64>>,
) -> Report {
    let mut report = Report::default();
    let timeout_ns = CALL_TIMEOUT.as_nanos() as u64;
    let allowed_ns =
        timeout_ns + timeout_ns * DRIFT_PPM_MAX as u64 / 1_000_000 + TIMEOUT_SLACK.as_nanos() as u64;
    let (mut ok, mut timeouts, mut frozen_calls) = (0u64, 0u64, 0u64);
    for op in &calls.ops {
        // Replies match requests.
        match (&op.op, op.outcome()) {
            (CallOp::Echo { message, .. }, Outcome::Ok(CallResult::Echo(got))) if got == message => ok += 1,
            (CallOp::Ordered { seq, .. }, Outcome::Ok(CallResult::Ordered(got))) if got == seq => ok += 1,
            (_, Outcome::Ok(got)) => report.violation(
                "rpc.reply",
                format!(
                    "call #{} (process {}) {:?} got a reply that is not its own: {:?}",
                    op.id, op.process, op.op, got
                ),
            ),
            (_, Outcome::Info) => timeouts += 1,
            (_, Outcome::Fail) => {}
        }
        // Nobody waits past the timeout (time the caller spent frozen does not count).
        let beats = alive.get(&op.process).map(Vec::as_slice).unwrap_or_default();
        debug_assert!(beats.is_sorted(), "heartbeats are recorded in time order");
        let end = match &op.completion {
            Some((t, _)) => Some(*t),
            None => beats.last().copied().filter(|last| *last > op.invoke_ns),
        };
        if let Some(end) = end {
            let frozen = frozen_ns(beats, op.invoke_ns, end);
            frozen_calls += u64::from(frozen > 0);
            let w = end.saturating_sub(op.invoke_ns) - frozen;
            if w > allowed_ns {
                report.violation(
                    "rpc.timeout",
                    format!(
                        "call #{} (process {}) {:?} waited {:.3}s, past its {:?} timeout",
                        op.id,
                        op.process,
                        op.op,
                        w as f64 / 1e9,
                        CALL_TIMEOUT
                    ),
                );
            }
        }
    }
    // Order per (sender, receiver, key) and at-most-once per (sender, xid).
    let mut last: BTreeMap<(PeerId, PeerId, String), u64> = BTreeMap::new();
    let mut seen: BTreeSet<(PeerId, u64)> = BTreeSet::new();
    for h in handled {
        if !seen.insert((h.sender, h.xid)) {
            report.violation(
                "rpc.at_most_once",
                format!(
                    "xid {} from {:?} handled twice on {:?} (seq {})",
                    h.xid, h.sender, h.receiver, h.seq
                ),
            );
        }
        if let Some(key) = &h.key {
            let prev = last.entry((h.sender, h.receiver, key.clone())).or_insert(0);
            if h.seq <= *prev {
                report.violation(
                    "rpc.order",
                    format!(
                        "{:?} handled {key} seq {} from {:?} after seq {}: not in send order",
                        h.receiver, h.seq, h.sender, *prev
                    ),
                );
            }
            *prev = (*prev).max(h.seq);
        }
    }
    report.count("rpc.calls", calls.ops.len() as u64);
    report.count("rpc.ok", ok);
    report.count("rpc.timeouts", timeouts);
    // Their caller was frozen (paused) while they waited: time excused from the wait.
    report.count("rpc.calls_frozen", frozen_calls);
    // Never completed: their caller was killed with them in flight.
    report.count("rpc.open", calls.ops.iter().filter(|op| op.completion.is_none()).count() as u64);
    report.count("rpc.handled", handled.len() as u64);
    report.count("rpc.handled_ordered", handled.iter().filter(|h| h.key.is_some()).count() as u64);
    report
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::history::Operation;

    pub(in crate::catalogue::rpc) fn pid(n: u8) -> PeerId {
        PeerId(uuid::Uuid::from_bytes([n; 16]))
    }

    fn call(
        id: usize,
        op: CallOp,
        inv_ms: u64,
        done: Option<(u64, Outcome<CallResult>)>,
    ) -> Operation<CallOp, CallResult> {
        Operation {
            id,
            process: 0,
            op,
            invoke_ns: inv_ms * 1_000_000,
            completion: done.map(|(t, o)| (t * 1_000_000, o)),
        }
    }

    pub(in crate::catalogue::rpc) fn handled(xid: u64, seq: u64) -> Handled {
        Handled { receiver: pid(2), sender: pid(1), xid, key: Some("player-0".into()), seq }
    }

    #[test]
    fn good_history_passes() {
        let calls = History {
            ops: vec![
                call(
                    0,
                    CallOp::Echo { to: pid(2), message: "a".into() },
                    0,
                    Some((5, Outcome::Ok(CallResult::Echo("a".into())))),
                ),
                call(
                    1,
                    CallOp::Ordered { to: pid(2), key: "player-0".into(), seq: 1 },
                    10,
                    Some((2010, Outcome::Info)),
                ),
            ],
        };
        let r = check_rpc(&calls, &[handled(1, 1), handled(2, 2)], &BTreeMap::new());
        assert!(r.ok(), "{r:?}");
    }

    #[test]
    fn mismatched_reply_fails() {
        let calls = History {
            ops: vec![call(
                0,
                CallOp::Echo { to: pid(2), message: "a".into() },
                0,
                Some((5, Outcome::Ok(CallResult::Echo("b".into())))),
            )],
        };
        assert!(!check_rpc(&calls, &[], &BTreeMap::new()).ok());
    }

    #[test]
    fn out_of_order_and_double_exec_fail() {
        let calls = History::default();
        let r = check_rpc(&calls, &[handled(2, 2), handled(1, 1)], &BTreeMap::new());
        assert!(r.violations.iter().any(|v| v.checker == "rpc.order"), "{r:?}");
        let r = check_rpc(&calls, &[handled(1, 1), handled(1, 1)], &BTreeMap::new());
        assert!(r.violations.iter().any(|v| v.checker == "rpc.at_most_once"), "{r:?}");
    }

    #[test]
    fn waiting_past_the_timeout_fails() {
        let calls = History {
            ops: vec![call(
                0,
                CallOp::Echo { to: pid(2), message: "a".into() },
                0,
                Some((2500, Outcome::Info)),
            )],
        };
        assert!(!check_rpc(&calls, &[], &BTreeMap::new()).ok());
        // Never completed although its process lived on for 5 s.
        let calls = History { ops: vec![call(0, CallOp::Echo { to: pid(2), message: "a".into() }, 0, None)] };
        let beats: Vec<u64> = (0..100).map(|i| i * 50_000_000).collect();
        let alive = [(0u64, beats)].into_iter().collect();
        assert!(!check_rpc(&calls, &[], &alive).ok());
    }

    #[test]
    fn a_short_pause_counts_as_frozen_and_regular_beats_do_not() {
        // A 117 ms pause between beats at 1.000 s and 1.150 s.
        let mut beats: Vec<u64> = (0..=20).map(|i| i * 50_000_000).collect();
        beats.extend((23..=40).map(|i| i * 50_000_000));
        assert_eq!(frozen_ns(&beats, 0, 2_000_000_000), 100_000_000);
        // Beats 2 % late (drift) are not a freeze.
        let drifted: Vec<u64> = (0..=40).map(|i| i * 51_000_000).collect();
        assert_eq!(frozen_ns(&drifted, 0, 2_000_000_000), 0);
    }

    #[test]
    fn frozen_time_does_not_count() {
        // Heartbeats every 50 ms, except a 3 s freeze from 1 s to 4 s.
        let mut beats: Vec<u64> = (0..=20).map(|i| i * 50_000_000).collect();
        beats.extend((80..=120).map(|i| i * 50_000_000));
        assert_eq!(frozen_ns(&beats, 0, 6_000_000_000), 2_950_000_000);
        let calls = History {
            ops: vec![call(
                0,
                CallOp::Echo { to: pid(2), message: "a".into() },
                500,
                Some((4800, Outcome::Info)),
            )],
        };
        let alive = [(0u64, beats)].into_iter().collect();
        let r = check_rpc(&calls, &[], &alive);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.counters["rpc.calls_frozen"], 1, "{r:?}");
    }

    #[test]
    fn frozen_time_over_a_window_equals_a_scan_of_every_gap() {
        let period = HEARTBEAT.as_nanos() as u64;
        let full_scan = |beats: &[u64], from: u64, to: u64| -> u64 {
            beats
                .windows(2)
                .filter(|w| w[1] - w[0] > period + period / 2)
                .map(|w| (w[1]).min(to).saturating_sub((w[0] + period).max(from)))
                .sum()
        };
        // Regular beats with freezes of 1 to 9 periods every few beats.
        let mut beats = Vec::new();
        let mut t = 0u64;
        for i in 0..200u64 {
            beats.push(t);
            t += period + if i % 7 == 3 { (i % 9 + 1) * period } else { 0 };
        }
        let step = period / 3;
        for from in (0..t + 2 * period).step_by(step as usize * 5) {
            for to in (from..t + 2 * period).step_by(step as usize * 11) {
                assert_eq!(frozen_ns(&beats, from, to), full_scan(&beats, from, to), "{from}..{to}");
            }
        }
        assert_eq!(frozen_ns(&[], 0, 10), 0);
        assert_eq!(frozen_ns(&[5], 0, 10), 0);
    }
}
