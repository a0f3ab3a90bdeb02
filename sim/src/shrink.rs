//! Shrinking a failing run: the smallest fault plan *and* workload that still fail the same
//! way.
//!
//! "The same way" is the original run's main violation ([`SeedResult::main_kind`]: the first
//! of the worst class): a candidate counts only if it ends with the same verdict and one of
//! its violations comes from the same checker with the same class. A candidate that fails
//! differently (a liveness failure instead of the safety violation, a crash, another
//! checker) is rejected, so the shrink cannot wander off to an easier bug; so is one that
//! issues more operations than the original run.
//!
//! What this cannot rule out: a shrunk run whose violation the scenario would report even
//! without the planted bug (a liveness checker starved by a cut workload, say). `shrink`
//! keeps the heal phase of liveness failures for that reason, and the docs' table replays
//! every shrunk case without its bug to show it needs the bug.
//!
//! The steps, each greedy and deterministic (the workload's random choices still come from
//! the seed, so every candidate is one exact run), repeated until none of them changes
//! anything or [`SHRINK_RUNS_MAX`] runs are spent:
//! 1. faults: remove chunks of the plan (halves, quarters, ... single faults) while it still
//!    fails;
//! 2. clients: the fewest client nodes (the lowest-numbered kept) that still fail;
//! 3. operations per workload node: binary search for the smallest budget that fails;
//! 4. the chaos phase, then (for a safety violation only) the heal phase, never below the
//!    liveness bound: binary search;
//! 5. fault durations: halve each while it still fails.
//!
//! The result is a [`Case`]: scenario, seed, bug, workload limits, fault plan and expected
//! violation, saved as JSON for `replay --case FILE`, which must give the same trace hash as
//! the shrink's last accepted run.

use scenarios::checker::ViolationClass;
use scenarios::faults::FaultPlan;
use scenarios::{Scenario, Topology, Workload};
use serde::{Deserialize, Serialize};

use crate::runner::{plan_for, run_with_plan, RunOptions, SeedResult, Verdict, ViolationKind};

/// Upper bound on runs one shrink may spend (the original run included). The steps stop
/// where they are when it is reached; the case is then smaller, not minimal.
pub const SHRINK_RUNS_MAX: usize = 300;

/// Chaos and heal phases are cut no finer than this.
pub const PHASE_STEP_MS_MIN: u64 = 250;

/// Faults are shortened no further than this (a fault's shortest drawn length).
pub const FAULT_MS_MIN: u64 = 200;

/// A failing run as data: what `shrink --out` writes and `replay --case` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub scenario: String,
    pub seed: u64,
    pub bug: Option<String>,
    /// Limits on the workload (clients, operations per node, phases).
    pub workload: Workload,
    /// The fault plan, with the workload's limits already applied.
    pub plan: FaultPlan,
    /// The violation this case reproduces.
    pub expected: ViolationKind,
    /// The verdict of the run.
    pub verdict: Verdict,
    /// Trace hash of the run when it was saved (a replay must give the same).
    pub trace_hash: String,
}

impl Case {
    /// Runs the case; also returns whether the expected violation reproduced (the same
    /// verdict, and a violation of the expected checker and class).
    pub fn run(&self, scenario: &dyn Scenario, opts: RunOptions) -> (SeedResult, bool) {
        let topo = scenario.topology(self.bug.as_deref());
        let r = run_with_plan(
            scenario,
            self.seed,
            self.bug.as_deref(),
            topo,
            self.plan.clone(),
            self.workload,
            opts,
        );
        let ok = same_failure(&r, self.verdict, &self.expected);
        (r, ok)
    }

    /// Checks a case read from a file against its scenario: known bug, known nodes, sane plan.
    pub fn validate(&self, scenario: &dyn Scenario) -> Result<(), String> {
        if scenario.name() != self.scenario {
            return Err(format!("the case is for scenario {}, not {}", self.scenario, scenario.name()));
        }
        let topo = scenario.topology(self.bug.as_deref());
        let roles = scenario.fault_space(&topo).role_targets();
        let (topo, plan) = self.workload.apply(&topo, &self.plan);
        let mut known = topo.node_names();
        known.extend(roles);
        plan.validate(&known)
    }
}

/// True if `r` failed as the original did: same verdict, and a violation of `kind`.
pub fn same_failure(r: &SeedResult, verdict: Verdict, kind: &ViolationKind) -> bool {
    r.verdict == verdict && r.kinds.contains(kind)
}

