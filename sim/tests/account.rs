//! `engine::account` under the simulator: cluster-unique login, locate, cross-server send
//! and broadcast, fencing of a server cut from ZooKeeper (and the planted `no_fencing`
//! bug), redirects with single-use tokens (and the planted `replayable_token` bug).
//!
//! Nodes of every test:
//!
//! | node | address | what |
//! |---|---|---|
//! | `zk` | 10.0.0.1:2181 | simulated ZooKeeper (tickTime 2 s) |
//! | `game-N` | 10.0.1.N (rpc :8015, clients 203.0.113.N:8012) | `Cluster` + `Rpc` + `AccountManager` |
//!
//! Client links are fakes that record what they were sent and when they were closed
//! (simulated milliseconds). Each simulation runs on a fresh OS thread.

use sim::testkit::{eventually, node_env, now_ms, sleep_ms};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::account::{
    AccountBugs, AccountConfig, AccountError, AccountManager, ClientLink, LinkId, LinkRef, LoginOutcome,
    TokenError, CLOSE_COORDINATION_LOST, SC_REDIRECT,
};
use engine::cluster::{Cluster, ClusterConfig, PeerId};
use engine::env::SessionOptions;
use engine::rpc::{Rpc, RpcConfig};
use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use madsim::runtime::Handle;
use madsim::task::NodeId;
use serde_json::{json, Value};
use sim::adapters::ClockControl;

const APP: &str = "sandtable_test";
const SECRET: &str = "a29fd424579997bf91e3a29fd424579997bf91e3a29fd424579997bf91e30001";
/// Session timeout `T` of every session (granted as is: within `[4 s, 40 s]`).
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);
const RPC_PORT: u16 = 8015;
const CLIENT_PORT: u16 = 8012;
/// How long a healthy cluster may take to propagate anything (a few round trips).
const PROPAGATION_MAX: Duration = Duration::from_secs(2);

use engine::env::lock;

fn server_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n))
}

/// What a fake client link saw.
#[derive(Debug, Default, Clone, PartialEq)]
struct LinkLog {
    /// `(msg_type, body, at_ms)`.
    sent: Vec<(String, Value, u64)>,
    /// `(reason, at_ms)`.
    closed: Option<(String, u64)>,
}

/// The link id of the fake link named `name` (at most 16 bytes): the name's bytes.
fn id_of(name: &str) -> LinkId {
    let mut b = [0u8; 16];
    b[..name.len()].copy_from_slice(name.as_bytes());
    LinkId::from_u128(u128::from_be_bytes(b))
}

/// A client connection that records everything.
struct FakeLink {
    id: LinkId,
    log: Mutex<LinkLog>,
}

impl FakeLink {
    fn new(name: &str) -> Arc<FakeLink> {
        Arc::new(FakeLink { id: id_of(name), log: Mutex::default() })
    }
    fn log(&self) -> LinkLog {
        lock(&self.log).clone()
    }
    fn closed_at(&self) -> Option<u64> {
        lock(&self.log).closed.as_ref().map(|c| c.1)
    }
    fn received(&self, msg_type: &str) -> Vec<Value> {
        lock(&self.log).sent.iter().filter(|m| m.0 == msg_type).map(|m| m.1.clone()).collect()
    }
}

impl ClientLink for FakeLink {
    fn link_id(&self) -> LinkId {
        self.id
    }
    fn send_json(&self, msg_type: &str, body: Value) -> bool {
        let mut log = lock(&self.log);
        if log.closed.is_some() {
            return false;
        }
        log.sent.push((msg_type.to_string(), body, now_ms()));
        true
    }
    fn close(&self, reason: &str) {
        let mut log = lock(&self.log);
        if log.closed.is_none() {
            log.closed = Some((reason.to_string(), now_ms()));
        }
    }
    fn is_open(&self) -> bool {
        lock(&self.log).closed.is_none()
    }
}

fn link(l: &Arc<FakeLink>) -> LinkRef {
    l.clone()
}

