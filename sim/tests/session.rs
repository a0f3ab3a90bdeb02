//! `engine::session` under madsim: a server node with a `SessionService` and client nodes
//! speaking the raw client wire protocol (DESIGN.md §6) over `Net::connect`.
//!
//! | node | ip | role |
//! |---|---|---|
//! | `server` | 10.2.0.1:8012 | `SessionService` with the test handlers below |
//! | `client-N` | 10.2.0.(10+N) | raw-frame clients; the test body runs on `client-0` |
//!
//! Test handlers: `echo` (JSON, replies `echo_reply` with the body), `ordered` (random think
//! time, records `(session, seq)`, replies `ordered_reply`), `hold` (sleeps `ms`), `login`
//! (tags the session's context with `name`), `close_me` (replies `bye`, then closes),
//! `flood` (queues `n` frames at once), `echo_pb` (protobuf `EchoRequest` -> `EchoReply`).
//!
//! Each run gets a fresh OS thread (std's `HashMap` seeding must happen on a fresh thread for
//! a seed to replay).
//!
//! Size: one test binary of many short simulations sharing the fixture above; splitting it
//! would copy the fixture into every part.

use sim::testkit::node_env;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use engine::env::{timeout, Connection, Env, RandExt, MAX_PEER_FRAME_BYTES};
use engine::rpc::messages::{EchoReply, EchoRequest};
use engine::session::codec::{self, InBody};
use engine::session::{
    CloseReason, NetClientListeners, SessionConfig, SessionError, SessionId, SessionService, Transport,
};
use futures::{SinkExt, StreamExt};
use madsim::runtime::{Handle, Runtime};
use prost::Message;
use serde_json::{json, Value};
use sim::adapters::ClockControl;

const SERVER_IP: [u8; 4] = [10, 2, 0, 1];
const PORT: u16 = 8012;
/// The protobuf and (modelled) WebSocket ports of the multi-port tests.
const PB_PORT: u16 = 8022;
const WS_PORT: u16 = 8032;
/// Nothing listens here: the coord/kv ports are never used by these tests.
/// How long a client waits for a frame it expects.
const WAIT: Duration = Duration::from_secs(5);

fn ip(b: [u8; 4]) -> IpAddr {
    IpAddr::from(b)
}

fn client_ip(n: u8) -> IpAddr {
    IpAddr::from([10, 2, 0, 10 + n])
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(ip(SERVER_IP), PORT)
}

fn server_port(port: u16) -> SocketAddr {
    SocketAddr::new(ip(SERVER_IP), port)
}

use engine::env::lock;

/// State shared by the nodes of one run (the test's omniscient view).
#[derive(Clone, Default)]
struct World {
    clocks: ClockControl,
    service: Arc<Mutex<Option<SessionService>>>,
    /// `ordered` handler runs: (session, seq), in execution order.
    handled: Arc<Mutex<Vec<(SessionId, u64)>>>,
    /// Closed callbacks: (session, reason), in order.
    closed: Arc<Mutex<Vec<(SessionId, CloseReason)>>>,
    opened: Arc<Mutex<Vec<SessionId>>>,
}

impl World {
    fn service(&self) -> SessionService {
        lock(&self.service).clone().expect("service started")
    }
    fn closed(&self) -> Vec<(SessionId, CloseReason)> {
        lock(&self.closed).clone()
    }
}

fn install_handlers(svc: &SessionService, env: &Env, w: &World) {
    svc.register_json_handler("echo", |s, body| async move {
        let _ = s.send_json("echo_reply", body);
    });
    let (handled, env2) = (w.handled.clone(), env.clone());
    svc.register_json_handler("ordered", move |s, body| {
        let (handled, env) = (handled.clone(), env2.clone());
        async move {
            // A random think time: a later message would overtake an earlier one if the
            // service dispatched them concurrently.
            env.clock.sleep(Duration::from_millis(env.rand.gen_range(0..20))).await;
            let seq = body["seq"].as_u64().unwrap_or(0);
            lock(&handled).push((s.id(), seq));
            let _ = s.send_json("ordered_reply", json!({ "seq": seq }));
        }
    });
    let clock = env.clock.clone();
    svc.register_json_handler("hold", move |s, body| {
        let sleep = clock.sleep(Duration::from_millis(body["ms"].as_u64().unwrap_or(0)));
        async move {
            sleep.await;
            let _ = s.send_json("held", json!({}));
        }
    });
    svc.register_json_handler("login", |s, body| async move {
        let Some(name) = body["name"].as_str() else {
            let _ = s.send_json("sc_login", json!({"error": true, "error_message": "no name"}));
            s.close("malformed login");
            return;
        };
        s.set_context("name", name.to_string());
        let _ = s.send_json("sc_login", json!({"error": false}));
    });
    svc.register_json_handler("close_me", |s, _| async move {
        let _ = s.send_json("bye", json!({}));
        s.close("asked to");
    });
    svc.register_json_handler("flood", |s, body| async move {
        for i in 0..body["n"].as_u64().unwrap_or(0) {
            if s.send_json("flood_item", json!({ "i": i })).is_err() {
                break;
            }
        }
    });
    svc.register_proto_handler("echo_pb", |s, req: EchoRequest| async move {
        let _ = s.send_proto("echo_pb_reply", &EchoReply { message: req.message });
    });
    let opened = w.opened.clone();
    svc.on_session_opened(move |s| {
        lock(&opened).push(s.id());
        async {}
    });
    let closed = w.closed.clone();
    svc.on_session_closed(move |s, reason| {
        lock(&closed).push((s.id(), reason));
        async {}
    });
}

