//! A private MariaDB server for tests (see the module doc of [`super`]).
//!
//! `start` makes a fresh data directory with `mariadb-install-db` (about 3 s), then runs
//! `mariadbd` on it with no configuration file of the machine's (`--no-defaults`), bound to
//! 127.0.0.1 on a free port, with its socket, pid file, log and temporary files inside the
//! directory (servers and bootstraps running at once must not share `/tmp`). An init
//! file run at every start creates the database [`PRIVATE_MARIADB_DATABASE`] and the user
//! [`PRIVATE_MARIADB_USER`] (password the same) with every privilege, idempotently.
//!
//! Durability is MariaDB's production default (`innodb_flush_log_at_trx_commit = 1`, the
//! redo log flushed at every commit), so [`stop`](PrivateMariaDb::stop) — a SIGKILL — loses
//! no committed transaction and [`restart`](PrivateMariaDb::restart) recovers the same data:
//! that is the crash model the `Db` port's tests rely on. Only the buffer pool and redo log
//! are sized by the caller ([`MariaDbSizing`]): small for tests (start-up time and memory,
//! many servers at once), a server's size for benchmarks.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{ask, command_in, find_binary, free_port, io_err, log_tail, Proc, ServiceError};

/// The database the private server creates (and [`PrivateMariaDb::url`] names).
pub const PRIVATE_MARIADB_DATABASE: &str = "sandtable";
/// The user (and password) the private server creates, with every privilege.
pub const PRIVATE_MARIADB_USER: &str = "sandtable";

const WHAT: &str = "mariadbd";

/// The sizes of the server's InnoDB buffer pool and redo log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaDbSizing {
    pub buffer_pool_mib: u32,
    pub redo_log_mib: u32,
}

impl MariaDbSizing {
    /// Small, for start-up time and memory: tests, and live runs with a server per host.
    pub const TEST: MariaDbSizing = MariaDbSizing { buffer_pool_mib: 32, redo_log_mib: 16 };
    /// What a server taking a benchmark's sustained writes is given. A few seconds of them
    /// fill [`TEST`]'s 16 MiB redo log (InnoDB must then flush pages before it can reuse
    /// it), and its 32 MiB buffer pool holds less than a benchmark's rows: `bench commands`
    /// measured the sizing, not the engine (MariaDB execution 0.62–0.72 of raw with
    /// [`TEST`], 1.05–1.32 with these; which of the two sizes weighed more was not measured
    /// apart). Still far below production, where both are gigabytes.
    ///
    /// [`TEST`]: MariaDbSizing::TEST
    pub const BENCH: MariaDbSizing = MariaDbSizing { buffer_pool_mib: 512, redo_log_mib: 512 };

    fn args(&self) -> [String; 2] {
        [
            format!("--innodb-buffer-pool-size={}M", self.buffer_pool_mib),
            format!("--innodb-log-file-size={}M", self.redo_log_mib),
        ]
    }
}

/// A private `mariadbd` on a loopback port, killed when dropped.
pub struct PrivateMariaDb {
    addr: SocketAddr,
    bin: PathBuf,
    /// Runs the server on another host (`ip netns exec NS`); empty: here.
    prefix: Vec<String>,
    sizing: MariaDbSizing,
    proc: Proc,
    // Dropped last: the process is killed before its directory goes.
    dir: TempDir,
}

