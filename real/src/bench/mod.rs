//! `real bench`: the engine on the real backend measured against the cheapest raw equivalent,
//! in the same process, on the same machine, against the same private services.
//!
//! | bench | engine figure | baseline (same run) |
//! |---|---|---|
//! | `rpc` | `engine::rpc` echo calls between two nodes (TokioNet over loopback TCP, membership in a real ZooKeeper), 1 and 16 in flight: calls/s, p50, p99, max latency | a tokio `LengthDelimitedCodec` echo server and client, same payload, the same number of requests in flight on one connection |
//! | `storage` | `CrossServerStorage` create + read, 1 and 16 tasks | the `redis` crate: `SET key value PX` + `GET` on one multiplexed connection, same tasks |
//! | `login` | `AccountManager::check_and_set_logged_in` + `set_logged_out`, 1 and 16 tasks | `zookeeper-client`: ephemeral create + delete on one session, same tasks |
//! | `sessions` | N idle TCP JSON sessions of one `SessionService`: resident memory and heap per session, time until every client got one `broadcast_locally` | N raw tokio stream pairs with a read task each; the same frame written to every stream |
//! | `objects` | `engine::orm` on two servers: a gift whose two objects are borrowed from the other server (lending hand-off), and a two-object transaction on one server, 1 and 16 tasks, SQLite and MariaDB | the same gift with both objects owned locally; raw `sqlx` `BEGIN` + two fenced `UPDATE`s + `COMMIT` |
//! | `commands` | `engine::commands`: durable pack acks (packs of 10 commands) at 100 and 1,000 clients with execution paused, then the worker pool draining them, SQLite and MariaDB | raw `sqlx` `BEGIN` + two fenced `UPDATE`s + `COMMIT` per ack; `BEGIN` + three + `COMMIT` per executed pack |
//! | `db` | `Db::transact` of one fenced, versioned row update and of a 2-row transaction on SQLite and a private MariaDB, 1 and 16 tasks | raw `sqlx` statements doing the same work (conditional `UPDATE`s, `BEGIN`/`COMMIT` around two) on the same database |
//! | `gate` | the gate hop on `sandtable-server` processes: 100 players through a gate sending `cs_counter_add` (applied: one SQLite commit; and repeated: no SQL) open-loop at 1,000 and 10,000 msg/s: msg/s, p50, p99, max latency from the due instant; resident memory of the gate process per idle player (and of its backend) | the same players' twins logged in on the same backend directly, same messages and rates; resident memory of a game server process per idle direct session |
//!
//! Every figure is printed with its baseline and the ratio engine / baseline. Nothing here
//! asserts on time (DESIGN.md §9: benchmarks are benchmarks): `tests/bench_smoke.rs` only
//! checks that every bench produces figures.
//!
//! Each bench runs on its own tokio runtime (as many workers as cores), dropped before the
//! next one starts, so one bench's tasks, sockets and I/O slabs never weigh on another's.
//! Latency percentiles (p50, p99, max) are nearest-rank over the sorted latencies of every
//! operation of the measurement (all are kept; no histogram crate is needed at these
//! counts). The max is there because percentiles of completed operations hide starvation: a
//! task that waited the whole measurement completed one operation among thousands.
//!
//! # Layout
//! - this file: [`BenchArgs`], [`run`], the report ([`Report`], [`BenchReport`], [`Row`]);
//! - `driver`: runtimes, the closed-loop load driver, latency samples;
//! - `machine`: the machine context and the fd limit;
//! - `rpc`, `storage`, `login`, `sessions`, `db`, `objects`, `commands`, `gate`: one bench each;
//! - `abuse`: hostile clients against a `sandtable-server` process (`real abuse`, issue 20),
//!   a separate command because its figures are not engine-versus-baseline rows.
//!
//! Redis and ZooKeeper are started only when a bench that needs them runs; `db` starts its
//! own MariaDB and SQLite file; `gate` starts `sandtable-server` processes (`--server-exe`,
//! else the one next to this executable).

pub mod abuse;
mod commands;
mod db;
mod driver;
mod gate;
mod login;
mod machine;
mod objects;
mod relay;
mod rpc;
mod sessions;
pub use sessions::{run_clients as run_session_clients, SessionClientsArgs, CLIENTS_SUBCOMMAND};
mod storage;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use self::machine::{FdLimit, Machine};
use crate::services::{PrivateRedis, PrivateZk, ServiceError};

/// The benchmarks, in the order they run.
pub const BENCHES: [&str; 8] = ["rpc", "storage", "login", "sessions", "db", "objects", "commands", "gate"];
/// The benches that run on private Redis and ZooKeeper.
const NEEDS_REDIS_AND_ZK: [&str; 7] = ["rpc", "storage", "login", "sessions", "objects", "commands", "gate"];

