//! `real cluster run`'s command line ([`RunArgs`]) and its checks against the scenario: what
//! cannot be carried out is refused before anything starts, with exit code 2 and a message
//! naming the flag.

use std::path::PathBuf;
use std::time::Duration;

use scenarios::{Scenario, Topology};

use super::faultlog::net_kinds;
use super::netfaults::NetFaultKind;
use super::servicefaults::{self, ServiceFaultKind};
use super::{backing, ClusterError, ENSEMBLE_MEMBERS};

/// `real cluster run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Scenario name (`login_unique`, `pvp_transfer`, `redirect`, ...; see `sim list`).
    pub scenario: String,
    /// Number of servers: must be the scenario topology's (the default).
    #[arg(long)]
    pub servers: Option<usize>,
    /// Client workloads (default: the scenario topology's).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Length of the chaos phase (kills happen in it); the scenario's heal phase follows.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// SIGKILL a random server this often during the chaos phase, and restart it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub kill_every: Option<Duration>,
    /// SIGSTOP a random server this often during the chaos phase...
    #[arg(long, value_parser = humantime::parse_duration)]
    pub pause_every: Option<Duration>,
    /// ...for a random time up to this long, then SIGCONT it (at the heal at the latest).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub pause_max: Duration,
    /// Run the scenario's planted bug (its checkers should fail the run).
    #[arg(long)]
    pub bug: Option<String>,
    /// Seed of the kill schedule (which server, restart delays); random if absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for the servers' logs and evidence (kept). Default: a temporary directory,
    /// kept only if the run fails.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run every server in a network namespace of its own (a host per server), so network
    /// faults can be applied. Needs root and nftables (`scripts/services.sh install`).
    #[arg(long)]
    pub net: bool,
    /// With --net: start a network fault this often during the chaos phase.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub net_fault_every: Option<Duration>,
    /// With --net: the longest network fault (each lasts 0.5 s up to this).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    pub net_fault_max: Duration,
    /// With --net: the kinds of network fault to draw from (comma-separated): partition, zk,
    /// one-way, cut, loss. Default: all.
    #[arg(long, value_delimiter = ',')]
    pub net_faults: Vec<String>,
    /// Skew, jump or drift a random server's clock this often during the chaos phase (each
    /// server follows a control file the runner writes; every clock is set right at the heal).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub clock_faults_every: Option<Duration>,
    /// With --net: run ZooKeeper as an ensemble of 3 members, each on a host of its own (the
    /// layout of examples/deploy/), instead of one.
    #[arg(long)]
    pub zk_ensemble: bool,
    /// With --net: kill, pause or isolate a ZooKeeper member or Redis this often during the
    /// chaos phase (one service fault at a time).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub service_fault_every: Option<Duration>,
    /// With --net: the longest service fault (each lasts 1 s up to this).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    pub service_fault_max: Duration,
    /// With --net: the service faults to take in turn (comma-separated): zk-leader-kill,
    /// zk-leader-pause, zk-leader-isolate, zk-follower-kill, zk-follower-pause,
    /// zk-follower-isolate, zk-quorum-loss, redis-kill, redis-pause, redis-isolate. Default:
    /// every one the run's services allow.
    #[arg(long, value_delimiter = ',')]
    pub service_faults: Vec<String>,
    /// With --net: the topology's SQL instances are databases of one MariaDB server on a host
    /// of its own (`sql`, as in examples/deploy/) instead of SQLite files in the run directory.
    #[arg(long)]
    pub mariadb: bool,
}

/// What [`check`] found the run to be.
pub(super) struct Checked {
    pub topo: Topology,
    pub net_kinds: Vec<NetFaultKind>,
    /// ZooKeeper members: 1, or [`ENSEMBLE_MEMBERS`] with `--zk-ensemble`.
    pub zk_members: usize,
    pub service_kinds: Vec<ServiceFaultKind>,
}

