//! The services behind a live run's servers: ZooKeeper and Redis, on loopback, or with
//! `--net` each on a host of its own (ZooKeeper as one member or, with `--zk-ensemble`, a
//! quorum of [`ENSEMBLE_MEMBERS`]), and with `--mariadb` the topology's SQL instances as
//! databases of one MariaDB server on a host of its own (else SQLite files in the run's
//! directory); and the driver that carries out the service faults of [`servicefaults`] on
//! them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use scenarios::Topology;

use super::netns::{NetLab, ServiceHost};
use super::servicefaults::{self, Action, ServiceFaultKind, ServiceFaultPlan, ServiceSchedule, Target};
use super::{netfaults, secs, ClusterError};
use crate::services::{PrivateMariaDb, PrivateRedis, PrivateZk, ZkEnsemble, ZkMember, ZkMode};

/// Members of `--zk-ensemble`'s ZooKeeper.
pub const ENSEMBLE_MEMBERS: usize = 3;
/// Where Redis serves on its own host.
pub const REDIS_PORT: u16 = 6379;
/// Where MariaDB serves on its own host.
pub const SQL_PORT: u16 = 3306;
/// How long a service fault aimed at the leader (or a follower) waits for a member to answer
/// in that role (one may be electing after the previous fault) before it is skipped.
pub const ROLE_WAIT: Duration = Duration::from_secs(5);
/// How long the heal waits for every ZooKeeper member to serve again before the heal phase.
pub const HEAL_SERVE_WAIT: Duration = Duration::from_secs(20);

/// The hosts of the ZooKeeper members (`zk-1`, ...), of Redis and of the SQL server, each at
/// the same address in every run that has it (`examples/deploy/hosts.json`'s).
const ZK_HOSTS: [ServiceHost; ENSEMBLE_MEMBERS] = [
    ServiceHost { name: "zk-1", id: "z1", last_octet: 200 },
    ServiceHost { name: "zk-2", id: "z2", last_octet: 201 },
    ServiceHost { name: "zk-3", id: "z3", last_octet: 202 },
];
const REDIS_HOST: ServiceHost = ServiceHost { name: "redis", id: "r", last_octet: 203 };
const SQL_HOST: ServiceHost = ServiceHost { name: "sql", id: "q", last_octet: 204 };

/// A run's ZooKeeper.
pub(super) enum Zk {
    /// On loopback (without `--net`).
    Local(PrivateZk),
    /// Members on hosts of their own.
    Hosts(ZkEnsemble),
}

/// A run's services.
pub(super) struct Backing {
    pub zk: Option<Zk>,
    pub redis: Option<PrivateRedis>,
    /// `--mariadb`: the server holding the SQL instances.
    pub sql: Option<PrivateMariaDb>,
}

impl Backing {
    /// The service hosts a `--net` run of `topo` needs: `members` ZooKeeper members (if it uses
    /// ZooKeeper), then Redis (if it uses Redis), then the SQL host (if it has SQL instances
    /// and `mariadb`).
    pub fn hosts(topo: &Topology, members: usize, mariadb: bool) -> Vec<ServiceHost> {
        let mut v = Vec::new();
        if topo.zookeeper {
            v.extend(ZK_HOSTS.iter().take(members).copied());
        }
        if topo.redis.is_some() {
            v.push(REDIS_HOST);
        }
        if mariadb && topo.sql.is_some() {
            v.push(SQL_HOST);
        }
        v
    }

