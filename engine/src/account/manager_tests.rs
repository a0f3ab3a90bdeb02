//! The whole manager, I/O-free: servers with a cluster, an RPC service and an account
//! manager on one in-memory ZooKeeper ([`crate::testing::Harness`]), time stepped by hand.
//! Client links are fakes that record what they were sent and when they were closed.
//!
//! What the simulator's `sim/tests/account.rs` checks under a real (simulated) network, these
//! check step by step: the login record, the lease lapsing strictly before the service can
//! expire the session, the cleanup of dropped accounts after a short cut, a lost create
//! answer, and single-use redirect tokens.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::cluster::ClusterConfig;
use crate::env::{lock, Clock, SessionOptions};
use crate::rpc::RpcConfig;
use crate::testing::{Harness, ManualClock};

const APP: &str = "app";
const SECRET: &str = "a29fd424579997bf91e3a29fd424579997bf91e3a29fd424579997bf91e30001";
/// Session timeout `T` of every session (a multiple of the fake's 2 s tick).
const SESSION: Duration = Duration::from_secs(10);

/// A client connection that records what it was sent and when it was closed.
struct FakeLink {
    id: LinkId,
    clock: ManualClock,
    sent: Mutex<Vec<(String, Value)>>,
    /// Set: the link's client speaks protobuf, so a message in both forms goes into
    /// `sent_proto`. Unset: the trait's default (the JSON form, into `sent`).
    protobuf: bool,
    sent_proto: Mutex<Vec<(String, Bytes)>>,
    closed: Mutex<Option<(String, MonoTime)>>,
}

impl FakeLink {
    fn new(h: &Harness, n: u128) -> Arc<FakeLink> {
        Arc::new(FakeLink {
            id: LinkId::from_u128(n),
            clock: h.clock.clone(),
            sent: Mutex::default(),
            protobuf: false,
            sent_proto: Mutex::default(),
            closed: Mutex::default(),
        })
    }
    fn new_protobuf(h: &Harness, n: u128) -> Arc<FakeLink> {
        let mut link = Arc::into_inner(FakeLink::new(h, n)).expect("fresh");
        link.protobuf = true;
        Arc::new(link)
    }
    fn received(&self, msg_type: &str) -> Vec<Value> {
        lock(&self.sent).iter().filter(|m| m.0 == msg_type).map(|m| m.1.clone()).collect()
    }
    fn closed(&self) -> Option<(String, MonoTime)> {
        lock(&self.closed).clone()
    }
}

impl ClientLink for FakeLink {
    fn link_id(&self) -> LinkId {
        self.id
    }
    fn send_json(&self, msg_type: &str, body: Value) -> bool {
        if self.closed().is_some() {
            return false;
        }
        lock(&self.sent).push((msg_type.to_string(), body));
        true
    }
    fn send_dual(&self, msg_type: &str, body: &DualBody) -> bool {
        if !self.protobuf {
            return self.send_json(msg_type, body.json().clone());
        }
        if self.closed().is_some() {
            return false;
        }
        lock(&self.sent_proto).push((msg_type.to_string(), body.proto().clone()));
        true
    }
    fn close(&self, reason: &str) {
        let mut c = lock(&self.closed);
        if c.is_none() {
            *c = Some((reason.to_string(), self.clock.now()));
        }
    }
    fn is_open(&self) -> bool {
        self.closed().is_none()
    }
}

/// Starts server `game-n`: cluster member, RPC service, account manager.
fn start(h: &Harness, n: u8) -> AccountManager {
    let env = h.env(&format!("game-{n}"));
    let session = SessionOptions { session_timeout: SESSION, connect_timeout: Duration::from_secs(2) };
    let rpc_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, n)), 8015);
    let mut ccfg = ClusterConfig::new(APP, format!("game-{n}"), rpc_addr);
    ccfg.external_ports = BTreeMap::from([("tcp_json".to_string(), 8012)]);
    ccfg.session = session;
    let mut acfg = AccountConfig::new(APP);
    acfg.session = session;
    acfg.redirection_secret = Some(SECRET.into());
    h.block_on(async move {
        let cluster = Cluster::join(env.clone(), ccfg).await.expect("join");
        let rpc = Rpc::start(env.clone(), cluster.id(), Arc::new(cluster.clone()), RpcConfig::new(rpc_addr))
            .await
            .expect("rpc");
        AccountManager::start(env, cluster, rpc, acfg).await.expect("account manager")
    })
}

