//! Shared helpers of the `real` integration tests. Every test starts its own private
//! services through `real::services`; nothing here mocks a service.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use real::services::{PrivateMariaDb, PrivateRedis, PrivateZk};

pub mod cli;
pub mod client;
pub mod cluster;
pub mod db;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A private ZooKeeper, or a test failure that names the install command.
pub fn zk() -> PrivateZk {
    tokio::task::block_in_place(PrivateZk::start).unwrap_or_else(|e| panic!("cannot start ZooKeeper: {e}"))
}

/// A private Redis without persistence, or a test failure that names the install command.
pub fn redis() -> PrivateRedis {
    tokio::task::block_in_place(PrivateRedis::start).unwrap_or_else(|e| panic!("cannot start Redis: {e}"))
}

/// A private Redis with an fsync-always AOF.
pub fn redis_persistent() -> PrivateRedis {
    tokio::task::block_in_place(PrivateRedis::start_persistent)
        .unwrap_or_else(|e| panic!("cannot start Redis: {e}"))
}

/// A private MariaDB (fresh data directory), or a test failure that names the install command.
#[allow(dead_code)] // not every test binary that includes `common` uses SQL
pub fn mariadb() -> PrivateMariaDb {
    tokio::task::block_in_place(PrivateMariaDb::start).unwrap_or_else(|e| panic!("cannot start MariaDB: {e}"))
}

/// Runs blocking harness work (stop/restart) without stalling the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Polls `f` until it yields `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits `fut` for at most `limit`, or panics naming `what`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A loopback TCP relay in front of a service that can be cut like a network partition:
/// while cut, bytes in both directions are dropped and new connections are closed at once.
pub struct Link {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Connections relayed so far (for assertions about reconnects).
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    pub async fn to(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let cut = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (c, a) = (cut.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                a.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, c.clone()));
                tokio::spawn(pipe(sr, cw, c.clone()));
            }
        });
        Link { addr, cut, accepted, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts dropping everything (a partition).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Ends the partition.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            // Lost in the partition.
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // A FIN does not cross a partition either: pass it on only once the link is healed.
    while cut.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = to.shutdown().await;
}
