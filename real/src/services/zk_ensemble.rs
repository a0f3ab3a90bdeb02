//! A private ZooKeeper ensemble for live runs: one member (standalone) or a quorum of 3 (or 5),
//! each member on a host of its own (a network namespace of a `--net` run, entered through a
//! command prefix), listening on the standard ports there: clients on [`ZK_CLIENT_PORT`],
//! followers to the leader on [`ZK_PEER_PORT`], leader election on [`ZK_ELECTION_PORT`]. This
//! is the layout of `examples/deploy/` (`zoo.cfg` there has the same `server.N` lines).
//!
//! Members can be killed (SIGKILL), relaunched on their data directory, paused (SIGSTOP) and
//! resumed one by one, and asked which role they play (`srvr`: leader, follower, standalone),
//! so a run can aim a fault at the leader or at a follower. Each member's timing is scaled
//! like [`super::PRIVATE_ZK_TICK`]'s standalone server: `tickTime` 250 ms, `syncLimit`
//! [`SYNC_LIMIT_TICKS`] (a silent leader or follower is dropped after 2 s), `initLimit`
//! [`INIT_LIMIT_TICKS`].

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::zk::{config, jvm_command, runtime};
use super::{ask, io_err, Proc, ServiceError};

/// Where every member serves clients.
pub const ZK_CLIENT_PORT: u16 = 2181;
/// Where the leader listens for its followers.
pub const ZK_PEER_PORT: u16 = 2888;
/// Where members talk leader election.
pub const ZK_ELECTION_PORT: u16 = 3888;
/// Ticks a follower has to connect and sync to a new leader.
pub const INIT_LIMIT_TICKS: u32 = 20;
/// Ticks a follower (or the leader) may be silent before the other side drops it.
pub const SYNC_LIMIT_TICKS: u32 = 8;
/// The largest ensemble.
pub const MEMBERS_MAX: usize = 7;
/// How long a `srvr` question to one member may take.
const ASK_TIMEOUT: Duration = Duration::from_millis(300);

/// Where one member runs: the command prefix that enters its host (empty: here) and its
/// address there.
#[derive(Debug, Clone)]
pub struct ZkMember {
    pub prefix: Vec<String>,
    pub ip: Ipv4Addr,
}

/// The role a serving member reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZkMode {
    Standalone,
    Leader,
    Follower,
}

impl ZkMode {
    /// Parses `srvr`'s answer: `None` unless the member serves.
    fn of_srvr(answer: &str) -> Option<ZkMode> {
        if answer.contains("not currently serving") {
            return None;
        }
        let mode = answer.lines().find_map(|l| l.strip_prefix("Mode: "))?.trim();
        match mode {
            "standalone" => Some(ZkMode::Standalone),
            "leader" => Some(ZkMode::Leader),
            "follower" => Some(ZkMode::Follower),
            _ => None,
        }
    }

    /// The member that leads (or the standalone one) among `modes` ([`ZkEnsemble::modes`]).
    pub fn leader_of(modes: &[Option<ZkMode>]) -> Option<usize> {
        modes.iter().position(|m| matches!(m, Some(ZkMode::Leader | ZkMode::Standalone)))
    }

    /// The members that follow among `modes`.
    pub fn followers_of(modes: &[Option<ZkMode>]) -> Vec<usize> {
        (0..modes.len()).filter(|&i| modes[i] == Some(ZkMode::Follower)).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            ZkMode::Standalone => "standalone",
            ZkMode::Leader => "leader",
            ZkMode::Follower => "follower",
        }
    }
}

struct Member {
    host: ZkMember,
    dir: PathBuf,
    proc: Proc,
}

/// A running ensemble; every member is killed when dropped.
pub struct ZkEnsemble {
    java: PathBuf,
    classpath: String,
    members: Vec<Member>,
    // Dropped last: the processes are killed before their directories go.
    dir: TempDir,
}

impl fmt::Debug for ZkEnsemble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkEnsemble").field("members", &self.addrs()).field("dir", &self.dir.path()).finish()
    }
}

