//! `sandtable-server` as a process: real binaries on private ZooKeeper and Redis, driven by
//! real clients over TCP JSON, TCP protobuf and WebSocket JSON. Covers the seed flow (login,
//! enter pvp, transfer), login uniqueness across servers, graceful SIGTERM, kill -9 recovery
//! within the ZooKeeper session timeout, and manifest errors.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{
    assert_err, assert_ok, login_eventually, seed_flow, Client, Cluster, TRANSPORTS, ZK_SESSION_SECS,
};
use engine::session::Transport;
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
