//! Faults aimed at a scenario's roles end to end: in `coord_lock`, a pause aimed at
//! `@lock-holder` hits the client that holds the lock at that instant (the trace shows the
//! lock acquired by that client and not yet released), and the plan prints the role, not a
//! node.

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