/// What a client reads next.
#[derive(Clone, Debug, PartialEq)]
enum Recv {
    Msg(String, Value),
    /// A protobuf-port message whose body is not JSON.
    Bytes(String, Bytes),
    Eof,
    Timeout,
}

/// A raw wire-protocol client.
struct Client {
    env: Env,
    conn: Connection,
    transport: Transport,
}

impl Client {
    async fn connect(env: &Env, transport: Transport) -> Client {
        Client::connect_to(env, server_addr(), transport).await
    }

    async fn connect_to(env: &Env, addr: SocketAddr, transport: Transport) -> Client {
        // The client accepts big frames so that it can also *send* oversized ones.
        let conn = env.net.connect(addr, MAX_PEER_FRAME_BYTES).await.expect("connect");
        Client { env: env.clone(), conn, transport }
    }

    async fn send_raw(&mut self, payload: impl Into<Bytes>) {
        self.conn.sink.send(payload.into()).await.expect("send");
    }

    async fn send(&mut self, msg_type: &str, body: Value) {
        let frame = codec::encode_json_message(self.transport, msg_type, &body);
        self.send_raw(frame).await;
    }

    /// The next frame, `_ping` included.
    async fn recv_any(&mut self, within: Duration) -> Recv {
        match timeout(&*self.env.clock, within, self.conn.stream.next()).await {
            Err(_) => Recv::Timeout,
            Ok(None | Some(Err(_))) => Recv::Eof,
            Ok(Some(Ok(frame))) => {
                let m = codec::decode(self.transport, &frame).expect("server frames are valid");
                match m.body {
                    InBody::Json(v) => Recv::Msg(m.msg_type, v),
                    InBody::Bytes(b) => match codec::json_body_from_bytes(&m.msg_type, &b) {
                        Ok(v) => Recv::Msg(m.msg_type, v),
                        Err(_) => Recv::Bytes(m.msg_type, b),
                    },
                }
            }
        }
    }

    /// The next frame that is not a `_ping`.
    async fn recv(&mut self) -> Recv {
        loop {
            match self.recv_any(WAIT).await {
                Recv::Msg(t, _) if t == codec::PING_TYPE => continue,
                other => return other,
            }
        }
    }

    /// Expects an `_error` frame and returns its code.
    async fn recv_error_code(&mut self) -> String {
        match self.recv().await {
            Recv::Msg(t, body) if t == codec::ERROR_TYPE => {
                assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
                body["code"].as_str().expect("code").to_string()
            }
            other => panic!("expected an _error frame, got {other:?}"),
        }
    }

    async fn echo(&mut self, text: &str) -> Recv {
        self.send("echo", json!({ "text": text })).await;
        self.recv().await
    }
}

fn echoed(text: &str) -> Recv {
    Recv::Msg("echo_reply".into(), json!({ "text": text }))
}

/// What a test body gets.
struct Ctx {
    handle: Handle,
    w: World,
    env: Env,
}

impl Ctx {
    fn now_ms(&self) -> u64 {
        self.env.clock.now().as_nanos() / 1_000_000
    }
    async fn sleep_ms(&self, ms: u64) {
        self.env.clock.sleep(Duration::from_millis(ms)).await;
    }
    async fn client(&self, transport: Transport) -> Client {
        Client::connect(&self.env, transport).await
    }
    /// Runs `f` on a new client node `client-n` and returns its result.
    async fn on_node<T, F, Fut>(&self, n: u8, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Env) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let name = format!("client-{n}");
        let node = self.handle.create_node().name(&name).ip(client_ip(n)).build();
        let clocks = self.w.clocks.clone();
        node.spawn(async move { f(node_env(&name, client_ip(n), &clocks)).await }).await.expect("client task")
    }
    /// Waits (bounded) until `n` closed callbacks have run.
    async fn wait_closed(&self, n: usize) -> Vec<(SessionId, CloseReason)> {
        for _ in 0..1000 {
            let c = self.w.closed();
            if c.len() >= n {
                return c;
            }
            self.sleep_ms(10).await;
        }
        panic!("only {:?} sessions closed, expected {n}", self.w.closed());
    }
}

/// Runs `body` on node `client-0` of a fresh simulation seeded with `seed`, against a server
/// configured by `cfg`.
fn run<T, C, F, Fut>(seed: u64, cfg: C, body: F) -> T
where
    T: Send + 'static,
    C: FnOnce(&mut SessionConfig) + Send + 'static,
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut config = SessionConfig::new(server_addr(), Transport::TcpJson);
    cfg(&mut config);
    run_setup(
        seed,
        move |env, w| {
            let config = config.clone();
            async move {
                let svc = SessionService::start(env.clone(), config).await.expect("service starts");
                install_handlers(&svc, &env, &w);
                *lock(&w.service) = Some(svc);
            }
        },
        body,
    )
}

