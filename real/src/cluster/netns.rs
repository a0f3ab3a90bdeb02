//! A host per server for `cluster run --net`: one network namespace per server, each joined by
//! a veth pair to a bridge the run creates, and the nftables rules of its network faults.
//!
//! Layout of a run tagged `t` (4 hex digits) on a free `10.a.b.0/24` (the hosts of
//! `examples/deploy/`, one namespace each):
//! - bridge `sndtb{t}` in the root namespace, address `10.a.b.1`: the runner's clients
//!   connect from there;
//! - server `i` in namespace `sandtable-{t}-{i}`, its end of veth pair `sndtv{t}{i}` (root side
//!   on the bridge) named `sndtp{t}{i}`, address `10.a.b.{i+2}`, its own loopback up;
//! - service host `k` (a ZooKeeper member `zk-1`.., `redis`), named by a short id (`z1`, `r`)
//!   in place of `i`, at an address of its own from `10.a.b.200` up (the same in every run:
//!   `zk-1` .200, `zk-2` .201, `zk-3` .202, `redis` .203, `sql` .204).
//!
//! Everything is made and removed with the `ip` (iproute2) and `nft` (nftables) commands, run
//! as root. Dropping a [`NetLab`] kills whatever still runs in its namespaces and removes every
//! namespace, link and rule it made, after a failed run or a Ctrl-C too; [`cleanup_leftovers`]
//! (`real cluster cleanup`) removes those of a run that could not clean up (SIGKILLed runner).
//!
//! Why the commands and not a netlink crate (`rtnetlink`, `nftnl`): a run makes a handful of
//! changes in all, each the one-line command the README and the deployment notes show, and the
//! error an operator sees is the command's own.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::ClusterError;

/// Every namespace of a run is named with this prefix ([`cleanup_leftovers`] looks for it).
pub const NS_PREFIX: &str = "sandtable-";
/// Every link (bridge, veth) of a run is named with this prefix.
pub const LINK_PREFIX: &str = "sndt";
/// The second octet of a run's subnet is drawn from this range (`10.a.b.0/24`).
const SUBNET_A: std::ops::RangeInclusive<u8> = 150..=250;
/// At most this many servers in one run (addresses `.2` up, and interface names stay short).
pub const HOSTS_MAX: usize = 64;
/// Each live run's tag has a file here holding the runner's process id, so
/// [`cleanup_leftovers`] never touches the namespaces of a run that is still going.
pub const RUNS_DIR: &str = "/run/sandtable-net";
/// Length of a run's tag (hex digits) in its names.
const TAG_LEN: usize = 4;
/// Service hosts have addresses from `10.a.b.{SERVICE_IP_MIN}` up.
pub const SERVICE_IP_MIN: u8 = 200;
/// At most this many service hosts in one run.
pub const SERVICE_HOSTS_MAX: usize = 8;

/// One host: a server's, or a service's (a ZooKeeper member, Redis).
#[derive(Debug, Clone)]
pub struct Host {
    /// `game-0`, `zk-1`, `redis`, ...
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    veth: String,
}

/// A service host to make: its name (`zk-1`) and the short id in its namespace and link
/// names (`z1`; at most 2 characters, interface names are limited to 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceHost {
    pub name: &'static str,
    pub id: &'static str,
    /// The last octet of its address (at least [`SERVICE_IP_MIN`]).
    pub last_octet: u8,
}

/// The namespaces, bridge and veth pairs of one run (see the module documentation).
#[derive(Debug)]
pub struct NetLab {
    marker: PathBuf,
    bridge: String,
    gateway: Ipv4Addr,
    /// The servers' hosts, by index.
    hosts: Vec<Host>,
    /// The services' hosts, in the order asked for.
    services: Vec<Host>,
    ip: PathBuf,
    nft: PathBuf,
}

/// Each host of a run, by name, with the last octet of its address: server `i` at `i + 2`,
/// service hosts at their own fixed addresses (`examples/deploy/hosts.json` numbers its
/// hosts the same way). At most [`HOSTS_MAX`] servers and [`SERVICE_HOSTS_MAX`] service hosts.
pub fn layout(servers: &[String], service_hosts: &[ServiceHost]) -> Vec<(String, u8)> {
    let servers = servers
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), u8::try_from(i + 2).expect("at most HOSTS_MAX servers")));
    let services = service_hosts.iter().map(|s| {
        assert!(s.last_octet >= SERVICE_IP_MIN, "{s:?} is among the servers' addresses");
        (s.name.to_string(), s.last_octet)
    });
    servers.chain(services).collect()
}

/// What `--net` needs: root, `ip` and `nft`. The paths of the two commands, or what is missing.
pub fn require() -> Result<(PathBuf, PathBuf), ClusterError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = find_sbin("ip");
    let nft = find_sbin("nft");
    let mut missing = Vec::new();
    if !root {
        missing.push("root (network namespaces and nftables rules need CAP_NET_ADMIN)".to_string());
    }
    if ip.is_none() {
        missing.push("the `ip` command (Debian package iproute2)".to_string());
    }
    if nft.is_none() {
        missing.push("the `nft` command (Debian package nftables)".to_string());
    }
    match (ip, nft) {
        (Some(ip), Some(nft)) if missing.is_empty() => Ok((ip, nft)),
        _ => Err(ClusterError::Args(format!(
            "--net needs {}; `scripts/services.sh install` installs the packages, then run as root",
            missing.join(" and ")
        ))),
    }
}

