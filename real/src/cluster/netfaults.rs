//! Network faults of a live run with `--net`: when they start and end ([`NetSchedule`]) and
//! which nftables rules each server's network namespace holds while they last
//! ([`host_rules`], [`render`]). I/O-free: the runner polls [`NetSchedule::step`] with the
//! time, renders the rule set of every host whose faults changed and loads it with `nft -f`
//! in that host's namespace (`netns.rs`).
//!
//! Inputs of [`NetSchedule::step`]: `now` (ns since the start of the run). Every choice (which
//! kind, which server, how long, how much loss) comes from a generator forked from the run's
//! seed, so the same seed gives the same plan.
//!
//! Rules:
//! - a fault starts every `every` during the chaos phase, at most one per step (slots missed
//!   while the runner was busy are skipped); faults may overlap;
//! - it lasts [`FAULT_MIN_MS`] to `max`, and ends at the heal at the latest;
//! - at the heal every rule is gone, so the heal phase runs on a whole network.
//!
//! # Fault model (what the kernel does here)
//! Rules are filters on the server's own namespace (`input` and `output` hooks of one `inet`
//! table), so a dropped packet is lost silently, as on a real network: TCP retransmits, then
//! times out; nothing is refused. ZooKeeper's members and Redis run on hosts of their own
//! (namespaces on the same bridge), so a cut from them is a rule on each member's address and
//! port. The runner's clients reach servers from the bridge's address on the game's client
//! port, which no partition rule names: like the simulator's partitions, these split the
//! cluster, not the players from their server. Faults of the services' own hosts are
//! [`super::servicefaults`].
//! - [`NetFault::Partition`]: a server cut from ZooKeeper, Redis, the SQL server (with
//!   `--mariadb`) and every other server, both ways;
//! - [`NetFault::IsolateZk`]: a server cut from ZooKeeper only (it still reaches its peers and
//!   Redis): the split-brain case fencing exists for;
//! - [`NetFault::OneWay`]: nothing the server sends reaches ZooKeeper, Redis or the other
//!   servers; it still hears them (TCP soon stalls both ways, as on a real one-way cut);
//! - [`NetFault::CutLink`]: the link between two servers, both ways;
//! - [`NetFault::Loss`]: the server's namespace drops a share of every packet, each way, at
//!   random (`numgen random`), clients' packets included.
//!
//! # Not modelled
//! Latency and reordering: they need `netem`, which this machine's kernel does not have
//! (`tc qdisc add ... netem` fails with "Specified qdisc kind is unknown"). Faults of SQL
//! without `--mariadb` (SQLite files, no network).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use engine::env::RandExt;
use scenarios::seed_rng::SeedRng;

use super::schedule::nanos;

/// The shortest network fault (ms).
pub const FAULT_MIN_MS: u64 = 500;
/// Loss rates drawn for [`NetFault::Loss`] (percent), inclusive.
pub const LOSS_PERCENT: (u64, u64) = (5, 40);
/// The nftables table every rule of a run lives in (one per namespace).
pub const TABLE: &str = "sandtable";

/// A kind of network fault, as named on the command line (`--net-faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NetFaultKind {
    Partition,
    IsolateZk,
    OneWay,
    CutLink,
    Loss,
}

impl NetFaultKind {
    pub const ALL: [NetFaultKind; 5] = [
        NetFaultKind::Partition,
        NetFaultKind::IsolateZk,
        NetFaultKind::OneWay,
        NetFaultKind::CutLink,
        NetFaultKind::Loss,
    ];

    /// Its name on the command line and in counters.
    pub fn name(self) -> &'static str {
        match self {
            NetFaultKind::Partition => "partition",
            NetFaultKind::IsolateZk => "zk",
            NetFaultKind::OneWay => "one-way",
            NetFaultKind::CutLink => "cut",
            NetFaultKind::Loss => "loss",
        }
    }

    /// The kind named `s`, or a message listing the names.
    pub fn parse(s: &str) -> Result<NetFaultKind, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("unknown network fault {s:?} (known: {})", names.join(", "))
        })
    }
}

