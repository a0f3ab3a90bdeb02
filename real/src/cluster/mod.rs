//! `real cluster run`: a scenario's workload and checkers against a live local cluster.
//!
//! The same scenario the simulator runs ([`scenarios::Scenario`]), on the real backend:
//! private ZooKeeper and Redis processes ([`crate::services`]), every server of the
//! scenario's topology as its own OS process (`real cluster serve`, [`serve`]) on a loopback
//! IP of its own, and the client workloads in this process over real TCP. During the chaos
//! phase (`--duration`) the runner may SIGKILL a random server every `--kill-every` and
//! restart it 0.5–3 s later (at the heal at the latest) as a new incarnation, and SIGSTOP a
//! random server every `--pause-every` for up to `--pause-max` (past the ZooKeeper session
//! timeout, so another server may take its accounts over while it sleeps); which server and
//! how long is decided by [`schedule`], a pure function of the seed, the time and which
//! servers are up. Then the scenario's heal phase runs without faults, and the scenario's checkers run on the recorded history and the servers'
//! evidence ([`evidence_file`]).
//!
//! SQL instances ([`scenarios::SqlSpec`]) are SQLite files in the run's directory
//! (`db-0.sqlite`, ...), opened by every server process and by the runner (its clients and
//! checkers read the final rows through them); SQLite's locking makes one file safe to share
//! between processes. Faults on them are those of the processes using them (a server killed
//! mid-transaction); the simulator's SQL node kills and partitions are not reproduced, and a
//! topology planting `no_fence_check` (a bug of the SQL service itself) is refused.
//!
//! With `--net` ([`netns`], [`netfaults`]) every server runs in a network namespace of its own
//! on a bridge the run makes, and so do ZooKeeper's members and Redis ([`backing`]; with
//! `--zk-ensemble` ZooKeeper is 3 members, the layout of `examples/deploy/`). During the chaos
//! phase a network fault starts every `--net-fault-every`: a partition of a server from the
//! cluster, from ZooKeeper only, one way, a cut link between two servers, or packet loss, as
//! nftables rules in the server's namespace, all removed by the heal; and a service fault every
//! `--service-fault-every` ([`servicefaults`]): a ZooKeeper member (the leader, a follower, or
//! two at once) or Redis killed, paused or isolated. Needs root and nftables; without them the
//! run stops at once and says what is missing.
//!
//! What differs from the simulator, by nature: no latency (see [`netfaults`] for what the
//! kernel here can do), no faults of the SQL files, the
//! workload's randomness comes from the OS (a failing run cannot be replayed from a seed;
//! its logs and evidence are kept instead), and true time is the machine's monotonic clock
//! ([`clock`]), which every process of the run shares.

mod args;
pub mod backing;
pub mod clock;
pub mod clockfaults;
pub mod evidence_file;
mod faultlog;
pub mod netfaults;
pub mod netns;
pub mod procs;
pub mod schedule;
pub mod serve;
pub mod servicefaults;
pub mod sweep;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use scenarios::checker::Report;
use scenarios::{ClientCtx, LookupError, Phases, Scenario, ServerDirectory};

pub use self::args::RunArgs;
use self::backing::{Backing, ServiceFaults};
pub use self::backing::{ServiceFaultRecord, ENSEMBLE_MEMBERS, REDIS_PORT, SQL_PORT};
use self::clock::RunClock;
use self::evidence_file::EvidenceError;
pub use self::faultlog::{fault_plan, ClockFaultRecord, KillRecord, NetFaultRecord, PauseRecord};
use self::faultlog::{write_atomically, NetFaults};
use self::procs::{log_tail, ServerProcs};
use self::schedule::{Action, Schedule, ScheduleConfig};
use self::serve::ServeArgs;
use crate::adapters::RedisKvOptions;
use crate::env::{real_env, RealEnvConfig};
use crate::services::ServiceError;

/// How long the runner waits for servers to accept clients before it starts the clients.
const STARTUP_MAX: Duration = Duration::from_secs(5);
/// How long client workloads may run past the end of the run before they are aborted.
const CLIENT_GRACE: Duration = Duration::from_secs(30);
/// How long servers may take to exit on their own after the end of the run.
const SERVER_EXIT_GRACE: Duration = Duration::from_secs(10);
/// A server that exits successfully this close to the end of the run (ns) simply ended it.
const END_SLACK_NS: u64 = 1_000_000_000;

