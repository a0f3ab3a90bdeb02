//! `engine::rpc` under madsim: one server node and one client node over the simulated
//! network, with kills, restarts, partitions, latency jitter and the planted bugs.
//!
//! | node | ip | role |
//! |---|---|---|
//! | `server` | 10.1.0.1:8015 | `Rpc` with the test handlers; restarted with a new PeerId in the fencing test |
//! | `client` | 10.1.0.2:8015 | `Rpc` making the calls; the test body runs here |
//!
//! Each run gets a fresh OS thread (std's `HashMap` seeding must happen on a fresh thread for
//! a seed to replay).

use sim::testkit::node_env;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use engine::cluster::{PeerDirectory, PeerId};
use engine::env::{Env, RandExt, MAX_PEER_FRAME_BYTES};
use engine::rpc::messages::{EchoReply, EchoRequest, OrderedReply, OrderedRequest};
use engine::rpc::{CallOptions, HandlerError, Rpc, RpcBugs, RpcConfig, RpcError};
use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use madsim::task::NodeId;
use sim::adapters::ClockControl;

const SERVER_IP: [u8; 4] = [10, 1, 0, 1];
const CLIENT_IP: [u8; 4] = [10, 1, 0, 2];
const RPC_PORT: u16 = 8015;
/// Nothing listens here: the coord/kv ports are never used by these tests.
/// How long the `slow` handler takes.
const SLOW_HANDLER: Duration = Duration::from_secs(3);

fn ip(b: [u8; 4]) -> IpAddr {
    IpAddr::from(b)
}

use engine::env::lock;

/// One handler execution, as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Exec {
    incarnation: PeerId,
    msg_type: &'static str,
    key: String,
    seq: u64,
    payload: String,
    at_ms: u64,
}

/// State shared by the nodes of one run (the test's omniscient view).
#[derive(Clone, Default)]
struct World {
    clocks: ClockControl,
    dir: Arc<Mutex<BTreeMap<PeerId, SocketAddr>>>,
    execs: Arc<Mutex<Vec<Exec>>>,
    /// Server incarnations, in start order.
    incarnations: Arc<Mutex<Vec<PeerId>>>,
}

impl World {
    fn directory(&self) -> Arc<dyn PeerDirectory> {
        self.dir.clone()
    }
    fn execs(&self) -> Vec<Exec> {
        lock(&self.execs).clone()
    }
}

fn install_handlers(rpc: &Rpc, env: &Env, w: &World) {
    let me = rpc.self_id();
    let record = {
        let (execs, clock) = (w.execs.clone(), env.clock.clone());
        move |msg_type: &'static str, key: String, seq: u64, payload: String| {
            let at_ms = clock.now().as_nanos() / 1_000_000;
            lock(&execs).push(Exec { incarnation: me, msg_type, key, seq, payload, at_ms });
        }
    };
    let r = record.clone();
    rpc.register_handler("echo", move |_info, req: EchoRequest| {
        r("echo", String::new(), 0, req.message.clone());
        async move { Ok::<_, HandlerError>(EchoReply { message: req.message }) }
    });
    let r = record.clone();
    rpc.register_void_handler("void", move |_info, req: EchoRequest| {
        r("void", String::new(), 0, req.message);
        async {}
    });
    rpc.register_handler("panic", |_info, _req: EchoRequest| async {
        if true {
            panic!("a handler bug");
        }
        Ok::<EchoReply, HandlerError>(EchoReply { message: String::new() })
    });
    rpc.register_handler("fail", |_info, _req: EchoRequest| async {
        Err::<EchoReply, _>(HandlerError::new("no such player"))
    });
    let (r, clock) = (record.clone(), env.clock.clone());
    rpc.register_handler("slow", move |_info, req: EchoRequest| {
        r("slow", String::new(), 0, req.message.clone());
        let sleep = clock.sleep(SLOW_HANDLER);
        async move {
            sleep.await;
            Ok::<_, HandlerError>(EchoReply { message: req.message })
        }
    });
    let (r, clock) = (record.clone(), env.clock.clone());
    rpc.register_waiting_handler("waiting", move |_info, req: EchoRequest| {
        r("waiting", String::new(), 0, req.message.clone());
        let sleep = clock.sleep(SLOW_HANDLER);
        async move {
            sleep.await;
            Ok::<_, HandlerError>(EchoReply { message: req.message })
        }
    });
    let (r, env) = (record, env.clone());
    rpc.register_handler("ordered", move |_info, req: OrderedRequest| {
        let (r, env) = (r.clone(), env.clone());
        async move {
            // A random think time, so that handlers running concurrently finish out of order.
            env.clock.sleep(Duration::from_millis(env.rand.gen_range(0..10))).await;
            r("ordered", req.order_key.clone(), req.seq, req.payload.clone());
            Ok::<_, HandlerError>(OrderedReply { seq: req.seq })
        }
    });
}

