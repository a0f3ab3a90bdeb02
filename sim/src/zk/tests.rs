//! Simulated ZooKeeper under madsim: semantics, watches, sessions and faults.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::env::{
    Coord, CoordConnector, CoordError, CreateMode, EventKind, MultiError, Net, Op, OpResult, SessionEvent,
    SessionOptions, SessionState, WatchedEvent, Watcher, MAX_PEER_FRAME_BYTES,
};
use futures::stream::BoxStream;
use futures::{FutureExt, SinkExt, StreamExt};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::task::NodeId;

use super::{serve, SimCoordConnector, ZkClientEnv, ZkOptions, ZkStore};
use crate::adapters::{ClockControl, SimClock, SimNet, SimRand, SimSpawn};

const ZK_IP: &str = "10.0.0.1";

fn zk_addr() -> SocketAddr {
    SocketAddr::new(ZK_IP.parse().unwrap(), 2181)
}

/// One simulated world: the zk node plus helpers to create client nodes.
#[derive(Clone)]
struct World {
    handle: Handle,
    clocks: ClockControl,
    store: ZkStore,
    zk: NodeId,
}

impl World {
    fn new(handle: Handle) -> World {
        let clocks = ClockControl::new();
        let store = ZkStore::new();
        let (c, s) = (clocks.clone(), store.clone());
        let ip: IpAddr = ZK_IP.parse().unwrap();
        let node = handle
            .create_node()
            .name("zk")
            .ip(ip)
            .init(move || {
                let (c, s) = (c.clone(), s.clone());
                async move {
                    serve(
                        Arc::new(SimNet::new(ip)),
                        Arc::new(SimClock::new("zk", c)),
                        Arc::new(SimSpawn),
                        zk_addr(),
                        s,
                        ZkOptions::default(),
                    )
                    .await
                }
            })
            .build();
        World { handle, clocks, store, zk: node.id() }
    }

    fn client(&self, name: &str, ip: &str) -> Client {
        let ip: IpAddr = ip.parse().unwrap();
        let node = self.handle.create_node().name(name).ip(ip).build();
        let env = ZkClientEnv::new(
            name,
            Arc::new(SimClock::new(name, self.clocks.clone())),
            Arc::new(SimRand),
            Arc::new(SimSpawn),
            Arc::new(SimNet::new(ip)),
        );
        Client { node, connector: Arc::new(SimCoordConnector::new(env, zk_addr())) }
    }

    fn clog(&self, a: NodeId, b: NodeId) {
        let net = madsim::net::NetSim::current();
        net.clog_link(a, b);
        net.clog_link(b, a);
    }

    fn unclog(&self, a: NodeId, b: NodeId) {
        let net = madsim::net::NetSim::current();
        net.unclog_link(a, b);
        net.unclog_link(b, a);
    }
}

#[derive(Clone)]
struct Client {
    node: NodeHandle,
    connector: Arc<SimCoordConnector>,
}

impl Client {
    /// Runs `f` as a task of this client's node and waits for it.
    async fn run<T: Send + 'static, F: Future<Output = T> + Send + 'static>(&self, f: F) -> T {
        self.node.spawn(f).await.expect("client task panicked")
    }

    async fn session(&self, timeout: Duration) -> Arc<dyn Coord> {
        let c = self.connector.clone();
        self.run(async move {
            c.connect(SessionOptions { session_timeout: timeout, connect_timeout: Duration::from_secs(10) })
                .await
                .expect("connect")
        })
        .await
    }
}

fn runtime(seed: u64) -> Runtime {
    Runtime::with_seed_and_config(seed, madsim::Config::default())
}

