//! Gateways under the simulator (`engine::gate`): a client logs in on a gate with a session
//! key, its counter messages reach a backend through the gate, and a `cs_move` switches it to
//! the other backend without a reconnect — nothing lost, nothing applied twice, replies in
//! order. Forged and expired keys are refused.
//!
//! Nodes:
//!
//! | node | address | what |
//! |---|---|---|
//! | `zk` | 10.0.0.1:2181 | simulated ZooKeeper |
//! | `sql-0` | 10.0.3.1:3306 | one simulated SQL instance (every shard) |
//! | `game-1`, `game-2` | 10.0.1.1, 10.0.1.2 (clients :8012, rpc :8015) | `game` servers with the object store |
//! | `gate-1`, `gate-2` | 10.0.1.3, 10.0.1.4 | `gate` servers (`gate-2` only where a test says) |
//! | `client` | 10.0.2.1 | the test body, on the wire (`GameClient`) |

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use engine::account::AccountConfig;
use engine::cluster::ClusterConfig;
use engine::env::{Env, SessionOptions};
use engine::gate::{GateConfig, SessionKeys, GATE_TAG};
use engine::orm::OrmConfig;
use engine::rpc::RpcConfig;
use engine::session::{SessionConfig, Transport};
use engine::signed::parse_secret;
use engine::storage::StorageConfig;
use game::{Flavor, GameConfig, GameServer, ObjectsConfig, GAME_TAG};
use madsim::runtime::{Handle, NodeHandle};
use madsim::task::NodeId;
use scenarios::game_client::{GameClient, ReqError};
use serde_json::{json, Value};
use sim::adapters::ClockControl;
use sim::testkit::{node_env, sleep_ms, sql_directory, start_sql};

const APP: &str = "sandtable_test";
const SECRET: &str = "6761746521746573742d7365637265742d2d2d2d2d2d2d2d2d2d2d2d2d303031";
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_PORT: u16 = 8012;
const RPC_PORT: u16 = 8015;
/// How long servers may take to start and see each other.
const STARTUP: Duration = Duration::from_secs(4);

fn server_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n))
}

fn client_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1))
}

fn session() -> SessionOptions {
    SessionOptions { session_timeout: SESSION_TIMEOUT, connect_timeout: Duration::from_secs(3) }
}

/// One server's configuration: `flavor` on server number `n`.
fn config(env: &Env, flavor: Flavor, name: &str) -> GameConfig {
    let ip = env.net.local_ip();
    let mut cluster = ClusterConfig::new(APP, name, SocketAddr::new(ip, RPC_PORT));
    cluster.flavor = Some(flavor.to_string());
    cluster.session = session();
    cluster.tags.insert(if flavor == Flavor::Gate { GATE_TAG } else { GAME_TAG }.to_string());
    let mut account = AccountConfig::new(APP);
    account.session = session();
    let objects = (flavor == Flavor::Game).then(|| ObjectsConfig {
        shard: engine::shard::ShardConfig::round_robin(&[sim::testkit::sql_node_name(0)], 4),
        orm: OrmConfig::new(APP),
        observer: None,
    });
    GameConfig {
        flavor,
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
        objects,
        metrics: None,
    }
}

struct World {
    handle: Handle,
    clocks: ClockControl,
    client: NodeHandle,
}

impl World {
    fn new(handle: Handle) -> World {
        let clocks = ClockControl::new();
        sim::testkit::start_zk(&handle, &clocks);
        start_sql(&handle, &clocks, 0, Default::default());
        let client = handle.create_node().name("client").ip(client_ip()).build();
        World { handle, clocks, client }
    }

    fn start(&self, flavor: Flavor, name: &'static str, n: u8) -> NodeId {
        self.start_with(flavor, name, n, |_| {})
    }

    /// [`start`](Self::start) with `tweak` applied to the server's configuration.
    fn start_with(&self, flavor: Flavor, name: &'static str, n: u8, tweak: fn(&mut GameConfig)) -> NodeId {
        let clocks = self.clocks.clone();
        self.handle
            .create_node()
            .name(name)
            .ip(server_ip(n))
            .init(move || {
                let mut env = node_env(name, server_ip(n), &clocks);
                env.db = Arc::new(sql_directory(env.net.clone(), env.clock.clone(), env.spawn.clone(), 1));
                async move {
                    let mut cfg = config(&env, flavor, name);
                    tweak(&mut cfg);
                    let server = loop {
                        match GameServer::start(env.clone(), cfg.clone()).await {
                            Ok(s) => break s,
                            Err(e) => {
                                tracing::warn!(error = %e, "server start failed; retrying");
                                sleep_ms(200).await;
                            }
                        }
                    };
                    futures::future::pending::<()>().await;
                    drop(server);
                }
            })
            .build()
            .id()
    }

