//! `objects`: the object store (`engine::orm`) on a real ZooKeeper and a real SQL instance
//! (SQLite file, private MariaDB), two servers in this process talking RPC over loopback.
//!
//! | case | engine | baseline (same run) |
//! |---|---|---|
//! | `gift hand-off` | a gift transaction (lock both inventories, move 1 gold, commit) on server `i % 2` at iteration `i`: both objects are owned by the *other* server, so every gift borrows both (two `_orm.lend` round trips, two owner-record creates, two fence raises) | the same gift on one server with both objects already owned there |
//! | `hand-off` | a read of one object on server `i % 2` at iteration `i` (`Orm::fetch`): every read borrows it from the other server (one `_orm.lend`, one owner-record create, one fence raise) | the same read of an object owned by the reading server |
//! | `2-object txn` | the same transaction with both objects owned by the server running it: the object store's own cost (locks, lease checks, group commit, one fenced `transact` with two shard guards) | raw `sqlx`: `BEGIN`, two fenced versioned `UPDATE`s, `COMMIT` (as `bench db`'s 2-row case) |
//!
//! Each task has its own pair of users (no conflicts: the figures are the store's cost, not
//! lock waits). Every shard is on the one instance (`ShardConfig::single`), so every commit
//! is a one-instance commit.

use std::sync::Arc;
use std::time::Duration;

use engine::account::{AccountConfig, AccountManager};
use engine::cluster::{Cluster, ClusterConfig};
use engine::env::{Db, DbInstances, Env};
use engine::orm::{Model, Orm, OrmConfig, OrmError};
use engine::rpc::{Rpc, RpcConfig};
use engine::shard::{ShardConfig, ShardRouter};
use serde::{Deserialize, Serialize};

use super::db::{create_rows, on_both_engines, Raw};
use super::driver::{free_port, measure, tasks, throughput_rows, Sample};
use super::{BenchError, BenchReport, Ctx, Row};
use crate::env::real_env;

const BENCH: &str = "objects";
const CONCURRENCY: [usize; 2] = [1, 16];
/// App id prefix; each SQL engine gets its own cluster (`{APP_ID}_{engine}`), so each stores
/// its own shard map and guard rows.
const APP_ID: &str = "bench_objects";
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Gold each bench user starts with (far more than any run moves).
const START_GOLD: i64 = 1_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wallet {
    user: String,
    gold: i64,
}

impl Model for Wallet {
    const MODEL: &'static str = "bench_wallet";
    fn key(&self) -> String {
        self.user.clone()
    }
}

/// One server: cluster member, RPC, account manager, shard router, object store.
pub(super) struct Server {
    pub env: Env,
    cluster: Cluster,
    rpc: Rpc,
    accounts: AccountManager,
    router: ShardRouter,
    pub orm: Orm,
}

impl Server {
    pub(super) async fn start(
        ctx: &Ctx,
        app: &str,
        name: &str,
        db: &DbInstances,
        shards: &ShardConfig,
    ) -> Result<Server, BenchError> {
        Server::start_with(ctx, name, db, shards, OrmConfig::new(app)).await
    }

    /// [`start`](Self::start) with the object store's settings `orm` (its app id included).
    pub(super) async fn start_with(
        ctx: &Ctx,
        name: &str,
        db: &DbInstances,
        shards: &ShardConfig,
        orm: OrmConfig,
    ) -> Result<Server, BenchError> {
        let app = orm.app_id.clone();
        let app = app.as_str();
        let setup =
            |what: &str, e: &dyn std::fmt::Display| BenchError::setup(BENCH, format!("{name}: {what}: {e}"));
        let mut env: Env = real_env(&ctx.env_config(name)).map_err(|e| BenchError::setup(BENCH, e))?;
        env.db = Arc::new(db.clone());
        let addr = free_port()?;
        let mut ccfg = ClusterConfig::new(app, name, addr);
        ccfg.session.session_timeout = SESSION_TIMEOUT;
        let cluster = Cluster::join(env.clone(), ccfg.clone()).await.map_err(|e| setup("join", &e))?;
        let rpc = Rpc::start(env.clone(), cluster.id(), Arc::new(cluster.clone()), RpcConfig::new(addr))
            .await
            .map_err(|e| setup("rpc", &e))?;
        let mut acfg = AccountConfig::new(app);
        acfg.session = ccfg.session;
        let accounts = AccountManager::start(env.clone(), cluster.clone(), rpc.clone(), acfg)
            .await
            .map_err(|e| setup("account manager", &e))?;
        let router = ShardRouter::start(env.clone(), app, shards.clone(), ccfg.session)
            .await
            .map_err(|e| setup("shard router", &e))?;
        let orm =
            Orm::start(env.clone(), orm, accounts.clone(), router.clone(), rpc.clone(), cluster.id(), None)
                .await
                .map_err(|e| setup("object store", &e))?;
        Ok(Server { env, cluster, rpc, accounts, router, orm })
    }

