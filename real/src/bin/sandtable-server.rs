//! `sandtable-server --manifest FILE [--flavor NAME]`: one server of the reference game on
//! real ZooKeeper, Redis and SQL (SQLite files in `--data-dir` by default, or MariaDB).
//!
//! `sandtable-server --manifest FILE shard status|move N --to INSTANCE|resume|rollback`: the
//! operator's shard commands against the same cluster (prints JSON; exit 1 on failure).
//!
//! Exit codes: 0 after a graceful stop (SIGTERM or SIGINT), 2 for a bad command line or
//! manifest (the message names the key), 1 for a runtime failure.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use real::server::config::{plan_from_args, ServerArgs};
use real::server::sql::{run_shard_command, ShardCommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// One server of Sandtable's reference game (flavors `game`, `pvp`, `login` and `gate`).
#[derive(Debug, Parser)]
#[command(name = "sandtable-server", version)]
struct Cli {
    /// The iFun-style manifest (see examples/MANIFEST.game.json).
    #[arg(long)]
    manifest: PathBuf,
    /// `game`, `pvp`, `login` or `gate` (default: from a MANIFEST.<flavor>.json file name, else
    /// game).
    #[arg(long)]
    flavor: Option<String>,
    /// Name of this server in the cluster (default `<flavor>-<host>-<rpc_port>`).
    #[arg(long)]
    name: Option<String>,
    /// Address peers and clients reach this server on (default: RpcService.rpc_nic_name's
    /// address, else 127.0.0.1).
    #[arg(long)]
    advertise_ip: Option<IpAddr>,
    /// Address to listen on (default: the advertised one; 0.0.0.0 for every interface).
    #[arg(long)]
    bind_ip: Option<IpAddr>,
    /// Log format on stderr. The level comes from RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Check the manifest and print the plan, then exit.
    #[arg(long)]
    check: bool,
    /// Directory of the SQLite files of relative `sqlite://` URLs (the embedded default).
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operator commands on the shard map (moves run while the cluster serves).
    #[command(subcommand)]
    Shard(ShardCli),
}

#[derive(Debug, Subcommand)]
enum ShardCli {
    /// Print the shard map.
    Status,
    /// Move one logical shard to another instance (copy, brief freeze of that shard, switch).
    Move {
        /// The logical shard.
        shard: u32,
        /// The destination instance, as named in the manifest.
        #[arg(long)]
        to: String,
    },
    /// Finish the move recorded in the map (after a mover died).
    Resume,
    /// Undo the move recorded in the map.
    Rollback,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let args = ServerArgs {
        manifest: cli.manifest.clone(),
        flavor: cli.flavor.clone(),
        name: cli.name.clone(),
        advertise_ip: cli.advertise_ip,
        bind_ip: cli.bind_ip,
        data_dir: cli.data_dir.clone(),
    };
    let plan = match plan_from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sandtable-server: {}: {e}", cli.manifest.display());
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("{plan:#?}");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sandtable-server: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Command::Shard(cmd)) = &cli.command {
        let Some(cfg) = plan.sql.clone() else {
            eprintln!(
                "sandtable-server: {}: Object.enable_database is off: no shards",
                cli.manifest.display()
            );
            return ExitCode::from(2);
        };
        let cmd = match cmd {
            ShardCli::Status => ShardCommand::Status,
            ShardCli::Move { shard, to } => ShardCommand::Move { shard: *shard, to: to.clone() },
            ShardCli::Resume => ShardCommand::Resume,
            ShardCli::Rollback => ShardCommand::Rollback,
        };
        let app_id = plan.manifest.app_info.app_id.clone();
        let session = plan.game.cluster.session;
        let outcome = rt.block_on(async {
            let env = real::env::real_env(&plan.env).map_err(|e| e.to_string())?;
            run_shard_command(env, &app_id, &cfg, session, &cmd).await
        });
        return match outcome {
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sandtable-server: shard: {e}");
                ExitCode::from(1)
            }
        };
    }
    match rt.block_on(real::server::run(plan, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
