//! `rpc`: servers exchange echo calls and ordered per-player calls over the typed RPC layer
//! under packet loss, latency, partitions, pauses and restarts.
//!
//! Invariants:
//! - every reply matches its request (echo returns the same message, an ordered call its own
//!   sequence number);
//! - per (sender, receiver, order key), calls are handled in send order;
//! - no call (sender, xid) is handled twice;
//! - no call waits past its timeout (allowing for the caller's clock drift);
//! - liveness: after the heal every live server's calls succeed within the bound.
//!
//! Planted bugs: `reorder` (the server ignores order keys) and `double-exec` (the server
//! skips its xid dedupe, so a retransmitted request runs twice).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::cluster::{ClusterBugs, PeerDirectory, PeerId};
use engine::env::RandExt;
use engine::rpc::messages::{EchoReply, EchoRequest, OrderedReply, OrderedRequest};
use engine::rpc::{CallOptions, Rpc, RpcBugs, RpcConfig, RpcError};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::membership::{cluster_config, join_retrying, servers};
use crate::checker::{liveness_after_heal, Report};
use crate::faults::{FaultKind, FaultSpace};
use crate::history::{History, Outcome, ProcessId, Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, Scenario, ScenarioMeta, ScenarioRun, ServerCtx, Topology,
};

const SERVERS: usize = 4;
const RPC_PORT: u16 = 8015;
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest clock drift of the fault space, in ppm: a caller's timeout is measured on its own
/// (possibly slow) clock, so true elapsed time may exceed it by this fraction.
const DRIFT_PPM_MAX: i64 = 20_000;
/// Scheduling slack on top of the drift allowance.
const TIMEOUT_SLACK: Duration = Duration::from_millis(50);
const ORDER_KEYS: u64 = 3;

const BUGS: &[PlantedBug] = &[
    PlantedBug {
        name: "reorder",
        description: "the RPC server ignores order keys: calls of one player run concurrently",
        caught_within_seeds: 10,
    },
    PlantedBug {
        name: "double-exec",
        description: "the RPC server skips its xid dedupe: a retransmitted request runs again",
        caught_within_seeds: 30,
    },
];

pub struct RpcScenario;

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "rpc: calls retransmitted on a new connection",
    "rpc: duplicate of a finished call answered from the dedupe window",
    "rpc: duplicate of a running call ignored",
    "rpc: stale copy of an abandoned call dropped",
    "rpc: connection for an older incarnation fenced",
    "rpc: calls failed, the peer's incarnation is gone",
    "rpc: call timed out after it was sent (maybe applied)",
    "rpc: stalled connection replaced",
    "cluster: view stale while disconnected",
];

/// Its checkers read the servers' in-memory records: simulator only.
const META: ScenarioMeta = ScenarioMeta {
    name: "rpc",
    description:
        "echo and ordered per-player RPC between servers under loss, latency, partitions and restarts",
    bugs: BUGS,
    runs_live: false,
    probes: PROBES,
};

impl Scenario for RpcScenario {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, _bug: Option<&str>) -> Topology {
        Topology { zookeeper: true, redis: None, sql: None, servers: servers(SERVERS), clients: 0 }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        FaultSpace::builder(topology, 20_000, 20_000)
            .liveness_bound_ms(15_000)
            .faults(3, 10, 8_000)
            .kill(&[Nodes::Servers])
            .pause(&[Nodes::All])
            .partition(&[Nodes::All])
            .clock(&[Nodes::Servers], 10_000, DRIFT_PPM_MAX)
            .network()
            .weight(FaultKind::PacketLoss, 2)
            .weight(FaultKind::Latency, 2)
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run {
            bugs: RpcBugs { reorder: bug == Some("reorder"), double_exec: bug == Some("double-exec") },
            now: now.clone(),
            calls: Recorder::new(now),
            shared: Arc::new(Mutex::new(Shared::default())),
        })
    }
}

/// A call as the caller recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallOp {
    Echo { to: PeerId, message: String },
    Ordered { to: PeerId, key: String, seq: u64 },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallResult {
    Echo(String),
    Ordered(u64),
}

/// One handler execution, in handling order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handled {
    receiver: PeerId,
    sender: PeerId,
    xid: u64,
    key: Option<String>,
    seq: u64,
}