/// Runs a scenario in a fresh world.
fn scenario<T, F, Fut>(seed: u64, f: F) -> T
where
    F: FnOnce(World) -> Fut,
    Fut: Future<Output = T>,
{
    let rt = runtime(seed);
    let world = World::new(rt.handle().clone());
    rt.block_on(async move {
        // Let the service bind its port.
        madsim::time::sleep(Duration::from_millis(10)).await;
        f(world).await
    })
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn sleep(ms: u64) -> impl Future<Output = ()> {
    madsim::time::sleep(Duration::from_millis(ms))
}

fn ready(w: &mut Watcher) -> Option<WatchedEvent> {
    w.now_or_never()
}

async fn wait_state(c: &Arc<dyn Coord>, want: SessionState, within: Duration) {
    let deadline = madsim::time::Instant::now() + within;
    while c.state() != want {
        assert!(madsim::time::Instant::now() < deadline, "state {:?} never became {want:?}", c.state());
        sleep(50).await;
    }
}

async fn next_event(events: &mut BoxStream<'static, SessionEvent>, within: Duration) -> SessionState {
    madsim::time::timeout(within, events.next())
        .await
        .expect("no session event in time")
        .expect("stream ended")
        .state
}

const T10: Duration = Duration::from_secs(10);

#[test]
fn crud_stats_and_sorted_children() {
    scenario(1, |w| async move {
        let a = w.client("a", "10.0.1.1");
        let s = a.session(T10).await;
        assert_eq!(s.state(), SessionState::Connected);
        assert_eq!(s.negotiated_timeout(), T10);
        assert_ne!(s.session_id(), 0);
        let s2 = s.clone();
        a.run(async move {
            let s = s2;
            let (_, root) = s.get_data("/").await.unwrap();
            assert_eq!(root.num_children, 0);
            assert_eq!(s.create("/app", b("v1"), CreateMode::Persistent).await.unwrap(), "/app");
            let (d, st) = s.get_data("/app").await.unwrap();
            assert_eq!(d, b("v1"));
            assert_eq!(
                (st.version, st.cversion, st.data_length, st.num_children, st.ephemeral_owner),
                (0, 0, 2, 0, 0)
            );
            assert_eq!(st.czxid, st.mzxid);
            assert_eq!(st.czxid, st.pzxid);
            assert!(st.ctime >= crate::adapters::clock::SIM_EPOCH_UNIX_MS);
            assert_eq!(st.ctime, st.mtime);
            let czxid = st.czxid;
            for name in ["c", "a", "b"] {
                s.create(&format!("/app/{name}"), Bytes::new(), CreateMode::Persistent).await.unwrap();
            }
            let eph = s.create("/app/e", Bytes::new(), CreateMode::Ephemeral).await.unwrap();
            assert_eq!(s.exists(&eph).await.unwrap().unwrap().ephemeral_owner, s.session_id());
            assert_eq!(s.get_children("/app").await.unwrap(), vec!["a", "b", "c", "e"]);
            let st = s.exists("/app").await.unwrap().unwrap();
            assert_eq!((st.cversion, st.num_children, st.version), (4, 4, 0));
            assert!(st.pzxid > czxid);
            sleep(1500).await;
            let st2 = s.set_data("/app", b("v22"), None).await.unwrap();
            assert_eq!((st2.version, st2.data_length, st2.czxid), (1, 3, czxid));
            assert!(st2.mzxid > st.pzxid);
            assert!(st2.mtime >= st2.ctime + 1500);
            // Errors.
            assert_eq!(
                s.create("/app", Bytes::new(), CreateMode::Persistent).await,
                Err(CoordError::NodeExists)
            );
            assert_eq!(
                s.create("/nope/x", Bytes::new(), CreateMode::Persistent).await,
                Err(CoordError::NoNode)
            );
            assert_eq!(
                s.create("/app/e/x", Bytes::new(), CreateMode::Persistent).await,
                Err(CoordError::NoChildrenForEphemerals)
            );
            assert!(matches!(
                s.create("bad", Bytes::new(), CreateMode::Persistent).await,
                Err(CoordError::BadArguments(_))
            ));
            assert!(matches!(s.get_data("/a//b").await, Err(CoordError::BadArguments(_))));
            assert_eq!(s.delete("/app", None).await, Err(CoordError::NotEmpty));
            assert_eq!(s.get_data("/zz").await, Err(CoordError::NoNode));
            assert_eq!(s.get_children("/zz").await, Err(CoordError::NoNode));
            assert_eq!(s.exists("/zz").await, Ok(None));
            assert_eq!(s.set_data("/zz", Bytes::new(), None).await, Err(CoordError::NoNode));
            assert_eq!(s.delete("/zz", None).await, Err(CoordError::NoNode));
            // Deleting bumps the parent's cversion too.
            s.delete("/app/b", None).await.unwrap();
            let st3 = s.exists("/app").await.unwrap().unwrap();
            assert_eq!((st3.cversion, st3.num_children), (5, 3));
            assert_eq!(s.get_children("/app").await.unwrap(), vec!["a", "c", "e"]);
        })
        .await;
    })
}

#[test]
fn sequential_names_count_child_creations() {
    scenario(2, |w| async move {
        let a = w.client("a", "10.0.1.1");
        let s = a.session(T10).await;
        a.run(async move {
            s.create("/q", Bytes::new(), CreateMode::Persistent).await.unwrap();
            assert_eq!(
                s.create("/q/job-", Bytes::new(), CreateMode::PersistentSequential).await.unwrap(),
                "/q/job-0000000000"
            );
            s.create("/q/plain", Bytes::new(), CreateMode::Persistent).await.unwrap();
            s.delete("/q/plain", None).await.unwrap();
            // As ZooKeeper 3.8: the suffix counts child creations (2 so far), while the
            // reported cversion counts the delete too (3).
            assert_eq!(s.exists("/q").await.unwrap().unwrap().cversion, 3);
            let p = s.create("/q/job-", Bytes::new(), CreateMode::EphemeralSequential).await.unwrap();
            assert_eq!(p, "/q/job-0000000002");
            assert_eq!(s.exists(&p).await.unwrap().unwrap().ephemeral_owner, s.session_id());
            // A sequential path may end in '/'.
            assert_eq!(
                s.create("/q/", Bytes::new(), CreateMode::PersistentSequential).await.unwrap(),
                "/q/0000000003"
            );
            assert_eq!(
                s.get_children("/q").await.unwrap(),
                vec!["0000000003", "job-0000000000", "job-0000000002"]
            );
            assert_eq!(s.exists("/q").await.unwrap().unwrap().cversion, 5);
        })
        .await;
    })
}

#[test]
fn conditional_set_and_delete() {
    scenario(3, |w| async move {
        let a = w.client("a", "10.0.1.1");
        let s = a.session(T10).await;
        a.run(async move {
            s.create("/x", b("0"), CreateMode::Persistent).await.unwrap();
            assert_eq!(s.set_data("/x", b("1"), Some(0)).await.unwrap().version, 1);
            assert_eq!(s.set_data("/x", b("2"), Some(0)).await, Err(CoordError::BadVersion));
            assert_eq!(s.get_data("/x").await.unwrap().0, b("1"));
            assert_eq!(s.set_data("/x", b("2"), Some(1)).await.unwrap().version, 2);
            assert_eq!(s.delete("/x", Some(1)).await, Err(CoordError::BadVersion));
            assert!(s.exists("/x").await.unwrap().is_some());
            s.delete("/x", Some(2)).await.unwrap();
            assert_eq!(s.exists("/x").await.unwrap(), None);
        })
        .await;
    })
}

#[test]
fn multi_commits_all_or_nothing() {
    scenario(4, |w| async move {
        let a = w.client("a", "10.0.1.1");
        let s = a.session(T10).await;
        let store = w.store.clone();
        a.run(async move {
            s.create("/m", b("0"), CreateMode::Persistent).await.unwrap();
            let r = s
                .multi(vec![
                    Op::Check { path: "/m".into(), version: Some(0) },
                    Op::Create { path: "/m/a".into(), data: b("a"), mode: CreateMode::Persistent },
                    Op::Create {
                        path: "/m/s-".into(),
                        data: Bytes::new(),
                        mode: CreateMode::PersistentSequential,
                    },
                    Op::SetData { path: "/m".into(), data: b("1"), version: Some(0) },
                ])
                .await
                .unwrap();
            assert_eq!(
                r,
                vec![
                    OpResult::Check,
                    OpResult::Create("/m/a".into()),
                    OpResult::Create("/m/s-0000000001".into()),
                    OpResult::SetData(s.exists("/m").await.unwrap().unwrap()),
                ]
            );
            // All ops of one multi share one zxid.
            let (ma, sm) = (s.exists("/m/a").await.unwrap().unwrap(), s.exists("/m").await.unwrap().unwrap());
            assert_eq!(ma.czxid, sm.mzxid);
            let zxid_before = store.lock().zxid();
            let nodes_before = store.lock().node_count();
            let err = s
                .multi(vec![
                    Op::Delete { path: "/m/a".into(), version: None },
                    Op::Create { path: "/m/b".into(), data: Bytes::new(), mode: CreateMode::Persistent },
                    Op::SetData { path: "/m".into(), data: b("x"), version: Some(0) },
                    Op::Create { path: "/m/c".into(), data: Bytes::new(), mode: CreateMode::Persistent },
                ])
                .await
                .unwrap_err();
            assert_eq!(err, MultiError { index: 2, error: CoordError::BadVersion });
            assert_eq!(store.lock().zxid(), zxid_before);
            assert_eq!(store.lock().node_count(), nodes_before);
            assert!(s.exists("/m/a").await.unwrap().is_some());
            assert!(s.exists("/m/b").await.unwrap().is_none());
            assert_eq!(s.exists("/m").await.unwrap().unwrap(), sm);
            let err = s
                .multi(vec![
                    Op::Create { path: "/m/d".into(), data: Bytes::new(), mode: CreateMode::Persistent },
                    Op::Create { path: "/m/d".into(), data: Bytes::new(), mode: CreateMode::Persistent },
                ])
                .await
                .unwrap_err();
            assert_eq!(err, MultiError { index: 1, error: CoordError::NodeExists });
            let err = s.multi(vec![Op::Check { path: "/nope".into(), version: None }]).await.unwrap_err();
            assert_eq!(err, MultiError { index: 0, error: CoordError::NoNode });
            assert_eq!(s.get_children("/m").await.unwrap(), vec!["a", "s-0000000001"]);
        })
        .await;
    })
}

#[test]
fn watches_are_one_shot_and_fire_before_reads() {
    scenario(5, |w| async move {
        let a = w.client("a", "10.0.1.1");
        let bb = w.client("b", "10.0.1.2");
        let sa = a.session(T10).await;
        let sb = bb.session(T10).await;
        let (sa2, sb2) = (sa.clone(), sb.clone());
        a.run(async move {
            let (sa, sb) = (sa2, sb2);
            sa.create("/w", b("0"), CreateMode::Persistent).await.unwrap();
            // Data watch, fired by another session's write; the watcher fires before `sa`
            // can read the new value.
            let (_, _, mut wd) = sa.get_data_w("/w").await.unwrap();
            let (_, mut wc) = sa.get_children_w("/w").await.unwrap();
            let (none, mut we) = sa.exists_w("/w/new").await.unwrap();
            assert!(none.is_none());
            assert!(ready(&mut wd).is_none());
            sb.set_data("/w", b("1"), None).await.unwrap();
            loop {
                let (d, _) = sa.get_data("/w").await.unwrap();
                if d == b("1") {
                    break;
                }
                assert!(ready(&mut wd).is_none());
            }
            assert_eq!(
                ready(&mut wd),
                Some(WatchedEvent { kind: EventKind::NodeDataChanged, path: "/w".into() })
            );
            // One-shot: a second change does not fire anything (no watch is left).
            sb.set_data("/w", b("2"), None).await.unwrap();
            // Exists watch fires NodeCreated; child watch NodeChildrenChanged. Both before
            // `sa` can see the node.
            sb.create("/w/new", Bytes::new(), CreateMode::Persistent).await.unwrap();
            while sa.exists("/w/new").await.unwrap().is_none() {}
            assert_eq!(
                ready(&mut we),
                Some(WatchedEvent { kind: EventKind::NodeCreated, path: "/w/new".into() })
            );
            assert_eq!(
                ready(&mut wc),
                Some(WatchedEvent { kind: EventKind::NodeChildrenChanged, path: "/w".into() })
            );
            // Own writes: the notification precedes the reply.
            let (_, _, mut w2) = sa.get_data_w("/w/new").await.unwrap();
            let (_, mut w3) = sa.exists_w("/w/new").await.unwrap();
            let (_, mut w4) = sa.get_children_w("/w/new").await.unwrap();
            sa.delete("/w/new", None).await.unwrap();
            for w in [&mut w2, &mut w3, &mut w4] {
                assert_eq!(
                    ready(w),
                    Some(WatchedEvent { kind: EventKind::NodeDeleted, path: "/w/new".into() })
                );
            }
            // A failed read leaves no watch; exists on a missing node does.
            assert_eq!(sa.get_data_w("/w/new").await.err(), Some(CoordError::NoNode));
            let (_, mut w5) = sa.exists_w("/w/new").await.unwrap();
            sa.create("/w/new", b("again"), CreateMode::Persistent).await.unwrap();
            assert_eq!(ready(&mut w5).unwrap().kind, EventKind::NodeCreated);
            sa.set_data("/w/new", b("x"), None).await.unwrap();
            // Two watchers on one path both fire on one event.
            let (_, _, mut x1) = sa.get_data_w("/w/new").await.unwrap();
            let (_, _, mut x2) = sb.get_data_w("/w/new").await.unwrap();
            sa.set_data("/w/new", b("y"), None).await.unwrap();
            assert_eq!(ready(&mut x1).unwrap().kind, EventKind::NodeDataChanged);
            sb.exists("/w/new").await.unwrap();
            assert_eq!(ready(&mut x2).unwrap().kind, EventKind::NodeDataChanged);
        })
        .await;
    })
}

#[test]
fn close_removes_ephemerals_and_fires_other_watches() {
    scenario(6, |w| async move {
        let a = w.client("a", "10.0.1.1");
        let bb = w.client("b", "10.0.1.2");
        let sa = a.session(T10).await;
        let sb = bb.session(T10).await;
        a.run(async move {
            sa.create("/lock", Bytes::new(), CreateMode::Persistent).await.unwrap();
            sa.create("/lock/holder", b("a"), CreateMode::Ephemeral).await.unwrap();
            let (_, _, wb) = sb.get_data_w("/lock/holder").await.unwrap();
            let (_, mut wa) = sa.exists_w("/elsewhere").await.unwrap();
            let mut ev = sa.session_events();
            sa.close().await;
            assert_eq!(sa.state(), SessionState::Closed);
            assert_eq!(ev.next().await.unwrap().state, SessionState::Closed);
            assert!(ev.next().await.is_none(), "stream ends after a terminal state");
            assert_eq!(ready(&mut wa).unwrap().kind, EventKind::Session(SessionState::Closed));
            assert_eq!(sa.get_data("/lock").await, Err(CoordError::Closed));
            assert_eq!(wb.await, WatchedEvent { kind: EventKind::NodeDeleted, path: "/lock/holder".into() });
            assert_eq!(sb.exists("/lock/holder").await.unwrap(), None);
            assert_eq!(sb.get_children("/lock").await.unwrap(), Vec::<String>::new());
        })
        .await;
    })
}

/// The partition scenario; returns a trace of what the clients saw (for the determinism test).
async fn partition_expiry(w: World) -> Vec<String> {
    let a = w.client("a", "10.0.1.1");
    let bb = w.client("b", "10.0.1.2");
    let sa = a.session(Duration::from_secs(4)).await;
    let sb = bb.session(T10).await;
    assert_eq!(sa.negotiated_timeout(), Duration::from_secs(4));
    let mut trace = Vec::new();
    let (sa2, sb2) = (sa.clone(), sb.clone());
    let (mut wa, mut wb, mut events) = a
        .run(async move {
            sa2.create("/svc", Bytes::new(), CreateMode::Persistent).await.unwrap();
            sa2.create("/svc/a", b("a"), CreateMode::Ephemeral).await.unwrap();
            let (_, wa) = sa2.get_children_w("/svc").await.unwrap();
            let (_, wb) = sb2.exists_w("/svc/a").await.unwrap();
            (wa, wb, sa2.session_events())
        })
        .await;
    let t0 = madsim::time::Instant::now();
    w.clog(a.node.id(), w.zk);
    // The client notices after 2/3 of its timeout, and stays Disconnected.
    assert_eq!(next_event(&mut events, Duration::from_secs(4)).await, SessionState::Disconnected);
    trace.push(format!("disconnected after {:?}", t0.elapsed()));
    assert_eq!(
        sa.get_data("/svc").now_or_never().unwrap(),
        Err(CoordError::ConnectionLoss { maybe_applied: false })
    );
    // The service expires the session: b's watch fires, the ephemeral is gone.
    let ev = madsim::time::timeout(Duration::from_secs(10), &mut wb).await.expect("b's watch fired");
    assert_eq!(ev, WatchedEvent { kind: EventKind::NodeDeleted, path: "/svc/a".into() });
    trace.push(format!("b saw {ev:?} after {:?}", t0.elapsed()));
    let sb2 = sb.clone();
    assert_eq!(bb.run(async move { sb2.exists("/svc/a").await }).await, Ok(None));
    sleep(5000).await;
    assert_eq!(sa.state(), SessionState::Disconnected, "expiry is learned only on reconnect");
    assert!(ready(&mut wa).is_none());
    w.unclog(a.node.id(), w.zk);
    assert_eq!(next_event(&mut events, Duration::from_secs(3)).await, SessionState::Expired);
    trace.push(format!("expired learned after {:?}", t0.elapsed()));
    assert!(events.next().await.is_none());
    assert_eq!(ready(&mut wa).unwrap().kind, EventKind::Session(SessionState::Expired));
    let sa2 = sa.clone();
    assert_eq!(a.run(async move { sa2.get_data("/svc").await }).await, Err(CoordError::SessionExpired));
    assert_eq!(sa.state(), SessionState::Expired);
    // A new session works.
    let sa3 = a.session(Duration::from_secs(4)).await;
    assert_ne!(sa3.session_id(), sa.session_id());
    trace.push(format!("new session {:#x} old {:#x}", sa3.session_id(), sa.session_id()));
    trace
}

#[test]
fn partition_expires_session_and_client_learns_on_reconnect() {
    let trace = scenario(7, partition_expiry);
    assert_eq!(trace.len(), 4);
}

#[test]
fn same_seed_same_results() {
    let one = scenario(42, partition_expiry);
    let two = scenario(42, partition_expiry);
    assert_eq!(one, two);
    let other = scenario(43, partition_expiry);
    // A different seed is a different run (timings/ids); at minimum the run succeeds.
    assert_eq!(other.len(), one.len());
}

async fn reconnect_scenario(w: World) {
    let a = w.client("a", "10.0.1.1");
    let bb = w.client("b", "10.0.1.2");
    let sa = a.session(Duration::from_secs(12)).await;
    let sb = bb.session(T10).await;
    let id = sa.session_id();
    let (sa2, sb2) = (sa.clone(), sb.clone());
    let (mut wd, mut wc, mut we, mut events) = a
        .run(async move {
            sa2.create("/r", b("0"), CreateMode::Persistent).await.unwrap();
            sa2.create("/r/mine", Bytes::new(), CreateMode::Ephemeral).await.unwrap();
            sb2.create("/r/gone", Bytes::new(), CreateMode::Persistent).await.unwrap();
            let (_, _, wd) = sa2.get_data_w("/r").await.unwrap();
            let (_, wc) = sa2.get_children_w("/r/gone").await.unwrap();
            let (_, we) = sa2.exists_w("/r/later").await.unwrap();
            (wd, wc, we, sa2.session_events())
        })
        .await;
    // A quiet watch that must survive the reconnect without firing.
    let sa2 = sa.clone();
    let (_, mut quiet) = a.run(async move { sa2.exists_w("/r/never").await.unwrap() }).await;
    w.clog(a.node.id(), w.zk);
    assert_eq!(next_event(&mut events, Duration::from_secs(10)).await, SessionState::Disconnected);
    // Changes while `a` is cut off: the notifications cannot reach it.
    let sb2 = sb.clone();
    bb.run(async move {
        sb2.set_data("/r", b("1"), None).await.unwrap();
        sb2.delete("/r/gone", None).await.unwrap();
        sb2.create("/r/later", Bytes::new(), CreateMode::Persistent).await.unwrap();
    })
    .await;
    assert!(ready(&mut wd).is_none());
    w.unclog(a.node.id(), w.zk);
    assert_eq!(next_event(&mut events, Duration::from_secs(3)).await, SessionState::Connected);
    assert_eq!(sa.session_id(), id);
    // SetWatches goes first, so its notifications precede any reply.
    let sa2 = sa.clone();
    let d = a.run(async move { sa2.get_data("/r").await.unwrap().0 }).await;
    assert_eq!(d, b("1"));
    assert_eq!(ready(&mut wd), Some(WatchedEvent { kind: EventKind::NodeDataChanged, path: "/r".into() }));
    assert_eq!(ready(&mut wc), Some(WatchedEvent { kind: EventKind::NodeDeleted, path: "/r/gone".into() }));
    assert_eq!(ready(&mut we), Some(WatchedEvent { kind: EventKind::NodeCreated, path: "/r/later".into() }));
    assert!(ready(&mut quiet).is_none());
    // The session (and its ephemeral) survived, and the re-armed watch still works.
    let sb2 = sb.clone();
    bb.run(async move {
        assert_eq!(sb2.exists("/r/mine").await.unwrap().unwrap().ephemeral_owner, id);
        sb2.create("/r/never", Bytes::new(), CreateMode::Persistent).await.unwrap();
    })
    .await;
    let sa2 = sa.clone();
    a.run(async move { sa2.exists("/r").await.unwrap() }).await;
    assert_eq!(ready(&mut quiet).unwrap().kind, EventKind::NodeCreated);
}

#[test]
fn reconnect_within_timeout_keeps_session_and_delivers_missed_watch() {
    scenario(8, reconnect_scenario)
}

#[test]
fn fault_scenarios_hold_across_seeds() {
    for seed in 100..120 {
        scenario(seed, partition_expiry);
        scenario(seed, reconnect_scenario);
    }
}

#[test]
fn in_flight_request_fails_with_maybe_applied() {
    scenario(9, |w| async move {
        let a = w.client("a", "10.0.1.1");
        let sa = a.session(Duration::from_secs(6)).await;
        let sa2 = sa.clone();
        a.run(async move { sa2.create("/f", b("0"), CreateMode::Persistent).await.unwrap() }).await;
        w.clog(a.node.id(), w.zk);
        let sa2 = sa.clone();
        let t0 = madsim::time::Instant::now();
        let r = a.run(async move { sa2.set_data("/f", b("1"), None).await }).await;
        assert_eq!(r, Err(CoordError::ConnectionLoss { maybe_applied: true }));
        assert!(t0.elapsed() <= Duration::from_secs(4) + Duration::from_millis(100), "{:?}", t0.elapsed());
        assert_eq!(sa.state(), SessionState::Disconnected);
        let sa2 = sa.clone();
        let r = a.run(async move { sa2.set_data("/f", b("2"), None).await }).await;
        assert_eq!(r, Err(CoordError::ConnectionLoss { maybe_applied: false }));
        let sa2 = sa.clone();
        let r =
            a.run(async move { sa2.multi(vec![Op::Check { path: "/f".into(), version: None }]).await }).await;
        assert_eq!(
            r,
            Err(MultiError { index: 0, error: CoordError::ConnectionLoss { maybe_applied: false } })
        );
        w.unclog(a.node.id(), w.zk);
        wait_state(&sa, SessionState::Connected, Duration::from_secs(3)).await;
        let sa2 = sa.clone();
        let d = a.run(async move { sa2.get_data("/f").await.unwrap().0 }).await;
        assert!(d == b("0") || d == b("1"), "{d:?}");
    })
}

#[test]
fn zk_restart_keeps_data_and_sessions() {
    scenario(10, |w| async move {
        let a = w.client("a", "10.0.1.1");
        let sa = a.session(Duration::from_secs(6)).await;
        let id = sa.session_id();
        let sa2 = sa.clone();
        let (mut wd, mut events) = a
            .run(async move {
                sa2.create("/p", b("persist"), CreateMode::Persistent).await.unwrap();
                sa2.create("/p/e", b("eph"), CreateMode::Ephemeral).await.unwrap();
                let (_, _, wd) = sa2.get_data_w("/p").await.unwrap();
                (wd, sa2.session_events())
            })
            .await;
        w.handle.kill(w.zk);
        assert_eq!(next_event(&mut events, Duration::from_secs(5)).await, SessionState::Disconnected);
        // Far longer than the session timeout: the outage is not the session's fault.
        sleep(30_000).await;
        assert_eq!(sa.state(), SessionState::Disconnected);
        w.handle.restart(w.zk);
        assert_eq!(next_event(&mut events, Duration::from_secs(3)).await, SessionState::Connected);
        assert_eq!(sa.session_id(), id);
        let sa2 = sa.clone();
        a.run(async move {
            assert_eq!(sa2.get_data("/p").await.unwrap().0, b("persist"));
            assert_eq!(sa2.exists("/p/e").await.unwrap().unwrap().ephemeral_owner, id);
            // The watch was re-registered with the new incarnation.
            sa2.set_data("/p", b("changed"), None).await.unwrap();
        })
        .await;
        assert_eq!(ready(&mut wd).unwrap().kind, EventKind::NodeDataChanged);
        // Sessions still expire normally after the restart.
        let bb = w.client("b", "10.0.1.2");
        let sb = bb.session(Duration::from_secs(4)).await;
        let sb2 = sb.clone();
        bb.run(async move { sb2.create("/p/b", Bytes::new(), CreateMode::Ephemeral).await.unwrap() }).await;
        w.clog(bb.node.id(), w.zk);
        sleep(8_000).await;
        assert!(w.store.lock().session(sb.session_id()).is_none());
        let sa2 = sa.clone();
        assert_eq!(a.run(async move { sa2.exists("/p/b").await }).await, Ok(None));
    })
}

#[test]
fn zk_pause_does_not_expire_sessions() {
    scenario(11, |w| async move {
        let a = w.client("a", "10.0.1.1");
        let sa = a.session(Duration::from_secs(4)).await;
        let id = sa.session_id();
        let sa2 = sa.clone();
        a.run(async move { sa2.create("/e", Bytes::new(), CreateMode::Ephemeral).await.unwrap() }).await;
        w.handle.pause(w.zk);
        sleep(20_000).await;
        assert_eq!(sa.state(), SessionState::Disconnected);
        w.handle.resume(w.zk);
        wait_state(&sa, SessionState::Connected, Duration::from_secs(5)).await;
        assert_eq!(sa.session_id(), id);
        let sa2 = sa.clone();
        assert_eq!(
            a.run(async move { sa2.exists("/e").await.unwrap().map(|s| s.ephemeral_owner) }).await,
            Some(id)
        );
    })
}

#[test]
fn connect_times_out_when_unreachable_then_succeeds() {
    scenario(12, |w| async move {
        let a = w.client("a", "10.0.1.1");
        w.clog(a.node.id(), w.zk);
        let c = a.connector.clone();
        let t0 = madsim::time::Instant::now();
        let r = a
            .run(async move {
                c.connect(SessionOptions { session_timeout: T10, connect_timeout: Duration::from_secs(3) })
                    .await
                    .map(|s| s.session_id())
            })
            .await;
        assert_eq!(r, Err(CoordError::Timeout));
        assert!(t0.elapsed() >= Duration::from_secs(3));
        // Unreachable servers are retried until the deadline.
        let c = a.connector.clone();
        let world = w.clone();
        let zk = w.zk;
        let id = a.node.id();
        madsim::task::spawn(async move {
            madsim::time::sleep(Duration::from_secs(2)).await;
            world.unclog(id, zk);
        });
        let r = a
            .run(async move {
                c.connect(SessionOptions { session_timeout: T10, connect_timeout: Duration::from_secs(5) })
                    .await
                    .map(|s| s.state())
            })
            .await;
        assert_eq!(r, Ok(SessionState::Connected));
    })
}

#[test]
fn malformed_frames_drop_the_connection_not_the_service() {
    scenario(13, |w| async move {
        let a = w.client("a", "10.0.1.1");
        a.run(async move {
            let net = SimNet::new("10.0.1.1".parse().unwrap());
            let mut c = net.connect(zk_addr(), MAX_PEER_FRAME_BYTES).await.unwrap();
            c.sink.send(Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef, 0xff])).await.unwrap();
            let end = madsim::time::timeout(Duration::from_secs(5), c.stream.next()).await.unwrap();
            assert!(end.is_none() || end.unwrap().is_err());
        })
        .await;
        let s = a.session(T10).await;
        let s2 = s.clone();
        a.run(async move { s2.create("/ok", Bytes::new(), CreateMode::Persistent).await.unwrap() }).await;
    })
}
