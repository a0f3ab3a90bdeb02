//! `sandtable-server` as a process: real binaries on private ZooKeeper and Redis, driven by
//! real clients over TCP JSON, TCP protobuf and WebSocket JSON. Covers the seed flow (login,
//! enter pvp, transfer), login uniqueness across servers, graceful SIGTERM, kill -9 recovery
//! within the ZooKeeper session timeout, manifest errors, and the inventory messages between a
//! protobuf client and a JSON client on two servers (each side in its own body form).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::client::Recv;
use common::cluster::{
    assert_err, assert_ok, login_eventually, seed_flow, Client, Cluster, TRANSPORTS, WAIT, ZK_SESSION_SECS,
};
use engine::session::codec;
use engine::session::Transport;
use game::pb::inventory as pb;
use prost::Message;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_over_every_transport() {
    let mut c = Cluster::new();
    c.start(&[("game-1", "game"), ("pvp-1", "pvp")]).await;
    let (game, pvp) = (&c.servers[0], &c.servers[1]);
    for t in TRANSPORTS {
        let user = format!("seed-{}", t.name());
        seed_flow(game, pvp, t, &user).await.unwrap_or_else(|e| panic!("seed flow: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_unique_across_servers_and_sigterm_frees_accounts() {
    let mut c = Cluster::new();
    c.start(&[("game-a", "game"), ("game-b", "game")]).await;
    let a_addr = c.servers[0].addr(Transport::TcpJson);
    let b_addr = c.servers[1].addr(Transport::TcpJson);
    let mut on_a = Client::connect(a_addr, Transport::TcpJson).await;
    assert_ok(&on_a.login("unique").await, "login on A");
    let mut on_b = Client::connect(b_addr, Transport::TcpJson).await;
    assert_err(&on_b.login("unique").await, "Already logged in", "login on B while on A");

    let t0 = Instant::now();
    c.servers[0].signal(libc::SIGTERM);
    let st = tokio::task::block_in_place(|| c.servers[0].wait_exit(Duration::from_secs(15)))
        .expect("A exits within 15 s of SIGTERM");
    eprintln!("A exited with {st} after {:?}", t0.elapsed());
    assert_eq!(st.code(), Some(0), "exit status {st}");
    drop(on_a);

    let (took, _c) = login_eventually(b_addr, "unique", Duration::from_secs(5)).await;
    eprintln!("login on B succeeded {took:?} after A's exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_carries_extra_data_to_the_same_transport_once() {
    let mut c = Cluster::new();
    c.start(&[("game-a", "game"), ("game-b", "game")]).await;
    let t = Transport::TcpProtobuf;
    let (a_addr, b_addr) = (c.servers[0].addr(t), c.servers[1].addr(t));
    let mut on_a = Client::connect(a_addr, t).await;
    assert_ok(&on_a.login("mover").await, "login on A");

    let extra = json!({ "room": 7, "why": "matchmaking" });
    let body = on_a
        .call("cs_redirect", json!({ "server_name": "game-b", "extra_data": extra }), "_sc_redirect")
        .await;
    // Sent to B's port of the client's own transport.
    assert_eq!(body["host"], json!("127.0.0.1"), "{body}");
    assert_eq!(body["port"], json!(b_addr.port()), "redirected to B's protobuf port: {body}");
    assert_eq!(body["flavor"], json!("game"), "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    assert!(on_a.next_payload().await.is_none(), "A closes the session after _sc_redirect");

    let mut on_b = Client::connect(b_addr, t).await;
    let accepted = on_b.call("_cs_redirect", json!({ "token": token }), "sc_redirected").await;
    assert_ok(&accepted, "redirect accepted on B");
    assert_eq!(accepted["user_name"], json!("mover"), "{accepted}");
    assert_eq!(accepted["extra_data"], extra, "{accepted}");

    // Logged in exactly once, on B: A refuses the account, a replayed token is rejected.
    let mut again_a = Client::connect(c.servers[0].addr(Transport::TcpJson), Transport::TcpJson).await;
    assert_err(&again_a.login("mover").await, "Already logged in", "login on A after the redirect");
    let mut replay = Client::connect(b_addr, t).await;
    let (ty, err) = {
        replay.send("_cs_redirect", json!({ "token": token })).await;
        replay.recv().await
    };
    assert_eq!((ty.as_str(), &err["code"]), ("_error", &json!("redirect_rejected")), "replayed token: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_frees_accounts_within_the_session_timeout() {
    let mut c = Cluster::new();
    c.start(&[("game-a", "game"), ("game-b", "game")]).await;
    let a_addr = c.servers[0].addr(Transport::TcpJson);
    let b_addr = c.servers[1].addr(Transport::TcpJson);
    let mut on_a = Client::connect(a_addr, Transport::TcpJson).await;
    assert_ok(&on_a.login("killed").await, "login on A");
    let mut on_b = Client::connect(b_addr, Transport::TcpJson).await;
    assert_err(&on_b.login("killed").await, "Already logged in", "login on B while on A");

    c.servers[0].signal(libc::SIGKILL);
    tokio::task::block_in_place(|| c.servers[0].wait_exit(Duration::from_secs(5))).expect("A is dead");
    drop(on_a);
    let limit = Duration::from_secs(ZK_SESSION_SECS * 3);
    let (took, _c) = login_eventually(b_addr, "killed", limit).await;
    eprintln!("login on B succeeded {took:?} after SIGKILL of A (session timeout {ZK_SESSION_SECS} s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifest_exits_2_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // The example manifest with one bad value; no services are needed, the manifest is
    // rejected before anything connects.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/MANIFEST.game.json"))
            .expect("example manifest");
    let mut m: Value = serde_json::from_str(&text).expect("example manifest is JSON");
    m["SessionService"]["tcp_json_port"] = json!("x");
    let path = dir.path().join("MANIFEST.game.json");
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sandtable-server"))
        .arg("--manifest")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run sandtable-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "status {}; stderr: {stderr}", out.status);
    assert!(stderr.contains("SessionService.tcp_json_port"), "stderr: {stderr}");
}

/// Sends `msg` as the protobuf body of a `msg_type` message.
async fn send_pb<M: Message>(c: &mut Client, msg_type: &str, msg: &M) {
    c.send_raw(codec::encode_protobuf(msg_type, &msg.encode_to_vec())).await;
}

/// The next message, which must be a `msg_type` message in its protobuf form (a JSON body
/// here means the server answered a protobuf client in the wrong form).
async fn recv_pb<R: Message + Default>(c: &mut Client, msg_type: &str) -> R {
    match c.recv_within(WAIT).await {
        Recv::Bytes(t, body) if t == msg_type => {
            R::decode(body).unwrap_or_else(|e| panic!("{msg_type}: not its protobuf form: {e}"))
        }
        // An empty protobuf message is an empty body, which is not JSON either: `Bytes`.
        other => panic!("expected {msg_type} in protobuf form, got {other:?}"),
    }
}

async fn call_pb<M: Message, R: Message + Default>(
    c: &mut Client,
    msg_type: &str,
    msg: &M,
    reply: &str,
) -> R {
    send_pb(c, msg_type, msg).await;
    recv_pb(c, reply).await
}

fn items(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gifts_between_a_protobuf_client_and_a_json_client_go_out_in_each_ones_form() {
    // Two game servers with the object store on one shared SQLite file (the example
    // manifest's `Object` section, one data directory).
    let mut c = Cluster::new();
    c.extra_sections.insert(
        "Object".into(),
        json!({ "enable_database": true, "cache_expiration_in_ms": 3000, "copy_cache_expiration_in_ms": 700 }),
    );
    let data = c.dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    c.data_dir = Some(data);
    c.start(&[("game-a", "game"), ("game-b", "game")]).await;
    let (pt, jt) = (Transport::TcpProtobuf, Transport::TcpJson);

    // "pb" on A's protobuf port, "js" on B's JSON port. The login is a JSON message (JSON in
    // the protobuf envelope); the inventory messages are not.
    let mut p = Client::connect(c.servers[0].addr(pt), pt).await;
    assert_ok(&p.login("pb").await, "login pb on A (protobuf port)");
    let mut j = Client::connect(c.servers[1].addr(jt), jt).await;
    assert_ok(&j.login("js").await, "login js on B (JSON port)");

    let inv: pb::ScInventory = call_pb(&mut p, "cs_inventory", &pb::CsInventory {}, "sc_inventory").await;
    let start = pb::ScInventory {
        error: false,
        error_message: String::new(),
        user_name: "pb".into(),
        gold: 100,
        items: items(&[("potion", 10), ("sword", 1)]),
    };
    assert_eq!(inv, start);

    // Protobuf sender on A -> JSON recipient on B: the reply in protobuf, the push in JSON
    // (it crosses to B by RPC in both forms).
    let gift = pb::CsGift { to: "js".into(), item: "potion".into(), count: 3 };
    let r: pb::ScGift = call_pb(&mut p, "cs_gift", &gift, "sc_gift").await;
    assert_eq!(r, pb::ScGift { error: false, error_message: String::new() });
    let (t, pushed) = j.recv().await;
    assert_eq!(
        (t.as_str(), pushed),
        ("sc_gift_received", json!({"from": "pb", "item": "potion", "count": 3}))
    );

    // JSON sender on B -> protobuf recipient on A: the reply in JSON, the push in protobuf.
    let r = j.call("cs_gift", json!({"to": "pb", "item": "sword", "count": 1}), "sc_gift").await;
    assert_eq!(r, json!({"error": false}));
    let pushed: pb::ScGiftReceived = recv_pb(&mut p, "sc_gift_received").await;
    assert_eq!(pushed, pb::ScGiftReceived { from: "js".into(), item: "sword".into(), count: 1 });

    // Refusals in protobuf: the reply message with `error` and `error_message`.
    let zero = pb::CsGift { to: "js".into(), item: "potion".into(), count: 0 };
    let r: pb::ScGift = call_pb(&mut p, "cs_gift", &zero, "sc_gift").await;
    assert_eq!(r, pb::ScGift { error: true, error_message: "count must be positive".into() });
    let nobody = pb::CsGift { to: "nobody".into(), item: "potion".into(), count: 1 };
    let r: pb::ScGift = call_pb(&mut p, "cs_gift", &nobody, "sc_gift").await;
    assert_eq!(r, pb::ScGift { error: true, error_message: "unknown recipient".into() });

    // A trade from the protobuf side: pb gives 10 gold, takes 1 potion.
    let trade =
        pb::CsTrade { with: "js".into(), give: items(&[("gold", 10)]), take: items(&[("potion", 1)]) };
    let r: pb::ScTrade = call_pb(&mut p, "cs_trade", &trade, "sc_trade").await;
    let after = items(&[("potion", 8), ("sword", 2)]);
    assert_eq!(r, pb::ScTrade { error: false, error_message: String::new(), gold: 90, items: after.clone() });

    // Wrong forms on the protobuf port are `_error bad_body` and keep the session: a JSON
    // body, and bytes that are not a protobuf message.
    p.send("cs_gift", json!({"to": "js", "item": "potion", "count": 1})).await;
    let (t, e) = p.recv().await;
    assert_eq!((t.as_str(), &e["code"]), ("_error", &json!("bad_body")), "{e}");
    p.send_raw(codec::encode_protobuf("cs_gift", b"\x0f")).await;
    let (t, e) = p.recv().await;
    assert_eq!((t.as_str(), &e["code"]), ("_error", &json!("bad_body")), "{e}");

    // Final inventories, each read in its client's form; nothing created or lost.
    let inv: pb::ScInventory = call_pb(&mut p, "cs_inventory", &pb::CsInventory {}, "sc_inventory").await;
    assert_eq!((inv.gold, &inv.items), (90, &after));
    let inv = j.call("cs_inventory", json!({}), "sc_inventory").await;
    assert_eq!(inv, json!({"error": false, "user_name": "js", "gold": 110, "items": {"potion": 12}}));

    // A protobuf request missing a required field is malformed, as in JSON: the refusal
    // (in protobuf), then the session closes.
    let malformed = pb::CsGift { to: String::new(), item: "potion".into(), count: 1 };
    let r: pb::ScGift = call_pb(&mut p, "cs_gift", &malformed, "sc_gift").await;
    assert!(r.error && r.error_message.starts_with("to and item must be"), "{r:?}");
    assert_eq!(p.recv_within(WAIT).await, Recv::Eof, "closed after a malformed request");
}
