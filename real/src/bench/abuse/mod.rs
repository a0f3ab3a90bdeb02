//! `real abuse`: hostile clients against one `sandtable-server` process (issue 20), each
//! attack bounded in time and connections, measuring what it costs the server and an honest
//! client.
//!
//! | attack | what the hostile client does | honest client |
//! |---|---|---|
//! | `ping_flood` | one WebSocket client (raw frames on a TCP socket after the upgrade: masked 125-byte pings) sends pings as fast as it can for [`PING_FLOOD_FOR`] and never reads | WebSocket upgrade + login |
//! | `slow_reader` | [`SLOW_READER_CLIENTS`] clients, one after another, each logged in, sending `cs_send` to itself with a [`SLOW_READER_MESSAGE_BYTES`] message (echoed back as `sc_message`) and never reading, with a [`ATTACKER_RCVBUF`]-byte receive buffer, until the server closes it or [`SLOW_READER_MAX_BYTES`] / [`SLOW_READER_MAX_FOR`] | TCP JSON connect + login |
//! | `handshakes` | [`HANDSHAKE_CONNECTIONS`] TCP connections to the WebSocket port, each sending an upgrade request without its final blank line and then nothing, held for [`HANDSHAKE_HOLD`] and until the honest probes of that window are answered | WebSocket upgrade + login |
//! | `admin_flood` | [`ADMIN_FLOOD_CONNECTIONS`] connections to the admin port opened at once, idle for [`ADMIN_FLOOD_HOLD`], then each sends `GET /v1/health` (answered ones counted) | `GET /v1/health` answered 200 |
//! | `admin_slowloris` | [`SLOWLORIS_CONNECTIONS`] connections to the admin port each sending one byte of a request header every [`SLOWLORIS_BYTE_EVERY`] for [`SLOWLORIS_HOLD`] | `GET /v1/health` answered 200 |
//! | `idle_tcp` | [`IDLE_TCP_CONNECTIONS`] TCP JSON connections that send nothing, held for [`IDLE_TCP_HOLD`] | TCP JSON connect + login |
//!
//! Every attacker connects from [`ATTACKER_IP`]. The honest client is probed from
//! [`HONEST_OTHER_IP`] (another source address: what a per-address limit must let through)
//! and, for the connection-exhaustion attacks, from [`ATTACKER_IP`] too (the same address).
//!
//! Measured per attack, on a fresh server process:
//! - **resident memory** (`VmRSS` of `/proc/<pid>/status`) just before the attack, its peak
//!   (sampled every [`RSS_SAMPLE_EVERY`] from the start of the attack until the "after"
//!   reading), and after: [`SETTLE_AFTER`] once the attack ended and its connections were
//!   closed;
//! - **honest latency during**: a probe (its own connection, a fresh account) started every
//!   [`PROBE_EVERY`] while the attack holds (concurrently, each bounded by [`PROBE_TIMEOUT`]):
//!   the slowest, and how many failed (refused, closed, an error reply, timed out);
//! - **honest latency after**: [`AFTER_PROBES`] probes one after another after the settle;
//! - whether the server is still alive and whether its log says `panicked`.
//!
//! Memory is reported in MiB. The server is the one passed as `--server-bin` (default: the
//! `sandtable-server` next to this executable), started on private ZooKeeper and Redis with
//! all three client transports and the admin API on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::session::codec::{self, InBody};
use engine::session::Transport;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::bench::driver::free_low_port;
use crate::bench::machine::{raise_fd_limit, rss_kib_of};
use crate::bench::BenchError;
use crate::services::{PrivateRedis, PrivateZk};

mod attacks;
mod report;

pub use attacks::{admin_flood, admin_slowloris, handshake_exhaustion, idle_tcp, ping_flood, slow_reader};
pub use report::{median, run, run_attack, table, AbuseReport};

const BENCH: &str = "abuse";

