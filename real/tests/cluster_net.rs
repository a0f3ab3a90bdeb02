//! `real cluster run --net`: a host (network namespace) per server and real network faults
//! (nftables rules) during the chaos phase, for `login_unique`, `membership` and `rpc`, with
//! the first two's planted bugs caught through partitions alone. Needs root and nftables,
//! which `.ci/run` installs (`scripts/services.sh install`) and runs as: without them these
//! tests fail with the runner's message saying what is missing, never skip.

mod common;

use std::process::Command;

use common::cli::{counter_or_zero as counter, namespaces, netns_list, run_real as real};

#[test]
fn login_unique_passes_under_partitions_one_way_cuts_and_loss_on_the_real_kernel() {
    let (out, text) = real(&[
        "cluster",
        "run",
        "login_unique",
        "--servers",
        "3",
        "--clients",
        "12",
        "--duration",
        "16s",
        "--net",
        "--net-fault-every",
        "1500ms",
        "--net-fault-max",
        "6s",
        "--net-faults",
        "partition,zk,one-way,loss",
        "--seed",
        "3",
    ]);
    assert!(
        out.status.success() && text.lines().any(|l| l == "PASSED"),
        "did not pass ({}):\n{text}",
        out.status
    );
    eprintln!("{text}");
    // Seed 3's plan draws every kind asked for (the plan is a function of the seed).
    for kind in ["partition", "zk", "one-way", "loss"] {
        assert!(counter(&text, &format!("cluster.net_faults.{kind}")) >= 1, "no {kind} fault:\n{text}");
    }
    assert!(counter(&text, "logins_ok") >= 3, "accounts log in after the heal:\n{text}");
    // Every namespace of the run is gone.
    let left = netns_list();
    for ns in namespaces(&text) {
        assert!(!left.contains(&ns), "{ns} left behind: {left}");
    }
}

/// `no-fencing`'s servers keep acting on their accounts after their ZooKeeper session is gone:
/// a server cut from ZooKeeper (alone, or from the whole cluster) while its players still reach
/// it acts beside the server that took the account over. No kill or pause: partitions only.
///
/// Whether a run of 20 s catches it depends on timing (a player must hold an account on the cut
/// server beyond the 4 s session timeout while another logs it in elsewhere): measured on this
/// 2-core machine, about one run in two with seed 2. So the window is up to [`NO_FENCING_SEEDS`]
/// runs, stopping at the first that fails with the violation; a run that fails any other way
/// fails the test at once.
#[test]
fn login_unique_no_fencing_is_caught_live_through_partitions() {
    let mut missed = Vec::new();
    for seed in NO_FENCING_SEEDS {
        let seed = seed.to_string();
        let (out, text) = real(&[
            "cluster",
            "run",
            "login_unique",
            "--servers",
            "3",
            "--clients",
            "12",
            "--duration",
            "20s",
            "--net",
            "--net-fault-every",
            "2s",
            "--net-fault-max",
            "8s",
            "--net-faults",
            "zk,partition",
            "--bug",
            "no-fencing",
            "--seed",
            &seed,
        ]);
        assert_eq!(
            counter(&text, "cluster.server_kills") + counter(&text, "cluster.server_pauses"),
            0,
            "{text}"
        );
        match out.status.code() {
            Some(1) => {
                assert!(
                    text.contains("violation [acting]"),
                    "seed {seed} failed without the violation:\n{text}"
                );
                eprintln!("caught with seed {seed} after {} missed run(s)", missed.len());
                return;
            }
            Some(0) => missed.push(seed),
            other => panic!("seed {seed}: unexpected exit {other:?}:\n{text}"),
        }
    }
    panic!("the planted bug was not caught in {} runs (seeds {missed:?})", missed.len());
}

/// Seeds tried in turn by the `no-fencing` test (see there).
const NO_FENCING_SEEDS: std::ops::Range<u64> = 2..8;

