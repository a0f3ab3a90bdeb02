//! The chaos runner: `list`, `run`, `replay`, `bench` (and the internal `worker`).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use std::sync::Arc;

use scenarios::Scenario;
use sim::chart::{chart_run, ChartOptions};
use sim::runner::{exit_code, plan_for, replay_command, run_seed, run_with_plan, RunOptions, Verdict};
use sim::sweep::{parse_seeds, render, sweep, SweepSpec};
use sim::trace::TraceOutput;

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
    },
    /// Replays one seed with its fault plan and full per-node trace; ends with `trace-hash:`.
    Replay {
        scenario: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        bug: Option<String>,
        /// Also print DEBUG events (not part of the hash).
        #[arg(long)]
        verbose: bool,
        /// Print the fault plan as JSON and exit.
        #[arg(long)]
        plan_json: bool,
        /// Run with this fault plan (JSON, e.g. from `shrink`) instead of the seed's own.
        #[arg(long)]
        plan: Option<std::path::PathBuf>,
        /// Also write a picture of the run here: one self-contained HTML page (inline SVG, no
        /// network) with a lane per node, messages, fault windows, the history's operations
        /// and the violating ones outlined. The run and its trace hash are unchanged.
        #[arg(long, value_name = "FILE.html")]
        chart: Option<std::path::PathBuf>,
    },
    /// Minimises the fault plan of a failing seed and prints it as JSON.
    Shrink {
        scenario: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        bug: Option<String>,
        /// Write the minimal plan here (for `replay --plan`).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Simulator throughput: raw madsim frame ping-pong vs a scenario, same process.
    Bench {
        #[arg(default_value = "coord_lock")]
        scenario: String,
        #[arg(long, default_value_t = 20)]
        seeds: u64,
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
        Cmd::Run { scenario: name, seeds, bug, jobs, chunk, check_determinism, plant_nondeterminism } => {
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
            let verdicts = summaries.iter().flat_map(|s| s.failed.iter().map(|r| r.verdict));
            Ok(ExitCode::from(exit_code(verdicts)))
        }
        Cmd::Replay { scenario: name, seed, bug, verbose, plan_json, plan: plan_file, chart } => {
            let s = scenario(&name, bug.as_deref())?;
            let (topo, mut plan) = plan_for(&*s, seed, bug.as_deref());
            if let Some(path) = &plan_file {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                plan = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a fault plan", path.display()))?;
                let known = topo.node_names();
                plan.validate(&known).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            }
            if plan_json {
                println!("{}", serde_json::to_string_pretty(&plan).context("serialising the plan")?);
                return Ok(ExitCode::SUCCESS);
            }
            let trace = if verbose { TraceOutput::PrintVerbose } else { TraceOutput::Print };
            let opts = RunOptions { trace, ..RunOptions::default() };
            let r = match &chart {
                None => run_with_plan(&*s, seed, bug.as_deref(), topo, plan, opts),
                Some(path) => {
                    let (r, c, html) =
                        chart_run(&*s, seed, bug.as_deref(), topo, plan, opts, ChartOptions::default());
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
                    r
                }
            };
            println!(
                "simulated {:.1}s in {:.2}s wall, {} frames, {} trace lines",
                r.sim_secs, r.wall_secs, r.frames, r.trace_lines
            );
            for (k, v) in &r.counters {
                println!("counter {k} = {v}");
            }
            if r.verdict != Verdict::Pass {
                println!("FAILED ({:?}): {} violation(s)", r.verdict, r.violations.len());
                println!("replay: {}", replay_command(&name, seed, bug.as_deref()));
            }
            println!("trace-hash: {}", r.trace_hash);
            Ok(ExitCode::from(r.verdict.exit_code()))
        }
        Cmd::Shrink { scenario: name, seed, bug, out } => {
            let s = scenario(&name, bug.as_deref())?;
            let Some(sh) = sim::shrink::shrink(&*s, seed, bug.as_deref(), |m| eprintln!("{m}")) else {
                println!("seed {seed} passes: nothing to shrink");
                return Ok(ExitCode::SUCCESS);
            };
            println!(
                "shrunk {} faults to {} in {} runs; still fails with: {}",
                sh.original.faults.len(),
                sh.minimal.faults.len(),
                sh.runs,
                sh.result.violations.first().map(String::as_str).unwrap_or("?")
            );
            println!("{}", sh.minimal);
            let json = serde_json::to_string_pretty(&sh.minimal).context("serialising the plan")?;
            if let Some(path) = out {
                std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
                let mut cmd = replay_command(&name, seed, bug.as_deref());
                cmd.push_str(&format!(" --plan {}", path.display()));
                println!("replay: {cmd}");
            } else {
                println!("{json}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench { scenario: name, seeds } => {
            let s = scenario(&name, None)?;
            if name == "rpc" {
                const CALLS: u64 = 20_000;
                println!("baseline: raw madsim length-delimited ping-pong, 64-byte frames, 2 nodes");
                let base = sim::bench::baseline_ping_pong(1, CALLS, 64);
                let base_rt = (base.frames / 2) as f64 / base.wall_secs.max(1e-9);
                println!(
                    "  {:>10} round trips in {:>7.3}s wall -> {:>10.0} round trips/wall-s",
                    base.frames / 2,
                    base.wall_secs,
                    base_rt
                );
                for concurrency in [1u64, 16] {
                    let t = sim::bench::rpc_echo(1, CALLS, concurrency, 64);
                    let calls_per_s = CALLS as f64 / t.wall_secs.max(1e-9);
                    println!(
                        "rpc echo, 64-byte message, {concurrency:>2} in flight: {CALLS} calls in {:.3}s wall -> {:.0} calls/wall-s, {} frames, ratio to baseline round trips {:.3}",
                        t.wall_secs, calls_per_s, t.frames, calls_per_s / base_rt
                    );
                }
            }
            println!("baseline: raw madsim length-delimited ping-pong, 64-byte frames, 2 nodes");
            let base = sim::bench::baseline_ping_pong(1, 50_000, 64);
            println!(
                "  {:>10} frames in {:>7.3}s wall  -> {:>12.0} frames/wall-s, {:>8.0} sim-s/wall-s",
                base.frames,
                base.wall_secs,
                base.frames_per_wall_sec(),
                base.sim_per_wall()
            );
            println!("scenario {name}: seeds 0..{seeds}, faults on");
            let t = sim::bench::scenario_throughput(&*s, 0..seeds);
            println!(
                "  {:>10} frames in {:>7.3}s wall  -> {:>12.0} frames/wall-s, {:>8.0} sim-s/wall-s, {:.1} seeds/s",
                t.frames,
                t.wall_secs,
                t.frames_per_wall_sec(),
                t.sim_per_wall(),
                seeds as f64 / t.wall_secs.max(1e-9)
            );
            println!(
                "ratio (scenario / baseline frames per wall-s): {:.3}",
                t.frames_per_wall_sec() / base.frames_per_wall_sec()
            );
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
