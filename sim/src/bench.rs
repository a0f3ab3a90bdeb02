//! Simulator throughput, measured against a raw madsim baseline in the same process.
//!
//! Baseline: two madsim nodes doing a length-delimited frame ping-pong over simulated TCP
//! (the cheapest thing the simulator can do per frame). Engine figure: a scenario's seeds,
//! counting the same madsim network messages. Both are reported as simulated frames per wall
//! second; their ratio says how much of the simulator's ceiling the engine's own work and the
//! service models leave. Never asserted on: benchmarks print, tests judge.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use madsim::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::runner::{run_seed, RunOptions};

/// Figures of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub frames: u64,
    pub wall_secs: f64,
    pub sim_secs: f64,
}

impl Throughput {
    pub fn frames_per_wall_sec(&self) -> f64 {
        self.frames as f64 / self.wall_secs.max(1e-9)
    }
    pub fn sim_per_wall(&self) -> f64 {
        self.sim_secs / self.wall_secs.max(1e-9)
    }
}

/// `round_trips` ping-pongs of a `payload`-byte frame between two simulated nodes.
pub fn baseline_ping_pong(seed: u64, round_trips: u64, payload: usize) -> Throughput {
    let wall = Instant::now();
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let (frames, sim) = rt.block_on(async move {
        let handle = madsim::runtime::Handle::current();
        let addr: SocketAddr = "10.0.0.1:7000".parse().expect("valid");
        let server = handle.create_node().name("echo").ip(addr.ip()).build();
        let client = handle.create_node().name("pinger").ip("10.0.0.2".parse().expect("valid")).build();
        server.spawn(async move {
            let listener = TcpListener::bind(addr).await.expect("bind");
            let (stream, _) = listener.accept().await.expect("accept");
            let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
            while let Some(Ok(frame)) = framed.next().await {
                if framed.send(frame.freeze()).await.is_err() {
                    break;
                }
            }
        });
        madsim::time::sleep(Duration::from_millis(10)).await;
        let start = madsim::time::Instant::now();
        client
            .spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
                let body = bytes::Bytes::from(vec![7u8; payload]);
                for _ in 0..round_trips {
                    framed.send(body.clone()).await.expect("send");
                    framed.next().await.expect("echo").expect("frame");
                }
            })
            .await
            .expect("pinger finishes");
        (madsim::net::NetSim::current().stat().msg_count, start.elapsed().as_secs_f64())
    });
    Throughput { frames, wall_secs: wall.elapsed().as_secs_f64(), sim_secs: sim }
}

/// Runs `seeds` of `scenario` and totals frames, wall and simulated time.
pub fn scenario_throughput(scenario: &dyn scenarios::Scenario, seeds: std::ops::Range<u64>) -> Throughput {
    let mut t = Throughput { frames: 0, wall_secs: 0.0, sim_secs: 0.0 };
    for seed in seeds {
        let r = run_seed(scenario, seed, None, RunOptions::default());
        t.frames += r.frames;
        t.wall_secs += r.wall_secs;
        t.sim_secs += r.sim_secs;
    }
    t
}

/// `calls` echo RPCs of a `payload`-byte message from one simulated server to another,
/// `concurrency` in flight at a time, through the full engine RPC stack (prost envelope,
/// xid matching, dedupe, handler dispatch). `frames` counts madsim network messages.
pub fn rpc_echo(seed: u64, calls: u64, concurrency: u64, payload: usize) -> Throughput {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use engine::cluster::{PeerDirectory, PeerId};
    use engine::rpc::messages::{EchoReply, EchoRequest};
    use engine::rpc::{CallOptions, Rpc, RpcConfig};

    let wall = Instant::now();
    let (frames, sim) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
                rt.block_on(async move {
                    let handle = madsim::runtime::Handle::current();
                    let clocks = crate::adapters::ClockControl::new();
                    let server_addr: SocketAddr = "10.0.2.1:8015".parse().expect("valid");
                    let client_addr: SocketAddr = "10.0.2.2:8015".parse().expect("valid");
                    let (server_id, client_id) = (uuid_from(1), uuid_from(2));
                    let dir: BTreeMap<PeerId, SocketAddr> =
                        [(server_id, server_addr), (client_id, client_addr)].into_iter().collect();
                    let directory: Arc<dyn PeerDirectory> = Arc::new(dir);
                    let server = handle.create_node().name("server").ip(server_addr.ip()).build();
                    let client = handle.create_node().name("caller").ip(client_addr.ip()).build();
                    let (d1, c1) = (directory.clone(), clocks.clone());
                    server.spawn(async move {
                        let env = crate::runner::node_env("server", server_addr.ip(), &c1);
                        let rpc =
                            Rpc::start(env, server_id, d1, RpcConfig::new(server_addr)).await.expect("start");
                        rpc.register_handler("echo", |_i, r: EchoRequest| async move {
                            Ok(EchoReply { message: r.message })
                        });
                        futures::future::pending::<()>().await;
                    });
                    madsim::time::sleep(Duration::from_millis(10)).await;
                    let start = madsim::time::Instant::now();
                    client
                        .spawn(async move {
                            let env = crate::runner::node_env("caller", client_addr.ip(), &clocks);
                            let rpc = Rpc::start(env, client_id, directory, RpcConfig::new(client_addr))
                                .await
                                .expect("start");
                            let message = "x".repeat(payload);
                            let per_task = calls / concurrency.max(1);
                            let tasks = (0..concurrency.max(1)).map(|_| {
                                let (rpc, message) = (rpc.clone(), message.clone());
                                async move {
                                    for _ in 0..per_task {
                                        let req = EchoRequest { message: message.clone() };
                                        let r: EchoReply = rpc
                                            .call(server_id, "echo", &req, CallOptions::default())
                                            .await
                                            .expect("echo");
                                        debug_assert_eq!(r.message.len(), message.len());
                                    }
                                }
                            });
                            futures::future::join_all(tasks).await;
                        })
                        .await
                        .expect("caller finishes");
                    (madsim::net::NetSim::current().stat().msg_count, start.elapsed().as_secs_f64())
                })
            })
            .join()
            .expect("bench thread")
    });
    Throughput { frames, wall_secs: wall.elapsed().as_secs_f64(), sim_secs: sim }
}

fn uuid_from(n: u8) -> engine::cluster::PeerId {
    engine::cluster::PeerId::from_slice(&[n; 16]).expect("16 bytes")
}
