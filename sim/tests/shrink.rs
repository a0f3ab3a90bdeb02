//! `shrink` end to end: a planted bug's failing seed shrinks to a case with no more
//! operations and faults than the original, the case survives JSON, and `replay --case`
//! reproduces the same violation with the same trace hash as the shrink's last run.

use std::process::Command;

use scenarios::Workload;
use sim::runner::{run_seed, run_with_plan, RunOptions};
use sim::shrink::{shrink, Case};

/// Runs a debug-build shrink may spend here (the CLI's default is `SHRINK_RUNS_MAX`).
const TEST_RUNS_MAX: usize = 40;

fn sim(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sim")).args(args).output().expect("run the sim binary");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_planted_bugs_shrunk_case_is_no_larger_and_replays_the_same_violation_from_json() {
    let (name, bug) = ("kv_register", "stale-read");
    let s = scenarios::lookup(name, Some(bug)).expect("scenario and bug exist");
    let caught_within = s.meta().bug(bug).expect("bug").caught_within_seeds;
    let seed = (0..caught_within)
        .find(|&seed| run_seed(&*s, seed, Some(bug), RunOptions::default()).verdict.is_violation())
        .expect("the planted bug is caught");

    let sh = shrink(&*s, seed, Some(bug), TEST_RUNS_MAX, |_| {}).expect("the seed fails");
    assert!(sh.runs <= TEST_RUNS_MAX);
    assert!(sh.result.ops <= sh.original.ops, "ops {} -> {}", sh.original.ops, sh.result.ops);
    assert!(sh.case.plan.faults.len() <= sh.original_plan.faults.len());
    assert!(sh.result.ops < sh.original.ops || sh.case.plan.faults.len() < sh.original_plan.faults.len());
    assert_eq!(sh.result.verdict, sh.original.verdict);
    assert_eq!(sh.original.main_kind(), Some(&sh.case.expected));
    assert!(sh.result.kinds.contains(&sh.case.expected), "{:?}", sh.result.kinds);

    let json = serde_json::to_string_pretty(&sh.case).expect("a case serialises");
    let back: Case = serde_json::from_str(&json).expect("and reads back");
    assert_eq!(back, sh.case);
    let (again, reproduced) = back.run(&*s, RunOptions::default());
    assert!(reproduced, "{:?}", again.violations);
    assert_eq!(again.trace_hash, sh.case.trace_hash, "a case replays to the shrink's last run");

    let path = std::env::temp_dir().join(format!("sandtable-shrink-test-{}.case.json", std::process::id()));
    std::fs::write(&path, &json).expect("write the case");
    let (code, out) = sim(&["replay", name, "--case", path.to_str().expect("utf-8 path")]);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, i32::from(sh.case.verdict.exit_code()), "{out}");
    assert!(out.contains("reproduced: "), "{out}");
    assert!(out.contains(&format!("trace-hash: {}", sh.case.trace_hash)), "{out}");
}

#[test]
fn an_explicitly_unlimited_workload_runs_exactly_the_seeds_own_run() {
    let s = scenarios::lookup("coord_lock", None).expect("scenario exists");
    let (topo, plan) = sim::runner::plan_for(&*s, 5, None);
    let a = run_seed(&*s, 5, None, RunOptions::default());
    let b = run_with_plan(&*s, 5, None, topo, plan, Workload::default(), RunOptions::default());
    assert_eq!((a.trace_hash, a.ops), (b.trace_hash, b.ops));
    assert!(a.ops > 0, "the workload's operations are counted");
}

#[test]
fn a_case_for_another_scenario_or_with_unknown_nodes_is_a_usage_error() {
    let s = scenarios::lookup("coord_lock", None).expect("scenario exists");
    let (_, plan) = sim::runner::plan_for(&*s, 1, None);
    let case = Case {
        scenario: "kv_register".into(),
        seed: 1,
        bug: None,
        workload: Workload::default(),
        plan,
        expected: sim::runner::ViolationKind {
            checker: "fencing".into(),
            class: scenarios::checker::ViolationClass::Safety,
        },
        verdict: sim::runner::Verdict::Violation,
        trace_hash: String::new(),
    };
    assert!(case.validate(&*s).unwrap_err().contains("kv_register"));
    let path = std::env::temp_dir().join(format!("sandtable-shrink-bad-{}.case.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&case).expect("serialise")).expect("write the case");
    let (code, _) = sim(&["replay", "coord_lock", "--case", path.to_str().expect("utf-8 path")]);
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 2);
}
