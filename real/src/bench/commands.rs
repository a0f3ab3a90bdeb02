//! `commands`: deferred command packs (`engine::commands`) on a real ZooKeeper and a real SQL
//! instance (SQLite file, private MariaDB), one server in this process.
//!
//! | case | engine | baseline (same run) |
//! |---|---|---|
//! | `ack` | clients submit packs of [`PACK_COMMANDS`] commands in a closed loop (`Commands::submit`: one transaction holding the user's queue record and state, the pack row, group commit), 100 and 1,000 clients, execution paused | raw `sqlx`: `BEGIN`, two fenced versioned `UPDATE`s (the queue row and a pack row), `COMMIT`, same number of tasks |
//! | `ack paced` | each client sends a pack every [`PACED_INTERVAL`] (open loop, latency counted from the instant a pack was due) while the workers execute: the latency a player sees below saturation | the raw 2-UPDATE transaction on as many tasks, paced alike |
//! | `execute` | the packs the `ack` case stored, drained by the worker pool ([`WORKERS`] workers): executed commands/s | raw `sqlx`: `BEGIN`, three fenced versioned `UPDATE`s (state, queue, pack outcome), `COMMIT` on [`WORKERS`] tasks, counted as [`PACK_COMMANDS`] commands each |
//!
//! Each client rotates over [`USERS_PER_CLIENT`] users (so a client's packs never wait for its
//! own queue's room); the users log in (one state read each) before the measurement. Every shard is on the one instance, so every commit is one `transact`.
//! The baselines leave out reads (the engine reads the pack row before executing it): they
//! are the durable writes alone, a strict bar.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::adapters::FastPathCounts;
use engine::commands::{
    Command, CommandSet, Commands, CommandsConfig, CommandsObserver, Outcome, Pack, Submitted,
};
use engine::env::{Db, DbInstances};
use engine::orm::{Model, OrmConfig};
use engine::shard::ShardConfig;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::db::{create_rows, on_both_engines, FastCounts, Raw};
use super::driver::{measure, paced, tasks, throughput_rows, Sample};
use super::objects::Server;
use super::{BenchError, BenchReport, Ctx, Row};

const BENCH: &str = "commands";
/// Concurrent clients of the `ack` case (each at most `--sessions`: the smoke test's tiny
/// mode runs fewer).
const CLIENTS: [usize; 2] = [100, 1000];
/// Commands per pack.
const PACK_COMMANDS: usize = 10;
/// Users each client rotates over: enough that no user's queue fills
/// ([`engine::commands::QUEUE_PACKS_MAX`]) while execution is paused, at up to
/// `QUEUE_PACKS_MAX * USERS_PER_CLIENT / 3.5 s` (about 146) acks/s per client. It was 8 (73
/// acks/s per client) until SQLite acks reached 5,000/s at 100 clients and a run failed with
/// `Full`; then 12 (110/s) until MariaDB acks reached 9,800/s at 100 clients (2026-12-05) and
/// a run failed with `Full` again.
const USERS_PER_CLIENT: usize = 16;
/// Users taken at once while the clients log in (each read claims the user's two objects).
const LOGIN_CONCURRENCY: usize = 32;
/// The worker pool of the `execute` case.
const WORKERS: usize = 8;
const APP_ID: &str = "bench_commands";
/// The object store's cache expiry in this bench: longer than the run.
const CACHE_EXPIRATION: Duration = Duration::from_secs(3600);
/// Longest the `execute` case waits for the stored packs to drain.
const DRAIN_MAX: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tally {
    user: String,
    n: i64,
}

impl Model for Tally {
    const MODEL: &'static str = "bench_tally";
    fn key(&self) -> String {
        self.user.clone()
    }
}

#[derive(Deserialize)]
struct Add {
    n: i64,
}

impl Command<Tally> for Add {
    const NAME: &'static str = "add";
    fn apply(&self, t: &mut Tally) -> Result<(), String> {
        t.n += self.n;
        Ok(())
    }
}

fn set() -> CommandSet<Tally> {
    CommandSet::new(|u| Tally { user: u.to_string(), n: 0 }).queued::<Add>()
}

fn pack(c: &Commands<Tally>, pack_id: u64) -> Result<Pack, BenchError> {
    let commands: Vec<_> = (0..PACK_COMMANDS).map(|_| json!({"op": "add", "n": 1})).collect();
    c.parse(&json!({"pack_id": pack_id, "basis": 0, "commands": commands}))
        .map_err(|e| BenchError::op(BENCH, format!("pack: {e}")))
}

