//! `real cluster run`: scenarios' workloads and checkers against live local clusters of
//! server processes (private ZooKeeper and Redis), with kill -9 and SIGSTOP of servers.
//! Each test runs the `real` binary as a user would and reads its verdict from the output.

mod common;

use std::process::Output;

use common::cli::{counter, run_real};

fn cluster_run(args: &[&str]) -> (Output, String) {
    let mut all = vec!["cluster", "run"];
    all.extend_from_slice(args);
    run_real(&all)
}

fn assert_passed(args: &[&str]) -> String {
    let (out, text) = cluster_run(args);
    assert!(
        out.status.success() && text.lines().any(|l| l == "PASSED"),
        "cluster run {args:?} did not pass ({}):\n{text}",
        out.status
    );
    eprintln!("{text}");
    text
}

#[test]
fn login_unique_passes_under_kills_and_pauses() {
    let text = assert_passed(&[
        "login_unique",
        "--servers",
        "3",
        "--clients",
        "12",
        "--duration",
        "12s",
        "--kill-every",
        "5s",
        "--pause-every",
        "4s",
        "--pause-max",
        "9s",
    ]);
    assert!(counter(&text, "cluster.server_kills") >= 2, "{text}");
    assert!(counter(&text, "cluster.server_pauses") >= 2, "{text}");
    assert!(counter(&text, "logins_ok") >= 3, "every account logs in at least once after the heal:\n{text}");
    assert!(counter(&text, "ticks") > 0, "{text}");
}

#[test]
fn pvp_transfer_passes_under_kills() {
    let text = assert_passed(&["pvp_transfer", "--clients", "20", "--duration", "10s", "--kill-every", "3s"]);
    assert!(counter(&text, "cluster.server_kills") >= 3, "{text}");
    assert!(counter(&text, "cluster.server_incarnations") >= 7, "{text}");
}

#[test]
fn redirect_passes_under_kills_and_its_planted_bug_fails() {
    let text = assert_passed(&["redirect", "--clients", "20", "--duration", "10s", "--kill-every", "4s"]);
    assert!(counter(&text, "redirect.accept_genuine_accepted") > 0, "{text}");
    assert!(counter(&text, "cluster.evidence_lines") > 0, "{text}");

    let (out, text) =
        cluster_run(&["redirect", "--clients", "10", "--duration", "4s", "--bug", "replayable-token"]);
    assert_eq!(out.status.code(), Some(1), "the planted bug must fail the run:\n{text}");
    assert!(text.contains("violation [single_use]"), "{text}");
}

/// Command packs on SQLite files: every acknowledged pack executes exactly once, in order,
/// across kill -9 and SIGSTOP of the servers executing them (final rows checked).
#[test]
fn deferred_commands_passes_under_kills_and_pauses() {
    let text = assert_passed(&[
        "deferred_commands",
        "--duration",
        "12s",
        "--kill-every",
        "4s",
        "--pause-every",
        "5s",
        "--pause-max",
        "7s",
        "--seed",
        "1",
    ]);
    assert!(counter(&text, "cluster.server_kills") >= 2, "{text}");
    assert!(counter(&text, "cluster.server_pauses") >= 1, "{text}");
    assert!(counter(&text, "deferred_commands.packs_applied") > 0, "{text}");
    assert!(
        counter(&text, "deferred_commands.executions_committed") > 0,
        "executions came back as evidence:\n{text}"
    );
    assert_eq!(counter(&text, "deferred_commands.users_read"), 12, "{text}");
}

/// Players behind gates on real processes: kill -9 and SIGSTOP of gates and backends (and
/// the login server) while clients add, move between backends and reconnect; every add is
/// applied once and in order (final rows checked), and no backend handles a player it does
/// not hold (its handling evidence).
#[test]
fn gate_route_passes_under_kills_and_pauses() {
    let text = assert_passed(&[
        "gate_route",
        "--duration",
        "14s",
        "--kill-every",
        "4s",
        "--pause-every",
        "5s",
        "--pause-max",
        "8s",
        "--seed",
        "1",
    ]);
    assert!(counter(&text, "cluster.server_kills") >= 2, "{text}");
    assert!(counter(&text, "cluster.server_pauses") >= 1, "{text}");
    assert!(counter(&text, "gate_route.adds_ok") > 0, "{text}");
    assert!(counter(&text, "gate_route.switches_seen") > 0, "players moved without reconnecting:\n{text}");
    assert!(counter(&text, "gate_route.handled_frames") > 0, "handlings came back as evidence:\n{text}");
    assert_eq!(
        counter(&text, "gate_route.bad_keys"),
        counter(&text, "gate_route.bad_keys_key_rejected"),
        "{text}"
    );
}