fn login(h: &Harness, am: &AccountManager, account: &str, link: &Arc<FakeLink>) -> LoginOutcome {
    let (am, account, link) = (am.clone(), account.to_string(), link.clone() as LinkRef);
    h.block_on(async move { am.check_and_set_logged_in(&account, link).await }).expect("login")
}

/// Logs `account` out of `am`: whether it was logged in there.
fn logout(h: &Harness, am: &AccountManager, account: &str) -> Result<bool, AccountError> {
    let (am, account) = (am.clone(), account.to_string());
    h.block_on(async move { am.set_logged_out(&account).await })
}

/// Logs out whatever account `am` has on link `n`; the account, if any.
fn logout_link(h: &Harness, am: &AccountManager, n: u128) -> Option<String> {
    let am = am.clone();
    h.block_on(async move { am.set_logged_out_link(LinkId::from_u128(n)).await }).expect("logout")
}

fn znode(account: &str) -> String {
    format!("/{APP}/active_accounts/{}", crate::keyname::encode(account))
}

/// The ZooKeeper session that owns `account`'s znode.
fn owner_session(h: &Harness, account: &str) -> i64 {
    h.zk.get(&znode(account)).expect("logged in").1.ephemeral_owner
}

#[test]
fn a_login_records_the_server_and_link_and_a_second_server_is_told_where_it_is() {
    let h = Harness::new(1);
    let (a, b) = (start(&h, 1), start(&h, 2));
    let (l1, l2) = (FakeLink::new(&h, 1), FakeLink::new(&h, 2));

    assert_eq!(login(&h, &a, "kim", &l1), LoginOutcome::LoggedIn);
    let (data, stat) = h.zk.get(&znode("kim")).expect("znode created");
    assert_ne!(stat.ephemeral_owner, 0, "ephemeral, on the manager's session");
    let record: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(record["link_id"], json!(l1.id.to_string()));
    assert_eq!(a.account_of(l1.id).as_deref(), Some("kim"));
    assert!(a.is_logged_in_here("kim") && !b.is_logged_in_here("kim"));

    assert_eq!(login(&h, &b, "kim", &l2), LoginOutcome::AlreadyLoggedIn { location: Some(a.id()) });
    assert_eq!(b.account_of(l2.id), None, "a refused login leaves nothing behind");
    let b2 = b.clone();
    assert_eq!(h.block_on(async move { b2.locate("kim").await }).unwrap(), Some(a.id()));
}

#[test]
fn an_account_id_with_any_characters_logs_in_once_under_its_encoded_name() {
    let h = Harness::new(11);
    let (a, b) = (start(&h, 1), start(&h, 2));
    let longest = "😀".repeat(ACCOUNT_BYTES_MAX / 4);
    let odd = ["a/b", ".", "..", "a\0b", "100%", "tab\there", longest.as_str()];
    for (n, account) in (10u128..).zip(odd) {
        let (l1, l2) = (FakeLink::new(&h, n), FakeLink::new(&h, n + 100));
        assert_eq!(login(&h, &a, account, &l1), LoginOutcome::LoggedIn, "{account:?}");
        let path = znode(account);
        assert!(path.starts_with(&format!("/{APP}/active_accounts/%")), "{account:?}: escaped, {path:?}");
        assert!(h.zk.get(&path).is_some(), "{account:?}: the znode is at its encoded name");
        assert_eq!(a.account_of(l1.id).as_deref(), Some(account));
        assert_eq!(
            login(&h, &b, account, &l2),
            LoginOutcome::AlreadyLoggedIn { location: Some(a.id()) },
            "{account:?}: still unique across servers"
        );
        assert_eq!(logout(&h, &a, account), Ok(true));
        assert!(h.zk.get(&path).is_none(), "{account:?}: logged out");
    }
    // A plain id keeps the layout of earlier versions: its znode is its own name.
    let l = FakeLink::new(&h, 1);
    assert_eq!(login(&h, &a, "kim.lee-42@example.com", &l), LoginOutcome::LoggedIn);
    assert!(h.zk.get(&format!("/{APP}/active_accounts/kim.lee-42@example.com")).is_some());
    // "a/b" and its encoded name are two different accounts.
    let l = FakeLink::new(&h, 2);
    assert_eq!(login(&h, &b, "%YS9i", &l), LoginOutcome::LoggedIn);
    assert_eq!(znode("%YS9i"), format!("/{APP}/active_accounts/%JVlTOWk"));
}

