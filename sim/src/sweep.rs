//! Many seeds: split into chunks, each chunk run by a worker subprocess (`sim worker ...`)
//! so memory never grows across a long sweep (madsim keeps ~0.2 MB per seed in-process), and
//! `--jobs` chunks run at once. Workers print one JSON [`SeedResult`] per line.
//!
//! With `check_determinism` every chunk runs twice, in two worker processes one after the
//! other, and each seed's two trace hashes are compared ([`judge_determinism`]): a seed that
//! does not replay is [`Verdict::NonDeterministic`] (FoundationDB's "unseed" check). Two
//! processes, not two runs in one, so that per-process state (a hasher's seed, an address,
//! a thread id) that leaks into a run shows.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal};
use std::ops::Range;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::runner::{judge_determinism, replay_command, SeedResult, Verdict};

/// One scenario's part of a sweep.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    pub scenario: String,
    pub seeds: Range<u64>,
    pub bug: Option<String>,
    /// Run every seed twice and compare the trace hashes.
    pub check_determinism: bool,
    /// Plant non-determinism in the second run (see `RunOptions::plant_nondeterminism`).
    pub plant_nondeterminism: bool,
}

/// Totals of one scenario.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub scenario: String,
    pub bug: Option<String>,
    pub seeds: u64,
    pub passed: u64,
    pub failed: Vec<SeedResult>,
    pub sim_secs: f64,
    /// Sum of per-seed wall times (single-core seconds).
    pub wall_secs: f64,
    pub counters: BTreeMap<String, u64>,
    /// Coverage probes reached, by name.
    pub probes: BTreeMap<String, ProbeTally>,
}

/// How often one coverage probe was reached over a sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeTally {
    /// Hits over all seeds.
    pub hits: u64,
    /// Seeds that hit it at least once.
    pub seeds: u64,
}

impl Summary {
    /// The probes of `required` this sweep never reached.
    pub fn missed_probes<'a>(&self, required: &[&'a str]) -> Vec<&'a str> {
        required.iter().copied().filter(|p| self.probes.get(*p).is_none_or(|t| t.hits == 0)).collect()
    }

    /// Failed seeds with this verdict.
    pub fn failed_with(&self, verdict: Verdict) -> usize {
        self.failed.iter().filter(|r| r.verdict == verdict).count()
    }

    pub fn seeds_per_sec(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.seeds as f64 / self.wall_secs
        } else {
            0.0
        }
    }
}

/// Parses `A..B` (half-open) or a single seed `N`.
pub fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let parse = |x: &str| x.trim().parse::<u64>().map_err(|e| format!("bad seed {x:?}: {e}"));
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if a >= b {
                return Err(format!("empty seed range {s:?}: the end is exclusive"));
            }
            Ok(a..b)
        }
        None => {
            let a = parse(s)?;
            Ok(a..a + 1)
        }
    }
}

/// Runs `seeds` of `spec` in one worker process; the results in seed order, or why not.
fn run_worker(spec: &SweepSpec, seeds: &Range<u64>, perturb: bool) -> Result<Vec<SeedResult>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the runner executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("worker").arg(&spec.scenario).arg("--seeds").arg(format!("{}..{}", seeds.start, seeds.end));
    if let Some(b) = &spec.bug {
        cmd.arg("--bug").arg(b);
    }
    if perturb {
        cmd.arg("--plant-nondeterminism");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut results = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        // Anything else on stdout is not a result line.
        if let Ok(r) = serde_json::from_str::<SeedResult>(&line) {
            results.push(r);
        }
    }
    let status = child.wait();
    let expected = seeds.end - seeds.start;
    if results.len() as u64 != expected {
        return Err(format!(
            "worker for {} seeds {}..{} ended ({status:?}) after {} of {expected} results",
            spec.scenario,
            seeds.start,
            seeds.end,
            results.len()
        ));
    }
    Ok(results)
}

fn run_chunk(spec: &SweepSpec, seeds: Range<u64>, tx: &mpsc::Sender<Result<SeedResult, String>>) {
    let results = run_worker(spec, &seeds, false).and_then(|first| {
        if !spec.check_determinism {
            return Ok(first);
        }
        let second = run_worker(spec, &seeds, spec.plant_nondeterminism)?;
        Ok(first.into_iter().zip(&second).map(|(a, b)| judge_determinism(a, b)).collect())
    });
    match results {
        Ok(results) => {
            for r in results {
                let _ = tx.send(Ok(r));
            }
        }
        Err(e) => {
            let _ = tx.send(Err(e));
        }
    }
}

