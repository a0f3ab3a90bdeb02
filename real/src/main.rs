//! The `real` binary: tools that run the engine on the real backend.
//!
//! - `real bench [NAME...] [--quick]`: see [`real::bench`].
//! - `real abuse [ATTACK...] [--server-bin PATH] [--runs N] [--json FILE]`: hostile clients
//!   against a `sandtable-server` process; see [`real::bench::abuse`].
//! - `real cluster run SCENARIO [--clients N] [--duration 30s] [--kill-every 10s]
//!   [--pause-every 10s]`: see
//!   [`real::cluster`]. Exits 0 if the checkers pass, 1 if they found violations, 2 if the
//!   run could not be carried out.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use real::bench::abuse::AbuseArgs;
use real::bench::BenchArgs;
use real::cluster::{ClusterArgs, ClusterCmd, RunOutcome};

#[derive(Parser)]
#[command(name = "real", about = "Sandtable on the real backend (tokio, ZooKeeper, Redis)", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Engine figures against raw tokio / Redis / ZooKeeper baselines measured in the same run,
    /// on private Redis and ZooKeeper processes.
    Bench(BenchArgs),
    /// Hostile clients (ping flood, slow reader, handshake and admin-port exhaustion, idle
    /// connections) against one `sandtable-server` on private Redis and ZooKeeper: its
    /// resident memory and an honest client's latency during and after each attack.
    Abuse(AbuseArgs),
    /// A scenario's workload and checkers against a live local cluster of server processes.
    Cluster(ClusterArgs),
    /// The `sessions` bench's clients, in their own process (started by `real bench`).
    #[command(name = real::bench::CLIENTS_SUBCOMMAND, hide = true)]
    SessionClients(real::bench::SessionClientsArgs),
}

fn main() -> ExitCode {
    // Warnings and errors only (RUST_LOG overrides): the benches must not measure logging.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().cmd {
        Cmd::Bench(args) => real::bench::run(args).map(|_| ExitCode::SUCCESS).map_err(anyhow::Error::from),
        Cmd::Abuse(args) => {
            real::bench::abuse::run(args).map(|_| ExitCode::SUCCESS).map_err(anyhow::Error::from)
        }
        Cmd::Cluster(args) => cluster(args),
        Cmd::SessionClients(args) => {
            real::bench::run_session_clients(args).map(|_| ExitCode::SUCCESS).map_err(anyhow::Error::from)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

fn cluster(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.cmd {
        ClusterCmd::Serve(a) => {
            rt.block_on(real::cluster::serve::serve(a))?;
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Sweep(a) => {
            let rows = rt.block_on(async {
                tokio::select! {
                    rows = real::cluster::sweep::sweep(a) => rows,
                    _ = tokio::signal::ctrl_c() => Err(real::cluster::ClusterError::Io(
                        "interrupted (Ctrl-C): servers killed, namespaces and rules removed".into(),
                    )),
                }
            })?;
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            print!("{}", real::cluster::sweep::table(&rows));
            let failed = rows.iter().any(|r| !r.failures.is_empty());
            let runs: u64 = rows.iter().map(|r| r.runs).sum();
            let passed: u64 = rows.iter().map(|r| r.passed).sum();
            println!("{}: {passed}/{runs} runs passed", if failed { "FAILED" } else { "PASSED" });
            // A violation outranks a run that could not be carried out.
            let violations = rows.iter().any(|r| r.violations > 0);
            Ok(if violations {
                ExitCode::from(1)
            } else if failed {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        ClusterCmd::Cleanup => {
            let removed = real::cluster::netns::cleanup_leftovers()?;
            for r in &removed {
                println!("removed {r}");
            }
            println!("cleanup: {} namespace(s) and link(s) removed", removed.len());
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Run(a) => {
            // Ctrl-C drops the run: its servers are killed and, with --net, its namespaces,
            // links and rules removed (their Drops), before the process exits.
            let out = rt.block_on(async {
                tokio::select! {
                    out = real::cluster::run(a) => out,
                    _ = tokio::signal::ctrl_c() => Err(real::cluster::ClusterError::Io(
                        "interrupted (Ctrl-C): servers killed, namespaces and rules removed".into(),
                    )),
                }
            })?;
            // Lingering client tasks (aborted at the end) must not keep the process alive.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            Ok(print_outcome(&out))
        }
    }
}

fn print_outcome(out: &RunOutcome) -> ExitCode {
    for k in &out.kills {
        match k.restarted_as {
            Some(new) => println!(
                "kill -9 {} (process {}) at {:.2}s, restarted as process {new}",
                k.server, k.process, k.at_secs
            ),
            None => {
                println!("kill -9 {} (process {}) at {:.2}s, not restarted", k.server, k.process, k.at_secs)
            }
        }
    }
    for c in &out.clock_faults {
        println!("{} at {:.2}s", c.description(), c.at_secs);
    }
    for f in &out.net_faults {
        println!("net fault {} at {:.2}s for {:.2}s", f.description, f.at_secs, f.for_secs);
    }
    for p in &out.pauses {
        println!("SIGSTOP {} (process {}) at {:.2}s for {:.2}s", p.server, p.process, p.at_secs, p.for_secs);
    }
    for (k, v) in &out.report.counters {
        println!("counter {k} = {v}");
    }
    if let Some(d) = &out.dir {
        println!("logs and evidence kept in {}", d.display());
    }
    println!("elapsed: {:.1}s", out.elapsed.as_secs_f64());
    if out.report.ok() {
        println!("PASSED");
        ExitCode::SUCCESS
    } else {
        const SHOWN: usize = 20;
        for v in out.report.violations.iter().take(SHOWN) {
            println!("violation [{}] {}", v.checker, v.message);
        }
        if out.report.violations.len() > SHOWN {
            println!("... and {} more", out.report.violations.len() - SHOWN);
        }
        println!("FAILED: {} violation(s)", out.report.violations.len());
        ExitCode::from(1)
    }
}
