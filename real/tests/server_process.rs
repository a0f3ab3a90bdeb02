//! `sandtable-server` as a process: real binaries on private ZooKeeper and Redis, driven by
//! real clients over TCP JSON, TCP protobuf and WebSocket JSON. Covers the seed flow (login,
//! enter pvp, transfer), login uniqueness across servers, graceful SIGTERM, kill -9 recovery
//! within the ZooKeeper session timeout, and manifest errors.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::client::{Recv, WireClient};
use common::{eventually, redis, zk};
use engine::session::Transport;
use real::services::{PrivateRedis, PrivateZk};
use serde_json::{json, Value};
use tokio::net::TcpStream;

const TRANSPORTS: [Transport; 3] = [Transport::TcpJson, Transport::TcpProtobuf, Transport::WebSocketJson];
/// How long a client waits for a reply.
const WAIT: Duration = Duration::from_secs(10);
/// `ZookeeperClient.zookeeper_session_timeout_in_second` of every test server.
const ZK_SESSION_SECS: u64 = 4;

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The ports of one server.
#[derive(Clone, Copy, Debug)]
struct Ports {
    tcp_json: u16,
    tcp_protobuf: u16,
    websocket_json: u16,
    api: u16,
    rpc: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            tcp_json: free_port(),
            tcp_protobuf: free_port(),
            websocket_json: free_port(),
            api: free_port(),
            rpc: free_port(),
        }
    }

    fn of(&self, t: Transport) -> u16 {
        match t {
            Transport::TcpJson => self.tcp_json,
            Transport::TcpProtobuf => self.tcp_protobuf,
            Transport::WebSocketJson => self.websocket_json,
        }
    }
}

fn manifest(ports: &Ports, flavor: &str, zk: &PrivateZk, redis: &PrivateRedis) -> Value {
    json!({
        "AppInfo": { "app_id": "sandtable-itest" },
        "SessionService": {
            "tcp_json_port": ports.tcp_json,
            "udp_json_port": 0,
            "http_json_port": 0,
            "tcp_protobuf_port": ports.tcp_protobuf,
            "udp_protobuf_port": 0,
            "http_protobuf_port": 0,
            "websocket_json_port": ports.websocket_json,
            "idle_timeout_in_second": 30,
            "heartbeat_interval_in_second": 10
        },
        "ApiService": {
            "api_service_port": ports.api,
            "api_service_event_tags_size": 1,
            "api_service_logging_level": 2
        },
        "Redis": {
            "enable_redis": true,
            "redis_mode": "redis",
            "redis_servers": {
                "cross_server_storage": { "address": redis.addr().to_string(), "auth_pass": "" }
            },
            "redis_async_threads_size": 4
        },
        "RpcService": {
            "rpc_enabled": true,
            "rpc_threads_size": 4,
            "rpc_port": ports.rpc,
            "rpc_tags": [flavor]
        },
        "ZookeeperClient": {
            "zookeeper_nodes": zk.connect_string(),
            "zookeeper_client_count": 4,
            "zookeeper_session_timeout_in_second": ZK_SESSION_SECS
        },
        "CrossServerStorage": {
            "enable_cross_server_storage": true,
            "redis_tag_for_cross_server_storage": "cross_server_storage"
        },
        "AccountManager": {
            "redirection_strict_check_server_id": true,
            "redirection_secret": "73616e647461626c652d6578616d706c652d6e6f742d666f722d70726f6421a1"
        }
    })
}

/// One `sandtable-server` child; SIGKILLed on drop.
struct Server {
    name: String,
    ports: Ports,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid")
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits for the process to exit, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self, t: Transport) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.of(t)))
    }

    fn log_tail(&self) -> String {
        let tail = |p: &Path| {
            let s = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            tail(&self.stdout),
            self.name,
            tail(&self.stderr)
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Private services plus the servers started on them; prints the servers' logs if the test
/// panics. Fields drop in order: the servers are killed before the services stop and the
/// directory goes.
struct Cluster {
    servers: Vec<Server>,
    zk: PrivateZk,
    redis: PrivateRedis,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        let zk = zk();
        let redis = redis();
        Cluster { servers: Vec::new(), zk, redis, dir: tempfile::tempdir().expect("tempdir") }
    }

    /// Spawns a server named `name` (file `MANIFEST.<flavor>.json` in its own directory) and
    /// returns its index. Does not wait for it.
    fn spawn(&mut self, name: &str, flavor: &str) -> usize {
        let ports = Ports::free();
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("MANIFEST.{flavor}.json"));
        let text = serde_json::to_string_pretty(&manifest(&ports, flavor, &self.zk, &self.redis)).unwrap();
        std::fs::write(&path, text).unwrap();
        let stdout = dir.join("stdout.log");
        let stderr = dir.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sandtable-server"))
            .arg("--manifest")
            .arg(&path)
            .arg("--name")
            .arg(name)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn sandtable-server");
        self.servers.push(Server { name: name.to_owned(), ports, child, stdout, stderr });
        self.servers.len() - 1
    }

    /// Waits until server `i` answers `GET /v1/health` with 200.
    async fn wait_healthy(&mut self, i: usize) {
        let api = self.servers[i].ports.api;
        let name = self.servers[i].name.clone();
        let t0 = Instant::now();
        eventually(Duration::from_secs(30), &format!("{name} healthy"), || async move {
            (health(api).await == Some(200)).then_some(())
        })
        .await;
        eprintln!("{name} healthy after {:?}", t0.elapsed());
    }

    async fn start(&mut self, names: &[(&str, &str)]) {
        let idx: Vec<usize> = names.iter().map(|(n, f)| self.spawn(n, f)).collect();
        for i in idx {
            self.wait_healthy(i).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in &self.servers {
                eprintln!("{}", s.log_tail());
            }
        }
    }
}