/// Runs every spec's seeds on `jobs` worker processes at a time, `chunk` seeds per process.
pub fn sweep(specs: &[SweepSpec], jobs: usize, chunk: u64) -> Result<Vec<Summary>, String> {
    let mut work = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let mut s = spec.seeds.start;
        while s < spec.seeds.end {
            let e = (s + chunk).min(spec.seeds.end);
            work.push((i, s..e));
            s = e;
        }
    }
    let total: u64 = specs.iter().map(|s| s.seeds.end - s.seeds.start).sum();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} seeds, {msg}")
            .expect("valid template"),
    );
    let queue = Arc::new(Mutex::new(work.into_iter()));
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for _ in 0..jobs.max(1) {
        let (queue, tx, specs) = (queue.clone(), tx.clone(), specs.to_vec());
        threads.push(std::thread::spawn(move || loop {
            let next = queue.lock().expect("queue poisoned").next();
            let Some((i, seeds)) = next else { break };
            run_chunk(&specs[i], seeds, &tx);
        }));
    }
    drop(tx);
    let mut summaries: Vec<Summary> = specs
        .iter()
        .map(|s| Summary { scenario: s.scenario.clone(), bug: s.bug.clone(), ..Default::default() })
        .collect();
    let mut errors = Vec::new();
    let mut failed = 0;
    for msg in rx {
        match msg {
            Ok(r) => {
                let s = summaries
                    .iter_mut()
                    .find(|s| s.scenario == r.scenario && s.bug == r.bug)
                    .expect("result of a requested scenario");
                s.seeds += 1;
                s.sim_secs += r.sim_secs;
                s.wall_secs += r.wall_secs;
                for (k, v) in &r.counters {
                    *s.counters.entry(k.clone()).or_insert(0) += v;
                }
                for (k, v) in &r.probes {
                    let t = s.probes.entry(k.clone()).or_default();
                    t.hits += v;
                    t.seeds += u64::from(*v > 0);
                }
                if r.passed() {
                    s.passed += 1;
                } else {
                    failed += 1;
                    s.failed.push(r);
                }
                bar.inc(1);
                bar.set_message(format!("{failed} failed"));
            }
            Err(e) => errors.push(e),
        }
    }
    for t in threads {
        let _ = t.join();
    }
    bar.finish_and_clear();
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    for s in &mut summaries {
        s.failed.sort_by_key(|r| r.seed);
    }
    Ok(summaries)
}

/// The report table and the failing seeds with their replay commands. The failed seeds are
/// split by class: `safety` (a safety violation), `live` (liveness failures only), `crash`
/// (the simulation panicked), `nondet` (two runs differed; only with `--check-determinism`)
/// and `inconcl` (no violation, but a check could not decide).
pub fn render(summaries: &[Summary], elapsed_secs: f64) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<14} {:<12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>12} {:>10} {:>9} {:>10}\n",
        "scenario",
        "bug",
        "seeds",
        "passed",
        "failed",
        "safety",
        "live",
        "crash",
        "nondet",
        "inconcl",
        "sim-time",
        "wall-time",
        "seeds/s",
        "sim-s/s"
    ));
    for s in summaries {
        out.push_str(&format!(
            "{:<14} {:<12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>11.1}s {:>9.1}s {:>9.1} {:>10.0}\n",
            s.scenario,
            s.bug.as_deref().unwrap_or("-"),
            s.seeds,
            s.passed,
            s.failed.len(),
            s.failed_with(Verdict::Violation),
            s.failed_with(Verdict::Liveness),
            s.failed_with(Verdict::Crash),
            s.failed_with(Verdict::NonDeterministic),
            s.failed_with(Verdict::Inconclusive),
            s.sim_secs,
            s.wall_secs,
            s.seeds_per_sec(),
            if s.wall_secs > 0.0 { s.sim_secs / s.wall_secs } else { 0.0 }
        ));
    }
    out.push_str(&format!(
        "(wall-time and seeds/s are per core; the sweep took {elapsed_secs:.1}s elapsed)\n"
    ));
    for s in summaries {
        for r in &s.failed {
            out.push_str(&format!(
                "FAIL {} seed {} ({}): {}\n  replay: {}\n",
                s.scenario,
                r.seed,
                r.verdict.name(),
                r.violations.first().map(String::as_str).unwrap_or("?"),
                replay_command(&s.scenario, r.seed, s.bug.as_deref())
            ));
        }
    }
    out
}