/// One network fault (servers are indexes in the topology's servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFault {
    Partition { server: usize },
    IsolateZk { server: usize },
    OneWay { server: usize },
    CutLink { a: usize, b: usize },
    Loss { server: usize, percent: u8 },
}

impl NetFault {
    pub fn kind(&self) -> NetFaultKind {
        match self {
            NetFault::Partition { .. } => NetFaultKind::Partition,
            NetFault::IsolateZk { .. } => NetFaultKind::IsolateZk,
            NetFault::OneWay { .. } => NetFaultKind::OneWay,
            NetFault::CutLink { .. } => NetFaultKind::CutLink,
            NetFault::Loss { .. } => NetFaultKind::Loss,
        }
    }

    /// The host whose namespace holds this fault's rules.
    pub fn host(&self) -> usize {
        match *self {
            NetFault::Partition { server }
            | NetFault::IsolateZk { server }
            | NetFault::OneWay { server }
            | NetFault::Loss { server, .. } => server,
            NetFault::CutLink { a, .. } => a,
        }
    }

    /// A line of the printed plan, with the servers' names.
    pub fn describe(&self, names: &[String]) -> String {
        let n = |i: usize| names.get(i).map_or("?", |s| s.as_str()).to_string();
        let others = |server: usize| {
            let mut v: Vec<String> =
                names.iter().enumerate().filter(|(i, _)| *i != server).map(|(_, s)| s.clone()).collect();
            v.extend(["zk".to_string(), "redis".to_string()]);
            v.join(",")
        };
        match *self {
            NetFault::Partition { server } => format!("partition {} | {}", n(server), others(server)),
            NetFault::IsolateZk { server } => format!("partition {} | zk", n(server)),
            NetFault::OneWay { server } => format!("partition one-way {} -> {}", n(server), others(server)),
            NetFault::CutLink { a, b } => format!("cut link {} <-> {}", n(a), n(b)),
            NetFault::Loss { server, percent } => format!("packet loss {percent}% at {}", n(server)),
        }
    }
}

/// Where a run's services and servers are on its bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The servers' addresses, by index.
    pub servers: Vec<Ipv4Addr>,
    /// Every ZooKeeper member's client address (none: the topology has no ZooKeeper).
    pub zk: Vec<SocketAddrV4>,
    pub redis: Option<SocketAddrV4>,
    /// The MariaDB server of `--mariadb` (none: SQLite files, no network).
    pub sql: Option<SocketAddrV4>,
}

/// The filter rules of one host (each one nftables rule statement).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub input: Vec<String>,
    pub output: Vec<String>,
}

impl Rules {
    fn cut_services<'a>(&mut self, services: impl IntoIterator<Item = &'a SocketAddrV4>, both_ways: bool) {
        for s in services {
            let (ip, p) = (s.ip(), s.port());
            self.output.push(format!("ip daddr {ip} tcp dport {p} drop"));
            if both_ways {
                self.input.push(format!("ip saddr {ip} tcp sport {p} drop"));
            }
        }
    }

    fn cut_hosts(&mut self, hosts: &[Ipv4Addr], both_ways: bool) {
        if hosts.is_empty() {
            return;
        }
        let set = hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ");
        self.output.push(format!("ip daddr {{ {set} }} drop"));
        if both_ways {
            self.input.push(format!("ip saddr {{ {set} }} drop"));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.input.is_empty() && self.output.is_empty()
    }
}

/// The rules host `host`'s namespace holds while `active` faults last.
pub fn host_rules<'a>(host: usize, active: impl IntoIterator<Item = &'a NetFault>, ep: &Endpoints) -> Rules {
    let mut r = Rules::default();
    let peers = |me: usize| -> Vec<Ipv4Addr> {
        ep.servers.iter().enumerate().filter(|(i, _)| *i != me).map(|(_, ip)| *ip).collect()
    };
    for f in active.into_iter().filter(|f| f.host() == host) {
        match *f {
            NetFault::Partition { server } | NetFault::OneWay { server } => {
                let both = matches!(f, NetFault::Partition { .. });
                r.cut_services(ep.zk.iter().chain(&ep.redis).chain(&ep.sql), both);
                r.cut_hosts(&peers(server), both);
            }
            NetFault::IsolateZk { .. } => r.cut_services(&ep.zk, true),
            NetFault::CutLink { b, .. } => r.cut_hosts(&ep.servers[b..=b], true),
            NetFault::Loss { percent, .. } => {
                let rule = format!("numgen random mod 100 < {percent} drop");
                r.input.push(rule.clone());
                r.output.push(rule);
            }
        }
    }
    r
}

