//! `membership`: game servers with tags join the cluster on ZooKeeper, change tags and shared
//! status, crash, restart, and get partitioned from ZooKeeper and from each other, under
//! clock faults — while every server keeps observing its peer view.
//!
//! Invariants:
//! - **safety** — a peer view never contains a server that never registered, and the tags
//!   and status a view shows for a peer are a state that peer actually published;
//! - **liveness** — within the bound after the heal, every live server's view is exactly the
//!   set of live registered servers with their latest tags and status, and the least-loaded
//!   selection (`room_count` among `game` servers) picks a correct minimum.
//!
//! Planted bug `stale-view`: after a session reconnect or re-registration, the cluster layer
//! ignores watch events, so views silently freeze.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::cluster::{Cluster, ClusterBugs, ClusterConfig, PeerId, ViewState};
use engine::env::{RandExt, SessionOptions};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Value};

use crate::checker::Report;
use crate::evidence::{Evidence, EvidenceTap};
use crate::faults::FaultSpace;
use crate::history::{ProcessId, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, Scenario, ScenarioMeta, ScenarioRun, ServerCtx, ServerSpec,
    Topology,
};

pub(crate) const APP_ID: &str = "sandtable";
const SERVERS: usize = 6;
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// Client-facing port every server announces (what clients would connect to).
const TCP_JSON_PORT: u16 = 8012;

const BUGS: &[PlantedBug] = &[PlantedBug {
    name: "stale-view",
    description: "after a reconnect or re-registration the cluster ignores watch events (views freeze)",
    caught_within_seeds: 30,
}];

/// The servers of the membership and rpc scenarios: `game-0`, `pvp-1`, `game-2`, ...
pub(crate) fn servers(n: usize) -> Vec<ServerSpec> {
    (0..n)
        .map(|i| {
            let flavor = if i % 2 == 0 { "game" } else { "pvp" };
            ServerSpec {
                name: format!("{flavor}-{i}"),
                flavor: Some(flavor.to_string()),
                tags: vec![flavor.to_string(), format!("shard-{}", i % 3)],
            }
        })
        .collect()
}

/// The cluster config of a server node.
pub(crate) fn cluster_config(ctx: &ServerCtx, rpc_port: u16, bugs: ClusterBugs) -> ClusterConfig {
    let ip = ctx.env.net.local_ip();
    ClusterConfig {
        app_id: APP_ID.to_string(),
        name: ctx.spec.name.clone(),
        flavor: ctx.spec.flavor.clone(),
        tags: ctx.spec.tags.iter().cloned().collect(),
        rpc_addr: SocketAddr::new(ip, rpc_port),
        external_ip: ip,
        external_ports: [("tcp_json".to_string(), TCP_JSON_PORT)].into_iter().collect(),
        session: SessionOptions { session_timeout: SESSION_TIMEOUT, connect_timeout: Duration::from_secs(5) },
        // One identity per incarnation, kept across join retries.
        peer_id: Some(PeerId::new_random(&*ctx.env.rand)),
        bugs,
    }
}

/// Joins, retrying until it works or the run ends.
pub(crate) async fn join_retrying(ctx: &ServerCtx, cfg: &ClusterConfig) -> Option<Cluster> {
    while !ctx.phases.finished() {
        match Cluster::join(ctx.env.clone(), cfg.clone()).await {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::info!(error = %e, "join failed; retrying");
                ctx.env.clock.sleep(Duration::from_millis(500)).await;
            }
        }
    }
    None
}

pub struct Membership;

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "cluster: view stale while disconnected",
    "cluster: view stale until a reload succeeds",
    "cluster: session reconnected, watches re-armed by a catch-up",
    "cluster: session expired, re-registering under the same id",
    "cluster: re-registered on a new session",
    "zk: re-registered watches fired for changes missed while disconnected",
    "zk: session expired at the service",
];

/// Runs live too: every registration, publication and look at a view is also reported as
/// [`Evidence`] (`PeerRegistered`, `PeerPublished`, `PeerView`).
const META: ScenarioMeta = ScenarioMeta {
    name: "membership",
    description:
        "servers with tags and shared status join/crash/restart under ZooKeeper partitions and clock faults",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

impl Scenario for Membership {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, _bug: Option<&str>) -> Topology {
        Topology { zookeeper: true, redis: None, sql: None, servers: servers(SERVERS), clients: 0 }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        FaultSpace::builder(topology, 20_000, 20_000)
            .liveness_bound_ms(15_000)
            .faults(3, 10, 12_000)
            .kill(&[Nodes::Servers])
            .pause(&[Nodes::All])
            .partition(&[Nodes::All])
            .clock(&[Nodes::All], 10_000, 20_000)
            .network()
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run {
            stale_view: bug == Some("stale-view"),
            now,
            log: Arc::new(Mutex::new(Log::default())),
        })
    }
}