/// The attacks, in the order `real abuse` runs them.
pub const ATTACKS: [&str; 6] =
    ["ping_flood", "slow_reader", "handshakes", "admin_flood", "admin_slowloris", "idle_tcp"];

/// Source address of every attacking connection.
pub const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// Source address of the honest client that is not the attacker.
pub const HONEST_OTHER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// How often the server's resident memory is read during an attack.
pub const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Pause between the end of an attack (its connections closed) and the "after" figures.
pub const SETTLE_AFTER: Duration = Duration::from_secs(3);
/// An honest probe is started this often while an attack holds.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Longest an honest probe may take before it counts as failed (above the WebSocket
/// handshake timeout, 10 s, so that waiting it out shows as a latency).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Honest probes after an attack, one after another.
pub const AFTER_PROBES: usize = 3;
/// Receive buffer of the attackers that never read (`SO_RCVBUF`).
pub const ATTACKER_RCVBUF: u32 = 4096;
/// Attack connections being opened at once.
pub const CONNECTS_IN_FLIGHT: usize = 128;
/// Longest one attack connection may take to open (a refused or dropped one is counted).
pub const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// `ping_flood`: how long the pings are sent (unless the server closes first).
pub const PING_FLOOD_FOR: Duration = Duration::from_secs(2);
/// Payload of each ping (the most a control frame may carry).
pub const PING_PAYLOAD_BYTES: usize = 125;
/// Bytes of ping frames written per `write` call.
pub const PING_WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// `slow_reader`: clients, one after another.
pub const SLOW_READER_CLIENTS: usize = 2;
/// The message each `cs_send` carries (echoed in `sc_message`): below the default 1 MiB
/// `max_frame_bytes` with its envelope.
pub const SLOW_READER_MESSAGE_BYTES: usize = 1_000_000;
/// A slow reader stops once it sent this much, or after [`SLOW_READER_MAX_FOR`].
pub const SLOW_READER_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
pub const SLOW_READER_MAX_FOR: Duration = Duration::from_secs(10);

/// `handshakes`: half-open upgrades (above the listener's 1,024 pending handshakes on main).
pub const HANDSHAKE_CONNECTIONS: usize = 1_100;
/// How long they are held at least (then until the honest probes of the window finished).
pub const HANDSHAKE_HOLD: Duration = Duration::from_secs(3);

/// `admin_flood`: connections opened at once.
pub const ADMIN_FLOOD_CONNECTIONS: usize = 1_000;
/// How long they stay idle (probes running) before each sends its request.
pub const ADMIN_FLOOD_HOLD: Duration = Duration::from_secs(1);
/// How long each waits for its answer.
pub const ADMIN_REPLY_WITHIN: Duration = Duration::from_secs(5);

/// `admin_slowloris`: connections, each sending one header byte per [`SLOWLORIS_BYTE_EVERY`].
pub const SLOWLORIS_CONNECTIONS: usize = 300;
pub const SLOWLORIS_BYTE_EVERY: Duration = Duration::from_secs(1);
/// How long the slowloris lasts (beyond the admin API's 10 s header timeout on main).
pub const SLOWLORIS_HOLD: Duration = Duration::from_secs(12);

/// `idle_tcp`: TCP JSON connections that send nothing, and how long they are held.
pub const IDLE_TCP_CONNECTIONS: usize = 1_000;
pub const IDLE_TCP_HOLD: Duration = Duration::from_secs(3);

