//! Private Redis and ZooKeeper processes for tests: each harness launches its **own** server
//! on a free loopback port with a temporary data directory, waits until it answers, and kills
//! it (and removes the directory) when dropped.
//!
//! Nothing here is a mock: [`PrivateRedis`] runs the `redis-server` binary and [`PrivateZk`]
//! runs ZooKeeper's own standalone server (`org.apache.zookeeper.server.ZooKeeperServerMain`
//! from the Debian `zookeeper` package) on a JVM. If a binary is missing, `start` fails with
//! [`ServiceError::NotInstalled`], whose message names the install command
//! (`scripts/services.sh install`, i.e. `apt-get install redis-server zookeeper`).
//!
//! Both harnesses support [`stop`](PrivateZk::stop) (SIGKILL: a crash, nothing flushed beyond
//! what the server already wrote) and [`restart`](PrivateZk::restart) (same port, same data
//! directory), so tests can take a service away under a running client and bring it back.
//!
//! ZooKeeper is configured for fast tests: `tickTime` 250 ms, so the service accepts session
//! timeouts from 500 ms to 40 s (tests use 2–4 s); small preallocation, no fsync, admin
//! server off. The long-running development pair (`scripts/services.sh up`) keeps
//! ZooKeeper's production-like `tickTime` of 2 s instead.
//!
//! Where the binaries live can be overridden with `SANDTABLE_REDIS_SERVER` (path of
//! `redis-server`), `SANDTABLE_JAVA` (path of `java`) and `SANDTABLE_ZK_CLASSPATH` (a Java
//! classpath holding ZooKeeper's server classes). An override that names no file makes
//! `start` fail with [`ServiceError::NotInstalled`] rather than fall back.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The command that installs everything these harnesses need.
pub const INSTALL_HINT: &str =
    "run `scripts/services.sh install` (it does `apt-get install redis-server zookeeper`)";

/// ZooKeeper's tick in the private test server.
pub const PRIVATE_ZK_TICK: Duration = Duration::from_millis(250);

/// How long `start`/`restart` wait for a server to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

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
struct Proc {
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

