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