/// Creates the server node; each (re)start is a new incarnation with a new PeerId.
fn server_node(handle: &Handle, w: &World, bugs: RpcBugs) -> NodeId {
    let w = w.clone();
    let node = handle
        .create_node()
        .name("server")
        .ip(ip(SERVER_IP))
        .init(move || {
            let w = w.clone();
            async move {
                let env = node_env("server", ip(SERVER_IP), &w.clocks);
                let id = PeerId::new_random(&*env.rand);
                let mut cfg = RpcConfig::new(SocketAddr::new(ip(SERVER_IP), RPC_PORT));
                cfg.bugs = bugs;
                cfg.message_logging_level = 2;
                let rpc = Rpc::start(env.clone(), id, w.directory(), cfg).await.expect("server rpc starts");
                install_handlers(&rpc, &env, &w);
                lock(&w.dir).insert(id, rpc.local_addr());
                lock(&w.incarnations).push(id);
                futures::future::pending::<()>().await;
            }
        })
        .build();
    node.id()
}

/// What a test body gets.
struct Ctx {
    handle: Handle,
    w: World,
    env: Env,
    rpc: Rpc,
    /// The server's first incarnation.
    target: PeerId,
    server: NodeId,
    client: NodeId,
}

impl Ctx {
    async fn sleep_ms(&self, ms: u64) {
        self.env.clock.sleep(Duration::from_millis(ms)).await;
    }
    fn now_ms(&self) -> u64 {
        self.env.clock.now().as_nanos() / 1_000_000
    }
    async fn echo(&self, peer: PeerId, msg: &str, timeout: Duration) -> Result<String, RpcError> {
        let req = EchoRequest { message: msg.to_string() };
        let opts = CallOptions::default().with_timeout(timeout);
        self.rpc.call::<_, EchoReply>(peer, "echo", &req, opts).await.map(|r| r.message)
    }
    fn partition(&self) {
        let net = NetSim::current();
        net.clog_link(self.client, self.server);
        net.clog_link(self.server, self.client);
    }
    fn heal(&self) {
        let net = NetSim::current();
        net.unclog_link(self.client, self.server);
        net.unclog_link(self.server, self.client);
    }
    async fn wait_incarnations(&self, n: usize) -> PeerId {
        loop {
            if let Some(id) = lock(&self.w.incarnations).get(n - 1) {
                return *id;
            }
            self.sleep_ms(10).await;
        }
    }
}

/// Runs `body` on the client node of a fresh simulation seeded with `seed`.
fn run<T, F, Fut>(seed: u64, bugs: RpcBugs, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    std::thread::spawn(move || {
        let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(async move {
            let handle = Handle::current();
            let w = World::default();
            let server = server_node(&handle, &w, bugs);
            let client_node = handle.create_node().name("client").ip(ip(CLIENT_IP)).build();
            let client = client_node.id();
            client_node
                .spawn(async move {
                    let env = node_env("client", ip(CLIENT_IP), &w.clocks);
                    let id = PeerId::new_random(&*env.rand);
                    let mut cfg = RpcConfig::new(SocketAddr::new(ip(CLIENT_IP), RPC_PORT));
                    cfg.message_logging_level = 1;
                    let rpc =
                        Rpc::start(env.clone(), id, w.directory(), cfg).await.expect("client rpc starts");
                    let mut ctx = Ctx { handle, w, env, rpc, target: id, server, client };
                    ctx.target = ctx.wait_incarnations(1).await;
                    body(ctx).await
                })
                .await
                .expect("client task")
        })
    })
    .join()
    .expect("simulation thread")
}

