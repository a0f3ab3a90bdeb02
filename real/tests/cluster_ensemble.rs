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

/// The ZooKeeper leader is killed (and relaunched), then a leader is cut off from everyone,
/// then the leader and a follower are killed together (no quorum) while `login_unique`'s
/// servers log players in and out: at most one server acts for an account at any time, and
/// accounts log in again after the heal.
#[test]
fn login_unique_rides_through_its_zookeeper_leader_killed_then_isolated_and_a_quorum_loss() {
    let (out, text) = real(&[
        "cluster",
        "run",
        "login_unique",
        "--duration",
        "20s",
        "--net",
        "--zk-ensemble",
        "--service-fault-every",
        "5s",
        "--service-fault-max",
        "4s",
        "--service-faults",
        "zk-leader-kill,zk-leader-isolate,zk-quorum-loss",
        "--seed",
        "1",
    ]);
    eprintln!("{text}");
    assert_passed_and_cleaned_up(&out, &text);
    for kind in ["zk-leader-kill", "zk-leader-isolate", "zk-quorum-loss"] {
        assert_eq!(counter(&text, &format!("cluster.service_faults.{kind}")), 1, "{kind}:\n{text}");
    }
    assert!(text.contains("(leader)"), "faults name the role they hit:\n{text}");
    assert!(counter(&text, "logins_ok") >= 3, "accounts log in after the heal:\n{text}");
}

/// `pvp_transfer` moves players between game and PvP servers through Redis and ZooKeeper while
/// the ZooKeeper leader is killed, then cut off, and Redis is paused: no player is lost or in
/// two places, and transfers complete after the heal.
#[test]
fn pvp_transfer_rides_through_its_zookeeper_leader_killed_then_isolated_and_a_redis_pause() {
    let (out, text) = real(&[
        "cluster",
        "run",
        "pvp_transfer",
        "--duration",
        "20s",
        "--net",
        "--zk-ensemble",
        "--service-fault-every",
        "5s",
        "--service-fault-max",
        "4s",
        "--service-faults",
        "zk-leader-kill,zk-leader-isolate,redis-pause",
        "--seed",
        "2",
    ]);
    eprintln!("{text}");
    assert_passed_and_cleaned_up(&out, &text);
    for kind in ["zk-leader-kill", "zk-leader-isolate", "redis-pause"] {
        assert_eq!(counter(&text, &format!("cluster.service_faults.{kind}")), 1, "{kind}:\n{text}");
    }
}

/// `deferred_commands` on a MariaDB server of its own (`--mariadb`, the `sql` host of
/// `examples/deploy/`), killed (and restarted: crash recovery), cut off and paused while packs
/// are acknowledged and executed: no acknowledged pack is lost or applied twice, each user's
/// packs run in order, one at a time.
#[test]
fn deferred_commands_on_mariadb_rides_through_its_sql_server_killed_isolated_and_paused() {
    let (out, text) = real(&[
        "cluster",
        "run",
        "deferred_commands",
        "--duration",
        "20s",
        "--net",
        "--mariadb",
        "--service-fault-every",
        "5s",
        "--service-fault-max",
        "4s",
        "--service-faults",
        "sql-kill,sql-isolate,sql-pause",
        "--seed",
        "1",
    ]);
    eprintln!("{text}");
    assert!(
        out.status.success() && text.lines().any(|l| l == "PASSED"),
        "did not pass ({}):\n{text}",
        out.status
    );
    assert!(namespaces(&text).iter().any(|n| n.ends_with("-q")), "the SQL host:\n{text}");
    for kind in ["sql-kill", "sql-isolate", "sql-pause"] {
        assert_eq!(counter(&text, &format!("cluster.service_faults.{kind}")), 1, "{kind}:\n{text}");
    }
    assert!(counter(&text, "deferred_commands.packs_applied") >= 50, "{text}");
}

/// `shard_move` runs live: its mover moves shards between three databases of a MariaDB server
/// on a host of its own while writers append, through a ZooKeeper quorum loss and the SQL
/// server killed, paused and cut off: no acknowledged append is lost, none lands twice or on an
/// instance that gave its shard away.
#[test]
fn shard_move_on_mariadb_rides_through_a_quorum_loss_and_its_sql_server_killed_paused_and_isolated() {
    let (out, text) = real(&[
        "cluster",
        "run",
        "shard_move",
        "--duration",
        "16s",
        "--net",
        "--zk-ensemble",
        "--mariadb",
        "--service-fault-every",
        "4s",
        "--service-fault-max",
        "3s",
        "--service-faults",
        "zk-quorum-loss,sql-kill,sql-pause,sql-isolate",
        "--seed",
        "2",
    ]);
    eprintln!("{text}");
    assert!(
        out.status.success() && text.lines().any(|l| l == "PASSED"),
        "did not pass ({}):\n{text}",
        out.status
    );
    for kind in ["zk-quorum-loss", "sql-kill", "sql-pause"] {
        assert_eq!(counter(&text, &format!("cluster.service_faults.{kind}")), 1, "{kind}:\n{text}");
    }
    assert!(counter(&text, "moves_finished") >= 5 && counter(&text, "appends_ok") >= 500, "{text}");
}

/// `stale-map-write` leaves the source instance accepting writes after a move: caught live
/// (appends acknowledged by the old instance are not in the final rows).
#[test]
fn shard_move_stale_map_write_is_caught_live() {
    let (out, text) = real(&[
        "cluster",
        "run",
        "shard_move",
        "--duration",
        "20s",
        "--bug",
        "stale-map-write",
        "--seed",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "the planted bug must fail the run:\n{text}");
    assert!(text.contains("violation [lost]") || text.contains("violation [owner]"), "{text}");
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
