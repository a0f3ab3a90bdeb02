//! Membership logic, I/O-free: two or three servers on one in-memory ZooKeeper
//! ([`crate::testing::Harness`]), time stepped by hand.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde_json::json;

use super::*;
use crate::env::{CoordError, SessionOptions};
use crate::testing::Harness;

const SESSION: Duration = Duration::from_secs(10);

fn config(name: &str, port: u16) -> ClusterConfig {
    let mut cfg = ClusterConfig::new("app", name, ([10, 0, 0, 1], port).into());
    cfg.session = SessionOptions { session_timeout: SESSION, connect_timeout: Duration::from_secs(2) };
    cfg
}

fn join(h: &Harness, name: &str, port: u16) -> Cluster {
    h.block_on(Cluster::join(h.env(name), config(name, port))).expect("join")
}

fn member_path(c: &Cluster) -> String {
    format!("/app/servers/{}", c.id())
}

/// The session that owns `c`'s registration right now.
fn session_of(h: &Harness, c: &Cluster) -> i64 {
    h.zk.get(&member_path(c)).expect("registered").1.ephemeral_owner
}

#[test]
fn joining_registers_an_ephemeral_znode_and_both_members_see_each_other() {
    let h = Harness::new(1);
    let a = join(&h, "game-1", 7001);
    let b = join(&h, "game-2", 7002);
    h.run_until_stalled();
    let (data, stat) = h.zk.get(&member_path(&a)).unwrap();
    assert_ne!(stat.ephemeral_owner, 0, "ephemeral");
    let info: PeerInfo = serde_json::from_slice(&data).unwrap();
    assert_eq!((info.id, info.name.as_str()), (a.id(), "game-1"));
    assert_eq!(
        a.peers(false).keys().copied().collect::<Vec<_>>(),
        [b.id()],
        "a learns of b by its child watch"
    );
    assert_eq!(b.peers(false).keys().copied().collect::<Vec<_>>(), [a.id()], "b read a when it joined");
    assert_eq!(a.peers(true).len(), 2);
    assert_eq!(b.peer_external_ip(a.id()), Some([10, 0, 0, 1].into()));
    assert_eq!(b.rpc_addr(a.id()), Some(([10, 0, 0, 1], 7001).into()));
    assert!(a.view_state().is_live() && b.view_state().is_live());
    let peer_registered = b.peers(false)[&a.id()].registered_zxid;
    assert_eq!(peer_registered, stat.czxid);
}

#[test]
fn tags_and_status_published_by_one_member_are_seen_by_another() {
    let h = Harness::new(2);
    let a = join(&h, "pvp-1", 7001);
    let b = join(&h, "game-1", 7002);
    let mut changes = b.changes();
    let a2 = a.clone();
    h.block_on(async move {
        a2.add_tag("pvp").await?;
        a2.set_status(json!({ "room_count": 3 })).await
    })
    .unwrap();
    h.run_until_stalled();
    assert!(b.peer_tags(a.id()).unwrap().contains("pvp"));
    assert_eq!(b.peer_status(a.id()), Some(json!({ "room_count": 3 })));
    assert_eq!(b.least_loaded("pvp", "room_count", false), Some(a.id()));
    assert_eq!(b.peers_with_tag("pvp", true).len(), 1);
    let seen: Vec<ViewChange> = std::iter::from_fn(|| changes.next().now_or_never().flatten()).collect();
    // Both writes landed before b re-read: one watch fire, one re-read, one change.
    assert_eq!(seen, [ViewChange::Updated(a.id())]);

    let a2 = a.clone();
    h.block_on(async move { a2.remove_tag("pvp").await }).unwrap();
    h.run_until_stalled();
    assert!(b.peers_with_tag("pvp", false).is_empty());
}

#[test]
fn a_member_that_leaves_disappears_from_the_others_views() {
    let h = Harness::new(3);
    let a = join(&h, "game-1", 7001);
    let b = join(&h, "game-2", 7002);
    let mut changes = b.changes();
    let a2 = a.clone();
    h.block_on(async move { a2.leave().await });
    h.run_until_stalled();
    assert_eq!(h.zk.get(&member_path(&a)), None);
    assert!(b.peers(false).is_empty());
    assert_eq!(changes.next().now_or_never(), Some(Some(ViewChange::Removed(a.id()))));
    assert!(matches!(a.view_state(), ViewState::Stale { reason: StaleReason::Left, .. }));
    let a2 = a.clone();
    assert_eq!(h.block_on(async move { a2.add_tag("x").await }), Err(ClusterError::Left));
}

#[test]
fn a_disconnect_shorter_than_the_session_keeps_the_registration() {
    let h = Harness::new(4);
    let a = join(&h, "game-1", 7001);
    let b = join(&h, "game-2", 7002);
    let sid = session_of(&h, &a);
    let czxid = h.zk.get(&member_path(&a)).unwrap().1.czxid;
    h.zk.disconnect(sid);
    h.run_until_stalled();
    assert!(matches!(a.view_state(), ViewState::Stale { reason: StaleReason::Disconnected, .. }));
    assert_eq!(a.peers(false).len(), 1, "the last view is still served");

    h.advance(SESSION - Duration::from_secs(1));
    assert_eq!(b.peers(false).len(), 1, "b still sees a: its session lives");
    h.zk.reconnect(sid);
    h.run_until_stalled();
    assert!(a.view_state().is_live());
    assert_eq!(session_of(&h, &a), sid, "same session");
    assert_eq!(h.zk.get(&member_path(&a)).unwrap().1.czxid, czxid, "same registration, never re-created");
}

