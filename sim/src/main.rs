//! The chaos runner: `list`, `run`, `replay`, `shrink`, `bench` (and the internal `worker` and
//! `shrink-table`).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use std::sync::Arc;

use scenarios::{Scenario, Workload};
use sim::chart::{chart_run, ChartOptions};
use sim::runner::{
    exit_code, plan_for, replay_command, run_seed, run_with_plan, RunOptions, SeedResult, Verdict,
    EXIT_PROBE_MISSED,
};
use sim::shrink::{Case, Shrunk};
use sim::sweep::{parse_seeds, render, render_probes, sweep, SweepSpec};
use sim::trace::TraceOutput;

/// mimalloc instead of glibc's malloc: a simulated run is allocation-heavy (frames, futures,
/// trace lines) and glibc's `malloc`/`free` took 20-25% of its instructions (callgrind,
/// issue 19). Allocation addresses never reach a trace, so determinism is unaffected.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes of `run` and `replay`, shown under `--help`.
const EXIT_CODES: &str = "Exit codes (run, replay): 0 every seed passed; 1 a safety violation; \
3 liveness failures only (progress did not come within the bound after the heal); 4 the simulation \
panicked; 5 a seed's two runs gave different traces (run --check-determinism); 6 no violation, but \
a check could not decide (a linearizability key over its search budget); 2 a usage error. With \
several failing seeds the worst wins: 1, then 5, then 4, then 3, then 6.";

