//! The simulated side: each run of a case gets a fresh madsim runtime (on a fresh thread, as
//! the chaos runner does) with the simulated ZooKeeper, Redis or SQL node at its usual address
//! and one simulated node per client, all built by `sim::runner`'s and `sim::sql`'s helpers.
//!
//! The simulated ZooKeeper is configured like the private real one
//! (`real::services::PrivateZk`): tick 250 ms, `minSessionTimeout` 2 ticks,
//! `maxSessionTimeout` 40 s, so session timeouts negotiate the same on both sides.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::env::{Coord, CoordError, Db, Env, Kv, SessionOptions};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::task::NodeId;
use sim::adapters::ClockControl;
use sim::redis::RedisOptions;
use sim::runner::{node_env, start_redis, start_zk_with};
use sim::sql::{sql_addr, sql_node_name, start_sql, SimDb, SqlOptions, DB_CALL_TIMEOUT};
use sim::zk::ZkOptions;

use super::exec::{run_kv, run_zk, KvWorld, ZkWorld};
use super::exec_db::{run_db, DbWorld};
use super::ops::{Case, Service};
use super::transcript::Transcript;

/// `maxSessionTimeout` of the private real ZooKeeper (`real::services`).
pub const PRIVATE_ZK_MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(40);
/// Simulated time a case may take before it counts as hung.
const CASE_LIMIT: Duration = Duration::from_secs(3_600);
const STACK_BYTES: usize = 32 * 1024 * 1024;

/// The service options that match the private real ZooKeeper.
pub fn zk_options() -> ZkOptions {
    let tick = real::services::PRIVATE_ZK_TICK;
    ZkOptions {
        tick,
        min_session_timeout: Some(tick * 2),
        max_session_timeout: Some(PRIVATE_ZK_MAX_SESSION_TIMEOUT),
    }
}

fn client_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, u8::try_from(i + 1).expect("at most 254 clients")))
}

struct Node {
    handle: NodeHandle,
    env: Env,
}

fn node(handle: &Handle, clocks: &ClockControl, name: &str, ip: IpAddr) -> Node {
    let h = handle.create_node().name(name).ip(ip).build();
    Node { handle: h, env: node_env(name, ip, clocks) }
}

struct SimZk {
    zk: NodeId,
    clients: Vec<Node>,
    observer: Node,
}

#[async_trait]
impl ZkWorld for SimZk {
    async fn connect(&self, client: usize, timeout: Duration) -> Result<Arc<dyn Coord>, CoordError> {
        let n = &self.clients[client];
        let c = n.env.coord.clone();
        let opts = SessionOptions { session_timeout: timeout, connect_timeout: Duration::from_secs(10) };
        n.handle.spawn(async move { c.connect(opts).await }).await.expect("connect task")
    }

    async fn observer(&self) -> Arc<dyn Coord> {
        let c = self.observer.env.coord.clone();
        let opts = SessionOptions {
            session_timeout: Duration::from_secs(40),
            connect_timeout: Duration::from_secs(10),
        };
        self.observer
            .handle
            .spawn(async move { c.connect(opts).await })
            .await
            .expect("connect task")
            .expect("observer session")
    }

    fn cut(&self, client: usize) {
        let net = madsim::net::NetSim::current();
        let c = self.clients[client].handle.id();
        net.clog_link(c, self.zk);
        net.clog_link(self.zk, c);
    }

    fn heal(&self, client: usize) {
        let net = madsim::net::NetSim::current();
        let c = self.clients[client].handle.id();
        net.unclog_link(c, self.zk);
        net.unclog_link(self.zk, c);
    }

    async fn sleep(&self, d: Duration) {
        madsim::time::sleep(d).await;
    }
}

struct SimRedis {
    kvs: Vec<Arc<dyn Kv>>,
}

#[async_trait]
impl KvWorld for SimRedis {
    fn kv(&self, client: usize) -> Arc<dyn Kv> {
        self.kvs[client].clone()
    }

    async fn sleep(&self, d: Duration) {
        madsim::time::sleep(d).await;
    }
}

struct SimSql {
    db: Arc<dyn Db>,
}

#[async_trait]
impl DbWorld for SimSql {
    fn db(&self) -> Arc<dyn Db> {
        self.db.clone()
    }

    async fn sleep(&self, d: Duration) {
        madsim::time::sleep(d).await;
    }
}

async fn simulate(case: Case, root: String) -> Transcript {
    let handle = Handle::current();
    let clocks = ClockControl::new();
    match case.service {
        Service::Zk => {
            let zk = start_zk_with(&handle, &clocks, zk_options());
            let clients = (0..case.clients.len().max(1))
                .map(|i| node(&handle, &clocks, &format!("c{i}"), client_ip(i)))
                .collect();
            let observer = node(&handle, &clocks, "observer", IpAddr::V4(Ipv4Addr::new(10, 0, 9, 1)));
            let driver =
                handle.create_node().name("driver").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 2))).build();
            let world = SimZk { zk, clients, observer };
            driver.spawn(async move { run_zk(&world, &case, &root).await }).await.expect("driver task")
        }
        Service::Redis => {
            start_redis(&handle, &clocks, RedisOptions::default());
            let c0 = node(&handle, &clocks, "c0", client_ip(0));
            // Every client's `Kv` is made (and used) on node c0: one connection each.
            let kvs = (0..case.clients.len().max(1))
                .map(|i| node_env(&format!("c{i}"), client_ip(0), &clocks).kv)
                .collect();
            let world = SimRedis { kvs };
            c0.handle.spawn(async move { run_kv(&world, &case, &root).await }).await.expect("client task")
        }
        Service::Sqlite | Service::Mariadb => {
            // The simulated SQL node (default options: durable, 1 ms commit latency) and one
            // client node with a `SimDb` of it.
            start_sql(&handle, &clocks, 0, SqlOptions::default());
            let c0 = node(&handle, &clocks, "c0", client_ip(0));
            let env = &c0.env;
            let db = SimDb::new(
                sql_node_name(0),
                env.net.clone(),
                env.clock.clone(),
                env.spawn.clone(),
                sql_addr(0),
                DB_CALL_TIMEOUT,
            );
            let world = SimSql { db: Arc::new(db) };
            c0.handle.spawn(async move { run_db(&world, &case, &root).await }).await.expect("client task")
        }
    }
}

/// Runs `case` against the simulated service, in a fresh runtime seeded `seed`.
pub fn run(case: &Case, root: &str, seed: u64) -> Transcript {
    let (case, root_s) = (case.clone(), root.to_string());
    let out = std::thread::Builder::new()
        .name("conformance-sim".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
            rt.block_on(async move { madsim::time::timeout(CASE_LIMIT, simulate(case, root_s)).await })
        })
        .expect("spawn the simulation thread")
        .join();
    match out {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => {
            let mut t = Transcript::new(root);
            t.push(format!("sim: case did not finish within {CASE_LIMIT:?} of simulated time"));
            t
        }
        Err(panic) => {
            let msg = sim::runner::panic_message(&*panic);
            let mut t = Transcript::new(root);
            t.push(format!("sim: panicked: {msg}"));
            t
        }
    }
}