#[test]
fn a_change_made_while_disconnected_is_published_after_the_reconnect() {
    let h = Harness::new(5);
    let a = join(&h, "game-1", 7001);
    let b = join(&h, "game-2", 7002);
    let sid = session_of(&h, &a);
    h.zk.disconnect(sid);
    h.run_until_stalled();
    let a2 = a.clone();
    // `add_tag` waits out the disconnection (retrying with backoff) until the reconnect.
    let tagged = h.exec.spawner().spawn("add_tag", async move { a2.add_tag("late").await.unwrap() }.boxed());
    h.advance(Duration::from_secs(3));
    assert!(b.peer_tags(a.id()).unwrap().is_empty());
    h.zk.reconnect(sid);
    h.advance(Duration::from_secs(6));
    assert!(b.peer_tags(a.id()).unwrap().contains("late"));
    drop(tagged);
}

#[test]
fn after_session_expiry_the_server_re_registers_under_the_same_peer_id() {
    let h = Harness::new(6);
    let a = join(&h, "game-1", 7001);
    let b = join(&h, "game-2", 7002);
    let mut changes = b.changes();
    let old = session_of(&h, &a);
    h.zk.disconnect(old);
    h.advance(SESSION);
    assert_eq!(h.zk.get(&member_path(&a)), None, "the service expired a's session");
    assert!(b.peers(false).is_empty(), "b dropped a");
    assert_eq!(changes.next().now_or_never(), Some(Some(ViewChange::Removed(a.id()))));

    h.zk.reconnect(old); // a learns `Expired` and opens a new session
    h.run_until_stalled();
    let new = session_of(&h, &a);
    assert_ne!(new, old);
    assert!(a.view_state().is_live());
    assert_eq!(b.peers(false).keys().copied().collect::<Vec<_>>(), [a.id()], "same peer id");
    assert_eq!(changes.next().now_or_never(), Some(Some(ViewChange::Added(a.id()))));
    assert_eq!(a.peers(false).keys().copied().collect::<Vec<_>>(), [b.id()], "and a's view is back");
}

#[test]
fn an_expired_session_is_replaced_even_when_the_first_new_sessions_fail() {
    let h = Harness::new(7);
    let a = join(&h, "game-1", 7001);
    let old = session_of(&h, &a);
    h.zk.set_reachable(false);
    h.zk.expire(old);
    h.run_until_stalled();
    assert!(matches!(a.view_state(), ViewState::Stale { reason: StaleReason::SessionExpired, .. }));
    h.advance(Duration::from_secs(20));
    assert_eq!(h.zk.get(&member_path(&a)), None, "no session yet: connects time out and back off");
    h.zk.set_reachable(true);
    h.advance(Duration::from_secs(10));
    assert!(a.view_state().is_live());
    assert_ne!(session_of(&h, &a), old);
}

#[test]
fn the_view_follows_members_by_watches_alone() {
    let h = Harness::new(8);
    let a = join(&h, "game-1", 7001);
    let mut changes = a.changes();
    let b = join(&h, "game-2", 7002);
    let c = join(&h, "game-3", 7003);
    h.run_until_stalled();
    let ids = |cl: &Cluster| cl.peers(false).keys().copied().collect::<Vec<_>>();
    let mut expected = vec![b.id(), c.id()];
    expected.sort();
    assert_eq!(ids(&a), expected);
    // Status changes reach every other member, several times in a row (watches are re-armed).
    for rooms in 0..3 {
        let b2 = b.clone();
        h.block_on(async move { b2.set_status(json!({ "room_count": rooms })).await }).unwrap();
        h.run_until_stalled();
        assert_eq!(a.peer_status(b.id()), Some(json!({ "room_count": rooms })));
        assert_eq!(c.peer_status(b.id()), Some(json!({ "room_count": rooms })));
    }
    let seen: Vec<ViewChange> = std::iter::from_fn(|| changes.next().now_or_never().flatten()).collect();
    assert_eq!(seen.iter().filter(|c| matches!(c, ViewChange::Added(_))).count(), 2);
    assert_eq!(seen.iter().filter(|c| **c == ViewChange::Updated(b.id())).count(), 3);
}

#[test]
fn join_gives_up_when_zookeeper_cannot_be_reached() {
    let h = Harness::new(9);
    h.zk.set_reachable(false);
    let r = h.block_on(Cluster::join(h.env("game-1"), config("game-1", 7001)));
    assert_eq!(r.unwrap_err(), ClusterError::Coord(CoordError::Timeout));
}

#[test]
fn a_subscriber_that_falls_too_far_behind_is_unsubscribed() {
    let h = Harness::new(10);
    let a = join(&h, "game-1", 7001);
    let b = join(&h, "game-2", 7002);
    let mut slow = b.changes();
    for n in 0..=CHANGES_QUEUED_MAX {
        let a2 = a.clone();
        h.block_on(async move { a2.set_status(json!(n)).await }).unwrap();
    }
    h.run_until_stalled();
    assert_eq!(b.peer_status(a.id()), Some(json!(CHANGES_QUEUED_MAX)), "the view itself kept up");
    let queued = std::iter::from_fn(|| slow.next().now_or_never().flatten()).count();
    assert_eq!(queued, CHANGES_QUEUED_MAX);
    assert_eq!(slow.next().now_or_never(), Some(None), "then the stream ends");
    let mut fresh = b.changes();
    let a2 = a.clone();
    h.block_on(async move { a2.set_status(json!("again")).await }).unwrap();
    h.run_until_stalled();
    assert_eq!(fresh.next().now_or_never(), Some(Some(ViewChange::Updated(a.id()))), "resubscribing works");
}
