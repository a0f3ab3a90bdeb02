//! `engine::cluster` under the simulator: membership, tags, status, crashes, partitions from
//! ZooKeeper, session expiry and re-registration, and the planted `stale_view` bug.
//!
//! Nodes of every test:
//!
//! | node | address | what |
//! |---|---|---|
//! | `zk` | 10.0.0.1:2181 | simulated ZooKeeper (tickTime 2 s) |
//! | `game-N` | 10.0.1.N | a server that joins app `sandtable_test` and then serves commands |
//!
//! Each simulation runs on a fresh OS thread (std's `HashMap` seeding must happen on a thread
//! that has not built one yet, or two runs of one seed could differ).

use sim::testkit::{node_env, now_ms, sleep_ms};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::cluster::{
    Cluster, ClusterBugs, ClusterConfig, PeerDirectory, PeerId, StaleReason, ViewChange, ViewState,
};
use engine::env::SessionOptions;
use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use serde_json::json;
use sim::adapters::ClockControl;

const APP: &str = "sandtable_test";
/// Requested session timeout; the service grants it as is (within `[4 s, 40 s]`).
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any propagation may take in a healthy cluster (a few round trips).
const PROPAGATION_MAX: Duration = Duration::from_secs(2);
/// How long a vanished server may linger: the session timeout plus the service's expiry
/// sweep and the notification (generous; the assertions about *early* removal use less).
const EXPIRY_MAX: Duration = Duration::from_secs(12);

fn server_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n))
}

/// A running server incarnation: its cluster handle and a way to run tasks on its node.
#[derive(Clone)]
struct Server {
    cluster: Cluster,
    exec: mpsc::UnboundedSender<BoxFuture<'static, ()>>,
}

/// What a server is started with.
#[derive(Clone)]
struct Spec {
    n: u8,
    tags: Vec<&'static str>,
    bugs: ClusterBugs,
}

impl Spec {
    fn new(n: u8, tags: &[&'static str]) -> Spec {
        Spec { n, tags: tags.to_vec(), bugs: ClusterBugs::default() }
    }
    fn name(&self) -> String {
        format!("game-{}", self.n)
    }
    fn config(&self) -> ClusterConfig {
        let mut cfg = ClusterConfig::new(APP, self.name(), SocketAddr::new(server_ip(self.n), 7000));
        cfg.flavor = Some("game".to_string());
        cfg.tags = self.tags.iter().map(|t| t.to_string()).collect();
        cfg.external_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, self.n));
        cfg.external_ports =
            BTreeMap::from([("tcp_json".to_string(), 8012), ("websocket_json".to_string(), 8018)]);
        cfg.session =
            SessionOptions { session_timeout: SESSION_TIMEOUT, connect_timeout: Duration::from_secs(3) };
        cfg.bugs = self.bugs;
        cfg
    }
}

type Registry = Arc<Mutex<BTreeMap<String, Server>>>;

struct World {
    handle: Handle,
    clocks: ClockControl,
    zk: NodeId,
    nodes: BTreeMap<String, NodeId>,
    registry: Registry,
}

impl World {
    fn new(handle: Handle) -> World {
        let clocks = ClockControl::new();
        let zk = sim::testkit::start_zk(&handle, &clocks);
        World { handle, clocks, zk, nodes: BTreeMap::new(), registry: Registry::default() }
    }

    /// Starts a server node that joins and then runs what `exec` sends it; waits for the join.
    async fn start(&mut self, spec: Spec) -> Server {
        let name = spec.name();
        let (clocks, registry, node_name) = (self.clocks.clone(), self.registry.clone(), name.clone());
        let id = self
            .handle
            .create_node()
            .name(&name)
            .ip(server_ip(spec.n))
            .init(move || {
                let env = node_env(&node_name, server_ip(spec.n), &clocks);
                let (cfg, registry, name) = (spec.config(), registry.clone(), node_name.clone());
                async move {
                    let cluster = Cluster::join(env, cfg).await.expect("join");
                    let (exec, mut rx) = mpsc::unbounded::<BoxFuture<'static, ()>>();
                    registry.lock().unwrap().insert(name, Server { cluster, exec });
                    while let Some(f) = rx.next().await {
                        madsim::task::spawn(f);
                    }
                }
            })
            .build()
            .id();
        self.nodes.insert(name.clone(), id);
        self.wait_incarnation(&name, None).await
    }

