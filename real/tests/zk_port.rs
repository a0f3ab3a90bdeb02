//! The `Coord` port's semantics on a real ZooKeeper (a private server per test).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{blocking, eventually, within, Link};
use engine::env::{
    Coord, CoordConnector, CoordError, CreateMode, EventKind, MultiError, Op, OpResult, SessionEvent,
    SessionOptions, SessionState, WatchedEvent,
};
use futures::{FutureExt, StreamExt};
use real::adapters::{ZkConnector, ZkCoord};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn opts(timeout_ms: u64) -> SessionOptions {
    SessionOptions {
        session_timeout: Duration::from_millis(timeout_ms),
        connect_timeout: Duration::from_secs(15),
    }
}

async fn session(server: impl ToString, timeout_ms: u64) -> Arc<ZkCoord> {
    ZkConnector::new(server.to_string()).connect_session(opts(timeout_ms)).await.expect("zk session")
}

fn event(kind: EventKind, path: &str) -> WatchedEvent {
    WatchedEvent { kind, path: path.to_string() }
}

fn ev(state: SessionState) -> Option<SessionEvent> {
    Some(SessionEvent { state })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_modes_sequential_names_versions_and_errors() {
    use CreateMode::*;
    let zk = common::zk();
    let c = session(zk.addr(), 4000).await;

    assert_eq!(c.create("/app", b("root"), Persistent).await, Ok("/app".to_string()));
    assert_eq!(c.create("/app", b(""), Persistent).await, Err(CoordError::NodeExists));
    assert_eq!(c.create("/missing/x", b(""), Persistent).await, Err(CoordError::NoNode));
    assert_eq!(c.create("/", b(""), Persistent).await, Err(CoordError::NodeExists));
    for bad in ["app", "/app/", "/a//b", "/a/./b", "/a/..", ""] {
        assert!(
            matches!(c.create(bad, b(""), Persistent).await, Err(CoordError::BadArguments(_))),
            "{bad:?} must be refused"
        );
        assert!(matches!(c.get_data(bad).await, Err(CoordError::BadArguments(_))), "{bad:?}");
    }

    // Sequential names carry the parent's cversion as %010d.
    c.create("/app/q", b(""), Persistent).await.unwrap();
    assert_eq!(c.create("/app/q/job-", b("1"), PersistentSequential).await.unwrap(), "/app/q/job-0000000000");
    c.create("/app/q/plain", b(""), Persistent).await.unwrap();
    assert_eq!(c.create("/app/q/job-", b("2"), PersistentSequential).await.unwrap(), "/app/q/job-0000000002");
    c.delete("/app/q/plain", None).await.unwrap();
    // ZooKeeper 3.8 counts only child *creations* for the suffix, while the `cversion` it
    // reports counts deletions too: after 3 creates and 1 delete the next suffix is 3, and
    // after that create the stat says cversion 5.
    // A sequential path may end in '/'.
    assert_eq!(c.create("/app/q/", b("e"), EphemeralSequential).await.unwrap(), "/app/q/0000000003");
    assert_eq!(
        c.get_children("/app/q").await.unwrap(),
        vec!["0000000003".to_string(), "job-0000000000".to_string(), "job-0000000002".to_string()]
    );
    let (_, qstat) = c.get_data("/app/q").await.unwrap();
    assert_eq!((qstat.cversion, qstat.num_children), (5, 3));
    // Sequential children of the root.
    let top = c.create("/", b(""), PersistentSequential).await.unwrap();
    assert!(top.len() == 11 && top[1..].chars().all(|ch| ch.is_ascii_digit()), "{top}");
    c.delete(&top, None).await.unwrap();

    // Ephemerals belong to the session and cannot have children.
    assert_eq!(c.create("/app/e", b("x"), Ephemeral).await.unwrap(), "/app/e");
    let (data, st) = c.get_data("/app/e").await.unwrap();
    assert_eq!(data, b("x"));
    assert_eq!(st.ephemeral_owner, c.session_id());
    assert_eq!(c.get_data("/app").await.unwrap().1.ephemeral_owner, 0);
    assert_eq!(c.create("/app/e/child", b(""), Persistent).await, Err(CoordError::NoChildrenForEphemerals));
    assert_eq!(
        c.create("/app/e/", b(""), PersistentSequential).await,
        Err(CoordError::NoChildrenForEphemerals)
    );

    // Versions.
    let (data, st0) = c.get_data("/app").await.unwrap();
    assert_eq!((data, st0.version, st0.data_length), (b("root"), 0, 4));
    assert!(st0.czxid > 0 && st0.ctime > 1_600_000_000_000);
    let st1 = c.set_data("/app", b("v1"), Some(0)).await.unwrap();
    assert_eq!(st1.version, 1);
    assert!(st1.mzxid > st0.mzxid);
    assert_eq!(c.set_data("/app", b("v1"), Some(0)).await, Err(CoordError::BadVersion));
    assert_eq!(c.set_data("/app", b("v2"), None).await.unwrap().version, 2);
    assert_eq!(c.get_data("/app").await.unwrap().0, b("v2"));
    assert_eq!(c.delete("/app", Some(9)).await, Err(CoordError::BadVersion));
    assert_eq!(c.delete("/app", None).await, Err(CoordError::NotEmpty));
    assert_eq!(c.delete("/", None).await.map_err(|e| matches!(e, CoordError::BadArguments(_))), Err(true));

    // exists / NoNode.
    assert_eq!(c.exists("/nope").await, Ok(None));
    let st = c.exists("/app").await.unwrap().expect("exists");
    assert_eq!((st.version, st.num_children), (2, 2));
    assert_eq!(c.get_data("/nope").await, Err(CoordError::NoNode));
    assert_eq!(c.set_data("/nope", b(""), None).await, Err(CoordError::NoNode));
    assert_eq!(c.get_children("/nope").await, Err(CoordError::NoNode));
    assert_eq!(c.delete("/nope", None).await, Err(CoordError::NoNode));
    assert_eq!(c.delete("/app/e", Some(0)).await, Ok(()));
    assert_eq!(c.delete("/app/e", None).await, Err(CoordError::NoNode));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_fire_once_and_before_later_reads_see_the_change() {
    let zk = common::zk();
    let a = session(zk.addr(), 4000).await;
    let other = session(zk.addr(), 4000).await;
    a.create("/w", b("0"), CreateMode::Persistent).await.unwrap();

    // A data watch: two changes, one event, delivered before A can read the new data.
    let (data, _, w) = a.get_data_w("/w").await.unwrap();
    assert_eq!(data, b("0"));
    let (_, _, w_twin) = a.get_data_w("/w").await.unwrap();
    other.create("/unrelated", b(""), CreateMode::Persistent).await.unwrap();
    other.set_data("/w", b("1"), None).await.unwrap();
    other.set_data("/w", b("2"), None).await.unwrap();
    let (data, st) = a.get_data("/w").await.unwrap();
    assert_eq!((data, st.version), (b("2"), 2));
    assert_eq!(w.now_or_never(), Some(event(EventKind::NodeDataChanged, "/w")), "fired before the read");
    assert_eq!(w_twin.now_or_never(), Some(event(EventKind::NodeDataChanged, "/w")));

    // A fresh watch sees only later changes; deletion fires data watches.
    let (_, _, w) = a.get_data_w("/w").await.unwrap();
    assert!(a.exists("/w").await.unwrap().is_some());
    let mut w = w;
    assert!((&mut w).now_or_never().is_none(), "nothing changed since the read");
    other.delete("/w", None).await.unwrap();
    assert_eq!(within(Duration::from_secs(5), "delete event", w).await, event(EventKind::NodeDeleted, "/w"));

    // Reads with a watch on a missing node: get_data/get_children fail and leave nothing.
    assert_eq!(a.get_data_w("/w").await.err(), Some(CoordError::NoNode));
    assert_eq!(a.get_children_w("/w").await.err(), Some(CoordError::NoNode));

    // exists_w on a missing node fires on creation.
    let (st, w) = a.exists_w("/x").await.unwrap();
    assert!(st.is_none());
    other.create("/x", b("x"), CreateMode::Persistent).await.unwrap();
    assert!(a.exists("/x").await.unwrap().is_some());
    assert_eq!(w.now_or_never(), Some(event(EventKind::NodeCreated, "/x")));

    // exists_w on a present node fires on data change.
    let (st, w) = a.exists_w("/x").await.unwrap();
    assert_eq!(st.unwrap().version, 0);
    other.set_data("/x", b("y"), None).await.unwrap();
    assert_eq!(a.get_data("/x").await.unwrap().0, b("y"));
    assert_eq!(w.now_or_never(), Some(event(EventKind::NodeDataChanged, "/x")));

    // A child watch ignores data changes and fires on a child create; children come sorted.
    other.create("/x/b", b(""), CreateMode::Persistent).await.unwrap();
    other.create("/x/a", b(""), CreateMode::Persistent).await.unwrap();
    let (kids, w) = a.get_children_w("/x").await.unwrap();
    assert_eq!(kids, vec!["a".to_string(), "b".to_string()]);
    let mut w = w;
    other.set_data("/x", b("z"), None).await.unwrap();
    assert_eq!(a.get_data("/x").await.unwrap().0, b("z"));
    assert!((&mut w).now_or_never().is_none(), "a data change does not fire a child watch");
    other.create("/x/c", b(""), CreateMode::Ephemeral).await.unwrap();
    assert_eq!(a.get_children("/x").await.unwrap().len(), 3);
    assert_eq!(w.now_or_never(), Some(event(EventKind::NodeChildrenChanged, "/x")));

    // A child watch fires NodeDeleted when its node goes.
    let (_, w) = a.get_children_w("/x/a").await.unwrap();
    other.delete("/x/a", None).await.unwrap();
    assert!(a.exists("/x/a").await.unwrap().is_none());
    assert_eq!(w.now_or_never(), Some(event(EventKind::NodeDeleted, "/x/a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_is_all_or_nothing() {
    use CreateMode::*;
    let zk = common::zk();
    let c = session(zk.addr(), 4000).await;
    let other = session(zk.addr(), 4000).await;
    c.create("/m", b(""), Persistent).await.unwrap();

    let rs = c
        .multi(vec![
            Op::Create { path: "/m/a".into(), data: b("a"), mode: Persistent },
            Op::Create { path: "/m/s-".into(), data: b(""), mode: PersistentSequential },
            Op::SetData { path: "/m".into(), data: b("x"), version: Some(0) },
            Op::Check { path: "/m/a".into(), version: Some(0) },
            Op::Check { path: "/m".into(), version: None },
            Op::Delete { path: "/m/a".into(), version: Some(0) },
        ])
        .await
        .unwrap();
    assert_eq!(rs.len(), 6);
    assert_eq!(rs[0], OpResult::Create("/m/a".into()));
    assert_eq!(rs[1], OpResult::Create("/m/s-0000000001".into()));
    match &rs[2] {
        OpResult::SetData(st) => assert_eq!(st.version, 1),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(&rs[3..], &[OpResult::Check, OpResult::Check, OpResult::Delete]);

    // A failing transaction applies nothing, fires no watch, and names the failing op.
    let before = c.get_data("/m").await.unwrap();
    let kids_before = c.get_children("/m").await.unwrap();
    let (_, mut w) = other.get_children_w("/m").await.unwrap();
    let (_, _, mut wd) = other.get_data_w("/m").await.unwrap();
    let err = c
        .multi(vec![
            Op::Create { path: "/m/b".into(), data: b(""), mode: Persistent },
            Op::SetData { path: "/m".into(), data: b("y"), version: None },
            Op::Check { path: "/m".into(), version: Some(7) },
            Op::Delete { path: "/m/s-0000000001".into(), version: None },
        ])
        .await
        .unwrap_err();
    assert_eq!(err, MultiError { index: 2, error: CoordError::BadVersion });
    assert_eq!(c.exists("/m/b").await, Ok(None));
    assert_eq!(c.get_data("/m").await.unwrap(), before);
    assert_eq!(c.get_children("/m").await.unwrap(), kids_before);
    assert!(other.exists("/m").await.unwrap().is_some());
    assert!((&mut w).now_or_never().is_none() && (&mut wd).now_or_never().is_none(), "no watch fired");

    let err = c
        .multi(vec![
            Op::Create { path: "/m/c".into(), data: b(""), mode: Persistent },
            Op::Delete { path: "/m/zzz".into(), version: None },
        ])
        .await
        .unwrap_err();
    assert_eq!(err, MultiError { index: 1, error: CoordError::NoNode });
    assert_eq!(c.exists("/m/c").await, Ok(None));
    let err = c
        .multi(vec![
            Op::Create { path: "/m/d".into(), data: b(""), mode: Persistent },
            Op::Create { path: "/m/d".into(), data: b(""), mode: Persistent },
        ])
        .await
        .unwrap_err();
    assert_eq!(err, MultiError { index: 1, error: CoordError::NodeExists });
    let err = c
        .multi(vec![
            Op::Check { path: "/m".into(), version: None },
            Op::Create { path: "bad".into(), data: b(""), mode: Persistent },
        ])
        .await
        .unwrap_err();
    assert_eq!(err.index, 1);
    assert!(matches!(err.error, CoordError::BadArguments(_)));
    let err =
        c.multi(vec![Op::Create { path: "/".into(), data: b(""), mode: Persistent }]).await.unwrap_err();
    assert_eq!(err, MultiError { index: 0, error: CoordError::NodeExists }, "as a plain create of / answers");
    assert_eq!(c.multi(vec![]).await, Ok(vec![]));

    // A committed transaction fires the watches it triggers.
    c.multi(vec![Op::SetData { path: "/m".into(), data: b("z"), version: None }]).await.unwrap();
    assert_eq!(c.get_data("/m").await.unwrap().0, b("z"));
    assert_eq!(
        within(Duration::from_secs(5), "data watch", wd).await,
        event(EventKind::NodeDataChanged, "/m")
    );
    c.multi(vec![Op::Delete { path: "/m/s-0000000001".into(), version: None }]).await.unwrap();
    assert_eq!(
        within(Duration::from_secs(5), "child watch", w).await,
        event(EventKind::NodeChildrenChanged, "/m")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_negotiate_report_events_and_close() {
    let zk = common::zk();
    let a = session(zk.addr(), 3000).await;
    assert_eq!(a.state(), SessionState::Connected);
    assert_eq!(a.negotiated_timeout(), Duration::from_secs(3));
    assert_ne!(a.session_id(), 0);
    // The service clamps the request to [2, 160] ticks of 250 ms.
    assert_eq!(session(zk.addr(), 100).await.negotiated_timeout(), Duration::from_millis(500));
    assert_eq!(session(zk.addr(), 120_000).await.negotiated_timeout(), Duration::from_secs(40));

    let other = session(zk.addr(), 3000).await;
    assert_ne!(other.session_id(), a.session_id());
    a.create("/p", b(""), CreateMode::Persistent).await.unwrap();
    a.create("/eph", b(""), CreateMode::Ephemeral).await.unwrap();
    let (_, gone) = other.exists_w("/eph").await.unwrap();
    let (_, _, own) = a.get_data_w("/p").await.unwrap();
    let mut events = a.session_events();

    // close(): ephemerals go at once, the handle is terminal, its watches fire Session(Closed).
    a.close().await;
    assert_eq!(a.state(), SessionState::Closed);
    assert_eq!(within(Duration::from_secs(2), "closed event", events.next()).await, ev(SessionState::Closed));
    assert_eq!(within(Duration::from_secs(2), "end of events", events.next()).await, None);
    assert_eq!(
        within(Duration::from_secs(2), "ephemeral deleted", gone).await,
        event(EventKind::NodeDeleted, "/eph")
    );
    assert_eq!(
        within(Duration::from_secs(2), "own watch", own).await,
        event(EventKind::Session(SessionState::Closed), "/p")
    );
    assert_eq!(a.get_data("/p").await, Err(CoordError::Closed));
    assert_eq!(a.create("/q", b(""), CreateMode::Persistent).await, Err(CoordError::Closed));
    assert_eq!(a.multi(vec![]).await, Err(MultiError { index: 0, error: CoordError::Closed }));
    assert_eq!(a.session_events().next().await, None, "no events after a terminal state");
    a.close().await;

    // A new session through the port's connector.
    let connector: Arc<dyn CoordConnector> = Arc::new(ZkConnector::new(zk.connect_string()));
    let c = connector.connect(opts(3000)).await.unwrap();
    assert_eq!(c.state(), SessionState::Connected);
    assert_ne!(c.session_id(), a.session_id());

    // Dropping the last handle closes the session too.
    let d = session(zk.addr(), 3000).await;
    d.create("/eph2", b(""), CreateMode::Ephemeral).await.unwrap();
    drop(d);
    eventually(Duration::from_secs(5), "dropped session's ephemeral to go", || async {
        other.exists("/eph2").await.unwrap().is_none().then_some(())
    })
    .await;

    // Nothing listening: Timeout once connect_timeout has passed.
    let dead = ZkConnector::new("127.0.0.1:1");
    let t0 = Instant::now();
    let r = dead
        .connect(SessionOptions {
            session_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(700),
        })
        .await;
    assert_eq!(r.err(), Some(CoordError::Timeout));
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_restart_under_a_connected_client_keeps_the_session() {
    let mut zk = common::zk();
    let a = session(zk.addr(), 4000).await;
    let sid = a.session_id();
    a.create("/r", b("0"), CreateMode::Persistent).await.unwrap();
    a.create("/r/eph", b(""), CreateMode::Ephemeral).await.unwrap();
    let (_, _, w) = a.get_data_w("/r").await.unwrap();
    let mut events = a.session_events();

    blocking(|| zk.stop());
    assert_eq!(
        within(Duration::from_secs(5), "disconnected", events.next()).await,
        ev(SessionState::Disconnected)
    );
    assert_eq!(a.state(), SessionState::Disconnected);
    // While disconnected, calls fail at once and were not sent.
    let t0 = Instant::now();
    assert_eq!(a.get_data("/r").await, Err(CoordError::ConnectionLoss { maybe_applied: false }));
    assert_eq!(
        a.create("/r/x", b(""), CreateMode::Persistent).await,
        Err(CoordError::ConnectionLoss { maybe_applied: false })
    );
    assert!(t0.elapsed() < Duration::from_millis(500));

    blocking(|| zk.restart()).expect("restart ZooKeeper");
    assert_eq!(
        within(Duration::from_secs(10), "reconnected", events.next()).await,
        ev(SessionState::Connected)
    );
    assert_eq!(a.state(), SessionState::Connected);
    assert_eq!(a.session_id(), sid, "same session after the restart");
    assert!(a.exists("/r/eph").await.unwrap().is_some(), "the session's ephemeral survived");

    // The watch was re-registered on the new connection.
    let other = session(zk.addr(), 4000).await;
    other.set_data("/r", b("1"), None).await.unwrap();
    assert_eq!(
        within(Duration::from_secs(5), "re-registered watch", w).await,
        event(EventKind::NodeDataChanged, "/r")
    );
    assert_eq!(a.get_data("/r").await.unwrap().0, b("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_partition_keeps_the_session_and_reports_missed_changes() {
    let zk = common::zk();
    let link = Link::to(zk.addr()).await;
    let a = session(link.addr(), 4000).await;
    let other = session(zk.addr(), 4000).await;
    a.create("/s", b("0"), CreateMode::Persistent).await.unwrap();
    a.create("/s/eph", b(""), CreateMode::Ephemeral).await.unwrap();
    let (_, _, w) = a.get_data_w("/s").await.unwrap();
    let mut events = a.session_events();

    link.cut();
    // A write sent into the partition: its outcome is unknown.
    assert_eq!(
        within(Duration::from_secs(5), "write into the partition", a.set_data("/s/eph", b("?"), None)).await,
        Err(CoordError::ConnectionLoss { maybe_applied: true })
    );
    assert_eq!(
        within(Duration::from_secs(1), "disconnected", events.next()).await,
        ev(SessionState::Disconnected)
    );
    // A change the client misses while it is cut off.
    other.set_data("/s", b("1"), None).await.unwrap();
    link.heal();
    assert_eq!(
        within(Duration::from_secs(5), "reconnected", events.next()).await,
        ev(SessionState::Connected)
    );
    assert_eq!(
        within(Duration::from_secs(5), "missed change reported", w).await,
        event(EventKind::NodeDataChanged, "/s")
    );
    assert_eq!(a.get_data("/s").await.unwrap().0, b("1"));
    assert!(other.exists("/s/eph").await.unwrap().is_some(), "the session lived on");
    assert!(link.accepted() >= 2, "the client reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_client_loses_its_session_to_the_service() {
    let zk = common::zk();
    let link = Link::to(zk.addr()).await;
    let a = session(link.addr(), 4000).await;
    let other = session(zk.addr(), 4000).await;
    a.create("/p", b(""), CreateMode::Persistent).await.unwrap();
    a.create("/p/lock", b(""), CreateMode::Ephemeral).await.unwrap();
    let (_, lock_gone) = other.exists_w("/p/lock").await.unwrap();
    let (_, _, own) = a.get_data_w("/p").await.unwrap();
    let mut events = a.session_events();

    link.cut();
    assert_eq!(
        within(Duration::from_secs(5), "disconnected", events.next()).await,
        ev(SessionState::Disconnected)
    );
    assert_eq!(a.get_data("/p").await, Err(CoordError::ConnectionLoss { maybe_applied: false }));
    // The service expires the session one timeout after the last heartbeat it heard; the
    // partitioned client only knows it is disconnected.
    assert_eq!(
        within(Duration::from_secs(10), "service-side expiry", lock_gone).await,
        event(EventKind::NodeDeleted, "/p/lock")
    );
    assert_eq!(a.state(), SessionState::Disconnected);

    link.heal();
    assert_eq!(within(Duration::from_secs(10), "expired", events.next()).await, ev(SessionState::Expired));
    assert_eq!(within(Duration::from_secs(1), "end of events", events.next()).await, None);
    assert_eq!(a.state(), SessionState::Expired);
    assert_eq!(a.get_data("/p").await, Err(CoordError::SessionExpired));
    assert_eq!(
        a.multi(vec![Op::Check { path: "/p".into(), version: None }]).await,
        Err(MultiError { index: 0, error: CoordError::SessionExpired })
    );
    assert_eq!(
        within(Duration::from_secs(1), "watch ends with the session", own).await,
        event(EventKind::Session(SessionState::Expired), "/p")
    );
    // The owner opens a new session.
    let again = session(link.addr(), 4000).await;
    assert_eq!(again.state(), SessionState::Connected);
    assert_ne!(again.session_id(), a.session_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_down_longer_than_the_session_timeout_expires_the_session() {
    let mut zk = common::zk();
    let a = session(zk.addr(), 2000).await;
    a.create("/d", b("kept"), CreateMode::Persistent).await.unwrap();
    a.create("/d/eph", b(""), CreateMode::Ephemeral).await.unwrap();
    let mut events = a.session_events();

    blocking(|| zk.stop());
    assert_eq!(
        within(Duration::from_secs(3), "disconnected", events.next()).await,
        ev(SessionState::Disconnected)
    );
    assert_eq!(within(Duration::from_secs(8), "expired", events.next()).await, ev(SessionState::Expired));
    assert_eq!(within(Duration::from_secs(1), "end of events", events.next()).await, None);
    assert_eq!(a.create("/d/x", b(""), CreateMode::Persistent).await, Err(CoordError::SessionExpired));

    blocking(|| zk.restart()).expect("restart ZooKeeper");
    let b2 = session(zk.addr(), 2000).await;
    assert_eq!(b2.get_data("/d").await.unwrap().0, b("kept"), "persistent data survived the crash");
    eventually(Duration::from_secs(10), "the dead session's ephemeral to go", || async {
        b2.exists("/d/eph").await.unwrap().is_none().then_some(())
    })
    .await;
}
