//! Private Redis, ZooKeeper and MariaDB processes for tests: each harness launches its **own**
//! server on a free loopback port with a temporary data directory, waits until it answers,
//! and kills it (and removes the directory) when dropped.
//!
//! Nothing here is a mock: [`PrivateRedis`] runs the `redis-server` binary, [`PrivateZk`]
//! runs ZooKeeper's own standalone server (`org.apache.zookeeper.server.ZooKeeperServerMain`
//! from the Debian `zookeeper` package) on a JVM, and [`PrivateMariaDb`] runs `mariadbd` on a
//! data directory made by `mariadb-install-db`. If a binary is missing, `start` fails with
//! [`ServiceError::NotInstalled`], whose message names the install command
//! (`scripts/services.sh install`, i.e. `apt-get install redis-server zookeeper
//! mariadb-server`).
//!
//! # Layout
//! - `mod.rs`: errors, binary lookup, the supervised process ([`Proc`]) shared by all three;
//! - `redis.rs`, `zk.rs`, `mariadb.rs`: one harness each.
//!
//! Every harness supports [`stop`](PrivateZk::stop) (SIGKILL: a crash, nothing flushed beyond
//! what the server already wrote) and [`restart`](PrivateZk::restart) (same port, same data
//! directory), so tests can take a service away under a running client and bring it back.
//!
//! ZooKeeper is configured for fast tests: `tickTime` 250 ms, so the service accepts session
//! timeouts from 500 ms to 40 s (tests use 2–4 s); small preallocation, no fsync, admin
//! server off. The long-running development pair (`scripts/services.sh up`) keeps
//! ZooKeeper's production-like `tickTime` of 2 s instead.
//!
//! Where the binaries live can be overridden with `SANDTABLE_REDIS_SERVER` (path of
//! `redis-server`), `SANDTABLE_MARIADBD` and `SANDTABLE_MARIADB_INSTALL_DB` (paths of `mariadbd`
//! and `mariadb-install-db`), `SANDTABLE_JAVA` (path of `java`) and `SANDTABLE_ZK_CLASSPATH` (a Java
//! classpath holding ZooKeeper's server classes). An override that names no file makes
//! `start` fail with [`ServiceError::NotInstalled`] rather than fall back.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The process controls every private service has, written once over its `proc` field:
/// `pid`, `is_running`, `stop` (SIGKILL), `pause` (SIGSTOP) and `resume` (SIGCONT).
macro_rules! process_controls {
    () => {
        /// The server's process id, while it runs.
        pub fn pid(&self) -> Option<u32> {
            self.proc.pid()
        }

        /// True while the process runs (it may not answer if it was [`pause`](Self::pause)d).
        pub fn is_running(&mut self) -> bool {
            self.proc.running()
        }

        /// Kills the server (SIGKILL, as a crash would: nothing is flushed beyond what the
        /// server already made durable). Idempotent.
        pub fn stop(&mut self) {
            self.proc.kill();
        }

        /// Freezes the process (SIGSTOP): connections stay open but nothing is answered.
        /// Returns once every thread of it is stopped (a signal is delivered asynchronously:
        /// a busy machine can let a thread answer one more request after `kill` returns).
        pub fn pause(&self) {
            self.proc.signal("STOP");
            self.proc.wait_stopped();
        }

        /// Resumes a paused process (SIGCONT).
        pub fn resume(&self) {
            self.proc.signal("CONT");
        }
    };
}

/// Longest [`Proc::wait_stopped`] waits for a SIGSTOP to take hold of every thread.
const STOP_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

mod mariadb;
mod redis;
mod zk;
mod zk_ensemble;

pub use self::mariadb::{MariaDbSizing, PrivateMariaDb, PRIVATE_MARIADB_DATABASE, PRIVATE_MARIADB_USER};
pub use self::redis::PrivateRedis;
pub use self::zk::PrivateZk;
pub use self::zk_ensemble::{
    server_lines, ZkEnsemble, ZkMember, ZkMode, ZK_CLIENT_PORT, ZK_ELECTION_PORT, ZK_PEER_PORT,
};

/// The command that installs everything these harnesses need.
pub const INSTALL_HINT: &str =
    "run `scripts/services.sh install` (it does `apt-get install redis-server zookeeper mariadb-server`)";

/// ZooKeeper's tick in the private test server.
pub const PRIVATE_ZK_TICK: Duration = Duration::from_millis(250);