/// `reorder` lets a server run the calls of one player concurrently: their handlers, which
/// take 0–20 ms each, finish out of send order, which the servers' handling evidence shows
/// without any fault.
#[test]
fn rpc_reorder_is_caught_live_without_faults() {
    let (out, text) = cluster_run(&["rpc", "--duration", "8s", "--bug", "reorder"]);
    assert_eq!(out.status.code(), Some(1), "the planted bug must fail the run:\n{text}");
    assert!(text.contains("violation [rpc.order]"), "{text}");
    assert!(counter(&text, "rpc.handled_ordered") > 0, "{text}");
}

/// `sql_register`'s clients are tasks on the servers: each server process reports its calls
/// (invoked, then completed, with their times) and draws its fences from the run's true time,
/// and the runner rebuilds the history from the reports and checks it against the SQLite
/// files: every instance linearizable, no write accepted under a stale fence, transactions
/// all or nothing, and calls succeed after the heal, across kill -9 and SIGSTOP.
#[test]
fn sql_register_passes_under_kills_and_pauses() {
    let text = assert_passed(&[
        "sql_register",
        "--duration",
        "16s",
        "--kill-every",
        "5s",
        "--pause-every",
        "6s",
        "--seed",
        "1",
    ]);
    assert!(counter(&text, "cluster.server_kills") >= 2, "{text}");
    assert!(counter(&text, "cluster.server_pauses") >= 1, "{text}");
    // The calls came back as evidence, a line for each invocation and each completion (calls
    // left open were in flight at a kill), and were checked.
    let calls = counter(&text, "sql_register.calls");
    assert!(calls >= 500, "{text}");
    assert_eq!(
        counter(&text, "cluster.evidence_lines"),
        2 * calls - counter(&text, "sql_register.open"),
        "{text}"
    );
    assert!(counter(&text, "sql_register.committed") >= 100, "{text}");
    assert!(counter(&text, "sql_register.takeovers") >= 10, "{text}");
    // Deposed owners kept writing and the instances refused them: fences rose across processes.
    assert!(counter(&text, "sql_register.fenced") > 0, "{text}");
    assert!(counter(&text, "fencing.accepted_ops_checked") > 0, "{text}");
    assert!(
        counter(&text, "liveness.processes_after_heal") >= 6,
        "every task of the last incarnations:\n{text}"
    );
}

#[test]
fn bad_arguments_exit_2_with_a_reason() {
    let cases: [(&[&str], &str); 5] = [
        (&["sql_register", "--bug", "no-fence-check"], "planted in the simulated SQL service"),
        (&["no_such_scenario"], "unknown scenario"),
        (&["login_unique", "--servers", "5"], "runs 3 servers"),
        (&["login_unique", "--bug", "no-such-bug"], "has no planted bug"),
        (&["coord_lock", "--kill-every", "1s"], "no servers to kill"),
    ];
    for (args, why) in cases {
        let (out, text) = cluster_run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{text}");
        assert!(text.contains(why), "{args:?}: expected {why:?} in:\n{text}");
    }
    let (out, text) = cluster_run(&["login_unique", "--duration", "soon"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects a bad duration:\n{text}");
}

/// Clock faults on real processes: each server follows a control file the runner writes
/// (`cluster serve --clock-control`), so its wall clock jumps and both its clocks drift; the
/// scenario still passes, and every clock is set right at the heal.
#[test]
fn login_unique_passes_under_clock_jumps_drift_and_kills() {
    let text = assert_passed(&[
        "login_unique",
        "--servers",
        "3",
        "--clients",
        "12",
        "--duration",
        "12s",
        "--clock-faults-every",
        "1s",
        "--kill-every",
        "5s",
        "--seed",
        "4",
    ]);
    // Seed 4's plan: jumps and drifts on every server, one kill.
    assert!(counter(&text, "cluster.clock_faults.jump") >= 3, "{text}");
    assert!(counter(&text, "cluster.clock_faults.drift") >= 1, "{text}");
    assert_eq!(text.matches("clock set right").count() % 2, 0, "printed live and in the plan:\n{text}");
    assert!(text.contains("clock set right"), "{text}");
}