/// Length of each measurement by default, and with `--quick`.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(3);
pub const DURATION_QUICK: Duration = Duration::from_secs(1);
/// Idle sessions the `sessions` bench opens by default, and with `--quick` (fewer if the fd
/// limit does not allow as many).
pub const SESSIONS_DEFAULT: usize = 100_000;
pub const SESSIONS_QUICK: usize = 10_000;
/// Idle players the `gate` bench logs in through a gate (and directly, for the baseline) by
/// default, and with `--quick` (fewer if the fd limit does not allow as many).
pub const PLAYERS_DEFAULT: usize = 5_000;
pub const PLAYERS_QUICK: usize = 1_000;
/// Repetitions of the rpc and login benches by default, and with `--quick`.
pub const REPS_DEFAULT: usize = 5;
pub const REPS_QUICK: usize = 1;
/// Warm-up before each measurement, as a fraction of its length (connections opened, caches
/// and allocator pools filled), capped at [`WARMUP_MAX`].
const WARMUP_FRACTION: u32 = 5;
const WARMUP_MAX: Duration = Duration::from_millis(500);

/// Command-line arguments of `real bench`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    /// Benchmarks to run: rpc, storage, login, sessions, db, objects, commands, gate (all when none is named).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Short run: 1 s per measurement, 10 000 sessions and 1 000 gate players.
    #[arg(long)]
    pub quick: bool,
    /// Length of each measurement in milliseconds (default 3000; 1000 with --quick).
    #[arg(long, value_name = "MS")]
    pub duration_ms: Option<u64>,
    /// Idle sessions to open (default 100000; 10000 with --quick). Reduced, with a note, to
    /// what the file-descriptor limit allows (1 descriptor per session in this process; the
    /// clients run in a child process).
    #[arg(long, value_name = "N")]
    pub sessions: Option<usize>,
    /// Idle players of the gate bench (default 5000; 1000 with --quick). Reduced, with a
    /// note, to what the file-descriptor limit allows (1 descriptor per player on the gate).
    #[arg(long, value_name = "N")]
    pub players: Option<usize>,
    /// Repetitions of the rpc and login benches' measurements, each the engine then the
    /// baseline; their rows are the medians, with the spreads in notes (default 5; 1 with
    /// --quick).
    #[arg(long, value_name = "N")]
    pub reps: Option<usize>,
    /// The `sandtable-server` executable the gate bench starts (default: the one next to
    /// this executable).
    #[arg(long, value_name = "PATH")]
    pub server_exe: Option<PathBuf>,
    /// Also write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A name that is not in [`BENCHES`].
    #[error("unknown benchmark {0:?} (known: rpc, storage, login, sessions, db, objects, commands, gate)")]
    UnknownBench(String),
    /// The private Redis or ZooKeeper could not be started.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Starting an engine component or a raw client failed before measuring.
    #[error("{bench}: setup failed: {reason}")]
    Setup { bench: &'static str, reason: String },
    /// An operation failed while being measured (the figures would be meaningless).
    #[error("{bench}: operation failed: {reason}")]
    Op { bench: &'static str, reason: String },
    /// Something did not happen within its bound (e.g. not every session was opened).
    #[error("{bench}: timed out after {waited:?} waiting for {what}")]
    Timeout { bench: &'static str, what: String, waited: Duration },
    /// I/O outside the measured operations (runtime, sockets, `/proc`, the JSON file).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl BenchError {
    pub(crate) fn setup(bench: &'static str, reason: impl std::fmt::Display) -> Self {
        BenchError::Setup { bench, reason: reason.to_string() }
    }
    pub(crate) fn op(bench: &'static str, reason: impl std::fmt::Display) -> Self {
        BenchError::Op { bench, reason: reason.to_string() }
    }
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// Whether a larger figure is the better one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One figure: the engine's, the baseline's, and engine / baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The setting measured (`16 in flight`, `9900 idle sessions`).
    pub case: String,
    /// What is measured (`throughput`, `p99 latency`, `memory per session`).
    pub metric: String,
    /// Unit of `engine` and `baseline` (`calls/s`, `us`, `KiB`, `ms`).
    pub unit: String,
    pub better: Better,
    pub engine: f64,
    pub baseline: f64,
    /// `engine / baseline`: below 1 is slower for throughputs, above 1 is costlier for
    /// latencies, times and memory.
    pub ratio: f64,
}

impl Row {
    pub fn new(case: &str, metric: &str, unit: &str, better: Better, engine: f64, baseline: f64) -> Row {
        Row {
            case: case.to_string(),
            metric: metric.to_string(),
            unit: unit.to_string(),
            better,
            engine,
            baseline,
            ratio: engine / baseline,
        }
    }
}

/// The figures of one benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub name: String,
    pub rows: Vec<Row>,
    /// What the reader must know to read the rows (e.g. a reduced session count).
    pub notes: Vec<String>,
    /// Wall time of the whole bench, setup included.
    pub wall_secs: f64,
}

impl BenchReport {
    fn new(name: &str) -> Self {
        BenchReport { name: name.to_string(), rows: Vec::new(), notes: Vec::new(), wall_secs: 0.0 }
    }

    /// The one line printed when the bench finishes: the first metric of every case.
    pub fn summary_line(&self) -> String {
        let mut line = format!("[{}] {:.1} s:", self.name, self.wall_secs);
        let mut seen = Vec::new();
        for r in &self.rows {
            if seen.contains(&&r.case) {
                continue;
            }
            seen.push(&r.case);
            let _ = write!(
                line,
                " {}: {} {} {} (baseline {}, ratio {:.2});",
                r.case,
                r.metric,
                fmt_num(r.engine),
                r.unit,
                fmt_num(r.baseline),
                r.ratio
            );
        }
        line.pop();
        line
    }
}

/// Everything one `run` measured, with the machine it ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub benches: Vec<BenchReport>,
}