    async fn on_client<T: Send + 'static, Fut: Future<Output = T> + Send + 'static>(
        &self,
        body: impl FnOnce(Env) -> Fut + Send + 'static,
    ) -> T {
        let clocks = self.clocks.clone();
        let task = self.client.spawn(async move { body(node_env("client", client_ip(), &clocks)).await });
        task.await.expect("client task")
    }
}

/// One simulation (`sim::testkit::simulate`): ZooKeeper, `sql-0` and the client node exist;
/// the test starts the servers.
fn simulate<T, F, Fut>(seed: u64, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(World) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    sim::testkit::simulate(seed, World::new, f)
}

/// A valid session key for `user`, as a login server would issue it.
fn key_for(env: &Env, user: &str) -> String {
    let keys = SessionKeys::new(parse_secret(SECRET).unwrap(), Duration::from_secs(300));
    keys.issue(user, env.clock.wall_now(), &*env.rand).expect("issued").0
}

async fn gate_client(env: &Env) -> GameClient {
    gate_client_at(env, 3).await
}

/// A client connected to the gate on server number `n`.
async fn gate_client_at(env: &Env, n: u8) -> GameClient {
    let now = Arc::new(|| madsim::time::TimeHandle::current().elapsed().as_nanos() as u64);
    GameClient::connect(env, now, SocketAddr::new(server_ip(n), CLIENT_PORT))
        .await
        .unwrap_or_else(|| panic!("connect to the gate at {}", server_ip(n)))
}

/// Asks the gate `c` is connected to to log `user` in with a valid key: `sc_gate_login` (a
/// refusal is `error: true`), or why no answer came.
async fn gate_login(env: &Env, c: &mut GameClient, user: &str) -> Result<Value, ReqError> {
    c.request("cs_gate_login", json!({"user_name": user, "session_key": key_for(env, user)}), "sc_gate_login")
        .await
}

async fn add(c: &mut GameClient, seq: u64) -> Value {
    c.request("cs_counter_add", json!({"n": seq, "seq": seq}), "sc_counter").await.expect("sc_counter")
}

#[test]
fn a_player_moves_between_backends_through_its_gate_without_reconnecting() {
    for seed in [1, 2, 3] {
        simulate(seed, move |w| async move {
            w.start(Flavor::Game, "game-1", 1);
            w.start(Flavor::Game, "game-2", 2);
            w.start(Flavor::Gate, "gate-1", 3);
            sleep_ms(STARTUP.as_millis() as u64).await;
            w.on_client(move |env| async move {
                let mut c = gate_client(&env).await;
                let login = gate_login(&env, &mut c, "alice").await.expect("sc_gate_login");
                assert_eq!(login["error"], json!(false), "seed {seed}: {login}");
                let first = login["backend"].as_str().expect("backend").to_string();
                let other = if first == "game-1" { "game-2" } else { "game-1" };
                let mut sum = 0;
                for seq in 1..=5 {
                    sum += seq as i64;
                    let r = add(&mut c, seq).await;
                    assert_eq!(r, json!({"error": false, "value": sum, "seq": seq, "backend": first, "duplicate": false}), "seed {seed}");
                }
                // Pipelined: a move, then three adds sent at once behind it.
                c.send("cs_move", &json!({ "backend": other })).await.expect("send");
                for seq in 6..=8 {
                    c.send("cs_counter_add", &json!({"n": seq, "seq": seq})).await.expect("send");
                }
                // Every answer, in arrival order: frames the gate forwarded before the move
                // began are the old backend's; the rest come after `sc_moved`, from the new one.
                let mut seen = Vec::new();
                while seen.iter().filter(|(t, _): &&(String, Value)| t == "sc_counter").count() < 3 {
                    let m = c.wait_for(&["sc_move", "sc_moved", "sc_counter"], Duration::from_secs(10)).await.expect("answers");
                    seen.push(m);
                }
                let moved_at = seen.iter().position(|(t, _)| t == "sc_moved").expect("sc_moved before the last add's answer");
                assert_eq!(seen[moved_at].1, json!({"backend": other, "recovered": false}), "seed {seed}");
                let move_at = seen.iter().position(|(t, _)| t == "sc_move").expect("sc_move");
                assert!(move_at < moved_at, "seed {seed}: the handler's reply precedes the switch: {seen:?}");
                assert_eq!(seen[move_at].1, json!({"error": false}));
                let mut expected_seq = 6u64;
                for (i, (t, r)) in seen.iter().enumerate() {
                    if t != "sc_counter" {
                        continue;
                    }
                    sum += expected_seq as i64;
                    let backend = if i < moved_at { first.as_str() } else { other };
                    assert_eq!(
                        r,
                        &json!({"error": false, "value": sum, "seq": expected_seq, "backend": backend, "duplicate": false}),
                        "seed {seed}: in order, once, each on the backend that held the player: {seen:?}"
                    );
                    expected_seq += 1;
                }
                assert!(seen[moved_at + 1..].iter().any(|(t, _)| t == "sc_counter"), "seed {seed}: {seen:?}");
                // A repeated seq is answered again, not applied.
                let again = add(&mut c, 8).await;
                assert_eq!(again["duplicate"], json!(true), "seed {seed}");
                assert_eq!(again["value"], json!(sum));
                assert!(c.is_open(), "seed {seed}: the move needed no reconnect");
            })
            .await;
        });
    }
}