/// The coverage lines of a sweep: per scenario, how many of its `required` probes it reached
/// and a `MISSED` line for each it did not; with `all`, a line for every probe linked into
/// the binary (reached or not), so paths no seed reaches show.
pub fn render_probes(
    summaries: &[Summary],
    required: impl Fn(&str) -> Vec<&'static str>,
    all: bool,
) -> String {
    let mut out = String::new();
    let declared = engine::probe::declared();
    for s in summaries {
        let req = required(&s.scenario);
        let missed = s.missed_probes(&req);
        out.push_str(&format!(
            "coverage {}: {}/{} required probes reached in {} seeds\n",
            s.scenario,
            req.len() - missed.len(),
            req.len(),
            s.seeds
        ));
        for p in &missed {
            out.push_str(&format!(
                "MISSED {} probe \"{p}\": never reached in {} seeds\n",
                s.scenario, s.seeds
            ));
        }
        if all {
            for name in &declared {
                let t = s.probes.get(*name).copied().unwrap_or_default();
                let mark = if req.contains(name) { "required" } else { "" };
                out.push_str(&format!(
                    "  {:<72} {:>9} hits {:>6}/{} seeds {mark}\n",
                    name, t.hits, t.seeds, s.seeds
                ));
            }
        }
    }
    out
}

/// One planted bug's catch rate over a seed window.
#[derive(Debug, Clone, PartialEq)]
pub struct CatchRate {
    /// Seeds whose verdict was a safety or liveness failure.
    pub caught: u64,
    pub seeds: u64,
    /// The longest run of seeds in a row that did not catch it (counting the window's ends).
    pub longest_miss: u64,
}

impl CatchRate {
    /// The catch rate of a planted bug's sweep over `seeds`.
    pub fn of(summary: &Summary, seeds: &Range<u64>) -> CatchRate {
        let caught: Vec<u64> =
            summary.failed.iter().filter(|r| r.verdict.is_violation()).map(|r| r.seed).collect();
        let mut longest_miss = 0;
        let mut next = seeds.start;
        for &seed in caught.iter().chain(std::iter::once(&seeds.end)) {
            longest_miss = longest_miss.max(seed - next);
            next = seed + 1;
        }
        CatchRate { caught: caught.len() as u64, seeds: summary.seeds, longest_miss }
    }

    pub fn percent(&self) -> f64 {
        100.0 * self.caught as f64 / self.seeds.max(1) as f64
    }
}

/// A markdown table of catch rates, one row per planted bug.
pub fn render_catch_rates(summaries: &[Summary], seeds: &Range<u64>) -> String {
    let mut out = String::from(
        "| scenario | bug | caught | seeds | rate | longest miss |\n|---|---|---:|---:|---:|---:|\n",
    );
    for s in summaries {
        let c = CatchRate::of(s, seeds);
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {:.1}% | {} |\n",
            s.scenario,
            s.bug.as_deref().unwrap_or("-"),
            c.caught,
            c.seeds,
            c.percent(),
            c.longest_miss
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges() {
        assert_eq!(parse_seeds("0..10"), Ok(0..10));
        assert_eq!(parse_seeds("7"), Ok(7..8));
        assert!(parse_seeds("5..5").is_err());
        assert!(parse_seeds("x..3").is_err());
    }

    fn failing(seed: u64, verdict: Verdict) -> SeedResult {
        SeedResult::for_test(seed, verdict, "")
    }

    #[test]
    fn a_catch_rate_counts_safety_and_liveness_catches_and_the_longest_run_of_misses() {
        let s = Summary {
            seeds: 20,
            failed: vec![
                failing(3, Verdict::Violation),
                failing(4, Verdict::Crash),
                failing(9, Verdict::Liveness),
                failing(12, Verdict::Violation),
            ],
            ..Default::default()
        };
        let c = CatchRate::of(&s, &(0..20));
        // Caught at 3, 9 and 12 (a crash is not the bug caught): misses 0..3, 4..9, 10..12, 13..20.
        assert_eq!(c, CatchRate { caught: 3, seeds: 20, longest_miss: 7 });
        assert!((c.percent() - 15.0).abs() < 1e-9);
        let none = CatchRate::of(&Summary { seeds: 5, ..Default::default() }, &(10..15));
        assert_eq!(none, CatchRate { caught: 0, seeds: 5, longest_miss: 5 });
    }
}
