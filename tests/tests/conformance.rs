//! The conformance suite under `cargo test`: the fixed (scripted) cases and a window of
//! generated ones, each run against the simulated services (madsim) and against private real
//! ZooKeeper and Redis, and (the `Db` port) against SQLite and a private MariaDB through the
//! real adapters; the normalised transcripts must be equal.
//! The full run is the `conformance` binary (see README "How faithful is the simulator").

use tests::conformance::gen::{case_seed, generate};
use tests::conformance::ops::{Case, Service};
use tests::conformance::real_backend::Services;
use tests::conformance::{diff, fixed, fixed_db, Harness};

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

fn sql_harness() -> Harness {
    let services = Services { sqlite: true, mariadb: true, ..Services::default() };
    Harness::start_services(services)
        .expect("a SQLite file and a private MariaDB (scripts/services.sh install)")
}

#[test]
fn fixed_sql_cases_agree_on_sqlite_and_mariadb() {
    let h = sql_harness();
    let cases: Vec<(Case, u64)> = fixed_db::cases().into_iter().map(|c| (c, 1)).collect();
    assert!(cases.len() >= 14);
    let bad = divergences(&h, &cases);
    assert!(bad.is_empty(), "{} of {} fixed SQL cases diverge:\n{}", bad.len(), cases.len(), bad.join("\n"));
}

#[test]
fn generated_sql_cases_agree_on_sqlite_and_mariadb() {
    let h = sql_harness();
    let cases: Vec<(Case, u64)> = (0..150u64)
        .flat_map(|i| {
            let seed = case_seed(0, i);
            [Service::Sqlite, Service::Mariadb].map(|s| (generate(s, seed), seed))
        })
        .collect();
    let bad = divergences(&h, &cases);
    assert!(
        bad.is_empty(),
        "{} of {} generated SQL cases diverge:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}