/// How the servers of one run are configured.
#[derive(Clone, Copy, Default)]
struct Knobs {
    bugs: AccountBugs,
    /// `redirection_strict_check_server_id` off.
    lax_server_check: bool,
    lease_margin: Option<Duration>,
    token_ttl: Option<Duration>,
}

/// A running server: its account manager and a way to run tasks on its node.
#[derive(Clone)]
struct Server {
    am: AccountManager,
    cluster: Cluster,
    exec: mpsc::UnboundedSender<BoxFuture<'static, ()>>,
}

impl Server {
    fn id(&self) -> PeerId {
        self.am.id()
    }

    /// Runs `f(am)` as a task of this server's node (so its I/O comes from that node).
    async fn run<T, Fut>(&self, f: impl FnOnce(AccountManager) -> Fut) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let fut = f(self.am.clone());
        self.exec
            .unbounded_send(
                async move {
                    let _ = tx.send(fut.await);
                }
                .boxed(),
            )
            .expect("server node is running");
        rx.await.expect("server task dropped")
    }

    async fn login(&self, account: &str, l: &Arc<FakeLink>) -> Result<LoginOutcome, AccountError> {
        let (account, l) = (account.to_string(), link(l));
        self.run(move |am| async move { am.check_and_set_logged_in(&account, l).await }).await
    }

    async fn logout(&self, account: &str) -> Result<bool, AccountError> {
        let account = account.to_string();
        self.run(move |am| async move { am.set_logged_out(&account).await }).await
    }

    async fn locate(&self, account: &str) -> Result<Option<PeerId>, AccountError> {
        let account = account.to_string();
        self.run(move |am| async move { am.locate(&account).await }).await
    }

    async fn send(&self, account: &str, body: Value) -> Result<bool, AccountError> {
        let account = account.to_string();
        self.run(move |am| async move { am.send_message(&account, "chat", body).await }).await
    }

    async fn accept(&self, token: &str, l: &Arc<FakeLink>) -> Result<Value, AccountError> {
        let (token, l) = (token.to_string(), link(l));
        self.run(move |am| async move { am.accept_redirect(&token, l).await.map(|r| r.extra_data) }).await
    }
}

type Registry = Arc<Mutex<BTreeMap<String, Server>>>;

struct World {
    handle: Handle,
    clocks: ClockControl,
    zk: NodeId,
    nodes: BTreeMap<String, NodeId>,
    registry: Registry,
    knobs: Knobs,
}

impl World {
    fn new(handle: Handle, knobs: Knobs) -> World {
        let clocks = ClockControl::new();
        let zk = sim::testkit::start_zk(&handle, &clocks);
        World { handle, clocks, zk, nodes: BTreeMap::new(), registry: Registry::default(), knobs }
    }

