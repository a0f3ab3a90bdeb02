//! `rpc`: echo calls between two engine nodes in this process, against a raw length-delimited
//! echo over tokio.
//!
//! Engine: two nodes, each with its own `Env` on the real adapters, join one cluster in the
//! private ZooKeeper (`Cluster::join`), start `Rpc` on loopback TCP (`TokioNet`) and resolve
//! each other through the cluster view. The server registers `echo`; the caller runs
//! `concurrency` tasks, each calling `echo` with a [`PAYLOAD_BYTES`] message as soon as its
//! previous call returned. Every call goes through the whole stack: prost envelope, xid,
//! per-sender dedupe, handler dispatch, reply matching.
//!
//! Baseline: a tokio `Framed<TcpStream, LengthDelimitedCodec>` echo server and one client
//! connection keeping `concurrency` frames of the same payload in flight (a new frame is sent
//! as each echo comes back), i.e. the same number of requests in flight over one connection,
//! as the engine multiplexes its calls over one connection per peer.
//!
//! Both sides run on the same runtime with the same socket options (`TCP_NODELAY` on every
//! connection, as `TokioNet` sets it), and both sides' clients run in spawned tasks on the
//! runtime's workers: the raw client used to run in `block_on`'s own thread, so each of its
//! round trips crossed threads twice while the engine's did not, and its 1-in-flight figure
//! swung several-fold between runs with where the server task happened to run. Each of
//! `--reps` repetitions measures every case, engine then baseline; the rows are the medians
//! of the repetitions and a note gives each side's spread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::cluster::{Cluster, ClusterConfig, PeerId};
use engine::rpc::messages::{EchoReply, EchoRequest};
use engine::rpc::{CallOptions, Rpc, RpcConfig};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::driver::{compare_repeated, free_port, measure, runtime, Sample};
use super::{BenchError, BenchReport, Ctx};
use crate::env::real_env;

const BENCH: &str = "rpc";
/// Bytes of the echoed message (the application payload, without either side's framing).
const PAYLOAD_BYTES: usize = 64;
/// Requests in flight, one measurement each.
const CONCURRENCY: [usize; 2] = [1, 16];
const APP_ID: &str = "bench_rpc";
/// How long the caller may wait to see the server in its cluster view.
const VIEW_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) fn run(ctx: &Ctx) -> Result<BenchReport, BenchError> {
    runtime()?.block_on(async {
        let pair = EnginePair::start(ctx).await?;
        let measured = measure_all(ctx, &pair).await;
        pair.stop().await;
        let mut report = BenchReport::new(BENCH);
        let (rows, spreads) = measured?;
        report.rows = rows;
        report.notes.extend(spreads);
        report.notes.push(format!(
            "{PAYLOAD_BYTES}-byte echo; engine: default RpcConfig (4 concurrent handlers); baseline: \
             LengthDelimitedCodec echo, same requests in flight on one connection"
        ));
        Ok(report)
    })
}

async fn measure_all(ctx: &Ctx, pair: &EnginePair) -> Result<(Vec<super::Row>, Vec<String>), BenchError> {
    let raw = RawEcho::start().await?;
    let (warmup, duration) = (ctx.settings.warmup(), ctx.settings.duration());
    let cases: Vec<_> = CONCURRENCY.into_iter().map(|c| (format!("{c} in flight"), c)).collect();
    compare_repeated(
        ctx.settings.reps,
        &cases,
        "calls/s",
        |c| pair.measure(c, warmup, duration),
        |c| raw.measure(c, warmup, duration),
    )
    .await
}

/// A server node and a caller node of one cluster.
struct EnginePair {
    server: (Cluster, Rpc),
    caller: (Cluster, Rpc),
}