fn find_sbin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd args`, feeding `stdin` if given; the command line and its stderr on failure.
fn run(cmd: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Result<String, ClusterError> {
    let mut c = Command::new(cmd);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let line = || format!("{} {}", cmd.display(), args.join(" "));
    let mut child = c.spawn().map_err(|e| ClusterError::Io(format!("{}: {e}", line())))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| ClusterError::Io(format!("{}: stdin: {e}", line())))?;
    }
    let out = child.wait_with_output().map_err(|e| ClusterError::Io(format!("{}: {e}", line())))?;
    if !out.status.success() {
        return Err(ClusterError::Io(format!(
            "{} failed ({}): {}",
            line(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NetLab {
    /// Makes the bridge, one namespace per server (named `servers`, by index) and one per
    /// service host.
    pub fn create(servers: &[String], service_hosts: &[ServiceHost]) -> Result<NetLab, ClusterError> {
        let (ip, nft) = require()?;
        if servers.len() > HOSTS_MAX {
            return Err(ClusterError::Args(format!(
                "--net runs at most {HOSTS_MAX} servers, not {}",
                servers.len()
            )));
        }
        if service_hosts.len() > SERVICE_HOSTS_MAX {
            return Err(ClusterError::Args(format!("at most {SERVICE_HOSTS_MAX} service hosts")));
        }
        let tag = format!("{:04x}", rand::random::<u16>());
        let (a, b) = free_subnet(&ip)?;
        let gateway = Ipv4Addr::new(10, a, b, 1);
        let marker = PathBuf::from(RUNS_DIR).join(&tag);
        std::fs::create_dir_all(RUNS_DIR)
            .and_then(|()| std::fs::write(&marker, std::process::id().to_string()))
            .map_err(|e| ClusterError::Io(format!("{}: {e}", marker.display())))?;
        let mut lab = NetLab {
            marker,
            bridge: format!("{LINK_PREFIX}b{tag}"),
            gateway,
            hosts: Vec::new(),
            services: Vec::new(),
            ip,
            nft,
        };
        // From here on, a failure drops `lab`, which removes whatever was made.
        lab.ip_cmd(&["link", "add", &lab.bridge, "type", "bridge"])?;
        lab.ip_cmd(&["addr", "add", &format!("{gateway}/24"), "dev", &lab.bridge])?;
        lab.ip_cmd(&["link", "set", &lab.bridge, "up"])?;
        let places = layout(servers, service_hosts);
        for (i, (name, last)) in places.iter().take(servers.len()).enumerate() {
            let host = lab.add_host(name.clone(), &tag, &i.to_string(), Ipv4Addr::new(10, a, b, *last))?;
            lab.hosts.push(host);
        }
        for (s, (name, last)) in service_hosts.iter().zip(&places[servers.len()..]) {
            let host = lab.add_host(name.clone(), &tag, s.id, Ipv4Addr::new(10, a, b, *last))?;
            lab.services.push(host);
        }
        Ok(lab)
    }

    /// Makes one host's namespace, veth pair and (empty) rule table. A host that fails part way
    /// is removed here; the caller lists the ones made, which `Drop` removes.
    fn add_host(&self, name: String, tag: &str, id: &str, ip: Ipv4Addr) -> Result<Host, ClusterError> {
        let host = Host {
            name,
            namespace: format!("{NS_PREFIX}{tag}-{id}"),
            ip,
            veth: format!("{LINK_PREFIX}v{tag}{id}"),
        };
        let peer = format!("{LINK_PREFIX}p{tag}{id}");
        self.ip_cmd(&["netns", "add", &host.namespace])?;
        let made = (|| {
            let ns = host.namespace.as_str();
            self.ip_cmd(&["link", "add", &host.veth, "type", "veth", "peer", "name", &peer])?;
            self.ip_cmd(&["link", "set", &peer, "netns", ns])?;
            self.ip_cmd(&["link", "set", &host.veth, "master", &self.bridge, "up"])?;
            self.ip_cmd(&["-n", ns, "addr", "add", &format!("{}/24", host.ip), "dev", &peer])?;
            self.ip_cmd(&["-n", ns, "link", "set", &peer, "up"])?;
            self.ip_cmd(&["-n", ns, "link", "set", "lo", "up"])?;
            self.load_rules_in(ns, &super::netfaults::render(&Default::default()))
        })();
        if let Err(e) = made {
            remove_namespace(&self.ip, &host.namespace);
            let _ = run(&self.ip, &["link", "del", &host.veth], None);
            return Err(e);
        }
        Ok(host)
    }

    fn ip_cmd(&self, args: &[&str]) -> Result<String, ClusterError> {
        run(&self.ip, args, None)
    }

    /// The bridge's address, where the runner's clients come from.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The servers' addresses, by index.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.hosts.iter().map(|h| IpAddr::V4(h.ip)).collect()
    }

    /// The servers' hosts, by index.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The service host named `name` (`zk-1`, `redis`).
    pub fn service(&self, name: &str) -> Option<&Host> {
        self.services.iter().find(|h| h.name == name)
    }

    /// Every service host, in the order they were asked for.
    pub fn services(&self) -> &[Host] {
        &self.services
    }

    /// The command prefix that runs a program on `host` ([`exec_prefix`](Self::exec_prefix)).
    pub fn prefix_for(&self, host: &Host) -> Vec<String> {
        vec![self.ip.display().to_string(), "netns".into(), "exec".into(), host.namespace.clone()]
    }

    /// The command prefix that runs a program in server `i`'s namespace (`ip netns exec NS`):
    /// it `exec`s the program, so the process id is the program's own.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        self.prefix_for(&self.hosts[i])
    }

    /// Replaces server `i`'s nftables table with `script` ([`super::netfaults::render`]).
    pub fn load_rules(&self, i: usize, script: &str) -> Result<(), ClusterError> {
        self.load_rules_in(&self.hosts[i].namespace, script)
    }

    /// Replaces the nftables table of `host` (a service's) with `script`.
    pub fn load_host_rules(&self, host: &Host, script: &str) -> Result<(), ClusterError> {
        self.load_rules_in(&host.namespace, script)
    }

    fn load_rules_in(&self, ns: &str, script: &str) -> Result<(), ClusterError> {
        run(&self.ip, &["netns", "exec", ns, &self.nft.display().to_string(), "-f", "-"], Some(script))
            .map(drop)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for h in self.hosts.iter().chain(&self.services) {
            remove_namespace(&self.ip, &h.namespace);
            // The root end (and with it the pair) goes with the namespace, but asynchronously:
            // delete it now so the bridge has nothing attached.
            let _ = run(&self.ip, &["link", "del", &h.veth], None);
        }
        let _ = run(&self.ip, &["link", "del", &self.bridge], None);
        let _ = std::fs::remove_file(&self.marker);
    }
}

/// True if the run tagged `tag` is still going (its runner's process is alive).
fn run_alive(tag: &str) -> bool {
    let Ok(pid) = std::fs::read_to_string(PathBuf::from(RUNS_DIR).join(tag)) else { return false };
    let Ok(pid) = pid.trim().parse::<libc::pid_t>() else { return false };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Kills every process in namespace `ns` (SIGKILL) and deletes the namespace.
fn remove_namespace(ip: &std::path::Path, ns: &str) {
    if let Ok(pids) = run(ip, &["netns", "pids", ns], None) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<libc::pid_t>().ok()) {
            // SAFETY: kill(2) on a process id listed in the namespace we made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = run(ip, &["netns", "del", ns], None);
}

/// A `10.a.b.0/24` no interface of this machine has an address in.
fn free_subnet(ip: &std::path::Path) -> Result<(u8, u8), ClusterError> {
    let used = run(ip, &["-4", "-o", "addr", "show"], None)?;
    for _ in 0..64 {
        let a = SUBNET_A.start() + (rand::random::<u8>() % (SUBNET_A.end() - SUBNET_A.start() + 1));
        let b = rand::random::<u8>();
        if !used.contains(&format!(" 10.{a}.{b}.")) {
            return Ok((a, b));
        }
    }
    Err(ClusterError::Io("no free 10.a.b.0/24 for the run's bridge after 64 tries".into()))
}

/// Removes every namespace and link a run left behind (`real cluster cleanup`): namespaces named
/// [`NS_PREFIX`]`TAG-*` (their processes are killed first) and links named
/// [`LINK_PREFIX`]`{b,v,p}TAG*`, of every tag whose run is not going any more (no live runner
/// behind its file in [`RUNS_DIR`]). What it removed.
pub fn cleanup_leftovers() -> Result<Vec<String>, ClusterError> {
    let (ip, _) = require()?;
    let mut removed = Vec::new();
    for line in run(&ip, &["netns", "list"], None)?.lines() {
        let Some(ns) = line.split_whitespace().next() else { continue };
        let Some(tag) = ns.strip_prefix(NS_PREFIX).and_then(|rest| rest.get(..TAG_LEN)) else { continue };
        if !run_alive(tag) {
            remove_namespace(&ip, ns);
            removed.push(format!("namespace {ns}"));
        }
    }
    for line in run(&ip, &["-o", "link", "show"], None)?.lines() {
        // "12: sndtb1a2b: <...>" or "13: sndtv1a2b0@if12: <...>"
        let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        let Some(tag) = name.strip_prefix(LINK_PREFIX).and_then(|rest| rest.get(1..1 + TAG_LEN)) else {
            continue;
        };
        if !run_alive(tag) && run(&ip, &["link", "del", name], None).is_ok() {
            removed.push(format!("link {name}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir(RUNS_DIR) {
        for e in entries.flatten() {
            let tag = e.file_name().to_string_lossy().into_owned();
            if !run_alive(&tag) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(removed)
}
