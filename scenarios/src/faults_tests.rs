//! Unit tests of `faults.rs` (fault spaces, plan generation, validation), in a file of
//! their own to keep `faults.rs` under 800 lines.

use super::*;
use crate::scenario::Nodes;

fn space() -> FaultSpace {
    let names: Vec<String> = ["zk", "redis", "client-0", "client-1"].iter().map(|s| s.to_string()).collect();
    FaultSpace {
        kill: names.clone(),
        pause: names.clone(),
        partition: names.clone(),
        clock: names,
        network: true,
        chaos_ms: 20_000,
        heal_ms: 10_000,
        liveness_bound_ms: 8_000,
        faults_min: 4,
        faults_max: 10,
        fault_ms_max: 8_000,
        clock_ms_max: 5_000,
        drift_ppm_max: 50_000,
        weights: BTreeMap::new(),
        roles: BTreeMap::new(),
        aimed_ms: BTreeMap::new(),
        aimed_wait_ms: BTreeMap::new(),
    }
}

fn with_roles(kinds: &[FaultKind]) -> FaultSpace {
    let mut s = space();
    for k in kinds {
        s.roles.insert(*k, vec!["holder".to_string()]);
    }
    s
}

fn nodes_named(f: &Fault) -> Vec<String> {
    let mut v = Vec::new();
    f.map_nodes(|n| {
        v.push(n.to_string());
        Some(n.to_string())
    });
    v
}

#[test]
fn a_space_with_roles_aims_about_half_of_those_kinds_at_them_and_no_other_kind() {
    let s = with_roles(&[FaultKind::Pause, FaultKind::Partition]);
    let (mut pauses, mut aimed_pauses, mut partitions, mut aimed_partitions) = (0, 0, 0, 0);
    for seed in 0..300 {
        for t in FaultPlan::generate(seed, &s).faults {
            let aimed = nodes_named(&t.fault).iter().any(|n| n == "@holder");
            match &t.fault {
                Fault::Pause { .. } => {
                    pauses += 1;
                    aimed_pauses += u32::from(aimed);
                }
                Fault::Partition { a, b } => {
                    partitions += 1;
                    if aimed {
                        aimed_partitions += 1;
                        assert_eq!(a, &vec!["@holder".to_string()], "the role alone on its side");
                        assert_eq!(b, &s.partition, "every partitionable node on the other");
                    }
                }
                other => assert!(!aimed, "{other} is not aimed at a role in this space"),
            }
        }
    }
    for (aimed, all) in [(aimed_pauses, pauses), (aimed_partitions, partitions)] {
        let share = f64::from(aimed) / f64::from(all);
        assert!((0.4..0.6).contains(&share), "{aimed} of {all} aimed");
    }
}

#[test]
fn aimed_faults_with_a_window_last_within_it_and_blind_ones_as_before() {
    let blind_only = with_roles(&[FaultKind::Pause]);
    let mut windowed = blind_only.clone();
    windowed.aimed_ms.insert(FaultKind::Pause, (2_500, 5_500));
    let (mut aimed, mut outside_window_blind) = (0, 0);
    for seed in 0..300 {
        let (before, after) = (FaultPlan::generate(seed, &blind_only), FaultPlan::generate(seed, &windowed));
        assert_eq!(before.faults.len(), after.faults.len());
        for (b, a) in before.faults.iter().zip(&after.faults) {
            assert_eq!((b.at_ms, &b.fault), (a.at_ms, &a.fault), "the window moves no draw but its own");
            if !a.fault.is_aimed() {
                continue;
            }
            aimed += 1;
            let room = windowed.chaos_ms - a.at_ms;
            assert!(
                (2_500..=5_500).contains(&a.duration_ms) || a.duration_ms == room,
                "{} lasts {} ms",
                a.fault,
                a.duration_ms
            );
            outside_window_blind += u32::from(!(2_500..=5_500).contains(&b.duration_ms));
        }
    }
    assert!(aimed > 100, "{aimed} aimed pauses");
    assert!(outside_window_blind > 0, "without the window, aimed pauses took the space's lengths");
}

