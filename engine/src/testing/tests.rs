//! The fakes agree with the port docs (`env::coord`, `env::kv`) on what account and cluster
//! logic depend on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use super::*;
use crate::env::{
    Coord, CoordConnector, CoordError, CreateMode, EventKind, Kv, Op, SessionEvent, SessionOptions,
    SessionState, SetOptions, Ttl, WallTime,
};

const SESSION: Duration = Duration::from_secs(10);

fn opts() -> SessionOptions {
    SessionOptions { session_timeout: SESSION, connect_timeout: Duration::from_secs(2) }
}

fn connect(h: &Harness) -> Arc<dyn Coord> {
    let zk = h.zk.clone();
    h.block_on(async move { zk.connect(opts()).await.unwrap() })
}

/// Runs `f(coord)` to completion on the harness.
fn on<T: Send + 'static, F>(h: &Harness, c: &Arc<dyn Coord>, f: impl FnOnce(Arc<dyn Coord>) -> F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
{
    h.block_on(f(c.clone()))
}

#[test]
fn sessions_get_distinct_ids_and_the_negotiated_timeout() {
    let h = Harness::new(1);
    let (a, b) = (connect(&h), connect(&h));
    assert_ne!(a.session_id(), b.session_id());
    assert_eq!(a.negotiated_timeout(), SESSION);
    assert_eq!(a.state(), SessionState::Connected);
}

#[test]
fn an_ephemeral_vanishes_when_its_session_expires_and_others_are_told() {
    let h = Harness::new(1);
    let (a, b) = (connect(&h), connect(&h));
    let path =
        on(&h, &a, |a| async move { a.create("/e", Bytes::from_static(b"x"), CreateMode::Ephemeral).await });
    assert_eq!(path, Ok("/e".to_string()));
    let stat = h.zk.get("/e").unwrap().1;
    assert_eq!(stat.ephemeral_owner, a.session_id());
    assert!(stat.czxid > 0);
    let (_, _, watch) = on(&h, &b, |b| async move { b.get_data_w("/e").await.unwrap() });
    let mut events = a.session_events();

    h.zk.expire(a.session_id());
    h.run_until_stalled();
    assert_eq!(h.zk.get("/e"), None);
    assert_eq!(watch.now_or_never().map(|e| e.kind), Some(EventKind::NodeDeleted));
    assert_eq!(events.next().now_or_never(), Some(Some(SessionEvent { state: SessionState::Expired })));
    assert_eq!(a.state(), SessionState::Expired);
    let r = on(&h, &a, |a| async move { a.exists("/").await });
    assert_eq!(r, Err(CoordError::SessionExpired));
}

#[test]
fn a_watch_is_one_shot() {
    let h = Harness::new(1);
    let a = connect(&h);
    let fired = on(&h, &a, |a| async move {
        a.create("/n", Bytes::new(), CreateMode::Persistent).await.unwrap();
        let (_, _, w) = a.get_data_w("/n").await.unwrap();
        a.set_data("/n", Bytes::from_static(b"1"), None).await.unwrap();
        // The event is delivered before the write's answer: it is ready now.
        let ev = w.now_or_never().expect("fired before the answer");
        let (_, _, w2) = a.get_data_w("/n").await.unwrap();
        (ev, w2)
    });
    assert_eq!(fired.0.kind, EventKind::NodeDataChanged);
    let mut w2 = fired.1;
    assert!((&mut w2).now_or_never().is_none(), "a fresh read leaves a fresh, unfired watch");
    on(&h, &a, |a| async move { a.set_data("/n", Bytes::from_static(b"2"), None).await.unwrap() });
    assert!(w2.now_or_never().is_some());
    // The first watch was consumed: one more change fires nothing (no watch is left).
    on(&h, &a, |a| async move { a.set_data("/n", Bytes::from_static(b"3"), None).await.unwrap() });
}

#[test]
fn a_lost_answer_may_hide_an_applied_write() {
    let h = Harness::new(1);
    let a = connect(&h);
    h.zk.lose_next_answer(a.session_id());
    let r = on(&h, &a, |a| async move { a.create("/p", Bytes::new(), CreateMode::Persistent).await });
    assert_eq!(r, Err(CoordError::ConnectionLoss { maybe_applied: true }));
    assert!(h.zk.get("/p").is_some(), "applied although the answer was lost");
    assert_eq!(a.state(), SessionState::Disconnected);
    let r = on(&h, &a, |a| async move { a.exists("/p").await });
    assert_eq!(r, Err(CoordError::ConnectionLoss { maybe_applied: false }), "refused while disconnected");
    h.zk.reconnect(a.session_id());
    let r = on(&h, &a, |a| async move { a.create("/p", Bytes::new(), CreateMode::Persistent).await });
    assert_eq!(r, Err(CoordError::NodeExists), "the retry finds its own write");
}

