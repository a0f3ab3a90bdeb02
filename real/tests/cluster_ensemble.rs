//! `real cluster run --net --zk-ensemble [--mariadb]`: ZooKeeper as a 3-member ensemble, Redis
//! and MariaDB, each on a host (network namespace) of its own, the layout of
//! `examples/deploy/`, and faults of the services themselves during the chaos phase: the
//! leader killed, then cut off, then a quorum lost; Redis paused; MariaDB killed, cut off and
//! paused. The servers ride through the loss of one member and through a quorum loss (they stop
//! acting, then recover), and the scenario's checkers find nothing. Needs root, nftables and
//! ZooKeeper, which `.ci/run` installs (`scripts/services.sh install`): without them these
//! tests fail with the runner's message saying what is missing, never skip.

mod common;

use common::cli::{counter_or_zero as counter, namespaces, netns_list, run_real as real};

fn assert_passed_and_cleaned_up(out: &std::process::Output, text: &str) {
    assert!(
        out.status.success() && text.lines().any(|l| l == "PASSED"),
        "did not pass ({}):\n{text}",
        out.status
    );
    let ns = namespaces(text);
    assert!(ns.iter().any(|n| n.ends_with("-z3")) && ns.iter().any(|n| n.ends_with("-r")), "{ns:?}");
    let left = netns_list();
    for n in ns {
        assert!(!left.contains(&n), "{n} left behind: {left}");
    }
}

/// `real cluster run SCENARIO --net` with `flags` (`--zk-ensemble`, `--mariadb`), a service
/// fault every `every` of up to `max`, the kinds `kinds` in turn, for `duration`, with `seed`;
/// prints the output. Asserts each kind was applied exactly once.
fn run_with_service_faults(
    scenario: &str,
    flags: &[&str],
    (every, max, duration): (&str, &str, &str),
    kinds: &[&str],
    seed: &str,
) -> (std::process::Output, String) {
    let kinds_arg = kinds.join(",");
    let mut args = vec!["cluster", "run", scenario, "--duration", duration, "--net"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "--service-fault-every",
        every,
        "--service-fault-max",
        max,
        "--service-faults",
        &kinds_arg,
        "--seed",
        seed,
    ]);
    let (out, text) = real(&args);
    eprintln!("{text}");
    for kind in kinds {
        assert_eq!(counter(&text, &format!("cluster.service_faults.{kind}")), 1, "{kind}:\n{text}");
    }
    (out, text)
}

/// The ZooKeeper leader is killed (and relaunched), then a leader is cut off from everyone,
/// then the leader and a follower are killed together (no quorum) while `login_unique`'s
/// servers log players in and out: at most one server acts for an account at any time, and
/// accounts log in again after the heal.
#[test]
fn login_unique_rides_through_its_zookeeper_leader_killed_then_isolated_and_a_quorum_loss() {
    let (out, text) = run_with_service_faults(
        "login_unique",
        &["--zk-ensemble"],
        ("5s", "4s", "20s"),
        &["zk-leader-kill", "zk-leader-isolate", "zk-quorum-loss"],
        "1",
    );
    assert_passed_and_cleaned_up(&out, &text);
    assert!(text.contains("(leader)"), "faults name the role they hit:\n{text}");
    assert!(counter(&text, "logins_ok") >= 3, "accounts log in after the heal:\n{text}");
}

/// `pvp_transfer` moves players between game and PvP servers through Redis and ZooKeeper while
/// the ZooKeeper leader is killed, then cut off, and Redis is paused: no player is lost or in
/// two places, and transfers complete after the heal.
#[test]
fn pvp_transfer_rides_through_its_zookeeper_leader_killed_then_isolated_and_a_redis_pause() {
    let (out, text) = run_with_service_faults(
        "pvp_transfer",
        &["--zk-ensemble"],
        ("5s", "4s", "20s"),
        &["zk-leader-kill", "zk-leader-isolate", "redis-pause"],
        "2",
    );
    assert_passed_and_cleaned_up(&out, &text);
}