    /// Starts `game-n` (cluster, rpc, account manager) and waits until it is up.
    async fn start(&mut self, n: u8) -> Server {
        let name = format!("game-{n}");
        let (clocks, registry, node_name, knobs) =
            (self.clocks.clone(), self.registry.clone(), name.clone(), self.knobs);
        let id = self
            .handle
            .create_node()
            .name(&name)
            .ip(server_ip(n))
            .init(move || {
                let env = node_env(&node_name, server_ip(n), &clocks);
                let (registry, name) = (registry.clone(), node_name.clone());
                async move {
                    let session = SessionOptions {
                        session_timeout: SESSION_TIMEOUT,
                        connect_timeout: Duration::from_secs(3),
                    };
                    let rpc_addr = SocketAddr::new(server_ip(n), RPC_PORT);
                    let mut ccfg = ClusterConfig::new(APP, name.clone(), rpc_addr);
                    ccfg.flavor = Some("game".into());
                    ccfg.external_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, n));
                    ccfg.external_ports = BTreeMap::from([("tcp_json".to_string(), CLIENT_PORT)]);
                    ccfg.session = session;
                    let cluster = Cluster::join(env.clone(), ccfg).await.expect("join");
                    let rpc = Rpc::start(
                        env.clone(),
                        cluster.id(),
                        Arc::new(cluster.clone()),
                        RpcConfig::new(rpc_addr),
                    )
                    .await
                    .expect("rpc");
                    let mut acfg = AccountConfig::new(APP);
                    acfg.session = session;
                    acfg.redirection_secret = Some(SECRET.into());
                    acfg.redirection_strict_check_server_id = !knobs.lax_server_check;
                    acfg.bugs = knobs.bugs;
                    if let Some(m) = knobs.lease_margin {
                        acfg.lease_margin = m;
                    }
                    if let Some(t) = knobs.token_ttl {
                        acfg.redirect_token_ttl = t;
                    }
                    let am = AccountManager::start(env, cluster.clone(), rpc, acfg)
                        .await
                        .expect("account manager");
                    let (exec, mut rx) = mpsc::unbounded::<BoxFuture<'static, ()>>();
                    lock(&registry).insert(name, Server { am, cluster, exec });
                    while let Some(f) = rx.next().await {
                        madsim::task::spawn(f);
                    }
                }
            })
            .build()
            .id();
        self.nodes.insert(name.clone(), id);
        for _ in 0..200 {
            if let Some(s) = lock(&self.registry).get(&name) {
                return s.clone();
            }
            sleep_ms(50).await;
        }
        panic!("{name} did not start");
    }

    /// Starts `n` servers and waits until each sees all in its cluster view.
    async fn servers(&mut self, n: u8) -> Vec<Server> {
        let mut out = Vec::new();
        for i in 1..=n {
            out.push(self.start(i).await);
        }
        let all = out.clone();
        let ok =
            eventually(PROPAGATION_MAX, || all.iter().all(|s| s.cluster.peers(true).len() == usize::from(n)));
        assert!(ok.await, "servers never saw each other");
        out
    }

    fn cut_from_zk(&self, name: &str) {
        let net = madsim::net::NetSim::current();
        net.clog_link(self.nodes[name], self.zk);
        net.clog_link(self.zk, self.nodes[name]);
    }

    fn heal_zk(&self, name: &str) {
        let net = madsim::net::NetSim::current();
        net.unclog_link(self.nodes[name], self.zk);
        net.unclog_link(self.zk, self.nodes[name]);
    }
}

/// Runs one simulation of `seed` with `knobs` (see `sim::testkit::simulate`).
fn simulate<T: Send + 'static, Fut: Future<Output = T>>(
    seed: u64,
    knobs: Knobs,
    f: impl FnOnce(World) -> Fut + Send + 'static,
) -> T {
    sim::testkit::simulate(seed, move |handle| World::new(handle, knobs), f)
}

