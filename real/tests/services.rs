//! The private-service harness itself: real processes on free ports, stop/restart on the
//! same port, and nothing left behind after drop.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use real::services::{
    MariaDbSizing, PrivateMariaDb, PRIVATE_MARIADB_DATABASE, PRIVATE_MARIADB_USER, PRIVATE_ZK_TICK,
};

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_redis_runs_stops_restarts_and_cleans_up() {
    let mut a = common::redis();
    let b = common::redis();
    assert_ne!(a.addr(), b.addr(), "each harness has its own server");
    assert!(a.addr().ip().is_loopback());
    assert!(ping(a.addr()) && ping(b.addr()));
    assert!(a.url().starts_with("redis://127.0.0.1:"));

    let (addr, dir, pid) = (a.addr(), a.dir().to_path_buf(), a.pid().unwrap());
    a.stop();
    assert!(!a.is_running());
    assert!(!ping(addr), "stopped");
    assert!(!alive(pid));
    a.stop(); // idempotent
    common::blocking(|| a.restart()).expect("restart");
    assert_eq!(a.addr(), addr, "same port after restart");
    assert!(ping(addr));
    let pid = a.pid().unwrap();
    drop(a);
    assert!(!alive(pid), "killed on drop");
    assert!(!dir.exists(), "data directory removed on drop");
    assert!(ping(b.addr()), "the other server is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_zookeeper_runs_stops_restarts_and_cleans_up() {
    let mut zk = common::zk();
    assert!(zk.addr().ip().is_loopback());
    assert_eq!(zk.four_letter("ruok").as_deref(), Some("imok"));
    let srvr = zk.four_letter("srvr").unwrap();
    assert!(srvr.contains("Mode: standalone"), "{srvr}");
    let conf = std::fs::read_to_string(zk.dir().join("zoo.cfg")).unwrap();
    assert!(conf.contains(&format!("tickTime={}", PRIVATE_ZK_TICK.as_millis())), "{conf}");
    assert!(conf.contains("admin.enableServer=false"));

    let (addr, dir, pid) = (zk.addr(), zk.dir().to_path_buf(), zk.pid().unwrap());
    zk.stop();
    assert!(!zk.is_running() && !alive(pid));
    assert!(zk.four_letter("ruok").is_none(), "stopped");
    common::blocking(|| zk.restart()).expect("restart");
    assert_eq!(zk.addr(), addr, "same port after restart");
    assert_eq!(zk.four_letter("ruok").as_deref(), Some("imok"));
    assert!(!zk.log().is_empty(), "the server logs to its directory");
    let pid = zk.pid().unwrap();
    drop(zk);
    assert!(!alive(pid), "killed on drop");
    assert!(!dir.exists(), "data directory removed on drop");
}

/// Runs `sql` with the `mariadb` command-line client (from the same Debian package) as the
/// harness's user; `None` if the server did not answer.
fn mariadb_sql(db: &PrivateMariaDb, sql: &str) -> Option<String> {
    let user = PRIVATE_MARIADB_USER;
    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--batch", "--skip-column-names", "--connect-timeout=2", "-h", "127.0.0.1"])
        .arg(format!("-P{}", db.addr().port()))
        .arg(format!("-u{user}"))
        .arg(format!("-p{user}"))
        .arg(PRIVATE_MARIADB_DATABASE)
        .arg("-e")
        .arg(sql)
        .output()
        .expect("the mariadb client is installed with mariadb-server");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_mariadb_keeps_committed_rows_across_a_kill_and_cleans_up() {
    let mut a = common::mariadb();
    assert!(a.addr().ip().is_loopback());
    assert!(a.url().starts_with("mysql://sandtable:sandtable@127.0.0.1:"), "{}", a.url());
    let setup =
        "CREATE TABLE t (k INT PRIMARY KEY, v INT) ENGINE=InnoDB; INSERT INTO t VALUES (1, 10), (2, 20);";
    assert_eq!(mariadb_sql(&a, setup).as_deref(), Some(""), "the database and user exist");
    assert_eq!(mariadb_sql(&a, "SELECT SUM(v) FROM t").as_deref(), Some("30"));

    let (addr, dir, pid) = (a.addr(), a.dir().to_path_buf(), a.pid().unwrap());
    a.stop();
    assert!(!a.is_running());
    assert!(!alive(pid));
    assert_eq!(mariadb_sql(&a, "SELECT 1"), None, "stopped");
    a.stop(); // idempotent
    common::blocking(|| a.restart()).expect("restart");
    assert_eq!(a.addr(), addr, "same port after restart");
    assert_eq!(
        mariadb_sql(&a, "SELECT SUM(v) FROM t").as_deref(),
        Some("30"),
        "committed rows survive a SIGKILL (redo log flushed at commit)"
    );
    let pid = a.pid().unwrap();
    drop(a);
    assert!(!alive(pid), "killed on drop");
    assert!(!dir.exists(), "data directory removed on drop");
}

/// The server's buffer pool and redo log in MiB, as it reports them.
fn mariadb_sizes(db: &PrivateMariaDb) -> Option<String> {
    mariadb_sql(db, "SELECT @@innodb_buffer_pool_size DIV 1048576, @@innodb_log_file_size DIV 1048576")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_mariadb_runs_with_the_sizes_it_was_given_and_keeps_them_across_a_restart() {
    let test = common::mariadb();
    assert_eq!(MariaDbSizing::TEST, MariaDbSizing { buffer_pool_mib: 32, redo_log_mib: 16 });
    assert_eq!(mariadb_sizes(&test).as_deref(), Some("32\t16"), "tests get the small server");
    drop(test);

    let sizing = MariaDbSizing::BENCH;
    assert_eq!(sizing, MariaDbSizing { buffer_pool_mib: 512, redo_log_mib: 512 });
    let mut bench = common::blocking(|| PrivateMariaDb::start_sized(sizing))
        .unwrap_or_else(|e| panic!("cannot start MariaDB: {e}"));
    assert_eq!(mariadb_sizes(&bench).as_deref(), Some("512\t512"), "benchmarks get the sized server");
    common::blocking(|| bench.restart()).expect("restart");
    assert_eq!(mariadb_sizes(&bench).as_deref(), Some("512\t512"), "a restart keeps the sizing");
}