impl ZkEnsemble {
    /// Starts one member per host (1, 3, 5 or 7 of them) and waits until every member serves.
    pub fn start(hosts: Vec<ZkMember>) -> Result<ZkEnsemble, ServiceError> {
        if hosts.is_empty() || hosts.len().is_multiple_of(2) || hosts.len() > MEMBERS_MAX {
            return Err(ServiceError::Io {
                what: "ZooKeeper ensemble",
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "an ensemble has an odd number of members up to {MEMBERS_MAX}, not {}",
                        hosts.len()
                    ),
                ),
            });
        }
        let (java, classpath) = runtime()?;
        let dir = tempfile::Builder::new().prefix("sandtable-zks-").tempdir().map_err(io_err("ZooKeeper"))?;
        let ips: Vec<Ipv4Addr> = hosts.iter().map(|h| h.ip).collect();
        let mut members = Vec::with_capacity(hosts.len());
        for (i, host) in hosts.into_iter().enumerate() {
            let mdir = dir.path().join(format!("zk-{}", i + 1));
            std::fs::create_dir_all(mdir.join("data")).map_err(io_err("ZooKeeper"))?;
            std::fs::write(mdir.join("zoo.cfg"), member_config(&mdir, &ips, i))
                .map_err(io_err("ZooKeeper"))?;
            if ips.len() > 1 {
                std::fs::write(mdir.join("data").join("myid"), format!("{}\n", i + 1))
                    .map_err(io_err("ZooKeeper"))?;
            }
            let proc = launch(&java, &classpath, &host, &mdir, ips.len())?;
            members.push(Member { host, dir: mdir, proc });
        }
        let mut ensemble = ZkEnsemble { java, classpath, members, dir };
        for i in 0..ensemble.len() {
            let addr = ensemble.addr(i);
            ensemble.members[i].proc.wait_ready(|| mode(addr).is_some())?;
        }
        Ok(ensemble)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s name: `zk-1`, `zk-2`, ...
    pub fn name(i: usize) -> String {
        format!("zk-{}", i + 1)
    }

    /// Member `i`'s client address.
    pub fn addr(&self, i: usize) -> SocketAddrV4 {
        SocketAddrV4::new(self.members[i].host.ip, ZK_CLIENT_PORT)
    }

    /// Every member's client address.
    pub fn addrs(&self) -> Vec<SocketAddrV4> {
        (0..self.len()).map(|i| self.addr(i)).collect()
    }

    /// `ip1:2181,ip2:2181,ip3:2181`: a client picks a member and moves on when it fails.
    pub fn connect_string(&self) -> String {
        self.addrs().iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }

    /// The role member `i` plays now, or `None` if it does not serve (down, paused, cut off,
    /// or electing).
    pub fn mode(&self, i: usize) -> Option<ZkMode> {
        mode(self.addr(i))
    }

    /// Every member's role now (one `srvr` question each), by index.
    pub fn modes(&self) -> Vec<Option<ZkMode>> {
        (0..self.len()).map(|i| self.mode(i)).collect()
    }

    /// True while member `i`'s process runs (paused or not).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i].proc.running()
    }

    /// SIGKILLs member `i` (a crash). Idempotent.
    pub fn kill(&mut self, i: usize) {
        self.members[i].proc.kill();
    }

    /// Launches member `i` again on its data directory, without waiting for it to serve (it
    /// cannot while a quorum is missing). Kills it first if it still runs.
    pub fn relaunch(&mut self, i: usize) -> Result<(), ServiceError> {
        self.members[i].proc.kill();
        let m = &self.members[i];
        let proc = launch(&self.java, &self.classpath, &m.host, &m.dir, self.members.len())?;
        self.members[i].proc = proc;
        Ok(())
    }

    /// SIGSTOPs member `i` and returns once every thread of it is stopped.
    pub fn pause(&self, i: usize) {
        self.members[i].proc.signal("STOP");
        self.members[i].proc.wait_stopped();
    }

    /// SIGCONTs member `i`.
    pub fn resume(&self, i: usize) {
        self.members[i].proc.signal("CONT");
    }

    /// Waits up to `timeout` until every member serves and one leads; the members that do not.
    pub fn wait_serving(&self, timeout: Duration) -> Vec<usize> {
        let start = Instant::now();
        loop {
            let modes = self.modes();
            let down: Vec<usize> = (0..modes.len()).filter(|&i| modes[i].is_none()).collect();
            if down.is_empty() && ZkMode::leader_of(&modes).is_some() || start.elapsed() > timeout {
                return down;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `srvr`'s answer from `addr`, parsed.
fn mode(addr: SocketAddrV4) -> Option<ZkMode> {
    ask(SocketAddr::V4(addr), b"srvr", 4096, ASK_TIMEOUT).and_then(|a| ZkMode::of_srvr(&a))
}

fn launch(
    java: &Path,
    classpath: &str,
    host: &ZkMember,
    dir: &Path,
    members: usize,
) -> Result<Proc, ServiceError> {
    let main = if members == 1 {
        "org.apache.zookeeper.server.ZooKeeperServerMain"
    } else {
        "org.apache.zookeeper.server.quorum.QuorumPeerMain"
    };
    Proc::launch(
        "ZooKeeper",
        jvm_command(&host.prefix, java, classpath, dir, main),
        dir.join("zookeeper.log"),
    )
}

/// Member `me`'s `zoo.cfg` in an ensemble of `ips` (one line `server.N` per member when there
/// are several).
fn member_config(dir: &Path, ips: &[Ipv4Addr], me: usize) -> String {
    let mut cfg = config(dir, SocketAddr::from((ips[me], ZK_CLIENT_PORT)));
    if ips.len() > 1 {
        cfg.push_str(&format!("initLimit={INIT_LIMIT_TICKS}\nsyncLimit={SYNC_LIMIT_TICKS}\n"));
        cfg.push_str(&server_lines(ips));
    }
    cfg
}

/// The `server.N=IP:2888:3888` lines of an ensemble of `ips` (member N at `ips[N-1]`), as every
/// member's `zoo.cfg` has them (`examples/deploy/zookeeper/zoo.cfg` too).
pub fn server_lines(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .enumerate()
        .map(|(k, ip)| format!("server.{}={ip}:{ZK_PEER_PORT}:{ZK_ELECTION_PORT}\n", k + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srvr_answers_parse_into_roles_and_a_member_not_serving_has_none() {
        assert_eq!(
            ZkMode::of_srvr("Zookeeper version: 3.8.0\nMode: leader\nNode count: 5\n"),
            Some(ZkMode::Leader)
        );
        assert_eq!(ZkMode::of_srvr("Mode: follower\n"), Some(ZkMode::Follower));
        assert_eq!(ZkMode::of_srvr("Mode: standalone\n"), Some(ZkMode::Standalone));
        assert_eq!(ZkMode::of_srvr("This ZooKeeper instance is not currently serving requests\n"), None);
        assert_eq!(ZkMode::of_srvr(""), None);
    }

    #[test]
    fn a_members_config_lists_every_member_on_the_standard_ports() {
        let ips = [Ipv4Addr::new(10, 1, 2, 200), Ipv4Addr::new(10, 1, 2, 201), Ipv4Addr::new(10, 1, 2, 202)];
        let cfg = member_config(Path::new("/d"), &ips, 1);
        assert!(cfg.contains("clientPort=2181\nclientPortAddress=10.1.2.201\n"), "{cfg}");
        assert!(cfg.ends_with(
            "server.1=10.1.2.200:2888:3888\nserver.2=10.1.2.201:2888:3888\nserver.3=10.1.2.202:2888:3888\n"
        ));
        assert!(cfg.contains("syncLimit=8\n") && cfg.contains("tickTime=250\n"), "{cfg}");
        let one = member_config(Path::new("/d"), &ips[..1], 0);
        assert!(!one.contains("server."), "a single member is standalone: {one}");
    }
}