    pub(super) async fn stop(&self) {
        self.orm.stop().await;
        self.router.stop();
        self.accounts.stop().await;
        self.rpc.shutdown().await;
        self.cluster.leave().await;
    }
}

/// Moves 1 gold from `from` to `to` in one transaction.
async fn gift(orm: &Orm, from: &str, to: &str) -> Result<(), BenchError> {
    let op = |e: OrmError| BenchError::op(BENCH, format!("gift {from} -> {to}: {e}"));
    let mut tx = orm.begin();
    tx.lock_all::<Wallet>(&[from, to]).await.map_err(op)?;
    let (Some(mut a), Some(mut b)) = (tx.get::<Wallet>(from).map_err(op)?, tx.get::<Wallet>(to).map_err(op)?)
    else {
        return Err(BenchError::op(BENCH, format!("wallets of {from} and {to} missing")));
    };
    a.gold -= 1;
    b.gold += 1;
    tx.put(&a).map_err(op)?;
    tx.put(&b).map_err(op)?;
    tx.commit().await.map_err(op)
}

/// Creates the wallets of `users` on `orm` (which then owns them).
async fn create_wallets(orm: &Orm, users: &[String]) -> Result<(), BenchError> {
    for chunk in users.chunks(8) {
        let op = |e: OrmError| BenchError::setup(BENCH, format!("creating wallets: {e}"));
        let mut tx = orm.begin();
        let keys: Vec<&str> = chunk.iter().map(String::as_str).collect();
        tx.lock_all::<Wallet>(&keys).await.map_err(op)?;
        for u in chunk {
            if tx.get::<Wallet>(u).map_err(op)?.is_none() {
                tx.create(&Wallet { user: u.clone(), gold: START_GOLD }).map_err(op)?;
            }
        }
        tx.commit().await.map_err(op)?;
    }
    Ok(())
}

/// The users of task `t` of a measurement (`case` keeps measurements apart).
fn pair(case: &str, concurrency: usize, t: usize) -> (String, String) {
    (format!("{case}{concurrency}a{t}"), format!("{case}{concurrency}b{t}"))
}

/// Gifts among each task's pair, every one on the server that does not own the pair.
async fn handoffs(ctx: &Ctx, servers: &Arc<[Server; 2]>, concurrency: usize) -> Result<Sample, BenchError> {
    let users: Vec<String> = (0..concurrency)
        .flat_map(|t| {
            let (a, b) = pair("h", concurrency, t);
            [a, b]
        })
        .collect();
    // Owned by server 1 at first: iteration 0 runs on server 0 and borrows both.
    create_wallets(&servers[1].orm, &users).await?;
    let servers = servers.clone();
    measure(BENCH, concurrency, ctx.settings.warmup(), ctx.settings.duration(), move |task, i| {
        let servers = servers.clone();
        async move {
            let (a, b) = pair("h", concurrency, task);
            // Iterations alternate servers, so each gift borrows both objects from the other.
            let orm = &servers[(i % 2) as usize].orm;
            gift(orm, &a, &b).await
        }
    })
    .await
}

/// Reads of each task's object, every one on the server that does not own it.
async fn handoff_reads(
    ctx: &Ctx,
    servers: &Arc<[Server; 2]>,
    concurrency: usize,
    moving: bool,
) -> Result<Sample, BenchError> {
    let case = if moving { "r" } else { "q" };
    let users: Vec<String> = (0..concurrency).map(|t| pair(case, concurrency, t).0).collect();
    create_wallets(&servers[1].orm, &users).await?;
    let servers = servers.clone();
    measure(BENCH, concurrency, ctx.settings.warmup(), ctx.settings.duration(), move |task, i| {
        let servers = servers.clone();
        async move {
            let user = pair(case, concurrency, task).0;
            let orm = &servers[if moving { (i % 2) as usize } else { 1 }].orm;
            match orm.fetch::<Wallet>(&user).await {
                Ok(Some(_)) => Ok(()),
                other => Err(BenchError::op(BENCH, format!("fetch {user}: {other:?}"))),
            }
        }
    })
    .await
}

