//! `login`: `AccountManager` login + logout against a raw ZooKeeper ephemeral create +
//! delete with `zookeeper-client`, on the same private ZooKeeper, at the same concurrency.
//!
//! Engine: one server (cluster member, RPC, account manager on its own ZooKeeper session);
//! each task logs its own account in on a fresh [`BenchLink`]
//! ([`AccountManager::check_and_set_logged_in`]: lease check, ephemeral create of
//! `/{app_id}/active_accounts/{account}`) and out again ([`AccountManager::set_logged_out`]:
//! delete). The manager serialises the logins and logouts of each *account* (one async lock
//! per account); different accounts run concurrently. (Until one server-wide lock was
//! replaced, this bench measured 16 tasks at 0.21 of the baseline with 3 s waits: one task
//! re-took the unfair lock while the others waited.)
//!
//! Baseline: one `zookeeper-client` session; each task creates an ephemeral znode with a
//! record of the same size and deletes it, concurrently.
//!
//! Each of `--reps` repetitions measures both cases, engine then baseline; the rows are the
//! medians, with each side's spread in a note.

use std::sync::Arc;
use std::time::Duration;

use engine::account::{AccountConfig, AccountManager, ClientLink, LinkId, LoginOutcome};
use engine::cluster::{Cluster, ClusterConfig};
use engine::rpc::{Rpc, RpcConfig};
use zookeeper_client as zk;

use super::driver::{compare_repeated, free_port, measure, runtime, tasks, Sample};
use super::{BenchError, BenchReport, Ctx, Row};
use crate::env::real_env;

const BENCH: &str = "login";
/// Tasks logging in and out, one measurement each.
const CONCURRENCY: [usize; 2] = [1, 16];
const APP_ID: &str = "bench_login";
/// Parent of the baseline's ephemeral znodes.
const RAW_PARENT: &str = "/bench_login_raw";
/// Session timeout of both the engine's and the baseline's sessions.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The smallest client link: always open, takes every message, remembers nothing.
#[derive(Debug)]
struct BenchLink {
    id: LinkId,
}

impl ClientLink for BenchLink {
    fn link_id(&self) -> LinkId {
        self.id
    }
    fn send_json(&self, _msg_type: &str, _body: serde_json::Value) -> bool {
        true
    }
    fn close(&self, _reason: &str) {}
    fn is_open(&self) -> bool {
        true
    }
}

pub(super) fn run(ctx: &Ctx) -> Result<BenchReport, BenchError> {
    runtime()?.block_on(async {
        let server = Server::start(ctx).await?;
        let rows = measure_all(ctx, &server).await;
        server.stop().await;
        let mut report = BenchReport::new(BENCH);
        let (rows, spreads) = rows?;
        report.rows = rows;
        report.notes.extend(spreads);
        report.notes.push(
            "engine: each task logs its own account in and out (one lock per account, so tasks do not \
             wait for each other); baseline: ephemeral create + delete on one zookeeper-client session"
                .to_string(),
        );
        Ok(report)
    })
}

async fn measure_all(ctx: &Ctx, server: &Server) -> Result<(Vec<Row>, Vec<String>), BenchError> {
    let raw = zk::Client::connector()
        .with_session_timeout(SESSION_TIMEOUT)
        .connect(&ctx.zookeeper)
        .await
        .map_err(|e| BenchError::setup(BENCH, format!("raw zookeeper client: {e}")))?;
    match raw.create(RAW_PARENT, b"", &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())).await {
        Ok(_) | Err(zk::Error::NodeExists) => {}
        Err(e) => return Err(BenchError::setup(BENCH, format!("creating {RAW_PARENT}: {e}"))),
    }
    let (warmup, duration) = (ctx.settings.warmup(), ctx.settings.duration());
    let cases: Vec<_> = CONCURRENCY.into_iter().map(|c| (tasks(c), c)).collect();
    compare_repeated(
        ctx.settings.reps,
        &cases,
        "login+logout/s",
        |c| server.logins(c, warmup, duration),
        |c| raw_logins(&raw, c, warmup, duration),
    )
    .await
}

/// One game server: cluster member, RPC service, account manager.
struct Server {
    cluster: Cluster,
    rpc: Rpc,
    accounts: AccountManager,
}

impl Server {
    async fn start(ctx: &Ctx) -> Result<Server, BenchError> {
        let env = real_env(&ctx.env_config("login-server")).map_err(|e| BenchError::setup(BENCH, e))?;
        let addr = free_port()?;
        let mut cfg = ClusterConfig::new(APP_ID, "login-server", addr);
        cfg.session.session_timeout = SESSION_TIMEOUT;
        let cluster = Cluster::join(env.clone(), cfg.clone())
            .await
            .map_err(|e| BenchError::setup(BENCH, format!("joining the cluster: {e}")))?;
        let rpc = match Rpc::start(env.clone(), cluster.id(), Arc::new(cluster.clone()), RpcConfig::new(addr))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                cluster.leave().await;
                return Err(BenchError::setup(BENCH, format!("starting rpc: {e}")));
            }
        };
        let mut acfg = AccountConfig::new(APP_ID);
        acfg.session = cfg.session;
        match AccountManager::start(env, cluster.clone(), rpc.clone(), acfg).await {
            Ok(accounts) => Ok(Server { cluster, rpc, accounts }),
            Err(e) => {
                rpc.shutdown().await;
                cluster.leave().await;
                Err(BenchError::setup(BENCH, format!("starting the account manager: {e}")))
            }
        }
    }

    async fn logins(
        &self,
        concurrency: usize,
        warmup: Duration,
        duration: Duration,
    ) -> Result<Sample, BenchError> {
        let accounts = self.accounts.clone();
        measure(BENCH, concurrency, warmup, duration, move |task, i| {
            let accounts = accounts.clone();
            async move {
                let account = format!("acct-{task}");
                // A fresh link per login: the task in the high half, the iteration in the low.
                let link =
                    Arc::new(BenchLink { id: LinkId::from_u128((task as u128) << 64 | u128::from(i)) });
                let op = |e| BenchError::op(BENCH, e);
                match accounts.check_and_set_logged_in(&account, link).await.map_err(op)? {
                    LoginOutcome::LoggedIn => {}
                    other => return Err(BenchError::op(BENCH, format!("login of {account}: {other:?}"))),
                }
                if !accounts.set_logged_out(&account).await.map_err(op)? {
                    return Err(BenchError::op(BENCH, format!("{account} was not logged in at logout")));
                }
                Ok(())
            }
        })
        .await
    }

    async fn stop(&self) {
        self.accounts.stop().await;
        self.rpc.shutdown().await;
        self.cluster.leave().await;
    }
}

async fn raw_logins(
    client: &zk::Client,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Sample, BenchError> {
    let client = client.clone();
    // The size of the engine's login record: {"peer_id": <uuid>, "link_id": "link-<task>-<i>"}.
    let record: Arc<[u8]> =
        Arc::from(format!(r#"{{"peer_id":"{}","link_id":"link-0-0000"}}"#, "0".repeat(36)).into_bytes());
    measure(BENCH, concurrency, warmup, duration, move |task, _| {
        let (client, record) = (client.clone(), record.clone());
        async move {
            let path = format!("{RAW_PARENT}/acct-{task}");
            let op = |e: zk::Error| BenchError::op(BENCH, format!("raw zookeeper: {e}"));
            let mode = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
            client.create(&path, &record, &mode).await.map_err(op)?;
            client.delete(&path, None).await.map_err(op)?;
            Ok(())
        }
    })
    .await
}
