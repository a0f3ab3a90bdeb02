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
//!
//! Runs live too: the callers are the servers, so everything the checks read (the calls with
//! their outcomes, the handler executions, the heartbeats) is also reported as [`Evidence`]
//! (`RpcInvoked`, `RpcCompleted`, `RpcHandled`, `RpcBeats`) and rebuilt by
//! [`ScenarioRun::absorb`] in the runner's process.

mod check;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::cluster::{ClusterBugs, PeerDirectory, PeerId};
use engine::env::RandExt;
use engine::rpc::messages::{EchoReply, EchoRequest, OrderedReply, OrderedRequest};
use engine::rpc::{CallOptions, Rpc, RpcBugs, RpcConfig, RpcError};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use self::check::check_rpc;
use super::membership::{cluster_config, join_retrying, servers};
use crate::checker::{liveness_after_heal, Report};
use crate::evidence::{Evidence, EvidenceTap};
use crate::faults::{FaultKind, FaultSpace};
use crate::history::{OpHandle, Outcome, ProcessId, Recorder, TimeSource};
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

/// Runs live too: every call, completion, handler execution and heartbeat is also reported as
/// [`Evidence`] (`RpcInvoked`, `RpcCompleted`, `RpcHandled`, `RpcBeats`).
const META: ScenarioMeta = ScenarioMeta {
    name: "rpc",
    description:
        "echo and ordered per-player RPC between servers under loss, latency, partitions and restarts",
    bugs: BUGS,
    runs_live: true,
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
            absorbed: Mutex::new(Absorbed::default()),
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

/// Heartbeats per `RpcBeats` line of a live run's evidence: a line per beat would be a quarter
/// of the lines (2,622 of 10,329 in a 16 s run). A kill loses the beats not yet written, which can only
/// shorten the wait the check sees for a call its server never completed (see [`BeatTap`]).
const BEATS_PER_LINE: usize = 20;

/// The gap (ns) between two heartbeats beyond which the server was frozen in between: half a
/// period past the period (a pause of 117 ms gave a 150 ms gap, which an earlier 3-period
/// threshold took for none: `sim run rpc --seeds 5650..5651`). Drift stretches a gap by at
/// most 2 %.
const FREEZE_GAP_NS: u64 = HEARTBEAT.as_nanos() as u64 * 3 / 2;

#[derive(Default)]
struct Shared {
    handled: Vec<Handled>,
    /// Heartbeat times (ns) of every server process.
    alive: BTreeMap<ProcessId, Vec<u64>>,
}

/// A live run's heartbeats on their way to the evidence tap, [`BEATS_PER_LINE`] to a line.
///
/// A beat that ends a freeze (more than [`FREEZE_GAP_NS`] after the one before) is written at
/// once, with those before it: a call that timed out while its server was stopped completes
/// when the server resumes, and if a kill then came before the next line, the check would
/// see the wait without the freeze that excuses it. Beats lost to a kill are otherwise only
/// the last ones, which shorten (never lengthen) the wait of a call left open.
struct BeatTap {
    tap: EvidenceTap,
    server: ProcessId,
    /// The last beat (written or not) and the beats not written yet.
    pending: Mutex<(Option<u64>, Vec<u64>)>,
}

impl BeatTap {
    fn beat(&self, t_ns: u64) {
        let mut pending = self.pending.lock().expect("beats");
        let (last, beats) = &mut *pending;
        let ends_freeze = last.is_some_and(|l| t_ns - l > FREEZE_GAP_NS);
        *last = Some(t_ns);
        beats.push(t_ns);
        if ends_freeze || beats.len() >= BEATS_PER_LINE {
            (self.tap)(&Evidence::RpcBeats { server: self.server, t_ns: std::mem::take(beats) });
        }
    }

    /// Writes the beats not written yet (at the end of the run).
    fn flush(&self) {
        let mut pending = self.pending.lock().expect("beats");
        if !pending.1.is_empty() {
            (self.tap)(&Evidence::RpcBeats { server: self.server, t_ns: std::mem::take(&mut pending.1) });
        }
    }
}

/// A server incarnation's calls on their way to the history: recorded in the run's `calls`
/// and, in a live run, also reported through the tap with the same times, so the runner's
/// run rebuilds the same history ([`ScenarioRun::absorb`]).
#[derive(Clone)]
struct CallLog {
    calls: Recorder<CallOp, CallResult>,
    now: TimeSource,
    process: ProcessId,
    tap: Option<EvidenceTap>,
    /// Numbers this incarnation's calls in its reports, so a completion names its invocation.
    next_call: Arc<AtomicU64>,
}

/// One call in flight: its place in the history and its number in the reports.
struct Call {
    handle: OpHandle,
    number: u64,
}

impl CallLog {
    /// Records (and reports) `op`, before it is sent.
    fn invoke(&self, op: CallOp) -> Call {
        let t_ns = (self.now)();
        let number = self.next_call.fetch_add(1, Ordering::Relaxed);
        if let Some(tap) = &self.tap {
            tap(&Evidence::RpcInvoked { caller: self.process, call: number, op: op.clone(), t_ns });
        }
        Call { handle: self.calls.invoke_at(self.process, op, t_ns), number }
    }

    fn complete(&self, call: Call, r: Result<CallResult, RpcError>) {
        let outcome = match r {
            Ok(v) => Outcome::Ok(v),
            // A timeout may hide an executed call; everything else certainly did not run it.
            Err(RpcError::Timeout) => Outcome::Info,
            Err(_) => Outcome::Fail,
        };
        let t_ns = (self.now)();
        if let Some(tap) = &self.tap {
            tap(&Evidence::RpcCompleted {
                caller: self.process,
                call: call.number,
                outcome: outcome.clone(),
                t_ns,
            });
        }
        self.calls.complete_at(call.handle, outcome, t_ns);
    }
}

/// What the runner's run rebuilt from other processes' reports besides the history.
#[derive(Default)]
struct Absorbed {
    /// The calls reported invoked and not (yet) completed, by (caller, call number).
    open: BTreeMap<(ProcessId, u64), OpHandle>,
    /// Completions of calls never reported invoked: the evidence is not what the servers
    /// wrote, and the check says so rather than drop them.
    unmatched: Vec<String>,
}

struct Run {
    bugs: RpcBugs,
    now: TimeSource,
    calls: Recorder<CallOp, CallResult>,
    shared: Arc<Mutex<Shared>>,
    absorbed: Mutex<Absorbed>,
}

impl ScenarioRun for Run {
    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.calls.snapshot().views()
    }

    fn client(&self, _ctx: ClientCtx) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn server(&self, ctx: ServerCtx) -> BoxFuture<'static, ()> {
        let (bugs, now, shared) = (self.bugs, self.now.clone(), self.shared.clone());
        let calls = CallLog {
            calls: self.calls.clone(),
            now: now.clone(),
            process: ctx.process,
            tap: ctx.tap.clone(),
            next_call: Arc::default(),
        };
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
                let (shared, tap) = (shared.clone(), ctx.tap.clone());
                rpc.register_handler("echo", move |info, req: EchoRequest| {
                    let h =
                        Handled { receiver: me, sender: info.sender, xid: info.xid.seq, key: None, seq: 0 };
                    record_handled(&shared, &tap, h);
                    async move { Ok(EchoReply { message: req.message }) }
                });
            }
            {
                let (shared, tap, clock, rand) =
                    (shared.clone(), ctx.tap.clone(), ctx.env.clock.clone(), ctx.env.rand.clone());
                rpc.register_handler("ordered", move |info, req: OrderedRequest| {
                    let (shared, tap, clock) = (shared.clone(), tap.clone(), clock.clone());
                    let work = Duration::from_millis(rand.gen_range(0..20));
                    async move {
                        // Handlers do async work; the next call of a key must wait for it.
                        clock.sleep(work).await;
                        let h = Handled {
                            receiver: me,
                            sender: info.sender,
                            xid: info.xid.seq,
                            key: info.order_key.clone(),
                            seq: req.seq,
                        };
                        record_handled(&shared, &tap, h);
                        Ok(OrderedReply { seq: req.seq })
                    }
                });
            }
            let beats = ctx.tap.clone().map(|tap| {
                Arc::new(BeatTap { tap, server: ctx.process, pending: Mutex::new((None, Vec::new())) })
            });
            {
                let (shared, clock, now, process, beats) =
                    (shared.clone(), ctx.env.clock.clone(), now.clone(), ctx.process, beats.clone());
                let beat = async move {
                    loop {
                        let t_ns = now();
                        shared.lock().expect("shared").alive.entry(process).or_default().push(t_ns);
                        if let Some(beats) = &beats {
                            beats.beat(t_ns);
                        }
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
                    let call = calls.invoke(CallOp::Echo { to, message: message.clone() });
                    let opts = CallOptions { timeout: Some(CALL_TIMEOUT), order_key: None };
                    let r = rpc.call::<_, EchoReply>(to, "echo", &EchoRequest { message }, opts).await;
                    calls.complete(call, r.map(|rep| CallResult::Echo(rep.message)));
                } else {
                    // A burst of calls for one player, all in flight at once.
                    let key = format!("player-{}", ctx.env.rand.gen_range(0..ORDER_KEYS));
                    let burst = ctx.env.rand.gen_range(1..5);
                    let mut futs = Vec::new();
                    for _ in 0..burst {
                        let seq = next_seq.entry((to, key.clone())).or_insert(0);
                        *seq += 1;
                        let seq = *seq;
                        let call = calls.invoke(CallOp::Ordered { to, key: key.clone(), seq });
                        let opts = CallOptions { timeout: Some(CALL_TIMEOUT), order_key: Some(key.clone()) };
                        let req = OrderedRequest {
                            order_key: key.clone(),
                            seq,
                            payload: format!("p{}", ctx.process),
                        };
                        let (rpc, calls) = (rpc.clone(), calls.clone());
                        futs.push(async move {
                            let r = rpc.call::<_, OrderedReply>(to, "ordered", &req, opts).await;
                            calls.complete(call, r.map(|rep| CallResult::Ordered(rep.seq)));
                        });
                    }
                    futures::future::join_all(futs).await;
                }
                ctx.env.clock.sleep(Duration::from_millis(ctx.env.rand.gen_range(0..100))).await;
            }
            if let Some(beats) = &beats {
                beats.flush();
            }
        }
        .boxed()
    }

    fn absorb(&self, evidence: Evidence) -> bool {
        match evidence {
            Evidence::RpcInvoked { caller, call, op, t_ns } => {
                let handle = self.calls.invoke_at(caller, op, t_ns);
                self.absorbed.lock().expect("absorbed").open.insert((caller, call), handle);
            }
            Evidence::RpcCompleted { caller, call, outcome, t_ns } => {
                let mut absorbed = self.absorbed.lock().expect("absorbed");
                match absorbed.open.remove(&(caller, call)) {
                    Some(handle) => self.calls.complete_at(handle, outcome, t_ns),
                    None => absorbed.unmatched.push(format!(
                        "process {caller} reported call {call} completed ({outcome:?} at {:.3}s) but never invoked",
                        t_ns as f64 / 1e9
                    )),
                }
            }
            Evidence::RpcHandled { receiver, sender, xid, key, seq } => {
                self.shared.lock().expect("shared").handled.push(Handled { receiver, sender, xid, key, seq })
            }
            Evidence::RpcBeats { server, t_ns } => {
                self.shared.lock().expect("shared").alive.entry(server).or_default().extend(t_ns)
            }
            _ => return false,
        }
        true
    }

    fn check(&self, _env: engine::env::Env, phases: Phases) -> BoxFuture<'static, Report> {
        let (calls, shared) = (self.calls.snapshot(), self.shared.clone());
        let unmatched = std::mem::take(&mut self.absorbed.lock().expect("absorbed").unmatched);
        async move {
            let shared = shared.lock().expect("shared");
            let mut report = check_rpc(&calls, &shared.handled, &shared.alive);
            report.merge(liveness_after_heal(&calls, &phases, |_| true));
            for message in unmatched {
                report.violation("rpc.evidence", message);
            }
            report
        }
        .boxed()
    }
}