#[test]
fn unique_login_locate_send_and_broadcast() {
    simulate(1, Knobs::default(), |mut w| async move {
        let s = w.servers(3).await;
        let (a, b, c) = (&s[0], &s[1], &s[2]);
        let (la, lb, la2) = (FakeLink::new("a-1"), FakeLink::new("b-1"), FakeLink::new("a-2"));

        assert_eq!(a.login("alice", &la).await, Ok(LoginOutcome::LoggedIn));
        assert_eq!(b.login("alice", &lb).await, Ok(LoginOutcome::AlreadyLoggedIn { location: Some(a.id()) }));
        assert_eq!(a.login("alice", &la).await, Ok(LoginOutcome::LoggedIn), "same link: idempotent");
        assert_eq!(
            a.login("alice", &la2).await,
            Ok(LoginOutcome::AlreadyLoggedIn { location: Some(a.id()) }),
            "another open link on the same server"
        );
        assert!(a.am.is_logged_in_here("alice") && !b.am.is_logged_in_here("alice"));
        assert_eq!(a.am.local_accounts(), vec!["alice".to_string()]);
        for s in [a, b, c] {
            assert_eq!(s.locate("alice").await, Ok(Some(a.id())));
            assert_eq!(s.locate("nobody").await, Ok(None));
        }
        let too_long = "a".repeat(engine::account::ACCOUNT_BYTES_MAX + 1);
        assert_eq!(a.login(&too_long, &la2).await, Err(AccountError::InvalidAccount { bytes: 65 }));
        assert_eq!(a.locate("").await, Err(AccountError::InvalidAccount { bytes: 0 }));

        // Messages: local, remote (by RPC to the owner), to nobody.
        assert_eq!(a.send("alice", json!({"n": 1})).await, Ok(true));
        assert_eq!(c.send("alice", json!({"n": 2})).await, Ok(true));
        assert_eq!(c.send("nobody", json!({"n": 3})).await, Ok(false));
        assert_eq!(la.received("chat"), vec![json!({"n": 1}), json!({"n": 2})]);

        // Broadcasts.
        let lc = FakeLink::new("c-1");
        assert_eq!(c.login("carol", &lc).await, Ok(LoginOutcome::LoggedIn));
        assert_eq!(a.am.broadcast_locally("world", &json!("hi")), 1);
        let n = b.run(|am| async move { am.broadcast_globally("world", &json!("all"), &[]).await }).await;
        assert_eq!(n, Ok(2));
        let only_c = c.id();
        let n = a
            .run(move |am| async move { am.broadcast_globally("world", &json!("c"), &[only_c]).await })
            .await;
        assert_eq!(n, Ok(1));
        assert_eq!(la.received("world"), vec![json!("hi"), json!("all")]);
        assert_eq!(lc.received("world"), vec![json!("all"), json!("c")]);

        // Logout, then login elsewhere.
        assert_eq!(a.logout("alice").await, Ok(true));
        assert_eq!(a.logout("alice").await, Ok(false));
        assert!(la.is_open(), "logout does not close the link");
        assert_eq!(b.locate("alice").await, Ok(None));
        assert_eq!(b.login("alice", &lb).await, Ok(LoginOutcome::LoggedIn));
        assert_eq!(a.locate("alice").await, Ok(Some(b.id())));
        assert_eq!(a.send("alice", json!({"n": 4})).await, Ok(true));
        assert_eq!(lb.received("chat"), vec![json!({"n": 4})]);
        assert_eq!(la.received("chat").len(), 2, "the old link gets nothing more");
    });
}

/// What one partition of game-1 from ZooKeeper looked like (times in simulated ms from the cut).
#[derive(Debug, PartialEq, Eq)]
struct PartitionReport {
    /// When game-1 closed the link (`None`: still open when game-2 logged in).
    closed_after_ms: Option<u64>,
    /// When game-2's login of the same account first succeeded.
    taken_over_after_ms: u64,
    /// game-1 delivered a message to its link after game-2's login succeeded.
    overlap_delivered: bool,
    /// After the heal: `(locate from game-1, locate from game-2)`.
    after_heal: (Option<PeerId>, Option<PeerId>),
    ids: (PeerId, PeerId),
}

/// Cuts game-1 (which holds `alice`) from ZooKeeper; game-2 retries logging `alice` in
/// until it succeeds; then heals.
async fn partition_and_take_over(mut w: World) -> PartitionReport {
    let s = w.servers(2).await;
    let (a, b) = (s[0].clone(), s[1].clone());
    let (la, lb) = (FakeLink::new("a-1"), FakeLink::new("b-1"));
    assert_eq!(a.login("alice", &la).await, Ok(LoginOutcome::LoggedIn));
    sleep_ms(1_000).await;

    let t0 = now_ms();
    w.cut_from_zk("game-1");
    let taken_at = loop {
        match b.login("alice", &lb).await {
            Ok(LoginOutcome::LoggedIn) => break now_ms(),
            Ok(LoginOutcome::AlreadyLoggedIn { location }) => assert_eq!(location, Some(a.id())),
            Err(e) => panic!("game-2 login failed: {e}"),
        }
        assert!(now_ms() - t0 < 30_000, "game-2 never took over");
        sleep_ms(100).await;
    };
    // Does game-1 still act for alice now that game-2 does?
    let overlap_delivered = a.am.is_logged_in_here("alice")
        && a.run(|am| async move { am.send_message("alice", "chat", json!("stale")).await }).await
            == Ok(true);
    let closed_after_ms = la.closed_at().filter(|t| *t <= taken_at).map(|t| t - t0);

    w.heal_zk("game-1");
    let ok = eventually(Duration::from_secs(15), || a.am.holds_lease() && !la.is_open()).await;
    assert!(ok, "game-1 never came back");
    sleep_ms(2_000).await;
    let after_heal = (a.locate("alice").await.unwrap(), b.locate("alice").await.unwrap());
    PartitionReport {
        closed_after_ms,
        taken_over_after_ms: taken_at - t0,
        overlap_delivered,
        after_heal,
        ids: (a.id(), b.id()),
    }
}