/// Heartbeat period of every server incarnation: gaps in its heartbeats are the times it was
/// frozen (paused), which a caller cannot count against its timeouts.
const HEARTBEAT: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Shared {
    handled: Vec<Handled>,
    /// Heartbeat times (ns) of every server process.
    alive: BTreeMap<ProcessId, Vec<u64>>,
}

/// Time (ns) within `from..to` during which `process` was frozen: heartbeat gaps longer than
/// one and a half periods. `beats` are ascending.
///
/// Only the gaps that overlap `from..to` can count, so the search starts at the last beat at
/// or before `from` and ends at the first beat at or after `to`: the check calls this once
/// per call over a run's whole heartbeat list, and scanning every gap each time was 12% of
/// an `rpc` seed's instructions (issue 19).
fn frozen_ns(beats: &[u64], from: u64, to: u64) -> u64 {
    let period = HEARTBEAT.as_nanos() as u64;
    let first = beats.partition_point(|&b| b <= from).saturating_sub(1);
    let last = beats.partition_point(|&b| b < to).min(beats.len().saturating_sub(1));
    let beats = beats.get(first..=last).unwrap_or_default();
    beats
        .windows(2)
        // A gap of more than half a period beyond the period: the node was frozen (a pause
        // of 117 ms gave a 150 ms gap, which the earlier 3-period threshold took for none:
        // `sim run rpc --seeds 5650..5651`). Drift stretches a gap by at most 2 %.
        .filter(|w| w[1] - w[0] > period + period / 2)
        .map(|w| {
            let (a, b) = (w[0] + period, w[1]);
            b.min(to).saturating_sub(a.max(from))
        })
        .sum()
}

struct Run {
    bugs: RpcBugs,
    now: TimeSource,
    calls: Recorder<CallOp, CallResult>,
    shared: Arc<Mutex<Shared>>,
}

fn complete(
    rec: &Recorder<CallOp, CallResult>,
    h: crate::history::OpHandle,
    r: Result<CallResult, RpcError>,
) {
    match r {
        Ok(v) => rec.ok(h, v),
        // A timeout may hide an executed call; everything else certainly did not run it.
        Err(RpcError::Timeout) => rec.info(h),
        Err(_) => rec.fail(h),
    }
}