const T1: Duration = Duration::from_secs(1);
/// madsim fires a timer a few simulated nanoseconds after its deadline.
const TIMER_SLACK: Duration = Duration::from_micros(10);

#[test]
fn echo_round_trip() {
    run(1, RpcBugs::default(), |ctx| async move {
        assert_eq!(ctx.echo(ctx.target, "hello!", T1).await, Ok("hello!".to_string()));
        assert_eq!(ctx.echo(ctx.target, "again", T1).await, Ok("again".to_string()));
        let execs = ctx.w.execs();
        assert_eq!(execs.len(), 2);
        assert!(execs.iter().all(|e| e.incarnation == ctx.target && e.msg_type == "echo"));
    });
}

#[test]
fn void_handler_is_auto_acknowledged() {
    run(2, RpcBugs::default(), |ctx| async move {
        let req = EchoRequest { message: "my".into() };
        let r = ctx.rpc.call::<_, ()>(ctx.target, "void", &req, CallOptions::default()).await;
        assert_eq!(r, Ok(()));
        assert_eq!(ctx.w.execs().len(), 1, "acknowledged after it ran");
    });
}

/// Sends `n` calls of `msg_type` (each running [`SLOW_HANDLER`]) and, once they run, an
/// echo; returns how long the echo took.
async fn echo_behind(ctx: &Ctx, msg_type: &'static str, n: usize) -> Duration {
    let rpc = ctx.rpc.clone();
    let target = ctx.target;
    let _busy: Vec<_> = (0..n)
        .map(|i| {
            let rpc = rpc.clone();
            madsim::task::spawn(async move {
                let req = EchoRequest { message: format!("{msg_type} {i}") };
                let opts = CallOptions::default().with_timeout(Duration::from_secs(10));
                rpc.call::<_, EchoReply>(target, msg_type, &req, opts).await
            })
        })
        .collect();
    ctx.sleep_ms(100).await;
    let started = ctx.env.clock.now();
    assert_eq!(ctx.echo(target, "behind", Duration::from_secs(10)).await, Ok("behind".to_string()));
    ctx.env.clock.now().saturating_since(started)
}

#[test]
fn handlers_that_wait_take_no_permit_while_the_others_stay_bounded() {
    run(9, RpcBugs::default(), |ctx| async move {
        // Twice the server's 4 permits of waiting handlers: an echo still runs at once.
        let took = echo_behind(&ctx, "waiting", 8).await;
        assert!(took < Duration::from_millis(100), "an echo behind 8 waiting handlers took {took:?}");
        assert_eq!(ctx.w.execs().iter().filter(|e| e.msg_type == "waiting").count(), 8, "all 8 running");
        ctx.sleep_ms(4_000).await;
        // 4 counted slow handlers hold every permit: the echo waits for the first to end.
        let took = echo_behind(&ctx, "slow", 4).await;
        assert!(
            took >= SLOW_HANDLER - Duration::from_millis(200),
            "an echo behind 4 slow handlers took {took:?}"
        );
    });
}

#[test]
fn missing_handler_and_handler_error_are_typed() {
    run(3, RpcBugs::default(), |ctx| async move {
        let req = EchoRequest { message: "x".into() };
        let r = ctx.rpc.call::<_, EchoReply>(ctx.target, "nope", &req, CallOptions::default()).await;
        assert_eq!(r, Err(RpcError::NoHandler("nope".into())));
        let r = ctx.rpc.call::<_, EchoReply>(ctx.target, "fail", &req, CallOptions::default()).await;
        assert_eq!(r, Err(RpcError::Handler("no such player".into())));
        // A body that is not the handler's request type.
        let bad = OrderedReply { seq: 5 };
        let r = ctx.rpc.call::<_, EchoReply>(ctx.target, "echo", &bad, CallOptions::default()).await;
        assert!(matches!(r, Err(RpcError::Decode(_))), "{r:?}");
    });
}