/// File descriptors the harness needs besides its attack connections.
const FD_RESERVE: u64 = 256;
/// How long the server may take to answer its health check with 200 at start.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);
/// ZooKeeper session timeout of the server.
const ZK_SESSION_SECS: u64 = 10;
/// `AccountManager.redirection_secret` of the server.
const REDIRECTION_SECRET: &str = "61627573652d6861726e6573732d72656469726563742d7365637265742d2121";
const CS_LOGIN: &str = "cs_game_server_login";
const SC_LOGIN: &str = "sc_game_server_login";
const CS_SEND: &str = "cs_send";
/// Largest frame an honest TCP client accepts.
const CLIENT_FRAME_MAX: usize = 1 << 20;
/// The upgrade request the attackers and the raw ping client send (`Sec-WebSocket-Key` is
/// RFC 6455's example nonce).
const UPGRADE_HEAD: &str =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
/// What the slowloris connections send, one byte at a time.
const SLOWLORIS_REQUEST: &[u8] =
    b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
const HEALTH_REQUEST: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
const MIB: f64 = 1024.0 * 1024.0;

/// Command-line arguments of `real abuse`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AbuseArgs {
    /// Attacks to run: ping_flood, slow_reader, handshakes, admin_flood, admin_slowloris,
    /// idle_tcp (all when none is named).
    #[arg(value_name = "ATTACK")]
    pub attacks: Vec<String>,
    /// The `sandtable-server` executable to attack (default: the one next to this executable).
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Runs of every attack (a fresh server each); with more than one the medians are printed too.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub runs: usize,
    /// Also write every measurement (and the medians) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// What the honest client does in a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// TCP JSON connect + `cs_game_server_login` answered without error.
    TcpLogin,
    /// WebSocket upgrade + `cs_game_server_login` answered without error.
    WsLogin,
    /// `GET /v1/health` answered 200.
    Health,
}

impl Probe {
    fn label(self) -> &'static str {
        match self {
            Probe::TcpLogin => "tcp login",
            Probe::WsLogin => "ws login",
            Probe::Health => "health",
        }
    }
}

/// Honest probes of one phase (during or after an attack).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Probes {
    pub samples: usize,
    /// Probes that were refused, closed, answered with an error or timed out.
    pub failed: usize,
    /// The slowest probe, failed ones included (a timed-out one counts [`PROBE_TIMEOUT`]).
    pub max_ms: f64,
    pub median_ms: f64,
    /// What went wrong with the first failed probe.
    pub first_failure: Option<String>,
}

impl Probes {
    fn from_results(results: &[(Duration, Result<(), String>)]) -> Probes {
        let mut ms: Vec<f64> = results.iter().map(|(d, _)| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Probes {
            samples: results.len(),
            failed: results.iter().filter(|(_, r)| r.is_err()).count(),
            max_ms: ms.last().copied().unwrap_or(0.0),
            median_ms: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
            first_failure: results.iter().find_map(|(_, r)| r.as_ref().err().cloned()),
        }
    }

    /// `max ms` and, if any failed, `(failed/samples failed)`.
    pub fn cell(&self) -> String {
        if self.samples == 0 {
            return "-".to_string();
        }
        let mut s = format!("{:.0}", self.max_ms);
        if self.failed > 0 {
            let _ = write!(s, " ({}/{} failed)", self.failed, self.samples);
        }
        s
    }
}

/// One honest client's figures around an attack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Honest {
    pub probe: Probe,
    /// Where it connected from.
    pub source: Ipv4Addr,
    pub during: Probes,
    pub after: Probes,
}

impl Honest {
    /// `ws login from 127.0.0.2`.
    pub fn label(&self) -> String {
        format!("{} from {}", self.probe.label(), self.source)
    }
}

/// What one attack measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    pub attack: String,
    pub rss_before_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_after_mib: f64,
    pub honest: Vec<Honest>,
    /// Figures of the attack itself (`bytes_sent`, `closed_by_server_after_ms`, `answered`).
    pub facts: BTreeMap<String, f64>,
    pub notes: Vec<String>,
    pub server_alive: bool,
    pub server_panicked: bool,
    pub wall_secs: f64,
}

impl Measurement {
    /// A fact, if the attack recorded it.
    pub fn fact(&self, name: &str) -> Option<f64> {
        self.facts.get(name).copied()
    }

