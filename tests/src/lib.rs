//! Shared helpers for the workspace integration tests: seed windows run in-process through
//! the same runner the CLI uses.

use std::collections::BTreeMap;

use scenarios::Scenario;
use sim::runner::{replay_command, run_seed, RunOptions, SeedResult};

/// Seeds per scenario that `cargo test` sweeps: 100, a quick window in a debug build (the
/// CI's release sweep runs 0..1000 of every scenario right after, so a longer window here
/// only repeated its first seeds slowly). Override with `SANDTABLE_TEST_SEEDS`.
pub fn seed_window() -> std::ops::Range<u64> {
    let n = std::env::var("SANDTABLE_TEST_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    0..n
}

/// What a seed window found: the failed seeds with their replay commands, and every
/// coverage probe's hits summed over the window.
pub struct Window {
    pub failed: Vec<(SeedResult, String)>,
    pub probes: BTreeMap<String, u64>,
}

impl Window {
    /// The probes of `required` no seed of the window reached.
    pub fn missed<'a>(&self, required: &[&'a str]) -> Vec<&'a str> {
        required.iter().copied().filter(|p| !self.probes.contains_key(*p)).collect()
    }
}

/// Runs `seeds` and returns the failures, each with its replay command, and the probes hit.
pub fn window(scenario: &dyn Scenario, seeds: std::ops::Range<u64>, bug: Option<&str>) -> Window {
    let mut w = Window { failed: Vec::new(), probes: BTreeMap::new() };
    for seed in seeds {
        let r = run_seed(scenario, seed, bug, RunOptions::default());
        for (k, v) in &r.probes {
            *w.probes.entry(k.clone()).or_insert(0) += v;
        }
        if !r.passed() {
            let cmd = replay_command(scenario.name(), r.seed, bug);
            w.failed.push((r, cmd));
        }
    }
    w
}

pub mod conformance;