impl ScenarioRun for Run {
    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.calls.snapshot().views()
    }

    fn client(&self, _ctx: ClientCtx) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        let (bugs, now, calls, shared) =
            (self.bugs, self.now.clone(), self.calls.clone(), self.shared.clone());
        async move {
            let cfg = cluster_config(&ctx, RPC_PORT, ClusterBugs::default());
            let Some(cluster) = join_retrying(&ctx, &cfg).await else { return };
            let me = cluster.id();
            let rpc_cfg =
                RpcConfig { bugs, ..RpcConfig::new(SocketAddr::new(ctx.env.net.local_ip(), RPC_PORT)) };
            let directory: Arc<dyn PeerDirectory> = Arc::new(cluster.clone());
            let rpc = loop {
                match Rpc::start(ctx.env.clone(), me, directory.clone(), rpc_cfg.clone()).await {
                    Ok(r) => break r,
                    Err(e) => {
                        tracing::warn!(error = %e, "rpc start failed; retrying");
                        ctx.env.clock.sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            {
                let shared = shared.clone();
                rpc.register_handler("echo", move |info, req: EchoRequest| {
                    shared.lock().expect("shared").handled.push(Handled {
                        receiver: me,
                        sender: info.sender,
                        xid: info.xid.seq,
                        key: None,
                        seq: 0,
                    });
                    async move { Ok(EchoReply { message: req.message }) }
                });
            }
            {
                let (shared, clock, rand) = (shared.clone(), ctx.env.clock.clone(), ctx.env.rand.clone());
                rpc.register_handler("ordered", move |info, req: OrderedRequest| {
                    let (shared, clock) = (shared.clone(), clock.clone());
                    let work = Duration::from_millis(rand.gen_range(0..20));
                    async move {
                        // Handlers do async work; the next call of a key must wait for it.
                        clock.sleep(work).await;
                        shared.lock().expect("shared").handled.push(Handled {
                            receiver: me,
                            sender: info.sender,
                            xid: info.xid.seq,
                            key: info.order_key.clone(),
                            seq: req.seq,
                        });
                        Ok(OrderedReply { seq: req.seq })
                    }
                });
            }
            {
                let (shared, clock, now, process) =
                    (shared.clone(), ctx.env.clock.clone(), now.clone(), ctx.process);
                let beat = async move {
                    loop {
                        shared.lock().expect("shared").alive.entry(process).or_default().push(now());
                        clock.sleep(HEARTBEAT).await;
                    }
                };
                // Detached: it lives as long as the node incarnation does.
                drop(ctx.env.spawn.spawn("heartbeat", Box::pin(beat)));
            }
            let mut n = 0u64;
            let mut next_seq: BTreeMap<(PeerId, String), u64> = BTreeMap::new();
            while !ctx.phases.finished() {
                let peers: Vec<PeerId> = cluster.peers(false).keys().copied().collect();
                let Some(&to) = ctx.env.rand.choose(&peers) else {
                    ctx.env.clock.sleep(Duration::from_millis(200)).await;
                    continue;
                };
                // One operation: an echo call or a burst of ordered calls. Once the budget is
                // spent the server only answers (its handlers live as long as this loop).
                if !ctx.budget.take() {
                    ctx.env.clock.sleep(Duration::from_millis(200)).await;
                    continue;
                }
                if ctx.env.rand.gen_bool(0.5) {
                    n += 1;
                    let message = format!("p{}-{n}", ctx.process);
                    let h = calls.invoke(ctx.process, CallOp::Echo { to, message: message.clone() });
                    let opts = CallOptions { timeout: Some(CALL_TIMEOUT), order_key: None };
                    let r = rpc.call::<_, EchoReply>(to, "echo", &EchoRequest { message }, opts).await;
                    complete(&calls, h, r.map(|rep| CallResult::Echo(rep.message)));
                } else {
                    // A burst of calls for one player, all in flight at once.
                    let key = format!("player-{}", ctx.env.rand.gen_range(0..ORDER_KEYS));
                    let burst = ctx.env.rand.gen_range(1..5);
                    let mut futs = Vec::new();
                    for _ in 0..burst {
                        let seq = next_seq.entry((to, key.clone())).or_insert(0);
                        *seq += 1;
                        let seq = *seq;
                        let h = calls.invoke(ctx.process, CallOp::Ordered { to, key: key.clone(), seq });
                        let opts = CallOptions { timeout: Some(CALL_TIMEOUT), order_key: Some(key.clone()) };
                        let req = OrderedRequest {
                            order_key: key.clone(),
                            seq,
                            payload: format!("p{}", ctx.process),
                        };
                        let (rpc, calls) = (rpc.clone(), calls.clone());
                        futs.push(async move {
                            let r = rpc.call::<_, OrderedReply>(to, "ordered", &req, opts).await;
                            complete(&calls, h, r.map(|rep| CallResult::Ordered(rep.seq)));
                        });
                    }
                    futures::future::join_all(futs).await;
                }
                ctx.env.clock.sleep(Duration::from_millis(ctx.env.rand.gen_range(0..100))).await;
            }
        }
        .boxed()
    }

    fn check(&self, _env: engine::env::Env, phases: Phases) -> BoxFuture<'static, Report> {
        let (calls, shared) = (self.calls.snapshot(), self.shared.clone());
        async move {
            let shared = shared.lock().expect("shared");
            let mut report = check_rpc(&calls, &shared.handled, &shared.alive);
            report.merge(liveness_after_heal(&calls, &phases, |_| true));
            report
        }
        .boxed()
    }
}