/// Users of client `t` among `clients`.
fn user(clients: usize, t: usize, k: usize) -> String {
    format!("c{clients}t{t}u{k}")
}

/// The clients log in: every user's state is read once (which makes this server the owner of
/// its queue record and state), [`LOGIN_CONCURRENCY`] at a time.
async fn log_in(c: &Commands<Tally>, clients: usize) -> Result<(), BenchError> {
    use futures::StreamExt;
    let users: Vec<String> =
        (0..clients).flat_map(|t| (0..USERS_PER_CLIENT).map(move |k| user(clients, t, k))).collect();
    let mut reads =
        futures::stream::iter(
            users.into_iter().map(|u| {
                let c = c.clone();
                async move {
                    c.read(&u).await.map_err(|e| BenchError::setup(BENCH, format!("logging {u} in: {e}")))
                }
            }),
        )
        .buffer_unordered(LOGIN_CONCURRENCY);
    while let Some(r) = reads.next().await {
        r?;
    }
    Ok(())
}

/// How the `ack` case's clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// Each client sends its next pack as soon as the last one was acknowledged, with
    /// execution paused: the most acks/s, latency = clients / throughput (Little's law).
    Closed,
    /// Each client sends a pack every [`PACED_INTERVAL`] while the workers execute: the
    /// latency a player sees at a steady rate below saturation.
    Paced,
}

/// How often each client sends a pack in the paced `ack` case.
const PACED_INTERVAL: Duration = Duration::from_secs(2);

/// The next pack id of every user of one client level.
struct NextIds(Arc<Vec<AtomicU64>>);

impl NextIds {
    fn new(clients: usize) -> NextIds {
        NextIds(Arc::new((0..clients * USERS_PER_CLIENT).map(|_| AtomicU64::new(1)).collect()))
    }
}