    /// Waits until `name` has joined with an id other than `not`.
    async fn wait_incarnation(&self, name: &str, not: Option<PeerId>) -> Server {
        for _ in 0..200 {
            if let Some(s) = self.registry.lock().unwrap().get(name) {
                if Some(s.cluster.id()) != not {
                    return s.clone();
                }
            }
            sleep_ms(100).await;
        }
        panic!("{name} did not join");
    }

    fn server(&self, name: &str) -> Server {
        self.registry.lock().unwrap().get(name).cloned().expect("server started")
    }

    fn node(&self, name: &str) -> NodeId {
        self.nodes[name]
    }

    fn cut_from_zk(&self, name: &str) {
        let net = madsim::net::NetSim::current();
        net.clog_link(self.node(name), self.zk);
        net.clog_link(self.zk, self.node(name));
    }

    fn heal_zk(&self, name: &str) {
        let net = madsim::net::NetSim::current();
        net.unclog_link(self.node(name), self.zk);
        net.unclog_link(self.zk, self.node(name));
    }
}

impl Server {
    /// Runs `f` as a task of this server's node (so its I/O comes from that node).
    async fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        let rx = self.spawn(f);
        rx.await.expect("server task dropped")
    }

    /// Starts `f` on this server's node without waiting for it.
    fn spawn<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.exec
            .unbounded_send(
                async move {
                    let _ = tx.send(f.await);
                }
                .boxed(),
            )
            .expect("server node is running");
        rx
    }

    fn others(&self) -> BTreeSet<PeerId> {
        self.cluster.peers(false).into_keys().collect()
    }
}

/// Polls `cond` every 100 ms for at most `within`; true once it holds.
async fn eventually(within: Duration, cond: impl FnMut() -> bool) -> bool {
    sim::testkit::eventually_every(Duration::from_millis(100), within, cond).await
}

/// Runs one simulation of `seed` (see `sim::testkit::simulate`).
fn simulate<T: Send + 'static, Fut: Future<Output = T>>(
    seed: u64,
    f: impl FnOnce(World) -> Fut + Send + 'static,
) -> T {
    sim::testkit::simulate(seed, World::new, f)
}

fn tags(ts: &[&str]) -> BTreeSet<String> {
    ts.iter().map(|t| t.to_string()).collect()
}

/// Starts game-1 (lobby, master), game-2 (lobby), game-3 (pvp) and waits until all see all.
async fn three(w: &mut World) -> [Server; 3] {
    let a = w.start(Spec::new(1, &["lobby", "master"])).await;
    let b = w.start(Spec::new(2, &["lobby"])).await;
    let c = w.start(Spec::new(3, &["pvp"])).await;
    let all = [a.clone(), b.clone(), c.clone()];
    let ok = eventually(PROPAGATION_MAX, || all.iter().all(|s| s.cluster.peers(true).len() == 3)).await;
    assert!(ok, "three servers never saw each other");
    [a, b, c]
}