#[test]
fn forged_altered_and_foreign_session_keys_are_refused() {
    simulate(7, |w| async move {
        w.start(Flavor::Game, "game-1", 1);
        w.start(Flavor::Gate, "gate-1", 3);
        sleep_ms(STARTUP.as_millis() as u64).await;
        w.on_client(|env| async move {
            let mut c = gate_client(&env).await;
            let good = key_for(&env, "bob");
            let mut altered = good.clone().into_bytes();
            let last = altered.len() - 1;
            altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(altered).unwrap();
            for (user, key) in [("bob", "00ff".to_string()), ("bob", altered), ("eve", good.clone())] {
                let r = c
                    .request("cs_gate_login", json!({"user_name": user, "session_key": key}), "sc_gate_login")
                    .await;
                match r {
                    Err(ReqError::Error(e)) => assert_eq!(e["code"], json!("session_key_rejected"), "{e}"),
                    other => panic!("{user}: not refused: {other:?}"),
                }
            }
            // Before a login the gate forwards nothing.
            let r = c.request("cs_counter_add", json!({"n": 1, "seq": 1}), "sc_counter").await;
            assert!(
                matches!(r, Err(ReqError::Error(ref e)) if e["code"] == json!("gate_login_required")),
                "{r:?}"
            );
            // The session stayed open: the right key works.
            let ok = c
                .request("cs_gate_login", json!({"user_name": "bob", "session_key": good}), "sc_gate_login")
                .await
                .expect("login");
            assert_eq!(ok, json!({"error": false, "backend": "game-1"}));
        })
        .await;
    });
}

/// Unauthenticated connections a test gate keeps from one address.
const UNPROVEN_PER_ADDRESS: usize = 2;

/// A gate's connections stay "unauthenticated" (evictable for newcomers, oldest first) until
/// their login ran: frames of other types, which the gate answers `gate_login_required`, prove
/// nothing (they reach the gate's forwarder, not a handler). Two such connections fill the
/// address's allowance; a third client that logs in evicts the oldest, and the other stays.
#[test]
fn frames_before_the_gate_login_do_not_spare_a_connection_from_eviction() {
    simulate(11, |w| async move {
        w.start(Flavor::Game, "game-1", 1);
        w.start_with(Flavor::Gate, "gate-1", 3, |cfg| {
            cfg.session_limits.unauthenticated_per_address_max = UNPROVEN_PER_ADDRESS;
        });
        sleep_ms(STARTUP.as_millis() as u64).await;
        w.on_client(|env| async move {
            let mut idle = Vec::new();
            for _ in 0..UNPROVEN_PER_ADDRESS {
                let mut c = gate_client(&env).await;
                let r = c.request("cs_counter_add", json!({"n": 1, "seq": 1}), "sc_counter").await;
                assert!(
                    matches!(r, Err(ReqError::Error(ref e)) if e["code"] == json!("gate_login_required")),
                    "{r:?}"
                );
                idle.push(c);
            }
            let mut newcomer = gate_client(&env).await;
            let login = gate_login(&env, &mut newcomer, "carol").await.expect("sc_gate_login");
            assert_eq!(login["error"], json!(false), "{login}");
            let mut open = Vec::new();
            for c in &mut idle {
                open.push(c.pump(Duration::from_millis(500)).await);
            }
            assert!(!open[0], "the oldest connection that never logged in was evicted");
            assert!(open[1..].iter().all(|o| *o), "the others stay: one eviction made room: {open:?}");
            assert_eq!(add(&mut newcomer, 1).await["value"], json!(1));
        })
        .await;
    });
}