/// Checks `args` against `scenario` (its planted bug's topology).
pub(super) fn check(args: &RunArgs, scenario: &dyn Scenario) -> Result<Checked, ClusterError> {
    if !scenario.meta().runs_live {
        let live: Vec<&str> =
            scenarios::all().iter().map(|s| s.meta()).filter(|m| m.runs_live).map(|m| m.name).collect();
        return Err(ClusterError::Args(format!(
            "{}: its checkers read records its servers keep in memory, so it runs only in the simulator; \
             live scenarios: {}",
            args.scenario,
            live.join(", ")
        )));
    }
    let topo = scenario.topology(args.bug.as_deref());
    if topo.sql.as_ref().is_some_and(|s| s.no_fence_check) {
        return Err(ClusterError::Args(format!(
            "{}: this bug is planted in the simulated SQL service (no fence check), which SQLite \
             cannot have; run it in the simulator",
            args.scenario
        )));
    }
    if let Some(n) = args.servers {
        if n != topo.servers.len() {
            return Err(ClusterError::Args(format!(
                "{} runs {} servers (its topology); --servers {n} is not supported",
                args.scenario,
                topo.servers.len()
            )));
        }
    }
    if (args.kill_every.is_some() || args.pause_every.is_some()) && topo.servers.is_empty() {
        return Err(ClusterError::Args(format!("{} has no servers to kill or pause", args.scenario)));
    }
    if args.kill_every.is_some_and(|d| d.is_zero()) || args.pause_every.is_some_and(|d| d.is_zero()) {
        return Err(ClusterError::Args("--kill-every and --pause-every must be positive".into()));
    }
    if args.pause_max < Duration::from_millis(100) {
        return Err(ClusterError::Args("--pause-max must be at least 100ms".into()));
    }
    let net_kinds = net_kinds(args)?;
    if (args.net_fault_every.is_some() || !args.net_faults.is_empty()) && !args.net {
        return Err(ClusterError::Args("--net-fault-every and --net-faults need --net".into()));
    }
    if args.net_fault_every.is_some() && topo.servers.is_empty() {
        return Err(ClusterError::Args(format!("{} has no servers to cut off", args.scenario)));
    }
    if args.clock_faults_every.is_some() && topo.servers.is_empty() {
        return Err(ClusterError::Args(format!("{} has no servers whose clocks to fault", args.scenario)));
    }
    if args.net_fault_every.is_some_and(|d| d.is_zero())
        || args.clock_faults_every.is_some_and(|d| d.is_zero())
    {
        return Err(ClusterError::Args("--net-fault-every and --clock-faults-every must be positive".into()));
    }
    let (zk_members, service_kinds) = service_options(args, &topo)?;
    Ok(Checked { topo, net_kinds, zk_members, service_kinds })
}

/// The ZooKeeper members and the service-fault kinds `args` ask for, checked against `topo`.
fn service_options(
    args: &RunArgs,
    topo: &scenarios::Topology,
) -> Result<(usize, Vec<servicefaults::ServiceFaultKind>), ClusterError> {
    if (args.zk_ensemble
        || args.mariadb
        || args.service_fault_every.is_some()
        || !args.service_faults.is_empty())
        && !args.net
    {
        return Err(ClusterError::Args(
            "--zk-ensemble, --mariadb, --service-fault-every and --service-faults need --net (services on hosts \
             of their own)"
                .into(),
        ));
    }
    if args.mariadb && topo.sql.is_none() {
        return Err(ClusterError::Args(format!("{}: the scenario has no SQL instances", args.scenario)));
    }
    if args.zk_ensemble && !topo.zookeeper {
        return Err(ClusterError::Args(format!("{}: the scenario uses no ZooKeeper", args.scenario)));
    }
    if args.service_fault_every.is_some_and(|d| d.is_zero()) {
        return Err(ClusterError::Args("--service-fault-every must be positive".into()));
    }
    let members = if args.zk_ensemble { ENSEMBLE_MEMBERS } else { 1 };
    let kinds = if args.service_faults.is_empty() {
        // Every kind the run's services allow.
        servicefaults::ServiceFaultKind::ALL
            .into_iter()
            .filter(|k| backing::check_kinds(&[*k], topo, members, args.mariadb).is_ok())
            .collect()
    } else {
        let mut kinds = Vec::new();
        for name in &args.service_faults {
            let k = servicefaults::ServiceFaultKind::parse(name.trim()).map_err(ClusterError::Args)?;
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        backing::check_kinds(&kinds, topo, members, args.mariadb)?;
        kinds
    };
    if args.service_fault_every.is_some() && kinds.is_empty() {
        return Err(ClusterError::Args(format!("{}: no service to fault", args.scenario)));
    }
    Ok((members, kinds))
}