#[test]
fn an_empty_or_too_long_account_id_is_refused_with_the_rule_and_touches_nothing() {
    let h = Harness::new(12);
    let a = start(&h, 1);
    let too_long = "é".repeat(ACCOUNT_BYTES_MAX / 2 + 1);
    for (account, message) in [
        ("", "account name must be 1 to 64 bytes of UTF-8, not 0"),
        (too_long.as_str(), "account name must be 1 to 64 bytes of UTF-8, not 66"),
    ] {
        let (am, who, link) = (a.clone(), account.to_string(), FakeLink::new(&h, 1) as LinkRef);
        let refused = h.block_on(async move { am.check_and_set_logged_in(&who, link).await }).unwrap_err();
        assert_eq!(refused, AccountError::InvalidAccount { bytes: account.len() });
        assert_eq!(refused.to_string(), message, "what a game sends its client");
        let (am, who) = (a.clone(), account.to_string());
        let located = h.block_on(async move { am.locate(&who).await });
        assert_eq!(located, Err(AccountError::InvalidAccount { bytes: account.len() }));
    }
    assert!(a.local_accounts().is_empty());
    assert_eq!(h.zk.get(&format!("/{APP}/active_accounts")).map(|(_, stat)| stat.num_children), Some(0));
}

#[test]
fn logging_out_by_link_deletes_the_znode_and_frees_the_account_for_another_server() {
    let h = Harness::new(2);
    let (a, b) = (start(&h, 1), start(&h, 2));
    let (l1, l2) = (FakeLink::new(&h, 1), FakeLink::new(&h, 2));
    assert_eq!(login(&h, &a, "kim", &l1), LoginOutcome::LoggedIn);

    assert_eq!(logout_link(&h, &a, 1).as_deref(), Some("kim"));
    assert!(h.zk.get(&znode("kim")).is_none(), "znode deleted");
    assert_eq!(a.account_of(l1.id), None);
    assert!(a.local_accounts().is_empty());
    assert_eq!(login(&h, &b, "kim", &l2), LoginOutcome::LoggedIn);
}

#[test]
fn a_server_cut_from_zookeeper_closes_its_links_before_the_service_can_expire_its_session() {
    let h = Harness::new(3);
    let (a, b) = (start(&h, 1), start(&h, 2));
    let (l1, l2) = (FakeLink::new(&h, 1), FakeLink::new(&h, 2));
    assert_eq!(login(&h, &a, "kim", &l1), LoginOutcome::LoggedIn);
    let sid = owner_session(&h, "kim");
    assert!(a.holds_lease());

    // The cut starts right after a renewal at the latest; the service last hears the
    // session now, so it cannot expire it before `cut + T`.
    let cut = h.now();
    h.zk.disconnect(sid);
    let expiry = cut.saturating_add(SESSION);
    while h.now() < expiry && l1.closed().is_none() {
        assert!(h.advance_to_next_deadline(), "the watchdog has a deadline");
    }
    let (reason, at) = l1.closed().expect("link closed while the lease lapsed");
    assert_eq!(reason, CLOSE_COORDINATION_LOST);
    assert!(at < expiry, "closed at {at:?}, strictly before the earliest expiry {expiry:?}");
    assert!(!a.holds_lease());
    assert_eq!(a.account_of(l1.id), None, "the manager forgot the link");
    assert!(h.zk.get(&znode("kim")).is_some(), "the service still holds the znode");
    assert!(
        matches!(login(&h, &b, "kim", &l2), LoginOutcome::AlreadyLoggedIn { .. }),
        "no one else may act for the account yet"
    );

    // Once the service expires the session, the account is free.
    h.advance(expiry.saturating_since(h.now()) + Duration::from_millis(1));
    assert!(h.zk.get(&znode("kim")).is_none(), "ephemeral gone with the session");
    assert_eq!(login(&h, &b, "kim", &l2), LoginOutcome::LoggedIn);
}

