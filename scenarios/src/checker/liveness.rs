//! Liveness after the heal: once every fault is repaired, the system must make progress again
//! within a stated bound.

use std::collections::BTreeMap;

use super::Report;
use crate::history::{History, Outcome, ProcessId};
use crate::scenario::Phases;

/// Every process (selected by `include`) that invokes operations after the heal must
/// complete one successfully within `phases.liveness_bound` of the later of the heal and its
/// first post-heal invocation (a client restarted at the heal starts a little later).
pub fn liveness_after_heal<O, R>(
    history: &History<O, R>,
    phases: &Phases,
    include: impl Fn(ProcessId) -> bool,
) -> Report {
    let heal = phases.heal_at.as_nanos() as u64;
    let bound = phases.liveness_bound.as_nanos() as u64;
    // process -> (first invoke after heal, first ok completion after heal)
    let mut seen: BTreeMap<ProcessId, (u64, Option<u64>)> = BTreeMap::new();
    for op in &history.ops {
        if !include(op.process) || op.invoke_ns < heal {
            continue;
        }
        let e = seen.entry(op.process).or_insert((op.invoke_ns, None));
        if let Some((t, Outcome::Ok(_))) = &op.completion {
            if e.1.is_none_or(|x| *t < x) {
                e.1 = Some(*t);
            }
        }
    }
    let mut report = Report::default();
    for (p, (first, ok)) in &seen {
        let deadline = heal.max(*first) + bound;
        match ok {
            Some(t) if *t <= deadline => {}
            Some(t) => report.liveness_violation(
                "liveness",
                format!(
                    "process {p}: first success after the heal at {:.3}s, later than the bound {:.3}s",
                    *t as f64 / 1e9,
                    deadline as f64 / 1e9
                ),
            ),
            None => report.liveness_violation(
                "liveness",
                format!(
                    "process {p}: no successful operation after the heal (first try at {:.3}s, bound {:.3}s)",
                    *first as f64 / 1e9,
                    deadline as f64 / 1e9
                ),
            ),
        }
    }
    report.count("liveness.processes_after_heal", seen.len() as u64);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;
    use std::sync::Arc;
    use std::time::Duration;

    fn phases() -> Phases {
        Phases {
            now: Arc::new(|| 0),
            heal_at: Duration::from_secs(10),
            end_at: Duration::from_secs(20),
            liveness_bound: Duration::from_secs(5),
        }
    }

    fn op(id: usize, p: u64, inv_s: f64, done: Option<(f64, Outcome<()>)>) -> Operation<(), ()> {
        Operation {
            id,
            process: p,
            op: (),
            invoke_ns: (inv_s * 1e9) as u64,
            completion: done.map(|(t, o)| ((t * 1e9) as u64, o)),
        }
    }

    #[test]
    fn progress_in_time_passes() {
        let h = History { ops: vec![op(0, 1, 10.5, Some((11.0, Outcome::Ok(()))))] };
        assert!(liveness_after_heal(&h, &phases(), |_| true).ok());
    }

    #[test]
    fn no_progress_fails() {
        let h = History {
            ops: vec![
                op(0, 1, 10.5, Some((11.0, Outcome::Fail))),
                op(1, 1, 11.5, Some((12.0, Outcome::Info))),
                op(2, 2, 10.1, Some((10.2, Outcome::Ok(())))),
            ],
        };
        let r = liveness_after_heal(&h, &phases(), |_| true);
        assert!(!r.ok());
        assert_eq!(r.violations.len(), 1);
        assert!(r.violations[0].message.contains("process 1"));
        assert_eq!(r.violations[0].class, crate::checker::ViolationClass::Liveness);
    }

    #[test]
    fn late_progress_fails() {
        let h = History { ops: vec![op(0, 1, 10.5, Some((16.0, Outcome::Ok(()))))] };
        assert!(!liveness_after_heal(&h, &phases(), |_| true).ok());
    }
}