/// Runs `body` on node `client-0` against a server node whose init runs `setup` (which must
/// put the service into the world; the client waits for that before running `body`), then
/// idles.
fn run_setup<T, S, SFut, F, Fut>(seed: u64, setup: S, body: F) -> T
where
    T: Send + 'static,
    S: Fn(Env, World) -> SFut + Send + Sync + 'static,
    SFut: Future<Output = ()> + Send + 'static,
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    std::thread::spawn(move || {
        let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(async move {
            let handle = Handle::current();
            let w = World::default();
            let ws = w.clone();
            let setup = Arc::new(setup);
            handle
                .create_node()
                .name("server")
                .ip(ip(SERVER_IP))
                .init(move || {
                    let (w, setup) = (ws.clone(), setup.clone());
                    async move {
                        let env = node_env("server", ip(SERVER_IP), &w.clocks);
                        setup(env, w).await;
                        futures::future::pending::<()>().await;
                    }
                })
                .build();
            let client = handle.create_node().name("client-0").ip(client_ip(0)).build();
            client
                .spawn(async move {
                    let env = node_env("client-0", client_ip(0), &w.clocks);
                    // Let the server bind before the first connect.
                    while lock(&w.service).is_none() {
                        env.clock.sleep(Duration::from_millis(1)).await;
                    }
                    body(Ctx { handle, w, env }).await
                })
                .await
                .expect("client task")
        })
    })
    .join()
    .expect("simulation thread")
}

/// A TCP JSON port on [`PORT`], a TCP protobuf port on [`PB_PORT`] and a modelled WebSocket
/// JSON port on [`WS_PORT`], each with the defaults, changed by `cfg`.
fn three_ports(cfg: impl Fn(&mut SessionConfig)) -> Vec<SessionConfig> {
    [(PORT, Transport::TcpJson), (PB_PORT, Transport::TcpProtobuf), (WS_PORT, Transport::WebSocketJson)]
        .into_iter()
        .map(|(port, t)| {
            let mut c = SessionConfig::new(server_port(port), t);
            cfg(&mut c);
            c
        })
        .collect()
}

/// Runs `body` against a server with `ports` (bound with the WebSocket model), handlers
/// installed, then served.
fn run_ports<T, F, Fut>(seed: u64, ports: Vec<SessionConfig>, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    run_setup(
        seed,
        move |env, w| {
            let ports = ports.clone();
            async move {
                let listeners = NetClientListeners::modelling_websocket(env.net.clone());
                let svc = SessionService::bind(env.clone(), ports, &listeners).await.expect("ports bind");
                install_handlers(&svc, &env, &w);
                svc.serve();
                *lock(&w.service) = Some(svc);
            }
        },
        body,
    )
}

fn no_cfg(_: &mut SessionConfig) {}

#[test]
fn json_round_trip_through_a_handler() {
    run(1, no_cfg, |ctx| async move {
        let mut c = ctx.client(Transport::TcpJson).await;
        assert_eq!(c.echo("hello").await, echoed("hello"));
        // The handler sees the body object as sent, nested values included.
        let body = json!({"user_name": "kim", "n": [1, 2, {"x": null}]});
        c.send("echo", body.clone()).await;
        assert_eq!(c.recv().await, Recv::Msg("echo_reply".into(), body));
        let svc = ctx.w.service();
        let sessions = svc.sessions();
        assert_eq!(sessions.len(), 1);
        assert_eq!(lock(&ctx.w.opened).clone(), vec![sessions[0].id()]);
        assert_eq!(svc.transport(), Transport::TcpJson);
    });
}

#[test]
fn protobuf_transport_round_trip() {
    let cfg = |c: &mut SessionConfig| c.transport = Transport::TcpProtobuf;
    run(2, cfg, |ctx| async move {
        let mut c = ctx.client(Transport::TcpProtobuf).await;
        let req = EchoRequest { message: "pb hello".into() };
        c.send_raw(codec::encode_protobuf("echo_pb", &req.encode_to_vec())).await;
        match c.recv().await {
            Recv::Bytes(t, b) => {
                assert_eq!(t, "echo_pb_reply");
                assert_eq!(EchoReply::decode(b).unwrap().message, "pb hello");
            }
            other => panic!("{other:?}"),
        }
        // A JSON handler on a protobuf port takes a UTF-8 JSON body, and answers in kind.
        assert_eq!(c.echo("json in pb").await, echoed("json in pb"));
        // Message-level errors keep the session open.
        c.send_raw(codec::encode_protobuf("echo_pb", b"\x0f\x01")).await;
        assert_eq!(c.recv_error_code().await, "bad_body");
        c.send_raw(codec::encode_protobuf("echo", b"not json")).await;
        assert_eq!(c.recv_error_code().await, "bad_body");
        assert_eq!(c.echo("still open").await, echoed("still open"));
        // A payload that is not an envelope closes it.
        c.send_raw(Bytes::from_static(b"\x0a\x09short")).await;
        assert_eq!(c.recv_error_code().await, "bad_envelope");
        assert_eq!(c.recv().await, Recv::Eof);
    });
}

#[test]
fn protobuf_handler_on_a_json_port_is_bad_body() {
    run(3, no_cfg, |ctx| async move {
        let mut c = ctx.client(Transport::TcpJson).await;
        c.send("echo_pb", json!({"message": "x"})).await;
        assert_eq!(c.recv_error_code().await, "bad_body");
        assert_eq!(c.echo("open").await, echoed("open"));
    });
}

