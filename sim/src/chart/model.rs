//! The chart as data: lanes, fault bands, marks, messages and operation bars on one time
//! axis, built from a charted run ([`ChartedRun`]). Building is deterministic: everything is
//! ordered by simulated time and recording order, never by hash order.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use scenarios::checker::ViolationClass;
use scenarios::faults::Fault;
use scenarios::history::OpView;

use super::record::{FaultEvent, FrameRecord};
use crate::runner::{ChartedRun, SeedResult};

/// At most this many messages are drawn (evenly spread over the run); the chart says how many
/// were left out. Thousands of arrows are already a thicket, and each costs ~200 bytes.
pub const MESSAGES_DRAWN_MAX: usize = 3_000;
/// Concurrent operations of one node are stacked in at most this many rows; more overlap
/// in the last row.
pub const OP_ROWS_MAX: usize = 6;

/// Knobs of a chart.
#[derive(Debug, Clone, Copy)]
pub struct ChartOptions {
    /// See [`MESSAGES_DRAWN_MAX`].
    pub messages_drawn_max: usize,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions { messages_drawn_max: MESSAGES_DRAWN_MAX }
    }
}

/// What a lane stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LaneKind {
    /// ZooKeeper, Redis, a SQL instance.
    Service,
    Server,
    Client,
    /// The runner's observer (final-state reads after the run).
    Observer,
    /// Operations of a process no node incarnation claims.
    Process,
}

impl LaneKind {
    pub fn name(self) -> &'static str {
        match self {
            LaneKind::Service => "service",
            LaneKind::Server => "server",
            LaneKind::Client => "client",
            LaneKind::Observer => "observer",
            LaneKind::Process => "process",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub name: String,
    pub kind: LaneKind,
    /// Rows of operation bars (at least 1).
    pub rows: usize,
}

/// A fault in force over some lanes for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    /// Lanes it covers, ascending; empty = every lane (network-wide faults).
    pub lanes: Vec<usize>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// [`scenarios::faults::FaultKind::name`] (`partition`, `kill`, ...).
    pub kind: &'static str,
    /// The fault as the plan prints it.
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    Kill,
    Restart,
    Pause,
    Resume,
    ClockJump,
    /// A planned fault that did not apply (its node was down).
    Skipped,
}

impl MarkKind {
    pub fn name(self) -> &'static str {
        match self {
            MarkKind::Kill => "kill",
            MarkKind::Restart => "restart",
            MarkKind::Pause => "pause",
            MarkKind::Resume => "resume",
            MarkKind::ClockJump => "clock-jump",
            MarkKind::Skipped => "skipped",
        }
    }
}

/// An instant on one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub lane: usize,
    pub at_ns: u64,
    pub kind: MarkKind,
    pub label: String,
}

/// A frame from one lane to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub from: usize,
    pub to: usize,
    pub sent_ns: u64,
    pub received_ns: u64,
    pub bytes: usize,
}

/// One history operation on the lane of the node that invoked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpBar {
    pub lane: usize,
    pub row: usize,
    pub op: OpView,
    /// Where the bar ends: its completion, or the end of the chart if it never completed.
    pub end_ns: u64,
    /// A violation names it.
    pub violating: bool,
}

/// A checker's finding, as the header lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartViolation {
    pub checker: String,
    pub class: &'static str,
    pub message: String,
    /// Operation ids it names (empty: the checker names none, nothing is highlighted).
    pub ops: Vec<usize>,
}