    /// Starts `topo`'s services: on loopback without `lab`, else on its service hosts.
    pub fn start(topo: &Topology, lab: Option<&NetLab>, members: usize) -> Result<Backing, ClusterError> {
        let Some(lab) = lab else {
            let zk = if topo.zookeeper {
                Some(Zk::Local(PrivateZk::start_on(Ipv4Addr::LOCALHOST)?))
            } else {
                None
            };
            let redis = match &topo.redis {
                Some(spec) => Some(PrivateRedis::start_on(Ipv4Addr::LOCALHOST, spec.persistent)?),
                None => None,
            };
            return Ok(Backing { zk, redis, sql: None });
        };
        let zk = if topo.zookeeper {
            let hosts = ZK_HOSTS
                .iter()
                .take(members)
                .map(|s| {
                    let h = lab.service(s.name).expect("the lab was made with Backing::hosts");
                    ZkMember { prefix: lab.prefix_for(h), ip: h.ip }
                })
                .collect();
            Some(Zk::Hosts(ZkEnsemble::start(hosts)?))
        } else {
            None
        };
        let redis = match &topo.redis {
            Some(spec) => {
                let h = lab.service(REDIS_HOST.name).expect("the lab was made with Backing::hosts");
                let addr = SocketAddr::from((h.ip, REDIS_PORT));
                Some(PrivateRedis::start_in(lab.prefix_for(h), addr, spec.persistent)?)
            }
            None => None,
        };
        let sql = match (lab.service(SQL_HOST.name), &topo.sql) {
            (Some(h), Some(spec)) => {
                let addr = SocketAddr::from((h.ip, SQL_PORT));
                let dbs: Vec<String> = (0..spec.instances).map(database).collect();
                Some(PrivateMariaDb::start_in(lab.prefix_for(h), addr, &dbs)?)
            }
            _ => None,
        };
        Ok(Backing { zk, redis, sql })
    }

    /// The `NAME=URL` of each of the run's `n` SQL instances (the simulator's names,
    /// `db-0`..): databases `db_0`.. of the MariaDB server, or SQLite files `db-{i}.sqlite` in
    /// `dir`.
    pub fn sql_urls(&self, n: usize, dir: &std::path::Path) -> Vec<String> {
        (0..n)
            .map(|i| match &self.sql {
                Some(m) => format!("db-{i}={}", m.url_of(&database(i))),
                None => format!("db-{i}=sqlite://{}/db-{i}.sqlite", dir.display()),
            })
            .collect()
    }

    /// The servers' and clients' ZooKeeper connect string (an address nothing listens on
    /// without ZooKeeper: its calls fail).
    pub fn zk_connect(&self) -> String {
        match &self.zk {
            Some(Zk::Local(z)) => z.connect_string(),
            Some(Zk::Hosts(e)) => e.connect_string(),
            None => "127.0.0.1:1".to_string(),
        }
    }

    /// The Redis URL (an address nothing listens on without Redis).
    pub fn redis_url(&self) -> String {
        self.redis.as_ref().map_or_else(|| "redis://127.0.0.1:1".to_string(), PrivateRedis::url)
    }

    /// Every ZooKeeper member's and Redis's address, for the servers' partition rules.
    pub fn endpoints(&self, servers: Vec<Ipv4Addr>) -> netfaults::Endpoints {
        let v4 = |a: SocketAddr| match a {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        };
        let zk = match &self.zk {
            Some(Zk::Hosts(e)) => e.addrs(),
            Some(Zk::Local(z)) => v4(z.addr()).into_iter().collect(),
            None => Vec::new(),
        };
        netfaults::Endpoints {
            servers,
            zk,
            redis: self.redis.as_ref().and_then(|r| v4(r.addr())),
            sql: self.sql.as_ref().and_then(|m| v4(m.addr())),
        }
    }

    fn ensemble(&mut self) -> Option<&mut ZkEnsemble> {
        match &mut self.zk {
            Some(Zk::Hosts(e)) => Some(e),
            _ => None,
        }
    }
}

/// Checks the service-fault kinds asked for against what the run has.
pub(super) fn check_kinds(
    kinds: &[ServiceFaultKind],
    topo: &Topology,
    members: usize,
    mariadb: bool,
) -> Result<(), ClusterError> {
    for k in kinds {
        let why = if k.is_zk() && !topo.zookeeper {
            Some("the scenario uses no ZooKeeper")
        } else if k.needs_ensemble() && members < ENSEMBLE_MEMBERS {
            Some("it needs followers: add --zk-ensemble")
        } else if k.target == Target::Redis && topo.redis.is_none() {
            Some("the scenario uses no Redis")
        } else if k.target == Target::Sql && !(mariadb && topo.sql.is_some()) {
            Some("it needs a SQL server: a scenario with SQL instances, run with --mariadb")
        } else if k.target == Target::Redis
            && k.action == Action::Kill
            && !topo.redis.as_ref().is_some_and(|r| r.persistent)
        {
            Some("the scenario's Redis keeps nothing across a restart (no append-only file)")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ClusterError::Args(format!("service fault {}: {why}", k.name())));
        }
    }
    Ok(())
}

