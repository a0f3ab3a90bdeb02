//! `cargo test` runs every scenario on a fixed seed window, checks determinism, and checks
//! that every planted bug is caught (and replays identically).

use std::collections::BTreeMap;

use sim::runner::{run_seed, RunOptions};
use tests::{seed_window, window};

fn sweep(name: &str) {
    let s = scenarios::lookup(name, None).expect("scenario exists");
    let w = window(&*s, seed_window(), None);
    let report: Vec<String> = w
        .failed
        .iter()
        .map(|(r, cmd)| format!("seed {}: {:?}\n  replay: {cmd}", r.seed, r.violations))
        .collect();
    assert!(
        w.failed.is_empty(),
        "{} of {:?} seeds failed:\n{}",
        w.failed.len(),
        seed_window(),
        report.join("\n")
    );
    let missed = w.missed(&s.required_probes());
    assert!(
        missed.is_empty(),
        "{name}: required coverage probes never reached in seeds {:?}: {missed:?}\nreached: {:#?}",
        seed_window(),
        w.probes
    );
}

/// Every counter of `name`'s runs over seeds `0..seeds`, summed.
fn counters_over(name: &str, seeds: u64) -> BTreeMap<String, u64> {
    let s = scenarios::lookup(name, None).expect("scenario exists");
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for seed in 0..seeds {
        for (k, v) in run_seed(&*s, seed, None, RunOptions::default()).counters {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

/// Each of `counters` happened (is positive in `total`, summed over `seeds` seeds).
fn assert_happened(total: &BTreeMap<String, u64>, seeds: u64, counters: &[&str]) {
    for counter in counters {
        assert!(
            total.get(*counter).copied().unwrap_or(0) > 0,
            "{counter} never happened in {seeds} seeds: {total:#?}"
        );
    }
}

#[test]
fn coord_lock_seed_window_passes() {
    sweep("coord_lock");
}

#[test]
fn kv_register_seed_window_passes() {
    sweep("kv_register");
}

#[test]
fn membership_seed_window_passes() {
    sweep("membership");
}

#[test]
fn rpc_seed_window_passes() {
    sweep("rpc");
}

#[test]
fn pvp_transfer_seed_window_passes() {
    sweep("pvp_transfer");
}

#[test]
fn same_seed_gives_the_same_trace_hash() {
    for s in scenarios::all() {
        for seed in [3, 11] {
            let a = run_seed(&*s, seed, None, RunOptions::default());
            let b = run_seed(&*s, seed, None, RunOptions::default());
            assert_eq!(a.trace_hash, b.trace_hash, "{} seed {seed} is not deterministic", s.name());
            assert_eq!(a.trace_lines, b.trace_lines);
            assert!(a.trace_lines > 20, "{}: a trace this short means tracing is not wired", s.name());
        }
        let a = run_seed(&*s, 3, None, RunOptions::default());
        let c = run_seed(&*s, 4, None, RunOptions::default());
        assert_ne!(a.trace_hash, c.trace_hash, "{}: different seeds must differ", s.name());
    }
}

#[test]
fn every_planted_bug_is_caught_and_replays_identically() {
    for s in scenarios::all() {
        for bug in s.meta().bugs {
            let caught = (0..bug.caught_within_seeds)
                .map(|seed| run_seed(&*s, seed, Some(bug.name), RunOptions::default()))
                .find(|r| r.verdict.is_violation());
            let Some(first) = caught else {
                panic!("{} --bug {} not caught within {} seeds", s.name(), bug.name, bug.caught_within_seeds)
            };
            let again = run_seed(&*s, first.seed, Some(bug.name), RunOptions::default());
            assert_eq!(again.verdict, first.verdict);
            assert_eq!(again.violations, first.violations, "{} --bug {}: replay differs", s.name(), bug.name);
            assert_eq!(again.trace_hash, first.trace_hash);
        }
    }
}

#[test]
fn login_unique_seed_window_passes() {
    sweep("login_unique");
}

#[test]
fn redirect_seed_window_passes() {
    sweep("redirect");
}

#[test]
fn broadcast_seed_window_passes() {
    sweep("broadcast");
}

#[test]
fn sql_register_seed_window_passes() {
    sweep("sql_register");
}

/// The fault paths of `sql_register` run: over a few seeds, deposed owners are refused, calls
/// end with unknown outcomes, SQL nodes are killed, multi-row transacts and guards commit, and
/// an unknown multi-row transact is later seen wholly applied or not at all.
#[test]
fn sql_register_exercises_its_fault_paths() {
    let total = counters_over("sql_register", 20);
    assert_happened(
        &total,
        20,
        &[
            "sql_register.fenced",
            "sql_register.version_mismatch",
            "sql_register.not_found",
            "sql_register.maybe_applied",
            "sql_register.multi_row_committed",
            "sql_register.guards_committed",
            "sql_register.takeovers",
            "atomicity.multi_row_unknown_resolved",
            "faults.kill_sql",
            "faults.pause_sql",
            "faults.partition_sql",
        ],
    );
    assert_eq!(total.get("linearizability.inconclusive_keys"), Some(&0), "{total:#?}");
}

/// `no-fence-check` is caught by the direct fencing check, not only by linearizability.
#[test]
fn sql_register_no_fence_check_is_caught_by_the_fencing_check() {
    let s = scenarios::lookup("sql_register", Some("no-fence-check")).expect("scenario and bug exist");
    let r = run_seed(&*s, 0, Some("no-fence-check"), RunOptions::default());
    assert!(r.violations.iter().any(|v| v.starts_with("[fencing]")), "{:#?}", r.violations);
    assert!(r.violations.iter().any(|v| v.starts_with("[linearizability]")), "{:#?}", r.violations);
}

#[test]
fn object_lending_seed_window_passes() {
    sweep("object_lending");
}

/// The paths `object_lending` is about run: over a few seeds, gifts and trades commit and are
/// refused by the game, some end unknown, recipients are told, inventories change owner many
/// times, and SQL nodes and servers are killed, paused and cut off.
#[test]
fn object_lending_exercises_its_fault_paths() {
    let total = counters_over("object_lending", 20);
    assert_happened(
        &total,
        20,
        &[
            "object_lending.gifts_ok",
            "object_lending.gifts_refused",
            "object_lending.gifts_unknown",
            "object_lending.trades_ok",
            "object_lending.trades_refused",
            "object_lending.reads_ok",
            "object_lending.gifts_received",
            "faults.kill",
            "faults.kill_sql",
            "faults.pause",
            "faults.partition_sql",
        ],
    );
    // Inventories change owner far more often than once per user.
    assert!(total["object_lending.owner_instances"] > 20 * 12 * 5, "{total:#?}");
    assert_eq!(total.get("object_lending.subset_skipped"), None, "{total:#?}");
}

/// `unordered-locks` deadlocks (a liveness failure), it is not a safety violation.
#[test]
fn object_lending_unordered_locks_is_a_liveness_failure() {
    let s = scenarios::lookup("object_lending", Some("unordered-locks")).expect("scenario and bug exist");
    let r = (0..20)
        .map(|seed| run_seed(&*s, seed, Some("unordered-locks"), RunOptions::default()))
        .find(|r| r.verdict.is_violation())
        .expect("caught within 20 seeds");
    assert_eq!(r.verdict, sim::runner::Verdict::Liveness, "{:#?}", r.violations);
}

#[test]
fn deferred_commands_seed_window_passes() {
    sweep("deferred_commands");
}

/// The paths `deferred_commands` is about run: over a few seeds, packs are applied, fail
/// (cheats), are skipped behind a failure and refused with `sc_reload`; resends are
/// acknowledged again; purchases are applied and retried ones answered as duplicates; state
/// reads answer `sc_retry_after` while packs wait; servers and SQL nodes are killed, paused
/// and cut off.
#[test]
fn deferred_commands_exercises_its_fault_paths() {
    let total = counters_over("deferred_commands", 10);
    assert_happened(
        &total,
        10,
        &[
            "deferred_commands.packs_applied",
            "deferred_commands.packs_failed",
            "deferred_commands.packs_skipped",
            "deferred_commands.packs_reload",
            "deferred_commands.packs_unknown",
            "deferred_commands.resends_ok_resent",
            "deferred_commands.purchases_ok",
            "deferred_commands.purchases_ok_duplicate",
            "deferred_commands.states_retry_after",
            "faults.kill",
            "faults.kill_sql",
            "faults.pause",
            "faults.partition_sql",
        ],
    );
    // Every execution the servers report is one of a pack, and most commit.
    assert!(total["deferred_commands.executions_committed"] > 10 * 200, "{total:#?}");
}

/// Each planted bug of `deferred_commands` is caught by the invariant written for it (not
/// only by a side effect), within a few seeds.
#[test]
fn deferred_commands_bugs_are_caught_by_their_own_invariants() {
    caught_by_their_own_invariants(
        "deferred_commands",
        &[
            ("ack-before-store", &["exactly_once", "reads"], 10),
            ("parallel-user", &["exclusive"], 10),
            ("applied-outside-txn", &["replay", "order"], 40),
            ("no-stale-skip", &["stale_skip"], 10),
        ],
    );
}

/// For each `(bug, checkers, within)`: some seed below `within` fails `scenario --bug bug`
/// with a violation of one of `checkers` (not only by a side effect).
fn caught_by_their_own_invariants(scenario: &str, cases: &[(&str, &[&str], u64)]) {
    for &(bug, checkers, within) in cases {
        let s = scenarios::lookup(scenario, Some(bug)).expect("scenario and bug exist");
        let r = (0..within)
            .map(|seed| run_seed(&*s, seed, Some(bug), RunOptions::default()))
            .find(|r| r.verdict.is_violation())
            .unwrap_or_else(|| panic!("{scenario} --bug {bug} not caught within {within} seeds"));
        assert!(
            r.violations.iter().any(|v| checkers.iter().any(|c| v.starts_with(&format!("[{c}]")))),
            "{scenario} --bug {bug} seed {}: {:#?}",
            r.seed,
            r.violations
        );
    }
}

#[test]
fn gate_route_seed_window_passes() {
    sweep("gate_route");
}

/// The paths `gate_route` is about run: over a few seeds, counter adds are applied through
/// gates, repeated ones answered as duplicates and skipped ones refused as gaps; players move
/// between backends and switch on their connections; bad session keys are refused; gates and
/// backends are killed, paused and cut off.
#[test]
fn gate_route_exercises_its_fault_paths() {
    let total = counters_over("gate_route", 20);
    assert_happened(
        &total,
        20,
        &[
            "gate_route.logins_ok",
            "gate_route.adds_ok",
            "gate_route.adds_duplicate",
            "gate_route.adds_gap",
            "gate_route.adds_unknown",
            "gate_route.moves_ok",
            "gate_route.switches_seen",
            "gate_route.bad_keys_key_rejected",
            "faults.kill",
            "faults.pause",
            "faults.partition",
        ],
    );
    // Players switch backends many times each.
    assert!(total["gate_route.switches_seen"] > 20 * 6 * 3, "{total:#?}");
}

/// Each planted bug of `gate_route` is caught by the invariant written for it: a gate that
/// forwards during a move loses the frames it sent to the old backend (fencing keeps that
/// backend from handling them), an unfenced backend handles frames while another backend holds
/// the player, an unchecked key lets a bad session key log in, and a backend that ends a
/// released binding before draining it loses frames the gate saw acknowledged.
#[test]
fn gate_route_bugs_are_caught_by_their_own_invariants() {
    caught_by_their_own_invariants(
        "gate_route",
        &[
            ("forward-during-move", &["nothing_lost", "exactly_once", "transcripts"], 20),
            ("no-player-fence", &["one_backend"], 60),
            ("unchecked-session-key", &["session_keys"], 5),
            ("release-before-drain", &["nothing_lost"], 20),
        ],
    );
}

#[test]
fn every_required_probe_names_a_declared_probe() {
    for s in scenarios::all() {
        for p in s.required_probes() {
            assert!(
                engine::probe::is_declared(p),
                "{}: required probe {p:?} is not declared by any probe! site",
                s.name()
            );
        }
    }
}