/// Gifts among each task's pair on server 0, which owns them.
async fn local_gifts(
    ctx: &Ctx,
    servers: &Arc<[Server; 2]>,
    concurrency: usize,
    case: &str,
) -> Result<Sample, BenchError> {
    let users: Vec<String> = (0..concurrency)
        .flat_map(|t| {
            let (a, b) = pair(case, concurrency, t);
            [a, b]
        })
        .collect();
    create_wallets(&servers[0].orm, &users).await?;
    let servers = servers.clone();
    let case = case.to_string();
    measure(BENCH, concurrency, ctx.settings.warmup(), ctx.settings.duration(), move |task, _| {
        let (servers, case) = (servers.clone(), case.clone());
        async move {
            let (a, b) = pair(&case, concurrency, task);
            gift(&servers[0].orm, &a, &b).await
        }
    })
    .await
}

/// Raw 2-row transactions on `db`'s rows through `raw`.
async fn raw_txns(ctx: &Ctx, db: &dyn Db, raw: &Raw, concurrency: usize) -> Result<Sample, BenchError> {
    let rows = create_rows(db, "objects-raw", "2-row", concurrency, 2).await?;
    let raw = raw.clone();
    measure(BENCH, concurrency, ctx.settings.warmup(), ctx.settings.duration(), move |task, _| {
        let (raw, rows) = (raw.clone(), rows.clone());
        async move { raw.update(&rows[task]).await }
    })
    .await
}

/// Every case on one SQL engine (`db` and its raw twin), rows named `{engine} {case}, {n} tasks`.
async fn engine_cases(ctx: &Ctx, engine: &str, db: Arc<dyn Db>, raw: Raw) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    let dir = DbInstances::empty().with(db.clone()).map_err(|e| BenchError::setup(BENCH, e))?;
    let shards = ShardConfig::single("db-0", "", engine::shard::LOGICAL_SHARDS_DEFAULT);
    let app = format!("{APP_ID}_{engine}");
    let servers = Arc::new([
        Server::start(ctx, &app, &format!("{engine}-objects-0"), &dir, &shards).await?,
        Server::start(ctx, &app, &format!("{engine}-objects-1"), &dir, &shards).await?,
    ]);
    let result = async {
        for c in CONCURRENCY {
            let moving = handoff_reads(ctx, &servers, c, true).await?;
            let staying = handoff_reads(ctx, &servers, c, false).await?;
            rows.extend(throughput_rows(
                &format!("{engine} hand-off, {}", tasks(c)),
                "fetch/s",
                &moving,
                &staying,
            ));
            let handoff = handoffs(ctx, &servers, c).await?;
            let local = local_gifts(ctx, &servers, c, "l").await?;
            rows.extend(throughput_rows(
                &format!("{engine} gift hand-off, {}", tasks(c)),
                "gift/s",
                &handoff,
                &local,
            ));
            let txn = local_gifts(ctx, &servers, c, "t").await?;
            let raw_sample = raw_txns(ctx, &*db, &raw, c).await?;
            rows.extend(throughput_rows(
                &format!("{engine} 2-object txn, {}", tasks(c)),
                "txn/s",
                &txn,
                &raw_sample,
            ));
        }
        Ok::<_, BenchError>(())
    }
    .await;
    for s in servers.iter() {
        s.stop().await;
    }
    result.map(|()| rows)
}

pub(super) fn run(ctx: &Ctx) -> Result<BenchReport, BenchError> {
    let mut report = BenchReport::new(BENCH);
    report.rows = on_both_engines(BENCH, "db-0", |engine, db, raw, _| engine_cases(ctx, engine, db, raw))?;
    report.notes.push(
        "two servers in one process (RPC over loopback, a private ZooKeeper), every shard on one instance; \
         'hand-off': each read borrows the wallet from the other server (baseline: a read of a wallet owned locally); 'gift hand-off': each gift borrows both wallets from the other server (baseline: the same gift with \
         both owned locally); '2-object txn': a local gift against raw BEGIN + 2 fenced versioned UPDATEs + COMMIT"
            .to_string(),
    );
    Ok(report)
}