#[test]
fn unknown_peer_fails_at_once() {
    run(4, RpcBugs::default(), |ctx| async move {
        let stranger = PeerId::new_random(&*ctx.env.rand);
        let t0 = ctx.now_ms();
        assert_eq!(ctx.echo(stranger, "x", T1).await, Err(RpcError::UnknownPeer(stranger)));
        assert_eq!(ctx.now_ms(), t0);
    });
}

#[test]
fn call_to_a_killed_node_returns_by_its_deadline() {
    run(5, RpcBugs::default(), |ctx| async move {
        assert!(ctx.echo(ctx.target, "warm", T1).await.is_ok());
        ctx.handle.kill(ctx.server);
        for timeout_ms in [300, 1500] {
            let t0 = ctx.env.clock.now();
            let r = ctx.echo(ctx.target, "x", Duration::from_millis(timeout_ms)).await;
            let took = ctx.env.clock.now().saturating_since(t0);
            assert!(matches!(r, Err(RpcError::Timeout | RpcError::Unreachable(_))), "{r:?}");
            assert!(took <= Duration::from_millis(timeout_ms) + TIMER_SLACK, "took {took:?}");
        }
    });
}

#[test]
fn call_to_a_partitioned_node_times_out_by_its_deadline() {
    run(6, RpcBugs::default(), |ctx| async move {
        assert!(ctx.echo(ctx.target, "warm", T1).await.is_ok());
        ctx.partition();
        let t0 = ctx.env.clock.now();
        let r = ctx.echo(ctx.target, "x", Duration::from_millis(2500)).await;
        let took = ctx.env.clock.now().saturating_since(t0);
        assert_eq!(r, Err(RpcError::Timeout), "sent on the stalled connection");
        assert!(took <= Duration::from_millis(2500) + TIMER_SLACK, "took {took:?}");
        // After the stall is detected, new connections are refused at once: Unreachable.
        let r = ctx.echo(ctx.target, "y", Duration::from_millis(800)).await;
        assert!(matches!(r, Err(RpcError::Unreachable(_) | RpcError::Timeout)), "{r:?}");
        ctx.heal();
        assert_eq!(ctx.echo(ctx.target, "z", Duration::from_secs(3)).await, Ok("z".into()));
    });
}

/// A slow call whose connection is cut for a while during the handler: the caller detects
/// the stall, reconnects after the heal and retransmits the same xid. Returns the number of
/// handler executions and the call's outcome.
async fn slow_call_across_a_partition(ctx: &Ctx) -> (usize, Result<String, RpcError>) {
    assert!(ctx.echo(ctx.target, "warm", T1).await.is_ok());
    let req = EchoRequest { message: "slow".into() };
    let call = ctx.rpc.call::<_, EchoReply>(
        ctx.target,
        "slow",
        &req,
        CallOptions::default().with_timeout(Duration::from_secs(10)),
    );
    let faults = async {
        ctx.sleep_ms(200).await;
        ctx.partition();
        ctx.sleep_ms(2500).await;
        ctx.heal();
    };
    let (r, ()) = futures::join!(call, faults);
    let runs = ctx.w.execs().iter().filter(|e| e.msg_type == "slow").count();
    (runs, r.map(|r| r.message))
}

#[test]
fn retransmission_after_a_partition_heals_runs_the_handler_once() {
    for seed in 10..14 {
        let (runs, r) =
            run(seed, RpcBugs::default(), |ctx| async move { slow_call_across_a_partition(&ctx).await });
        assert_eq!(r, Ok("slow".into()), "seed {seed}");
        assert_eq!(runs, 1, "seed {seed}");
    }
}