/// The `nft -f` script that replaces the host's table with `rules` (one transaction: the
/// table is created if missing, deleted, and made again, so loading is idempotent). Empty
/// rules leave an empty table: nothing is dropped.
pub fn render(rules: &Rules) -> String {
    let chain = |name: &str, hook: &str, lines: &[String]| {
        let mut s = format!("  chain {name} {{\n    type filter hook {hook} priority 0; policy accept;\n");
        for l in lines {
            s.push_str("    ");
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("  }\n");
        s
    };
    format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n{}{}}}\n",
        chain("input", "input", &rules.input),
        chain("output", "output", &rules.output)
    )
}

/// What the schedule may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetScheduleConfig {
    pub servers: usize,
    pub every: Duration,
    /// Longest fault (at least [`FAULT_MIN_MS`]).
    pub max: Duration,
    /// The kinds to draw from (non-empty; `CutLink` needs two servers).
    pub kinds: Vec<NetFaultKind>,
    /// No fault at or after this time (ns); every fault has ended by then.
    pub heal_ns: u64,
}

/// A change the runner carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetEvent {
    /// Fault `id` starts now and lasts `for_ns`.
    Start { id: u64, fault: NetFault, for_ns: u64 },
    /// Fault `id` ends now.
    End { id: u64, fault: NetFault },
}

/// The network-fault plan of one run, drawn as it goes (see the module documentation).
#[derive(Debug)]
pub struct NetSchedule {
    config: NetScheduleConfig,
    rng: SeedRng,
    next_ns: u64,
    next_id: u64,
    /// Active faults by id -> (fault, end ns).
    active: BTreeMap<u64, (NetFault, u64)>,
}

impl NetSchedule {
    pub fn new(seed: u64, config: NetScheduleConfig) -> Self {
        assert!(!config.kinds.is_empty(), "a network schedule needs at least one kind");
        assert!(config.servers > 0, "a network schedule needs servers");
        let next_ns = nanos(config.every);
        NetSchedule {
            config,
            rng: SeedRng::new(seed).fork("live-net"),
            next_ns,
            next_id: 0,
            active: BTreeMap::new(),
        }
    }

    /// The faults active now.
    pub fn active(&self) -> impl Iterator<Item = &NetFault> {
        self.active.values().map(|(f, _)| f)
    }

    /// What to do at `now` (ns since the start of the run): ends first, then starts.
    pub fn step(&mut self, now: u64) -> Vec<NetEvent> {
        let mut out = Vec::new();
        let ending: Vec<u64> =
            self.active.iter().filter(|(_, (_, end))| *end <= now).map(|(id, _)| *id).collect();
        for id in ending {
            let (fault, _) = self.active.remove(&id).expect("listed above");
            out.push(NetEvent::End { id, fault });
        }
        while self.next_ns <= now && now < self.config.heal_ns {
            let fault = self.draw();
            let max_ms = u64::try_from(self.config.max.as_millis()).unwrap_or(u64::MAX).max(FAULT_MIN_MS);
            let len_ns = self.rng.gen_range(FAULT_MIN_MS..max_ms + 1) * 1_000_000;
            let end = (now + len_ns).min(self.config.heal_ns);
            let id = self.next_id;
            self.next_id += 1;
            self.active.insert(id, (fault, end));
            out.push(NetEvent::Start { id, fault, for_ns: end - now });
            // One fault per step: slots missed while the runner was busy (servers starting)
            // are skipped, not started in a burst.
            while self.next_ns <= now {
                self.next_ns += nanos(self.config.every).max(1);
            }
        }
        out
    }

