//! The conformance suite under `cargo test`: the fixed (scripted) cases and a window of
//! generated ones, each run against the simulated services (madsim) and against private real
//! ZooKeeper and Redis through the real adapters; the normalised transcripts must be equal.
//! The full run is the `conformance` binary (see README "How faithful is the simulator").

use tests::conformance::gen::{case_seed, generate};
use tests::conformance::ops::{Case, Service};
use tests::conformance::{diff, fixed, Harness};

fn divergences(h: &Harness, cases: &[(Case, u64)]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|(case, seed)| {
            let o = h.check(case, *seed);
            o.divergence.map(|d| {
                format!("{case}first difference at line {}:\n{}", d.line, diff::render(&o.sim, &o.real))
            })
        })
        .collect()
}

#[test]
fn fixed_cases_agree_with_the_real_services() {
    let h = Harness::start(true, true).expect("private ZooKeeper and Redis (scripts/services.sh install)");
    let cases: Vec<(Case, u64)> = fixed::cases().into_iter().map(|c| (c, 1)).collect();
    assert!(cases.len() >= 10);
    let bad = divergences(&h, &cases);
    assert!(bad.is_empty(), "{} of {} fixed cases diverge:\n{}", bad.len(), cases.len(), bad.join("\n"));
}

#[test]
fn generated_cases_agree_with_the_real_services() {
    let h = Harness::start(true, true).expect("private ZooKeeper and Redis (scripts/services.sh install)");
    let cases: Vec<(Case, u64)> = (0..200u64)
        .map(|i| {
            let seed = case_seed(0, i);
            let service = if i % 2 == 0 { Service::Zk } else { Service::Redis };
            (generate(service, seed), seed)
        })
        .collect();
    let bad = divergences(&h, &cases);
    assert!(bad.is_empty(), "{} of {} generated cases diverge:\n{}", bad.len(), cases.len(), bad.join("\n"));
}