#[test]
fn request_sent_during_a_partition_is_delivered_once_after_the_heal() {
    for seed in 20..23 {
        let (execs, r) = run(seed, RpcBugs::default(), |ctx| async move {
            assert!(ctx.echo(ctx.target, "warm", T1).await.is_ok());
            ctx.partition();
            let call = ctx.echo(ctx.target, "during", Duration::from_secs(8));
            let heal = async {
                ctx.sleep_ms(3000).await;
                ctx.heal();
            };
            let (r, ()) = futures::join!(call, heal);
            (ctx.w.execs(), r)
        });
        assert_eq!(r, Ok("during".into()), "seed {seed}");
        assert_eq!(execs.iter().filter(|e| e.payload == "during").count(), 1, "seed {seed}");
    }
}

#[test]
fn double_exec_bug_is_observable() {
    let caught = (30..36).any(|seed| {
        let bugs = RpcBugs { double_exec: true, ..RpcBugs::default() };
        let (runs, _) = run(seed, bugs, |ctx| async move { slow_call_across_a_partition(&ctx).await });
        runs > 1
    });
    assert!(caught, "the planted double execution was never observed");
}

type OrderedOutcome = Vec<(String, u64, Result<u64, RpcError>, u64)>;

/// Fires `n` ordered calls per key, all at once (stamped in index order), under latency
/// jitter; with `cut`, the link is partitioned for 2 s shortly after, forcing a reconnect.
async fn ordered_burst(ctx: &Ctx, keys: &[&str], n: u64, cut: bool) -> OrderedOutcome {
    NetSim::current().update_config(|c| c.send_latency = Duration::from_millis(1)..Duration::from_millis(40));
    let mut calls = Vec::new();
    for seq in 1..=n {
        for key in keys {
            let key = key.to_string();
            calls.push(async move {
                let req = OrderedRequest { order_key: key.clone(), seq, payload: format!("{key}/{seq}") };
                let opts = CallOptions::default().ordered(key.clone()).with_timeout(Duration::from_secs(10));
                let r = ctx.rpc.call::<_, OrderedReply>(ctx.target, "ordered", &req, opts).await;
                (key, seq, r.map(|r| r.seq), ctx.now_ms())
            });
        }
    }
    let faults = async {
        if cut {
            ctx.sleep_ms(30).await;
            ctx.partition();
            ctx.sleep_ms(2000).await;
            ctx.heal();
        }
    };
    let (out, ()) = futures::join!(join_all(calls), faults);
    out
}

/// For each key, the sequence numbers in handling order.
fn handled_by_key(execs: &[Exec]) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in execs.iter().filter(|e| e.msg_type == "ordered") {
        m.entry(e.key.clone()).or_default().push(e.seq);
    }
    m
}

fn in_send_order(handled: &BTreeMap<String, Vec<u64>>) -> bool {
    handled.values().all(|seqs| seqs.windows(2).all(|w| w[0] < w[1]))
}

#[test]
fn ordered_calls_are_handled_in_send_order_across_jitter_and_a_reconnect() {
    for (seed, cut) in [(40, false), (41, true), (42, true), (43, true)] {
        let (out, execs) = run(seed, RpcBugs::default(), move |ctx| async move {
            let out = ordered_burst(&ctx, &["player-1", "player-2"], 15, cut).await;
            (out, ctx.w.execs())
        });
        let handled = handled_by_key(&execs);
        assert!(in_send_order(&handled), "seed {seed}: {handled:?}");
        for (key, seq, r, _) in &out {
            let times = handled.get(key).map_or(0, |v| v.iter().filter(|s| *s == seq).count());
            match r {
                Ok(s) => {
                    assert_eq!(s, seq);
                    assert_eq!(times, 1, "seed {seed}: {key}/{seq} ok but handled {times} times");
                }
                Err(RpcError::OutOfOrder { .. }) => assert_eq!(times, 0, "seed {seed}: rejected yet handled"),
                Err(e) => panic!("seed {seed}: {key}/{seq} failed: {e}"),
            }
        }
        if !cut {
            assert!(out.iter().all(|(_, _, r, _)| r.is_ok()), "seed {seed}: no faults, all handled");
        }
    }
}

