//! Shrinking a failing run: find a smaller fault plan that still fails.
//!
//! Greedy one-at-a-time removal (the simplest form of delta debugging): try the plan without
//! each fault in turn, keep every removal after which the seed still fails, and repeat until
//! no single removal keeps it failing. Then try shortening each remaining fault. The
//! workload's random choices still come from the seed, so the result is a plan that, with
//! that seed, reproduces the failure; it is printed as JSON for `replay --plan`.

use scenarios::faults::FaultPlan;
use scenarios::Scenario;

use crate::runner::{plan_for, run_with_plan, RunOptions, SeedResult};

/// Upper bound on runs one shrink may spend.
pub const SHRINK_RUNS_MAX: usize = 300;

/// Outcome of a shrink.
#[derive(Debug, Clone)]
pub struct Shrunk {
    pub original: FaultPlan,
    pub minimal: FaultPlan,
    pub result: SeedResult,
    pub runs: usize,
}

/// Shrinks the plan of a failing seed; `None` if the seed does not fail.
pub fn shrink(
    scenario: &dyn Scenario,
    seed: u64,
    bug: Option<&str>,
    mut progress: impl FnMut(&str),
) -> Option<Shrunk> {
    let (topo, original) = plan_for(scenario, seed, bug);
    let fails = |plan: &FaultPlan| {
        let r = run_with_plan(scenario, seed, bug, topo.clone(), plan.clone(), RunOptions::default());
        (!r.passed()).then_some(r)
    };
    let mut result = fails(&original)?;
    let mut plan = original.clone();
    let mut runs = 1;
    let mut changed = true;
    while changed && runs < SHRINK_RUNS_MAX {
        changed = false;
        let mut i = 0;
        while i < plan.faults.len() && runs < SHRINK_RUNS_MAX {
            let mut candidate = plan.clone();
            let removed = candidate.faults.remove(i);
            runs += 1;
            if let Some(r) = fails(&candidate) {
                progress(&format!("removed: {} ({} faults left)", removed.fault, candidate.faults.len()));
                plan = candidate;
                result = r;
                changed = true;
            } else {
                i += 1;
            }
        }
    }
    // Then halve durations while it still fails.
    for i in 0..plan.faults.len() {
        while plan.faults[i].duration_ms >= 400 && runs < SHRINK_RUNS_MAX {
            let mut candidate = plan.clone();
            candidate.faults[i].duration_ms /= 2;
            runs += 1;
            match fails(&candidate) {
                Some(r) => {
                    progress(&format!(
                        "shortened: {} to {} ms",
                        candidate.faults[i].fault, candidate.faults[i].duration_ms
                    ));
                    plan = candidate;
                    result = r;
                }
                None => break,
            }
        }
    }
    Some(Shrunk { original, minimal: plan, result, runs })
}