#[derive(Parser)]
#[command(name = "sim", about = "Sandtable's deterministic chaos runner", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scenarios with their descriptions and planted bugs.
    List,
    /// Runs seeds of one scenario (or `all`) and prints a table; exit code 0 only if all pass
    /// (1 safety violation, 3 liveness only, 4 crash, 5 non-determinism, 6 inconclusive).
    Run {
        scenario: String,
        /// Seed range `A..B` (end exclusive) or one seed.
        #[arg(long, default_value = "0..100")]
        seeds: String,
        /// Plant a bug (see `list`); the sweep is then expected to fail.
        #[arg(long)]
        bug: Option<String>,
        /// Worker processes at once (default: CPU cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Seeds per worker process.
        #[arg(long, default_value_t = 100)]
        chunk: u64,
        /// Run every seed twice, in two processes, and compare the trace hashes (a seed whose
        /// runs differ fails as `nondet`, exit code 5).
        #[arg(long)]
        check_determinism: bool,
        /// Test only: plant non-determinism in the second run of --check-determinism.
        #[arg(long, hide = true, requires = "check_determinism")]
        plant_nondeterminism: bool,
        /// Print every coverage probe linked into the binary with its hits per scenario
        /// (reached or not), not only the required ones.
        #[arg(long)]
        probes: bool,
        /// Do not fail a passing sweep that misses a required probe (for short windows).
        /// Without `--bug`, a sweep that reaches every seed's verdict but not every required
        /// probe of its scenarios exits with 7.
        #[arg(long)]
        no_require_probes: bool,
    },
    /// Replays one seed with its fault plan and full per-node trace; ends with `trace-hash:`.
    Replay {
        scenario: String,
        #[arg(long, required_unless_present = "case")]
        seed: Option<u64>,
        #[arg(long)]
        bug: Option<String>,
        /// Also print DEBUG events (not part of the hash).
        #[arg(long)]
        verbose: bool,
        /// Print the fault plan as JSON and exit.
        #[arg(long)]
        plan_json: bool,
        /// Run with this fault plan (JSON, e.g. from `replay --plan-json`) instead of the
        /// seed's own.
        #[arg(long, conflicts_with = "case")]
        plan: Option<std::path::PathBuf>,
        /// Also write a picture of the run here: one self-contained HTML page (inline SVG, no
        /// network) with a lane per node, messages, fault windows, the history's operations
        /// and the violating ones outlined. The run and its trace hash are unchanged.
        #[arg(long, value_name = "FILE.html")]
        chart: Option<std::path::PathBuf>,
        /// Run a case saved by `shrink` (seed, bug, workload limits, fault plan, expected
        /// violation) and say whether its violation reproduced.
        #[arg(long, conflicts_with_all = ["seed", "bug"])]
        case: Option<std::path::PathBuf>,
    },
    /// Minimises the fault plan and the workload (clients, operations per client, phase
    /// lengths) of a failing seed while the same violation (checker and class) still occurs;
    /// saves the minimal case as JSON and prints the `replay --case` command for it.
    Shrink {
        scenario: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        bug: Option<String>,
        /// Where to save the case (default: `<scenario>-<bug>-seed<N>.case.json` here).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Runs the shrink may spend, the original included.
        #[arg(long, default_value_t = sim::shrink::SHRINK_RUNS_MAX)]
        runs_max: usize,
    },
    /// Internal (docs): for every planted bug of a scenario (or `all`), shrinks the first
    /// failing seed below `--seeds-max` and prints a markdown row of before -> after numbers.
    #[command(hide = true)]
    ShrinkTable {
        scenario: String,
        #[arg(long, default_value_t = 200)]
        seeds_max: u64,
        /// Only this bug.
        #[arg(long)]
        bug: Option<String>,
    },
    /// For every planted bug (of one scenario, or `all`): the share of seeds that catch it
    /// (a safety or liveness verdict) and the longest run of seeds in a row that miss it.
    CatchRate {
        #[arg(default_value = "all")]
        scenario: String,
        #[arg(long, default_value = "0..1000")]
        seeds: String,
        /// Worker processes at once (default: CPU cores).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Simulator throughput: raw madsim frame ping-pong vs a scenario, same process.
    Bench {
        #[arg(default_value = "coord_lock")]
        scenario: String,
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// Repetitions; each alternates baseline and engine, and medians are printed.
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// Internal: runs seeds in this process and prints one JSON result per line.
    #[command(hide = true)]
    Worker {
        scenario: String,
        #[arg(long)]
        seeds: String,
        #[arg(long)]
        bug: Option<String>,
        /// Test only: write this process's id into each trace.
        #[arg(long)]
        plant_nondeterminism: bool,
    },
}

/// The scenario called `name` with `bug` checked against its planted bugs.
fn scenario(name: &str, bug: Option<&str>) -> anyhow::Result<Arc<dyn Scenario>> {
    Ok(scenarios::lookup(name, bug)?)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::List => {
            for s in scenarios::all() {
                let meta = s.meta();
                println!("{:<14} {}", meta.name, meta.description);
                for b in meta.bugs {
                    println!("  --bug {:<16} {}", b.name, b.description);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            scenario: name,
            seeds,
            bug,
            jobs,
            chunk,
            check_determinism,
            plant_nondeterminism,
            probes,
            no_require_probes,
        } => {
            let seeds = parse_seeds(&seeds).map_err(|e| anyhow!(e))?;
            let list = if name == "all" {
                if bug.is_some() {
                    bail!("--bug needs one scenario, not `all`");
                }
                scenarios::all()
            } else {
                vec![scenario(&name, bug.as_deref())?]
            };
            let specs: Vec<SweepSpec> = list
                .iter()
                .map(|s| SweepSpec {
                    scenario: s.name().to_string(),
                    seeds: seeds.clone(),
                    bug: bug.clone(),
                    check_determinism,
                    plant_nondeterminism,
                })
                .collect();
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let start = std::time::Instant::now();
            let summaries = sweep(&specs, jobs, chunk.max(1)).map_err(|e| anyhow!(e))?;
            print!("{}", render(&summaries, start.elapsed().as_secs_f64()));
            let required = |name: &str| {
                scenarios::lookup(name, None).map_or_else(|_| Vec::new(), |s| s.required_probes())
            };
            print!("{}", render_probes(&summaries, required, probes));
            let verdicts = summaries.iter().flat_map(|s| s.failed.iter().map(|r| r.verdict));
            let code = exit_code(verdicts);
            // A planted bug's sweep is about catching it, not about coverage.
            let missed = summaries.iter().any(|s| !s.missed_probes(&required(&s.scenario)).is_empty());
            if code == 0 && missed && bug.is_none() && !no_require_probes {
                println!("FAILED: required coverage probes never reached (exit {EXIT_PROBE_MISSED})");
                return Ok(ExitCode::from(EXIT_PROBE_MISSED));
            }
            Ok(ExitCode::from(code))
        }
        Cmd::Replay { scenario: name, seed, bug, verbose, plan_json, plan: plan_file, chart, case } => {
            let trace = if verbose { TraceOutput::PrintVerbose } else { TraceOutput::Print };
            if let Some(path) = case {
                return replay_case(&name, &path, trace, plan_json, chart.as_deref());
            }
            let seed = seed.context("--seed is required without --case")?;
            let s = scenario(&name, bug.as_deref())?;
            let (topo, mut plan) = plan_for(&*s, seed, bug.as_deref());
            if let Some(path) = &plan_file {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                plan = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a fault plan", path.display()))?;
                let mut known = topo.node_names();
                known.extend(s.fault_space(&topo).role_targets());
                plan.validate(&known).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            }
            if plan_json {
                println!("{}", serde_json::to_string_pretty(&plan).context("serialising the plan")?);
                return Ok(ExitCode::SUCCESS);
            }
            let opts = RunOptions { trace, ..RunOptions::default() };
            let r = replay_run(
                &*s,
                seed,
                bug.as_deref(),
                topo,
                plan,
                Workload::default(),
                opts,
                chart.as_deref(),
            )?;
            print_replay(&r);
            if r.verdict != Verdict::Pass {
                println!("replay: {}", replay_command(&name, seed, bug.as_deref()));
            }
            println!("trace-hash: {}", r.trace_hash);
            Ok(ExitCode::from(r.verdict.exit_code()))
        }
        Cmd::Shrink { scenario: name, seed, bug, out, runs_max } => {
            let s = scenario(&name, bug.as_deref())?;
            let start = std::time::Instant::now();
            let Some(sh) = sim::shrink::shrink(&*s, seed, bug.as_deref(), runs_max, |m| eprintln!("{m}"))
            else {
                println!("seed {seed} does not fail with a checker's violation: nothing to shrink");
                return Ok(ExitCode::SUCCESS);
            };
            let wall = start.elapsed().as_secs_f64();
            println!("shrunk in {} runs, {wall:.1}s wall; still fails with {}:", sh.runs, sh.case.expected);
            println!("  {}", sh.result.violations.first().map(String::as_str).unwrap_or("?"));
            print_before_after(&sh);
            println!("workload: {}", sh.case.workload);
            println!("{}", sh.case.plan);
            let path = out.unwrap_or_else(|| {
                let bug = bug.as_deref().map(|b| format!("-{b}")).unwrap_or_default();
                std::path::PathBuf::from(format!("{name}{bug}-seed{seed}.case.json"))
            });
            let json = serde_json::to_string_pretty(&sh.case).context("serialising the case")?;
            std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
            println!("saved the case to {}; trace-hash {}", path.display(), sh.case.trace_hash);
            println!("replay: {}", case_replay_command(&name, &path));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::ShrinkTable { scenario: name, seeds_max, bug } => {
            let list = if name == "all" { scenarios::all() } else { vec![scenario(&name, bug.as_deref())?] };
            for s in list {
                for b in s.meta().bugs.iter().filter(|b| bug.as_deref().is_none_or(|x| x == b.name)) {
                    println!("{}", shrink_table_row(&*s, b.name, seeds_max));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CatchRate { scenario: name, seeds, jobs } => {
            let seeds = parse_seeds(&seeds).map_err(|e| anyhow!(e))?;
            let list = if name == "all" { scenarios::all() } else { vec![scenario(&name, None)?] };
            let specs: Vec<SweepSpec> = list
                .iter()
                .flat_map(|s| {
                    let seeds = seeds.clone();
                    s.meta().bugs.iter().map(move |b| SweepSpec {
                        scenario: s.name().to_string(),
                        seeds: seeds.clone(),
                        bug: Some(b.name.to_string()),
                        check_determinism: false,
                        plant_nondeterminism: false,
                    })
                })
                .collect();
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let start = std::time::Instant::now();
            let summaries = sweep(&specs, jobs, 50).map_err(|e| anyhow!(e))?;
            print!("{}", sim::sweep::render_catch_rates(&summaries, &seeds));
            println!(
                "({} bugs x {} seeds in {:.1}s)",
                specs.len(),
                seeds.end - seeds.start,
                start.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench { scenario: name, seeds, reps } => {
            let s = scenario(&name, None)?;
            sim::bench::print_bench(&*s, seeds, reps.max(1));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Worker { scenario: name, seeds, bug, plant_nondeterminism } => {
            let s = scenario(&name, bug.as_deref())?;
            let seeds = parse_seeds(&seeds).map_err(|e| anyhow!(e))?;
            let opts = RunOptions { plant_nondeterminism, ..RunOptions::default() };
            for seed in seeds {
                let r = run_seed(&*s, seed, bug.as_deref(), opts);
                println!("{}", serde_json::to_string(&r).context("serialising a result")?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs one replay; with `chart`, also writes the picture of the run there.
#[allow(clippy::too_many_arguments)]
fn replay_run(
    s: &dyn Scenario,
    seed: u64,
    bug: Option<&str>,
    topo: scenarios::Topology,
    plan: scenarios::faults::FaultPlan,
    workload: Workload,
    opts: RunOptions,
    chart: Option<&std::path::Path>,
) -> anyhow::Result<SeedResult> {
    let Some(path) = chart else {
        return Ok(run_with_plan(s, seed, bug, topo, plan, workload, opts));
    };
    let (r, c, html) = chart_run(s, seed, bug, topo, plan, workload, opts, ChartOptions::default());
    std::fs::write(path, &html).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "chart: {} ({} bytes; {} lanes, {} operations, {} of {} messages drawn)",
        path.display(),
        html.len(),
        c.lanes.len(),
        c.ops.len(),
        c.messages.len(),
        c.messages_delivered
    );
    Ok(r)
}

/// What `replay` prints about a run before its hash.
fn print_replay(r: &SeedResult) {
    println!(
        "simulated {:.1}s in {:.2}s wall, {} frames, {} trace lines, {} ops",
        r.sim_secs, r.wall_secs, r.frames, r.trace_lines, r.ops
    );
    for (k, v) in &r.counters {
        println!("counter {k} = {v}");
    }
    if r.verdict != Verdict::Pass {
        println!("FAILED ({:?}): {} violation(s)", r.verdict, r.violations.len());
    }
}

/// `replay --case FILE`: runs a saved case and says whether its violation reproduced.
fn replay_case(
    name: &str,
    path: &std::path::Path,
    trace: TraceOutput,
    plan_json: bool,
    chart: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let case: Case =
        serde_json::from_str(&text).with_context(|| format!("{} is not a shrunk case", path.display()))?;
    let s = scenario(name, case.bug.as_deref())?;
    case.validate(&*s).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if plan_json {
        println!("{}", serde_json::to_string_pretty(&case.plan).context("serialising the plan")?);
        return Ok(ExitCode::SUCCESS);
    }
    let opts = RunOptions { trace, ..RunOptions::default() };
    let (r, reproduced) = match chart {
        None => case.run(&*s, opts),
        Some(_) => {
            let topo = s.topology(case.bug.as_deref());
            let r = replay_run(
                &*s,
                case.seed,
                case.bug.as_deref(),
                topo,
                case.plan.clone(),
                case.workload,
                opts,
                chart,
            )?;
            let ok = sim::shrink::same_failure(&r, case.verdict, &case.expected);
            (r, ok)
        }
    };
    print_replay(&r);
    println!("workload: {}", case.workload);
    if reproduced {
        println!("reproduced: {} ({:?})", case.expected, case.verdict);
    } else {
        println!("NOT reproduced: expected {} ({:?}), got {:?}", case.expected, case.verdict, r.verdict);
    }
    if r.trace_hash != case.trace_hash {
        println!("note: trace hash differs from the saved {}", case.trace_hash);
    }
    println!("trace-hash: {}", r.trace_hash);
    Ok(ExitCode::from(r.verdict.exit_code()))
}

/// The command that replays a saved case.
fn case_replay_command(scenario: &str, path: &std::path::Path) -> String {
    format!("cargo run -p sim --release -- replay {scenario} --case {}", path.display())
}

/// Before -> after lines of a shrink.
fn print_before_after(sh: &Shrunk) {
    let (o, m) = (&sh.original_plan, &sh.case.plan);
    println!("  ops      {} -> {}", sh.original.ops, sh.result.ops);
    println!("  faults   {} -> {}", o.faults.len(), m.faults.len());
    println!("  clients  {} -> {}", sh.original_clients, sh.minimal_clients);
    println!("  chaos    {} -> {} ms", o.heal_at_ms, m.heal_at_ms);
    println!("  run      {} -> {} ms", o.end_ms, m.end_ms);
}

/// One markdown row of the shrink table: the first seed below `seeds_max` on which `bug`
/// fails with a checker's violation, shrunk, before -> after.
fn shrink_table_row(s: &dyn Scenario, bug: &str, seeds_max: u64) -> String {
    let Some(seed) = (0..seeds_max)
        .find(|&seed| run_seed(s, seed, Some(bug), RunOptions::default()).verdict.is_violation())
    else {
        return format!("| `{}` | `{bug}` | no failing seed in 0..{seeds_max} | | | | | | | | |", s.name());
    };
    let start = std::time::Instant::now();
    let Some(sh) = sim::shrink::shrink(s, seed, Some(bug), sim::shrink::SHRINK_RUNS_MAX, |_| {}) else {
        return format!("| `{}` | `{bug}` | {seed}: did not fail again | | | | | | | | |", s.name());
    };
    let wall = start.elapsed().as_secs_f64();
    // The saved case must replay to the last accepted run.
    let (again, reproduced) = sh.case.run(s, RunOptions::default());
    let replays = if reproduced && again.trace_hash == sh.case.trace_hash { "yes" } else { "NO" };
    // The bug must be what fails it: without the bug the case must not fail the same way.
    let unbugged = Case { bug: None, ..sh.case.clone() };
    let needs_bug = if unbugged.run(s, RunOptions::default()).1 { "NO" } else { "yes" };
    let (o, m) = (&sh.original_plan, &sh.case.plan);
    format!(
        "| `{}` | `{bug}` | {seed} | {} | {} → {} | {} → {} | {} → {} | {:.1} → {:.1} | {:.1} → {:.1} | {} | {wall:.0} | {replays} | {needs_bug} |",
        s.name(),
        sh.case.expected,
        sh.original.ops,
        sh.result.ops,
        o.faults.len(),
        m.faults.len(),
        sh.original_clients,
        sh.minimal_clients,
        o.heal_at_ms as f64 / 1e3,
        m.heal_at_ms as f64 / 1e3,
        o.end_ms as f64 / 1e3,
        m.end_ms as f64 / 1e3,
        sh.runs,
    )
}
