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
                            // `FuturesUnordered` polls only the callers that were woken;
                            // `join_all` would poll all of them on every wake.
                            let mut tasks: futures::stream::FuturesUnordered<_> = tasks.collect();
                            while tasks.next().await.is_some() {}
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

/// Round trips (and calls) per repetition of `bench rpc`.
const RPC_CALLS: u64 = 50_000;
/// Frames per repetition of the scenario bench's baseline.
const PING_PONG_ROUND_TRIPS: u64 = 50_000;

/// Median and relative spread ((max - min) / median) of `xs`.
fn median_spread(xs: &[f64]) -> (f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() { 0.0 } else { v[v.len() / 2] };
    let spread = match (v.first(), v.last()) {
        (Some(lo), Some(hi)) if median > 0.0 => (hi - lo) / median,
        _ => 0.0,
    };
    (median, spread)
}

/// `sim bench`: `reps` repetitions, each running the baseline and then the engine, so a
/// drift in the machine's speed hits both; prints every repetition and the medians, with
/// the spread, of the figures and of the per-repetition ratios.
pub fn print_bench(scenario: &dyn scenarios::Scenario, seeds: u64, reps: usize) {
    let name = scenario.name();
    if name == "rpc" {
        println!(
            "rpc echo vs raw madsim length-delimited ping-pong, 64-byte messages, 2 nodes, {RPC_CALLS} calls a repetition"
        );
        let (mut base, mut ratios) = (Vec::new(), [Vec::new(), Vec::new()]);
        let mut calls = [Vec::new(), Vec::new()];
        for rep in 0..reps {
            let b = baseline_ping_pong(1, RPC_CALLS, 64);
            let base_rt = (b.frames / 2) as f64 / b.wall_secs.max(1e-9);
            base.push(base_rt);
            let mut line = format!("  rep {rep}: baseline {base_rt:>9.0} round trips/wall-s");
            for (i, concurrency) in [1u64, 16].into_iter().enumerate() {
                let t = rpc_echo(1, RPC_CALLS, concurrency, 64);
                let per_s = RPC_CALLS as f64 / t.wall_secs.max(1e-9);
                calls[i].push(per_s);
                ratios[i].push(per_s / base_rt);
                line +=
                    &format!(", {concurrency:>2} in flight {per_s:>9.0} calls/wall-s ({} frames)", t.frames);
            }
            println!("{line}");
        }
        let (b, bs) = median_spread(&base);
        println!("  baseline: median {b:.0} round trips/wall-s (spread {:.0}%)", bs * 100.0);
        for (i, concurrency) in [1, 16].into_iter().enumerate() {
            let (c, cs) = median_spread(&calls[i]);
            let (r, rs) = median_spread(&ratios[i]);
            println!(
                "  {concurrency:>2} in flight: median {c:.0} calls/wall-s (spread {:.0}%), ratio to baseline round trips {r:.3} (spread {:.0}%)",
                cs * 100.0,
                rs * 100.0
            );
        }
    }
    println!(
        "scenario {name} (seeds 0..{seeds}, faults on) vs raw madsim length-delimited ping-pong ({PING_PONG_ROUND_TRIPS} round trips), frames per wall-s"
    );
    let (mut base, mut eng, mut ratios, mut seeds_per_s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let b = baseline_ping_pong(1, PING_PONG_ROUND_TRIPS, 64);
        let t = scenario_throughput(scenario, 0..seeds);
        let ratio = t.frames_per_wall_sec() / b.frames_per_wall_sec();
        println!(
            "  rep {rep}: baseline {:>9.0} frames/wall-s, scenario {:>9.0} frames/wall-s ({} frames, {:.0} sim-s/wall-s, {:.1} seeds/s), ratio {ratio:.3}",
            b.frames_per_wall_sec(),
            t.frames_per_wall_sec(),
            t.frames,
            t.sim_per_wall(),
            seeds as f64 / t.wall_secs.max(1e-9)
        );
        base.push(b.frames_per_wall_sec());
        eng.push(t.frames_per_wall_sec());
        ratios.push(ratio);
        seeds_per_s.push(seeds as f64 / t.wall_secs.max(1e-9));
    }
    let ((b, bs), (e, es), (r, rs), (sp, _)) =
        (median_spread(&base), median_spread(&eng), median_spread(&ratios), median_spread(&seeds_per_s));
    println!("  baseline: median {b:.0} frames/wall-s (spread {:.0}%)", bs * 100.0);
    println!("  scenario: median {e:.0} frames/wall-s (spread {:.0}%), {sp:.1} seeds/s", es * 100.0);
    println!("ratio (scenario / baseline frames per wall-s): median {r:.3} (spread {:.0}%)", rs * 100.0);
}

#[cfg(test)]
mod tests {
    use super::median_spread;

    #[test]
    fn median_and_spread_of_five_figures() {
        let (m, s) = median_spread(&[10.0, 12.0, 8.0, 11.0, 9.0]);
        assert_eq!(m, 10.0);
        assert!((s - 0.4).abs() < 1e-12);
        assert_eq!(median_spread(&[]), (0.0, 0.0));
    }
}
