//! `real cluster sweep <scenario|all> --runs N --duration D [--net]`: N live runs of each
//! scenario, each with its own fault schedule (seeds `seed..seed+N`), and one table.
//!
//! Faults per run, scaled to the chaos phase `D` for scenarios with servers: a SIGKILL every
//! D/4, a SIGSTOP every D/5 (up to [`PAUSE_MAX`]), a clock fault (skew, jump or drift) every
//! D/6, and with `--net` a network fault every D/8 (up to [`NET_FAULT_MAX`], every kind).
//! With `--net` the services run as `examples/deploy/` lays them out (ZooKeeper as a 3-member
//! ensemble, Redis, each on a host of its own) and a service fault (a member killed, paused or
//! isolated, the leader or a follower, a quorum lost; Redis the same) comes every D/5 (up to
//! [`SERVICE_FAULT_MAX`]), for scenarios without servers (`coord_lock`, `kv_register`) too;
//! a scenario with SQL instances gets them on the layout's MariaDB host (`--mariadb`), whose
//! kill, pause and isolation are among the service faults;
//! without `--net` those run their clients against the live services without faults. A run that
//! finds violations keeps its directory (logs, evidence, SQL files) and the table names it; a
//! run that cannot be carried out is listed with its reason.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::netfaults::NetFaultKind;
use super::{run, ClusterError, RunArgs, RunOutcome};

/// The longest SIGSTOP of a sweep run.
pub const PAUSE_MAX: Duration = Duration::from_secs(8);
/// The longest network fault of a sweep run.
pub const NET_FAULT_MAX: Duration = Duration::from_secs(8);
/// The longest service fault of a sweep run.
pub const SERVICE_FAULT_MAX: Duration = Duration::from_secs(6);

/// `real cluster sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// A live scenario's name, or `all` (every scenario that runs live).
    pub scenario: String,
    /// Runs per scenario (seeds `--seed`, `--seed`+1, ...).
    #[arg(long, default_value_t = 5)]
    pub runs: u64,
    /// Length of each run's chaos phase; the scenario's heal phase follows.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// A host (network namespace) per server and network faults too (root and nftables).
    #[arg(long)]
    pub net: bool,
    /// The first run's fault seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where failing runs keep their directories (default: temporary directories, kept).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One scenario's line of the table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepRow {
    pub scenario: String,
    pub runs: u64,
    pub passed: u64,
    pub kills: u64,
    pub pauses: u64,
    /// Network faults applied, by kind (in [`NetFaultKind::ALL`] order).
    pub net_faults: [u64; 5],
    /// Service faults applied (ZooKeeper members, Redis).
    pub service_faults: u64,
    /// Operations the clients issued.
    pub ops: u64,
    pub violations: u64,
    pub secs: f64,
    /// `(seed, what)`: a failing run's directory, or why it could not be carried out.
    pub failures: Vec<(u64, String)>,
}

