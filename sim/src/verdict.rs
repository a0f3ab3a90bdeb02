//! How a seed ended ([`Verdict`], [`SeedResult`]) and what the runner's exit code makes of
//! verdicts: plain data shared by the runner, the sweep and the shrinker (moved out of
//! `runner.rs`, which runs seeds).

use std::collections::BTreeMap;

use scenarios::checker::{Report, ViolationClass};
use serde::{Deserialize, Serialize};

/// How a seed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Pass,
    /// A checker found a safety violation (and maybe liveness failures too).
    Violation,
    /// Checkers found liveness failures only: progress after the heal did not come in time.
    Liveness,
    /// The simulation panicked (a bug in the engine, a service model or the runner).
    Crash,
    /// Two runs of the seed gave different traces (`run --check-determinism`): the seed does
    /// not replay, so none of its other findings can be trusted to reproduce.
    NonDeterministic,
    /// No violation, but a check could not decide (a linearizability key over its search
    /// budget: counters ending in [`INCONCLUSIVE_SUFFIX`]): the history was not fully judged.
    Inconclusive,
}

/// Checkers count the parts of a history they could not decide under counters ending so.
pub const INCONCLUSIVE_SUFFIX: &str = ".inconclusive_keys";

impl Verdict {
    /// The verdict of a finished check.
    pub fn of(report: &Report) -> Verdict {
        match report.worst_class() {
            Some(ViolationClass::Safety) => Verdict::Violation,
            Some(ViolationClass::Liveness) => Verdict::Liveness,
            None if report.counters.iter().any(|(k, &n)| n > 0 && k.ends_with(INCONCLUSIVE_SUFFIX)) => {
                Verdict::Inconclusive
            }
            None => Verdict::Pass,
        }
    }

    /// The runner's exit code for this verdict (see [`exit_code`]).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Violation => 1,
            Verdict::Liveness => 3,
            Verdict::Crash => 4,
            Verdict::NonDeterministic => 5,
            Verdict::Inconclusive => 6,
        }
    }

    /// How bad, for picking the exit code of many seeds: safety over non-determinism over
    /// crash over liveness over inconclusive.
    fn severity(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Inconclusive => 1,
            Verdict::Liveness => 2,
            Verdict::Crash => 3,
            Verdict::NonDeterministic => 4,
            Verdict::Violation => 5,
        }
    }

    /// Short name for tables: `pass`, `safety`, `liveness`, `crash`, `nondet`, `inconcl`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Violation => "safety",
            Verdict::Liveness => "liveness",
            Verdict::Crash => "crash",
            Verdict::NonDeterministic => "nondet",
            Verdict::Inconclusive => "inconcl",
        }
    }

    /// True for a checker's finding (safety or liveness), as a planted bug must produce.
    pub fn is_violation(self) -> bool {
        matches!(self, Verdict::Violation | Verdict::Liveness)
    }
}

/// The exit code of a sweep whose seeds all passed but that never reached one of its
/// scenarios' required coverage probes (`ScenarioMeta::probes`): the seeds tested less than
/// the scenario promises.
pub const EXIT_PROBE_MISSED: u8 = 7;

/// The exit code of a run of many seeds: 0 if all passed, else that of the worst verdict —
/// 1 a safety violation, 5 non-determinism, 4 a crash, 3 liveness failures only, 6 checks
/// that could not decide (2 is a usage error; [`EXIT_PROBE_MISSED`] a coverage miss).
pub fn exit_code(verdicts: impl IntoIterator<Item = Verdict>) -> u8 {
    verdicts.into_iter().max_by_key(|v| v.severity()).unwrap_or(Verdict::Pass).exit_code()
}

/// The result of a seed run twice (`first`, then `second` in another process): `first` if
/// the two traces hash alike, else `first` judged [`Verdict::NonDeterministic`] (unless it
/// found a safety violation, which stays the verdict), with the two hashes named.
pub fn judge_determinism(mut first: SeedResult, second: &SeedResult) -> SeedResult {
    if first.trace_hash == second.trace_hash {
        return first;
    }
    first.violations.insert(
        0,
        format!(
            "[determinism] two runs of seed {} gave different traces: {} ({} lines, {:?}) then {} ({} lines, {:?})",
            first.seed,
            first.trace_hash,
            first.trace_lines,
            first.verdict,
            second.trace_hash,
            second.trace_lines,
            second.verdict
        ),
    );
    if first.verdict != Verdict::Violation {
        first.verdict = Verdict::NonDeterministic;
    }
    first
}

/// Which checker found a violation, and of which class: what `shrink` keeps while it cuts
/// a failing run down (the message may change, the kind may not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationKind {
    pub checker: String,
    pub class: ViolationClass,
}

impl std::fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let class = match self.class {
            ViolationClass::Safety => "safety",
            ViolationClass::Liveness => "liveness",
        };
        write!(f, "[{}] {class}", self.checker)
    }
}

/// Result of one seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedResult {
    pub scenario: String,
    pub seed: u64,
    pub bug: Option<String>,
    pub verdict: Verdict,
    pub violations: Vec<String>,
    /// The checker and class of each of the checkers' violations, in report order (a crash
    /// or non-determinism has none).
    #[serde(default)]
    pub kinds: Vec<ViolationKind>,
    /// Operations the workload issued (every node's [`OpBudget::issued`]).
    #[serde(default)]
    pub ops: u64,
    pub counters: BTreeMap<String, u64>,
    /// Hits of each coverage probe reached in this run ([`engine::probe`]).
    #[serde(default)]
    pub probes: BTreeMap<String, u64>,
    pub trace_hash: String,
    pub trace_lines: u64,
    /// Simulated frames sent (madsim network messages).
    pub frames: u64,
    pub sim_secs: f64,
    pub wall_secs: f64,
}

impl SeedResult {
    /// A result with only what unit tests look at: seed, verdict and trace hash.
    #[cfg(test)]
    pub(crate) fn for_test(seed: u64, verdict: Verdict, trace_hash: &str) -> SeedResult {
        SeedResult {
            scenario: "s".into(),
            seed,
            bug: None,
            verdict,
            violations: vec![],
            kinds: vec![],
            ops: 0,
            counters: BTreeMap::new(),
            probes: BTreeMap::new(),
            trace_hash: trace_hash.into(),
            trace_lines: 10,
            frames: 0,
            sim_secs: 1.0,
            wall_secs: 0.1,
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// The violation a shrink must keep: the first one of the worst class found.
    pub fn main_kind(&self) -> Option<&ViolationKind> {
        let worst = self.kinds.iter().map(|k| k.class).min()?;
        self.kinds.iter().find(|k| k.class == worst)
    }
}
