//! The reference game's `login` flavor under the simulator (`game::login_server`): a client's
//! `cs_login {user_name}` gets a session key for that user and the cluster's gates, least
//! loaded first.
//!
//! Nodes of every test:
//!
//! | node | address | what |
//! |---|---|---|
//! | `zk` | 10.0.0.1:2181 | simulated ZooKeeper (tickTime 2 s) |
//! | `login-1` | 10.0.1.1 (clients :8012, rpc :8015) | a `GameServer` of flavor `login` |
//! | `gate-1` .. `gate-4` | 10.0.1.n, n = 2..5 (announce clients 203.0.113.n:7000+n) | fake gates: `Cluster` members tagged `gate` that publish the status the test sets (none until set) |
//! | `game-9` | 10.0.1.9 | a member tagged `game` with the lowest `player_count`: never listed |
//! | `client` | 10.0.2.1 | the test body, speaking the wire protocol (`GameClient`) |
//!
//! Each simulation runs on a fresh OS thread (std's `HashMap` seeding must happen on a thread
//! that has not built one yet, or two runs of one seed could differ).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::account::AccountConfig;
use engine::cluster::{Cluster, ClusterConfig, PeerId};
use engine::env::{lock, Env, SessionOptions, WallTime};
use engine::gate::{self, GateConfig, SessionKeyError, GATE_LOAD_FIELD, GATE_TAG, SESSION_KEY_TTL_DEFAULT};
use engine::rpc::RpcConfig;
use engine::session::{SessionConfig, Transport};
use engine::signed::{parse_secret, CLOCK_SKEW_ALLOWANCE};
use engine::storage::StorageConfig;
use game::login_server::{CsLogin, NO_GATE};
use game::wire::Request;
use game::{Flavor, GameConfig, GameServer};
use madsim::runtime::{Handle, NodeHandle};
use scenarios::game_client::{GameClient, ReqError};
use serde_json::{json, Value};
use sim::adapters::ClockControl;
use sim::testkit::{eventually, node_env, sleep_ms};

const APP: &str = "sandtable_test";
/// The login server's `Gate.session_key_secret`: the gates would check keys with it.
const SECRET: &str = "6c6f67696e2d7365727665722d746573742d7365637265742d30303030303031";
/// Session timeout of every ZooKeeper session.
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_PORT: u16 = 8012;
const RPC_PORT: u16 = 8015;
/// How long a healthy cluster may take to propagate a registration or a status.
const PROPAGATION_MAX: Duration = Duration::from_secs(3);

fn server_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n))
}

fn client_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1))
}

/// Where the member on server number `n` tells clients to connect.
fn gate_client_addr(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)), 7000 + u16::from(n))
}

fn session() -> SessionOptions {
    SessionOptions { session_timeout: SESSION_TIMEOUT, connect_timeout: Duration::from_secs(3) }
}

/// A fake member: its id once joined, and the status it should publish (`None`: none yet).
#[derive(Default)]
struct Member {
    id: Option<PeerId>,
    status: Option<Value>,
}

/// The omniscient view of one run.
#[derive(Clone)]
struct World {
    handle: Handle,
    clocks: ClockControl,
    /// The node the test's clients run on.
    client: NodeHandle,
    /// The login server's cluster handle, once it started.
    login: Arc<Mutex<Option<Cluster>>>,
    /// Fake members by name.
    members: Arc<Mutex<BTreeMap<String, Member>>>,
}

/// The login server's configuration: one TCP JSON port, the session-key secret.
fn login_config(env: &Env) -> GameConfig {
    let ip = env.net.local_ip();
    let mut cluster = ClusterConfig::new(APP, "login-1", SocketAddr::new(ip, RPC_PORT));
    cluster.flavor = Some(Flavor::Login.to_string());
    cluster.session = session();
    let mut account = AccountConfig::new(APP);
    account.session = session();
    GameConfig {
        flavor: Flavor::Login,
        sessions: vec![SessionConfig::new(SocketAddr::new(ip, CLIENT_PORT), Transport::TcpJson)],
        session_limits: Default::default(),
        listeners: None,
        rpc: RpcConfig::new(cluster.rpc_addr),
        cluster,
        account,
        gate: GateConfig { session_key_secret: Some(SECRET.into()), ..GateConfig::default() },
        gateway: Default::default(),
        storage: StorageConfig::default(),
        bugs: Default::default(),
        tick_period: None,
        observer: None,
        objects: None,
        metrics: None,
    }
}

impl World {
    /// Starts the zk node and the `client` node (nothing else yet).
    fn new(handle: Handle) -> World {
        let clocks = ClockControl::new();
        sim::testkit::start_zk(&handle, &clocks);
        let client = handle.create_node().name("client").ip(client_ip()).build();
        World { handle, clocks, client, login: Default::default(), members: Default::default() }
    }