#[test]
fn partitioned_server_drops_its_links_before_another_can_log_in() {
    let r = simulate(7, Knobs::default(), partition_and_take_over);
    let closed = r.closed_after_ms.expect("link closed before game-2's login");
    let t = SESSION_TIMEOUT.as_millis() as u64;
    assert!(closed < t, "closed {closed} ms after the cut, before the session timeout {t} ms");
    assert!(closed < r.taken_over_after_ms, "{r:?}");
    assert!(r.taken_over_after_ms >= t - 1_000, "the service expired the session after ~T: {r:?}");
    assert!(!r.overlap_delivered, "{r:?}");
    assert_eq!(r.after_heal, (Some(r.ids.1), Some(r.ids.1)), "alice is on game-2 for everyone");
}

#[test]
fn no_fencing_bug_lets_two_servers_act_at_once() {
    let knobs = Knobs { bugs: AccountBugs { no_fencing: true, ..Default::default() }, ..Default::default() };
    let r = simulate(7, knobs, partition_and_take_over);
    assert_eq!(r.closed_after_ms, None, "{r:?}");
    assert!(r.overlap_delivered, "game-1 still delivers after game-2 logged in: {r:?}");
}

#[test]
fn short_partition_lapses_the_lease_and_cleans_up_after_heal() {
    // A 2 s margin makes the lease (2.75 s) end well before the session can expire (≥ 4.2 s).
    let knobs = Knobs { lease_margin: Some(Duration::from_secs(2)), ..Default::default() };
    simulate(11, knobs, |mut w| async move {
        let s = w.servers(2).await;
        let (a, b) = (s[0].clone(), s[1].clone());
        let (la, lb) = (FakeLink::new("a-1"), FakeLink::new("b-1"));
        assert_eq!(a.login("alice", &la).await, Ok(LoginOutcome::LoggedIn));
        sleep_ms(1_000).await;
        let t0 = now_ms();
        w.cut_from_zk("game-1");
        assert!(eventually(Duration::from_secs(4), || !la.is_open()).await, "link never closed");
        let closed = la.closed_at().unwrap() - t0;
        assert!(closed <= 2_750, "closed {closed} ms after the cut");
        assert_eq!(la.log().closed.unwrap().0, CLOSE_COORDINATION_LOST);
        assert!(a.am.local_accounts().is_empty() && !a.am.holds_lease());
        // While game-1's session lives, its record keeps alice "logged in" on game-1.
        assert_eq!(b.login("alice", &lb).await, Ok(LoginOutcome::AlreadyLoggedIn { location: Some(a.id()) }));
        sleep_ms(3_500 - closed.min(3_500)).await;
        w.heal_zk("game-1");
        // The session survived; game-1 deletes the record of the account it dropped.
        assert!(eventually(Duration::from_secs(3), || a.am.holds_lease()).await);
        let mut gone = false;
        for _ in 0..40 {
            if b.locate("alice").await == Ok(None) {
                gone = true;
                break;
            }
            sleep_ms(100).await;
        }
        assert!(gone, "alice was left logged in nowhere");
        assert_eq!(b.login("alice", &lb).await, Ok(LoginOutcome::LoggedIn));
        assert_eq!(a.locate("alice").await, Ok(Some(b.id())));
        // A login on game-1 works again too (its lease is back).
        let la2 = FakeLink::new("a-2");
        assert_eq!(a.login("bob", &la2).await, Ok(LoginOutcome::LoggedIn));
    });
}