impl fmt::Debug for PrivateMariaDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateMariaDb")
            .field("addr", &self.addr)
            .field("pid", &self.proc.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// `mariadbd` refuses to run as root unless told to; as anyone else it must not be told.
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl PrivateMariaDb {
    /// Makes a data directory, starts the server ([`MariaDbSizing::TEST`]) and waits until it
    /// accepts connections.
    pub fn start() -> Result<PrivateMariaDb, ServiceError> {
        Self::start_sized(MariaDbSizing::TEST)
    }

    /// [`start`](Self::start) with the buffer pool and redo log of `sizing`.
    pub fn start_sized(sizing: MariaDbSizing) -> Result<PrivateMariaDb, ServiceError> {
        let (bin, dir) = Self::prepare(&[])?;
        let mut last = None;
        // The port is free when chosen but could be taken before the server binds it: retry.
        for _ in 0..5 {
            let port = free_port().map_err(io_err(WHAT))?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match Self::spawn(&[], &bin, dir.path(), addr, sizing) {
                Ok(proc) => return Ok(PrivateMariaDb { addr, bin, prefix: Vec::new(), sizing, proc, dir }),
                Err(e @ ServiceError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// A MariaDB on a host of its own: started after `prefix` (`ip netns exec NS`, a live run's
    /// SQL host), listening on `addr` there (a fixed port: the host's ports are its own), with
    /// the databases `databases` made besides [`PRIVATE_MARIADB_DATABASE`].
    pub fn start_in(
        prefix: Vec<String>,
        addr: SocketAddr,
        databases: &[String],
    ) -> Result<PrivateMariaDb, ServiceError> {
        let (bin, dir) = Self::prepare(databases)?;
        let sizing = MariaDbSizing::TEST;
        let proc = Self::spawn(&prefix, &bin, dir.path(), addr, sizing)?;
        Ok(PrivateMariaDb { addr, bin, prefix, sizing, proc, dir })
    }

    /// Finds the binaries and makes the data directory and init file.
    fn prepare(databases: &[String]) -> Result<(PathBuf, TempDir), ServiceError> {
        let bin = find_binary("SANDTABLE_MARIADBD", "mariadbd", &["/usr/sbin/mariadbd"])
            .map_err(|looked_for| ServiceError::NotInstalled { what: "mariadbd", looked_for })?;
        let install = find_binary(
            "SANDTABLE_MARIADB_INSTALL_DB",
            "mariadb-install-db",
            &["/usr/bin/mariadb-install-db"],
        )
        .map_err(|looked_for| ServiceError::NotInstalled { what: "mariadb-install-db", looked_for })?;
        let dir = tempfile::Builder::new().prefix("sandtable-mariadb-").tempdir().map_err(io_err(WHAT))?;
        Self::install(&install, dir.path())?;
        std::fs::write(dir.path().join("init.sql"), Self::init_sql(databases)).map_err(io_err(WHAT))?;
        Ok((bin, dir))
    }

    /// Runs `mariadb-install-db` into `dir/data` (system tables, root without password).
    fn install(install: &Path, dir: &Path) -> Result<(), ServiceError> {
        let log = dir.join("install.log");
        let out = std::fs::File::create(&log).map_err(io_err("mariadb-install-db"))?;
        let err = out.try_clone().map_err(io_err("mariadb-install-db"))?;
        // A temporary directory of its own: bootstraps running at once in the shared /tmp
        // collide on their temporary tables ("Unknown table 'mysql.tmp_user_sys'").
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io_err("mariadb-install-db"))?;
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let status = cmd.status().map_err(io_err("mariadb-install-db"))?;
        if !status.success() {
            return Err(ServiceError::Exited { what: "mariadb-install-db", status, log: log_tail(&log, 30) });
        }
        Ok(())
    }

    /// SQL run by the server at every start (idempotent).
    fn init_sql(databases: &[String]) -> String {
        let (db, user) = (PRIVATE_MARIADB_DATABASE, PRIVATE_MARIADB_USER);
        let mut sql = format!(
            "CREATE DATABASE IF NOT EXISTS `{db}`;\n\
             CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{user}';\n\
             GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%';\n"
        );
        for d in databases {
            sql.push_str(&format!("CREATE DATABASE IF NOT EXISTS `{d}`;\n"));
        }
        sql
    }

    fn spawn(
        prefix: &[String],
        bin: &Path,
        dir: &Path,
        addr: SocketAddr,
        sizing: MariaDbSizing,
    ) -> Result<Proc, ServiceError> {
        let mut cmd = command_in(prefix, bin);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--bind-address={}", addr.ip()))
            .arg(format!("--socket={}", dir.join("mariadb.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
            .arg(format!("--init-file={}", dir.join("init.sql").display()))
            .arg(format!("--log-error={}", dir.join("mariadb.log").display()))
            .args(["--skip-name-resolve", "--max-connections=500"])
            .args(sizing.args());
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let mut proc = Proc::launch(WHAT, cmd, dir.join("mariadb.log"))?;
        proc.wait_ready(|| Self::greets(addr))?;
        Ok(proc)
    }

    /// True once the server sends its handshake greeting (protocol 10, `…-MariaDB…`). The
    /// init file has run by then: the server opens its port only after it.
    fn greets(addr: SocketAddr) -> bool {
        ask(addr, b"", 48, Duration::from_millis(500)).is_some_and(|r| r.contains("MariaDB"))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mysql://sandtable:sandtable@127.0.0.1:port/sandtable` (what `sqlx` and the manifest take).
    pub fn url(&self) -> String {
        self.url_of(PRIVATE_MARIADB_DATABASE)
    }

    /// The URL of database `db` on this server (one made by [`start_in`](Self::start_in)).
    pub fn url_of(&self, db: &str) -> String {
        let user = PRIVATE_MARIADB_USER;
        format!("mysql://{user}:{user}@{}/{db}", self.addr)
    }

    /// The directory holding `data/`, the socket and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    process_controls!();

    /// Kills the server if it runs and starts it again on the same port and data directory
    /// (crash recovery runs first).
    pub fn restart(&mut self) -> Result<(), ServiceError> {
        self.proc.respawn(Duration::from_millis(200), || {
            Self::spawn(&self.prefix, &self.bin, self.dir.path(), self.addr, self.sizing)
        })
    }

    /// The server's error log so far (for diagnosing a failing test).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.proc.log).unwrap_or_default()
    }
}