#[test]
fn a_short_disconnect_keeps_the_session_and_reports_missed_changes() {
    let h = Harness::new(1);
    let (a, b) = (connect(&h), connect(&h));
    let (_, w) = on(&h, &a, |a| async move {
        a.create("/e", Bytes::new(), CreateMode::Ephemeral).await.unwrap();
        a.create("/d", Bytes::new(), CreateMode::Persistent).await.unwrap();
        a.get_children_w("/").await.unwrap()
    });
    h.zk.disconnect(a.session_id());
    on(&h, &b, |b| async move { b.create("/new", Bytes::new(), CreateMode::Persistent).await.unwrap() });
    let mut w = w;
    assert!((&mut w).now_or_never().is_none(), "not delivered while disconnected");
    h.advance(SESSION - Duration::from_millis(1));
    h.zk.reconnect(a.session_id());
    assert_eq!(a.state(), SessionState::Connected);
    assert!(h.zk.get("/e").is_some(), "the ephemeral survived");
    assert_eq!(w.now_or_never().map(|e| e.kind), Some(EventKind::NodeChildrenChanged));
}

#[test]
fn a_long_disconnect_expires_the_session_at_the_service_and_the_client_learns_on_reconnect() {
    let h = Harness::new(1);
    let a = connect(&h);
    on(&h, &a, |a| async move { a.create("/e", Bytes::new(), CreateMode::Ephemeral).await.unwrap() });
    h.zk.disconnect(a.session_id());
    assert_eq!(h.zk.next_deadline(), Some(h.now() + SESSION));
    assert_eq!(h.step(10), 1);
    assert_eq!(h.zk.get("/e"), None, "gone one session timeout after the last heartbeat");
    assert_eq!(a.state(), SessionState::Disconnected, "the client cannot know yet");
    h.zk.reconnect(a.session_id());
    assert_eq!(a.state(), SessionState::Expired);
}

#[test]
fn multi_is_all_or_nothing_and_close_ends_the_session() {
    let h = Harness::new(1);
    let a = connect(&h);
    let r = on(&h, &a, |a| async move {
        a.multi(vec![
            Op::Create { path: "/x".into(), data: Bytes::new(), mode: CreateMode::Persistent },
            Op::Delete { path: "/missing".into(), version: None },
        ])
        .await
    });
    assert_eq!(r.unwrap_err().index, 1);
    assert_eq!(h.zk.get("/x"), None);
    let sid = a.session_id();
    on(&h, &a, |a| async move { a.close().await });
    assert_eq!(a.state(), SessionState::Closed);
    assert!(!h.zk.sessions().contains(&sid));
}

#[test]
fn connecting_to_an_unreachable_service_times_out() {
    let h = Harness::new(1);
    h.zk.set_reachable(false);
    let zk = h.zk.clone();
    let start = h.now();
    let r = h.block_on(async move { zk.connect(opts()).await.map(|_| ()) });
    assert_eq!(r, Err(CoordError::Timeout));
    assert_eq!(h.now().saturating_since(start), Duration::from_secs(2));
}

#[test]
fn kv_ttls_follow_the_manual_wall_clock() {
    let h = Harness::new(1);
    h.clock.set_wall(WallTime(1_000_000));
    let kv = h.kv.clone();
    let px = SetOptions { px: Some(Duration::from_millis(500)), ..SetOptions::default() };
    let set = h.block_on({
        let kv = kv.clone();
        async move { kv.set("k", Bytes::from_static(b"v"), px).await }
    });
    assert_eq!(set, Ok(true));
    h.advance(Duration::from_millis(499));
    let kv2 = kv.clone();
    assert_eq!(h.block_on(async move { kv2.pttl("k").await }), Ok(Ttl::Remaining(Duration::from_millis(1))));
    h.clock.set_wall(WallTime(1_000_000 + 500));
    let kv2 = kv.clone();
    assert_eq!(h.block_on(async move { kv2.get("k").await }), Ok(None), "expired by the wall clock");
    h.kv.set_reachable(false);
    assert_eq!(
        h.block_on(async move { kv.del("k").await }),
        Err(crate::env::KvError::ConnectionLoss { maybe_applied: false })
    );
}