/// Why a live-cluster run could not be carried out (as opposed to a run that found
/// violations, which is a [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Args(String),
    #[error("{0}")]
    Lookup(#[from] LookupError),
    #[error("{0}")]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Io(String),
    #[error("evidence: {0}")]
    Evidence(#[from] EvidenceError),
    #[error("server {server} exited while starting (after {waited:?}); its log ends:\n{log}")]
    Startup { server: String, waited: Duration, log: String },
}

/// `real cluster ...`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub cmd: ClusterCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCmd {
    /// Runs a scenario against a live local cluster and checks its invariants.
    Run(RunArgs),
    /// Internal: one server incarnation of a run (spawned by `cluster run`).
    #[command(hide = true)]
    Serve(ServeArgs),
    /// Removes the network namespaces and links a `--net` run left behind (one that was
    /// SIGKILLed and could not clean up); needs root.
    Cleanup,
    /// Runs a scenario (or `all` live scenarios) N times with different fault schedules and
    /// prints a table.
    Sweep(sweep::SweepArgs),
}

/// What a run found.
#[derive(Debug)]
pub struct RunOutcome {
    pub report: Report,
    pub kills: Vec<KillRecord>,
    pub pauses: Vec<PauseRecord>,
    /// The network faults applied (`--net`), in order.
    pub net_faults: Vec<NetFaultRecord>,
    /// The clock faults written (`--clock-faults-every`), in order, the heal's resets included.
    pub clock_faults: Vec<ClockFaultRecord>,
    /// The service faults applied (`--service-fault-every`), in order.
    pub service_faults: Vec<ServiceFaultRecord>,
    /// Where the logs and evidence are, if kept.
    pub dir: Option<PathBuf>,
    pub elapsed: Duration,
}

/// The scenario named `name`, with `bug` checked against its planted bugs.
pub fn scenario(name: &str, bug: Option<&str>) -> Result<Arc<dyn Scenario>, ClusterError> {
    Ok(scenarios::lookup(name, bug)?)
}

/// A loopback /24 (`127.a.b.0`) whose first `n` addresses have the reference game's client
/// and RPC ports free, so each server process can listen on its fixed ports at an IP of its
/// own and concurrent runs do not collide.
fn loopback_ips(n: usize, rng: &mut impl Rng) -> Result<Vec<IpAddr>, ClusterError> {
    let ports = [scenarios::game_host::TCP_JSON_PORT, scenarios::game_host::RPC_PORT];
    for _ in 0..64 {
        let (a, b) = (rng.gen_range(100..=250u8), rng.gen_range(0..=255u8));
        let ips: Vec<IpAddr> = (1..=n)
            .map(|h| IpAddr::V4(Ipv4Addr::new(127, a, b, u8::try_from(h).expect("at most 255 servers"))))
            .collect();
        let free =
            ips.iter().all(|ip| ports.iter().all(|p| TcpListener::bind(SocketAddr::new(*ip, *p)).is_ok()));
        if free {
            return Ok(ips);
        }
    }
    Err(ClusterError::Io("no free loopback /24 for the servers after 64 tries".into()))
}

/// How long a server incarnation keeps retrying to open a SQL instance that answers with a
/// transient error: a SIGSTOPped incarnation may hold a SQLite file's write lock for as long
/// as its pause (up to `--pause-max`), and a restarted one must wait it out, as
/// `sandtable-server` does at start.
const OPEN_SQL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
/// Pause between two attempts.
const OPEN_SQL_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

async fn open_db_patiently(
    name: &str,
    url: &str,
) -> Result<std::sync::Arc<dyn engine::env::Db>, engine::env::DbError> {
    let deadline = tokio::time::Instant::now() + OPEN_SQL_PATIENCE;
    loop {
        match crate::adapters::db::open_db(name, url).await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(db = name, error = %e, "SQL instance not ready; retrying in {OPEN_SQL_RETRY:?}");
                tokio::time::sleep(OPEN_SQL_RETRY).await;
            }
            r => return r,
        }
    }
}

/// Opens `NAME=URL` instances (creating SQLite files) as a `Db` directory.
pub(crate) async fn open_sql(specs: &[String]) -> Result<engine::env::DbInstances, ClusterError> {
    let mut dir = engine::env::DbInstances::empty();
    for spec in specs {
        let (name, url) = spec
            .split_once('=')
            .ok_or_else(|| ClusterError::Args(format!("--sql {spec:?}: expected NAME=URL")))?;
        let db = open_db_patiently(name, url)
            .await
            .map_err(|e| ClusterError::Io(format!("SQL instance {name} at {url}: {e}")))?;
        dir = dir.with(db).map_err(|e| ClusterError::Args(e.to_string()))?;
    }
    Ok(dir)
}