/// Records one handler execution, and reports it in a live run. Reported under the records'
/// lock, so a server's evidence lists its executions in the order they are recorded here.
fn record_handled(shared: &Mutex<Shared>, tap: &Option<EvidenceTap>, h: Handled) {
    let mut shared = shared.lock().expect("shared");
    if let Some(tap) = tap {
        tap(&Evidence::RpcHandled {
            receiver: h.receiver,
            sender: h.sender,
            xid: h.xid,
            key: h.key.clone(),
            seq: h.seq,
        });
    }
    shared.handled.push(h);
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::check::frozen_ns;
    use super::check::tests::{handled, pid};

    /// A run as `RpcScenario::start` makes it, with its fields in reach.
    fn run(now: TimeSource) -> Run {
        Run {
            bugs: RpcBugs::default(),
            now: now.clone(),
            calls: Recorder::new(now),
            shared: Arc::new(Mutex::new(Shared::default())),
            absorbed: Mutex::new(Absorbed::default()),
        }
    }

    /// A tap that keeps what it is given.
    fn keeping_tap() -> (EvidenceTap, Arc<Mutex<Vec<Evidence>>>) {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let k = kept.clone();
        (Arc::new(move |ev: &Evidence| k.lock().unwrap().push(ev.clone())), kept)
    }

    #[test]
    fn a_live_servers_reports_rebuild_its_calls_and_handlings_in_the_runners_run() {
        let t = Arc::new(AtomicU64::new(1_000));
        let t2 = t.clone();
        let now: TimeSource = Arc::new(move || t2.load(Ordering::Relaxed));
        // The runner's clock reads another time: every time it records must be the server's.
        let (server, runner) = (run(now.clone()), run(Arc::new(|| 77)));
        let (tap, kept) = keeping_tap();
        let log = CallLog {
            calls: server.calls.clone(),
            now: now.clone(),
            process: 3,
            tap: Some(tap.clone()),
            next_call: Arc::default(),
        };
        let echo = log.invoke(CallOp::Echo { to: pid(2), message: "p3-1".into() });
        t.store(2_000, Ordering::Relaxed);
        let ordered = log.invoke(CallOp::Ordered { to: pid(2), key: "player-0".into(), seq: 1 });
        let refused = log.invoke(CallOp::Ordered { to: pid(2), key: "player-0".into(), seq: 2 });
        let _in_flight_when_killed = log.invoke(CallOp::Echo { to: pid(4), message: "p3-2".into() });
        t.store(5_000, Ordering::Relaxed);
        log.complete(ordered, Err(RpcError::Timeout));
        log.complete(echo, Ok(CallResult::Echo("p3-1".into())));
        log.complete(refused, Err(RpcError::UnknownPeer(pid(2))));
        record_handled(&server.shared, &Some(tap.clone()), handled(7, 1));
        record_handled(&server.shared, &Some(tap), handled(8, 2));

        for ev in kept.lock().unwrap().drain(..) {
            assert!(runner.absorb(ev));
        }
        let (theirs, ours) = (server.calls.snapshot(), runner.calls.snapshot());
        assert_eq!(ours, theirs);
        assert_eq!(ours.ops[3].completion, None, "the call in flight at the kill stays open");
        assert_eq!(ours.ops[1].completion, Some((5_000, Outcome::Info)));
        assert_eq!(runner.shared.lock().unwrap().handled, server.shared.lock().unwrap().handled);
        assert_eq!(runner.absorbed.lock().unwrap().open.len(), 1);
        assert!(!runner.absorb(Evidence::WallRead { wall_ms: 1, t_ns: 1 }), "not rpc's evidence");
    }

    #[test]
    fn a_completion_reported_without_its_invocation_is_kept_for_the_check_to_fail() {
        let runner = run(Arc::new(|| 0));
        assert!(runner.absorb(Evidence::RpcCompleted {
            caller: 1,
            call: 4,
            outcome: Outcome::Fail,
            t_ns: 10
        }));
        // Numbers are per caller: call 4 of process 2 does not complete call 4 of process 1.
        assert!(runner.absorb(Evidence::RpcInvoked {
            caller: 2,
            call: 4,
            op: CallOp::Echo { to: pid(2), message: "a".into() },
            t_ns: 5
        }));
        assert!(runner.calls.snapshot().ops[0].completion.is_none());
        let unmatched = &runner.absorbed.lock().unwrap().unmatched;
        assert_eq!(unmatched.len(), 1);
        assert!(unmatched[0].contains("process 1 reported call 4 completed"), "{unmatched:?}");
    }

    #[test]
    fn beats_go_out_a_line_per_batch_and_the_beat_ending_a_freeze_at_once() {
        let (tap, kept) = keeping_tap();
        let runner = run(Arc::new(|| 0));
        let beats = BeatTap { tap, server: 5, pending: Mutex::new((None, Vec::new())) };
        let period = HEARTBEAT.as_nanos() as u64;
        let mut all: Vec<u64> = (0..BEATS_PER_LINE as u64 + 3).map(|i| i * period).collect();
        all.iter().for_each(|&b| beats.beat(b));
        let lines = |kept: &Mutex<Vec<Evidence>>| kept.lock().unwrap().len();
        assert_eq!(lines(&kept), 1, "one full line, three beats pending");
        // Frozen for 2 s: the first beat after it goes out at once, with the three before.
        let resumed = all.last().unwrap() + 2_000_000_000;
        beats.beat(resumed);
        all.push(resumed);
        assert_eq!(lines(&kept), 2);
        beats.beat(resumed + period);
        all.push(resumed + period);
        assert_eq!(lines(&kept), 2);
        beats.flush();
        beats.flush();
        assert_eq!(lines(&kept), 3, "the flush writes the pending beat, a second flush nothing");
        for ev in kept.lock().unwrap().drain(..) {
            assert!(runner.absorb(ev));
        }
        let alive = &runner.shared.lock().unwrap().alive;
        assert_eq!(alive[&5], all);
        assert_eq!(frozen_ns(&alive[&5], 0, resumed), 2_000_000_000 - period);
    }
}