/// How long `start`/`restart` wait for a server to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `restart` keeps relaunching a server whose old socket is still bound.
const RESPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a private service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A binary or jar is missing.
    #[error("{what} is not installed (looked for {looked_for}); {INSTALL_HINT}")]
    NotInstalled { what: &'static str, looked_for: String },
    /// Preparing the data directory or launching the process failed.
    #[error("could not launch {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The process exited before it became ready.
    #[error("{what} exited during startup ({status}); last log lines:\n{log}")]
    Exited { what: &'static str, status: ExitStatus, log: String },
    /// The process kept running but never answered.
    #[error("{what} did not become ready within {waited:?}; last log lines:\n{log}")]
    NotReady { what: &'static str, waited: Duration, log: String },
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> ServiceError {
    move |source| ServiceError::Io { what, source }
}

/// Looks `name` up: the path in `env_override` if that is set, else `$PATH`, then `fallbacks`.
fn find_binary(env_override: &str, name: &str, fallbacks: &[&str]) -> Result<PathBuf, String> {
    // An explicit override is the only candidate: pointing it nowhere is an error.
    if let Some(p) = std::env::var_os(env_override).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("{}={}", env_override, p.display())) };
    }
    let mut looked = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
        looked.push(format!("{name} on $PATH"));
    }
    for f in fallbacks {
        let p = Path::new(f);
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        looked.push((*f).to_string());
    }
    Err(looked.join(", "))
}

/// A command running `program`, after `prefix` if one is given (`ip netns exec NS`, which
/// `exec`s the program: the process id stays the program's, so signals reach it).
fn command_in(prefix: &[String], program: &Path) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A port that was free a moment ago (the OS picks it; we release it for the server).
fn free_port() -> Result<u16, std::io::Error> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// The last `n` lines of a log file (for error messages).
fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// Sends `request` on a fresh connection and returns everything the server answers until it
/// closes (or `max` bytes arrived, or the timeout passed).
fn ask(addr: SocketAddr, request: &[u8], max: usize, timeout: Duration) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(request).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while buf.len() < max {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// One supervised server process.
pub(crate) struct Proc {
    what: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn launch(what: &'static str, mut cmd: Command, log: PathBuf) -> Result<Proc, ServiceError> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(io_err(what))?;
        let err = out.try_clone().map_err(io_err(what))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(io_err(what))?;
        Ok(Proc { what, child: Some(child), log })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Polls `ready` until it says yes, the process dies, or the timeout passes.
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<(), ServiceError> {
        let start = Instant::now();
        loop {
            if let Some(c) = &mut self.child {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(ServiceError::Exited {
                        what: self.what,
                        status,
                        log: log_tail(&self.log, 30),
                    });
                }
            }
            if ready() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                let log = log_tail(&self.log, 30);
                self.kill();
                return Err(ServiceError::NotReady { what: self.what, waited: READY_TIMEOUT, log });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process if it runs and launches it again with `spawn` (same port, same
    /// directory), retrying every `pause` for up to [`RESPAWN_TIMEOUT`] while the old socket
    /// lingers after the kill.
    fn respawn(
        &mut self,
        pause: Duration,
        mut spawn: impl FnMut() -> Result<Proc, ServiceError>,
    ) -> Result<(), ServiceError> {
        self.kill();
        let start = Instant::now();
        loop {
            match spawn() {
                Ok(p) => {
                    *self = p;
                    return Ok(());
                }
                Err(ServiceError::Exited { .. }) if start.elapsed() < RESPAWN_TIMEOUT => {
                    std::thread::sleep(pause)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// SIGKILL and reap. Idempotent.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (at most [`STOP_WAIT_MAX`]) until every thread of the process is in state `T`
    /// (stopped) in `/proc/<pid>/task/*/stat`.
    fn wait_stopped(&self) {
        let Some(pid) = self.pid() else { return };
        let deadline = std::time::Instant::now() + STOP_WAIT_MAX;
        while std::time::Instant::now() < deadline {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
            let all_stopped = tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                    // `pid (comm) S ...`: the state follows the last ')'.
                    st.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
                })
            });
            if all_stopped {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_install_command() {
        let e = ServiceError::NotInstalled { what: "redis-server", looked_for: "nowhere".into() };
        let msg = e.to_string();
        assert!(msg.contains("scripts/services.sh install"), "{msg}");
        assert!(msg.contains("apt-get install redis-server zookeeper mariadb-server"), "{msg}");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&p, 2), "b\nc");
        assert!(log_tail(&dir.path().join("none"), 2).contains("no log"));
    }
}