    /// The table of these measurements (see [`table`]).
    pub fn table(&self) -> String {
        table(std::slice::from_ref(self))
    }
}

/// The private services the server runs on; stopped when dropped.
pub struct Services {
    zk: PrivateZk,
    redis: PrivateRedis,
}

impl Services {
    /// Starts a private ZooKeeper and Redis (blocking).
    pub fn start() -> Result<Services, BenchError> {
        Ok(Services { redis: PrivateRedis::start()?, zk: PrivateZk::start()? })
    }
}

/// The ports of the attacked server.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub tcp_json: u16,
    pub tcp_protobuf: u16,
    pub websocket_json: u16,
    pub api: u16,
    pub rpc: u16,
}

/// The attacked `sandtable-server` process (game flavor, all three transports, admin API);
/// killed when dropped.
pub struct Target {
    pub ports: Ports,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Target {
    /// Starts `exe` as a game server of cluster `app_id` on `services` (does not wait for it:
    /// see [`wait_healthy`](Self::wait_healthy)).
    pub fn spawn(exe: &Path, services: &Services, app_id: &str) -> Result<Target, BenchError> {
        // The server inherits this process's open-files limit: the attacks need it high.
        raise_fd_limit();
        let dir = tempfile::tempdir().map_err(BenchError::io("creating the abuse server's directory"))?;
        let ports = Ports {
            tcp_json: free_low_port()?,
            tcp_protobuf: free_low_port()?,
            websocket_json: free_low_port()?,
            api: free_low_port()?,
            rpc: free_low_port()?,
        };
        let m = json!({
            "AppInfo": { "app_id": app_id },
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
            "ApiService": { "api_service_port": ports.api },
            "Redis": {
                "enable_redis": true,
                "redis_mode": "redis",
                "redis_servers": {
                    "cross_server_storage": { "address": services.redis.addr().to_string(), "auth_pass": "" }
                }
            },
            "RpcService": { "rpc_enabled": true, "rpc_port": ports.rpc, "rpc_tags": ["game"] },
            "ZookeeperClient": {
                "zookeeper_nodes": services.zk.connect_string(),
                "zookeeper_session_timeout_in_second": ZK_SESSION_SECS
            },
            "CrossServerStorage": {
                "enable_cross_server_storage": true,
                "redis_tag_for_cross_server_storage": "cross_server_storage"
            },
            "AccountManager": { "redirection_secret": REDIRECTION_SECRET }
        });
        let manifest = dir.path().join("MANIFEST.game.json");
        let text = serde_json::to_string_pretty(&m).map_err(|e| BenchError::setup(BENCH, e))?;
        std::fs::write(&manifest, text).map_err(BenchError::io(format!("writing {}", manifest.display())))?;
        let log = dir.path().join("server.log");
        let out =
            std::fs::File::create(&log).map_err(BenchError::io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(BenchError::io(format!("opening {}", log.display())))?;
        let child = Command::new(exe)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--name")
            .arg(app_id)
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(BenchError::io(format!("starting {}", exe.display())))?;
        Ok(Target { ports, child, log, _dir: dir })
    }

    /// Waits until `GET /v1/health` answers 200.
    pub async fn wait_healthy(&mut self) -> Result<(), BenchError> {
        let start = Instant::now();
        loop {
            if health(self.ports.api, ATTACKER_IP).await.is_ok() {
                return Ok(());
            }
            if !self.alive() {
                return Err(BenchError::setup(
                    BENCH,
                    format!("the server exited at start:\n{}", self.log_tail()),
                ));
            }
            if start.elapsed() > HEALTHY_WITHIN {
                return Err(BenchError::Timeout {
                    bench: BENCH,
                    what: format!("the server to be healthy\n{}", self.log_tail()),
                    waited: HEALTHY_WITHIN,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory of the process, in MiB.
    pub fn rss_mib(&self) -> Result<f64, BenchError> {
        rss_kib_of(self.pid()).map(kib_to_mib).ok_or_else(|| {
            BenchError::op(BENCH, format!("cannot read VmRSS of the server (pid {})", self.pid()))
        })
    }

    /// Everything the server logged (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the log shows a panic.
    pub fn panicked(&self) -> bool {
        self.log().contains("panicked")
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A fresh account name for an honest probe.
fn honest_user() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("honest-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A TCP connection from `source` (any port) to `to`.
async fn connect_from(source: Ipv4Addr, to: SocketAddr, rcvbuf: Option<u32>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Closing resets the connection: no TIME_WAIT left behind for the next attack.
    socket.set_zero_linger()?;
    if let Some(bytes) = rcvbuf {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// `n` attack connections from [`ATTACKER_IP`] to `to` ([`CONNECTS_IN_FLIGHT`] at a time);
/// those that could not be opened within [`CONNECT_WITHIN`] are left out.
async fn open_many(n: usize, to: SocketAddr) -> Vec<TcpStream> {
    futures::stream::iter(0..n)
        .map(|_| tokio::time::timeout(CONNECT_WITHIN, connect_from(ATTACKER_IP, to, Some(ATTACKER_RCVBUF))))
        .buffer_unordered(CONNECTS_IN_FLIGHT)
        .filter_map(|r| async move { r.ok().and_then(Result::ok) })
        .collect()
        .await
}

/// The body of the next message of type `reply` on a TCP JSON connection.
async fn tcp_call(
    conn: &mut Framed<TcpStream, LengthDelimitedCodec>,
    msg_type: &str,
    body: &Value,
    reply: &str,
) -> Result<Value, String> {
    conn.send(codec::encode_json_message(Transport::TcpJson, msg_type, body))
        .await
        .map_err(|e| format!("send {msg_type}: {e}"))?;
    loop {
        let frame = match conn.next().await {
            None => return Err(format!("closed before {reply}")),
            Some(Err(e)) => return Err(format!("reading {reply}: {e}")),
            Some(Ok(f)) => f,
        };
        if let Some(v) = reply_body(Transport::TcpJson, &frame, reply)? {
            return Ok(v);
        }
    }
}

/// `Some(body)` if `frame` is a `reply`, `None` for any other message (a `_ping`), an error
/// for `_error` or an undecodable frame.
fn reply_body(transport: Transport, frame: &[u8], reply: &str) -> Result<Option<Value>, String> {
    let m = codec::decode(transport, frame).map_err(|e| format!("undecodable frame: {e}"))?;
    let InBody::Json(v) = m.body else { return Err(format!("{} has no JSON body", m.msg_type)) };
    if m.msg_type == reply {
        Ok(Some(v))
    } else if m.msg_type == codec::ERROR_TYPE {
        Err(format!("_error {v}"))
    } else {
        Ok(None)
    }
}

fn login_ok(v: &Value) -> Result<(), String> {
    if v["error"] == json!(false) {
        Ok(())
    } else {
        Err(format!("login refused: {v}"))
    }
}

fn tcp_framed(stream: TcpStream) -> Framed<TcpStream, LengthDelimitedCodec> {
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(CLIENT_FRAME_MAX)
        .new_codec();
    Framed::new(stream, codec)
}

/// Honest TCP JSON client: connect from `source`, log in as `user`.
async fn tcp_login(addr: SocketAddr, source: Ipv4Addr, user: &str) -> Result<(), String> {
    let stream = connect_from(source, addr, None).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let mut conn = tcp_framed(stream);
    login_ok(&tcp_call(&mut conn, CS_LOGIN, &json!({ "user_name": user }), SC_LOGIN).await?)
}

/// Honest WebSocket client: connect from `source`, upgrade, log in as `user`.
async fn ws_login(addr: SocketAddr, source: Ipv4Addr, user: &str) -> Result<(), String> {
    let stream = connect_from(source, addr, None).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
        .await
        .map_err(|e| format!("upgrade on {addr}: {e}"))?;
    let payload =
        codec::encode_json_message(Transport::WebSocketJson, CS_LOGIN, &json!({ "user_name": user }));
    let text = String::from_utf8(payload.to_vec()).map_err(|e| format!("login is not text: {e}"))?;
    ws.send(Message::text(text)).await.map_err(|e| format!("send login: {e}"))?;
    loop {
        let frame: Bytes = match ws.next().await {
            None => return Err("closed before the login reply".to_string()),
            Some(Err(e)) => return Err(format!("reading the login reply: {e}")),
            Some(Ok(Message::Text(t))) => Bytes::from(t),
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(_))) => return Err("close frame before the login reply".to_string()),
            Some(Ok(_)) => continue,
        };
        if let Some(v) = reply_body(Transport::WebSocketJson, &frame, SC_LOGIN)? {
            return login_ok(&v);
        }
    }
}

/// `GET /v1/health` on the admin port from `source`: `Ok` if answered 200.
async fn health(port: u16, source: Ipv4Addr) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = connect_from(source, addr, None).await.map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(HEALTH_REQUEST).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    match text.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(status) => Err(format!("status {status}")),
        None if buf.is_empty() => Err("closed without an answer".to_string()),
        None => Err(format!("not HTTP: {:?}", text.chars().take(40).collect::<String>())),
    }
}

/// Reads the server's `VmRSS` every [`RSS_SAMPLE_EVERY`] on a thread of its own (so a busy
/// runtime does not skip samples) and keeps the largest.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak_kib.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib_of(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(RSS_SAMPLE_EVERY);
            }
        });
        RssSampler { stop, peak_kib, thread: Some(thread) }
    }

    /// Stops sampling; the peak in MiB.
    fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        kib_to_mib(self.peak_kib.load(Ordering::Relaxed))
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type ProbeResults = Vec<(Duration, Result<(), String>)>;

/// Times `probe` once from `source` against the server on `ports`, bounded by
/// [`PROBE_TIMEOUT`].
async fn probe_once(ports: Ports, probe: Probe, source: Ipv4Addr) -> (Duration, Result<(), String>) {
    let start = Instant::now();
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let fut = async {
        match probe {
            Probe::TcpLogin => tcp_login(at(ports.tcp_json), source, &honest_user()).await,
            Probe::WsLogin => ws_login(at(ports.websocket_json), source, &honest_user()).await,
            Probe::Health => health(ports.api, source).await,
        }
    };
    let r = match tokio::time::timeout(PROBE_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    (start.elapsed(), r)
}

/// Honest probes started every [`PROBE_EVERY`] from one source until stopped.
struct ProbeLoop {
    stop: Arc<AtomicBool>,
    task: JoinHandle<ProbeResults>,
}

/// Measures one attack on `target`: the figures before it, the probes and memory peak during
/// it, and the figures after it.
struct Meter<'a> {
    target: &'a mut Target,
    attack: &'static str,
    clients: Vec<(Probe, Ipv4Addr)>,
    started: Instant,
    rss_before_mib: f64,
    sampler: Option<RssSampler>,
    probing: Vec<ProbeLoop>,
    during: Vec<ProbeResults>,
    facts: BTreeMap<String, f64>,
    notes: Vec<String>,
}

impl<'a> Meter<'a> {
    /// Reads the memory before and starts sampling it.
    fn begin(
        target: &'a mut Target,
        attack: &'static str,
        clients: &[(Probe, Ipv4Addr)],
    ) -> Result<Self, BenchError> {
        let rss_before_mib = target.rss_mib()?;
        let sampler = Some(RssSampler::start(target.pid()));
        Ok(Meter {
            target,
            attack,
            clients: clients.to_vec(),
            started: Instant::now(),
            rss_before_mib,
            sampler,
            probing: Vec::new(),
            during: Vec::new(),
            facts: BTreeMap::new(),
            notes: Vec::new(),
        })
    }

    fn api(&self) -> SocketAddr {
        self.target.addr(self.target.ports.api)
    }

    fn ws(&self) -> SocketAddr {
        self.target.addr(self.target.ports.websocket_json)
    }

    fn tcp_json(&self) -> SocketAddr {
        self.target.addr(self.target.ports.tcp_json)
    }

    /// Starts the honest probes of the "during" phase.
    fn start_probes(&mut self) {
        for &(probe, source) in &self.clients {
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            let ports = self.target.ports;
            let task = tokio::spawn(async move {
                let mut running = Vec::new();
                while !s.load(Ordering::Relaxed) {
                    running.push(tokio::spawn(probe_once(ports, probe, source)));
                    tokio::time::sleep(PROBE_EVERY).await;
                }
                let mut results = Vec::new();
                for h in running {
                    match h.await {
                        Ok(r) => results.push(r),
                        Err(e) => results.push((Duration::ZERO, Err(format!("probe task failed: {e}")))),
                    }
                }
                results
            });
            self.probing.push(ProbeLoop { stop, task });
        }
    }

    /// Stops starting probes and waits for those in flight (each bounded by [`PROBE_TIMEOUT`]).
    async fn finish_probes(&mut self) {
        for p in &self.probing {
            p.stop.store(true, Ordering::Relaxed);
        }
        for p in self.probing.drain(..) {
            self.during.push(p.task.await.unwrap_or_default());
        }
    }

    fn fact(&mut self, name: &str, value: f64) {
        self.facts.insert(name.to_string(), value);
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// The attack is over and its connections are closed: settle, read the memory after,
    /// probe after, check the process.
    async fn finish(mut self) -> Result<Measurement, BenchError> {
        if !self.probing.is_empty() {
            self.finish_probes().await;
        }
        tokio::time::sleep(SETTLE_AFTER).await;
        let alive = self.target.alive();
        let rss_after_mib = if alive { self.target.rss_mib()? } else { 0.0 };
        let rss_peak_mib = self.sampler.take().map_or(0.0, RssSampler::finish).max(rss_after_mib);
        let mut honest = Vec::new();
        for (i, &(probe, source)) in self.clients.iter().enumerate() {
            let mut after = Vec::new();
            for _ in 0..AFTER_PROBES {
                after.push(probe_once(self.target.ports, probe, source).await);
            }
            let during = self.during.get(i).map(|r| Probes::from_results(r)).unwrap_or_default();
            honest.push(Honest { probe, source, during, after: Probes::from_results(&after) });
        }
        let server_alive = self.target.alive();
        if !server_alive {
            self.notes.push(format!("the server died:\n{}", self.target.log_tail()));
        }
        Ok(Measurement {
            attack: self.attack.to_string(),
            rss_before_mib: self.rss_before_mib,
            rss_peak_mib,
            rss_after_mib,
            honest,
            facts: self.facts,
            notes: self.notes,
            server_alive,
            server_panicked: self.target.panicked(),
            wall_secs: self.started.elapsed().as_secs_f64(),
        })
    }
}

/// The honest clients of the connection-exhaustion attacks: from another address and from
/// the attacker's.
fn both_sources(probe: Probe) -> [(Probe, Ipv4Addr); 2] {
    [(probe, HONEST_OTHER_IP), (probe, ATTACKER_IP)]
}

/// Makes sure this process may open `connections` more descriptors.
fn ensure_fds(connections: usize) -> Result<(), BenchError> {
    let fd = raise_fd_limit();
    let need = connections as u64 + FD_RESERVE + super::machine::open_fds();
    if fd.soft < need {
        return Err(BenchError::setup(
            BENCH,
            format!("{need} file descriptors needed, the limit is {}", fd.soft),
        ));
    }
    Ok(())
}