/// A picture of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// `scenario seed N [bug B]`.
    pub title: String,
    /// `pass`, `safety`, ... ([`crate::runner::Verdict::name`]).
    pub verdict: &'static str,
    pub trace_hash: String,
    pub heal_ns: u64,
    /// The plan's end of the run (clients stop).
    pub run_end_ns: u64,
    /// The end of the time axis: the last thing charted (the observer reads after the run).
    pub end_ns: u64,
    pub lanes: Vec<Lane>,
    pub bands: Vec<Band>,
    pub marks: Vec<Mark>,
    /// The messages drawn, by send time.
    pub messages: Vec<Message>,
    /// Frames delivered, drawn or not.
    pub messages_delivered: u64,
    /// Frames sent that were never received (lost with a killed node or cut at the end).
    pub messages_undelivered: u64,
    /// Frames over the recording cap ([`super::FRAMES_RECORDED_MAX`]), not in either count.
    pub messages_unrecorded: u64,
    pub ops: Vec<OpBar>,
    pub violations: Vec<ChartViolation>,
}

impl Chart {
    /// Delivered messages not drawn (over [`ChartOptions::messages_drawn_max`]).
    pub fn messages_omitted(&self) -> u64 {
        self.messages_delivered - self.messages.len() as u64
    }
}

/// Lanes by name, in chart order: services, servers, clients, then whatever else turns up.
struct Lanes {
    lanes: Vec<Lane>,
    index: BTreeMap<String, usize>,
}

impl Lanes {
    fn get_or_add(&mut self, name: &str, kind: LaneKind) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.lanes.push(Lane { name: name.to_string(), kind, rows: 1 });
        self.index.insert(name.to_string(), self.lanes.len() - 1);
        self.lanes.len() - 1
    }

    fn of(&mut self, node: &str) -> usize {
        let kind = if node == "observer" { LaneKind::Observer } else { LaneKind::Process };
        self.get_or_add(node, kind)
    }
}