    /// SIGKILL and reap. Idempotent.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
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

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A private `redis-server` on a loopback port, killed when dropped.
pub struct PrivateRedis {
    addr: SocketAddr,
    bin: PathBuf,
    persistent: bool,
    proc: Proc,
    // Dropped last: the process is killed before its directory goes.
    dir: TempDir,
}

impl fmt::Debug for PrivateRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateRedis")
            .field("addr", &self.addr)
            .field("pid", &self.proc.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl PrivateRedis {
    /// Starts a Redis without persistence (a restart loses every key, as the `Kv` port says).
    pub fn start() -> Result<PrivateRedis, ServiceError> {
        Self::launch(false)
    }

    /// Starts a Redis with an fsync-always append-only file: every acknowledged write
    /// survives [`restart`](Self::restart).
    pub fn start_persistent() -> Result<PrivateRedis, ServiceError> {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> Result<PrivateRedis, ServiceError> {
        let bin = find_binary("SANDTABLE_REDIS_SERVER", "redis-server", &["/usr/bin/redis-server"])
            .map_err(|looked_for| ServiceError::NotInstalled { what: "redis-server", looked_for })?;
        let dir =
            tempfile::Builder::new().prefix("sandtable-redis-").tempdir().map_err(io_err("redis-server"))?;
        let mut last = None;
        // The port is free when chosen but could be taken before the server binds it: retry.
        for _ in 0..5 {
            let port = free_port().map_err(io_err("redis-server"))?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match Self::spawn(&bin, dir.path(), addr, persistent) {
                Ok(proc) => return Ok(PrivateRedis { addr, bin, persistent, proc, dir }),
                Err(e @ ServiceError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn spawn(bin: &Path, dir: &Path, addr: SocketAddr, persistent: bool) -> Result<Proc, ServiceError> {
        let mut cmd = Command::new(bin);
        cmd.arg("--port")
            .arg(addr.port().to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--logfile", ""]);
        if persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut proc = Proc::launch("redis-server", cmd, dir.join("redis.log"))?;
        proc.wait_ready(|| Self::ping(addr))?;
        Ok(proc)
    }

    fn ping(addr: SocketAddr) -> bool {
        ask(addr, b"PING\r\n", 7, Duration::from_millis(500)).is_some_and(|r| r.starts_with("+PONG"))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// True while the process runs (it may not answer if it was [`pause`](Self::pause)d).
    pub fn is_running(&mut self) -> bool {
        self.proc.running()
    }

    /// Kills the server (SIGKILL, as a crash would). Idempotent.
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.proc.signal("STOP");
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        self.proc.signal("CONT");
    }

    /// Kills the server if it runs and starts it again on the same port and directory.
    pub fn restart(&mut self) -> Result<(), ServiceError> {
        self.proc.kill();
        let start = Instant::now();
        loop {
            match Self::spawn(&self.bin, self.dir.path(), self.addr, self.persistent) {
                Ok(p) => {
                    self.proc = p;
                    return Ok(());
                }
                // The old socket may linger for a moment after the kill.
                Err(ServiceError::Exited { .. }) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ZooKeeper
// ---------------------------------------------------------------------------------------------

/// Where the Debian `zookeeper` package puts its server jar.
const DEBIAN_ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
/// An SLF4J binding shipped by Debian; with it ZooKeeper logs to our log file.
const DEBIAN_SLF4J_SIMPLE: &str = "/usr/share/java/slf4j-simple.jar";

/// A private ZooKeeper (standalone server on a JVM) on a loopback port, killed when dropped.
pub struct PrivateZk {
    addr: SocketAddr,
    java: PathBuf,
    classpath: String,
    proc: Proc,
    dir: TempDir,
}

impl fmt::Debug for PrivateZk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateZk")
            .field("addr", &self.addr)
            .field("pid", &self.proc.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl PrivateZk {
    /// Starts a ZooKeeper with [`PRIVATE_ZK_TICK`] and waits until it serves requests.
    pub fn start() -> Result<PrivateZk, ServiceError> {
        let java = find_binary("SANDTABLE_JAVA", "java", &["/usr/bin/java"])
            .map_err(|looked_for| ServiceError::NotInstalled { what: "java (for ZooKeeper)", looked_for })?;
        let classpath = match std::env::var("SANDTABLE_ZK_CLASSPATH") {
            Ok(cp) if !cp.is_empty() => cp,
            _ => {
                if !Path::new(DEBIAN_ZK_JAR).is_file() {
                    return Err(ServiceError::NotInstalled {
                        what: "ZooKeeper",
                        looked_for: format!("{DEBIAN_ZK_JAR} or SANDTABLE_ZK_CLASSPATH"),
                    });
                }
                let mut cp = DEBIAN_ZK_JAR.to_string();
                if Path::new(DEBIAN_SLF4J_SIMPLE).is_file() {
                    cp.push(':');
                    cp.push_str(DEBIAN_SLF4J_SIMPLE);
                }
                cp
            }
        };
        let dir = tempfile::Builder::new().prefix("sandtable-zk-").tempdir().map_err(io_err("ZooKeeper"))?;
        std::fs::create_dir_all(dir.path().join("data")).map_err(io_err("ZooKeeper"))?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port().map_err(io_err("ZooKeeper"))?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            Self::write_config(dir.path(), addr).map_err(io_err("ZooKeeper"))?;
            match Self::spawn(&java, &classpath, dir.path(), addr) {
                Ok(proc) => return Ok(PrivateZk { addr, java, classpath, proc, dir }),
                Err(e @ ServiceError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn write_config(dir: &Path, addr: SocketAddr) -> std::io::Result<()> {
        let tick = PRIVATE_ZK_TICK.as_millis();
        let cfg = format!(
            "tickTime={tick}\n\
             minSessionTimeout={min}\n\
             maxSessionTimeout={max}\n\
             dataDir={data}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,stat,mntr,cons\n\
             preAllocSize=1024\n\
             snapCount=10000\n\
             forceSync=no\n\
             autopurge.purgeInterval=0\n",
            min = tick * 2,
            max = 40_000,
            data = dir.join("data").display(),
            port = addr.port(),
        );
        std::fs::write(dir.join("zoo.cfg"), cfg)
    }

    fn spawn(java: &Path, classpath: &str, dir: &Path, addr: SocketAddr) -> Result<Proc, ServiceError> {
        let mut cmd = Command::new(java);
        cmd.args([
            "-Xmx192m",
            "-Xss512k",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
            "-Djava.net.preferIPv4Stack=true",
            "-Dzookeeper.preAllocSize=1024",
            "-Dzookeeper.admin.enableServer=false",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
        ])
        .arg(format!("-Dzookeeper.log.dir={}", dir.display()))
        .arg("-cp")
        .arg(classpath)
        .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
        .arg(dir.join("zoo.cfg"));
        let mut proc = Proc::launch("ZooKeeper", cmd, dir.join("zookeeper.log"))?;
        proc.wait_ready(|| Self::serving(addr))?;
        Ok(proc)
    }

    /// True once the server answers `srvr` as a serving standalone server.
    fn serving(addr: SocketAddr) -> bool {
        ask(addr, b"srvr", 4096, Duration::from_millis(500))
            .is_some_and(|r| r.contains("Mode: standalone") && !r.contains("not currently serving"))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connect string (`127.0.0.1:port`).
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// The directory holding `zoo.cfg`, `data/` and `zookeeper.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// True while the process runs (it may not answer if it was [`pause`](Self::pause)d).
    pub fn is_running(&mut self) -> bool {
        self.proc.running()
    }

    /// Sends a four-letter command (`ruok`, `srvr`, `cons`, `mntr`, `stat`) and returns the answer.
    pub fn four_letter(&self, cmd: &str) -> Option<String> {
        ask(self.addr, cmd.as_bytes(), 1 << 16, Duration::from_secs(2))
    }

    /// Kills the server (SIGKILL, as a crash would). Sessions and znodes survive in the data
    /// directory; sessions restart their expiry clock when the server comes back. Idempotent.
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.proc.signal("STOP");
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) {
        self.proc.signal("CONT");
    }

    /// Kills the server if it runs and starts it again on the same port and data directory.
    pub fn restart(&mut self) -> Result<(), ServiceError> {
        self.proc.kill();
        let start = Instant::now();
        loop {
            match Self::spawn(&self.java, &self.classpath, self.dir.path(), self.addr) {
                Ok(p) => {
                    self.proc = p;
                    return Ok(());
                }
                // The old socket may linger for a moment after the kill.
                Err(ServiceError::Exited { .. }) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The server's log so far (for diagnosing a failing test).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.proc.log).unwrap_or_default()
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
        assert!(msg.contains("apt-get install redis-server zookeeper"), "{msg}");
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
