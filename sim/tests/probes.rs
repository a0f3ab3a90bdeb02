//! Coverage probes end to end: a sweep reports each scenario's required probes, and a window
//! too short to reach them all fails with its own exit code (7) and names what it missed —
//! the coverage check is shown to catch what it is for. A window that reaches them passes.

use std::process::Command;

fn sim(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sim")).args(args).output().expect("run the sim binary");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_window_that_misses_a_required_probe_fails_with_exit_code_7_and_names_it() {
    let (code, out) = sim(&["run", "coord_lock", "--seeds", "0..1", "--jobs", "1"]);
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("MISSED coord_lock probe \""), "{out}");
    assert!(out.contains("FAILED: required coverage probes never reached"), "{out}");
    let (code, out) = sim(&["run", "coord_lock", "--seeds", "0..1", "--jobs", "1", "--no-require-probes"]);
    assert_eq!(code, 0, "--no-require-probes lets a short window pass: {out}");
}

#[test]
fn a_window_that_reaches_every_required_probe_passes_and_lists_every_declared_probe() {
    let (code, out) = sim(&["run", "kv_register", "--seeds", "0..100", "--jobs", "2", "--probes"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("coverage kv_register: 11/11 required probes reached in 100 seeds"), "{out}");
    // --probes lists probes of other areas too, reached or not.
    assert!(out.contains("fault: node killed") && out.contains("required"), "{out}");
    assert!(out.contains("gate: session key refused"), "every declared probe is listed: {out}");
}

#[test]
fn a_planted_bugs_sweep_is_judged_by_the_bug_not_by_coverage() {
    let (code, out) = sim(&["run", "kv_register", "--seeds", "0..2", "--jobs", "1", "--bug", "stale-read"]);
    assert_eq!(code, 1, "{out}");
}