#[test]
fn three_servers_see_each_other_with_tags_and_ports() {
    simulate(1, |mut w| async move {
        let [a, b, c] = three(&mut w).await;
        let ids: BTreeSet<PeerId> = [a.cluster.id(), b.cluster.id(), c.cluster.id()].into();
        assert_eq!(ids.len(), 3, "peer ids are distinct");
        for s in [&a, &b, &c] {
            assert_eq!(s.cluster.view_state(), ViewState::Live);
            let mut expect = ids.clone();
            expect.remove(&s.cluster.id());
            assert_eq!(s.others(), expect, "peers(false) excludes self");
            assert_eq!(s.cluster.peers(true).keys().copied().collect::<BTreeSet<_>>(), ids);
        }
        let lobby = c.cluster.peers_with_tag("lobby", false);
        assert_eq!(lobby.keys().copied().collect::<BTreeSet<_>>(), [a.cluster.id(), b.cluster.id()].into());
        assert_eq!(
            c.cluster.peers_with_tag("master", true).keys().copied().collect::<Vec<_>>(),
            vec![a.cluster.id()]
        );
        assert!(c.cluster.peers_with_tag("pvp", false).is_empty());
        assert_eq!(c.cluster.peers_with_tag("pvp", true).len(), 1);
        assert_eq!(b.cluster.peer_tags(a.cluster.id()), Some(tags(&["lobby", "master"])));
        assert_eq!(b.cluster.peer_external_ip(c.cluster.id()), Some("203.0.113.3".parse().unwrap()));
        assert_eq!(
            a.cluster.peer_external_ports(c.cluster.id()),
            Some(BTreeMap::from([("tcp_json".to_string(), 8012), ("websocket_json".to_string(), 8018)]))
        );
        assert_eq!(a.cluster.rpc_addr(b.cluster.id()), Some("10.0.1.2:7000".parse().unwrap()));
        assert_eq!(a.cluster.rpc_addr(a.cluster.id()), Some("10.0.1.1:7000".parse().unwrap()));
        assert_eq!(a.cluster.peer_status(b.cluster.id()), Some(serde_json::Value::Null));
        let stranger = PeerId(Default::default());
        assert_eq!(a.cluster.peer_tags(stranger), None);
        assert_eq!(a.cluster.rpc_addr(stranger), None);
        assert_eq!(b.cluster.peers(false)[&a.cluster.id()].name, "game-1");
    });
}

#[test]
fn tags_and_status_propagate() {
    simulate(2, |mut w| async move {
        let [a, b, c] = three(&mut w).await;
        let mut changes = b.cluster.changes();
        let (ca, id) = (a.cluster.clone(), a.cluster.id());
        a.run(async move {
            ca.add_tag("pvp").await.unwrap();
            ca.set_status(json!({"room_count": 3})).await.unwrap();
        })
        .await;
        // Visible locally at once (the call returned), to the others after a notification.
        assert_eq!(a.cluster.peer_status(id), Some(json!({"room_count": 3})));
        for s in [&b, &c] {
            let ok = eventually(PROPAGATION_MAX, || {
                s.cluster.peer_tags(id) == Some(tags(&["lobby", "master", "pvp"]))
                    && s.cluster.peer_status(id) == Some(json!({"room_count": 3}))
            })
            .await;
            assert!(ok, "tag and status reached {}", s.cluster.peers(true)[&s.cluster.id()].name);
            assert_eq!(
                s.cluster.peers_with_tag("pvp", false).len(),
                if s.cluster.id() == c.cluster.id() { 1 } else { 2 }
            );
        }
        assert_eq!(changes.next().now_or_never(), Some(Some(ViewChange::Updated(id))));

        let ca = a.cluster.clone();
        a.run(async move { ca.remove_tag("master").await.unwrap() }).await;
        assert!(eventually(PROPAGATION_MAX, || b.cluster.peers_with_tag("master", true).is_empty()).await);
        assert!(matches!(
            a.run({
                let ca = a.cluster.clone();
                async move { ca.add_tag("").await }
            })
            .await,
            Err(engine::cluster::ClusterError::InvalidTag(_))
        ));
    });
}