#[test]
fn aimed_faults_of_a_waiting_kind_carry_the_wait_and_every_draw_stays_as_before() {
    let plain = with_roles(&[FaultKind::Pause, FaultKind::Partition]);
    let mut waiting = plain.clone();
    waiting.aimed_wait_ms.insert(FaultKind::Pause, 1_500);
    let (mut waits, mut aimed_partitions) = (0, 0);
    for seed in 0..300 {
        let (before, after) = (FaultPlan::generate(seed, &plain), FaultPlan::generate(seed, &waiting));
        assert_eq!(before.faults.len(), after.faults.len());
        for (b, a) in before.faults.iter().zip(&after.faults) {
            assert_eq!(
                (b.at_ms, b.duration_ms, &b.fault),
                (a.at_ms, a.duration_ms, &a.fault),
                "waits draw nothing"
            );
            assert_eq!(b.wait_ms, 0);
            let pause = matches!(a.fault, Fault::Pause { .. });
            assert_eq!(a.wait_ms, if pause && a.fault.is_aimed() { 1_500 } else { 0 }, "{}", a.fault);
            waits += u32::from(a.wait_ms > 0);
            aimed_partitions += u32::from(!pause && a.fault.is_aimed());
        }
        let json = serde_json::to_string(&after).unwrap();
        assert_eq!(serde_json::from_str::<FaultPlan>(&json).unwrap(), after, "the wait survives JSON");
        assert_eq!(
            json.contains("wait_ms"),
            after.faults.iter().any(|t| t.wait_ms > 0),
            "written only when set"
        );
    }
    assert!(
        waits > 100 && aimed_partitions > 100,
        "{waits} waiting pauses, {aimed_partitions} aimed partitions"
    );
}

#[test]
#[should_panic(expected = "only a kind aimed at roles waits for one")]
fn only_an_aimed_kind_can_wait_for_its_role() {
    let topo = Topology { zookeeper: true, redis: None, sql: None, servers: vec![], clients: 1 };
    let _ = FaultSpace::builder(&topo, 10_000, 1_000)
        .pause(&[Nodes::Clients])
        .wait_for_role(FaultKind::Pause, 100);
}

#[test]
fn an_aim_window_must_lie_within_the_spaces_fault_lengths() {
    let topo = Topology { zookeeper: true, redis: None, sql: None, servers: vec![], clients: 1 };
    let b = FaultSpace::builder(&topo, 10_000, 1_000).pause(&[Nodes::Clients]).faults(1, 2, 4_000);
    let s = b.aim_lasting(FaultKind::Pause, &["holder"], 1_000, 3_000).build();
    assert_eq!(s.aimed_ms.get(&FaultKind::Pause), Some(&(1_000, 3_000)));
    let too_long = std::panic::catch_unwind(|| {
        FaultSpace::builder(&topo, 10_000, 1_000).faults(1, 2, 4_000).aim_lasting(
            FaultKind::Pause,
            &["holder"],
            1_000,
            5_000,
        )
    });
    assert!(too_long.is_err(), "a window past the longest fault is refused");
}

#[test]
fn a_space_without_roles_never_names_one() {
    for seed in 0..200 {
        for t in FaultPlan::generate(seed, &space()).faults {
            assert!(nodes_named(&t.fault).iter().all(|n| role_of(n).is_none()), "{}", t.fault);
        }
    }
}

