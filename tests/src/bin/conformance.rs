//! `conformance`: runs generated (and the fixed) conformance cases against the simulated
//! services and against private real ZooKeeper, Redis, MariaDB and a SQLite file, and reports
//! every divergence with its shrunk case. The last line is `divergences: <N>`.
//!
//! ```text
//! cargo run -p tests --release --bin conformance -- --cases 10000 [--seed S] [--only zk|redis|sql|sqlite|mariadb] [--verbose]
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use tests::conformance::gen::{case_seed, generate, shrink};
use tests::conformance::ops::{Case, Service};
use tests::conformance::real_backend::Services;
use tests::conformance::{diff, fixed, fixed_db, Harness};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    Zk,
    Redis,
    /// The `Db` port: each case on SQLite and on MariaDB.
    Sql,
    Sqlite,
    Mariadb,
}

impl Only {
    fn services(only: Option<Only>) -> Services {
        let (zk, redis, sqlite, mariadb) = match only {
            None => (true, true, true, true),
            Some(Only::Zk) => (true, false, false, false),
            Some(Only::Redis) => (false, true, false, false),
            Some(Only::Sql) => (false, false, true, true),
            Some(Only::Sqlite) => (false, false, true, false),
            Some(Only::Mariadb) => (false, false, false, true),
        };
        Services { zk, redis, sqlite, mariadb }
    }
}

#[derive(Debug, Parser)]
#[command(
    about = "Sim-vs-real conformance of the Coord (ZooKeeper), Kv (Redis) and Db (SQL) ports",
    long_about = "Sim-vs-real conformance of the Coord (ZooKeeper), Kv (Redis) and Db (SQL) ports.\n\n\
        Generated cases are split evenly between ZooKeeper, Redis and SQL unless --only picks \
        one. A SQL case runs the same steps against the simulated SQL node and against SQLite, \
        and again against MariaDB (two comparisons, tallied as sqlite and mariadb); \
        --only sql runs only SQL cases, --only sqlite / mariadb one engine."
)]
struct Args {
    /// Generated cases to run (split evenly between ZooKeeper, Redis and SQL unless --only;
    /// a SQL case is checked on SQLite and on MariaDB).
    #[arg(long, default_value_t = 1000)]
    cases: u64,
    /// Seed of the generated cases (case i uses a seed derived from this and i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only one service (sql: SQLite and MariaDB).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Print every case's transcripts.
    #[arg(long)]
    verbose: bool,
    /// Skip the fixed (scripted) cases.
    #[arg(long)]
    no_fixed: bool,
    /// Stop shrinking and reporting after this many divergences.
    #[arg(long, default_value_t = 20)]
    max_reports: usize,
    /// Run only the generated case with this seed (as printed: `gen-0x...`), verbosely, on
    /// the service given by --only (default zk).
    #[arg(long, value_parser = parse_seed)]
    case_seed: Option<u64>,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let s = s.trim_start_matches("gen-");
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|e| e.to_string()),
        None => s.parse().map_err(|e: std::num::ParseIntError| e.to_string()),
    }
}

/// Outcomes counted over the generated cases' transcripts, to show what the cases reach.
const COVERAGE: &[&str] = &[
    "Err(NodeExists)",
    "Err(NoNode)",
    "Err(BadVersion)",
    "Err(NotEmpty)",
    "Err(NoChildrenForEphemerals)",
    "Err(BadArguments)",
    "Err(Closed)",
    "Err(multi index=",
    "-> ok [",
    "0000000",
    " fired: ",
    "Session(Closed)",
    "owner=S",
    "Err(WrongType)",
    "Err(Server(",
    "Remaining(",
    "list [",
    "err Fenced",
    "err VersionMismatch",
    "err NotFound",
    "err UniqueViolation",
    "err InvalidArgument",
    "Guard { version",
    "Restore { applied: true",
    "Restore { applied: false",
    "RaiseFence { row: None",
    "value: None",
];

