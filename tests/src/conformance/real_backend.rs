//! The real side: one private ZooKeeper 3.8, one private Redis 7 and one private MariaDB
//! per run (`real::services`), and one SQLite file in a temporary directory, reached through
//! the real adapters (`ZkConnector`, `RedisKv`, `real::adapters::db`). Cases are isolated by
//! a fresh znode root (`/c<N>`), key prefix (`c<N>:`) or table-name prefix (`c<N>_`) per run
//! of a case, so the services are reused: starting ZooKeeper's JVM once per case would cost
//! seconds.
//!
//! Partitions (`cut`/`heal`) go through a loopback relay per client that behaves like a
//! clogged madsim link: while cut, bytes already in flight stall (nothing is lost; they
//! resume after the heal) and new connections are refused at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::env::{Coord, CoordError, Db, Kv, SessionOptions};
use real::adapters::{open_db, RedisKv, RedisKvOptions, ZkConnector};
use real::services::{PrivateMariaDb, PrivateRedis, PrivateZk};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::exec::{run_kv, run_zk, KvWorld, ZkWorld};
use super::exec_db::{run_db, DbWorld};
use super::ops::{Case, Service};
use super::transcript::Transcript;

/// Clients of the shared Redis (cases use at most this many).
const KV_CLIENTS: usize = 2;

/// Which real services a run starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Services {
    pub zk: bool,
    pub redis: bool,
    pub sqlite: bool,
    pub mariadb: bool,
}

impl Services {
    pub const ALL: Services = Services { zk: true, redis: true, sqlite: true, mariadb: true };

    /// Whether cases of `service` can run.
    pub fn has(&self, service: Service) -> bool {
        match service {
            Service::Zk => self.zk,
            Service::Redis => self.redis,
            Service::Sqlite => self.sqlite,
            Service::Mariadb => self.mariadb,
        }
    }
}

/// The private services of one run and the long-lived clients shared by its cases.
pub struct RealBackend {
    zk: Option<PrivateZk>,
    redis: Option<PrivateRedis>,
    mariadb: Option<PrivateMariaDb>,
    sqlite_dir: Option<tempfile::TempDir>,
    observer: Option<Arc<dyn Coord>>,
    kvs: Vec<Arc<dyn Kv>>,
    sqlite: Option<Arc<dyn Db>>,
    mariadb_db: Option<Arc<dyn Db>>,
    next: AtomicU64,
}

impl RealBackend {
    /// Starts the services (blocking: call outside the tokio runtime).
    pub fn start(services: Services) -> anyhow::Result<RealBackend> {
        let zk = if services.zk { Some(PrivateZk::start()?) } else { None };
        let redis = if services.redis { Some(PrivateRedis::start()?) } else { None };
        let mariadb = if services.mariadb { Some(PrivateMariaDb::start()?) } else { None };
        let sqlite_dir = if services.sqlite {
            Some(tempfile::Builder::new().prefix("sandtable-conformance-").tempdir()?)
        } else {
            None
        };
        Ok(RealBackend {
            zk,
            redis,
            mariadb,
            sqlite_dir,
            observer: None,
            kvs: Vec::new(),
            sqlite: None,
            mariadb_db: None,
            next: AtomicU64::new(0),
        })
    }

    /// Opens the shared clients (inside the tokio runtime).
    pub async fn connect(&mut self) -> anyhow::Result<()> {
        if let Some(zk) = &self.zk {
            let opts = SessionOptions {
                session_timeout: Duration::from_secs(40),
                connect_timeout: Duration::from_secs(30),
            };
            let c = ZkConnector::new(zk.connect_string()).connect_session(opts).await?;
            self.observer = Some(c);
        }
        if let Some(redis) = &self.redis {
            for _ in 0..KV_CLIENTS {
                let kv = RedisKv::with_addr(redis.addr(), RedisKvOptions::default())?;
                kv.connect().await?;
                self.kvs.push(Arc::new(kv));
            }
        }
        if let Some(dir) = &self.sqlite_dir {
            let url = format!("sqlite://{}", dir.path().join("conformance.sqlite").display());
            self.sqlite = Some(open_db("sqlite", &url).await?);
        }
        if let Some(mariadb) = &self.mariadb {
            self.mariadb_db = Some(open_db("mariadb", &mariadb.url()).await?);
        }
        Ok(())
    }