/// One service fault of a run, as applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceFaultRecord {
    /// Seconds into the run (true time) when it was applied.
    pub at_secs: f64,
    /// How long it lasted (until its end was carried out).
    pub for_secs: f64,
    pub kind: ServiceFaultKind,
    /// `kill -9 zk-2 (leader)`, `isolate redis`, ...
    pub description: String,
}

/// A member or Redis, as a fault's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Zk(usize),
    Redis,
    Sql,
}

struct Active {
    kind: ServiceFaultKind,
    victims: Vec<Victim>,
    ends_ns: u64,
    record: usize,
}

/// The service faults of a run as they happen.
pub(super) struct ServiceFaults<'a> {
    lab: &'a NetLab,
    schedule: ServiceSchedule,
    heal_ns: u64,
    /// A fault whose target did not answer yet, and since when.
    waiting: Option<(ServiceFaultPlan, u64)>,
    active: Option<Active>,
    pub records: Vec<ServiceFaultRecord>,
    /// Faults skipped because no member answered in the role they aim at within [`ROLE_WAIT`].
    pub skipped: u64,
}

impl<'a> ServiceFaults<'a> {
    pub fn new(lab: &'a NetLab, schedule: ServiceSchedule, heal_ns: u64) -> Self {
        ServiceFaults { lab, schedule, heal_ns, waiting: None, active: None, records: Vec::new(), skipped: 0 }
    }

    /// Carries out what is due at `now`: the end of the active fault (at the heal at the
    /// latest), then a new one. Blocking (process signals, `srvr` questions, relaunches): call
    /// it from `block_in_place`.
    pub fn step(&mut self, now: u64, backing: &mut Backing) -> Result<(), ClusterError> {
        if let Some(a) = &self.active {
            if now >= a.ends_ns.min(self.heal_ns) {
                let a = self.active.take().expect("checked");
                self.end(a, now, backing)?;
            }
        }
        let idle = self.active.is_none() && self.waiting.is_none();
        if let Some(plan) = self.schedule.step(now, idle) {
            self.waiting = Some((plan, now));
        }
        if let Some((plan, since)) = self.waiting {
            if now >= self.heal_ns {
                self.waiting = None;
                return Ok(());
            }
            match self.victims(plan, backing) {
                Some((victims, roles)) => {
                    self.waiting = None;
                    self.apply(plan, victims, &roles, now, backing)?;
                }
                None if now.saturating_sub(since) >= super::schedule::nanos(ROLE_WAIT) => {
                    self.waiting = None;
                    self.skipped += 1;
                    println!(
                        "service fault at {:.2}s skipped: {} found no member in its role within {ROLE_WAIT:?}",
                        secs(now),
                        plan.kind.name()
                    );
                }
                None => {}
            }
        }
        Ok(())
    }

    /// After the heal: every ZooKeeper member is running and serves (or the members that do
    /// not after [`HEAL_SERVE_WAIT`], by name).
    pub fn heal(&mut self, now: u64, backing: &mut Backing) -> Result<Vec<String>, ClusterError> {
        if let Some(a) = self.active.take() {
            self.end(a, now, backing)?;
        }
        let Some(e) = backing.ensemble() else { return Ok(Vec::new()) };
        for i in 0..e.len() {
            if !e.is_running(i) {
                e.relaunch(i)?;
            }
        }
        Ok(e.wait_serving(HEAL_SERVE_WAIT).into_iter().map(ZkEnsemble::name).collect())
    }

    /// The members (or Redis) `plan` aims at now, with the role each was found in; `None`
    /// while no member answers in that role.
    fn victims(
        &self,
        plan: ServiceFaultPlan,
        backing: &mut Backing,
    ) -> Option<(Vec<Victim>, Vec<&'static str>)> {
        match plan.kind.target {
            Target::Redis => return Some((vec![Victim::Redis], vec![""])),
            Target::Sql => return Some((vec![Victim::Sql], vec![""])),
            _ => {}
        }
        // One question to each member, whatever the fault aims at.
        let modes = backing.ensemble()?.modes();
        let leader = ZkMode::leader_of(&modes)?;
        let leader_role = modes[leader].map_or("", ZkMode::name);
        let follower = || {
            let f = ZkMode::followers_of(&modes);
            (!f.is_empty()).then(|| f[(plan.pick % f.len() as u64) as usize])
        };
        match plan.kind.target {
            Target::ZkLeader => Some((vec![Victim::Zk(leader)], vec![leader_role])),
            Target::ZkFollower => follower().map(|f| (vec![Victim::Zk(f)], vec!["follower"])),
            Target::ZkQuorum => {
                follower().map(|f| (vec![Victim::Zk(leader), Victim::Zk(f)], vec![leader_role, "follower"]))
            }
            Target::Redis | Target::Sql => unreachable!("answered above"),
        }
    }

