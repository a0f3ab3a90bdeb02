//! One engine `SessionService` serving TCP JSON, TCP protobuf and WebSocket JSON ports at once
//! on real sockets (127.0.0.1, port 0), through `real::adapters::RealClientListeners`, driven
//! by real clients: length-prefixed TCP frames (DESIGN.md §6) and a tokio-tungstenite
//! WebSocket client. No ZooKeeper or Redis is needed (the `Env` connects to them lazily and
//! these tests never use them).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::client::{Recv, WireClient};
use engine::env::Env;
use engine::rpc::messages::{EchoReply, EchoRequest};
use engine::session::codec::{self};
use engine::session::{CloseReason, SessionConfig, SessionService, Transport};
use prost::Message as _;
use real::adapters::{RealClientListeners, RedisKvOptions, WsOptions};
use real::env::{real_env, RealEnvConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TRANSPORTS: [Transport; 3] = [Transport::TcpJson, Transport::TcpProtobuf, Transport::WebSocketJson];
/// How long a client waits for a frame it expects.
const WAIT: Duration = Duration::from_secs(10);

fn env() -> Env {
    real_env(&RealEnvConfig {
        node: "client-ports".into(),
        ip: "127.0.0.1".parse().unwrap(),
        // Never contacted: both clients connect lazily and these tests use neither.
        zookeeper: "127.0.0.1:1".into(),
        redis_url: "redis://127.0.0.1:1".into(),
        redis: RedisKvOptions::default(),
    })
    .expect("env")
}

/// What the server's callbacks saw.
#[derive(Clone, Default)]
struct Seen {
    closed: Arc<Mutex<Vec<(Transport, CloseReason)>>>,
}

impl Seen {
    fn closed(&self) -> Vec<(Transport, CloseReason)> {
        self.closed.lock().unwrap().clone()
    }
}

/// A service with all three ports on 127.0.0.1:0 (each config changed by `cfg`), its handlers
/// registered, serving.
async fn server(cfg: impl Fn(&mut SessionConfig), ws: WsOptions) -> (SessionService, Seen) {
    let ports = TRANSPORTS
        .iter()
        .map(|&t| {
            let mut c = SessionConfig::new("127.0.0.1:0".parse().unwrap(), t);
            cfg(&mut c);
            c
        })
        .collect();
    let svc = SessionService::bind(env(), ports, &RealClientListeners::new(ws)).await.expect("bind");
    svc.register_json_handler("echo", |s, body| async move {
        let _ = s.send_json("echo_reply", body);
    });
    svc.register_proto_handler("echo_pb", |s, req: EchoRequest| async move {
        let _ = s.send_proto("echo_pb_reply", &EchoReply { message: req.message });
    });
    svc.register_json_handler("mark_slow", |s, _| async move {
        s.set_context("slow", true);
        let _ = s.send_json("marked", json!({}));
    });
    let seen = Seen::default();
    let closed = seen.closed.clone();
    svc.on_session_closed(move |s, reason| {
        closed.lock().unwrap().push((s.transport(), reason));
        async {}
    });
    svc.serve();
    (svc, seen)
}

/// A real client of the port of `svc` for `transport`.
async fn connect(svc: &SessionService, transport: Transport) -> WireClient {
    WireClient::connect(svc.local_addr_of(transport).expect("port"), transport).await
}

/// What these tests ask of a client of one port, on top of [`WireClient`].
trait PortClient {
    /// The next message that is not a `_ping`.
    async fn recv(&mut self) -> Recv;
    async fn echo(&mut self, text: &str) -> Recv;
    async fn error_code(&mut self) -> String;
}

impl PortClient for WireClient {
    async fn recv(&mut self) -> Recv {
        self.recv_within(WAIT).await
    }

    async fn echo(&mut self, text: &str) -> Recv {
        self.send("echo", json!({ "text": text })).await;
        self.recv().await
    }

    async fn error_code(&mut self) -> String {
        match self.recv().await {
            Recv::Msg(t, body) if t == codec::ERROR_TYPE => body["code"].as_str().expect("code").to_string(),
            other => panic!("{:?}: expected an _error frame, got {other:?}", self.transport),
        }
    }
}

fn echoed(text: &str) -> Recv {
    Recv::Msg("echo_reply".into(), json!({ "text": text }))
}

/// Polls `f` every 20 ms until true, or panics with `what` after `limit`.
async fn until(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_answers_in_its_own_encoding() {
    let (svc, _) = server(|_| {}, WsOptions::default()).await;
    let addrs = svc.local_addrs();
    assert_eq!(addrs.iter().map(|(t, _)| *t).collect::<Vec<_>>(), TRANSPORTS);
    assert!(addrs.iter().all(|(_, a)| a.port() != 0), "{addrs:?}");
    assert_eq!(svc.local_addr(), addrs[0].1);
    for t in TRANSPORTS {
        let mut c = connect(&svc, t).await;
        assert_eq!(c.echo(&format!("hello {t:?}")).await, echoed(&format!("hello {t:?}")), "{t:?}");
    }
    // The protobuf handler, on the protobuf port.
    let mut c = connect(&svc, Transport::TcpProtobuf).await;
    let req = EchoRequest { message: "pb".into() };
    c.send_raw(codec::encode_protobuf("echo_pb", &req.encode_to_vec())).await;
    match c.recv().await {
        Recv::Bytes(t, b) if t == "echo_pb_reply" => assert_eq!(EchoReply::decode(b).unwrap().message, "pb"),
        other => panic!("{other:?}"),
    }
    // A binary WebSocket message holding an envelope is a frame too.
    let mut w = connect(&svc, Transport::WebSocketJson).await;
    w.send_ws_binary(codec::encode_json("echo", &json!({"text": "bin"}))).await;
    assert_eq!(w.recv().await, echoed("bin"));
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_error_frames_on_every_port() {
    let (svc, seen) = server(|c| c.max_frame_bytes = 4096, WsOptions::default()).await;
    for t in TRANSPORTS {
        // Unknown type: `_error`, the session stays open.
        let mut c = connect(&svc, t).await;
        c.send("cs_no_such_thing", json!({})).await;
        assert_eq!(c.error_code().await, "unknown_type", "{t:?}");
        assert_eq!(c.echo("open").await, echoed("open"), "{t:?}");
        // A payload that does not decode: `_error`, then the session closes.
        let (payload, code) = match t {
            Transport::TcpProtobuf => (Bytes::from_static(b"\x0a\x09short"), "bad_envelope"),
            _ => (Bytes::from_static(b"{nope"), "bad_json"),
        };
        c.send_raw(payload).await;
        assert_eq!(c.error_code().await, code, "{t:?}");
        assert_eq!(c.recv().await, Recv::Eof, "{t:?}");
        // Oversized: `_error frame_too_large`, then the session closes.
        let mut c = connect(&svc, t).await;
        assert_eq!(c.echo(&"x".repeat(3000)).await, echoed(&"x".repeat(3000)), "{t:?}: under the limit");
        c.send("echo", json!({ "text": "x".repeat(5000) })).await;
        assert_eq!(c.error_code().await, "frame_too_large", "{t:?}");
        assert_eq!(c.recv().await, Recv::Eof, "{t:?}");
    }
    until(WAIT, "six closed sessions", || seen.closed().len() == 6).await;
    let codes: Vec<(Transport, &str)> = seen
        .closed()
        .iter()
        .map(|(t, r)| match r {
            CloseReason::Protocol(e) => (*t, e.code()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            (Transport::TcpJson, "bad_json"),
            (Transport::TcpJson, "frame_too_large"),
            (Transport::TcpProtobuf, "bad_envelope"),
            (Transport::TcpProtobuf, "frame_too_large"),
            (Transport::WebSocketJson, "bad_json"),
            (Transport::WebSocketJson, "frame_too_large"),
        ]
    );
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_closed_and_the_others_are_served() {
    let (svc, seen) = server(|c| c.send_queue_max = 16, WsOptions::default()).await;
    let mut slow = Vec::new();
    let mut fine = Vec::new();
    for t in TRANSPORTS {
        let mut s = connect(&svc, t).await;
        s.send("mark_slow", json!({})).await;
        assert_eq!(s.recv().await, Recv::Msg("marked".into(), json!({})));
        slow.push(s); // never read again
        let mut f = connect(&svc, t).await;
        assert_eq!(f.echo("before").await, echoed("before"));
        fine.push(f);
    }
    // Large frames to the slow sessions only, until their kernel buffers and then their
    // queues are full (bounded: 2000 x 64 KiB per session at most).
    let big = json!({ "pad": "x".repeat(64 * 1024) });
    let is_slow = |s: &engine::session::Session| s.context::<bool>("slow").unwrap_or(false);
    for _ in 0..2000 {
        if svc.broadcast_locally("big", &big, is_slow) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    until(WAIT, "three slow readers closed", || {
        seen.closed().iter().filter(|(_, r)| *r == CloseReason::SlowReader).count() == 3
    })
    .await;
    let mut slow_transports: Vec<Transport> = seen.closed().iter().map(|(t, _)| *t).collect();
    slow_transports.sort();
    assert_eq!(slow_transports, TRANSPORTS, "only the slow sessions closed, one per port");
    assert_eq!(CloseReason::SlowReader.to_string(), "slow reader");
    // The others are still served, on every port, and new clients too.
    for f in fine.iter_mut() {
        assert_eq!(f.echo("after").await, echoed("after"), "{:?}", f.transport);
    }
    for t in TRANSPORTS {
        let mut c = connect(&svc, t).await;
        assert_eq!(c.echo("new").await, echoed("new"), "{t:?}");
    }
    assert!(svc.sessions().iter().all(|s| !is_slow(s)), "the slow sessions left the table");
    drop(slow);
    svc.shutdown().await;
}

/// Connects to `addr` and drops the connection at once, `n` times, 50 at a time.
async fn open_and_drop(addr: SocketAddr, n: usize) {
    for _ in 0..n / 50 {
        let batch: Vec<_> = (0..50).map(|_| TcpStream::connect(addr)).collect();
        for s in futures::future::join_all(batch).await {
            drop(s.expect("connect"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_and_failed_handshakes_do_not_stop_the_server() {
    let ws_opts = WsOptions { handshake_timeout: Duration::from_millis(500), ..WsOptions::default() };
    let (svc, _) = server(|_| {}, ws_opts).await;
    let ws_addr = svc.local_addr_of(Transport::WebSocketJson).unwrap();
    // Half-open upgrades that never send a byte: they time out without pinning anything.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(ws_addr).await.unwrap());
    }
    // A broken handshake (plain HTTP without the upgrade headers) fails; the listener goes on.
    let mut bad = TcpStream::connect(ws_addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // 2100 connections opened and dropped, over the three ports.
    for t in TRANSPORTS {
        open_and_drop(svc.local_addr_of(t).unwrap(), 700).await;
    }
    // A fresh client on every port is answered, while the idle upgrades still sit there.
    for t in TRANSPORTS {
        let mut c = connect(&svc, t).await;
        assert_eq!(c.echo("fresh").await, echoed("fresh"), "{t:?}");
    }
    // The dropped connections' sessions end.
    until(WAIT, "flood sessions to close", || svc.sessions().is_empty()).await;
    // The server drops the half-open upgrades after the handshake timeout, and the broken one.
    for s in idle.iter_mut().chain(std::iter::once(&mut bad)) {
        assert_eq!(read_to_close(s).await, Some(()), "the server closes an unfinished upgrade");
    }
    let mut c = connect(&svc, Transport::WebSocketJson).await;
    assert_eq!(c.echo("after timeouts").await, echoed("after timeouts"));
    svc.shutdown().await;
    // Shut down: no port accepts any more.
    for (_, addr) in svc.local_addrs() {
        until(WAIT, "port to close", || std::net::TcpStream::connect(addr).is_err()).await;
    }
}

/// Reads (and discards) until the server closes `s`: `Some(())`, or `None` after [`WAIT`].
async fn read_to_close(s: &mut TcpStream) -> Option<()> {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_upgrades_are_evicted_oldest_first_so_a_new_client_never_waits() {
    let limit = Duration::from_secs(10);
    let ws_opts = WsOptions {
        handshake_timeout: limit,
        max_pending_handshakes: 4,
        max_pending_handshakes_per_address: 3,
        ..WsOptions::default()
    };
    let (svc, _) = server(|_| {}, ws_opts).await;
    let ws_addr = svc.local_addr_of(Transport::WebSocketJson).unwrap();
    // Three silent connections fill 127.0.0.1's share of pending upgrades ...
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(ws_addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = tokio::time::Instant::now();
    // ... a real client from the same address evicts the oldest of them and gets through at
    // once, long before any upgrade times out.
    let mut c = connect(&svc, Transport::WebSocketJson).await;
    assert_eq!(c.echo("through").await, echoed("through"));
    let waited = t0.elapsed();
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
    assert_eq!(read_to_close(&mut idle[0]).await, Some(()), "the oldest silent upgrade is dropped");
    // The younger ones are still pending (they would only go at the timeout).
    let mut buf = [0u8; 16];
    for s in &mut idle[1..] {
        let r = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
        assert!(r.is_err(), "a younger pending upgrade is left alone: {r:?}");
    }
    // A client from another loopback address evicts nothing of 127.0.0.1's below the total
    // limit (3 pending + 1 = 4).
    let other = connect_ws_from("127.0.0.2", ws_addr).await;
    drop(other);
    // The TCP ports never waited on any of this.
    let mut t = connect(&svc, Transport::TcpJson).await;
    assert_eq!(t.echo("tcp").await, echoed("tcp"));
    svc.shutdown().await;
}

/// A WebSocket client upgraded from the local address `ip`.
async fn connect_ws_from(
    ip: &str,
    addr: std::net::SocketAddr,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(std::net::SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let (ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(format!("ws://{addr}/"), stream))
            .await
            .expect("upgrade in time")
            .expect("upgrade");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_ping_flood_is_closed_as_abuse_not_absorbed() {
    let ws_opts = WsOptions { control_frames_per_second_max: 50, ..WsOptions::default() };
    let (svc, seen) = server(|_| {}, ws_opts).await;
    let addr = svc.local_addr_of(Transport::WebSocketJson).unwrap();
    let mut ws = connect_ws_from("127.0.0.1", addr).await;
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    // 50 pings in a second are within the limit; the session stays.
    for _ in 0..50 {
        ws.send(Message::Ping(Bytes::from_static(b"p"))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(seen.closed().is_empty(), "{:?}", seen.closed());
    // The flood: the server closes the session for abuse well before 10,000 pings.
    let mut sent = 0;
    while sent < 10_000 && ws.send(Message::Ping(Bytes::from_static(b"p"))).await.is_ok() {
        sent += 1;
        if !seen.closed().is_empty() {
            break;
        }
    }
    until(WAIT, "the flooding session to close", || !seen.closed().is_empty()).await;
    let closed = seen.closed();
    assert!(
        matches!(&closed[..], [(Transport::WebSocketJson, CloseReason::Abuse(w))] if w.contains("control-frame flood")),
        "{closed:?} after {sent} more pings"
    );
    // Others are served.
    let mut c = connect(&svc, Transport::WebSocketJson).await;
    assert_eq!(c.echo("after").await, echoed("after"));
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_closed_by_its_byte_budget_before_its_frame_count() {
    // 1,024 frames of 64 KiB would be 64 MiB; the byte budget closes the session at 1 MiB.
    let (svc, seen) = server(|c| c.send_queue_bytes_max = 1024 * 1024, WsOptions::default()).await;
    let mut slow = Vec::new();
    for t in TRANSPORTS {
        let mut s = connect(&svc, t).await;
        s.send("mark_slow", json!({})).await;
        assert_eq!(s.recv().await, Recv::Msg("marked".into(), json!({})));
        slow.push(s);
    }
    let big = json!({ "pad": "x".repeat(64 * 1024) });
    let is_slow = |s: &engine::session::Session| s.context::<bool>("slow").unwrap_or(false);
    let mut peak = 0;
    for _ in 0..2000 {
        if svc.broadcast_locally("big", &big, is_slow) == 0 {
            break;
        }
        peak = peak.max(svc.sessions().iter().map(|s| s.queued_bytes()).max().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    until(WAIT, "three slow readers closed", || {
        seen.closed().iter().filter(|(_, r)| *r == CloseReason::SlowReader).count() == 3
    })
    .await;
    assert!(peak <= 1024 * 1024, "a session held {peak} bytes");
    until(WAIT, "the budget to be given back", || svc.stats().memory_bytes == 0).await;
    assert_eq!(svc.stats().closed.get("slow_reader"), Some(&3));
    drop(slow);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_unauthenticated_connections_are_evicted_oldest_first_for_newcomers() {
    let svc = tcp_echo_server(engine::session::ServiceLimits {
        unauthenticated_max: 100,
        unauthenticated_per_address_max: 5,
        ..Default::default()
    })
    .await;
    let addr = svc.local_addr_of(Transport::TcpJson).unwrap();
    // A client that has spoken is never evicted.
    let mut proven = connect(&svc, Transport::TcpJson).await;
    assert_eq!(proven.echo("hi").await, echoed("hi"));
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    until(WAIT, "five unauthenticated", || svc.stats().unauthenticated == 5).await;
    // Two newcomers from the same address: the two oldest silent ones are closed.
    let mut a = connect(&svc, Transport::TcpJson).await;
    let mut b = connect(&svc, Transport::TcpJson).await;
    until(WAIT, "two evictions", || svc.stats().closed.get("evicted") == Some(&2)).await;
    assert_eq!(a.echo("a").await, echoed("a"));
    assert_eq!(b.echo("b").await, echoed("b"));
    for s in &mut idle[..2] {
        assert_eq!(read_to_close(s).await, Some(()), "an old silent connection is evicted");
    }
    assert_eq!(svc.stats().closed.get("evicted"), Some(&2));
    assert_eq!(proven.echo("still").await, echoed("still"));
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_session_memory_budget_new_connections_get_server_busy() {
    use engine::session::SESSION_BASE_BYTES;
    // Room for three connections' base charge and a little queue.
    let svc = tcp_echo_server(engine::session::ServiceLimits {
        memory_max: 3 * SESSION_BASE_BYTES + 4096,
        ..Default::default()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut c = connect(&svc, Transport::TcpJson).await;
        assert_eq!(c.echo(&format!("c{i}")).await, echoed(&format!("c{i}")));
        held.push(c);
    }
    let mut refused = connect(&svc, Transport::TcpJson).await;
    assert_eq!(refused.error_code().await, "server_busy");
    assert_eq!(refused.recv().await, Recv::Eof, "a refused connection is closed");
    assert_eq!(svc.stats().refused_busy, 1);
    assert_eq!(svc.stats().memory_bytes, 3 * SESSION_BASE_BYTES, "nothing queued, three sessions");
    // One leaves: its share comes back and a newcomer is served.
    drop(held.pop());
    until(WAIT, "the leaver's share back", || svc.stats().memory_bytes == 2 * SESSION_BASE_BYTES).await;
    let mut c = connect(&svc, Transport::TcpJson).await;
    assert_eq!(c.echo("in").await, echoed("in"));
    svc.shutdown().await;
}

/// One TCP JSON port with an `echo` handler, bound with service-wide `limits`, serving.
async fn tcp_echo_server(limits: engine::session::ServiceLimits) -> SessionService {
    let ports = vec![SessionConfig::new("127.0.0.1:0".parse().unwrap(), Transport::TcpJson)];
    let svc = SessionService::bind_with_limits(
        env(),
        ports,
        limits,
        &RealClientListeners::new(WsOptions::default()),
    )
    .await
    .expect("bind");
    svc.register_json_handler("echo", |s, body| async move {
        let _ = s.send_json("echo_reply", body);
    });
    svc.serve();
    svc
}