#[derive(Default)]
struct Tally {
    cases: u64,
    divergences: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let services = Only::services(args.only);
    let h = Harness::start_services(services)?;
    let names: Vec<&str> = [
        (services.zk, "zookeeper"),
        (services.redis, "redis"),
        (services.sqlite, "sqlite"),
        (services.mariadb, "mariadb"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    println!(
        "conformance: {} generated cases, seed {}, services: {} (started in {:.1}s)",
        args.cases,
        args.seed,
        names.join(" "),
        started.elapsed().as_secs_f64()
    );
    // What one generated case index runs: a service, or both SQL engines.
    let kinds: Vec<Vec<Service>> = match args.only {
        None => vec![vec![Service::Zk], vec![Service::Redis], vec![Service::Sqlite, Service::Mariadb]],
        Some(Only::Zk) => vec![vec![Service::Zk]],
        Some(Only::Redis) => vec![vec![Service::Redis]],
        Some(Only::Sql) => vec![vec![Service::Sqlite, Service::Mariadb]],
        Some(Only::Sqlite) => vec![vec![Service::Sqlite]],
        Some(Only::Mariadb) => vec![vec![Service::Mariadb]],
    };
    if let Some(seed) = args.case_seed {
        let mut total = 0;
        for &service in &kinds[0] {
            let case = generate(service, seed);
            let o = h.check(&case, seed);
            println!("{case}");
            print!("{}", diff::render(&o.sim, &o.real));
            total += u8::from(o.divergence.is_some());
        }
        println!("divergences: {total}");
        return Ok(());
    }
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut reported = 0usize;
    let report = |h: &Harness, label: &str, case: &Case, sim_seed: u64, reported: &mut usize| {
        *reported += 1;
        if *reported > args.max_reports {
            return;
        }
        let (small, attempts) = if case.name.starts_with("gen-") {
            shrink(case, |c| h.check(c, sim_seed).divergence.is_some())
        } else {
            (case.clone(), 0)
        };
        let o = h.check(&small, sim_seed);
        println!(
            "\nDIVERGENCE [{label}] {} (shrunk from {} to {} steps in {attempts} runs)",
            case.name,
            case.steps.len(),
            small.steps.len()
        );
        print!("{small}");
        match &o.divergence {
            Some(d) => {
                println!("  first difference at transcript line {}:", d.line);
                print!("{}", diff::render(&o.sim, &o.real));
            }
            None => println!("  (the shrunk case did not diverge again: flaky?)"),
        }
    };

    if !args.no_fixed {
        let t0 = Instant::now();
        for case in fixed::cases().into_iter().chain(fixed_db::cases()) {
            if !services.has(case.service) {
                continue;
            }
            let o = h.check(&case, 1);
            let tally = tallies.entry(format!("fixed-{}", case.service)).or_default();
            tally.cases += 1;
            if args.verbose {
                println!("\n{case}-- sim --\n{}-- real --\n{}", o.sim.text(), o.real.text());
            }
            if o.divergence.is_some() {
                tally.divergences += 1;
                report(&h, "fixed", &case, 1, &mut reported);
            }
        }
        println!("fixed cases done in {:.1}s", t0.elapsed().as_secs_f64());
    }

    let t0 = Instant::now();
    let mut last_progress = Instant::now();
    let mut coverage = [0u64; COVERAGE.len()];
    for i in 0..args.cases {
        let seed = case_seed(args.seed, i);
        for &service in &kinds[(i % kinds.len() as u64) as usize] {
            let case = generate(service, seed);
            let o = h.check(&case, seed);
            for line in &o.real.lines {
                for (i, m) in COVERAGE.iter().enumerate() {
                    if line.contains(m) {
                        coverage[i] += 1;
                    }
                }
            }
            let tally = tallies.entry(format!("generated-{service}")).or_default();
            tally.cases += 1;
            if args.verbose {
                println!("\n{case}-- sim --\n{}-- real --\n{}", o.sim.text(), o.real.text());
            }
            if o.divergence.is_some() {
                tally.divergences += 1;
                report(&h, "generated", &case, seed, &mut reported);
            }
        }
        if last_progress.elapsed().as_secs() >= 30 {
            last_progress = Instant::now();
            eprintln!("  ... {}/{} cases, {:.0}s", i + 1, args.cases, t0.elapsed().as_secs_f64());
        }
    }
    let gen_secs = t0.elapsed().as_secs_f64();

    println!();
    if args.cases > 0 {
        let parts: Vec<String> = COVERAGE.iter().zip(coverage).map(|(m, n)| format!("{m:?}: {n}")).collect();
        println!("transcript lines containing: {}", parts.join(", "));
    }
    let mut total = 0;
    for (name, t) in &tallies {
        println!("{name}: {} cases, {} divergences", t.cases, t.divergences);
        total += t.divergences;
    }
    println!(
        "runtime: {:.1}s total, {:.1}s for {} generated cases ({:.1} ms/case)",
        started.elapsed().as_secs_f64(),
        gen_secs,
        args.cases,
        if args.cases > 0 { gen_secs * 1000.0 / args.cases as f64 } else { 0.0 }
    );
    println!("divergences: {total}");
    if total > 0 {
        // `exit` runs no destructors: stop the private services first.
        drop(h);
        std::process::exit(1);
    }
    Ok(())
}
