//! Hostile clients against a real `sandtable-server` process (issue 20): one test per attack
//! of `real::bench::abuse`, each on its own private ZooKeeper, Redis and server, bounded in
//! time and connections (the bounds are the attack's constants in `real::bench::abuse`).
//!
//! Each test asserts that the server is alive and never panicked, that its resident memory
//! stays within [`RSS_PEAK_GROWTH_MAX_MIB`] of where it started during the attack and within
//! [`RSS_AFTER_GROWTH_MAX_MIB`] after it, and that every honest client (another source
//! address, and the attacker's own where the attack is about connections) was served within
//! [`HONEST_WITHIN`] during and after the attack. A failure prints the measured figures.
//!
//! The tests run one at a time ([`SERIAL`]): an attack's CPU and memory must not be
//! measured as another's.

use std::time::Duration;

use real::bench::abuse::{self, Measurement, Services, Target};

/// The server's resident memory may grow at most this much over its level before the attack,
/// at the attack's peak.
const RSS_PEAK_GROWTH_MAX_MIB: f64 = 64.0;
/// ... and at most this much once the attack ended and its connections closed.
const RSS_AFTER_GROWTH_MAX_MIB: f64 = 32.0;
/// Every honest probe, during and after an attack, is served within this.
const HONEST_WITHIN: Duration = Duration::from_secs(1);

/// One attack at a time in this test binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `attack` on a fresh server and returns what it measured (the server's log tail is
/// printed if the attack itself could not be carried out).
async fn attack(name: &str) -> Measurement {
    let _one_at_a_time = SERIAL.lock().await;
    let services = tokio::task::block_in_place(Services::start).unwrap_or_else(|e| panic!("services: {e}"));
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_sandtable-server"));
    let mut target =
        Target::spawn(exe, &services, &format!("abuse-test-{name}")).unwrap_or_else(|e| panic!("spawn: {e}"));
    target.wait_healthy().await.unwrap_or_else(|e| panic!("server start: {e}"));
    let m = abuse::run_attack(name, &mut target)
        .await
        .unwrap_or_else(|e| panic!("{name}: the attack failed: {e}\n{}", target.log_tail()));
    eprintln!("{}", m.table());
    if m.server_panicked {
        eprintln!("{}", target.log_tail());
    }
    m
}

/// Every bound the measurement breaks, in words with the figures.
fn violations(m: &Measurement) -> Vec<String> {
    let mut v = Vec::new();
    if !m.server_alive {
        v.push("the server died".to_string());
    }
    if m.server_panicked {
        v.push("the server's log says it panicked".to_string());
    }
    let peak_growth = m.rss_peak_mib - m.rss_before_mib;
    if peak_growth > RSS_PEAK_GROWTH_MAX_MIB {
        v.push(format!(
            "resident memory peaked at {:.0} MiB, {peak_growth:.0} MiB over {:.0} MiB before (bound +{RSS_PEAK_GROWTH_MAX_MIB:.0} MiB)",
            m.rss_peak_mib, m.rss_before_mib
        ));
    }
    let after_growth = m.rss_after_mib - m.rss_before_mib;
    if after_growth > RSS_AFTER_GROWTH_MAX_MIB {
        v.push(format!(
            "resident memory after the attack is {:.0} MiB, {after_growth:.0} MiB over {:.0} MiB before (bound +{RSS_AFTER_GROWTH_MAX_MIB:.0} MiB)",
            m.rss_after_mib, m.rss_before_mib
        ));
    }
    let within_ms = HONEST_WITHIN.as_secs_f64() * 1e3;
    for h in &m.honest {
        for (phase, p) in [("during", &h.during), ("after", &h.after)] {
            if p.samples == 0 {
                v.push(format!("{}: no probe {phase} the attack", h.label()));
            }
            if p.failed > 0 {
                v.push(format!(
                    "{}: {} of {} probes {phase} the attack failed (first: {})",
                    h.label(),
                    p.failed,
                    p.samples,
                    p.first_failure.as_deref().unwrap_or("?")
                ));
            }
            if p.max_ms > within_ms {
                v.push(format!(
                    "{}: slowest probe {phase} the attack took {:.0} ms (median {:.0} ms; bound {within_ms:.0} ms)",
                    h.label(),
                    p.max_ms,
                    p.median_ms
                ));
            }
        }
    }
    v
}

fn assert_bounded(m: &Measurement) {
    let v = violations(m);
    assert!(
        v.is_empty(),
        "{}: {} bound(s) broken:\n- {}\n\n{}facts: {:?}",
        m.attack,
        v.len(),
        v.join("\n- "),
        m.table(),
        m.facts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_ping_flood_is_closed_and_memory_stays_bounded() {
    let m = attack("ping_flood").await;
    let closed = m.fact("closed_by_server_after_ms");
    // A flood the server closes before the first probe leaves no "during" window to probe.
    let mut v: Vec<String> = violations(&m)
        .into_iter()
        .filter(|e| !(closed.is_some() && e.ends_with("no probe during the attack")))
        .collect();
    if closed.is_none() {
        v.push(format!(
            "the flooding connection was not closed by the server within {:?} ({:.0} MiB of pings sent)",
            abuse::PING_FLOOD_FOR,
            m.fact("bytes_sent").unwrap_or(0.0) / (1024.0 * 1024.0)
        ));
    }
    assert!(
        v.is_empty(),
        "ping_flood: {} bound(s) broken:\n- {}\n\n{}facts: {:?}",
        v.len(),
        v.join("\n- "),
        m.table(),
        m.facts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_closed_and_their_memory_is_given_back() {
    let m = attack("slow_reader").await;
    let mut v = violations(&m);
    for n in 1..=abuse::SLOW_READER_CLIENTS {
        if m.fact(&format!("client{n}_closed_by_server_after_ms")).is_none() {
            v.push(format!("slow reader {n} was not closed by the server"));
        }
    }
    assert!(
        v.is_empty(),
        "slow_reader: {} bound(s) broken:\n- {}\n\n{}facts: {:?}",
        v.len(),
        v.join("\n- "),
        m.table(),
        m.facts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_websocket_handshakes_do_not_keep_an_honest_client_waiting() {
    assert_bounded(&attack("handshakes").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_admin_connections_do_not_starve_the_health_probe() {
    assert_bounded(&attack("admin_flood").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_on_the_admin_port_does_not_silence_health() {
    assert_bounded(&attack("admin_slowloris").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_tcp_connections_do_not_keep_an_honest_client_waiting() {
    assert_bounded(&attack("idle_tcp").await);
}