fn ms(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// The nodes a fault acts on (empty: network-wide).
fn fault_nodes(fault: &Fault) -> Vec<&str> {
    match fault {
        Fault::Partition { a, b } | Fault::PartitionOneWay { from: a, to: b } => {
            a.iter().chain(b).map(String::as_str).collect()
        }
        Fault::CutLink { a, b } => vec![a, b],
        Fault::Kill { node }
        | Fault::Pause { node }
        | Fault::ClockSkew { node, .. }
        | Fault::ClockJump { node, .. }
        | Fault::ClockDrift { node, .. } => vec![node],
        Fault::PacketLoss { .. } | Fault::Latency { .. } => vec![],
    }
}

/// Pairs recorded frames into messages: each accepted connection side is matched with the
/// connecting side of the same address pair opened last before it (ephemeral ports are
/// reused, so an address pair alone is ambiguous), then the k-th frame one side sent with the
/// k-th frame the other received (simulated TCP is ordered and reliable while it lasts).
/// Returns the messages by send time and the number of frames sent but never received.
fn pair_frames(run: &ChartedRun) -> (Vec<(usize, usize, FrameRecord, FrameRecord)>, u64) {
    let conns = &run.log.conns;
    // Connecting sides by (local, peer), in opening order.
    let mut connecting: BTreeMap<(SocketAddr, SocketAddr), Vec<usize>> = BTreeMap::new();
    for (i, c) in conns.iter().enumerate() {
        if !c.accepted {
            connecting.entry((c.local, c.peer)).or_default().push(i);
        }
    }
    let mut partner: Vec<Option<usize>> = vec![None; conns.len()];
    for (i, c) in conns.iter().enumerate() {
        if !c.accepted {
            continue;
        }
        let Some(cands) = connecting.get(&(c.peer, c.local)) else { continue };
        if let Some(&j) =
            cands.iter().rev().find(|&&j| conns[j].opened_ns <= c.opened_ns && partner[j].is_none())
        {
            partner[i] = Some(j);
            partner[j] = Some(i);
        }
    }
    // Receptions by (receiving side, seq).
    let mut received: BTreeMap<(usize, u64), FrameRecord> = BTreeMap::new();
    for f in run.log.frames.iter().filter(|f| !f.sent) {
        received.insert((f.conn, f.seq), *f);
    }
    let mut out = Vec::new();
    let mut undelivered = 0u64;
    for f in run.log.frames.iter().filter(|f| f.sent) {
        match partner[f.conn].and_then(|p| received.get(&(p, f.seq)).map(|r| (p, *r))) {
            Some((p, r)) if r.at_ns >= f.at_ns => out.push((f.conn, p, *f, r)),
            _ => undelivered += 1,
        }
    }
    (out, undelivered)
}

/// The chart of a charted run.
pub fn build(result: &SeedResult, run: &ChartedRun, opts: ChartOptions) -> Chart {
    let topo = &run.topology;
    let mut lanes = Lanes { lanes: Vec::new(), index: BTreeMap::new() };
    for n in topo.service_names() {
        lanes.get_or_add(&n, LaneKind::Service);
    }
    for n in topo.server_names() {
        lanes.get_or_add(&n, LaneKind::Server);
    }
    for n in topo.client_names() {
        lanes.get_or_add(&n, LaneKind::Client);
    }
    let heal_ns = ms(run.plan.heal_at_ms);
    let run_end_ns = ms(run.plan.end_ms);

    // Faults: bands while in force, marks for instants.
    let mut bands = Vec::new();
    let mut marks = Vec::new();
    let mut open: BTreeMap<usize, Band> = BTreeMap::new();
    for (at, ev) in &run.log.faults {
        match ev {
            FaultEvent::Applied { index, fault, duration_ms } => {
                let mut covered: Vec<usize> = fault_nodes(fault).into_iter().map(|n| lanes.of(n)).collect();
                covered.sort_unstable();
                covered.dedup();
                let kind = fault.kind().name();
                match fault {
                    Fault::ClockJump { node, .. } => {
                        marks.push(Mark {
                            lane: lanes.of(node),
                            at_ns: *at,
                            kind: MarkKind::ClockJump,
                            label: fault.to_string(),
                        });
                        continue;
                    }
                    Fault::Kill { node } => marks.push(Mark {
                        lane: lanes.of(node),
                        at_ns: *at,
                        kind: MarkKind::Kill,
                        label: fault.to_string(),
                    }),
                    Fault::Pause { node } => marks.push(Mark {
                        lane: lanes.of(node),
                        at_ns: *at,
                        kind: MarkKind::Pause,
                        label: fault.to_string(),
                    }),
                    _ => {}
                }
                // Skew and drift hold until the heal; the rest until repaired (or the heal).
                let end = if *duration_ms > 0 { at + ms(*duration_ms) } else { heal_ns };
                open.insert(
                    *index,
                    Band { lanes: covered, start_ns: *at, end_ns: end, kind, label: fault.to_string() },
                );
            }
            FaultEvent::Skipped { fault } => {
                // A fault aimed at a role nobody played has no lane to mark.
                if let Some(&n) =
                    fault_nodes(fault).first().filter(|n| scenarios::faults::role_of(n).is_none())
                {
                    marks.push(Mark {
                        lane: lanes.of(n),
                        at_ns: *at,
                        kind: MarkKind::Skipped,
                        label: format!("skipped: {fault} (not up)"),
                    });
                }
            }
            FaultEvent::Repaired { index } => {
                if let Some(mut b) = open.remove(index) {
                    b.end_ns = *at;
                    bands.push(b);
                }
            }
            FaultEvent::Restarted { node } => marks.push(Mark {
                lane: lanes.of(node),
                at_ns: *at,
                kind: MarkKind::Restart,
                label: format!("restart {node}"),
            }),
            FaultEvent::Resumed { node } => marks.push(Mark {
                lane: lanes.of(node),
                at_ns: *at,
                kind: MarkKind::Resume,
                label: format!("resume {node}"),
            }),
            FaultEvent::Healed => {
                for (_, mut b) in std::mem::take(&mut open) {
                    b.end_ns = *at;
                    bands.push(b);
                }
            }
        }
    }
    for (_, mut b) in open {
        b.end_ns = b.end_ns.min(heal_ns);
        bands.push(b);
    }
    bands.sort_by(|a, b| (a.start_ns, &a.label).cmp(&(b.start_ns, &b.label)));

    // Messages.
    let (pairs, undelivered) = pair_frames(run);
    let mut all: Vec<Message> = pairs
        .iter()
        .map(|(s, r, fs, fr)| Message {
            from: lanes.of(&run.log.conns[*s].node),
            to: lanes.of(&run.log.conns[*r].node),
            sent_ns: fs.at_ns,
            received_ns: fr.at_ns,
            bytes: fs.bytes,
        })
        .collect();
    all.sort_by_key(|m| (m.sent_ns, m.received_ns, m.from, m.to));
    let delivered = all.len() as u64;
    let cap = opts.messages_drawn_max;
    let messages: Vec<Message> = if all.len() <= cap {
        all
    } else {
        // Exactly `cap` of them, evenly spread.
        let n = all.len();
        all.into_iter().enumerate().filter(|(i, _)| (i * cap) % n < cap).map(|(_, m)| m).collect()
    };

    // Operations, on the lane of the node incarnation that invoked them.
    let process_node: BTreeMap<u64, &str> =
        run.log.incarnations.iter().map(|(node, p, _)| (*p, node.as_str())).collect();
    let violating: std::collections::BTreeSet<usize> =
        run.report.iter().flat_map(|r| r.violations.iter().flat_map(|v| v.ops.iter().copied())).collect();
    let mut end_ns = run_end_ns.max(heal_ns);
    for o in &run.ops {
        end_ns = end_ns.max(o.invoke_ns).max(o.complete_ns.unwrap_or(0));
    }
    for m in &messages {
        end_ns = end_ns.max(m.received_ns);
    }
    let mut ops: Vec<OpBar> = run
        .ops
        .iter()
        .map(|o| {
            let lane = match process_node.get(&o.process) {
                Some(node) => lanes.of(node),
                None if o.invoke_ns >= run_end_ns => lanes.get_or_add("observer", LaneKind::Observer),
                None => lanes.get_or_add(&format!("process {}", o.process), LaneKind::Process),
            };
            OpBar {
                lane,
                row: 0,
                op: o.clone(),
                end_ns: o.complete_ns.unwrap_or(end_ns),
                violating: violating.contains(&o.id),
            }
        })
        .collect();
    ops.sort_by_key(|b| (b.lane, b.op.invoke_ns, b.op.id));
    // Rows: each bar in the first row free at its start (greedy interval partitioning).
    let mut row_ends: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for b in &mut ops {
        let ends = row_ends.entry(b.lane).or_default();
        let row = match ends.iter().position(|&e| e <= b.op.invoke_ns) {
            Some(r) => r,
            None if ends.len() < OP_ROWS_MAX => {
                ends.push(0);
                ends.len() - 1
            }
            None => ends.len() - 1,
        };
        ends[row] = ends[row].max(b.end_ns).max(b.op.invoke_ns + 1);
        b.row = row;
    }
    for (lane, ends) in row_ends {
        lanes.lanes[lane].rows = ends.len().max(1);
    }

    let violations = match &run.report {
        Some(r) => r
            .violations
            .iter()
            .map(|v| ChartViolation {
                checker: v.checker.clone(),
                class: match v.class {
                    ViolationClass::Safety => "safety",
                    ViolationClass::Liveness => "liveness",
                },
                message: v.message.clone(),
                ops: v.ops.clone(),
            })
            .collect(),
        None => result
            .violations
            .iter()
            .map(|m| ChartViolation {
                checker: "runner".into(),
                class: "crash",
                message: m.clone(),
                ops: vec![],
            })
            .collect(),
    };
    let mut title = format!("{} seed {}", result.scenario, result.seed);
    if let Some(b) = &result.bug {
        title.push_str(&format!(" bug {b}"));
    }
    Chart {
        title,
        verdict: result.verdict.name(),
        trace_hash: result.trace_hash.clone(),
        heal_ns,
        run_end_ns,
        end_ns,
        lanes: lanes.lanes,
        bands,
        marks,
        messages,
        messages_delivered: delivered,
        messages_undelivered: undelivered,
        messages_unrecorded: run.log.frames_unrecorded,
        ops,
        violations,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use scenarios::checker::Report;
    use scenarios::faults::FaultPlan;
    use scenarios::history::{OpView, ViewOutcome};
    use scenarios::Topology;

    use super::*;
    use crate::chart::record::{ChartLog, ConnRecord, FaultEvent, FrameRecord};
    use crate::runner::{ChartedRun, SeedResult, Verdict};

    const MS: u64 = 1_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn conn(node: &str, local: &str, peer: &str, accepted: bool, opened_ms: u64) -> ConnRecord {
        ConnRecord {
            node: node.into(),
            local: addr(local),
            peer: addr(peer),
            accepted,
            opened_ns: opened_ms * MS,
        }
    }

    fn frame(conn: usize, sent: bool, seq: u64, at_ms: u64) -> FrameRecord {
        FrameRecord { conn, sent, seq, at_ns: at_ms * MS, bytes: 10 }
    }

    fn op(id: usize, process: u64, invoke_ms: u64, complete_ms: Option<u64>) -> OpView {
        OpView {
            id,
            process,
            name: "Write".into(),
            detail: "Write(\"x\")".into(),
            outcome: if complete_ms.is_some() { ViewOutcome::Ok } else { ViewOutcome::Info },
            result: "Written".into(),
            invoke_ns: invoke_ms * MS,
            complete_ns: complete_ms.map(|t| t * MS),
        }
    }

    /// `redis` and `client-0`; the client connects twice from the same ephemeral port.
    fn run() -> (SeedResult, ChartedRun) {
        let topo = Topology {
            zookeeper: false,
            redis: Some(scenarios::RedisSpec { persistent: true, stale_read_probability: 0.0 }),
            sql: None,
            servers: vec![],
            clients: 1,
        };
        let plan = FaultPlan {
            seed: 1,
            heal_at_ms: 100,
            end_ms: 150,
            liveness_bound_ms: 50,
            faults: vec![],
            swarm: None,
        };
        let c = "10.0.1.1:1";
        let r = "10.0.0.2:6379";
        let log = ChartLog {
            conns: vec![
                conn("client-0", c, r, false, 1),
                conn("redis", r, c, true, 2),
                conn("client-0", c, r, false, 40),
                conn("redis", r, c, true, 41),
            ],
            frames: vec![
                frame(0, true, 0, 3),
                frame(1, false, 0, 5),
                frame(1, true, 0, 6),
                frame(0, true, 1, 20), // lost with the kill
                frame(2, true, 0, 42),
                frame(3, false, 0, 44),
            ],
            frames_unrecorded: 0,
            incarnations: vec![("client-0".into(), 0, 0), ("client-0".into(), 1, 35)],
            faults: vec![
                (
                    10 * MS,
                    FaultEvent::Applied {
                        index: 0,
                        fault: Fault::Kill { node: "client-0".into() },
                        duration_ms: 25,
                    },
                ),
                (35 * MS, FaultEvent::Restarted { node: "client-0".into() }),
                (35 * MS, FaultEvent::Repaired { index: 0 }),
                (
                    50 * MS,
                    FaultEvent::Applied {
                        index: 1,
                        fault: Fault::Partition { a: vec!["client-0".into()], b: vec!["redis".into()] },
                        duration_ms: 500,
                    },
                ),
                (
                    60 * MS,
                    FaultEvent::Applied {
                        index: 2,
                        fault: Fault::ClockJump { node: "redis".into(), delta_ms: -5 },
                        duration_ms: 0,
                    },
                ),
                (100 * MS, FaultEvent::Healed),
            ],
        };
        let mut report = Report::default();
        report.violation_with_ops("linearizability", "key <k> & co", vec![2]);
        let ops = vec![
            op(0, 0, 3, Some(5)),
            op(1, 0, 4, None),
            op(2, 1, 42, Some(44)),
            op(3, u64::MAX, 160, Some(161)),
        ];
        let result = SeedResult {
            scenario: "kv_register".into(),
            seed: 1,
            bug: Some("stale-read".into()),
            verdict: Verdict::Violation,
            violations: vec!["[linearizability] key <k> & co".into()],
            kinds: vec![],
            ops: 0,
            counters: BTreeMap::new(),
            probes: BTreeMap::new(),
            trace_hash: "ab".into(),
            trace_lines: 1,
            frames: 6,
            sim_secs: 0.2,
            wall_secs: 0.0,
        };
        (result, ChartedRun { topology: topo, plan, report: Some(report), ops, log })
    }

    #[test]
    fn frames_pair_up_per_connection_even_when_a_port_is_reused() {
        let (result, run) = run();
        let c = build(&result, &run, ChartOptions::default());
        let names: Vec<&str> = c.lanes.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["redis", "client-0", "observer"]);
        let m: Vec<(usize, usize, u64, u64)> =
            c.messages.iter().map(|m| (m.from, m.to, m.sent_ns / MS, m.received_ns / MS)).collect();
        // Redis's answer at 6 ms and the frame sent before the kill never arrived.
        assert_eq!(m, [(1, 0, 3, 5), (1, 0, 42, 44)]);
        assert_eq!((c.messages_delivered, c.messages_undelivered), (2, 2));
    }

    #[test]
    fn faults_become_bands_until_repaired_or_healed_and_instants_become_marks() {
        let (result, run) = run();
        let c = build(&result, &run, ChartOptions::default());
        let bands: Vec<(&str, Vec<usize>, u64, u64)> =
            c.bands.iter().map(|b| (b.kind, b.lanes.clone(), b.start_ns / MS, b.end_ns / MS)).collect();
        assert_eq!(bands, [("kill", vec![1], 10, 35), ("partition", vec![0, 1], 50, 100)]);
        let marks: Vec<(usize, MarkKind, u64)> =
            c.marks.iter().map(|m| (m.lane, m.kind, m.at_ns / MS)).collect();
        assert_eq!(
            marks,
            [(1, MarkKind::Kill, 10), (1, MarkKind::Restart, 35), (0, MarkKind::ClockJump, 60)]
        );
    }

    #[test]
    fn operations_sit_on_their_incarnations_node_in_rows_and_named_ones_are_violating() {
        let (result, run) = run();
        let c = build(&result, &run, ChartOptions::default());
        let ops: Vec<(usize, usize, usize, bool, u64)> =
            c.ops.iter().map(|o| (o.op.id, o.lane, o.row, o.violating, o.end_ns / MS)).collect();
        // Op 1 never completed: its bar runs to the end of the axis (the observer's last read).
        assert_eq!(
            ops,
            [(0, 1, 0, false, 5), (1, 1, 1, false, 161), (2, 1, 0, true, 44), (3, 2, 0, false, 161)]
        );
        assert_eq!(c.lanes[1].rows, 2);
        assert_eq!(c.violations[0].ops, [2]);
        assert_eq!(c.title, "kv_register seed 1 bug stale-read");
    }

    #[test]
    fn over_the_cap_messages_are_drawn_evenly_spread_and_the_rest_counted() {
        let (result, run) = run();
        let c = build(&result, &run, ChartOptions { messages_drawn_max: 1 });
        assert_eq!(c.messages.len(), 1);
        assert_eq!(c.messages_omitted(), 1);
    }
}