#[test]
fn reorder_bug_is_observable() {
    let caught = (50..60).any(|seed| {
        let bugs = RpcBugs { reorder: true, ..RpcBugs::default() };
        let execs = run(seed, bugs, |ctx| async move {
            ordered_burst(&ctx, &["player-1"], 10, false).await;
            ctx.w.execs()
        });
        !in_send_order(&handled_by_key(&execs))
    });
    assert!(caught, "the planted reordering was never observed");
}

#[test]
fn a_restarted_server_never_handles_calls_meant_for_its_previous_incarnation() {
    for seed in 60..63 {
        run(seed, RpcBugs::default(), |ctx| async move {
            let old = ctx.target;
            assert!(ctx.echo(old, "warm", T1).await.is_ok());
            let req = EchoRequest { message: "in flight".into() };
            let call = ctx.rpc.call::<_, EchoReply>(
                old,
                "slow",
                &req,
                CallOptions::default().with_timeout(Duration::from_secs(5)),
            );
            let restart = async {
                ctx.sleep_ms(500).await;
                ctx.handle.kill(ctx.server);
                ctx.sleep_ms(100).await;
                ctx.handle.restart(ctx.server);
            };
            let (r, ()) = futures::join!(call, restart);
            assert!(matches!(r, Err(RpcError::Fenced | RpcError::Timeout)), "{r:?}");
            let new = ctx.wait_incarnations(2).await;
            assert_ne!(new, old);
            // The directory still maps the old incarnation to the (reused) address.
            // The new incarnation answers the Hello with a fence at once.
            assert_eq!(ctx.echo(old, "stale", Duration::from_secs(2)).await, Err(RpcError::Fenced));
            assert_eq!(ctx.echo(new, "fresh", T1).await, Ok("fresh".into()));
            let on_new: Vec<_> =
                ctx.w.execs().into_iter().filter(|e| e.incarnation == new).map(|e| e.payload).collect();
            assert_eq!(on_new, vec!["fresh".to_string()]);
        });
    }
}

#[test]
fn malformed_frames_drop_only_that_connection() {
    run(70, RpcBugs::default(), |ctx| async move {
        let addr = SocketAddr::new(ip(SERVER_IP), RPC_PORT);
        for junk in [&b"\xff\xff\xff"[..], b"", b"\x0a\x03abc"] {
            let mut conn = ctx.env.net.connect(addr, MAX_PEER_FRAME_BYTES).await.expect("connects");
            conn.sink.send(Bytes::copy_from_slice(junk)).await.expect("sent");
            let end = engine::env::timeout(&*ctx.env.clock, Duration::from_secs(2), conn.stream.next()).await;
            assert!(matches!(end, Ok(None | Some(Err(_)))), "server should close: {end:?}");
        }
        assert_eq!(ctx.echo(ctx.target, "still here", T1).await, Ok("still here".into()));
    });
}

/// A connection the sender already abandoned can say Hello after its current one (connects
/// queued while the server was paused arrive in any order), take the reply route, then
/// close. The reply of a call still running must then go out on the live connection: the
/// sender does not retransmit on a connection it sees as healthy.
/// The next reply frame on a raw connection: `Err` if none came within `wait`, `Ok(None)` if the
/// connection ended first.
async fn next_reply(
    ctx: &Ctx,
    conn: &mut engine::env::Connection,
    wait: Duration,
) -> Result<Option<engine::rpc::wire::ReplyFrame>, engine::env::Elapsed> {
    use engine::rpc::wire::{self, WireFrame};
    engine::env::timeout(&*ctx.env.clock, wait, async {
        while let Some(Ok(frame)) = conn.stream.next().await {
            if let Ok(WireFrame::Reply(r)) = wire::decode(&frame) {
                return Some(r);
            }
        }
        None
    })
    .await
}

