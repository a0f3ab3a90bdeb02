//! Gateways on the real backend (issue 16 item 7): real `sandtable-server` processes on
//! private ZooKeeper and Redis, started from generated manifests of the example shape:
//!
//! | server | flavor | what |
//! |---|---|---|
//! | `login-1` | `login` | `cs_login` -> `sc_login {session_key, gates}` |
//! | `gate-1` | `gate` | `cs_gate_login`, forwarding, moves |
//! | `game-1`, `game-2` | `game` | the backends: the `Object` section of `examples/MANIFEST.game.json` (SQL on, the embedded SQLite file) and one `--data-dir`, so they share `db-0.sqlite`; each hosts gated players |
//!
//! `login-1` and `gate-1` share `Gate.session_key_secret`. A WebSocket client gets a key from
//! the login server, logs in on the gate it was given, and moves between the backends on one
//! connection: the checks of `sim/tests/gate.rs`, over real processes and sockets. Forged,
//! altered and foreign keys are refused first, on another connection. The switch pause (from
//! sending `cs_move` to receiving `sc_moved`) is printed, not asserted.
//!
//! Also: a login or gate manifest without the secret makes `sandtable-server` exit 2.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{Client, Cluster};
use engine::env::WallTime;
use engine::gate::SessionKeys;
use engine::session::Transport;
use real::adapters::OsRand;
use serde_json::{json, Value};

const WS: Transport = Transport::WebSocketJson;
/// `Gate.session_key_secret` of the login server and the gate.
const SECRET: &str = "7465737420676174652073656372657421206e6f7420666f722070726f642121";
/// How long the login server may take to see the gate in its cluster view.
const GATE_LISTED_MAX: Duration = Duration::from_secs(20);

/// The deployment of the module doc, every server healthy.
async fn deployment() -> Cluster {
    let mut c = Cluster::new();
    c.extra_sections.insert("Gate".into(), json!({ "session_key_secret": SECRET }));
    let mut idx = vec![c.spawn("login-1", "login"), c.spawn("gate-1", "gate")];
    // The backends only (login servers and gates keep nothing in SQL), as the example
    // manifest has it: the embedded SQLite file, here one file in one data directory.
    let example = example_manifest("game");
    c.extra_sections.insert("Object".into(), example["Object"].clone());
    assert_eq!(example["Object"]["enable_database"], json!(true), "the example game manifest has SQL on");
    let backends = c.dir().join("backends");
    std::fs::create_dir_all(&backends).unwrap();
    c.data_dir = Some(backends);
    idx.extend([c.spawn("game-1", "game"), c.spawn("game-2", "game")]);
    for i in idx {
        c.wait_healthy(i).await;
    }
    c
}

