//! Faults aimed at a scenario's roles end to end: in `coord_lock`, a pause aimed at
//! `@lock-holder` hits the client that holds the lock at that instant (the trace shows the
//! lock acquired by that client and not yet released), and the plan prints the role, not a
//! node. In `object_lending`, pauses wait for a server in the middle of a transaction.

use std::process::Command;

fn replay(scenario: &str, seed: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["replay", scenario, "--seed", seed])
        .output()
        .expect("run the sim binary");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (seconds, node, message) of a trace line `  1.234567s node  LEVEL target: message`.
fn parse(line: &str) -> Option<(f64, &str, &str)> {
    let mut words = line.split_whitespace();
    let t = words.next()?.strip_suffix('s')?.parse().ok()?;
    let node = words.next()?;
    let (_, msg) = line.split_once(": ")?;
    Some((t, node, msg))
}

#[test]
fn a_pause_aimed_at_the_lock_holder_hits_the_client_holding_the_lock() {
    // Seeds 5 and 6 each aim two pauses at the holder (see `sim replay coord_lock --seed 5`).
    let mut checked = 0;
    for seed in ["5", "6"] {
        let out = replay("coord_lock", seed);
        assert!(out.contains("pause @lock-holder"), "the plan names the role: {out}");
        let lines: Vec<(f64, &str, &str)> = out.lines().filter_map(parse).collect();
        for (i, (t, _, msg)) in lines.iter().enumerate() {
            let Some(rest) = msg.strip_prefix("fault: pause ") else { continue };
            let Some((node, "(aimed: pause @lock-holder)")) = rest.split_once(' ') else { continue };
            // The last lock event before the pause: the paused client acquired it.
            let last = lines[..i]
                .iter()
                .rev()
                .find(|(_, _, m)| m.starts_with("lock acquired") || m.starts_with("lock released"))
                .unwrap_or_else(|| panic!("seed {seed}: a holder before the pause at {t}s"));
            assert_eq!(
                (last.1, last.2.starts_with("lock acquired")),
                (node, true),
                "seed {seed}: the pause at {t}s hit {node}, but the lock's last event was {last:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} aimed pauses found");
}

#[test]
fn a_pause_waiting_for_a_server_mid_transaction_applies_within_its_wait_or_is_skipped() {
    // Seed 270 of `object_lending` draws two pauses aimed at `@mid-transaction`, each allowed
    // to wait up to 2000 ms for a server to play it (see `sim replay object_lending --seed 270`).
    let out = replay("object_lending", "270");
    let lines: Vec<(f64, &str, &str)> = out.lines().filter_map(parse).collect();
    let (mut waited, mut outcomes) = (0, 0);
    for (i, (t0, _, msg)) in lines.iter().enumerate() {
        if *msg != "wait: pause @mid-transaction (up to 2000 ms for its role)" {
            continue;
        }
        waited += 1;
        // Its outcome: the next pause aimed at the role, or the skip of one.
        let (t1, _, outcome) = lines[i + 1..]
            .iter()
            .find(|(_, _, m)| {
                m.ends_with("(aimed: pause @mid-transaction)") || m.starts_with("skip: pause @mid")
            })
            .unwrap_or_else(|| panic!("the wait at {t0}s ends"));
        assert!(
            *t1 >= *t0 && *t1 <= t0 + 2.0,
            "applied or skipped within the wait: {t0}s -> {t1}s {outcome}"
        );
        if outcome.starts_with("fault: pause game-") {
            assert!(*t1 > *t0, "it waited for a server mid-transaction: {t0}s -> {t1}s");
        }
        outcomes += 1;
    }
    // The first finds no server mid-transaction at its instant and waits; the second finds
    // one at once (no `wait:` line) and applies then.
    assert_eq!((waited, outcomes), (1, 1), "{out}");
    let ends = lines
        .iter()
        .filter(|(_, _, m)| {
            m.ends_with("(aimed: pause @mid-transaction)") || m.starts_with("skip: pause @mid")
        })
        .count();
    assert_eq!(ends, 2, "both pauses applied or skipped: {out}");
    assert!(
        out.contains("pause @mid-transaction (waits up to 2000 ms for its role)"),
        "the plan shows the wait"
    );
}