#[test]
fn least_loaded_follows_room_count() {
    simulate(3, |mut w| async move {
        let lobby = w.start(Spec::new(1, &["lobby"])).await;
        let p2 = w.start(Spec::new(2, &["pvp"])).await;
        let p3 = w.start(Spec::new(3, &["pvp"])).await;
        let p4 = w.start(Spec::new(4, &["pvp"])).await;
        let p5 = w.start(Spec::new(5, &["pvp"])).await;
        for (s, status) in [
            (&p2, json!({"room_count": 5})),
            (&p3, json!({"room_count": 2})),
            (&p4, json!({"room_count": "two"})), // malformed: skipped, not chosen
            (&lobby, json!({"room_count": 0})),  // not pvp
        ] {
            let c = s.cluster.clone();
            s.run(async move { c.set_status(status).await.unwrap() }).await;
        }
        // p5 never sets a status: skipped.
        let want = p3.cluster.id();
        assert!(
            eventually(PROPAGATION_MAX, || lobby.cluster.least_loaded("pvp", "room_count", false)
                == Some(want))
            .await
        );
        assert_eq!(lobby.cluster.least_loaded("lobby", "room_count", true), Some(lobby.cluster.id()));
        assert_eq!(lobby.cluster.least_loaded("lobby", "room_count", false), None);
        assert_eq!(lobby.cluster.least_loaded("pvp", "no_such_field", false), None);

        let c = p2.cluster.clone();
        p2.run(async move { c.set_status(json!({"room_count": 1})).await.unwrap() }).await;
        let want = p2.cluster.id();
        assert!(
            eventually(PROPAGATION_MAX, || lobby.cluster.least_loaded("pvp", "room_count", false)
                == Some(want))
            .await
        );
        // A tie goes to the smaller peer id.
        let c = p3.cluster.clone();
        p3.run(async move { c.set_status(json!({"room_count": 1})).await.unwrap() }).await;
        let want = p2.cluster.id().min(p3.cluster.id());
        assert!(
            eventually(PROPAGATION_MAX, || lobby.cluster.peer_status(p3.cluster.id())
                == Some(json!({"room_count": 1})))
            .await
        );
        assert_eq!(lobby.cluster.least_loaded("pvp", "room_count", false), Some(want));
        let _ = p5;
    });
}

#[test]
fn killed_server_disappears_after_the_session_timeout() {
    simulate(4, |mut w| async move {
        let [a, b, c] = three(&mut w).await;
        let dead = c.cluster.id();
        let killed_at = now_ms();
        w.handle.kill(w.node("game-3"));
        // Its ephemeral znode outlives it by about one session timeout.
        sleep_ms(2_000).await;
        assert!(a.others().contains(&dead) && b.others().contains(&dead), "gone before the session timeout");
        assert!(eventually(EXPIRY_MAX, || !a.others().contains(&dead) && !b.others().contains(&dead)).await);
        let gone_after = now_ms() - killed_at;
        assert!(
            u128::from(gone_after) >= SESSION_TIMEOUT.as_millis() - 1_000,
            "removed after {gone_after} ms"
        );
        assert_eq!(a.others(), [b.cluster.id()].into());
        assert_eq!(a.cluster.view_state(), ViewState::Live);
    });
}

/// What one partition of game-1 from ZooKeeper looked like, for the determinism check.
#[derive(Debug, PartialEq, Eq)]
struct PartitionReport {
    game1: PeerId,
    ids: Vec<PeerId>,
    stale_at_ms: u64,
    dropped_by_others_at_ms: u64,
    back_at_ms: u64,
    changes_seen_by_game2: Vec<String>,
}