/// `(account, link id, success, extra_data)` as a redirection handler saw it.
type HandlerCall = (String, LinkId, bool, Value);

fn token_of(l: &FakeLink) -> String {
    let msgs = l.received(SC_REDIRECT);
    assert_eq!(msgs.len(), 1, "one _sc_redirect");
    msgs[0]["token"].as_str().expect("token").to_string()
}

#[test]
fn redirect_end_to_end_and_bad_tokens() {
    let knobs = Knobs { token_ttl: Some(Duration::from_secs(2)), ..Default::default() };
    simulate(3, knobs, |mut w| async move {
        let s = w.servers(3).await;
        let (a, b, c) = (s[0].clone(), s[1].clone(), s[2].clone());
        let seen: Arc<Mutex<Vec<HandlerCall>>> = Arc::default();
        for srv in &s {
            let seen = seen.clone();
            srv.am.register_redirection_handler(move |account, l, ok, extra| {
                lock(&seen).push((account, l.link_id(), ok, extra));
            });
        }
        let la = FakeLink::new("a-1");
        assert_eq!(a.login("alice", &la).await, Ok(LoginOutcome::LoggedIn));
        let target = b.id();
        let extra = json!({"room": 7, "mode": "pvp"});
        let e = extra.clone();
        let r = a.run(move |am| async move { am.redirect_client("alice", target, e).await }).await;
        assert_eq!(r, Ok(()));
        let msg = &la.received(SC_REDIRECT)[0];
        assert_eq!(msg["host"], json!("203.0.113.2"));
        assert_eq!(msg["port"], json!(CLIENT_PORT));
        assert_eq!(msg["flavor"], json!("game"));
        assert_eq!(la.log().closed.map(|c| c.0), Some("redirected".to_string()));
        assert!(!a.am.is_logged_in_here("alice"));
        let token = token_of(&la);

        // Tampered and wrong-server tokens are refused before anything else.
        let mut bytes = token.clone().into_bytes();
        bytes[10] = if bytes[10] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(bytes).unwrap();
        let lx = FakeLink::new("x");
        assert_eq!(b.accept(&tampered, &lx).await, Err(AccountError::BadToken(TokenError::BadSignature)));
        assert_eq!(b.accept("not a token", &lx).await, Err(AccountError::BadToken(TokenError::Malformed)));
        assert_eq!(c.accept(&token, &lx).await, Err(AccountError::BadToken(TokenError::WrongServer)));

        // The real client arrives at game-2.
        let lb = FakeLink::new("b-1");
        assert_eq!(b.accept(&token, &lb).await, Ok(extra.clone()));
        assert!(b.am.is_logged_in_here("alice"));
        assert_eq!(a.locate("alice").await, Ok(Some(b.id())));
        // A replay, even after alice logged out again, is refused.
        assert_eq!(b.logout("alice").await, Ok(true));
        let lr = FakeLink::new("replay");
        assert_eq!(b.accept(&token, &lr).await, Err(AccountError::BadToken(TokenError::Replayed)));
        assert_eq!(b.locate("alice").await, Ok(None));

        // An expired token: redirect alice from game-2 to game-1 and arrive too late.
        assert_eq!(b.login("alice", &lb).await, Ok(LoginOutcome::LoggedIn));
        let target = a.id();
        let r = b.run(move |am| async move { am.redirect_client("alice", target, json!(null)).await }).await;
        assert_eq!(r, Ok(()));
        let late = token_of(&lb);
        sleep_ms(2_000 + 5_000 + 500).await; // ttl + skew allowance
        let ll = FakeLink::new("late");
        assert_eq!(a.accept(&late, &ll).await, Err(AccountError::BadToken(TokenError::Expired)));

        // Redirecting an account that is not here, or to an unknown peer.
        let r = c.run(move |am| async move { am.redirect_client("alice", target, json!(null)).await }).await;
        assert_eq!(r, Err(AccountError::NotLoggedInHere("alice".into())));

        let seen = lock(&seen).clone();
        let expect = vec![
            ("alice".to_string(), id_of("x"), false, extra.clone()), // wrong server (signed)
            ("alice".to_string(), id_of("b-1"), true, extra.clone()),
            ("alice".to_string(), id_of("replay"), false, extra),
            ("alice".to_string(), id_of("late"), false, json!(null)),
        ];
        assert_eq!(seen, expect, "handlers run for every validly signed token, never for forged ones");
    });
}

