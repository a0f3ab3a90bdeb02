//! Running the `real` binary as a user would and reading its printed counters.

use std::process::{Command, Output};

/// Runs `real ARGS…`; its output and stdout + stderr as one text.
pub fn run_real(args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_real")).args(args).output().expect("runs the real binary");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

/// The value of `counter NAME = V` in the output, if printed.
pub fn counter_of(text: &str, name: &str) -> Option<u64> {
    let prefix = format!("counter {name} = ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// The value of `counter NAME = V` in the output; panics with the output if absent.
pub fn counter(text: &str, name: &str) -> u64 {
    counter_of(text, name).unwrap_or_else(|| panic!("no counter {name} in:\n{text}"))
}

/// The run's network namespaces (servers' and services'): the `sandtable-TAG-*` names of the
/// `hosts:` line a `--net` run prints.
pub fn namespaces(text: &str) -> Vec<String> {
    let hosts = text
        .lines()
        .find_map(|l| l.strip_prefix("hosts: "))
        .unwrap_or_else(|| panic!("no hosts line:\n{text}"));
    hosts
        .split(", ")
        .filter_map(|h| h.split_whitespace().find(|t| t.starts_with("sandtable-")))
        .map(String::from)
        .collect()
}

/// `ip netns list`'s output.
pub fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `counter NAME = V` in the output, 0 if absent (a fault kind never drawn).
pub fn counter_or_zero(text: &str, name: &str) -> u64 {
    counter_of(text, name).unwrap_or(0)
}