impl Report {
    /// The aligned plain-text table of every row.
    pub fn table(&self) -> String {
        let header = ["bench", "case", "metric", "unit", "engine", "baseline", "engine/baseline"];
        let mut cells: Vec<[String; 7]> = vec![header.map(str::to_string)];
        for b in &self.benches {
            for r in &b.rows {
                cells.push([
                    b.name.clone(),
                    r.case.clone(),
                    r.metric.clone(),
                    r.unit.clone(),
                    fmt_num(r.engine),
                    fmt_num(r.baseline),
                    format!("{:.2}", r.ratio),
                ]);
            }
        }
        let mut widths = [0usize; 7];
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in &cells {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(widths).enumerate() {
                // Text columns left-aligned, figures right-aligned.
                if i < 4 {
                    let _ = write!(line, "{c:<w$}  ");
                } else {
                    let _ = write!(line, "{c:>w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for b in &self.benches {
            for n in &b.notes {
                let _ = writeln!(out, "note ({}): {n}", b.name);
            }
        }
        out
    }
}

/// The settings a run used, after `--quick` and the explicit options were applied.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub duration_ms: u64,
    pub warmup_ms: u64,
    /// Sessions asked for (the `sessions` bench may open fewer; it says so in its notes).
    pub sessions: usize,
    /// Idle players asked for (the `gate` bench may open fewer; it says so in its notes).
    pub players: usize,
    /// Repetitions of the rpc and login benches' measurements.
    pub reps: usize,
}

impl Settings {
    fn from_args(args: &BenchArgs) -> Settings {
        let duration = match args.duration_ms {
            Some(ms) => Duration::from_millis(ms.max(1)),
            None if args.quick => DURATION_QUICK,
            None => DURATION_DEFAULT,
        };
        let sessions = args.sessions.unwrap_or(if args.quick { SESSIONS_QUICK } else { SESSIONS_DEFAULT });
        let players = args.players.unwrap_or(if args.quick { PLAYERS_QUICK } else { PLAYERS_DEFAULT });
        let warmup = (duration / WARMUP_FRACTION).min(WARMUP_MAX);
        let reps = args.reps.unwrap_or(if args.quick { REPS_QUICK } else { REPS_DEFAULT });
        Settings {
            duration_ms: ms(duration),
            warmup_ms: ms(warmup),
            sessions: sessions.max(1),
            players: players.max(1),
            reps: reps.max(1),
        }
    }
    fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }
    fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What every bench gets: where the services are and how long to measure.
pub(crate) struct Ctx {
    pub zookeeper: String,
    pub redis_url: String,
    pub settings: Settings,
    pub fd: FdLimit,
    /// `--server-exe`.
    pub server_exe: Option<PathBuf>,
}

impl Ctx {
    fn env_config(&self, node: &str) -> crate::env::RealEnvConfig {
        crate::env::RealEnvConfig {
            node: node.to_string(),
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            zookeeper: self.zookeeper.clone(),
            redis_url: self.redis_url.clone(),
            redis: Default::default(),
        }
    }
}

/// Runs the benchmarks named in `args` (all if none), printing the machine context, one line
/// per bench as it finishes and the table at the end; writes `args.json` if set. Starts its
/// own private Redis and ZooKeeper (when a bench needs them; `db` its own MariaDB) and stops
/// them before returning. Blocking: call it outside
/// any async runtime (each bench builds its own).
pub fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let names = select(&args.names)?;
    let settings = Settings::from_args(&args);
    let fd = machine::raise_fd_limit();
    let (redis, zk) = if names.iter().any(|n| NEEDS_REDIS_AND_ZK.contains(n)) {
        println!("starting private Redis and ZooKeeper ...");
        (Some(PrivateRedis::start()?), Some(PrivateZk::start()?))
    } else {
        (None, None)
    };
    let machine = Machine::probe(&fd, redis.as_ref(), zk.as_ref());
    print!("{}", machine.describe());
    println!(
        "each measurement: {} ms after {} ms of warm-up; ratio = engine / baseline",
        settings.duration_ms, settings.warmup_ms
    );
    let ctx = Ctx {
        zookeeper: zk.as_ref().map(PrivateZk::connect_string).unwrap_or_default(),
        redis_url: redis.as_ref().map(PrivateRedis::url).unwrap_or_default(),
        settings: settings.clone(),
        fd,
        server_exe: args.server_exe.clone(),
    };
    let mut benches = Vec::new();
    for name in names {
        let start = Instant::now();
        let mut report = match name {
            "rpc" => rpc::run(&ctx)?,
            "storage" => storage::run(&ctx)?,
            "login" => login::run(&ctx)?,
            "sessions" => sessions::run(&ctx)?,
            "db" => db::run(&ctx)?,
            "objects" => objects::run(&ctx)?,
            "commands" => commands::run(&ctx)?,
            "gate" => gate::run(&ctx)?,
            other => return Err(BenchError::UnknownBench(other.to_string())),
        };
        report.wall_secs = start.elapsed().as_secs_f64();
        println!("{}", report.summary_line());
        benches.push(report);
    }
    drop(zk);
    drop(redis);
    let report = Report { machine, settings, benches };
    println!();
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("the report serialises");
        std::fs::write(path, text).map_err(BenchError::io(format!("writing {}", path.display())))?;
        println!("figures written to {}", path.display());
    }
    Ok(report)
}

