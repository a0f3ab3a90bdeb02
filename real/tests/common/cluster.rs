//! Real `sandtable-server` processes on private ZooKeeper and Redis, with generated manifests,
//! and the real game client that drives them; shared by the server-process and
//! service-restart tests.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::session::Transport;
use real::services::{PrivateRedis, PrivateZk};
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::client::{Recv, WireClient};
use super::{eventually, redis, zk};

pub const TRANSPORTS: [Transport; 3] = [Transport::TcpJson, Transport::TcpProtobuf, Transport::WebSocketJson];
/// How long a client waits for a reply.
pub const WAIT: Duration = Duration::from_secs(10);
/// Default `ZookeeperClient.zookeeper_session_timeout_in_second` of the test servers.
pub const ZK_SESSION_SECS: u64 = 4;

/// Ports handed out below this one would collide with well-known services.
const LOW_PORT_MIN: u16 = 10_000;

/// A free loopback port (bound and released), never handed out twice by this process.
///
/// Taken *below* the kernel's ephemeral range when that leaves room: a port the OS picks
/// (`bind(0)`) is an ephemeral one, and between its release and the server's `bind` any
/// outgoing connection (of a server, a service or a client; the restart tests make many) can
/// be given the same number as its local port, so the server's start fails with "Address
/// already in use" until that connection closes.
pub fn free_port() -> u16 {
    use rand::Rng;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = engine::env::lock(&GIVEN);
    if ephemeral_low > LOW_PORT_MIN + 1000 {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let port = rng.gen_range(LOW_PORT_MIN..ephemeral_low);
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
}

/// The ports of one server.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub tcp_json: u16,
    pub tcp_protobuf: u16,
    pub websocket_json: u16,
    pub api: u16,
    pub rpc: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            tcp_json: free_port(),
            tcp_protobuf: free_port(),
            websocket_json: free_port(),
            api: free_port(),
            rpc: free_port(),
        }
    }

    pub fn of(&self, t: Transport) -> u16 {
        match t {
            Transport::TcpJson => self.tcp_json,
            Transport::TcpProtobuf => self.tcp_protobuf,
            Transport::WebSocketJson => self.websocket_json,
        }
    }
}

