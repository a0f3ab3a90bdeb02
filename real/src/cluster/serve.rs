//! `real cluster serve`: one server incarnation of a live-cluster run, in its own process.
//!
//! The runner spawns the `real` binary itself with this (hidden) subcommand, once per server
//! and again after every kill. The process runs exactly the server program the simulator
//! runs for the scenario ([`scenarios::ScenarioRun::server`]), on the real adapters, at a
//! loopback IP of its own (so every server can use the reference game's fixed ports), and
//! appends its evidence for the checkers to a file the runner reads after the run.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use scenarios::{Phases, ServerCtx};

use super::clock::RunClock;
use super::evidence_file::file_tap;
use super::ClusterError;
use crate::adapters::RedisKvOptions;
use crate::env::{real_env, RealEnvConfig};

/// One server incarnation (written by the runner, not by hand).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[arg(long)]
    pub scenario: String,
    #[arg(long)]
    pub bug: Option<String>,
    /// Index of the server in the scenario's topology.
    #[arg(long)]
    pub index: usize,
    /// Process id of this incarnation in the run's histories.
    #[arg(long)]
    pub process: u64,
    /// The loopback IP this server listens on.
    #[arg(long)]
    pub ip: IpAddr,
    #[arg(long)]
    pub zookeeper: String,
    #[arg(long)]
    pub redis: String,
    /// The run's epoch on `CLOCK_MONOTONIC` (ns).
    #[arg(long)]
    pub epoch_ns: u64,
    #[arg(long)]
    pub heal_ms: u64,
    #[arg(long)]
    pub end_ms: u64,
    #[arg(long)]
    pub liveness_ms: u64,
    /// Where this incarnation appends its evidence (JSON lines).
    #[arg(long)]
    pub evidence: PathBuf,
    /// The run's SQL instances, `NAME=URL` (`db-0=sqlite:///run/db-0.sqlite`), repeated.
    #[arg(long = "sql", value_name = "NAME=URL")]
    pub sql: Vec<String>,
    /// Test-only: follow this file's `OFFSET_MS PPM` line as this process's clock faults
    /// (`crate::adapters::ClockFaults`). Off unless given.
    #[arg(long)]
    pub clock_control: Option<PathBuf>,
}

impl ServeArgs {
    /// The arguments as a command line (the runner's side of [`serve`]).
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "cluster".into(),
            "serve".into(),
            "--scenario".into(),
            self.scenario.clone(),
            "--index".into(),
            self.index.to_string(),
            "--process".into(),
            self.process.to_string(),
            "--ip".into(),
            self.ip.to_string(),
            "--zookeeper".into(),
            self.zookeeper.clone(),
            "--redis".into(),
            self.redis.clone(),
            "--epoch-ns".into(),
            self.epoch_ns.to_string(),
            "--heal-ms".into(),
            self.heal_ms.to_string(),
            "--end-ms".into(),
            self.end_ms.to_string(),
            "--liveness-ms".into(),
            self.liveness_ms.to_string(),
            "--evidence".into(),
            self.evidence.display().to_string(),
        ];
        if let Some(b) = &self.bug {
            v.extend(["--bug".into(), b.clone()]);
        }
        for s in &self.sql {
            v.extend(["--sql".into(), s.clone()]);
        }
        if let Some(c) = &self.clock_control {
            v.extend(["--clock-control".into(), c.display().to_string()]);
        }
        v
    }
}

/// Runs the server program until the run ends (the runner may SIGKILL it before).
pub async fn serve(args: ServeArgs) -> Result<(), ClusterError> {
    let scenario = super::scenario(&args.scenario, args.bug.as_deref())?;
    let topology = scenario.topology(args.bug.as_deref());
    let spec = topology
        .servers
        .get(args.index)
        .cloned()
        .ok_or_else(|| ClusterError::Args(format!("{} has no server {}", args.scenario, args.index)))?;
    let clock = RunClock::from_epoch(args.epoch_ns);
    let phases = Phases {
        now: clock.source(),
        heal_at: Duration::from_millis(args.heal_ms),
        end_at: Duration::from_millis(args.end_ms),
        liveness_bound: Duration::from_millis(args.liveness_ms),
    };
    // This process's own run state: only its evidence, through the tap, leaves the process.
    let run = scenario.start(args.bug.as_deref(), clock.source());
    let mut env = real_env(&RealEnvConfig {
        node: spec.name.clone(),
        ip: args.ip,
        zookeeper: args.zookeeper.clone(),
        redis_url: args.redis.clone(),
        redis: RedisKvOptions::default(),
    })
    .map_err(|e| ClusterError::Args(format!("redis URL {}: {e}", args.redis)))?;
    env.db = Arc::new(super::open_sql(&args.sql).await?);
    if let Some(path) = &args.clock_control {
        let faults = Arc::new(crate::adapters::ClockFaults::default());
        let clock = crate::adapters::TokioClock::with_faults(faults.clone());
        crate::adapters::follow_clock_control(path.clone(), clock.clone(), faults);
        env.clock = Arc::new(clock);
        tracing::info!(file = %path.display(), "clock faults follow the control file");
    }
    let tap = file_tap(&args.evidence)?;
    tracing::info!(server = %spec.name, process = args.process, ip = %args.ip, "server incarnation starts");
    let budget = scenarios::OpBudget::unlimited();
    run.server(ServerCtx {
        env,
        index: args.index,
        spec,
        process: args.process,
        phases,
        tap: Some(tap),
        budget,
    })
    .await;
    tracing::info!(process = args.process, "run over: server incarnation exits");
    Ok(())
}