/// The benches to run, in [`BENCHES`] order, each once.
fn select(names: &[String]) -> Result<Vec<&'static str>, BenchError> {
    if let Some(bad) = names.iter().find(|n| !BENCHES.contains(&n.as_str())) {
        return Err(BenchError::UnknownBench(bad.clone()));
    }
    Ok(BENCHES.into_iter().filter(|b| names.is_empty() || names.iter().any(|n| n == b)).collect())
}

/// A figure with as many decimals as it needs to show about three significant digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_keeps_the_canonical_order_and_rejects_unknown_names() {
        assert_eq!(select(&[]).unwrap(), BENCHES.to_vec());
        let picked = select(&["sessions".to_string(), "rpc".to_string()]).unwrap();
        assert_eq!(picked, vec!["rpc", "sessions"]);
        assert!(matches!(select(&["rcp".to_string()]), Err(BenchError::UnknownBench(n)) if n == "rcp"));
    }

    #[test]
    fn settings_follow_quick_and_explicit_options() {
        let s = Settings::from_args(&BenchArgs::default());
        assert_eq!(
            (s.duration_ms, s.warmup_ms, s.sessions, s.players, s.reps),
            (3000, 500, SESSIONS_DEFAULT, PLAYERS_DEFAULT, REPS_DEFAULT)
        );
        let s = Settings::from_args(&BenchArgs { quick: true, ..Default::default() });
        assert_eq!(
            (s.duration_ms, s.warmup_ms, s.sessions, s.players, s.reps),
            (1000, 200, SESSIONS_QUICK, PLAYERS_QUICK, REPS_QUICK)
        );
        let s = Settings::from_args(&BenchArgs {
            quick: true,
            duration_ms: Some(200),
            sessions: Some(50),
            players: Some(20),
            reps: Some(0),
            ..Default::default()
        });
        assert_eq!((s.duration_ms, s.warmup_ms, s.sessions, s.players, s.reps), (200, 40, 50, 20, 1));
    }

    #[test]
    fn the_table_is_aligned() {
        let mut b = BenchReport::new("rpc");
        b.rows.push(Row::new("1 in flight", "throughput", "calls/s", Better::Higher, 5000.0, 20000.0));
        b.rows.push(Row::new("1 in flight", "p99 latency", "us", Better::Lower, 310.0, 95.5));
        b.notes.push("a note".into());
        let report = Report {
            machine: Machine::default(),
            settings: Settings { duration_ms: 1, warmup_ms: 0, sessions: 1, players: 1, reps: 1 },
            benches: vec![b.clone()],
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("bench") && lines[0].ends_with("engine/baseline"), "{table}");
        assert!(lines[1].ends_with("0.25") && lines[2].ends_with("3.25"), "{table}");
        assert_eq!(lines[0].len(), lines[1].len(), "{table}");
        assert_eq!(lines[1].len(), lines[2].len(), "{table}");
        assert_eq!(lines[3], "note (rpc): a note");
        assert_eq!(
            b.summary_line(),
            "[rpc] 0.0 s: 1 in flight: throughput 5000 calls/s (baseline 20000, ratio 0.25)"
        );
    }
}