impl EnginePair {
    async fn start(ctx: &Ctx) -> Result<EnginePair, BenchError> {
        let server = start_node(ctx, "rpc-server").await?;
        server.1.register_handler("echo", |_info, req: EchoRequest| async move {
            Ok(EchoReply { message: req.message })
        });
        let caller = match start_node(ctx, "rpc-caller").await {
            Ok(c) => c,
            Err(e) => {
                stop_node(&server).await;
                return Err(e);
            }
        };
        let pair = EnginePair { server, caller };
        let target = pair.server.0.id();
        let deadline = Instant::now() + VIEW_TIMEOUT;
        while !pair.caller.0.peers(false).contains_key(&target) {
            if Instant::now() > deadline {
                pair.stop().await;
                return Err(BenchError::Timeout {
                    bench: BENCH,
                    what: "the server in the caller's cluster view".into(),
                    waited: VIEW_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(pair)
    }

    async fn measure(
        &self,
        concurrency: usize,
        warmup: Duration,
        duration: Duration,
    ) -> Result<Sample, BenchError> {
        let rpc = self.caller.1.clone();
        let target: PeerId = self.server.0.id();
        let message: Arc<str> = Arc::from("x".repeat(PAYLOAD_BYTES));
        measure(BENCH, concurrency, warmup, duration, move |_, _| {
            let (rpc, message) = (rpc.clone(), message.clone());
            async move {
                let req = EchoRequest { message: message.to_string() };
                let rep: EchoReply = rpc
                    .call(target, "echo", &req, CallOptions::default())
                    .await
                    .map_err(|e| BenchError::op(BENCH, format!("echo call: {e}")))?;
                if rep.message.len() != PAYLOAD_BYTES {
                    return Err(BenchError::op(BENCH, "echo reply of the wrong length"));
                }
                Ok(())
            }
        })
        .await
    }

    async fn stop(&self) {
        stop_node(&self.caller).await;
        stop_node(&self.server).await;
    }
}

async fn start_node(ctx: &Ctx, name: &str) -> Result<(Cluster, Rpc), BenchError> {
    let env = real_env(&ctx.env_config(name)).map_err(|e| BenchError::setup(BENCH, e))?;
    let addr = free_port()?;
    let cluster = Cluster::join(env.clone(), ClusterConfig::new(APP_ID, name, addr))
        .await
        .map_err(|e| BenchError::setup(BENCH, format!("{name} joining the cluster: {e}")))?;
    match Rpc::start(env, cluster.id(), Arc::new(cluster.clone()), RpcConfig::new(addr)).await {
        Ok(rpc) => Ok((cluster, rpc)),
        Err(e) => {
            cluster.leave().await;
            Err(BenchError::setup(BENCH, format!("{name} starting rpc: {e}")))
        }
    }
}

async fn stop_node((cluster, rpc): &(Cluster, Rpc)) {
    rpc.shutdown().await;
    cluster.leave().await;
}

/// The raw echo server (its accept loop ends with the runtime).
struct RawEcho {
    addr: std::net::SocketAddr,
}

impl RawEcho {
    async fn start() -> Result<RawEcho, BenchError> {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.map_err(BenchError::io("binding the raw echo"))?;
        let addr = listener.local_addr().map_err(BenchError::io("binding the raw echo"))?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
                    while let Some(Ok(frame)) = framed.next().await {
                        if framed.send(frame.freeze()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(RawEcho { addr })
    }

    /// Warm-up, then one measurement, each on a fresh connection, in a spawned task (where the
    /// engine's callers run too).
    async fn measure(
        &self,
        concurrency: usize,
        warmup: Duration,
        duration: Duration,
    ) -> Result<Sample, BenchError> {
        let addr = self.addr;
        let task = tokio::spawn(async move {
            if !warmup.is_zero() {
                Self::window(addr, concurrency, warmup).await?;
            }
            Self::window(addr, concurrency, duration).await
        });
        task.await.map_err(|e| BenchError::op(BENCH, format!("raw echo client task: {e}")))?
    }

    /// Keeps `concurrency` frames in flight on one connection until `duration` has passed,
    /// then waits for the outstanding echoes.
    async fn window(
        addr: std::net::SocketAddr,
        concurrency: usize,
        duration: Duration,
    ) -> Result<Sample, BenchError> {
        let op = |e: std::io::Error| BenchError::op(BENCH, format!("raw echo: {e}"));
        let stream = TcpStream::connect(addr).await.map_err(op)?;
        stream.set_nodelay(true).map_err(op)?;
        let (mut sink, mut stream) = Framed::new(stream, LengthDelimitedCodec::new()).split();
        let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
        let start = Instant::now();
        let deadline = start + duration;
        let mut sent_at = VecDeque::with_capacity(concurrency);
        let mut lat = Vec::new();
        for _ in 0..concurrency.max(1) {
            sent_at.push_back(Instant::now());
            sink.send(payload.clone()).await.map_err(op)?;
        }
        while let Some(t) = sent_at.pop_front() {
            let frame = stream
                .next()
                .await
                .ok_or_else(|| BenchError::op(BENCH, "raw echo closed the connection"))?
                .map_err(op)?;
            lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            if frame.len() != PAYLOAD_BYTES {
                return Err(BenchError::op(BENCH, "raw echo of the wrong length"));
            }
            if Instant::now() < deadline {
                sent_at.push_back(Instant::now());
                sink.send(payload.clone()).await.map_err(op)?;
            }
        }
        Ok(Sample::new(start.elapsed(), lat))
    }
}