/// Accepts one token twice (logging out in between): on game-2 then `second_at`.
async fn use_token_twice(
    mut w: World,
    second_on_c: bool,
) -> (Result<Value, AccountError>, Result<Value, AccountError>) {
    let s = w.servers(3).await;
    let (a, b, c) = (s[0].clone(), s[1].clone(), s[2].clone());
    let la = FakeLink::new("a-1");
    assert_eq!(a.login("alice", &la).await, Ok(LoginOutcome::LoggedIn));
    let target = b.id();
    a.run(move |am| async move { am.redirect_client("alice", target, json!({"k": 1})).await }).await.unwrap();
    let token = token_of(&la);
    let first = b.accept(&token, &FakeLink::new("b-1")).await;
    assert_eq!(b.logout("alice").await, Ok(true));
    let second = if second_on_c {
        c.accept(&token, &FakeLink::new("c-1")).await
    } else {
        b.accept(&token, &FakeLink::new("b-2")).await
    };
    (first, second)
}

#[test]
fn tokens_are_single_use_across_servers() {
    let knobs = Knobs { lax_server_check: true, ..Default::default() };
    let (first, second) = simulate(5, knobs, |w| use_token_twice(w, true));
    assert_eq!(first, Ok(json!({"k": 1})));
    assert_eq!(second, Err(AccountError::BadToken(TokenError::Replayed)));
}

#[test]
fn replayable_token_bug_accepts_a_token_twice() {
    let knobs =
        Knobs { bugs: AccountBugs { replayable_token: true, ..Default::default() }, ..Default::default() };
    let (first, second) = simulate(5, knobs, |w| use_token_twice(w, false));
    assert_eq!(first, Ok(json!({"k": 1})));
    assert_eq!(second, Ok(json!({"k": 1})));
}

#[test]
fn same_seed_same_results() {
    let one = simulate(21, Knobs::default(), partition_and_take_over);
    let two = simulate(21, Knobs::default(), partition_and_take_over);
    assert_eq!(one, two);
    assert!(one.closed_after_ms.is_some());
}

/// The fencing invariant over a range of seeds, and the planted bug caught on every one.
#[test]
fn sweep_partition_seeds() {
    for seed in 100..116 {
        let r = simulate(seed, Knobs::default(), partition_and_take_over);
        let closed = r.closed_after_ms.unwrap_or_else(|| panic!("seed {seed}: link open at takeover: {r:?}"));
        assert!(closed < r.taken_over_after_ms && !r.overlap_delivered, "seed {seed}: {r:?}");
        assert_eq!(r.after_heal, (Some(r.ids.1), Some(r.ids.1)), "seed {seed}");
        let knobs =
            Knobs { bugs: AccountBugs { no_fencing: true, ..Default::default() }, ..Default::default() };
        let bad = simulate(seed, knobs, partition_and_take_over);
        assert!(bad.overlap_delivered, "seed {seed}: no_fencing not caught: {bad:?}");
    }
}

/// game-1's monotonic clock runs 4 % slow (inside `drift_ppm_max` = 5 %): its lease lasts
/// longer in true time, and must still end before the service expires its session.
#[test]
fn slow_clock_within_the_drift_bound_is_still_fenced() {
    for seed in 200..206 {
        let r = simulate(seed, Knobs::default(), |w| {
            w.clocks.set_drift("game-1", -40_000);
            partition_and_take_over(w)
        });
        let closed = r.closed_after_ms.unwrap_or_else(|| panic!("seed {seed}: link open at takeover: {r:?}"));
        assert!(closed < r.taken_over_after_ms && !r.overlap_delivered, "seed {seed}: {r:?}");
    }
}