/// Outcome of a shrink.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The seed's own run.
    pub original: SeedResult,
    pub original_plan: FaultPlan,
    pub original_clients: usize,
    /// The smallest failing run found, as a case, and its result.
    pub case: Case,
    pub result: SeedResult,
    pub minimal_clients: usize,
    /// Runs spent, the original included.
    pub runs: usize,
}

/// The search state: the smallest failing run so far.
struct Search<'a> {
    scenario: &'a dyn Scenario,
    seed: u64,
    bug: Option<&'a str>,
    topo: Topology,
    verdict: Verdict,
    kind: ViolationKind,
    workload: Workload,
    /// The plan with `workload` applied.
    plan: FaultPlan,
    result: SeedResult,
    /// The original run's operations: no candidate may issue more.
    ops_max: u64,
    runs: usize,
    runs_max: usize,
}

impl Search<'_> {
    fn budget_left(&self) -> bool {
        self.runs < self.runs_max
    }

    /// Runs a candidate; keeps it (and returns true) if it fails the same way.
    fn try_candidate(&mut self, workload: Workload, plan: FaultPlan) -> bool {
        if !self.budget_left() {
            return false;
        }
        self.runs += 1;
        let (_, plan) = workload.apply(&self.topo, &plan);
        let r = run_with_plan(
            self.scenario,
            self.seed,
            self.bug,
            self.topo.clone(),
            plan.clone(),
            workload,
            RunOptions::default(),
        );
        // Smaller never means more work: a candidate issuing more operations than the
        // original run (a deadlock that fewer faults let run longer) is not kept.
        if !same_failure(&r, self.verdict, &self.kind) || r.ops > self.ops_max {
            return false;
        }
        self.workload = workload;
        self.plan = plan;
        self.result = r;
        true
    }

    fn clients(&self) -> usize {
        self.workload.clients.unwrap_or(self.topo.clients).min(self.topo.clients)
    }

    /// Step 1: remove chunks of faults, largest first.
    fn faults(&mut self, progress: &mut impl FnMut(&str)) -> bool {
        let mut changed = false;
        let mut chunk = (self.plan.faults.len() / 2).max(1);
        loop {
            let mut i = 0;
            while i < self.plan.faults.len() && self.budget_left() {
                let mut candidate = self.plan.clone();
                let end = (i + chunk).min(candidate.faults.len());
                let removed: Vec<String> =
                    candidate.faults.drain(i..end).map(|t| t.fault.to_string()).collect();
                if self.try_candidate(self.workload, candidate) {
                    progress(&format!(
                        "removed: {} ({} faults left)",
                        removed.join("; "),
                        self.plan.faults.len()
                    ));
                    changed = true;
                } else {
                    i += chunk;
                }
            }
            if chunk == 1 || !self.budget_left() {
                return changed;
            }
            chunk /= 2;
        }
    }

    /// Step 2: the fewest clients that still fail, trying counts from one up.
    fn clients_step(&mut self, progress: &mut impl FnMut(&str)) -> bool {
        let now = self.clients();
        for n in 1..now {
            let w = Workload { clients: Some(n), ..self.workload };
            if self.try_candidate(w, self.plan.clone()) {
                progress(&format!("clients: {now} -> {n} ({} faults left)", self.plan.faults.len()));
                return true;
            }
        }
        false
    }

    /// Step 3: the smallest operation budget per node that fails (binary search; a budget
    /// as large as the run's total operations limits nothing).
    fn ops_step(&mut self, progress: &mut impl FnMut(&str)) -> bool {
        let mut hi = self.workload.ops_per_client.unwrap_or(self.result.ops).min(self.result.ops);
        let mut lo = 0;
        let before = self.workload.ops_per_client;
        while hi - lo > 1 && self.budget_left() {
            let mid = lo + (hi - lo) / 2;
            let w = Workload { ops_per_client: Some(mid), ..self.workload };
            if self.try_candidate(w, self.plan.clone()) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let changed = self.workload.ops_per_client != before;
        if changed {
            progress(&format!("ops per client: {} ({} ops in the run)", hi, self.result.ops));
        }
        changed
    }

    /// Step 4: a shorter chaos phase, then, for a safety violation, a shorter heal phase (at
    /// least the liveness bound). A liveness failure keeps its heal phase: checkers judge
    /// progress over it (some need observations past the bound), so a shorter one fails them
    /// with or without the bug.
    fn phases_step(&mut self, progress: &mut impl FnMut(&str)) -> bool {
        let mut changed = false;
        let (mut lo, mut hi) = (0, self.plan.heal_at_ms);
        while hi - lo > PHASE_STEP_MS_MIN && self.budget_left() {
            let mid = lo + (hi - lo) / 2;
            // The heal phase keeps its length.
            let run = mid + (self.plan.end_ms - self.plan.heal_at_ms);
            let w = Workload { chaos_ms: Some(mid), run_ms: Some(run), ..self.workload };
            if self.try_candidate(w, self.plan.clone()) {
                hi = mid;
                changed = true;
            } else {
                lo = mid;
            }
        }
        let heal = self.plan.heal_at_ms;
        let shortest = heal + self.plan.liveness_bound_ms;
        if self.kind.class == ViolationClass::Safety && shortest < self.plan.end_ms {
            // The shortest heal phase allowed first: the usual answer, in one run.
            let w = Workload { chaos_ms: Some(heal), run_ms: Some(shortest), ..self.workload };
            if self.try_candidate(w, self.plan.clone()) {
                changed = true;
            } else {
                let (mut lo, mut hi) = (shortest, self.plan.end_ms);
                while hi - lo > PHASE_STEP_MS_MIN && self.budget_left() {
                    let mid = lo + (hi - lo) / 2;
                    let w = Workload { chaos_ms: Some(heal), run_ms: Some(mid), ..self.workload };
                    if self.try_candidate(w, self.plan.clone()) {
                        hi = mid;
                        changed = true;
                    } else {
                        lo = mid;
                    }
                }
            }
        }
        if changed {
            progress(&format!("phases: chaos {} ms, run {} ms", self.plan.heal_at_ms, self.plan.end_ms));
        }
        changed
    }

    /// Step 5: halve each fault's duration while it still fails.
    fn durations(&mut self, progress: &mut impl FnMut(&str)) -> bool {
        let mut changed = false;
        for i in 0..self.plan.faults.len() {
            while self.plan.faults[i].duration_ms >= 2 * FAULT_MS_MIN && self.budget_left() {
                let mut candidate = self.plan.clone();
                candidate.faults[i].duration_ms /= 2;
                if !self.try_candidate(self.workload, candidate) {
                    break;
                }
                let t = &self.plan.faults[i];
                progress(&format!("shortened: {} to {} ms", t.fault, t.duration_ms));
                changed = true;
            }
        }
        changed
    }
}