#[test]
fn after_a_cut_shorter_than_the_session_the_dropped_account_is_deleted_so_it_is_not_stuck() {
    let h = Harness::new(4);
    let (a, b) = (start(&h, 1), start(&h, 2));
    let (l1, l2, l3) = (FakeLink::new(&h, 1), FakeLink::new(&h, 2), FakeLink::new(&h, 3));
    assert_eq!(login(&h, &a, "kim", &l1), LoginOutcome::LoggedIn);
    let sid = owner_session(&h, "kim");

    h.zk.disconnect(sid);
    let cut = h.now();
    while l1.closed().is_none() {
        assert!(h.advance_to_next_deadline());
    }
    assert!(h.now().saturating_since(cut) < SESSION);
    h.zk.reconnect(sid);
    // The renewer finds the session alive: the lease is back and the dropped account's
    // znode (still on this session) is deleted.
    h.advance(Duration::from_secs(3));
    assert!(a.holds_lease(), "lease renewed after the reconnect");
    assert!(h.zk.sessions().contains(&sid), "same session, never expired");
    assert!(h.zk.get(&znode("kim")).is_none(), "dropped account cleaned up");
    assert_eq!(login(&h, &b, "kim", &l2), LoginOutcome::LoggedIn);
    // And the first server serves new logins again.
    assert_eq!(login(&h, &a, "lee", &l3), LoginOutcome::LoggedIn);
}

#[test]
fn after_its_session_expired_the_manager_opens_a_new_one_and_logs_in_again() {
    let h = Harness::new(5);
    let a = start(&h, 1);
    let (l1, l2) = (FakeLink::new(&h, 1), FakeLink::new(&h, 2));
    assert_eq!(login(&h, &a, "kim", &l1), LoginOutcome::LoggedIn);
    let old = owner_session(&h, "kim");
    h.zk.expire(old);
    h.advance(SESSION);
    assert!(l1.closed().is_some(), "the old session's login is over");
    assert_eq!(login(&h, &a, "kim", &l2), LoginOutcome::LoggedIn);
    assert_ne!(owner_session(&h, "kim"), old, "a new session owns the new login");
}

#[test]
fn a_login_on_a_new_link_rewrites_its_znode_and_the_logout_deletes_it_at_the_new_version() {
    let h = Harness::new(7);
    let a = start(&h, 1);
    let (l1, l2) = (FakeLink::new(&h, 1), FakeLink::new(&h, 2));
    assert_eq!(login(&h, &a, "kim", &l1), LoginOutcome::LoggedIn);
    assert_eq!(h.zk.get(&znode("kim")).expect("created").1.version, 0);
    l1.close("gone");
    assert_eq!(login(&h, &a, "kim", &l2), LoginOutcome::LoggedIn);
    let (data, stat) = h.zk.get(&znode("kim")).expect("still there");
    assert_eq!(stat.version, 1, "rewritten for the new link");
    assert_eq!(serde_json::from_slice::<Value>(&data).unwrap()["link_id"], json!(l2.id.to_string()));

    assert_eq!(logout_link(&h, &a, 2).as_deref(), Some("kim"));
    assert!(h.zk.get(&znode("kim")).is_none(), "deleted at version 1");
}

#[test]
fn a_logout_whose_znode_version_moved_on_reads_it_back_and_still_deletes_it() {
    let h = Harness::new(8);
    let a = start(&h, 1);
    let l1 = FakeLink::new(&h, 1);
    assert_eq!(login(&h, &a, "kim", &l1), LoginOutcome::LoggedIn);
    let sid = owner_session(&h, "kim");
    // Our session rewrites it behind the login's back (as a rewrite whose answer was lost).
    let (data, _) = h.zk.get(&znode("kim")).expect("created");
    let wall = h.clock.wall_now();
    let (set, _) = h.zk.with_service(|svc| svc.set_data(sid, &znode("kim"), data, None, wall));
    assert_eq!(set.expect("set").version, 1);

    assert_eq!(logout(&h, &a, "kim"), Ok(true));
    assert!(
        h.zk.get(&znode("kim")).is_none(),
        "the delete at version 0 was refused; read back, then deleted"
    );
    assert!(a.local_accounts().is_empty());
}

#[test]
fn a_create_whose_answer_was_lost_is_found_to_be_ours_by_reading_the_znode() {
    let h = Harness::new(6);
    let a = start(&h, 1);
    let (l1, l2) = (FakeLink::new(&h, 1), FakeLink::new(&h, 2));
    assert_eq!(login(&h, &a, "kim", &l1), LoginOutcome::LoggedIn);
    let sid = owner_session(&h, "kim");
    // The lease is fresh, so the login's first call is the create: applied, answer lost,
    // the connection down until the test reconnects it.
    h.zk.lose_next_answer(sid);
    let (tx, rx) = futures::channel::oneshot::channel();
    let (am, link) = (a.clone(), l2.clone() as LinkRef);
    let _task = h.exec.spawner().spawn(
        "login",
        Box::pin(async move {
            let _ = tx.send(am.check_and_set_logged_in("lee", link).await);
        }),
    );
    h.run_until_stalled();
    assert!(h.zk.get(&znode("lee")).is_some(), "the create was applied");
    assert_eq!(a.account_of(l2.id), None, "but the login does not know yet");
    h.zk.reconnect(sid);
    let outcome = h.block_on(async move { rx.await.expect("login task ran") }).expect("login");
    assert_eq!(outcome, LoginOutcome::LoggedIn);
    assert_eq!(owner_session(&h, "lee"), sid, "the znode the lost answer created is ours");
    assert_eq!(a.account_of(l2.id).as_deref(), Some("lee"));
}