#[test]
fn cleanup_removes_a_crashed_runs_namespaces_and_links() {
    // A tag no run draws (runs' tags are hex digits), so a concurrent run is never touched.
    let tag = format!("zz{:02}", std::process::id() % 100);
    let ns = format!("sandtable-{tag}-0");
    let link = format!("sndtv{tag}0");
    let ok = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().expect("ip");
        assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    ok(&["netns", "add", &ns]);
    ok(&["link", "add", &link, "type", "veth", "peer", "name", &format!("{link}p")]);
    let (out, text) = real(&["cluster", "cleanup"]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("removed namespace {ns}")), "{text}");
    assert!(text.contains(&format!("removed link {link}")), "{text}");
    assert!(!netns_list().contains(&ns));
    // A live run's namespaces are left alone: this test process plays the runner of tag `tag`.
    std::fs::create_dir_all("/run/sandtable-net").expect("runs dir");
    std::fs::write(format!("/run/sandtable-net/{tag}"), std::process::id().to_string()).expect("marker");
    ok(&["netns", "add", &ns]);
    let (out, text) = real(&["cluster", "cleanup"]);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(&ns), "{text}");
    assert!(netns_list().contains(&ns));
    ok(&["netns", "del", &ns]);
    std::fs::remove_file(format!("/run/sandtable-net/{tag}")).expect("marker removed");
}

#[test]
fn network_fault_flags_without_net_are_refused() {
    let (out, text) =
        real(&["cluster", "run", "login_unique", "--duration", "1s", "--net-fault-every", "1s"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("--net-fault-every and --net-faults need --net"), "{text}");
    let (out, text) = real(&["cluster", "run", "login_unique", "--net", "--net-faults", "latency"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("unknown network fault \"latency\""), "{text}");
}

/// `membership` runs live: its servers report registrations, publications and every look at
/// their peer view as evidence. Partitions and ZooKeeper-only cuts, then the heal: every view
/// converges to the live servers' latest tags and status.
#[test]
fn membership_passes_live_under_partitions() {
    let (out, text) = real(&[
        "cluster",
        "run",
        "membership",
        "--duration",
        "16s",
        "--net",
        "--net-fault-every",
        "2s",
        "--net-fault-max",
        "8s",
        "--net-faults",
        "partition,zk,cut",
        "--seed",
        "1",
    ]);
    assert!(
        out.status.success() && text.lines().any(|l| l == "PASSED"),
        "did not pass ({}):\n{text}",
        out.status
    );
    assert!(counter(&text, "membership.observations") >= 100, "{text}");
    assert!(counter(&text, "cluster.net_faults") >= 3, "{text}");
}

/// `stale-view` freezes a server's view after its session is re-established: a partition
/// long enough to expire the session, then the heal, leaves views that never converge.
#[test]
fn membership_stale_view_is_caught_live_through_partitions() {
    let (out, text) = real(&[
        "cluster",
        "run",
        "membership",
        "--duration",
        "20s",
        "--net",
        "--net-fault-every",
        "3s",
        "--net-fault-max",
        "8s",
        "--net-faults",
        "partition,zk",
        "--bug",
        "stale-view",
        "--seed",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "the planted bug must fail the run:\n{text}");
    assert!(text.contains("violation [liveness]"), "{text}");
}

/// `rpc` runs live: its servers, which are also its callers, report every call they send and
/// how it came back, every handler they run and their heartbeats. Partitions, cut links and
/// packet loss between them, and kills and pauses (SIGSTOP), then the heal: every reply is
/// its request's, calls of a player run in send order and none twice, no call waits past
/// its timeout beyond the time its caller was stopped, and calls succeed after the heal.
#[test]
fn rpc_passes_live_under_partitions_cuts_loss_kills_and_pauses() {
    let (out, text) = real(&[
        "cluster",
        "run",
        "rpc",
        "--duration",
        "16s",
        "--net",
        "--net-fault-every",
        "2s",
        "--net-fault-max",
        "6s",
        "--net-faults",
        "partition,cut,loss",
        "--kill-every",
        "6s",
        "--pause-every",
        "5s",
        "--pause-max",
        "4s",
        "--seed",
        "1",
    ]);
    assert!(
        out.status.success() && text.lines().any(|l| l == "PASSED"),
        "did not pass ({}):\n{text}",
        out.status
    );
    // The calls, their outcomes and the handlings came back as evidence and were checked.
    assert!(counter(&text, "rpc.calls") >= 200, "{text}");
    assert!(counter(&text, "rpc.ok") >= 100, "{text}");
    assert!(counter(&text, "rpc.handled_ordered") >= 50, "{text}");
    assert!(counter(&text, "liveness.processes_after_heal") >= 4, "{text}");
    assert!(counter(&text, "cluster.net_faults") >= 3, "{text}");
    assert!(counter(&text, "cluster.server_kills") >= 1, "{text}");
    assert!(counter(&text, "cluster.server_pauses") >= 1, "{text}");
}