/// Shrinks a failing seed's fault plan and workload within `runs_max` runs (the original
/// included; [`SHRINK_RUNS_MAX`] normally); `None` if the seed does not fail with a checker's
/// violation (a pass, a crash, an inconclusive check: nothing to keep).
pub fn shrink(
    scenario: &dyn Scenario,
    seed: u64,
    bug: Option<&str>,
    runs_max: usize,
    mut progress: impl FnMut(&str),
) -> Option<Shrunk> {
    let (topo, original_plan) = plan_for(scenario, seed, bug);
    let original = run_with_plan(
        scenario,
        seed,
        bug,
        topo.clone(),
        original_plan.clone(),
        Workload::default(),
        RunOptions::default(),
    );
    if !original.verdict.is_violation() {
        return None;
    }
    let kind = original.main_kind()?.clone();
    progress(&format!(
        "keeping {kind} ({:?}), {} ops, {} faults",
        original.verdict,
        original.ops,
        original_plan.faults.len()
    ));
    let mut s = Search {
        scenario,
        seed,
        bug,
        topo: topo.clone(),
        verdict: original.verdict,
        kind: kind.clone(),
        workload: Workload::default(),
        plan: original_plan.clone(),
        result: original.clone(),
        ops_max: original.ops,
        runs: 1,
        runs_max,
    };
    loop {
        let mut changed = s.faults(&mut progress);
        changed |= s.clients_step(&mut progress);
        changed |= s.ops_step(&mut progress);
        changed |= s.phases_step(&mut progress);
        changed |= s.durations(&mut progress);
        if !changed || !s.budget_left() {
            break;
        }
    }
    let case = Case {
        scenario: scenario.name().to_string(),
        seed,
        bug: bug.map(str::to_string),
        workload: s.workload,
        plan: s.plan.clone(),
        expected: kind,
        verdict: s.verdict,
        trace_hash: s.result.trace_hash.clone(),
    };
    let minimal_clients = s.clients();
    Some(Shrunk {
        original,
        original_plan,
        original_clients: topo.clients,
        case,
        result: s.result,
        minimal_clients,
        runs: s.runs,
    })
}