/// The status code of `GET /v1/health` on `127.0.0.1:port`, or `None` if it does not answer.
async fn health(port: u16) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten()
}

/// A real game client on one transport.
struct Client(WireClient);

impl std::ops::Deref for Client {
    type Target = WireClient;
    fn deref(&self) -> &WireClient {
        &self.0
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut WireClient {
        &mut self.0
    }
}

impl Client {
    async fn connect(addr: SocketAddr, transport: Transport) -> Client {
        Client(WireClient::connect(addr, transport).await)
    }

    /// The next message other than `_ping` (which is answered with `_pong`).
    async fn recv(&mut self) -> (String, Value) {
        match self.0.recv_within(WAIT).await {
            Recv::Msg(t, v) => (t, v),
            Recv::Bytes(t, _) => panic!("{:?}: {t} has a body that is not JSON", self.transport),
            Recv::Eof => panic!("{:?}: connection closed", self.transport),
            Recv::Timeout => panic!("{:?}: no reply within {WAIT:?}", self.transport),
        }
    }

    /// Sends `msg_type` and returns the body of the reply of type `reply`.
    async fn call(&mut self, msg_type: &str, body: Value, reply: &str) -> Value {
        self.send(msg_type, body).await;
        let (t, b) = self.recv().await;
        assert_eq!(t, reply, "{:?}: reply to {msg_type}: {b}", self.transport);
        b
    }

    async fn login(&mut self, user: &str) -> Value {
        self.call("cs_game_server_login", json!({ "user_name": user }), "sc_game_server_login").await
    }
}

fn assert_ok(body: &Value, what: &str) {
    assert_eq!(body["error"], json!(false), "{what}: {body}");
}

fn assert_err(body: &Value, message: &str, what: &str) {
    assert_eq!(body["error"], json!(true), "{what}: {body}");
    assert_eq!(body["error_message"], json!(message), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_over_every_transport() {
    let mut c = Cluster::new();
    c.start(&[("game-1", "game"), ("pvp-1", "pvp")]).await;
    let (game, pvp) = (&c.servers[0], &c.servers[1]);
    for t in TRANSPORTS {
        let user = format!("seed-{}", t.name());
        let mut a = Client::connect(game.addr(t), t).await;
        let r = a.login(&user).await;
        assert_ok(&r, &format!("{t:?} login"));
        assert_eq!(r["level"], json!(1), "{t:?}: {r}");

        let mut b = Client::connect(game.addr(t), t).await;
        assert_err(&b.login(&user).await, "Already logged in", &format!("{t:?} second login"));

        let r = a.call("cs_enter_pvp", json!({}), "sc_enter_pvp").await;
        assert_ok(&r, &format!("{t:?} enter pvp"));
        assert_eq!(
            r["pvp_server_port"],
            json!(pvp.ports.of(t)),
            "{t:?}: the pvp port of this transport: {r}"
        );
        assert_eq!(r["pvp_server_ip"], json!("127.0.0.1"), "{t:?}: {r}");
        let key = r["auth_key"].clone();
        assert!(key.as_str().is_some_and(|k| !k.is_empty()), "{t:?}: {r}");

        let mut p = Client::connect(pvp.addr(t), t).await;
        let r = p.call("cs_transfer_pvp_server", json!({ "auth_key": key }), "sc_transfer_pvp_server").await;
        assert_ok(&r, &format!("{t:?} transfer"));
        assert_eq!(r["user_name"], json!(user), "{t:?}: {r}");
        assert_eq!(r["level"], json!(1), "{t:?}: {r}");

        let mut q = Client::connect(pvp.addr(t), t).await;
        let r = q.call("cs_transfer_pvp_server", json!({ "auth_key": key }), "sc_transfer_pvp_server").await;
        assert_err(&r, "Failed to authenticate", &format!("{t:?} replayed key"));

        assert_ok(&a.call("cs_logout", json!({}), "sc_logout").await, &format!("{t:?} logout"));
    }
}

/// Polls `login(user)` on `addr` (a fresh TCP JSON connection each time) until it succeeds;
/// returns how long that took.
async fn login_eventually(addr: SocketAddr, user: &str, limit: Duration) -> (Duration, Client) {
    let t0 = Instant::now();
    let user = user.to_owned();
    let client = eventually(limit, &format!("login of {user} on {addr}"), || {
        let user = user.clone();
        async move {
            let mut c = Client::connect(addr, Transport::TcpJson).await;
            let r = c.login(&user).await;
            if r["error"] == json!(false) {
                return Some(c);
            }
            assert_eq!(r["error_message"], json!("Already logged in"), "{r}");
            tokio::time::sleep(Duration::from_millis(150)).await;
            None
        }
    })
    .await;
    (t0.elapsed(), client)
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
