//! Unit tests of `runner`: verdicts, exit codes and the determinism judge.

use super::*;

#[test]
fn a_report_with_only_liveness_failures_is_a_liveness_verdict() {
    let mut r = Report::default();
    assert_eq!(Verdict::of(&r), Verdict::Pass);
    r.liveness_violation("liveness", "late");
    assert_eq!(Verdict::of(&r), Verdict::Liveness);
    r.violation("lin", "stale");
    assert_eq!(Verdict::of(&r), Verdict::Violation);
}

#[test]
fn exit_code_is_that_of_the_worst_verdict() {
    use Verdict::*;
    assert_eq!(exit_code([]), 0);
    assert_eq!(exit_code([Pass, Pass]), 0);
    assert_eq!(exit_code([Pass, Inconclusive]), 6);
    assert_eq!(exit_code([Inconclusive, Liveness]), 3);
    assert_eq!(exit_code([Pass, Liveness]), 3);
    assert_eq!(exit_code([Liveness, Crash]), 4);
    assert_eq!(exit_code([Crash, NonDeterministic]), 5);
    assert_eq!(exit_code([NonDeterministic, Violation, Liveness]), 1);
    assert_eq!(exit_code([Crash, Violation, Liveness]), 1);
}

#[test]
fn a_passing_report_with_an_undecided_key_is_inconclusive_and_a_violation_wins() {
    let mut r = Report::default();
    r.count("linearizability.inconclusive_keys", 0);
    assert_eq!(Verdict::of(&r), Verdict::Pass, "a zero counter decides nothing");
    r.count("linearizability.inconclusive_keys", 1);
    assert_eq!(Verdict::of(&r), Verdict::Inconclusive);
    r.liveness_violation("liveness", "late");
    assert_eq!(Verdict::of(&r), Verdict::Liveness);
}

fn result(verdict: Verdict, hash: &str) -> SeedResult {
    SeedResult::for_test(7, verdict, hash)
}

#[test]
fn two_runs_with_different_trace_hashes_are_judged_non_deterministic() {
    let same = judge_determinism(result(Verdict::Pass, "aa"), &result(Verdict::Pass, "aa"));
    assert_eq!((same.verdict, same.violations.len()), (Verdict::Pass, 0));
    let differ = judge_determinism(result(Verdict::Pass, "aa"), &result(Verdict::Pass, "bb"));
    assert_eq!(differ.verdict, Verdict::NonDeterministic);
    assert!(
        differ.violations[0].contains("aa") && differ.violations[0].contains("bb"),
        "{:?}",
        differ.violations
    );
    let crash = judge_determinism(result(Verdict::Crash, "aa"), &result(Verdict::Pass, "bb"));
    assert_eq!(
        crash.verdict,
        Verdict::NonDeterministic,
        "a crash that does not replay is non-determinism first"
    );
    let safety = judge_determinism(result(Verdict::Violation, "aa"), &result(Verdict::Pass, "bb"));
    assert_eq!(safety.verdict, Verdict::Violation, "a safety violation stays the verdict");
    assert!(safety.violations[0].starts_with("[determinism]"));
}