/// How long after the kill of its gate a client may wait to log in again elsewhere: the dead
/// gate's ZooKeeper session (and with it the player's login) lapses within
/// [`SESSION_TIMEOUT`].
const RELOGIN_WITHIN: Duration = Duration::from_secs(15);
/// Bob's adds while alice's gate dies: one every [`ADD_PERIOD`] for [`ADDS_ACROSS_CRASH`],
/// which spans the kill, the lapse of the dead gate's session and the backends' sweep.
const ADDS_ACROSS_CRASH: u64 = 60;
const ADD_PERIOD: Duration = Duration::from_millis(200);
/// The slowest answer bob may see (none is held by the crash of the other gate).
const ANSWER_MAX: Duration = Duration::from_millis(500);

/// Issue 16's "a gate crash affects only its own clients": alice on `gate-1`, bob on `gate-2`;
/// `gate-1` is killed. Bob sees nothing: every add answered at once, in order, applied once,
/// no `sc_moved`, no error, his connection open. Alice loses her connection, logs in on
/// `gate-2` with the same session key once `gate-1`'s session lapsed, and goes on from her
/// first unanswered add, nothing applied twice.
#[test]
fn a_gate_crash_affects_only_its_own_clients() {
    for seed in [1, 2] {
        simulate(seed, move |w| async move {
            w.start(Flavor::Game, "game-1", 1);
            w.start(Flavor::Game, "game-2", 2);
            let gate_1 = w.start(Flavor::Gate, "gate-1", 3);
            w.start(Flavor::Gate, "gate-2", 4);
            sleep_ms(STARTUP.as_millis() as u64).await;
            let handle = w.handle.clone();
            let (bob, alice) = futures::join!(
                w.on_client(move |env| async move {
                    let mut c = gate_client_at(&env, 4).await;
                    let login = gate_login(&env, &mut c, "bob").await.expect("sc_gate_login");
                    assert_eq!(login["error"], json!(false), "seed {seed}: {login}");
                    let backend = login["backend"].clone();
                    let mut sum = 0;
                    for seq in 1..=ADDS_ACROSS_CRASH {
                        sum += seq as i64;
                        let sent = env.clock.now();
                        let r = add(&mut c, seq).await;
                        let took = env.clock.now().saturating_since(sent);
                        assert_eq!(
                            r,
                            json!({"error": false, "value": sum, "seq": seq, "backend": backend, "duplicate": false}),
                            "seed {seed}: bob's add {seq}, on the gate that stayed up"
                        );
                        assert!(took <= ANSWER_MAX, "seed {seed}: bob's add {seq} took {took:?}");
                        env.clock.sleep(ADD_PERIOD).await;
                    }
                    assert!(c.is_open(), "seed {seed}: bob's connection survived the other gate's crash");
                    let pushed: Vec<String> = c.take_inbox().into_iter().map(|p| format!("{p:?}")).collect();
                    assert!(pushed.is_empty(), "seed {seed}: bob was told nothing: {pushed:?}");
                    sum
                }),
                w.on_client(move |env| async move {
                    let mut c = gate_client_at(&env, 3).await;
                    let login = gate_login(&env, &mut c, "alice").await.expect("sc_gate_login");
                    assert_eq!(login["error"], json!(false), "seed {seed}: {login}");
                    let mut sum = 0;
                    for seq in 1..=3 {
                        sum += seq as i64;
                        assert_eq!(add(&mut c, seq).await["value"], json!(sum), "seed {seed}");
                    }
                    handle.kill(gate_1);
                    let killed_at = env.clock.now();
                    let r = c.request("cs_counter_add", json!({"n": 4, "seq": 4}), "sc_counter").await;
                    assert!(r.is_err(), "seed {seed}: an add to a dead gate is not answered: {r:?}");
                    // The same key, on the other gate, until gate-1's login lapsed.
                    let mut c = loop {
                        let mut c = gate_client_at(&env, 4).await;
                        match gate_login(&env, &mut c, "alice").await {
                            Ok(r) if r["error"] == json!(false) => break c,
                            other => {
                                let waited = env.clock.now().saturating_since(killed_at);
                                assert!(waited < RELOGIN_WITHIN, "seed {seed}: alice still refused after {waited:?}: {other:?}");
                                sleep_ms(500).await;
                            }
                        }
                    };
                    // From the first unanswered add: 4 never reached a backend, 5 follows.
                    for seq in 4..=5 {
                        sum += seq as i64;
                        let r = add(&mut c, seq).await;
                        assert_eq!(r["value"], json!(sum), "seed {seed}: alice's add {seq} after the crash: {r}");
                        assert_eq!(r["duplicate"], json!(false), "seed {seed}: {r}");
                    }
                    sum
                })
            );
            assert_eq!(bob, (1..=ADDS_ACROSS_CRASH as i64).sum::<i64>());
            assert_eq!(alice, 15);
        });
    }
}