/// Measures acks under `load`; returns the sample and the packs stored.
async fn acks(
    ctx: &Ctx,
    c: &Commands<Tally>,
    clients: usize,
    ids: &NextIds,
    load: Load,
) -> Result<(Sample, u64), BenchError> {
    let stored = Arc::new(AtomicU64::new(0));
    let (c2, next2, stored2) = (c.clone(), ids.0.clone(), stored.clone());
    let op = move |t: usize, i: u64| {
        let (c, next, stored) = (c2.clone(), next2.clone(), stored2.clone());
        async move {
            let k = (i as usize) % USERS_PER_CLIENT;
            let slot = &next[t * USERS_PER_CLIENT + k];
            let id = slot.load(Ordering::Relaxed);
            let u = user(clients, t, k);
            match c.submit(&u, pack(&c, id)?).await {
                Ok(Submitted::Stored) => {
                    slot.store(id + 1, Ordering::Relaxed);
                    stored.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                other => Err(BenchError::op(BENCH, format!("submit {u} pack {id}: {other:?}"))),
            }
        }
    };
    let sample = match load {
        Load::Closed => {
            c.set_workers(0);
            measure(BENCH, clients, ctx.settings.warmup(), ctx.settings.duration(), op).await?
        }
        Load::Paced => {
            c.set_workers(WORKERS);
            let rate = clients as f64 / PACED_INTERVAL.as_secs_f64();
            paced(BENCH, clients, rate, paced_duration(ctx), 0, op).await?
        }
    };
    Ok((sample, stored.load(Ordering::Relaxed)))
}

/// The paced case runs at least two sending intervals, so that every client sends twice.
fn paced_duration(ctx: &Ctx) -> Duration {
    ctx.settings.duration().max(2 * PACED_INTERVAL)
}

/// Counts the packs executed (committed).
#[derive(Default)]
struct Executed(AtomicU64);

impl CommandsObserver for Executed {
    fn executing(&self, _: &str, _: u64) {}
    fn executed(&self, _: &str, _: u64, committed: Option<(Outcome, u64)>) {
        if committed.is_some() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits until `target` packs executed in all.
async fn executed_reach(executed: &Executed, target: u64) -> Result<(), BenchError> {
    let start = Instant::now();
    while executed.0.load(Ordering::Relaxed) < target {
        if start.elapsed() > DRAIN_MAX {
            return Err(BenchError::op(BENCH, format!("packs not drained in {DRAIN_MAX:?}")));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Resumes the workers and waits until `packs` more packs executed; executed packs/s.
async fn drain(c: &Commands<Tally>, executed: &Executed, packs: u64) -> Result<Sample, BenchError> {
    let start = Instant::now();
    let target = executed.0.load(Ordering::Relaxed) + packs;
    c.set_workers(WORKERS);
    executed_reach(executed, target).await?;
    // One latency entry per pack, each the mean: only throughput is reported for this case.
    let elapsed = start.elapsed();
    let each = u64::try_from((elapsed / packs.max(1) as u32).as_nanos()).unwrap_or(u64::MAX);
    Ok(Sample::new(elapsed, vec![each; packs as usize]))
}

/// Raw versioned updates of `per_task` rows per transaction on `concurrency` tasks, in a
/// closed loop or paced like the engine's case.
async fn raw_txns(
    ctx: &Ctx,
    db: &dyn Db,
    raw: &Raw,
    case: &str,
    concurrency: usize,
    per_task: usize,
    load: Load,
) -> Result<Sample, BenchError> {
    let rows = create_rows(db, "commands-raw", case, concurrency, per_task).await?;
    let raw = raw.clone();
    let op = move |task: usize, _| {
        let (raw, rows) = (raw.clone(), rows.clone());
        async move { raw.update(&rows[task]).await }
    };
    match load {
        Load::Closed => measure(BENCH, concurrency, ctx.settings.warmup(), ctx.settings.duration(), op).await,
        Load::Paced => {
            let rate = concurrency as f64 / PACED_INTERVAL.as_secs_f64();
            paced(BENCH, concurrency, rate, paced_duration(ctx), 0, op).await
        }
    }
}

/// Scales a sample of packs to one of commands (same time, `PACK_COMMANDS`× the operations).
fn as_commands(s: &Sample) -> Sample {
    let per = s.percentile_us(0.5);
    let each = (per * 1000.0 / PACK_COMMANDS as f64) as u64;
    Sample::new(s.elapsed, vec![each; s.ops() * PACK_COMMANDS])
}

async fn engine_cases(
    ctx: &Ctx,
    engine: &str,
    db: Arc<dyn Db>,
    raw: Raw,
    fast: FastCounts,
    notes: &std::sync::Mutex<Vec<String>>,
) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    // The fast path's counts per case, for the notes: (case, hits, misses, general).
    let mut fast_by_case: Vec<(String, FastPathCounts)> = Vec::new();
    let mut fast_before = fast();
    let mut fast_case = |case: String| {
        let now = fast();
        let d = now.since(&fast_before);
        fast_before = now;
        fast_by_case.push((case, d));
    };
    if let (Some(pool), Some(log)) = (
        raw.server_variable("innodb_buffer_pool_size").await,
        raw.server_variable("innodb_log_file_size").await,
    ) {
        engine::env::lock(notes).push(format!(
            "{engine}: the server's InnoDB buffer pool {} MiB, redo log {} MiB",
            pool >> 20,
            log >> 20
        ));
    }
    let deadlocks_before = raw.deadlocks().await;
    let lock_waits_before =
        (raw.innodb_status("Innodb_row_lock_waits").await, raw.innodb_status("Innodb_row_lock_time").await);
    let dir = DbInstances::empty().with(db.clone()).map_err(|e| BenchError::setup(BENCH, e))?;
    let shards = ShardConfig::single("db-0", "", engine::shard::LOGICAL_SHARDS_DEFAULT);
    let app = format!("{APP_ID}_{engine}");
    // Logged-in users' objects stay owned for the whole run (as a game sets
    // `cache_expiration_in_ms` above its players' idle times).
    let mut orm = OrmConfig::new(&app);
    orm.cache_expiration = CACHE_EXPIRATION;
    let server = Server::start_with(ctx, &format!("{engine}-commands-0"), &dir, &shards, orm).await?;
    let cfg = CommandsConfig { workers: WORKERS, ..CommandsConfig::default() };
    let executed = Arc::new(Executed::default());
    let c = Commands::start(server.env.clone(), server.orm.clone(), set(), cfg, Some(executed.clone()))
        .map_err(|e| BenchError::setup(BENCH, e))?;
    let result = async {
        let mut levels: Vec<usize> = CLIENTS.iter().map(|&c| c.min(ctx.settings.sessions.max(1))).collect();
        levels.dedup();
        for clients in levels {
            log_in(&c, clients).await?;
            fast_case(format!("log-in {clients}"));
            let ids = NextIds::new(clients);
            let (ack, stored) = acks(ctx, &c, clients, &ids, Load::Closed).await?;
            fast_case(format!("ack {clients}"));
            let raw_ack = raw_txns(ctx, &*db, &raw, "ack", clients, 2, Load::Closed).await?;
            rows.extend(throughput_rows(
                &format!("{engine} ack, {} clients", clients),
                "ack/s",
                &ack,
                &raw_ack,
            ));
            let exec = drain(&c, &executed, stored).await?;
            fast_case(format!("execute {clients}"));
            let raw_exec = raw_txns(ctx, &*db, &raw, "exec", WORKERS, 3, Load::Closed).await?;
            let (e, b) = (as_commands(&exec), as_commands(&raw_exec));
            let name = format!("{engine} execute, {} ({stored} packs)", tasks(WORKERS));
            rows.extend(throughput_rows(&name, "command/s", &e, &b).into_iter().take(1));
            // Paced: acks while the workers execute what comes in.
            let before = executed.0.load(Ordering::Relaxed);
            let (ack, stored) = acks(ctx, &c, clients, &ids, Load::Paced).await?;
            let raw_ack = raw_txns(ctx, &*db, &raw, "ack-paced", clients, 2, Load::Paced).await?;
            let rate = clients as f64 / PACED_INTERVAL.as_secs_f64();
            rows.extend(throughput_rows(
                &format!("{engine} ack paced, {clients} clients at {rate:.0}/s"),
                "ack/s",
                &ack,
                &raw_ack,
            ));
            executed_reach(&executed, before + stored).await?;
            fast_case(format!("paced {clients}"));
        }
        Ok::<_, BenchError>(())
    }
    .await;
    c.stop();
    server.stop().await;
    engine::env::lock(notes).push(format!(
        "{engine}: transactions by path (fast hit / fast missed, then general / general only; a hit's mean time): {}",
        fast_by_case
            .iter()
            .map(|(case, c)| {
                let mean = c.hit_us.checked_div(c.hits).unwrap_or(0);
                format!("{case}: {} / {} / {}; {mean} us", c.hits, c.misses, c.general)
            })
            .collect::<Vec<_>>()
            .join("; ")
    ));
    if let ((Some(waits), Some(ms)), Some(waits_after), Some(ms_after)) = (
        lock_waits_before,
        raw.innodb_status("Innodb_row_lock_waits").await,
        raw.innodb_status("Innodb_row_lock_time").await,
    ) {
        engine::env::lock(notes).push(format!(
            "{engine}: {} row lock waits, {} ms waited in all, during this engine's cases and baselines",
            waits_after.saturating_sub(waits),
            ms_after.saturating_sub(ms)
        ));
    }
    if let (Some(before), Some(after)) = (deadlocks_before, raw.deadlocks().await) {
        engine::env::lock(notes).push(format!(
            "{engine}: {} deadlocks (error 1213, each rolled back and run again by the adapter) during this engine's cases",
            after.saturating_sub(before)
        ));
    }
    result.map(|()| rows)
}

pub(super) fn run(ctx: &Ctx) -> Result<BenchReport, BenchError> {
    let mut report = BenchReport::new(BENCH);
    let notes = std::sync::Mutex::new(Vec::new());
    report.rows = on_both_engines(BENCH, "db-0", |engine, db, raw, fast| {
        engine_cases(ctx, engine, db, raw, fast, &notes)
    })?;
    report.notes.push(format!(
        "one server (a private ZooKeeper), every shard on one instance; packs of {PACK_COMMANDS} commands; \
         'ack': clients submit in a closed loop with execution paused (each over {USERS_PER_CLIENT} users) against raw \
         BEGIN + 2 fenced versioned UPDATEs + COMMIT on as many tasks; 'execute': the stored packs drained by \
         {WORKERS} workers against raw BEGIN + 3 fenced versioned UPDATEs + COMMIT on {WORKERS} tasks, \
         {PACK_COMMANDS} commands per transaction; 'ack paced': each client sends a pack every {PACED_INTERVAL:?} \
         while the workers execute (open loop: latency from the instant a pack was due) against the raw \
         2-UPDATE transaction paced alike"
    ));
    report.notes.extend(notes.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
    Ok(report)
}