    /// Starts `login-1` and waits until it serves.
    async fn start_login(&self) -> Cluster {
        let (clocks, slot) = (self.clocks.clone(), self.login.clone());
        self.handle
            .create_node()
            .name("login-1")
            .ip(server_ip(1))
            .init(move || {
                let env = node_env("login-1", server_ip(1), &clocks);
                let slot = slot.clone();
                async move {
                    let server =
                        GameServer::start(env.clone(), login_config(&env)).await.expect("login starts");
                    *lock(&slot) = Some(server.cluster().clone());
                    futures::future::pending::<()>().await;
                    drop(server);
                }
            })
            .build();
        assert!(eventually(PROPAGATION_MAX, || lock(&self.login).is_some()).await, "login-1 never started");
        lock(&self.login).clone().expect("started")
    }

    /// Starts member `name` (server number `n`) with `tags`; it publishes whatever
    /// [`World::set_status`] last gave it. Waits for the join.
    async fn start_member(&self, name: &str, n: u8, tags: &[&str]) -> PeerId {
        lock(&self.members).insert(name.to_string(), Member::default());
        let mut cfg = ClusterConfig::new(APP, name, SocketAddr::new(server_ip(n), RPC_PORT));
        cfg.tags = tags.iter().map(|t| t.to_string()).collect();
        cfg.external_ip = gate_client_addr(n).ip();
        cfg.external_ports = BTreeMap::from([("tcp_json".to_string(), gate_client_addr(n).port())]);
        cfg.session = session();
        let (clocks, members, node) = (self.clocks.clone(), self.members.clone(), name.to_string());
        self.handle
            .create_node()
            .name(name)
            .ip(server_ip(n))
            .init(move || {
                let env = node_env(&node, server_ip(n), &clocks);
                let (cfg, members, node) = (cfg.clone(), members.clone(), node.clone());
                async move {
                    let cluster = Cluster::join(env, cfg).await.expect("join");
                    let mut published = None;
                    loop {
                        let wanted = {
                            let mut m = lock(&members);
                            let me = m.get_mut(&node).expect("registered");
                            me.id = Some(cluster.id());
                            me.status.clone()
                        };
                        if wanted.is_some() && wanted != published {
                            if let Some(s) = &wanted {
                                cluster.set_status(s.clone()).await.expect("set_status");
                            }
                            published = wanted;
                        }
                        sleep_ms(20).await;
                    }
                }
            })
            .build();
        let joined = eventually(PROPAGATION_MAX, || lock(&self.members)[name].id.is_some()).await;
        assert!(joined, "{name} never joined");
        lock(&self.members)[name].id.expect("joined")
    }

    fn set_status(&self, name: &str, status: Value) {
        lock(&self.members).get_mut(name).expect("member").status = Some(status);
    }

    /// Runs `body` on the `client` node.
    async fn on_client<T: Send + 'static, Fut: Future<Output = T> + Send + 'static>(
        &self,
        body: impl FnOnce(Env) -> Fut + Send + 'static,
    ) -> T {
        let clocks = self.clocks.clone();
        let task = self.client.spawn(async move { body(node_env("client", client_ip(), &clocks)).await });
        task.await.expect("client task")
    }
}

/// Runs one simulation of `seed` (see `sim::testkit::simulate`).
fn simulate<T: Send + 'static, Fut: Future<Output = T>>(
    seed: u64,
    f: impl FnOnce(World) -> Fut + Send + 'static,
) -> T {
    sim::testkit::simulate(seed, World::new, f)
}

async fn connect(env: &Env) -> GameClient {
    let now = Arc::new(|| madsim::time::TimeHandle::current().elapsed().as_nanos() as u64);
    GameClient::connect(env, now, SocketAddr::new(server_ip(1), CLIENT_PORT))
        .await
        .expect("connect to login-1")
}

async fn cs_login(c: &mut GameClient, user: &str) -> Value {
    c.request(CsLogin::TYPE, json!({ "user_name": user }), CsLogin::REPLY).await.expect("sc_login")
}

/// `sc_login`'s gates as addresses.
fn gates_of(reply: &Value) -> Vec<SocketAddr> {
    reply["gates"]
        .as_array()
        .expect("gates is an array")
        .iter()
        .map(|g| {
            let host: IpAddr = g["host"].as_str().expect("host").parse().expect("an IP");
            SocketAddr::new(host, u16::try_from(g["port"].as_u64().expect("port")).expect("a port"))
        })
        .collect()
}