    fn draw(&mut self) -> NetFault {
        let n = self.config.servers as u64;
        let kinds: Vec<NetFaultKind> =
            self.config.kinds.iter().copied().filter(|k| *k != NetFaultKind::CutLink || n >= 2).collect();
        let kind = *self.rng.choose(&kinds).expect("a kind that fits the servers");
        let server = self.rng.gen_range(0..n) as usize;
        match kind {
            NetFaultKind::Partition => NetFault::Partition { server },
            NetFaultKind::IsolateZk => NetFault::IsolateZk { server },
            NetFaultKind::OneWay => NetFault::OneWay { server },
            NetFaultKind::CutLink => {
                let other = (server + 1 + self.rng.gen_range(0..n - 1) as usize) % n as usize;
                NetFault::CutLink { a: server, b: other }
            }
            NetFaultKind::Loss => {
                let percent = self.rng.gen_range(LOSS_PERCENT.0..LOSS_PERCENT.1 + 1) as u8;
                NetFault::Loss { server, percent }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Endpoints {
        Endpoints {
            servers: vec![Ipv4Addr::new(10, 9, 8, 2), Ipv4Addr::new(10, 9, 8, 3), Ipv4Addr::new(10, 9, 8, 4)],
            zk: vec![SocketAddrV4::new(Ipv4Addr::new(10, 9, 8, 200), 2181)],
            redis: Some(SocketAddrV4::new(Ipv4Addr::new(10, 9, 8, 201), 6379)),
            sql: None,
        }
    }

    fn config(kinds: &[NetFaultKind]) -> NetScheduleConfig {
        NetScheduleConfig {
            servers: 3,
            every: Duration::from_secs(2),
            max: Duration::from_secs(5),
            kinds: kinds.to_vec(),
            heal_ns: 20_000_000_000,
        }
    }

    #[test]
    fn a_partition_cuts_the_server_from_services_and_peers_both_ways_but_not_from_clients() {
        let r = host_rules(1, &[NetFault::Partition { server: 1 }], &endpoints());
        assert_eq!(
            r.output,
            vec![
                "ip daddr 10.9.8.200 tcp dport 2181 drop",
                "ip daddr 10.9.8.201 tcp dport 6379 drop",
                "ip daddr { 10.9.8.2, 10.9.8.4 } drop"
            ]
        );
        assert_eq!(
            r.input,
            vec![
                "ip saddr 10.9.8.200 tcp sport 2181 drop",
                "ip saddr 10.9.8.201 tcp sport 6379 drop",
                "ip saddr { 10.9.8.2, 10.9.8.4 } drop"
            ]
        );
        // Nothing on the bridge's address: the runner's clients get through.
        assert!(r.input.iter().chain(&r.output).all(|l| !l.contains("10.9.8.1 ")));
    }

    #[test]
    fn a_one_way_partition_only_drops_what_the_server_sends() {
        let r = host_rules(0, &[NetFault::OneWay { server: 0 }], &endpoints());
        assert!(r.input.is_empty());
        assert_eq!(r.output.len(), 3);
    }

    #[test]
    fn a_fault_is_held_only_by_its_own_host() {
        let faults = [NetFault::IsolateZk { server: 2 }, NetFault::CutLink { a: 0, b: 2 }];
        assert_eq!(host_rules(1, &faults, &endpoints()), Rules::default());
        let zero = host_rules(0, &faults, &endpoints());
        assert_eq!(zero.output, vec!["ip daddr { 10.9.8.4 } drop"]);
        assert_eq!(zero.input, vec!["ip saddr { 10.9.8.4 } drop"]);
        let two = host_rules(2, &faults, &endpoints());
        assert_eq!(two.output, vec!["ip daddr 10.9.8.200 tcp dport 2181 drop"]);
    }

    #[test]
    fn a_topology_without_redis_has_no_redis_rule() {
        let ep = Endpoints { redis: None, ..endpoints() };
        let r = host_rules(0, &[NetFault::Partition { server: 0 }], &ep);
        assert!(r.output.iter().all(|l| !l.contains("6379")));
        assert_eq!(r.output.len(), 2);
    }

    #[test]
    fn a_cut_from_zookeeper_cuts_every_member_of_an_ensemble() {
        let members = (210..213).map(|h| SocketAddrV4::new(Ipv4Addr::new(10, 9, 8, h), 2181)).collect();
        let ep = Endpoints { zk: members, ..endpoints() };
        let r = host_rules(0, &[NetFault::IsolateZk { server: 0 }], &ep);
        assert_eq!(
            r.output,
            vec![
                "ip daddr 10.9.8.210 tcp dport 2181 drop",
                "ip daddr 10.9.8.211 tcp dport 2181 drop",
                "ip daddr 10.9.8.212 tcp dport 2181 drop"
            ]
        );
        assert_eq!(r.input.len(), 3);
        let p = host_rules(0, &[NetFault::Partition { server: 0 }], &ep);
        assert_eq!(p.output.len(), 5, "three members, Redis, the peers: {p:?}");
        let sql = Some(SocketAddrV4::new(Ipv4Addr::new(10, 9, 8, 204), 3306));
        let q = host_rules(0, &[NetFault::Partition { server: 0 }], &Endpoints { sql, ..ep });
        assert!(q.output.contains(&"ip daddr 10.9.8.204 tcp dport 3306 drop".to_string()), "{q:?}");
    }

    #[test]
    fn loss_drops_a_share_each_way() {
        let r = host_rules(0, &[NetFault::Loss { server: 0, percent: 20 }], &endpoints());
        assert_eq!(r.input, vec!["numgen random mod 100 < 20 drop"]);
        assert_eq!(r.output, r.input);
    }

    #[test]
    fn the_script_replaces_the_table_in_one_transaction() {
        let r = host_rules(0, &[NetFault::IsolateZk { server: 0 }], &endpoints());
        let s = render(&r);
        assert!(s.starts_with("table inet sandtable\ndelete table inet sandtable\ntable inet sandtable {\n"));
        assert!(s.contains(
            "type filter hook input priority 0; policy accept;\n    ip saddr 10.9.8.200 tcp sport 2181 drop\n"
        ));
        assert!(s.ends_with("  }\n}\n"));
        let empty = render(&Rules::default());
        assert!(!empty.contains("drop"), "{empty}");
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_every_fault_ends_by_the_heal() {
        let run = |seed| {
            let mut s = NetSchedule::new(seed, config(&NetFaultKind::ALL));
            let mut events = Vec::new();
            for t in (0..=25_000u64).step_by(50) {
                events.extend(s.step(t * 1_000_000));
            }
            (events, s.active().count())
        };
        let (a, left) = run(7);
        assert_eq!(a, run(7).0);
        assert_ne!(a, run(8).0);
        assert_eq!(left, 0, "every fault ended");
        let starts = a.iter().filter(|e| matches!(e, NetEvent::Start { .. })).count();
        let ends = a.iter().filter(|e| matches!(e, NetEvent::End { .. })).count();
        assert_eq!(starts, 9, "one every 2 s before the heal at 20 s: {a:?}");
        assert_eq!(starts, ends);
        for e in &a {
            if let NetEvent::Start { for_ns, .. } = e {
                assert!(*for_ns <= 5_000_000_000);
            }
        }
    }

    #[test]
    fn only_the_chosen_kinds_are_drawn_and_a_cut_link_joins_two_servers() {
        let mut s = NetSchedule::new(3, config(&[NetFaultKind::CutLink]));
        let mut n = 0;
        for t in (0..20_000u64).step_by(100) {
            for e in s.step(t * 1_000_000) {
                if let NetEvent::Start { fault, .. } = e {
                    n += 1;
                    match fault {
                        NetFault::CutLink { a, b } => assert!(a != b && a < 3 && b < 3),
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
        assert!(n > 0);
    }

    #[test]
    fn kinds_parse_from_their_names_and_an_unknown_name_says_which_exist() {
        for k in NetFaultKind::ALL {
            assert_eq!(NetFaultKind::parse(k.name()), Ok(k));
        }
        let e = NetFaultKind::parse("latency").unwrap_err();
        assert!(e.contains("partition, zk, one-way, cut, loss"), "{e}");
    }
}