#[test]
fn a_late_stale_connection_closing_does_not_swallow_replies() {
    use engine::rpc::wire::{self, ReplyStatus, RequestFrame, WireFrame};
    use prost::Message as _;
    run(75, RpcBugs::default(), |ctx| async move {
        let addr = SocketAddr::new(ip(SERVER_IP), RPC_PORT);
        let sender = PeerId::new_random(&*ctx.env.rand);
        let hello = wire::encode(&WireFrame::Hello { sender, receiver: ctx.target });
        let mut live = ctx.env.net.connect(addr, MAX_PEER_FRAME_BYTES).await.expect("connects");
        live.sink.send(hello.clone()).await.expect("hello");
        let body = Bytes::from(EchoRequest { message: "late".into() }.encode_to_vec());
        let req = RequestFrame { xid: 1, msg_type: "slow".into(), body, order: None, floor: 1 };
        live.sink.send(wire::encode(&WireFrame::Request(req))).await.expect("request");
        ctx.sleep_ms(100).await;
        // The stale connection: Hello after the live one, then gone while `slow` runs.
        let mut stale = ctx.env.net.connect(addr, MAX_PEER_FRAME_BYTES).await.expect("connects");
        stale.sink.send(hello).await.expect("hello");
        ctx.sleep_ms(100).await;
        drop(stale);
        let wait = SLOW_HANDLER + Duration::from_secs(1);
        let reply = next_reply(&ctx, &mut live, wait).await;
        let r = reply.expect("the reply came on the live connection in time").expect("a reply frame");
        assert_eq!(r.xid, 1);
        let ReplyStatus::Ok(body) = r.status else { panic!("{:?}", r.status) };
        assert_eq!(EchoReply::decode(body).expect("echo reply").message, "late");
        assert_eq!(ctx.w.execs().len(), 1, "handled once");
    });
}

#[test]
fn a_handler_that_panics_takes_only_its_own_call_not_the_connection() {
    use engine::rpc::wire::{self, ReplyStatus, RequestFrame, WireFrame};
    use prost::Message as _;
    run(76, RpcBugs::default(), |ctx| async move {
        let addr = SocketAddr::new(ip(SERVER_IP), RPC_PORT);
        let sender = PeerId::new_random(&*ctx.env.rand);
        let mut conn = ctx.env.net.connect(addr, MAX_PEER_FRAME_BYTES).await.expect("connects");
        conn.sink
            .send(wire::encode(&WireFrame::Hello { sender, receiver: ctx.target }))
            .await
            .expect("hello");
        let request = |xid: u64, msg_type: &str| {
            let body = Bytes::from(EchoRequest { message: format!("m{xid}") }.encode_to_vec());
            let req = RequestFrame { xid, msg_type: msg_type.into(), body, order: None, floor: 1 };
            wire::encode(&WireFrame::Request(req))
        };
        // The panicking handler runs first on the connection's reader (it finishes at once).
        conn.sink.send(request(1, "panic")).await.expect("request");
        ctx.sleep_ms(100).await;
        conn.sink.send(request(2, "echo")).await.expect("request");
        let reply = next_reply(&ctx, &mut conn, Duration::from_secs(2)).await;
        let r = reply.expect("an answer in time").expect("the connection stayed open and answered");
        assert_eq!(r.xid, 2, "the panicked call is never answered");
        let ReplyStatus::Ok(body) = r.status else { panic!("{:?}", r.status) };
        assert_eq!(EchoReply::decode(body).expect("echo reply").message, "m2");
    });
}

#[test]
fn same_seed_same_results() {
    let once = || {
        run(80, RpcBugs::default(), |ctx| async move {
            let out = ordered_burst(&ctx, &["a", "b"], 8, true).await;
            (out, ctx.w.execs(), ctx.target)
        })
    };
    let (a, b) = (once(), once());
    assert_eq!(a, b);
}