/// `deferred_commands` on a MariaDB server of its own (`--mariadb`, the `sql` host of
/// `examples/deploy/`), killed (and restarted: crash recovery), cut off and paused while packs
/// are acknowledged and executed: no acknowledged pack is lost or applied twice, each user's
/// packs run in order, one at a time.
#[test]
fn deferred_commands_on_mariadb_rides_through_its_sql_server_killed_isolated_and_paused() {
    let (out, text) = run_with_service_faults(
        "deferred_commands",
        &["--mariadb"],
        ("5s", "4s", "20s"),
        &["sql-kill", "sql-isolate", "sql-pause"],
        "1",
    );
    assert!(
        out.status.success() && text.lines().any(|l| l == "PASSED"),
        "did not pass ({}):\n{text}",
        out.status
    );
    assert!(namespaces(&text).iter().any(|n| n.ends_with("-q")), "the SQL host:\n{text}");
    assert!(counter(&text, "deferred_commands.packs_applied") >= 50, "{text}");
}

/// `shard_move` runs live: its mover moves shards between three databases of a MariaDB server
/// on a host of its own while writers append, through a ZooKeeper quorum loss and the SQL
/// server killed, paused and cut off: no acknowledged append is lost, none lands twice or on an
/// instance that gave its shard away.
#[test]
fn shard_move_on_mariadb_rides_through_a_quorum_loss_and_its_sql_server_killed_paused_and_isolated() {
    let (out, text) = run_with_service_faults(
        "shard_move",
        &["--zk-ensemble", "--mariadb"],
        ("4s", "3s", "20s"),
        &["zk-quorum-loss", "sql-kill", "sql-pause", "sql-isolate"],
        "2",
    );
    assert!(
        out.status.success() && text.lines().any(|l| l == "PASSED"),
        "did not pass ({}):\n{text}",
        out.status
    );
    assert!(counter(&text, "moves_finished") >= 5 && counter(&text, "appends_ok") >= 500, "{text}");
}

/// Live runs of `shard_move --bug stale-map-write` (fault seeds 1, 2, ...) of which one must
/// catch the bug. A run catches it only if a writer's append reaches the old instance after a
/// move and is acknowledged there; whether one does depends on real timing: 4 of 5 runs of
/// seed 1 caught it (2026-12-05), so one run alone would fail this test about once in five.
const STALE_MAP_WRITE_RUNS_MAX: u64 = 4;

/// `stale-map-write` leaves the source instance accepting writes after a move: caught live
/// (appends acknowledged by the old instance are not in the final rows).
#[test]
fn shard_move_stale_map_write_is_caught_live() {
    let mut last = String::new();
    for seed in 1..=STALE_MAP_WRITE_RUNS_MAX {
        let seed_arg = seed.to_string();
        let (out, text) = real(&[
            "cluster",
            "run",
            "shard_move",
            "--duration",
            "20s",
            "--bug",
            "stale-map-write",
            "--seed",
            &seed_arg,
        ]);
        if out.status.code() == Some(1) {
            assert!(text.contains("violation [lost]") || text.contains("violation [owner]"), "{text}");
            return;
        }
        assert_eq!(out.status.code(), Some(0), "a run either catches the bug or passes:\n{text}");
        last = text;
    }
    panic!("the planted bug was not caught in {STALE_MAP_WRITE_RUNS_MAX} live runs; the last:\n{last}");
}

#[test]
fn service_fault_flags_are_checked_against_the_run() {
    let (out, text) = real(&["cluster", "run", "login_unique", "--duration", "1s", "--zk-ensemble"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("need --net"), "{text}");
    let (out, text) =
        real(&["cluster", "run", "login_unique", "--net", "--service-faults", "zk-follower-kill"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("zk-follower-kill: it needs followers: add --zk-ensemble"), "{text}");
    let (out, text) = real(&["cluster", "run", "login_unique", "--net", "--service-faults", "zk-kill"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("unknown service fault \"zk-kill\""), "{text}");
    let (out, text) = real(&["cluster", "run", "kv_register", "--net", "--zk-ensemble"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("kv_register: the scenario uses no ZooKeeper"), "{text}");
    let (out, text) = real(&["cluster", "run", "login_unique", "--net", "--mariadb"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("login_unique: the scenario has no SQL instances"), "{text}");
    let (out, text) = real(&["cluster", "run", "deferred_commands", "--net", "--service-faults", "sql-kill"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("sql-kill: it needs a SQL server"), "{text}");
}