async fn partition_and_heal(mut w: World) -> PartitionReport {
    let [a, b, c] = three(&mut w).await;
    let id = a.cluster.id();
    let mut changes = b.cluster.changes();
    let before = a.others();
    let start = now_ms();
    w.cut_from_zk("game-1");

    // game-1 notices within two thirds of the session timeout and says so.
    assert!(eventually(SESSION_TIMEOUT, || !a.cluster.view_state().is_live()).await, "never went stale");
    let stale_at_ms = now_ms() - start;
    match a.cluster.view_state() {
        ViewState::Stale { reason, .. } => assert_eq!(reason, StaleReason::Disconnected),
        ViewState::Live => unreachable!(),
    }
    assert_eq!(a.others(), before, "a disconnected server keeps serving its last view");

    // A status set while cut off waits for the partition; it must land after the heal.
    let ca = a.cluster.clone();
    let pending_status = a.spawn(async move { ca.set_status(json!({"room_count": 42})).await });

    // The others drop it once its session expires at the service.
    assert!(eventually(EXPIRY_MAX, || !b.others().contains(&id) && !c.others().contains(&id)).await);
    let dropped_by_others_at_ms = now_ms() - start;
    sleep_ms(5_000).await;
    assert!(!a.cluster.view_state().is_live(), "still cut off, still stale");
    assert_eq!(a.others(), before);

    w.heal_zk("game-1");
    // It learns of the expiry, re-registers under the same id, and everyone sees it again.
    let ok = eventually(EXPIRY_MAX, || {
        a.cluster.view_state().is_live()
            && b.others().contains(&id)
            && c.others().contains(&id)
            && b.cluster.peer_status(id) == Some(json!({"room_count": 42}))
    })
    .await;
    assert!(ok, "game-1 never came back: {:?} / {:?}", a.cluster.view_state(), b.others());
    let back_at_ms = now_ms() - start;
    assert_eq!(a.cluster.id(), id, "a process that lives on keeps its peer id");
    assert_eq!(a.others(), before);
    assert_eq!(b.cluster.peer_tags(id), Some(tags(&["lobby", "master"])));
    assert_eq!(pending_status.await.expect("set_status finished"), Ok(()));

    // And its view follows the cluster again.
    let cc = c.cluster.clone();
    c.run(async move { cc.add_tag("late").await.unwrap() }).await;
    assert!(
        eventually(PROPAGATION_MAX, || a.cluster.peer_tags(c.cluster.id()) == Some(tags(&["pvp", "late"])))
            .await
    );

    let mut seen = Vec::new();
    while let Some(Some(ch)) = changes.next().now_or_never() {
        seen.push(format!("{ch:?}"));
    }
    let mut ids = vec![a.cluster.id(), b.cluster.id(), c.cluster.id()];
    ids.sort();
    PartitionReport {
        game1: id,
        ids,
        stale_at_ms,
        dropped_by_others_at_ms,
        back_at_ms,
        changes_seen_by_game2: seen,
    }
}

#[test]
fn partitioned_server_goes_stale_and_reregisters_under_the_same_id() {
    let r = simulate(5, partition_and_heal);
    assert!(u128::from(r.stale_at_ms) <= SESSION_TIMEOUT.as_millis(), "{r:?}");
    assert!(u128::from(r.dropped_by_others_at_ms) >= SESSION_TIMEOUT.as_millis() - 1_000, "{r:?}");
    // game-2 saw game-1 go and come back under the same id.
    let removed = r.changes_seen_by_game2.iter().position(|c| *c == format!("Removed({:?})", r.game1));
    let added = r.changes_seen_by_game2.iter().position(|c| *c == format!("Added({:?})", r.game1));
    assert!(matches!((removed, added), (Some(x), Some(y)) if x < y), "{r:?}");
}

#[test]
fn restarted_server_is_a_new_peer() {
    simulate(6, |mut w| async move {
        let [a, b, _c] = three(&mut w).await;
        let old = b.cluster.id();
        w.handle.kill(w.node("game-2"));
        sleep_ms(500).await;
        w.handle.restart(w.node("game-2"));
        let b2 = w.wait_incarnation("game-2", Some(old)).await;
        let new = b2.cluster.id();
        assert_ne!(new, old);
        assert!(eventually(PROPAGATION_MAX, || a.others().contains(&new)).await);
        // The previous incarnation lingers until its session expires, then goes.
        assert!(eventually(EXPIRY_MAX, || !a.others().contains(&old)).await);
        let expect: BTreeSet<PeerId> = [a.cluster.id(), w.server("game-3").cluster.id()].into();
        assert!(
            eventually(PROPAGATION_MAX, || b2.others() == expect).await,
            "the new incarnation sees the others"
        );
        assert_eq!(b2.cluster.peer_tags(new), Some(tags(&["lobby"])));
        assert_eq!(w.server("game-2").cluster.id(), new);
    });
}