    fn apply(
        &mut self,
        plan: ServiceFaultPlan,
        victims: Vec<Victim>,
        roles: &[&str],
        now: u64,
        backing: &mut Backing,
    ) -> Result<(), ClusterError> {
        for v in &victims {
            match (plan.kind.action, v) {
                (Action::Kill, Victim::Zk(i)) => backing.ensemble().expect("aimed at a member").kill(*i),
                (Action::Pause, Victim::Zk(i)) => backing.ensemble().expect("aimed at a member").pause(*i),
                (Action::Kill, Victim::Redis) => backing.redis.as_mut().expect("checked").stop(),
                (Action::Pause, Victim::Redis) => backing.redis.as_ref().expect("checked").pause(),
                (Action::Kill, Victim::Sql) => backing.sql.as_mut().expect("checked").stop(),
                (Action::Pause, Victim::Sql) => backing.sql.as_ref().expect("checked").pause(),
                (Action::Isolate, v) => self
                    .lab
                    .load_host_rules(self.host(*v), &netfaults::render(&servicefaults::isolation_rules()))?,
            }
        }
        let verb = match plan.kind.action {
            Action::Kill => "kill -9",
            Action::Pause => "SIGSTOP",
            Action::Isolate => "isolate",
        };
        let who: Vec<String> = victims
            .iter()
            .zip(roles)
            .map(|(v, role)| match v {
                Victim::Zk(i) => format!("{} ({role})", ZkEnsemble::name(*i)),
                Victim::Redis => "redis".to_string(),
                Victim::Sql => "sql (MariaDB)".to_string(),
            })
            .collect();
        let description = format!("{verb} {}", who.join(" and "));
        let for_ns = plan.for_ns.min(self.heal_ns.saturating_sub(now));
        println!("service fault at {:.2}s for {:.2}s: {description}", secs(now), secs(for_ns));
        self.records.push(ServiceFaultRecord {
            at_secs: secs(now),
            for_secs: secs(for_ns),
            kind: plan.kind,
            description,
        });
        self.active =
            Some(Active { kind: plan.kind, victims, ends_ns: now + for_ns, record: self.records.len() - 1 });
        Ok(())
    }

    fn end(&mut self, a: Active, now: u64, backing: &mut Backing) -> Result<(), ClusterError> {
        for v in &a.victims {
            match (a.kind.action, v) {
                (Action::Kill, Victim::Zk(i)) => {
                    backing.ensemble().expect("aimed at a member").relaunch(*i)?
                }
                (Action::Pause, Victim::Zk(i)) => backing.ensemble().expect("aimed at a member").resume(*i),
                (Action::Kill, Victim::Redis) => backing.redis.as_mut().expect("checked").restart()?,
                (Action::Pause, Victim::Redis) => backing.redis.as_ref().expect("checked").resume(),
                (Action::Kill, Victim::Sql) => backing.sql.as_mut().expect("checked").restart()?,
                (Action::Pause, Victim::Sql) => backing.sql.as_ref().expect("checked").resume(),
                (Action::Isolate, v) => {
                    self.lab.load_host_rules(self.host(*v), &netfaults::render(&Default::default()))?
                }
            }
        }
        let r = &mut self.records[a.record];
        r.for_secs = secs(now) - r.at_secs;
        Ok(())
    }

    fn host(&self, v: Victim) -> &super::netns::Host {
        let name = match v {
            Victim::Zk(i) => ZK_HOSTS[i].name,
            Victim::Redis => REDIS_HOST.name,
            Victim::Sql => SQL_HOST.name,
        };
        self.lab.service(name).expect("every service runs on a host of the lab")
    }
}

/// The MariaDB database of SQL instance `db-{i}` (`db_{i}`: a hyphen would need quoting).
fn database(i: usize) -> String {
    format!("db_{i}")
}