/// A server's published state: tags and status.
type PeerState = (BTreeSet<String>, Value);

/// One look at a server's peer view.
#[derive(Debug, Clone)]
struct Observation {
    observer: PeerId,
    at_ns: u64,
    stale: bool,
    view: BTreeMap<PeerId, PeerState>,
    least_loaded_game: Option<PeerId>,
}

#[derive(Default)]
struct Log {
    /// Every PeerId that registered, with its server name and process.
    registered: BTreeMap<PeerId, (String, ProcessId, u64)>,
    /// Every state each peer published (before publishing it).
    published: BTreeMap<PeerId, Vec<PeerState>>,
    observations: Vec<Observation>,
}

struct Run {
    stale_view: bool,
    now: TimeSource,
    log: Arc<Mutex<Log>>,
}

impl Run {
    fn record_published(&self, tap: &Option<EvidenceTap>, peer: PeerId, state: PeerState) {
        if let Some(tap) = tap {
            tap(&Evidence::PeerPublished { peer, tags: state.0.clone(), status: state.1.clone() });
        }
        self.log.lock().expect("log").published.entry(peer).or_default().push(state);
    }
}

fn observe(cluster: &Cluster, at_ns: u64) -> Observation {
    let view = cluster.peers(true).into_iter().map(|(id, info)| (id, (info.tags, info.status))).collect();
    Observation {
        observer: cluster.id(),
        at_ns,
        stale: !matches!(cluster.view_state(), ViewState::Live),
        view,
        least_loaded_game: cluster.least_loaded("game", "room_count", true),
    }
}

impl ScenarioRun for Run {
    fn client(&self, _ctx: ClientCtx) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        let this = Run { stale_view: self.stale_view, now: self.now.clone(), log: self.log.clone() };
        async move {
            let cfg = cluster_config(&ctx, 8015, ClusterBugs { stale_view: this.stale_view });
            let me = cfg.peer_id.expect("set by cluster_config");
            let mut tags = cfg.tags.clone();
            let mut status = Value::Null;
            let tap = ctx.tap.clone();
            // Recorded before joining: a join may register and still fail.
            let t_ns = (this.now)();
            if let Some(tap) = &tap {
                tap(&Evidence::PeerRegistered {
                    peer: me,
                    name: ctx.spec.name.clone(),
                    server: ctx.process,
                    t_ns,
                });
            }
            this.log.lock().expect("log").registered.insert(me, (ctx.spec.name.clone(), ctx.process, t_ns));
            this.record_published(&tap, me, (tags.clone(), status.clone()));
            let Some(cluster) = join_retrying(&ctx, &cfg).await else { return };
            status = json!({ "room_count": ctx.env.rand.gen_range(0..100) });
            this.record_published(&tap, me, (tags.clone(), status.clone()));
            let _ = cluster.set_status(status.clone()).await;
            while !ctx.phases.finished() {
                ctx.env.clock.sleep(Duration::from_millis(ctx.env.rand.gen_range(200..600))).await;
                // Mutations only during chaos: the heal phase must converge to a fixed truth.
                // One operation: a status change, a tag added or a tag removed.
                if !ctx.phases.healed() {
                    match ctx.env.rand.gen_range(0..10) {
                        0..=3 if ctx.budget.take() => {
                            status = json!({ "room_count": ctx.env.rand.gen_range(0..100) });
                            this.record_published(&tap, me, (tags.clone(), status.clone()));
                            let _ = cluster.set_status(status.clone()).await;
                        }
                        4 | 5 => {
                            let tag = format!("extra-{}", ctx.env.rand.gen_range(0..3));
                            if !tags.contains(&tag) && ctx.budget.take() {
                                tags.insert(tag.clone());
                                this.record_published(&tap, me, (tags.clone(), status.clone()));
                                let _ = cluster.add_tag(&tag).await;
                            }
                        }
                        6 => {
                            let extra: Vec<String> =
                                tags.iter().filter(|t| t.starts_with("extra-")).cloned().collect();
                            if let Some(tag) =
                                ctx.env.rand.choose(&extra).cloned().filter(|_| ctx.budget.take())
                            {
                                tags.remove(&tag);
                                this.record_published(&tap, me, (tags.clone(), status.clone()));
                                let _ = cluster.remove_tag(&tag).await;
                            }
                        }
                        _ => {}
                    }
                }
                let obs = observe(&cluster, (this.now)());
                if let Some(tap) = &tap {
                    tap(&Evidence::PeerView {
                        observer: obs.observer,
                        t_ns: obs.at_ns,
                        stale: obs.stale,
                        view: obs.view.clone(),
                        least_loaded_game: obs.least_loaded_game,
                    });
                }
                this.log.lock().expect("log").observations.push(obs);
            }
        }
        .boxed()
    }

    fn absorb(&self, evidence: Evidence) -> bool {
        let mut log = self.log.lock().expect("log");
        match evidence {
            Evidence::PeerRegistered { peer, name, server, t_ns } => {
                log.registered.insert(peer, (name, server, t_ns));
            }
            Evidence::PeerPublished { peer, tags, status } => {
                log.published.entry(peer).or_default().push((tags, status));
            }
            Evidence::PeerView { observer, t_ns, stale, view, least_loaded_game } => {
                log.observations.push(Observation { observer, at_ns: t_ns, stale, view, least_loaded_game })
            }
            _ => return false,
        }
        true
    }

    fn check(&self, _env: engine::env::Env, phases: Phases) -> BoxFuture<'static, Report> {
        let log = self.log.clone();
        async move {
            let log = log.lock().expect("log");
            check_membership(&log.registered, &log.published, &log.observations, &phases)
        }
        .boxed()
    }
}