    /// A root or key prefix no earlier run of a case has used.
    pub fn fresh_prefix(&self, service: Service) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match service {
            Service::Zk => format!("/c{n}"),
            Service::Redis => format!("c{n}:"),
            Service::Sqlite | Service::Mariadb => format!("c{n}_"),
        }
    }

    /// Runs `case` under `prefix` (from [`fresh_prefix`](Self::fresh_prefix)).
    pub async fn run(&self, case: &Case, prefix: &str) -> Transcript {
        match case.service {
            Service::Zk => {
                let (Some(zk), Some(observer)) = (&self.zk, &self.observer) else {
                    let mut t = Transcript::new(prefix);
                    t.push("real: no ZooKeeper in this run".into());
                    return t;
                };
                let mut links = Vec::new();
                if case.needs_links() {
                    for _ in 0..case.clients.len() {
                        links.push(Some(Link::to(zk.addr()).await));
                    }
                }
                let world = RealZk { server: zk.addr(), links, observer: observer.clone() };
                run_zk(&world, case, prefix).await
            }
            Service::Redis => {
                if self.kvs.is_empty() {
                    let mut t = Transcript::new(prefix);
                    t.push("real: no Redis in this run".into());
                    return t;
                }
                run_kv(&RealRedis { kvs: self.kvs.clone() }, case, prefix).await
            }
            Service::Sqlite | Service::Mariadb => {
                let db = if case.service == Service::Sqlite { &self.sqlite } else { &self.mariadb_db };
                let Some(db) = db else {
                    let mut t = Transcript::new(prefix);
                    t.push(format!("real: no {} in this run", case.service));
                    return t;
                };
                run_db(&RealSql { db: db.clone() }, case, prefix).await
            }
        }
    }
}

struct RealSql {
    db: Arc<dyn Db>,
}

#[async_trait]
impl DbWorld for RealSql {
    fn db(&self) -> Arc<dyn Db> {
        self.db.clone()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

struct RealZk {
    server: SocketAddr,
    links: Vec<Option<Link>>,
    observer: Arc<dyn Coord>,
}

#[async_trait]
impl ZkWorld for RealZk {
    async fn connect(&self, client: usize, timeout: Duration) -> Result<Arc<dyn Coord>, CoordError> {
        let addr = match self.links.get(client) {
            Some(Some(l)) => l.addr,
            _ => self.server,
        };
        let opts = SessionOptions { session_timeout: timeout, connect_timeout: Duration::from_secs(10) };
        let c = ZkConnector::new(addr.to_string()).connect_session(opts).await?;
        Ok(c)
    }

    async fn observer(&self) -> Arc<dyn Coord> {
        self.observer.clone()
    }

    fn cut(&self, client: usize) {
        if let Some(Some(l)) = self.links.get(client) {
            l.clog.send_replace(true);
        }
    }

    fn heal(&self, client: usize) {
        if let Some(Some(l)) = self.links.get(client) {
            l.clog.send_replace(false);
        }
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

struct RealRedis {
    kvs: Vec<Arc<dyn Kv>>,
}

#[async_trait]
impl KvWorld for RealRedis {
    fn kv(&self, client: usize) -> Arc<dyn Kv> {
        self.kvs[client % self.kvs.len()].clone()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// A loopback relay that can be clogged like a madsim link.
struct Link {
    addr: SocketAddr,
    clog: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        // Unblock stalled pumps so they notice their sockets closing.
        self.clog.send_replace(false);
    }
}

impl Link {
    async fn to(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (clog, rx) = watch::channel(false);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else { continue };
                if *rx.borrow() {
                    // A clogged link refuses new connections at once.
                    drop(down);
                    continue;
                }
                let Ok(up) = TcpStream::connect(target).await else { continue };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pump(dr, uw, rx.clone()));
                tokio::spawn(pump(ur, dw, rx.clone()));
            }
        });
        Link { addr, clog, accept }
    }
}

async fn wait_open(rx: &mut watch::Receiver<bool>) {
    while *rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut clog: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_open(&mut clog).await;
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read while (or just before) the link was cut wait for the heal.
        wait_open(&mut clog).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}
