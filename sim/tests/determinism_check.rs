//! `sim run --check-determinism` end to end: every seed runs twice in two worker processes and
//! the trace hashes are compared. A clean window passes (exit 0); with non-determinism planted
//! in the second run (the worker writes its process id into the trace) every seed fails as
//! `nondet` with exit code 5 — the check is shown to catch what it is for.

use std::process::Command;

fn sim(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sim")).args(args).output().expect("run the sim binary");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_window_whose_seeds_replay_passes_the_determinism_check() {
    let (code, out) = sim(&[
        "run",
        "coord_lock",
        "--seeds",
        "0..3",
        "--jobs",
        "1",
        "--check-determinism",
        "--no-require-probes",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nondet") && !out.contains("FAIL"), "{out}");
}

#[test]
fn seeds_whose_two_runs_differ_fail_as_non_deterministic_with_exit_code_5() {
    let (code, out) = sim(&[
        "run",
        "coord_lock",
        "--seeds",
        "0..3",
        "--jobs",
        "1",
        "--check-determinism",
        "--plant-nondeterminism",
    ]);
    assert_eq!(code, 5, "{out}");
    assert_eq!(out.matches("(nondet): [determinism] two runs of seed").count(), 3, "{out}");
}