/// `examples/MANIFEST.<flavor>.json`.
fn example_manifest(flavor: &str) -> Value {
    let path = format!("{}/../examples/MANIFEST.{flavor}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("example manifest")).expect("JSON")
}

/// `cs_login` on `c` until the login server lists a gate; the reply.
async fn login_until_a_gate_is_listed(c: &mut Client, user: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let r = c.call("cs_login", json!({ "user_name": user }), "sc_login").await;
        if r["error"] == json!(false) {
            eprintln!("login server listed a gate after {:?}", t0.elapsed());
            return r;
        }
        assert_eq!(r["error_message"], json!("no gate"), "{r}");
        assert!(t0.elapsed() < GATE_LISTED_MAX, "no gate listed within {GATE_LISTED_MAX:?}: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one gate `sc_login` lists.
fn listed_gate(r: &Value) -> SocketAddr {
    let gates = r["gates"].as_array().expect("gates");
    assert_eq!(gates.len(), 1, "one gate: {r}");
    let host = gates[0]["host"].as_str().expect("host");
    let port = gates[0]["port"].as_u64().expect("port");
    format!("{host}:{port}").parse().expect("host:port")
}

fn wall_now() -> WallTime {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    WallTime(i64::try_from(ms).expect("ms"))
}

async fn add(c: &mut Client, seq: u64) -> Value {
    c.call("cs_counter_add", json!({ "n": seq, "seq": seq }), "sc_counter").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_moves_between_backends_through_its_gate_without_reconnecting() {
    let c = deployment().await;
    let (login, gate) = (&c.servers[0], &c.servers[1]);

    // The login server, over WebSocket: the key, and the gate's WebSocket port.
    let mut to_login = Client::connect(login.addr(WS), WS).await;
    let r = login_until_a_gate_is_listed(&mut to_login, "alice").await;
    let key = r["session_key"].as_str().expect("session_key").to_string();
    let gate_addr = listed_gate(&r);
    assert_eq!(gate_addr, gate.addr(WS), "the gate's port of the client's own transport: {r}");
    // Over TCP JSON the same gate is listed by its TCP JSON port.
    let mut tcp = Client::connect(login.addr(Transport::TcpJson), Transport::TcpJson).await;
    let bob = tcp.call("cs_login", json!({ "user_name": "bob" }), "sc_login").await;
    assert_eq!(listed_gate(&bob), gate.addr(Transport::TcpJson), "{bob}");

    // Refused keys, on a connection of their own: forged (another secret), altered (one
    // digit), foreign (bob's key shown for alice), garbage. The session stays open.
    let forged = SessionKeys::new([7; 32], Duration::from_secs(300))
        .issue("alice", wall_now(), &OsRand)
        .expect("issued")
        .0;
    let mut altered = key.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).expect("hex");
    let foreign = bob["session_key"].as_str().expect("bob's key").to_string();
    let mut mallory = Client::connect(gate_addr, WS).await;
    for (what, k) in
        [("forged", forged), ("altered", altered), ("foreign", foreign), ("garbage", "00ff".into())]
    {
        mallory.send("cs_gate_login", json!({ "user_name": "alice", "session_key": k })).await;
        let (t, body) = mallory.recv().await;
        assert_eq!(t, "_error", "{what} key: {body}");
        assert_eq!(body["code"], json!("session_key_rejected"), "{what} key: {body}");
    }
    mallory.send("cs_counter_add", json!({ "n": 1, "seq": 1 })).await;
    let (t, body) = mallory.recv().await;
    assert_eq!((t.as_str(), &body["code"]), ("_error", &json!("gate_login_required")), "{body}");
    drop(mallory);

    // The player's one connection: the gate's WebSocket port.
    let mut ws = Client::connect(gate_addr, WS).await;
    let t0 = Instant::now();
    let logged =
        ws.call("cs_gate_login", json!({ "user_name": "alice", "session_key": key }), "sc_gate_login").await;
    eprintln!("cs_gate_login answered in {:?}: {logged}", t0.elapsed());
    assert_eq!(logged["error"], json!(false), "{logged}");
    let first = logged["backend"].as_str().expect("backend").to_string();
    let other = match first.as_str() {
        "game-1" => "game-2",
        "game-2" => "game-1",
        b => panic!("bound to {b:?}, not a game server"),
    };
    let mut sum = 0;
    for seq in 1..=5 {
        sum += seq as i64;
        let r = add(&mut ws, seq).await;
        assert_eq!(
            r,
            json!({"error": false, "value": sum, "seq": seq, "backend": first, "duplicate": false})
        );
    }

    // A move, then three adds at once behind it; every answer read in arrival order.
    let sent = Instant::now();
    ws.send("cs_move", json!({ "backend": other })).await;
    for seq in 6..=8 {
        ws.send("cs_counter_add", json!({ "n": seq, "seq": seq })).await;
    }
    let mut seen: Vec<(String, Value)> = Vec::new();
    let mut pause = None;
    while seen.iter().filter(|(t, _)| t == "sc_counter").count() < 3 {
        let (t, body) = ws.recv().await;
        assert!(["sc_move", "sc_moved", "sc_counter"].contains(&t.as_str()), "unexpected {t}: {body}");
        if t == "sc_moved" {
            pause = Some(sent.elapsed());
        }
        seen.push((t, body));
    }
    let moved_at =
        seen.iter().position(|(t, _)| t == "sc_moved").expect("sc_moved before the last add's answer");
    let pause = pause.expect("sc_moved");
    eprintln!("switch pause (cs_move sent -> sc_moved received): {:.2} ms", pause.as_secs_f64() * 1000.0);
    eprintln!("answers in arrival order: {seen:?}");
    assert_eq!(seen[moved_at].1, json!({"backend": other, "recovered": false}));
    let move_at = seen.iter().position(|(t, _)| t == "sc_move").expect("sc_move");
    assert!(move_at < moved_at, "the handler's reply precedes the switch: {seen:?}");
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
            "in order, once, each on the backend that held the player: {seen:?}"
        );
        expected_seq += 1;
    }
    assert!(seen[moved_at + 1..].iter().any(|(t, _)| t == "sc_counter"), "an add after the switch: {seen:?}");

    // A repeated seq is answered again by the new backend, not applied; the same connection
    // carried everything.
    let again = add(&mut ws, 8).await;
    assert_eq!(again, json!({"error": false, "value": sum, "seq": 8, "backend": other, "duplicate": true}));
    let next = add(&mut ws, 9).await;
    assert_eq!(next["value"], json!(sum + 9), "{next}");
    assert!(
        matches!(ws.recv_within(Duration::from_millis(300)).await, common::client::Recv::Timeout),
        "nothing else arrives, and the connection is still open"
    );
}

/// A login server or gate without `Gate.session_key_secret` does not start: exit 2, naming
/// the key (no services needed: the manifest is refused before anything connects).
#[test]
fn a_login_or_gate_manifest_without_a_secret_exits_2_and_names_the_key() {
    for (flavor, uses) in
        [("login", "a login server signs session keys"), ("gate", "a gate checks session keys")]
    {
        let dir = tempfile::tempdir().unwrap();
        let mut m = example_manifest(flavor);
        m.as_object_mut().unwrap().remove("Gate");
        let path = dir.path().join(format!("MANIFEST.{flavor}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandtable-server"))
            .arg("--manifest")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sandtable-server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flavor}: status {}; stderr: {stderr}", out.status);
        assert!(
            stderr.contains(&format!("Gate.session_key_secret: {uses} with it")),
            "{flavor}: stderr: {stderr}"
        );
    }
}
