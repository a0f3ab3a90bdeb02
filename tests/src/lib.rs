//! Shared helpers for the workspace integration tests: seed windows run in-process through
//! the same runner the CLI uses.

use scenarios::Scenario;
use sim::runner::{replay_command, run_seed, RunOptions, SeedResult};

/// Seeds per scenario that `cargo test` sweeps: 100, a quick window in a debug build (the
/// CI's release sweep runs 0..1000 of every scenario right after, so a longer window here
/// only repeated its first seeds slowly). Override with `SANDTABLE_TEST_SEEDS`.
pub fn seed_window() -> std::ops::Range<u64> {
    let n = std::env::var("SANDTABLE_TEST_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    0..n
}

/// Runs `seeds` and returns the failures, each with its replay command.
pub fn failures(
    scenario: &dyn Scenario,
    seeds: std::ops::Range<u64>,
    bug: Option<&str>,
) -> Vec<(SeedResult, String)> {
    seeds
        .map(|seed| run_seed(scenario, seed, bug, RunOptions::default()))
        .filter(|r| !r.passed())
        .map(|r| {
            let cmd = replay_command(scenario.name(), r.seed, bug);
            (r, cmd)
        })
        .collect()
}

pub mod conformance;