#[test]
fn map_nodes_resolves_every_node_and_gives_up_on_one_without_a_node() {
    let f = Fault::Partition { a: vec!["@holder".into()], b: vec!["zk".into(), "client-1".into()] };
    let resolved = f.map_nodes(|n| Some(if n == "@holder" { "client-0".into() } else { n.to_string() }));
    assert_eq!(
        resolved,
        Some(Fault::Partition { a: vec!["client-0".into()], b: vec!["zk".into(), "client-1".into()] })
    );
    assert_eq!(f.map_nodes(|n| role_of(n).is_none().then(|| n.to_string())), None);
    let pause = Fault::ClockDrift { node: "@holder".into(), ppm: 7 };
    assert_eq!(pause.map_nodes(|_| Some("zk".into())), Some(Fault::ClockDrift { node: "zk".into(), ppm: 7 }));
    let loss = Fault::PacketLoss { rate: 0.1 };
    assert_eq!(loss.map_nodes(|_| None), Some(loss.clone()), "a network-wide fault names no node");
}

#[test]
fn a_plan_may_name_a_role_only_where_the_space_declares_it() {
    let s = with_roles(&[FaultKind::Kill]);
    assert_eq!(s.role_targets(), vec!["@holder".to_string()]);
    let mut plan = FaultPlan::generate(1, &space());
    plan.faults = vec![TimedFault::new(1, 10, Fault::Kill { node: "@holder".into() })];
    let mut known: Vec<String> = s.kill.clone();
    assert!(plan.validate(&known).unwrap_err().contains("unknown node \"@holder\""));
    known.extend(s.role_targets());
    assert_eq!(plan.validate(&known), Ok(()));
}

#[test]
#[should_panic(expected = "only node faults and partitions")]
fn a_network_wide_fault_cannot_be_aimed() {
    let topo = Topology { zookeeper: true, redis: None, sql: None, servers: vec![], clients: 1 };
    let _ = FaultSpace::builder(&topo, 1_000, 1_000).aim(FaultKind::PacketLoss, &["holder"]);
}

#[test]
fn same_seed_same_plan_and_json_roundtrip() {
    let a = FaultPlan::generate(42, &space());
    let b = FaultPlan::generate(42, &space());
    assert_eq!(a, b);
    assert_ne!(a, FaultPlan::generate(43, &space()));
    let json = serde_json::to_string(&a).unwrap();
    let back: FaultPlan = serde_json::from_str(&json).unwrap();
    assert_eq!(a, back);
}

#[test]
fn validate_rejects_bad_plans() {
    let names: Vec<String> = ["zk", "redis", "client-0", "client-1"].iter().map(|s| s.to_string()).collect();
    let good = FaultPlan::generate(5, &space());
    assert_eq!(good.validate(&names), Ok(()));
    let mut bad = good.clone();
    bad.faults.push(TimedFault::new(1, 1, Fault::Kill { node: "nope".into() }));
    bad.faults.sort_by_key(|t| t.at_ms);
    assert!(bad.validate(&names).unwrap_err().contains("unknown node"));
    let mut late = good.clone();
    late.faults.push(TimedFault::new(19_999, 10, Fault::Pause { node: "zk".into() }));
    assert!(late.validate(&names).unwrap_err().contains("past the heal"));
    let mut waits = good.clone();
    waits
        .faults
        .push(TimedFault { wait_ms: 100, ..TimedFault::new(1, 1, Fault::Pause { node: "zk".into() }) });
    waits.faults.sort_by_key(|t| t.at_ms);
    assert!(waits.validate(&names).unwrap_err().contains("aimed at none"));
}