/// The manifest of one test server (ZooKeeper session timeout `zk_session_secs`).
pub fn manifest(
    ports: &Ports,
    flavor: &str,
    zk: &PrivateZk,
    redis: &PrivateRedis,
    zk_session_secs: u64,
) -> Value {
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
            "zookeeper_session_timeout_in_second": zk_session_secs
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
pub struct Server {
    pub name: String,
    pub ports: Ports,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid")
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// The exit status if the process has exited (it is not waited for).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self, t: Transport) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.of(t)))
    }

    /// Everything the server logged on stderr so far.
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
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
pub struct Cluster {
    pub servers: Vec<Server>,
    pub zk: PrivateZk,
    pub redis: PrivateRedis,
    dir: tempfile::TempDir,
    /// The ZooKeeper session timeout written into the manifests of servers spawned next.
    pub zk_session_secs: u64,
    /// Sections added to (or replacing those of) the manifests of servers spawned next, e.g.
    /// `Object` and `Sharding` for SQL.
    pub extra_sections: serde_json::Map<String, Value>,
    /// The `--data-dir` of the servers spawned next (where relative `sqlite://` URLs, such as
    /// the embedded default `db-0.sqlite`, live); `None`: each server's own directory.
    pub data_dir: Option<PathBuf>,
}

impl Cluster {
    pub fn new() -> Cluster {
        let zk = zk();
        let redis = redis();
        Cluster {
            servers: Vec::new(),
            zk,
            redis,
            dir: tempfile::tempdir().expect("tempdir"),
            zk_session_secs: ZK_SESSION_SECS,
            extra_sections: serde_json::Map::new(),
            data_dir: None,
        }
    }

    /// Turns SQL on for the servers spawned next: 8 logical shards, 0-3 on `db-0` at
    /// `mariadb_url`, 4-7 on `db-1`, a SQLite file in the cluster's directory; `object` goes
    /// into the manifest's `Object` section (with `enable_database: true`).
    pub fn with_mariadb_and_sqlite(&mut self, mariadb_url: &str, mut object: Value) {
        let sqlite = format!("sqlite://{}/db-1.sqlite", self.dir().display());
        object["enable_database"] = json!(true);
        self.extra_sections.insert("Object".into(), object);
        self.extra_sections.insert(
            "Sharding".into(),
            json!({
                "logical_shards": 8,
                "instances": { "db-0": mariadb_url, "db-1": sqlite },
                "shards": { "db-0": "0-3", "db-1": "4-7" }
            }),
        );
    }

    /// Spawns a server named `name` (file `MANIFEST.<flavor>.json` in its own directory) and
    /// returns its index. Does not wait for it.
    pub fn spawn(&mut self, name: &str, flavor: &str) -> usize {
        let ports = Ports::free();
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("MANIFEST.{flavor}.json"));
        let mut m = manifest(&ports, flavor, &self.zk, &self.redis, self.zk_session_secs);
        for (k, v) in &self.extra_sections {
            m[k] = v.clone();
        }
        std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        let stdout = dir.join("stdout.log");
        let stderr = dir.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sandtable-server"))
            .arg("--manifest")
            .arg(&path)
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(self.data_dir.as_ref().unwrap_or(&dir))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn sandtable-server");
        self.servers.push(Server { name: name.to_owned(), ports, child, stdout, stderr });
        self.servers.len() - 1
    }

    /// The cluster's temporary directory (each server's files are in a subdirectory).
    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until server `i` answers `GET /v1/health` with 200.
    pub async fn wait_healthy(&mut self, i: usize) {
        let api = self.servers[i].ports.api;
        let name = self.servers[i].name.clone();
        let t0 = Instant::now();
        eventually(Duration::from_secs(30), &format!("{name} healthy"), || async move {
            (health(api).await == Some(200)).then_some(())
        })
        .await;
        eprintln!("{name} healthy after {:?}", t0.elapsed());
    }

    pub async fn start(&mut self, names: &[(&str, &str)]) {
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
pub async fn health(port: u16) -> Option<u16> {
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
pub struct Client(WireClient);

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
    pub async fn connect(addr: SocketAddr, transport: Transport) -> Client {
        Client(WireClient::connect(addr, transport).await)
    }

    /// Like [`connect`](Self::connect), but a refused connection or handshake is an error.
    pub async fn try_connect(addr: SocketAddr, transport: Transport) -> Result<Client, String> {
        WireClient::try_connect(addr, transport).await.map(Client)
    }

    /// The next message other than `_ping` (which is answered with `_pong`), or what went
    /// wrong instead.
    pub async fn try_recv(&mut self) -> Result<(String, Value), String> {
        match self.0.recv_within(WAIT).await {
            Recv::Msg(t, v) => Ok((t, v)),
            Recv::Bytes(t, _) => Err(format!("{:?}: {t} has a body that is not JSON", self.transport)),
            Recv::Eof => Err(format!("{:?}: connection closed", self.transport)),
            Recv::Timeout => Err(format!("{:?}: no reply within {WAIT:?}", self.transport)),
        }
    }

    /// The next message other than `_ping` (which is answered with `_pong`).
    pub async fn recv(&mut self) -> (String, Value) {
        self.try_recv().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends `msg_type` and returns the body of the reply of type `reply`, or what went wrong.
    pub async fn try_call(&mut self, msg_type: &str, body: Value, reply: &str) -> Result<Value, String> {
        self.try_send(msg_type, body).await?;
        let (t, b) = self.try_recv().await.map_err(|e| format!("reply to {msg_type}: {e}"))?;
        if t != reply {
            return Err(format!("{:?}: reply to {msg_type} is {t}, not {reply}: {b}", self.transport));
        }
        Ok(b)
    }

    /// Sends `msg_type` and returns the body of the reply of type `reply`.
    pub async fn call(&mut self, msg_type: &str, body: Value, reply: &str) -> Value {
        self.try_call(msg_type, body, reply).await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn try_login(&mut self, user: &str) -> Result<Value, String> {
        self.try_call("cs_game_server_login", json!({ "user_name": user }), "sc_game_server_login").await
    }

    pub async fn login(&mut self, user: &str) -> Value {
        self.try_login(user).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

pub fn assert_ok(body: &Value, what: &str) {
    assert_eq!(body["error"], json!(false), "{what}: {body}");
}

pub fn assert_err(body: &Value, message: &str, what: &str) {
    assert_eq!(body["error"], json!(true), "{what}: {body}");
    assert_eq!(body["error_message"], json!(message), "{what}: {body}");
}

/// `Err` naming `what` unless `cond`.
fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// The seed flow for a new user on transport `t`: login on `game` (level 1), a second login
/// of the same user refused, enter pvp (the pvp server's port of `t`), transfer on `pvp`
/// with the auth key, the replayed key refused, logout. `Err` says which step failed.
pub async fn seed_flow(game: &Server, pvp: &Server, t: Transport, user: &str) -> Result<(), String> {
    let mut a = Client::try_connect(game.addr(t), t).await?;
    let r = a.try_login(user).await?;
    check(r["error"] == json!(false), || format!("{t:?} login of {user}: {r}"))?;
    check(r["level"] == json!(1), || format!("{t:?} login of {user}: level: {r}"))?;

    let mut b = Client::try_connect(game.addr(t), t).await?;
    let r = b.try_login(user).await?;
    check(r["error"] == json!(true) && r["error_message"] == json!("Already logged in"), || {
        format!("{t:?} second login of {user} is not refused: {r}")
    })?;

    let r = a.try_call("cs_enter_pvp", json!({}), "sc_enter_pvp").await?;
    check(r["error"] == json!(false), || format!("{t:?} enter pvp: {r}"))?;
    check(r["pvp_server_port"] == json!(pvp.ports.of(t)), || {
        format!("{t:?} enter pvp: not the pvp port of this transport ({}): {r}", pvp.ports.of(t))
    })?;
    check(r["pvp_server_ip"] == json!("127.0.0.1"), || format!("{t:?} enter pvp: ip: {r}"))?;
    let key = r["auth_key"].clone();
    check(key.as_str().is_some_and(|k| !k.is_empty()), || format!("{t:?} enter pvp: no auth key: {r}"))?;

    let mut p = Client::try_connect(pvp.addr(t), t).await?;
    let r =
        p.try_call("cs_transfer_pvp_server", json!({ "auth_key": key }), "sc_transfer_pvp_server").await?;
    check(r["error"] == json!(false), || format!("{t:?} transfer: {r}"))?;
    check(r["user_name"] == json!(user) && r["level"] == json!(1), || format!("{t:?} transfer: {r}"))?;

    let mut q = Client::try_connect(pvp.addr(t), t).await?;
    let r =
        q.try_call("cs_transfer_pvp_server", json!({ "auth_key": key }), "sc_transfer_pvp_server").await?;
    check(r["error"] == json!(true) && r["error_message"] == json!("Failed to authenticate"), || {
        format!("{t:?} replayed key is not refused: {r}")
    })?;

    let r = a.try_call("cs_logout", json!({}), "sc_logout").await?;
    check(r["error"] == json!(false), || format!("{t:?} logout: {r}"))
}

/// Polls `login(user)` on `addr` (a fresh TCP JSON connection each time) until it succeeds;
/// returns how long that took.
pub async fn login_eventually(addr: SocketAddr, user: &str, limit: Duration) -> (Duration, Client) {
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