fn check_rpc(
    calls: &History<CallOp, CallResult>,
    handled: &[Handled],
    alive: &BTreeMap<ProcessId, Vec<u64>>,
) -> Report {
    let mut report = Report::default();
    let timeout_ns = CALL_TIMEOUT.as_nanos() as u64;
    let allowed_ns =
        timeout_ns + timeout_ns * DRIFT_PPM_MAX as u64 / 1_000_000 + TIMEOUT_SLACK.as_nanos() as u64;
    let (mut ok, mut timeouts) = (0u64, 0u64);
    for op in &calls.ops {
        // Replies match requests.
        match (&op.op, op.outcome()) {
            (CallOp::Echo { message, .. }, Outcome::Ok(CallResult::Echo(got))) if got == message => ok += 1,
            (CallOp::Ordered { seq, .. }, Outcome::Ok(CallResult::Ordered(got))) if got == seq => ok += 1,
            (_, Outcome::Ok(got)) => report.violation(
                "rpc.reply",
                format!(
                    "call #{} (process {}) {:?} got a reply that is not its own: {:?}",
                    op.id, op.process, op.op, got
                ),
            ),
            (_, Outcome::Info) => timeouts += 1,
            (_, Outcome::Fail) => {}
        }
        // Nobody waits past the timeout (time the caller spent frozen does not count).
        let beats = alive.get(&op.process).map(Vec::as_slice).unwrap_or_default();
        debug_assert!(beats.is_sorted(), "heartbeats are recorded in time order");
        let end = match &op.completion {
            Some((t, _)) => Some(*t),
            None => beats.last().copied().filter(|last| *last > op.invoke_ns),
        };
        if let Some(end) = end {
            let w = end.saturating_sub(op.invoke_ns) - frozen_ns(beats, op.invoke_ns, end);
            if w > allowed_ns {
                report.violation(
                    "rpc.timeout",
                    format!(
                        "call #{} (process {}) {:?} waited {:.3}s, past its {:?} timeout",
                        op.id,
                        op.process,
                        op.op,
                        w as f64 / 1e9,
                        CALL_TIMEOUT
                    ),
                );
            }
        }
    }
    // Order per (sender, receiver, key) and at-most-once per (sender, xid).
    let mut last: BTreeMap<(PeerId, PeerId, String), u64> = BTreeMap::new();
    let mut seen: BTreeSet<(PeerId, u64)> = BTreeSet::new();
    for h in handled {
        if !seen.insert((h.sender, h.xid)) {
            report.violation(
                "rpc.at_most_once",
                format!(
                    "xid {} from {:?} handled twice on {:?} (seq {})",
                    h.xid, h.sender, h.receiver, h.seq
                ),
            );
        }
        if let Some(key) = &h.key {
            let prev = last.entry((h.sender, h.receiver, key.clone())).or_insert(0);
            if h.seq <= *prev {
                report.violation(
                    "rpc.order",
                    format!(
                        "{:?} handled {key} seq {} from {:?} after seq {}: not in send order",
                        h.receiver, h.seq, h.sender, *prev
                    ),
                );
            }
            *prev = (*prev).max(h.seq);
        }
    }
    report.count("rpc.calls", calls.ops.len() as u64);
    report.count("rpc.ok", ok);
    report.count("rpc.timeouts", timeouts);
    report.count("rpc.handled_ordered", handled.len() as u64);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;

    fn pid(n: u8) -> PeerId {
        PeerId(uuid::Uuid::from_bytes([n; 16]))
    }

    fn call(
        id: usize,
        op: CallOp,
        inv_ms: u64,
        done: Option<(u64, Outcome<CallResult>)>,
    ) -> Operation<CallOp, CallResult> {
        Operation {
            id,
            process: 0,
            op,
            invoke_ns: inv_ms * 1_000_000,
            completion: done.map(|(t, o)| (t * 1_000_000, o)),
        }
    }

    fn handled(xid: u64, seq: u64) -> Handled {
        Handled { receiver: pid(2), sender: pid(1), xid, key: Some("player-0".into()), seq }
    }

    #[test]
    fn good_history_passes() {
        let calls = History {
            ops: vec![
                call(
                    0,
                    CallOp::Echo { to: pid(2), message: "a".into() },
                    0,
                    Some((5, Outcome::Ok(CallResult::Echo("a".into())))),
                ),
                call(
                    1,
                    CallOp::Ordered { to: pid(2), key: "player-0".into(), seq: 1 },
                    10,
                    Some((2010, Outcome::Info)),
                ),
            ],
        };
        let r = check_rpc(&calls, &[handled(1, 1), handled(2, 2)], &BTreeMap::new());
        assert!(r.ok(), "{r:?}");
    }

    #[test]
    fn mismatched_reply_fails() {
        let calls = History {
            ops: vec![call(
                0,
                CallOp::Echo { to: pid(2), message: "a".into() },
                0,
                Some((5, Outcome::Ok(CallResult::Echo("b".into())))),
            )],
        };
        assert!(!check_rpc(&calls, &[], &BTreeMap::new()).ok());
    }

    #[test]
    fn out_of_order_and_double_exec_fail() {
        let calls = History::default();
        let r = check_rpc(&calls, &[handled(2, 2), handled(1, 1)], &BTreeMap::new());
        assert!(r.violations.iter().any(|v| v.checker == "rpc.order"), "{r:?}");
        let r = check_rpc(&calls, &[handled(1, 1), handled(1, 1)], &BTreeMap::new());
        assert!(r.violations.iter().any(|v| v.checker == "rpc.at_most_once"), "{r:?}");
    }

    #[test]
    fn waiting_past_the_timeout_fails() {
        let calls = History {
            ops: vec![call(
                0,
                CallOp::Echo { to: pid(2), message: "a".into() },
                0,
                Some((2500, Outcome::Info)),
            )],
        };
        assert!(!check_rpc(&calls, &[], &BTreeMap::new()).ok());
        // Never completed although its process lived on for 5 s.
        let calls = History { ops: vec![call(0, CallOp::Echo { to: pid(2), message: "a".into() }, 0, None)] };
        let beats: Vec<u64> = (0..100).map(|i| i * 50_000_000).collect();
        let alive = [(0u64, beats)].into_iter().collect();
        assert!(!check_rpc(&calls, &[], &alive).ok());
    }

    #[test]
    fn a_short_pause_counts_as_frozen_and_regular_beats_do_not() {
        // A 117 ms pause between beats at 1.000 s and 1.150 s.
        let mut beats: Vec<u64> = (0..=20).map(|i| i * 50_000_000).collect();
        beats.extend((23..=40).map(|i| i * 50_000_000));
        assert_eq!(frozen_ns(&beats, 0, 2_000_000_000), 100_000_000);
        // Beats 2 % late (drift) are not a freeze.
        let drifted: Vec<u64> = (0..=40).map(|i| i * 51_000_000).collect();
        assert_eq!(frozen_ns(&drifted, 0, 2_000_000_000), 0);
    }

    #[test]
    fn frozen_time_does_not_count() {
        // Heartbeats every 50 ms, except a 3 s freeze from 1 s to 4 s.
        let mut beats: Vec<u64> = (0..=20).map(|i| i * 50_000_000).collect();
        beats.extend((80..=120).map(|i| i * 50_000_000));
        assert_eq!(frozen_ns(&beats, 0, 6_000_000_000), 2_950_000_000);
        let calls = History {
            ops: vec![call(
                0,
                CallOp::Echo { to: pid(2), message: "a".into() },
                500,
                Some((4800, Outcome::Info)),
            )],
        };
        let alive = [(0u64, beats)].into_iter().collect();
        assert!(check_rpc(&calls, &[], &alive).ok());
    }

    #[test]
    fn frozen_time_over_a_window_equals_a_scan_of_every_gap() {
        let period = HEARTBEAT.as_nanos() as u64;
        let full_scan = |beats: &[u64], from: u64, to: u64| -> u64 {
            beats
                .windows(2)
                .filter(|w| w[1] - w[0] > period + period / 2)
                .map(|w| (w[1]).min(to).saturating_sub((w[0] + period).max(from)))
                .sum()
        };
        // Regular beats with freezes of 1 to 9 periods every few beats.
        let mut beats = Vec::new();
        let mut t = 0u64;
        for i in 0..200u64 {
            beats.push(t);
            t += period + if i % 7 == 3 { (i % 9 + 1) * period } else { 0 };
        }
        let step = period / 3;
        for from in (0..t + 2 * period).step_by(step as usize * 5) {
            for to in (from..t + 2 * period).step_by(step as usize * 11) {
                assert_eq!(frozen_ns(&beats, from, to), full_scan(&beats, from, to), "{from}..{to}");
            }
        }
        assert_eq!(frozen_ns(&[], 0, 10), 0);
        assert_eq!(frozen_ns(&[5], 0, 10), 0);
    }
}