/// Partitions game-1 (with or without the planted bug) past its session timeout, heals, then
/// changes the cluster (a tag on game-2, game-3 leaves). True if game-1's view caught up.
async fn view_correct_after_partition(mut w: World, bugs: ClusterBugs) -> bool {
    let mut spec = Spec::new(1, &["lobby"]);
    spec.bugs = bugs;
    let a = w.start(spec).await;
    let b = w.start(Spec::new(2, &["lobby"])).await;
    let c = w.start(Spec::new(3, &["pvp"])).await;
    assert!(eventually(PROPAGATION_MAX, || a.others().len() == 2).await);
    w.cut_from_zk("game-1");
    sleep_ms(15_000).await;
    w.heal_zk("game-1");
    assert!(
        eventually(EXPIRY_MAX, || b.others().contains(&a.cluster.id()) && a.cluster.view_state().is_live())
            .await
    );

    let cb = b.cluster.clone();
    b.run(async move { cb.add_tag("master").await.unwrap() }).await;
    let cc = c.cluster.clone();
    c.run(async move { cc.leave().await }).await;
    let expect_others: BTreeSet<PeerId> = [b.cluster.id()].into();
    let (bid, aa) = (b.cluster.id(), a.clone());
    let correct =
        move || aa.others() == expect_others && aa.cluster.peer_tags(bid) == Some(tags(&["lobby", "master"]));
    if !eventually(Duration::from_secs(10), correct.clone()).await {
        return false;
    }
    // Still correct later (no flapping).
    sleep_ms(10_000).await;
    correct() && a.cluster.view_state().is_live()
}

#[test]
fn stale_view_bug_leaves_a_view_permanently_wrong() {
    let bugged = simulate(7, |w| view_correct_after_partition(w, ClusterBugs { stale_view: true }));
    assert!(!bugged, "the planted stale_view bug must leave game-1's view wrong");
    let fine = simulate(7, |w| view_correct_after_partition(w, ClusterBugs::default()));
    assert!(fine, "without the bug the view must catch up");
}

#[test]
fn leave_unregisters_at_once() {
    simulate(8, |mut w| async move {
        let [a, b, c] = three(&mut w).await;
        let (ca, id) = (a.cluster.clone(), a.cluster.id());
        a.run(async move { ca.leave().await }).await;
        assert!(eventually(PROPAGATION_MAX, || !b.others().contains(&id) && !c.others().contains(&id)).await);
        assert!(matches!(a.cluster.view_state(), ViewState::Stale { reason: StaleReason::Left, .. }));
        let ca = a.cluster.clone();
        let r = a.run(async move { ca.set_status(json!({"room_count": 1})).await }).await;
        assert_eq!(r, Err(engine::cluster::ClusterError::Left));
    });
}

#[test]
fn same_seed_same_results() {
    let first = simulate(11, partition_and_heal);
    let second = simulate(11, partition_and_heal);
    assert_eq!(first, second);
    let other = simulate(12, partition_and_heal);
    assert_ne!(first.ids, other.ids, "a different seed draws different peer ids");
}

/// More seeds of the fault paths (slow in debug builds): `cargo test -p sim --test cluster -- --ignored`.
#[test]
#[ignore]
fn sweep_partition_and_stale_view_seeds() {
    for seed in 100..120 {
        simulate(seed, partition_and_heal);
        assert!(simulate(seed, |w| view_correct_after_partition(w, ClusterBugs::default())), "seed {seed}");
        assert!(
            !simulate(seed, |w| view_correct_after_partition(w, ClusterBugs { stale_view: true })),
            "seed {seed}"
        );
    }
}