/// Sends `n` ordered messages on each of `clients` sessions, interleaved, without waiting;
/// returns the handler's execution log and each client's replies.
async fn ordered_burst(ctx: &Ctx, clients: usize, n: u64) -> (Vec<(SessionId, u64)>, Vec<Vec<u64>>) {
    let mut cs = Vec::new();
    for _ in 0..clients {
        cs.push(ctx.client(Transport::TcpJson).await);
    }
    for seq in 1..=n {
        for c in cs.iter_mut() {
            c.send("ordered", json!({ "seq": seq })).await;
        }
    }
    let mut replies = Vec::new();
    for c in cs.iter_mut() {
        let mut got = Vec::new();
        for _ in 0..n {
            match c.recv().await {
                Recv::Msg(t, b) if t == "ordered_reply" => got.push(b["seq"].as_u64().unwrap()),
                other => panic!("{other:?}"),
            }
        }
        replies.push(got);
    }
    (lock(&ctx.w.handled).clone(), replies)
}

#[test]
fn per_session_messages_are_handled_in_arrival_order() {
    for seed in 10..14 {
        let (handled, replies) = run(seed, no_cfg, |ctx| async move { ordered_burst(&ctx, 3, 25).await });
        let expect: Vec<u64> = (1..=25).collect();
        for r in &replies {
            assert_eq!(r, &expect, "seed {seed}: replies in send order");
        }
        let mut by_session: std::collections::BTreeMap<SessionId, Vec<u64>> = Default::default();
        for (s, seq) in &handled {
            by_session.entry(*s).or_default().push(*seq);
        }
        assert_eq!(by_session.len(), 3);
        for seqs in by_session.values() {
            assert_eq!(seqs, &expect, "seed {seed}: handled in arrival order");
        }
        // The three sessions' handlers interleave (they run concurrently): one after the
        // other, the handled sequence would switch sessions exactly twice.
        let switches = handled.windows(2).filter(|w| w[0].0 != w[1].0).count();
        assert!(switches > 2, "seed {seed}: {switches} switches: {handled:?}");
    }
}

#[test]
fn two_sessions_run_concurrently_one_session_serially() {
    run(4, no_cfg, |ctx| async move {
        let t0 = ctx.now_ms();
        // Two client nodes hold for 1 s each at the same time: both done after ~1 s.
        let a = ctx.on_node(1, |env| async move {
            let mut c = Client::connect(&env, Transport::TcpJson).await;
            c.send("hold", json!({"ms": 1000})).await;
            c.recv().await
        });
        let b = ctx.on_node(2, |env| async move {
            let mut c = Client::connect(&env, Transport::TcpJson).await;
            c.send("hold", json!({"ms": 1000})).await;
            c.recv().await
        });
        let (ra, rb) = futures::join!(a, b);
        let held = Recv::Msg("held".into(), json!({}));
        assert_eq!((ra, rb), (held.clone(), held.clone()));
        let took = ctx.now_ms() - t0;
        assert!((1000..1500).contains(&took), "concurrent holds took {took} ms");
        // One session sending two holds waits for the first before the second starts.
        let t1 = ctx.now_ms();
        let mut c = ctx.client(Transport::TcpJson).await;
        c.send("hold", json!({"ms": 1000})).await;
        c.send("hold", json!({"ms": 1000})).await;
        assert_eq!(c.recv().await, held);
        assert_eq!(c.recv().await, held);
        let took = ctx.now_ms() - t1;
        assert!((2000..2500).contains(&took), "serial holds took {took} ms");
    });
}

#[test]
fn oversized_frame_gets_error_and_close() {
    let cfg = |c: &mut SessionConfig| c.max_frame_bytes = 4096;
    run(5, cfg, |ctx| async move {
        let mut c = ctx.client(Transport::TcpJson).await;
        // Just under the limit is fine.
        let text = "x".repeat(4000);
        assert_eq!(c.echo(&text).await, echoed(&text));
        c.send("echo", json!({ "text": "x".repeat(5000) })).await;
        assert_eq!(c.recv_error_code().await, "frame_too_large");
        assert_eq!(c.recv().await, Recv::Eof);
        let closed = ctx.wait_closed(1).await;
        assert!(
            matches!(&closed[0].1, CloseReason::Protocol(e) if e.code() == "frame_too_large"),
            "{closed:?}"
        );
    });
}

