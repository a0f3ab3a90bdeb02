//! `replay --chart`: the picture of a run. A snapshot of the chart of one short fixed run
//! (seed 3 of `kv_register` under a hand-written two-second plan that has one fault of each
//! drawn kind) pins the page byte for byte; charting must not change the run (same trace
//! hash as uncharted); and the chart of a planted bug's failing seed outlines the operations
//! the linearizability checker names.

use scenarios::faults::{Fault, FaultPlan, TimedFault};
use scenarios::Workload;
use sim::chart::{chart_run, ChartOptions};
use sim::runner::{plan_for, run_with_plan, RunOptions, Verdict};

/// Few messages, so that the snapshot stays readable.
const SNAPSHOT_MESSAGES: usize = 40;

fn short_plan() -> FaultPlan {
    let node = |n: &str| n.to_string();
    let f = TimedFault::new;
    FaultPlan {
        seed: 3,
        heal_at_ms: 1_400,
        end_ms: 2_000,
        liveness_bound_ms: 500,
        faults: vec![
            f(150, 400, Fault::Partition { a: vec![node("client-0")], b: vec![node("redis")] }),
            f(300, 500, Fault::Kill { node: node("client-1") }),
            f(450, 0, Fault::ClockJump { node: node("client-2"), delta_ms: -2_000 }),
            f(600, 300, Fault::Pause { node: node("redis") }),
            f(700, 0, Fault::ClockSkew { node: node("client-3"), offset_ms: 800 }),
            f(1_000, 200, Fault::PacketLoss { rate: 0.2 }),
        ],
        swarm: None,
    }
}

fn kv_register() -> std::sync::Arc<dyn scenarios::Scenario> {
    scenarios::lookup("kv_register", None).expect("kv_register exists")
}

#[test]
fn the_chart_of_a_short_fixed_run_matches_its_snapshot() {
    let s = kv_register();
    let topo = s.topology(None);
    let opts = ChartOptions { messages_drawn_max: SNAPSHOT_MESSAGES };
    let (_, chart, html) =
        chart_run(&*s, 3, None, topo.clone(), short_plan(), Workload::default(), RunOptions::default(), opts);
    assert!(chart.ops.len() > 20, "{} ops", chart.ops.len());
    assert_eq!(chart.messages.len(), SNAPSHOT_MESSAGES);
    assert!(chart.messages_omitted() > 0);
    let (_, _, again) =
        chart_run(&*s, 3, None, topo, short_plan(), Workload::default(), RunOptions::default(), opts);
    assert!(html == again, "the same run charted twice gives different pages");
    insta::assert_snapshot!("kv_register_seed_3_short_plan", html);
}

#[test]
fn charting_a_run_leaves_its_trace_hash_unchanged() {
    let s = kv_register();
    let topo = s.topology(None);
    let plain =
        run_with_plan(&*s, 3, None, topo.clone(), short_plan(), Workload::default(), RunOptions::default());
    let (charted, _, _) = chart_run(
        &*s,
        3,
        None,
        topo,
        short_plan(),
        Workload::default(),
        RunOptions::default(),
        ChartOptions::default(),
    );
    assert_eq!(plain.trace_hash, charted.trace_hash);
    assert_eq!((plain.verdict, plain.frames), (charted.verdict, charted.frames));
}

/// A seed of `kv_register --bug stale-read` that fails (found with
/// `sim run kv_register --bug stale-read --seeds 0..20`).
const STALE_READ_FAILING_SEED: u64 = 0;

#[test]
fn the_chart_of_a_planted_bug_outlines_the_operations_its_violation_names() {
    let bug = Some("stale-read");
    let s = scenarios::lookup("kv_register", bug).expect("kv_register has stale-read");
    let (topo, plan) = plan_for(&*s, STALE_READ_FAILING_SEED, bug);
    let (r, chart, html) = chart_run(
        &*s,
        STALE_READ_FAILING_SEED,
        bug,
        topo,
        plan,
        Workload::default(),
        RunOptions::default(),
        ChartOptions::default(),
    );
    assert_eq!(r.verdict, Verdict::Violation, "{:?}", r.violations);
    let named: Vec<usize> = chart.violations.iter().flat_map(|v| v.ops.iter().copied()).collect();
    assert!(!named.is_empty(), "the linearizability violation names operations: {:?}", chart.violations);
    let outlined: Vec<usize> = chart.ops.iter().filter(|o| o.violating).map(|o| o.op.id).collect();
    assert!(!outlined.is_empty());
    assert!(outlined.iter().all(|id| named.contains(id)));
    assert!(html.contains(" viol\" data-op=\""), "an outlined bar in the page");
    assert!(html.contains("[linearizability]"), "the violation listed in the header");
}
