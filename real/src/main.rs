//! The `real` binary: tools that run the engine on the real backend.
//!
//! - `real bench [NAME...] [--quick]`: see [`real::bench`].

use clap::{Parser, Subcommand};
use real::bench::BenchArgs;

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
}

fn main() -> anyhow::Result<()> {
    // Warnings and errors only (RUST_LOG overrides): the benches must not measure logging.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Bench(args) => {
            real::bench::run(args)?;
        }
    }
    Ok(())
}