#[test]
fn a_login_lists_the_gates_least_loaded_first_and_its_key_verifies_for_the_user() {
    for seed in [1, 2, 3] {
        simulate(seed, move |w| async move {
            let login = w.start_login().await;
            // No gate yet: refused, and the session stays open.
            let (reply, open) = w
                .on_client(|env| async move {
                    let mut c = connect(&env).await;
                    (cs_login(&mut c, "alice").await, c.is_open())
                })
                .await;
            assert_eq!(reply, json!({"error": true, "error_message": NO_GATE}), "seed {seed}");
            assert!(open, "seed {seed}: a refusal keeps the session");

            w.start_member("gate-1", 2, &[GATE_TAG]).await;
            let g2 = w.start_member("gate-2", 3, &[GATE_TAG]).await;
            w.start_member("gate-3", 4, &[GATE_TAG]).await;
            let g4 = w.start_member("gate-4", 5, &[GATE_TAG]).await;
            w.start_member("game-9", 9, &["game"]).await;
            w.set_status("gate-1", json!({ GATE_LOAD_FIELD: 5 }));
            w.set_status("gate-2", json!({ GATE_LOAD_FIELD: 2 }));
            w.set_status("gate-4", json!({ GATE_LOAD_FIELD: 2 }));
            w.set_status("game-9", json!({ GATE_LOAD_FIELD: 0 }));
            // gate-3 publishes no status: it is listed last.
            let seen = eventually(PROPAGATION_MAX, || {
                let v = login.peers_with_tag(GATE_TAG, false);
                v.len() == 4 && v.values().filter(|i| !i.status.is_null()).count() == 3
            })
            .await;
            assert!(seen, "seed {seed}: the login server never saw the gates' statuses");
            // gate-2 and gate-4 tie at 2: the smaller peer id first.
            let (tie_first, tie_second) = if g2 < g4 { (3, 5) } else { (5, 3) };
            let expected = [tie_first, tie_second, 2, 4].map(gate_client_addr).to_vec();

            let (reply, again, issued_at) = w
                .on_client(|env| async move {
                    let mut c = connect(&env).await;
                    let issued_at = env.clock.wall_now();
                    let first = cs_login(&mut c, "alice").await;
                    (first, cs_login(&mut c, "alice").await, issued_at)
                })
                .await;
            assert_eq!(reply["error"], json!(false), "seed {seed}: {reply}");
            assert_eq!(gates_of(&reply), expected, "seed {seed}: least loaded first, no status last");
            let key = reply["session_key"].as_str().expect("a key");
            let secret = parse_secret(SECRET).unwrap();
            let claims =
                gate::verify_for(&secret, key, "alice", issued_at).expect("the key verifies for alice");
            assert_eq!(claims.user, "alice");
            let ttl_ms = SESSION_KEY_TTL_DEFAULT.as_millis() as i64;
            let lifetime = claims.expires_at.as_millis() - issued_at.as_millis();
            assert!(
                (ttl_ms..ttl_ms + 1_000).contains(&lifetime),
                "seed {seed}: expires {lifetime} ms after issue"
            );
            assert_eq!(gate::verify_for(&secret, key, "bob", issued_at), Err(SessionKeyError::WrongUser));
            let past = WallTime(claims.expires_at.saturating_add(CLOCK_SKEW_ALLOWANCE).as_millis() + 1);
            assert_eq!(gate::verify(&secret, key, past), Err(SessionKeyError::Expired));
            // A second login gets another key, as valid.
            let key2 = again["session_key"].as_str().expect("a second key");
            assert_ne!(key2, key);
            assert!(gate::verify_for(&secret, key2, "alice", issued_at).is_ok());

            // The load changes: gate-1 empties and comes first.
            w.set_status("gate-1", json!({ GATE_LOAD_FIELD: 0 }));
            let reordered = w
                .on_client(|env| async move {
                    let mut c = connect(&env).await;
                    let deadline = madsim::time::Instant::now() + PROPAGATION_MAX;
                    loop {
                        let r = cs_login(&mut c, "alice").await;
                        if gates_of(&r).first() == Some(&gate_client_addr(2))
                            || madsim::time::Instant::now() >= deadline
                        {
                            return r;
                        }
                        sleep_ms(100).await;
                    }
                })
                .await;
            let order = gates_of(&reordered);
            assert_eq!(order[0], gate_client_addr(2), "seed {seed}: {reordered}");
            assert_eq!(order[3], gate_client_addr(4), "seed {seed}: no status, still last");

            // Any UTF-8 name is an account id: one with '/' gets a key like any other.
            let odd =
                w.on_client(|env| async move { cs_login(&mut connect(&env).await, "a/b 😀").await }).await;
            assert_eq!(odd["error"], json!(false), "seed {seed}: {odd}");
            // A name over 64 bytes: refused with the rule, and the session closes (a
            // malformed request).
            let (bad, closed) = w
                .on_client(|env| async move {
                    let mut c = connect(&env).await;
                    let r = cs_login(&mut c, &"x".repeat(65)).await;
                    let end = c.wait_for(&["none"], Duration::from_secs(2)).await;
                    (r, matches!(end, Err(ReqError::Closed)))
                })
                .await;
            assert_eq!(
                bad,
                json!({"error": true, "error_message": "account name must be 1 to 64 bytes of UTF-8, not 65"})
            );
            assert!(closed, "seed {seed}: the session stays open after a malformed login");
        });
    }
}