#[test]
fn faults_stay_in_the_chaos_phase() {
    for seed in 0..200 {
        let p = FaultPlan::generate(seed, &space());
        assert!(p.faults.len() >= 4 && p.faults.len() <= 10);
        for t in &p.faults {
            assert!(t.at_ms + t.duration_ms <= p.heal_at_ms, "{t:?}");
            if let Fault::Partition { a, b } | Fault::PartitionOneWay { from: a, to: b } = &t.fault {
                assert!(!a.is_empty() && !b.is_empty());
                assert!(a.iter().all(|x| !b.contains(x)));
            }
        }
        assert!(p.faults.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }
}

#[test]
fn each_seed_records_its_swarm_and_draws_within_it() {
    let space = space();
    for seed in 0..300 {
        let p = FaultPlan::generate(seed, &space);
        let swarm = p.swarm.clone().expect("a generated plan records its swarm");
        assert!(!swarm.kinds.is_empty());
        assert!(swarm.faults_min >= space.faults_min && swarm.faults_max <= space.faults_max);
        assert_eq!(swarm.fault_ms_max, space.fault_ms_max);
        let n = p.faults.len() as u32;
        assert!(swarm.faults_min <= n && n <= swarm.faults_max, "seed {seed}: {n} faults, {swarm}");
        assert!(p.to_string().contains("swarm: emphasis "), "the plan prints its swarm");
    }
}

#[test]
fn a_swarm_draws_its_emphasised_kinds_more_often_and_the_others_still() {
    let space = space();
    let (mut emphasised, mut other, mut other_seeds) = (0u32, 0u32, 0u32);
    for seed in 0..400 {
        let p = FaultPlan::generate(seed, &space);
        let swarm = p.swarm.expect("recorded");
        if swarm.kinds.len() == FaultKind::ALL.len() || swarm.kinds.len() < 3 {
            continue;
        }
        let kinds_other = FaultKind::ALL.len() - swarm.kinds.len();
        let e = p.faults.iter().filter(|t| swarm.kinds.contains(&t.fault.kind())).count() as u32;
        emphasised += e * kinds_other as u32;
        other += (p.faults.len() as u32 - e) * swarm.kinds.len() as u32;
        other_seeds += u32::from(p.faults.len() as u32 > e);
    }
    // Per kind, an emphasised one is drawn about SWARM_EMPHASIS times as often.
    assert!(emphasised > 2 * other, "emphasised {emphasised} vs other {other} (per-kind scaled)");
    assert!(other_seeds > 50, "other kinds still occur ({other_seeds} seeds)");
}

#[test]
fn swarms_vary_and_the_full_space_stays_reachable() {
    let space = space();
    let swarms: Vec<Swarm> = (0..400).map(|seed| Swarm::draw(seed, &space)).collect();
    let full = |w: &Swarm| {
        w.kinds.len() == FaultKind::ALL.len()
            && (w.faults_min, w.faults_max, w.fault_ms_max)
                == (space.faults_min, space.faults_max, space.fault_ms_max)
    };
    let fulls = swarms.iter().filter(|w| full(w)).count();
    assert!(fulls >= 400 / FULL_SPACE_ONE_IN as usize / 2, "{fulls} full-space seeds of 400");
    assert!(swarms.iter().any(|w| w.kinds.len() == 1), "some seeds lean on a single kind");
    for kind in FaultKind::ALL {
        let alone = swarms.iter().filter(|w| w.kinds.contains(&kind)).count();
        assert!(alone > 100, "{kind} emphasised in only {alone} of 400 swarms");
    }
    assert!(swarms.iter().any(|w| w.faults_min > space.faults_min), "heavy swarms exist");
}

#[test]
fn a_plan_without_a_swarm_still_parses_and_replays_as_written() {
    let mut p = FaultPlan::generate(9, &space());
    p.swarm = None;
    let json = serde_json::to_string(&p).unwrap();
    assert!(!json.contains("swarm"));
    let back: FaultPlan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    let with = FaultPlan::generate(9, &space());
    let back: FaultPlan = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
    assert_eq!(back, with, "the swarm round-trips through JSON");
}

#[test]
fn a_space_with_one_kind_always_uses_it() {
    let mut one = space();
    one.network = false;
    one.clock.clear();
    one.kill.clear();
    one.partition.clear();
    for seed in 0..50 {
        let w = Swarm::draw(seed, &one);
        assert_eq!(w.kinds, vec![FaultKind::Pause]);
    }
}