#[test]
fn bad_json_and_bad_envelope_close_the_session() {
    run(6, no_cfg, |ctx| async move {
        let cases: [(&[u8], &str); 5] = [
            (b"{nope", "bad_json"),
            (b"\xff\xfe\xfd", "bad_json"),
            (b"[1, 2]", "bad_json"),
            (br#"{"type": 5, "body": {}}"#, "bad_envelope"),
            (br#"{"type": "echo"}"#, "bad_envelope"),
        ];
        for (i, (payload, code)) in cases.iter().enumerate() {
            let mut c = ctx.client(Transport::TcpJson).await;
            assert_eq!(c.echo("warm").await, echoed("warm"));
            c.send_raw(Bytes::copy_from_slice(payload)).await;
            assert_eq!(c.recv_error_code().await, *code);
            assert_eq!(c.recv().await, Recv::Eof, "case {i}");
            let closed = ctx.wait_closed(i + 1).await;
            assert!(matches!(&closed[i].1, CloseReason::Protocol(e) if e.code() == *code), "{closed:?}");
        }
        assert!(ctx.w.service().sessions().is_empty());
    });
}

#[test]
fn unknown_and_reserved_types_keep_the_session_open() {
    run(7, no_cfg, |ctx| async move {
        let mut c = ctx.client(Transport::TcpJson).await;
        c.send("cs_no_such_thing", json!({})).await;
        assert_eq!(c.recv_error_code().await, "unknown_type");
        c.send("_ping", json!({})).await;
        assert_eq!(c.recv_error_code().await, "reserved_type");
        c.send("_sc_redirect", json!({})).await;
        assert_eq!(c.recv_error_code().await, "reserved_type");
        // Reserved for the account module: passes the reserved check, has no handler yet.
        c.send("_cs_redirect", json!({})).await;
        assert_eq!(c.recv_error_code().await, "unknown_type");
        // `_pong` is swallowed silently.
        c.send("_pong", json!({})).await;
        assert_eq!(c.echo("still here").await, echoed("still here"));
        assert!(ctx.w.closed().is_empty());
    });
}

#[test]
fn handlers_may_close_after_replying() {
    run(8, no_cfg, |ctx| async move {
        let mut c = ctx.client(Transport::TcpJson).await;
        c.send("login", json!({"nom": "typo"})).await;
        // Sent after the close was requested: never handled.
        c.send("echo", json!({"text": "late"})).await;
        assert_eq!(
            c.recv().await,
            Recv::Msg("sc_login".into(), json!({"error": true, "error_message": "no name"}))
        );
        assert_eq!(c.recv().await, Recv::Eof);
        let closed = ctx.wait_closed(1).await;
        assert_eq!(closed[0].1, CloseReason::Server("malformed login".into()));

        let mut c = ctx.client(Transport::TcpJson).await;
        c.send("close_me", json!({})).await;
        assert_eq!(c.recv().await, Recv::Msg("bye".into(), json!({})));
        assert_eq!(c.recv().await, Recv::Eof);
    });
}

#[test]
fn idle_session_is_closed() {
    let cfg = |c: &mut SessionConfig| {
        c.idle_timeout = Duration::from_secs(2);
        c.heartbeat_interval = None;
    };
    run(9, cfg, |ctx| async move {
        let mut c = ctx.client(Transport::TcpJson).await;
        let t0 = ctx.now_ms();
        // Activity pushes the deadline out.
        ctx.sleep_ms(1500).await;
        assert_eq!(c.echo("a").await, echoed("a"));
        assert_eq!(c.recv_any(Duration::from_secs(10)).await, Recv::Eof);
        let took = ctx.now_ms() - t0;
        assert!((3500..3700).contains(&took), "closed after {took} ms");
        assert_eq!(ctx.wait_closed(1).await[0].1, CloseReason::IdleTimeout);
    });
}

#[test]
fn heartbeats_keep_an_answering_client_alive() {
    let cfg = |c: &mut SessionConfig| {
        c.idle_timeout = Duration::from_secs(2);
        c.heartbeat_interval = Some(Duration::from_millis(500));
    };
    run(11, cfg, |ctx| async move {
        // An answering client on its own node: 20 s of pings and pongs.
        let pings = ctx
            .on_node(1, |env| async move {
                let mut c = Client::connect(&env, Transport::TcpJson).await;
                let end = env.clock.now() + Duration::from_secs(20);
                let mut pings = 0;
                while env.clock.now() < end {
                    match c.recv_any(Duration::from_secs(1)).await {
                        Recv::Msg(t, _) if t == codec::PING_TYPE => {
                            pings += 1;
                            c.send(codec::PONG_TYPE, json!({})).await;
                        }
                        other => panic!("{other:?}"),
                    }
                }
                assert_eq!(c.echo("alive").await, echoed("alive"));
                pings
            })
            .await;
        assert!((38..=41).contains(&pings), "{pings} pings in 20 s");
        // A client that reads the pings but never answers is closed at the idle timeout.
        let mut c = ctx.client(Transport::TcpJson).await;
        let t0 = ctx.now_ms();
        let mut seen = 0;
        loop {
            match c.recv_any(Duration::from_secs(5)).await {
                Recv::Msg(t, _) if t == codec::PING_TYPE => seen += 1,
                Recv::Eof => break,
                other => panic!("{other:?}"),
            }
        }
        let took = ctx.now_ms() - t0;
        assert!((2000..2200).contains(&took) && seen >= 3, "closed after {took} ms, {seen} pings");
        // The answering client's session ended when its node's task dropped the connection.
        let reasons: Vec<_> = ctx.wait_closed(2).await.into_iter().map(|(_, r)| r).collect();
        assert_eq!(reasons, [CloseReason::ClosedByPeer, CloseReason::IdleTimeout]);
    });
}

#[test]
fn broadcast_locally_reaches_the_filtered_sessions() {
    run(12, no_cfg, |ctx| async move {
        let mut cs = Vec::new();
        for name in ["ann", "bob", "cid"] {
            let mut c = ctx.client(Transport::TcpJson).await;
            c.send("login", json!({ "name": name })).await;
            assert_eq!(c.recv().await, Recv::Msg("sc_login".into(), json!({"error": false})));
            cs.push(c);
        }
        let svc = ctx.w.service();
        let all = svc.broadcast_locally("notice", &json!({"n": 1}), |_| true);
        assert_eq!(all, 3);
        let not_bob = svc.broadcast_locally("notice", &json!({"n": 2}), |s| {
            s.context::<String>("name").as_deref() != Some("bob")
        });
        assert_eq!(not_bob, 2);
        assert_eq!(svc.broadcast_locally("notice", &json!([1]), |_| true), 0, "body must be an object");
        for (i, c) in cs.iter_mut().enumerate() {
            assert_eq!(c.recv().await, Recv::Msg("notice".into(), json!({"n": 1})));
            if i != 1 {
                assert_eq!(c.recv().await, Recv::Msg("notice".into(), json!({"n": 2})));
            }
            assert_eq!(c.recv_any(Duration::from_millis(200)).await, Recv::Timeout);
        }
        // Sorted by id, and the names are the ones the handler stored.
        let sessions = svc.sessions();
        assert!(sessions.windows(2).all(|w| w[0].id() < w[1].id()));
        let mut names: Vec<_> = sessions.iter().filter_map(|s| s.context::<String>("name")).collect();
        names.sort();
        assert_eq!(names, ["ann", "bob", "cid"]);
    });
}

#[test]
fn slow_reader_is_closed_and_others_are_served() {
    let cfg = |c: &mut SessionConfig| c.send_queue_max = 16;
    run(13, cfg, |ctx| async move {
        let mut other = ctx.client(Transport::TcpJson).await;
        assert_eq!(other.echo("before").await, echoed("before"));
        // The slow client asks for a flood and never reads.
        let mut slow = ctx.client(Transport::TcpJson).await;
        slow.send("flood", json!({"n": 500})).await;
        let closed = ctx.wait_closed(1).await;
        assert_eq!(closed[0].1, CloseReason::SlowReader);
        assert_eq!(closed[0].1.to_string(), "slow reader");
        assert_eq!(other.echo("after").await, echoed("after"));
        // A burst within the bound is fine.
        other.send("flood", json!({"n": 16})).await;
        for i in 0..16 {
            assert_eq!(other.recv().await, Recv::Msg("flood_item".into(), json!({ "i": i })));
        }
        // The slow client's connection ends without a single flood frame (the queue was dropped).
        assert_eq!(slow.recv().await, Recv::Eof);
        assert_eq!(ctx.w.service().sessions().len(), 1);
    });
}

#[test]
fn shutdown_closes_every_session() {
    run(14, no_cfg, |ctx| async move {
        let mut a = ctx.client(Transport::TcpJson).await;
        let mut b = ctx.client(Transport::TcpJson).await;
        assert_eq!(a.echo("a").await, echoed("a"));
        assert_eq!(b.echo("b").await, echoed("b"));
        ctx.w.service().shutdown().await;
        assert_eq!(a.recv().await, Recv::Eof);
        assert_eq!(b.recv().await, Recv::Eof);
        let closed = ctx.wait_closed(2).await;
        assert!(closed.iter().all(|(_, r)| *r == CloseReason::Shutdown), "{closed:?}");
        assert!(ctx.env.net.connect(server_addr(), 1024).await.is_err(), "no longer accepting");
    });
}

/// A run with a bit of everything, as a transcript of what the clients saw and when.
async fn transcript(ctx: Ctx) -> Vec<String> {
    let mut out = Vec::new();
    let (handled, replies) = ordered_burst(&ctx, 2, 10).await;
    out.push(format!("{} {handled:?} {replies:?}", ctx.now_ms()));
    let mut c = ctx.client(Transport::TcpJson).await;
    c.send_raw(Bytes::from_static(b"{nope")).await;
    out.push(format!("{} {:?}", ctx.now_ms(), c.recv().await));
    out.push(format!("{} {:?}", ctx.now_ms(), c.recv().await));
    let mut d = ctx.client(Transport::TcpJson).await;
    out.push(format!("{} {:?}", ctx.now_ms(), d.recv_any(Duration::from_secs(60)).await));
    out.push(format!("{:?}", ctx.wait_closed(1).await));
    out
}

#[test]
fn same_seed_same_results() {
    let a = run(42, no_cfg, transcript);
    let b = run(42, no_cfg, transcript);
    assert_eq!(a, b);
    assert!(a.len() == 5 && a[1].contains("bad_json"), "{a:#?}");
}

// ---- Several ports on one service ----

fn pb_reply(r: Recv) -> String {
    match r {
        Recv::Bytes(t, b) if t == "echo_pb_reply" => EchoReply::decode(b).expect("EchoReply").message,
        other => panic!("expected echo_pb_reply, got {other:?}"),
    }
}

#[test]
fn one_handler_answers_on_json_and_protobuf_ports_in_each_encoding() {
    let ports = three_ports(|_| {})[..2].to_vec();
    run_ports(20, ports, |ctx| async move {
        let svc = ctx.w.service();
        assert_eq!(
            svc.local_addrs(),
            vec![(Transport::TcpJson, server_addr()), (Transport::TcpProtobuf, server_port(PB_PORT))]
        );
        assert_eq!(svc.local_addr(), server_addr(), "the first port");
        assert_eq!(svc.local_addr_of(Transport::TcpProtobuf), Some(server_port(PB_PORT)));
        assert_eq!(svc.local_addr_of(Transport::WebSocketJson), None);

        let mut json_c = ctx.client(Transport::TcpJson).await;
        let mut pb_c = Client::connect_to(&ctx.env, server_port(PB_PORT), Transport::TcpProtobuf).await;
        // The same JSON handler, each reply in the port's encoding (the client decodes with
        // its own transport's codec, so a wrong encoding would fail to decode).
        assert_eq!(json_c.echo("on json").await, echoed("on json"));
        assert_eq!(pb_c.echo("on protobuf").await, echoed("on protobuf"));
        // The protobuf handler answers in protobuf; on the JSON port it is bad_body.
        let req = EchoRequest { message: "pb".into() };
        pb_c.send_raw(codec::encode_protobuf("echo_pb", &req.encode_to_vec())).await;
        assert_eq!(pb_reply(pb_c.recv().await), "pb");
        json_c.send("echo_pb", json!({"message": "x"})).await;
        assert_eq!(json_c.recv_error_code().await, "bad_body");
        // `_error` frames in each encoding, sessions stay open.
        json_c.send("cs_no_such_thing", json!({})).await;
        assert_eq!(json_c.recv_error_code().await, "unknown_type");
        pb_c.send("cs_no_such_thing", json!({})).await;
        assert_eq!(pb_c.recv_error_code().await, "unknown_type");
        // Each session knows its transport; one table for both ports.
        let mut transports: Vec<Transport> = svc.sessions().iter().map(|s| s.transport()).collect();
        transports.sort();
        assert_eq!(transports, [Transport::TcpJson, Transport::TcpProtobuf]);
        assert_eq!(lock(&ctx.w.opened).len(), 2);
        // A frame-level error on the protobuf port closes only that session.
        pb_c.send_raw(Bytes::from_static(b"\x0a\x09short")).await;
        assert_eq!(pb_c.recv_error_code().await, "bad_envelope");
        assert_eq!(pb_c.recv().await, Recv::Eof);
        assert_eq!(json_c.echo("still open").await, echoed("still open"));
    });
}

#[test]
fn broadcast_locally_reaches_every_port_in_its_own_encoding() {
    // The protobuf port takes smaller frames than the others.
    let mut ports = three_ports(|_| {});
    ports[1].max_frame_bytes = 2048;
    run_ports(21, ports, |ctx| async move {
        let mut cs = [
            ctx.client(Transport::TcpJson).await,
            Client::connect_to(&ctx.env, server_port(PB_PORT), Transport::TcpProtobuf).await,
            Client::connect_to(&ctx.env, server_port(WS_PORT), Transport::WebSocketJson).await,
        ];
        for (c, name) in cs.iter_mut().zip(["ann", "bob", "cid"]) {
            c.send("login", json!({ "name": name })).await;
            assert_eq!(c.recv().await, Recv::Msg("sc_login".into(), json!({"error": false})));
        }
        let svc = ctx.w.service();
        assert_eq!(svc.broadcast_locally("notice", &json!({"n": 1}), |_| true), 3);
        let not_bob = svc.broadcast_locally("notice", &json!({"n": 2}), |s| {
            s.context::<String>("name").as_deref() != Some("bob")
        });
        assert_eq!(not_bob, 2);
        // Too large for the protobuf port only: the others still get it.
        let big = json!({"n": 3, "pad": "x".repeat(3000)});
        assert_eq!(svc.broadcast_locally("notice", &big, |_| true), 2);
        for (i, c) in cs.iter_mut().enumerate() {
            assert_eq!(c.recv().await, Recv::Msg("notice".into(), json!({"n": 1})), "client {i}");
            if i != 1 {
                assert_eq!(c.recv().await, Recv::Msg("notice".into(), json!({"n": 2})), "client {i}");
                assert_eq!(c.recv().await, Recv::Msg("notice".into(), big.clone()), "client {i}");
            }
            assert_eq!(c.recv_any(Duration::from_millis(200)).await, Recv::Timeout, "client {i}");
        }
        // The modelled WebSocket port answers like the TCP JSON one.
        assert_eq!(cs[2].echo("ws").await, echoed("ws"));
        assert!(ctx.w.closed().is_empty(), "an oversized broadcast closes nobody");
    });
}

#[test]
fn each_port_keeps_its_own_limits() {
    let mut ports = three_ports(|_| {})[..2].to_vec();
    // JSON: short idle timeout, no pings. Protobuf: pings, small frames.
    ports[0].idle_timeout = Duration::from_secs(2);
    ports[0].heartbeat_interval = None;
    ports[1].heartbeat_interval = Some(Duration::from_millis(500));
    ports[1].max_frame_bytes = 4096;
    run_ports(22, ports, |ctx| async move {
        let mut json_c = ctx.client(Transport::TcpJson).await;
        let mut pb_c = Client::connect_to(&ctx.env, server_port(PB_PORT), Transport::TcpProtobuf).await;
        // 5000 bytes: fine on the JSON port (1 MiB), too large on the protobuf port.
        let text = "x".repeat(5000);
        assert_eq!(json_c.echo(&text).await, echoed(&text));
        pb_c.send("echo", json!({ "text": text })).await;
        assert_eq!(pb_c.recv_error_code().await, "frame_too_large");
        assert_eq!(pb_c.recv().await, Recv::Eof);
        // The protobuf port pings (a fresh session); the JSON port does not, and idles out.
        let mut pb_c = Client::connect_to(&ctx.env, server_port(PB_PORT), Transport::TcpProtobuf).await;
        let t0 = ctx.now_ms();
        assert!(
            matches!(pb_c.recv_any(Duration::from_secs(1)).await, Recv::Msg(t, _) if t == codec::PING_TYPE)
        );
        assert_eq!(json_c.recv_any(Duration::from_secs(5)).await, Recv::Eof);
        let took = ctx.now_ms() - t0;
        assert!(took <= 2100, "JSON session idled out after {took} ms");
        let reasons: Vec<_> = ctx.wait_closed(2).await.into_iter().map(|(_, r)| r).collect();
        assert!(
            matches!(&reasons[0], CloseReason::Protocol(e) if e.code() == "frame_too_large"),
            "{reasons:?}"
        );
        assert_eq!(reasons[1], CloseReason::IdleTimeout);
    });
}

#[test]
fn no_client_is_accepted_before_serve() {
    let setup = |env: Env, w: World| async move {
        let listeners = NetClientListeners::new(env.net.clone());
        let svc = SessionService::bind(env.clone(), three_ports(|_| {})[..2].to_vec(), &listeners)
            .await
            .expect("ports bind");
        // Bound and published, but handlers come 2 s later, then `serve`.
        *lock(&w.service) = Some(svc.clone());
        env.clock.sleep(Duration::from_secs(2)).await;
        install_handlers(&svc, &env, &w);
        svc.serve();
        svc.serve(); // idempotent
    };
    run_setup(23, setup, |ctx| async move {
        let t0 = ctx.now_ms();
        // Connecting works (the port is bound: the connection waits in the backlog) ...
        let mut c = ctx.client(Transport::TcpJson).await;
        let mut p = Client::connect_to(&ctx.env, server_port(PB_PORT), Transport::TcpProtobuf).await;
        c.send("echo", json!({"text": "early"})).await;
        p.send("echo", json!({"text": "early pb"})).await;
        ctx.sleep_ms(1000).await;
        // ... but no session exists before `serve`, so no message meets a missing handler.
        assert!(ctx.w.service().sessions().is_empty());
        assert!(lock(&ctx.w.opened).is_empty());
        assert_eq!(c.recv().await, echoed("early"), "answered by the handler, not unknown_type");
        assert_eq!(p.recv().await, echoed("early pb"));
        assert!(ctx.now_ms() - t0 >= 2000, "answered only once served");
        assert_eq!(lock(&ctx.w.opened).len(), 2);
    });
}

#[test]
fn bad_port_sets_are_rejected_and_release_what_they_bound() {
    let setup = |env: Env, w: World| async move {
        let net = NetClientListeners::new(env.net.clone());
        let bind = |ports: Vec<SessionConfig>| SessionService::bind(env.clone(), ports, &net);
        let msg = |r: Result<SessionService, SessionError>| match r {
            Err(e) => e,
            Ok(_) => panic!("bind should fail"),
        };
        // No port, two ports of one transport, a bad config: nothing is bound.
        assert!(matches!(msg(bind(vec![]).await), SessionError::Config(m) if m.contains("no session port")));
        let two_json = vec![
            SessionConfig::new(server_port(PORT), Transport::TcpJson),
            SessionConfig::new(server_port(PB_PORT), Transport::TcpJson),
        ];
        assert!(
            matches!(msg(bind(two_json).await), SessionError::Config(m) if m.contains("two TcpJson ports")),
        );
        let mut bad = three_ports(|_| {});
        bad[1].max_frame_bytes = 10;
        assert!(matches!(msg(bind(bad).await), SessionError::Config(m) if m.contains("TcpProtobuf port")));
        // WebSocket needs a backend listener: a typed error, and the TCP port bound before it
        // is released again.
        assert_eq!(
            msg(bind(three_ports(|_| {})).await),
            SessionError::UnsupportedTransport {
                transport: Transport::WebSocketJson,
                reason: "the Net port speaks length-prefixed TCP only; a WebSocket port needs a \
                         backend WebSocket listener"
                    .into()
            }
        );
        assert!(matches!(
            msg(SessionService::start(env.clone(), three_ports(|_| {}).remove(2)).await),
            SessionError::UnsupportedTransport { transport: Transport::WebSocketJson, .. }
        ));
        // A port that cannot bind (the JSON port is already taken) fails the whole bind.
        let taken = bind(three_ports(|_| {})[..1].to_vec()).await.expect("first bind");
        let mut second = three_ports(|_| {})[..2].to_vec();
        second.swap(0, 1);
        assert!(matches!(msg(bind(second).await), SessionError::Listen(_)));
        // Shutting down a service that never served releases its ports.
        taken.shutdown().await;
        let svc = bind(three_ports(|_| {})[..2].to_vec()).await.expect("ports free again");
        install_handlers(&svc, &env, &w);
        svc.serve();
        *lock(&w.service) = Some(svc);
    };
    run_setup(24, setup, |ctx| async move {
        let mut c = Client::connect_to(&ctx.env, server_port(PB_PORT), Transport::TcpProtobuf).await;
        assert_eq!(c.echo("rebound").await, echoed("rebound"));
    });
}

#[test]
fn shutdown_stops_every_port() {
    run_ports(25, three_ports(|_| {}), |ctx| async move {
        let mut a = ctx.client(Transport::TcpJson).await;
        let mut b = Client::connect_to(&ctx.env, server_port(WS_PORT), Transport::WebSocketJson).await;
        assert_eq!(a.echo("a").await, echoed("a"));
        assert_eq!(b.echo("b").await, echoed("b"));
        ctx.w.service().shutdown().await;
        assert_eq!(a.recv().await, Recv::Eof);
        assert_eq!(b.recv().await, Recv::Eof);
        for port in [PORT, PB_PORT, WS_PORT] {
            assert!(ctx.env.net.connect(server_port(port), 1024).await.is_err(), "port {port} still accepts");
        }
        let closed = ctx.wait_closed(2).await;
        assert!(closed.iter().all(|(_, r)| *r == CloseReason::Shutdown), "{closed:?}");
    });
}