/// The runs of one sweep, scenario by scenario.
pub async fn sweep(args: SweepArgs) -> Result<Vec<SweepRow>, ClusterError> {
    if args.runs == 0 || args.duration.is_zero() {
        return Err(ClusterError::Args("--runs and --duration must be positive".into()));
    }
    let names: Vec<String> = if args.scenario == "all" {
        scenarios::all()
            .iter()
            .map(|s| s.meta())
            .filter(|m| m.runs_live)
            .map(|m| m.name.to_string())
            .collect()
    } else {
        let s = super::scenario(&args.scenario, None)?;
        if !s.meta().runs_live {
            return Err(ClusterError::Args(format!("{} runs only in the simulator", args.scenario)));
        }
        vec![args.scenario.clone()]
    };
    if args.net {
        super::netns::require()?;
    }
    let mut rows = Vec::new();
    for name in names {
        let topo = super::scenario(&name, None)?.topology(None);
        let has =
            Has { servers: !topo.servers.is_empty(), zookeeper: topo.zookeeper, sql: topo.sql.is_some() };
        let mut row = SweepRow { scenario: name.clone(), ..Default::default() };
        let started = Instant::now();
        for i in 0..args.runs {
            let seed = args.seed + i;
            let run_args = run_args(&args, &name, has, seed, i);
            println!("== {name} run {} of {} (seed {seed})", i + 1, args.runs);
            row.runs += 1;
            match run(run_args).await {
                Ok(out) => tally(&mut row, seed, &out),
                Err(e) => row.failures.push((seed, format!("could not run: {e}"))),
            }
        }
        row.secs = started.elapsed().as_secs_f64();
        print_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// What a scenario's topology has, for the faults of its runs.
#[derive(Debug, Clone, Copy)]
struct Has {
    servers: bool,
    zookeeper: bool,
    sql: bool,
}

fn run_args(args: &SweepArgs, name: &str, has: Has, seed: u64, i: u64) -> RunArgs {
    let d = args.duration;
    let faults = |div: u32| has.servers.then(|| d / div);
    RunArgs {
        scenario: name.to_string(),
        servers: None,
        clients: None,
        duration: d,
        kill_every: faults(4),
        pause_every: faults(5),
        pause_max: PAUSE_MAX,
        bug: None,
        seed: Some(seed),
        dir: args.dir.as_ref().map(|root| root.join(format!("{name}-{i}"))),
        net: args.net,
        net_fault_every: if args.net { faults(8) } else { None },
        net_fault_max: NET_FAULT_MAX,
        net_faults: Vec::new(),
        clock_faults_every: faults(6),
        zk_ensemble: args.net && has.zookeeper,
        service_fault_every: args.net.then(|| d / 5),
        service_fault_max: SERVICE_FAULT_MAX,
        service_faults: Vec::new(),
        mariadb: args.net && has.sql,
    }
}

fn tally(row: &mut SweepRow, seed: u64, out: &RunOutcome) {
    let c = |k: &str| out.report.counters.get(k).copied().unwrap_or(0);
    if out.report.ok() {
        row.passed += 1;
    } else {
        let dir = out.dir.as_ref().map_or("(not kept)".to_string(), |d| d.display().to_string());
        row.failures.push((
            seed,
            format!("{} violation(s); logs and evidence in {dir}", out.report.violations.len()),
        ));
    }
    row.kills += out.kills.len() as u64;
    row.pauses += out.pauses.len() as u64;
    for (slot, kind) in row.net_faults.iter_mut().zip(NetFaultKind::ALL) {
        *slot += out.net_faults.iter().filter(|f| f.kind == kind).count() as u64;
    }
    row.service_faults += out.service_faults.len() as u64;
    row.ops += c("cluster.client_ops");
    row.violations += out.report.violations.len() as u64;
}

fn print_row(row: &SweepRow) {
    println!(
        "{}: {}/{} passed, {} kills, {} pauses, net faults {:?}, {} service faults, {} client ops, {} violations, {:.0} s",
        row.scenario,
        row.passed,
        row.runs,
        row.kills,
        row.pauses,
        row.net_faults,
        row.service_faults,
        row.ops,
        row.violations,
        row.secs
    );
}

/// The sweep's table (markdown), then one line per failing run.
pub fn table(rows: &[SweepRow]) -> String {
    let kinds: Vec<&str> = NetFaultKind::ALL.iter().map(|k| k.name()).collect();
    let mut s = format!(
        "| scenario | runs | passed | kills | pauses | net faults ({}) | service faults | client ops | violations | wall s |\n|---|---:|---:|---:|---:|---|---:|---:|---:|---:|\n",
        kinds.join("/")
    );
    for r in rows {
        let net: Vec<String> = r.net_faults.iter().map(u64::to_string).collect();
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            r.scenario,
            r.runs,
            r.passed,
            r.kills,
            r.pauses,
            net.join("/"),
            r.service_faults,
            r.ops,
            r.violations,
            r.secs
        ));
    }
    for r in rows {
        for (seed, what) in &r.failures {
            s.push_str(&format!("FAILED {} seed {seed}: {what}\n", r.scenario));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_scale_with_the_chaos_phase_and_need_servers() {
        let args = SweepArgs {
            scenario: "all".into(),
            runs: 5,
            duration: Duration::from_secs(60),
            net: true,
            seed: 10,
            dir: Some(PathBuf::from("/tmp/x")),
        };
        let both = Has { servers: true, zookeeper: true, sql: false };
        let a = run_args(&args, "login_unique", both, 12, 2);
        assert_eq!(a.kill_every, Some(Duration::from_secs(15)));
        assert_eq!(a.pause_every, Some(Duration::from_secs(12)));
        assert_eq!(a.net_fault_every, Some(Duration::from_millis(7_500)));
        assert_eq!(a.seed, Some(12));
        assert_eq!(a.dir, Some(PathBuf::from("/tmp/x/login_unique-2")));
        assert!(a.zk_ensemble);
        assert_eq!(a.service_fault_every, Some(Duration::from_secs(12)));
        let b = run_args(&args, "coord_lock", Has { servers: false, zookeeper: true, sql: false }, 12, 2);
        assert_eq!((b.kill_every, b.pause_every, b.net_fault_every), (None, None, None));
        assert_eq!(
            b.service_fault_every,
            Some(Duration::from_secs(12)),
            "the services are faulted all the same"
        );
        let k = run_args(&args, "kv_register", Has { servers: false, zookeeper: false, sql: false }, 12, 2);
        assert!(!k.zk_ensemble);
        let o = run_args(&args, "object_lending", Has { servers: true, zookeeper: true, sql: true }, 1, 0);
        assert!(o.mariadb && o.zk_ensemble && !a.mariadb);
        assert_eq!(b.clock_faults_every, None);
        assert_eq!(a.clock_faults_every, Some(Duration::from_secs(10)));
        let c = run_args(&SweepArgs { net: false, ..args }, "login_unique", both, 0, 0);
        assert_eq!((c.net_fault_every, c.service_fault_every), (None, None));
        assert!(!c.zk_ensemble && !c.mariadb);
        assert!(!c.net);
    }

    #[test]
    fn the_table_has_a_line_per_scenario_and_one_per_failure() {
        let rows = vec![
            SweepRow {
                scenario: "login_unique".into(),
                runs: 5,
                passed: 4,
                kills: 20,
                pauses: 25,
                net_faults: [3, 2, 1, 0, 4],
                service_faults: 6,
                ops: 1234,
                violations: 2,
                secs: 300.4,
                failures: vec![(3, "2 violation(s); logs and evidence in /tmp/d".into())],
            },
            SweepRow { scenario: "kv_register".into(), runs: 5, passed: 5, ..Default::default() },
        ];
        let t = table(&rows);
        assert!(t.contains("| `login_unique` | 5 | 4 | 20 | 25 | 3/2/1/0/4 | 6 | 1234 | 2 | 300 |"), "{t}");
        assert!(t.contains("| `kv_register` | 5 | 5 | 0 | 0 | 0/0/0/0/0 | 0 | 0 | 0 | 0 |"), "{t}");
        assert!(t.contains("FAILED login_unique seed 3: 2 violation(s); logs and evidence in /tmp/d"), "{t}");
        assert!(t.starts_with(
            "| scenario | runs | passed | kills | pauses | net faults (partition/zk/one-way/cut/loss)"
        ));
    }
}