fn check_membership(
    registered: &BTreeMap<PeerId, (String, ProcessId, u64)>,
    published: &BTreeMap<PeerId, Vec<PeerState>>,
    observations: &[Observation],
    phases: &Phases,
) -> Report {
    let mut report = Report::default();
    // Safety over every observation.
    let mut reported = BTreeSet::new();
    for o in observations {
        for (peer, state) in &o.view {
            if !registered.contains_key(peer) {
                if reported.insert(("unregistered", *peer)) {
                    report.violation(
                        "membership",
                        format!(
                            "{:?} saw {:?}, which never registered (t={:.3}s)",
                            o.observer,
                            peer,
                            o.at_ns as f64 / 1e9
                        ),
                    );
                }
            } else if !published.get(peer).is_some_and(|v| v.contains(state))
                && reported.insert(("state", *peer))
            {
                report.violation(
                    "membership",
                    format!(
                        "{:?} saw {:?} with tags {:?} status {} that it never published (t={:.3}s)",
                        o.observer,
                        peer,
                        state.0,
                        state.1,
                        o.at_ns as f64 / 1e9
                    ),
                );
            }
        }
    }
    // Liveness: the truth is the latest incarnation of every server.
    let mut latest: BTreeMap<&str, (u64, PeerId)> = BTreeMap::new();
    for (peer, (name, _p, t)) in registered {
        let e = latest.entry(name.as_str()).or_insert((*t, *peer));
        if *t >= e.0 {
            *e = (*t, *peer);
        }
    }
    let truth: BTreeMap<PeerId, PeerState> = latest
        .values()
        .filter_map(|(_, p)| published.get(p).and_then(|v| v.last()).map(|s| (*p, s.clone())))
        .collect();
    let expected_least = truth
        .iter()
        .filter(|(_, (tags, _))| tags.contains("game"))
        .filter_map(|(p, (_, st))| st.get("room_count").and_then(Value::as_i64).map(|rc| (rc, *p)))
        .min()
        .map(|(_, p)| p);
    let settle_ns = (phases.heal_at + phases.liveness_bound).as_nanos() as u64;
    for (peer, _) in truth.iter() {
        let last = observations.iter().rev().find(|o| o.observer == *peer);
        match last {
            Some(o) if o.at_ns >= settle_ns => {
                if o.view != truth {
                    let missing: Vec<_> = truth.keys().filter(|p| !o.view.contains_key(p)).collect();
                    let extra: Vec<_> = o.view.keys().filter(|p| !truth.contains_key(p)).collect();
                    let differ: Vec<_> = o
                        .view
                        .iter()
                        .filter(|(p, s)| truth.get(p).is_some_and(|t| t != *s))
                        .map(|(p, _)| p)
                        .collect();
                    report.liveness_violation(
                        "liveness",
                        format!(
                            "{:?}'s view at {:.3}s is not the live cluster: missing {missing:?}, extra {extra:?}, outdated {differ:?}",
                            o.observer,
                            o.at_ns as f64 / 1e9
                        ),
                    );
                } else if o.least_loaded_game != expected_least {
                    report.violation(
                        "least_loaded",
                        format!(
                            "{:?} picked {:?} as least-loaded game server; the minimum room_count is {:?}",
                            o.observer, o.least_loaded_game, expected_least
                        ),
                    );
                }
            }
            _ => report.liveness_violation(
                "liveness",
                format!("{peer:?} made no observation after the liveness bound"),
            ),
        }
    }
    report.count("membership.registrations", registered.len() as u64);
    report.count("membership.observations", observations.len() as u64);
    report.count("membership.stale_observations", observations.iter().filter(|o| o.stale).count() as u64);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u8) -> PeerId {
        PeerId(uuid::Uuid::from_bytes([n; 16]))
    }

    fn phases() -> Phases {
        Phases {
            now: Arc::new(|| 0),
            heal_at: Duration::from_secs(10),
            end_at: Duration::from_secs(30),
            liveness_bound: Duration::from_secs(10),
        }
    }

    fn state(tags: &[&str], rc: i64) -> PeerState {
        (tags.iter().map(|s| s.to_string()).collect(), json!({ "room_count": rc }))
    }

    struct Fixture {
        registered: BTreeMap<PeerId, (String, ProcessId, u64)>,
        published: BTreeMap<PeerId, Vec<PeerState>>,
    }

    fn fixture() -> Fixture {
        let mut registered = BTreeMap::new();
        registered.insert(pid(1), ("game-0".to_string(), 0, 0));
        registered.insert(pid(2), ("game-1".to_string(), 1, 0));
        let mut published = BTreeMap::new();
        published.insert(pid(1), vec![state(&["game"], 50), state(&["game"], 5)]);
        published.insert(pid(2), vec![state(&["game"], 7)]);
        Fixture { registered, published }
    }

    fn final_view(f: &Fixture) -> BTreeMap<PeerId, PeerState> {
        f.published.iter().map(|(p, v)| (*p, v.last().unwrap().clone())).collect()
    }

    fn obs(
        observer: PeerId,
        at_s: u64,
        view: BTreeMap<PeerId, PeerState>,
        least: Option<PeerId>,
    ) -> Observation {
        Observation { observer, at_ns: at_s * 1_000_000_000, stale: false, view, least_loaded_game: least }
    }

    #[test]
    fn converged_views_pass() {
        let f = fixture();
        let v = final_view(&f);
        let o = vec![obs(pid(1), 25, v.clone(), Some(pid(1))), obs(pid(2), 25, v, Some(pid(1)))];
        let r = check_membership(&f.registered, &f.published, &o, &phases());
        assert!(r.ok(), "{r:?}");
    }

    #[test]
    fn unregistered_peer_in_view_fails() {
        let f = fixture();
        let mut v = final_view(&f);
        v.insert(pid(9), state(&["game"], 1));
        let o = vec![obs(pid(1), 5, v, None)];
        let r = check_membership(&f.registered, &f.published, &o, &phases());
        assert!(r.violations.iter().any(|v| v.message.contains("never registered")), "{r:?}");
    }

    #[test]
    fn unpublished_state_fails() {
        let f = fixture();
        let mut v = final_view(&f);
        v.insert(pid(2), state(&["game"], 99));
        let o = vec![obs(pid(1), 5, v, None)];
        let r = check_membership(&f.registered, &f.published, &o, &phases());
        assert!(r.violations.iter().any(|v| v.message.contains("never published")), "{r:?}");
    }

    #[test]
    fn stale_final_view_fails() {
        let f = fixture();
        let good = final_view(&f);
        let mut stale = good.clone();
        stale.insert(pid(1), state(&["game"], 50));
        let o = vec![obs(pid(1), 25, good, Some(pid(1))), obs(pid(2), 25, stale, Some(pid(1)))];
        let r = check_membership(&f.registered, &f.published, &o, &phases());
        assert!(r.violations.iter().any(|v| v.checker == "liveness"), "{r:?}");
    }

    #[test]
    fn wrong_least_loaded_fails() {
        let f = fixture();
        let v = final_view(&f);
        let o = vec![obs(pid(1), 25, v.clone(), Some(pid(2))), obs(pid(2), 25, v, Some(pid(1)))];
        let r = check_membership(&f.registered, &f.published, &o, &phases());
        assert!(r.violations.iter().any(|v| v.checker == "least_loaded"), "{r:?}");
    }

    #[test]
    fn missing_late_observation_fails() {
        let f = fixture();
        let v = final_view(&f);
        let o = vec![obs(pid(1), 25, v.clone(), Some(pid(1))), obs(pid(2), 12, v, Some(pid(1)))];
        let r = check_membership(&f.registered, &f.published, &o, &phases());
        assert!(!r.ok());
    }
}