/// Runs `args` to completion. Must be called inside a multi-threaded tokio runtime.
pub async fn run(args: RunArgs) -> Result<RunOutcome, ClusterError> {
    let started = std::time::Instant::now();
    let bug = args.bug.as_deref();
    let scenario = scenario(&args.scenario, bug)?;
    let args::Checked { topo, net_kinds, zk_members, service_kinds } = args::check(&args, scenario.as_ref())?;
    let clients = args.clients.unwrap_or(topo.clients);
    let space = scenario.fault_space(&topo);
    let seed = args.seed.unwrap_or_else(rand::random);

    let (dir, tmp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| ClusterError::Io(format!("{}: {e}", d.display())))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("sandtable-cluster-")
                .tempdir()
                .map_err(|e| ClusterError::Io(format!("temporary directory: {e}")))?;
            (t.path().to_path_buf(), Some(t))
        }
    };

    // With --net the hosts come first: the services run on hosts of their own.
    let lab = if args.net {
        Some(netns::NetLab::create(&topo.server_names(), &Backing::hosts(&topo, zk_members, args.mariadb))?)
    } else {
        None
    };
    let mut backing = Backing::start(&topo, lab.as_ref(), zk_members)?;
    // A topology without a service gets an address nothing listens on: its calls fail.
    let zk_addr = backing.zk_connect();
    let redis_url = backing.redis_url();
    println!(
        "cluster run {}: {} servers, {clients} clients, chaos {:?}{}{}, heal {:?} (fault seed {seed})",
        args.scenario,
        topo.servers.len(),
        args.duration,
        args.kill_every.map(|k| format!(", kill -9 every {k:?}")).unwrap_or_default(),
        args.pause_every
            .map(|k| format!(", pause every {k:?} for up to {:?}", args.pause_max))
            .unwrap_or_default(),
        Duration::from_millis(space.heal_ms),
    );
    println!("services: zookeeper {zk_addr}, redis {redis_url}; logs and evidence in {}", dir.display());

    let clock = RunClock::start();
    let phases = Phases {
        now: clock.source(),
        heal_at: args.duration,
        end_at: args.duration + Duration::from_millis(space.heal_ms),
        liveness_bound: Duration::from_millis(space.liveness_bound_ms),
    };
    let run = scenario.start(bug, clock.source());
    // Not from `seed`: two runs with the same seed at once (tests run in parallel) would
    // pick the same /24, and the free-port probe cannot see a run that has not bound yet.
    let ips = match &lab {
        Some(lab) => lab.ips(),
        None => loopback_ips(topo.servers.len(), &mut rand::thread_rng())?,
    };
    let exe = std::env::current_exe().map_err(|e| ClusterError::Io(format!("own executable: {e}")))?;
    let template = ServeArgs {
        scenario: args.scenario.clone(),
        bug: args.bug.clone(),
        index: 0,
        process: 0,
        ip: ips.first().copied().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        zookeeper: zk_addr.clone(),
        redis: redis_url.clone(),
        epoch_ns: clock.epoch_ns(),
        heal_ms: millis(phases.heal_at),
        end_ms: millis(phases.end_at),
        liveness_ms: millis(phases.liveness_bound),
        evidence: PathBuf::new(),
        sql: backing.sql_urls(topo.sql.as_ref().map_or(0, |s| s.instances), &dir),
        // Set per server by `ServerProcs::spawn` (`{dir}/{server}.clock`) when clocks are faulted.
        clock_control: args.clock_faults_every.map(|_| PathBuf::new()),
    };
    // The runner's own handles on the SQL instances (creating the files before any server
    // starts), shared by its clients and checkers.
    let sql = Arc::new(open_sql(&template.sql).await?);
    let mut procs = ServerProcs::new(exe, dir.clone(), template, ips, topo.server_names());
    if let Some(lab) = &lab {
        println!(
            "hosts: bridge {} (the clients), {}",
            lab.gateway(),
            lab.hosts()
                .iter()
                .chain(lab.services())
                .map(|h| format!("{} {} {}", h.name, h.namespace, h.ip))
                .collect::<Vec<_>>()
                .join(", ")
        );
        procs = procs.with_prefixes((0..topo.servers.len()).map(|i| lab.exec_prefix(i)).collect());
    }
    let mut next_process = 0u64;
    for i in 0..procs.len() {
        procs.spawn(i, next_process)?;
        next_process += 1;
    }
    let silent = wait_up(&mut procs).await?;
    println!("servers up at {:.2}s: {}", secs(clock.now_ns()), directory(&procs).join(", "));
    if !silent.is_empty() {
        println!("no client port open (yet) on: {}", silent.join(", "));
    }

    let servers = ServerDirectory::new((0..procs.len()).map(|i| procs.client_addr(i)).collect());
    let mut handles = Vec::with_capacity(clients);
    let mut budgets = Vec::with_capacity(clients);
    for i in 0..clients {
        let env = real_env(&RealEnvConfig {
            node: scenarios::Topology::client_name(i),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            zookeeper: zk_addr.clone(),
            redis_url: redis_url.clone(),
            redis: RedisKvOptions::default(),
        })
        .map_err(|e| ClusterError::Args(format!("redis URL {redis_url}: {e}")))?;
        let env = engine::env::Env { db: sql.clone(), ..env };
        let ctx = ClientCtx {
            env,
            index: i,
            servers: servers.clone(),
            process: next_process,
            phases: phases.clone(),
            budget: scenarios::OpBudget::unlimited(),
        };
        budgets.push(ctx.budget.clone());
        next_process += 1;
        handles.push(tokio::spawn(run.client(ctx)));
    }

    let mut runner = Report::default();
    let heal_ns = millis(phases.heal_at) * 1_000_000;
    let end_ns = millis(phases.end_at) * 1_000_000;
    let mut schedule = Schedule::new(
        seed,
        ScheduleConfig {
            servers: procs.len(),
            kill_every: args.kill_every,
            pause_every: args.pause_every,
            pause_max: args.pause_max,
            heal_ns,
        },
    );
    let mut kills: Vec<KillRecord> = Vec::new();
    let mut pauses: Vec<PauseRecord> = Vec::new();
    let mut net = match (&lab, args.net_fault_every) {
        (Some(lab), Some(every)) => Some(NetFaults::new(
            lab,
            netfaults::NetSchedule::new(
                seed,
                netfaults::NetScheduleConfig {
                    servers: procs.len(),
                    every,
                    max: args.net_fault_max,
                    kinds: net_kinds,
                    heal_ns,
                },
            ),
            backing.endpoints(lab.hosts().iter().map(|h| h.ip).collect()),
            topo.server_names(),
        )),
        _ => None,
    };
    let mut clocks = args.clock_faults_every.map(|every| {
        clockfaults::ClockSchedule::new(
            seed,
            clockfaults::ClockScheduleConfig {
                servers: procs.len(),
                every,
                offset_max_ms: if space.clock_ms_max > 0 { space.clock_ms_max } else { 10_000 },
                drift_ppm_max: if space.drift_ppm_max > 0 { space.drift_ppm_max } else { 20_000 },
                heal_ns,
            },
        )
    });
    let mut clock_faults: Vec<ClockFaultRecord> = Vec::new();
    let mut services = match (&lab, args.service_fault_every) {
        (Some(lab), Some(every)) => Some(ServiceFaults::new(
            lab,
            servicefaults::ServiceSchedule::new(
                seed,
                servicefaults::ServiceScheduleConfig {
                    every,
                    max: args.service_fault_max,
                    kinds: service_kinds.clone(),
                    rotate: args.service_faults.is_empty(),
                    heal_ns,
                },
            ),
            heal_ns,
        )),
        _ => None,
    };
    let mut services_healed = false;
    while clock.now_ns() < end_ns {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = clock.now_ns();
        if let Some(net) = &mut net {
            net.step(now)?;
        }
        if let Some(sf) = &mut services {
            if now < heal_ns {
                tokio::task::block_in_place(|| sf.step(now, &mut backing))?;
            } else if !services_healed {
                services_healed = true;
                let down = tokio::task::block_in_place(|| sf.heal(now, &mut backing))?;
                if !down.is_empty() {
                    println!(
                        "at the heal ({:.2}s) ZooKeeper members not serving yet: {}",
                        secs(now),
                        down.join(", ")
                    );
                }
            }
        }
        for e in clocks.as_mut().map(|c| c.step(now)).unwrap_or_default() {
            let path = procs.clock_file(e.server);
            write_atomically(&path, &format!("{} {}\n", e.offset_ms, e.ppm))?;
            let rec = ClockFaultRecord {
                at_secs: secs(now),
                server: procs.name(e.server).to_string(),
                kind: e.kind,
                offset_ms: e.offset_ms,
                ppm: e.ppm,
            };
            println!("clock fault at {:.2}s: {}", rec.at_secs, rec.description());
            clock_faults.push(rec);
        }
        let mut exited = Vec::new();
        for (i, process, status) in procs.exited() {
            // A server program returns when its own reading of the clock says the run is
            // over, which may come a poll interval before ours.
            if status.success() && now + END_SLACK_NS >= end_ns {
                continue;
            }
            let log =
                procs.incarnations().iter().find(|c| c.process == process).map(|c| log_tail(&c.log, 20));
            runner.violation(
                "server_exit",
                format!(
                    "{} (process {process}) exited on its own at {:.2}s with {status}; log ends:\n{}",
                    procs.name(i),
                    secs(now),
                    log.unwrap_or_default()
                ),
            );
            exited.push(i);
        }
        let up: Vec<bool> = (0..procs.len()).map(|i| procs.process(i).is_some()).collect();
        for action in schedule.step(now, &up, &exited) {
            match action {
                Action::Pause { server, for_ns } => {
                    if procs.signal_pause(server, true) {
                        pauses.push(PauseRecord {
                            at_secs: secs(now),
                            server: procs.name(server).to_string(),
                            process: procs.process(server).unwrap_or_default(),
                            for_secs: secs(for_ns),
                        });
                    }
                }
                Action::Resume { server } => {
                    procs.signal_pause(server, false);
                }
                Action::Kill { server } => {
                    if let Some(process) = procs.kill(server) {
                        kills.push(KillRecord {
                            at_secs: secs(now),
                            server: procs.name(server).to_string(),
                            process,
                            restarted_as: None,
                        });
                    }
                }
                Action::Restart { server } => {
                    if procs.process(server).is_some() {
                        continue; // its kill failed: it never went down
                    }
                    procs.spawn(server, next_process)?;
                    let name = procs.name(server);
                    if let Some(k) =
                        kills.iter_mut().rev().find(|k| k.server == name && k.restarted_as.is_none())
                    {
                        k.restarted_as = Some(next_process);
                    }
                    next_process += 1;
                }
            }
        }
    }

    // The run is over: clients stop issuing operations, servers stop on their own.
    let (mut overran, mut panicked) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + CLIENT_GRACE;
    for h in handles {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(deadline, h).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                panicked += 1;
                runner.violation("client_panic", format!("a client workload failed: {e}"));
            }
            Err(_) => {
                overran += 1;
                abort.abort();
            }
        }
    }
    let exit_deadline = std::time::Instant::now() + SERVER_EXIT_GRACE;
    let mut running = (0..procs.len()).filter(|i| procs.process(*i).is_some()).count();
    while running > 0 && std::time::Instant::now() < exit_deadline {
        for (i, process, status) in procs.exited() {
            running -= 1;
            if !status.success() {
                runner.violation(
                    "server_exit",
                    format!("{} (process {process}) ended the run with {status}", procs.name(i)),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let incarnations = procs.incarnations().to_vec();
    drop(procs); // SIGKILLs servers that did not exit

    let (mut lines, mut torn) = (0u64, 0u64);
    for inc in &incarnations {
        let read = evidence_file::read(&inc.evidence)?;
        torn += read.torn as u64;
        for ev in read.evidence {
            lines += 1;
            if !run.absorb(ev.clone()) {
                return Err(ClusterError::Args(format!(
                    "{}: its servers reported {ev:?}, which the scenario cannot take from another process",
                    args.scenario
                )));
            }
        }
    }
    let (service_faults, skipped) = services.map(|s| (s.records, s.skipped)).unwrap_or_default();
    let observer = real_env(&RealEnvConfig {
        node: "observer".into(),
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        zookeeper: zk_addr,
        redis_url: redis_url.clone(),
        redis: RedisKvOptions::default(),
    })
    .map_err(|e| ClusterError::Args(format!("redis URL {redis_url}: {e}")))?;
    let observer = engine::env::Env { db: sql, ..observer };
    let mut report = run.check(observer, phases).await;
    report.merge(runner);
    report.count("cluster.clients", clients as u64);
    report.count("cluster.client_ops", budgets.iter().map(scenarios::OpBudget::issued).sum());
    report.count("cluster.clients_overran", overran);
    report.count("cluster.clients_panicked", panicked);
    report.count("cluster.server_incarnations", incarnations.len() as u64);
    report.count("cluster.server_kills", kills.len() as u64);
    report.count("cluster.server_pauses", pauses.len() as u64);
    report.count("cluster.evidence_lines", lines);
    report.count("cluster.evidence_torn", torn);
    let net_faults = net.map(|n| n.records).unwrap_or_default();
    report.count("cluster.net_faults", net_faults.len() as u64);
    for kind in netfaults::NetFaultKind::ALL {
        let n = net_faults.iter().filter(|r| r.kind == kind).count() as u64;
        if n > 0 {
            report.count(&format!("cluster.net_faults.{}", kind.name()), n);
        }
    }
    report.count("cluster.service_faults", service_faults.len() as u64);
    if skipped > 0 {
        report.count("cluster.service_faults_skipped", skipped);
    }
    for kind in servicefaults::ServiceFaultKind::ALL {
        let n = service_faults.iter().filter(|r| r.kind == kind).count() as u64;
        if n > 0 {
            report.count(&format!("cluster.service_faults.{}", kind.name()), n);
        }
    }
    for kind in clockfaults::ClockFaultKind::ALL {
        let n = clock_faults.iter().filter(|r| r.kind == Some(kind)).count() as u64;
        if n > 0 {
            report.count(&format!("cluster.clock_faults.{}", kind.name()), n);
        }
    }
    drop((backing, lab));
    let keep = args.dir.is_some() || !report.ok();
    let dir = match tmp {
        Some(t) if keep => Some(t.keep()),
        Some(_) => None,
        None => Some(dir),
    };
    let out = RunOutcome {
        report,
        kills,
        pauses,
        net_faults,
        clock_faults,
        service_faults,
        dir,
        elapsed: started.elapsed(),
    };
    if let Some(d) = &out.dir {
        let path = d.join("fault-plan.txt");
        std::fs::write(&path, fault_plan(&out, seed))
            .map_err(|e| ClusterError::Io(format!("{}: {e}", path.display())))?;
    }
    Ok(out)
}

/// The hosts `cluster run SCENARIO --net [--zk-ensemble] [--mariadb]` makes, by name, with the last octet
/// of each one's address (the servers of the scenario's topology, then its ZooKeeper members,
/// Redis and SQL server): the layout `examples/deploy/hosts.json` documents.
pub fn net_layout(
    scenario: &str,
    zk_ensemble: bool,
    mariadb: bool,
) -> Result<Vec<(String, u8)>, ClusterError> {
    let topo = self::scenario(scenario, None)?.topology(None);
    let members = if zk_ensemble { ENSEMBLE_MEMBERS } else { 1 };
    Ok(netns::layout(&topo.server_names(), &Backing::hosts(&topo, members, mariadb)))
}

/// Waits until every server accepts TCP connections on its client port, for at most
/// [`STARTUP_MAX`] in all. Servers of scenarios whose clients talk to ZooKeeper or to other
/// servers only (`membership`, `rpc`) never open one: those are let go after the wait, as
/// in the simulator, where clients start with the servers and retry. A server that exits
/// while starting fails the run.
async fn wait_up(procs: &mut ServerProcs) -> Result<Vec<String>, ClusterError> {
    let start = std::time::Instant::now();
    let mut silent = Vec::new();
    for i in 0..procs.len() {
        loop {
            if tokio::net::TcpStream::connect(procs.client_addr(i)).await.is_ok() {
                break;
            }
            if procs.exited().into_iter().next().is_some() {
                let log =
                    procs.incarnations().iter().rev().find(|c| c.index == i).map(|c| log_tail(&c.log, 30));
                return Err(ClusterError::Startup {
                    server: procs.name(i).to_string(),
                    waited: start.elapsed(),
                    log: log.unwrap_or_default(),
                });
            }
            if start.elapsed() > STARTUP_MAX {
                silent.push(procs.name(i).to_string());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(silent)
}

fn directory(procs: &ServerProcs) -> Vec<String> {
    (0..procs.len()).map(|i| format!("{} {}", procs.name(i), procs.client_addr(i))).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}
