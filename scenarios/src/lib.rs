//! Sandtable's scenarios: backend-agnostic workloads, fault plans, histories and invariant
//! checkers. Depends on `engine` and on the reference game (`game`, itself on `engine` only);
//! the `sim` runner and the real-cluster runner drive the same scenarios.
//!
//! # Layout
//! The framework, which names no scenario:
//! - [`scenario`]: the `Scenario` trait with its constant header ([`ScenarioMeta`]),
//!   topology and phases.
//! - [`faults`]: seeded fault plans (chaos, then heal) and the fault space a scenario allows
//!   ([`faults::FaultSpace::builder`] over [`Nodes`] groups, [`faults::FaultKind`] weights).
//! - [`history`]: invoke/ok/fail/info operation records with true simulated time.
//! - [`checker`]: the checker framework (reports whose violations are safety or liveness),
//!   the per-key linearizability checker and liveness after the heal.
//! - [`acting`]: acting intervals of logins (shared by the login scenarios' checkers).
//! - [`evidence`]: what servers report for the checkers, as data (out-of-process servers).
//! - [`seed_rng`]: the fixed, forkable generator behind plans and per-node randomness.
//! - [`workload`]: workload limits (clients, operations per node, phase lengths) and the
//!   operation budget every workload loop takes from, for `shrink`.
//! - [`lookup`]: a scenario (and planted bug) by name, for every runner.
//!
//! How scenarios host the reference game (the `game` crate): [`game_host`]; a wire client
//! for workloads: [`game_client`].
//!
//! The [`catalogue`], one module per scenario:
//! - `coord_lock`, `kv_register`: the first scenarios (coordination and KV fakes).
//! - `membership`: cluster membership, tags, shared status.
//! - `rpc`: typed RPC: replies, per-key order, at-most-once, timeouts.
//! - `pvp_transfer`: the reference game's auth-key transfer under chaos.
//! - `login_unique`: cluster-unique, fenced login.
//! - `redirect/`, `broadcast/`: signed client redirection; send/broadcast to accounts.
//! - `sql_register/`: fenced, versioned rows on several SQL instances (the `Db` port).

pub mod acting;
pub mod catalogue;
pub mod checker;
pub mod evidence;
pub mod faults;
pub mod game_client;
pub mod game_host;
pub mod history;
pub mod roles;
pub mod scenario;
pub mod seed_rng;
pub mod sql_rig;
pub mod workload;

use std::sync::Arc;

pub use catalogue::all;
pub use scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, ServerCtx,
    ServerDirectory, ServerSpec, SqlSpec, Topology,
};
pub use workload::{OpBudget, Workload};

/// Why [`lookup`] found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown scenario {name:?}; scenarios: {}", known.join(", "))]
    UnknownScenario { name: String, known: Vec<&'static str> },
    #[error("scenario {scenario} has no planted bug {bug:?}; its bugs: {}", known.join(", "))]
    UnknownBug { scenario: &'static str, bug: String, known: Vec<&'static str> },
}

/// The scenario called `name`, with `bug` (if any) checked against its planted bugs: what
/// every runner (simulator, live cluster, tests) resolves its command line with.
pub fn lookup(name: &str, bug: Option<&str>) -> Result<Arc<dyn Scenario>, LookupError> {
    let all = all();
    let known: Vec<&'static str> = all.iter().map(|s| s.meta().name).collect();
    let Some(s) = all.into_iter().find(|s| s.meta().name == name) else {
        return Err(LookupError::UnknownScenario { name: name.to_string(), known });
    };
    if let Some(b) = bug {
        let meta = s.meta();
        if meta.bug(b).is_none() {
            return Err(LookupError::UnknownBug {
                scenario: meta.name,
                bug: b.to_string(),
                known: meta.bug_names(),
            });
        }
    }
    Ok(s)
}

/// Looks a scenario up by name (no bug check; see [`lookup`]).
pub fn by_name(name: &str) -> Option<Arc<dyn Scenario>> {
    lookup(name, None).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_every_scenario_and_its_bugs() {
        for s in all() {
            let meta = s.meta();
            assert_eq!(lookup(meta.name, None).map(|s| s.meta().name), Ok(meta.name));
            for b in meta.bugs {
                assert!(lookup(meta.name, Some(b.name)).is_ok(), "{} --bug {}", meta.name, b.name);
            }
        }
    }

    #[test]
    fn lookup_of_an_unknown_scenario_lists_the_names() {
        let Err(e) = lookup("nope", None) else { panic!("found a scenario called nope") };
        assert!(matches!(&e, LookupError::UnknownScenario { known, .. } if known.contains(&"coord_lock")));
        assert!(e.to_string().contains("kv_register"), "{e}");
    }

    #[test]
    fn lookup_of_an_unknown_bug_lists_the_scenarios_bugs() {
        let Err(e) = lookup("kv_register", Some("nope")) else { panic!("kv_register has no bug nope") };
        assert_eq!(
            e,
            LookupError::UnknownBug {
                scenario: "kv_register",
                bug: "nope".into(),
                known: vec!["stale-read"]
            }
        );
    }

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<_> = all().iter().map(|s| s.meta().name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