#[test]
fn a_redirect_token_is_accepted_once_at_its_target_with_the_extra_data() {
    let h = Harness::new(7);
    let (a, b) = (start(&h, 1), start(&h, 2));
    let (l1, l2, l3) = (FakeLink::new(&h, 1), FakeLink::new(&h, 2), FakeLink::new(&h, 3));
    h.run_until_stalled();
    assert_eq!(login(&h, &a, "kim", &l1), LoginOutcome::LoggedIn);

    let (a2, target) = (a.clone(), b.id());
    h.block_on(async move { a2.redirect_client("kim", target, json!({"room": 7})).await }).expect("redirect");
    let sent = l1.received(SC_REDIRECT);
    assert_eq!(sent.len(), 1, "the client is told where to go");
    assert!(l1.closed().is_some(), "and its old session closes");
    assert_eq!(a.account_of(l1.id), None);
    let token = sent[0]["token"].as_str().expect("token").to_string();

    let (b2, t2, link) = (b.clone(), token.clone(), l2.clone() as LinkRef);
    let accepted = h.block_on(async move { b2.accept_redirect(&t2, link).await }).expect("accepted");
    assert_eq!((accepted.account.as_str(), accepted.extra_data), ("kim", json!({"room": 7})));
    assert_eq!(b.account_of(l2.id).as_deref(), Some("kim"));

    let (b3, link) = (b.clone(), l3.clone() as LinkRef);
    let replay = h.block_on(async move { b3.accept_redirect(&token, link).await });
    assert!(replay.is_err(), "a token is single use: {replay:?}");
    assert_eq!(b.account_of(l3.id), None);
}

#[test]
fn a_dual_message_reaches_each_link_in_its_clients_form() {
    use crate::rpc::messages::EchoReply;
    use prost::Message;
    #[derive(serde::Serialize)]
    struct Gift {
        message: String,
    }
    impl crate::session::DualReply for Gift {
        type Proto = EchoReply;
        fn to_proto(&self) -> EchoReply {
            EchoReply { message: self.message.clone() }
        }
    }
    let h = Harness::new(8);
    let a = start(&h, 1);
    let (json_link, pb_link) = (FakeLink::new(&h, 1), FakeLink::new_protobuf(&h, 2));
    h.run_until_stalled();
    assert_eq!(login(&h, &a, "kim", &json_link), LoginOutcome::LoggedIn);
    assert_eq!(login(&h, &a, "lee", &pb_link), LoginOutcome::LoggedIn);

    // Sent on A, which holds both links. (The harness has no network: the RPC to another
    // server is checked in `remote.rs`, and end to end by `real/tests/server_process.rs`.)
    for to in ["kim", "lee"] {
        let body = DualBody::of(&Gift { message: format!("for {to}") }).unwrap();
        let a2 = a.clone();
        let delivered = h.block_on(async move { a2.send_message_dual(to, "gift", body).await }).unwrap();
        assert!(delivered, "{to}");
    }
    let nobody = DualBody::of(&Gift { message: "lost".into() }).unwrap();
    let a2 = a.clone();
    let delivered = h.block_on(async move { a2.send_message_dual("nobody", "gift", nobody).await });
    assert!(!delivered.unwrap(), "logged in nowhere");
    assert_eq!(json_link.received("gift"), vec![json!({"message": "for kim"})]);
    assert!(lock(&json_link.sent_proto).is_empty());
    let proto = lock(&pb_link.sent_proto).clone();
    assert_eq!(proto.len(), 1);
    assert_eq!(proto[0].0, "gift");
    assert_eq!(EchoReply::decode(proto[0].1.clone()).unwrap(), EchoReply { message: "for lee".into() });
    assert!(pb_link.received("gift").is_empty(), "the protobuf client got no JSON copy");
}
