//! A private ZooKeeper standalone server for tests (see the module doc of [`super`]).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::PRIVATE_ZK_TICK;
use super::{ask, command_in, find_binary, free_port, io_err, Proc, ServiceError};

/// Where the Debian `zookeeper` package puts its server jar.
const DEBIAN_ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
/// An SLF4J binding shipped by Debian; with it ZooKeeper logs to our log file.
const DEBIAN_SLF4J_SIMPLE: &str = "/usr/share/java/slf4j-simple.jar";

/// The `java` binary and the classpath holding ZooKeeper's server classes.
pub(super) fn runtime() -> Result<(PathBuf, String), ServiceError> {
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
    Ok((java, classpath))
}

/// The JVM command running ZooKeeper's `main_class` on `dir/zoo.cfg` (after `prefix`, if any:
/// another host's `ip netns exec NS`), small-heap settings for tests, logging to `dir`.
pub(super) fn jvm_command(
    prefix: &[String],
    java: &Path,
    classpath: &str,
    dir: &Path,
    main_class: &str,
) -> Command {
    let mut cmd = command_in(prefix, java);
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
    .arg(main_class)
    .arg(dir.join("zoo.cfg"));
    cmd
}

/// The `zoo.cfg` lines of a private server serving clients at `addr` with its data in
/// `dir/data`: [`PRIVATE_ZK_TICK`], sessions of 2 ticks to 40 s, no fsync, small
/// preallocation, admin server off, the four-letter words the harnesses ask.
pub(super) fn config(dir: &Path, addr: SocketAddr) -> String {
    let tick = PRIVATE_ZK_TICK.as_millis();
    format!(
        "tickTime={tick}\n\
         minSessionTimeout={min}\n\
         maxSessionTimeout={max}\n\
         dataDir={data}\n\
         clientPort={port}\n\
         clientPortAddress={ip}\n\
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
        ip = addr.ip(),
    )
}

/// A private ZooKeeper (standalone server on a JVM) on a loopback port, killed when dropped.
/// After a `stop` (SIGKILL) sessions and znodes survive in the data directory, and sessions
/// restart their expiry clock when the server comes back.
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
    /// Starts a ZooKeeper with [`PRIVATE_ZK_TICK`] on loopback and waits until it serves
    /// requests.
    pub fn start() -> Result<PrivateZk, ServiceError> {
        Self::start_on(Ipv4Addr::LOCALHOST)
    }

    /// [`start`](Self::start), listening on `ip` instead of loopback (a live run's bridge
    /// address, which the servers' network namespaces reach).
    pub fn start_on(ip: Ipv4Addr) -> Result<PrivateZk, ServiceError> {
        let (java, classpath) = runtime()?;
        let dir = tempfile::Builder::new().prefix("sandtable-zk-").tempdir().map_err(io_err("ZooKeeper"))?;
        std::fs::create_dir_all(dir.path().join("data")).map_err(io_err("ZooKeeper"))?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port().map_err(io_err("ZooKeeper"))?;
            let addr = SocketAddr::from((ip, port));
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
        std::fs::write(dir.join("zoo.cfg"), config(dir, addr))
    }

    fn spawn(java: &Path, classpath: &str, dir: &Path, addr: SocketAddr) -> Result<Proc, ServiceError> {
        let cmd = jvm_command(&[], java, classpath, dir, "org.apache.zookeeper.server.ZooKeeperServerMain");
        let mut proc = Proc::launch("ZooKeeper", cmd, dir.join("zookeeper.log"))?;
        proc.wait_ready(|| Self::serving(addr))?;
        Ok(proc)
    }

    /// True once the server answers `srvr` as a serving standalone server.
    fn serving(addr: SocketAddr) -> bool {
        ask(addr, b"srvr", 4096, Duration::from_millis(500))
            .is_some_and(|r| r.contains("Mode: standalone") && !r.contains("not currently serving"))
    }

    /// `127.0.0.1:port` (or the address given to [`start_on`](Self::start_on)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connect string (`127.0.0.1:port`, or the `start_on` address).
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// The directory holding `zoo.cfg`, `data/` and `zookeeper.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    process_controls!();

    /// Sends a four-letter command (`ruok`, `srvr`, `cons`, `mntr`, `stat`) and returns the answer.
    pub fn four_letter(&self, cmd: &str) -> Option<String> {
        ask(self.addr, cmd.as_bytes(), 1 << 16, Duration::from_secs(2))
    }

    /// Kills the server if it runs and starts it again on the same port and data directory.
    pub fn restart(&mut self) -> Result<(), ServiceError> {
        self.proc.respawn(Duration::from_millis(200), || {
            Self::spawn(&self.java, &self.classpath, self.dir.path(), self.addr)
        })
    }

    /// The server's log so far (for diagnosing a failing test).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.proc.log).unwrap_or_default()
    }
}
