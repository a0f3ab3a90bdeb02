//! The `Rand` port of simulated nodes.
//!
//! Runs give every node incarnation its own stream ([`NodeRand`]), forked from the run seed
//! by node name and incarnation, so one node's extra draw does not shift every other node's
//! choices (madsim's global generator still drives the simulator's own choices: network
//! delays, task order). [`SimRand`] draws from that global generator; tests that build
//! nodes by hand use it.

use engine::env::Rand;
use rand::RngCore;
use scenarios::seed_rng::SeedRng;

/// Draws from the run's seeded global generator. Every draw happens at a deterministic point
/// of the deterministic schedule, so a run replays from its seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimRand;

impl Rand for SimRand {
    fn next_u64(&self) -> u64 {
        madsim::rand::thread_rng().next_u64()
    }
}

/// One node incarnation's own generator: SplitMix64 forked from the run seed by the node's
/// name and incarnation (0 for its first start, 1 after its first restart, ...).
#[derive(Debug)]
pub struct NodeRand(SeedRng);

impl NodeRand {
    pub fn new(run_seed: u64, node: &str, incarnation: u64) -> Self {
        NodeRand(SeedRng::new(run_seed).fork("node-rand").fork(&format!("{node}#{incarnation}")))
    }
}

impl Rand for NodeRand {
    fn next_u64(&self) -> u64 {
        self.0.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(r: &NodeRand) -> Vec<u64> {
        (0..4).map(|_| r.next_u64()).collect()
    }

    #[test]
    fn a_node_incarnation_draws_the_same_stream_for_the_same_seed() {
        assert_eq!(draws(&NodeRand::new(3, "client-0", 0)), draws(&NodeRand::new(3, "client-0", 0)));
    }

    #[test]
    fn nodes_incarnations_and_seeds_draw_different_streams() {
        let base = draws(&NodeRand::new(3, "client-0", 0));
        assert_ne!(base, draws(&NodeRand::new(3, "client-1", 0)));
        assert_ne!(base, draws(&NodeRand::new(3, "client-0", 1)));
        assert_ne!(base, draws(&NodeRand::new(4, "client-0", 0)));
    }

    #[test]
    fn one_nodes_extra_draws_do_not_shift_another_nodes_stream() {
        let a = NodeRand::new(3, "client-0", 0);
        let b = NodeRand::new(3, "client-1", 0);
        let quiet = draws(&NodeRand::new(3, "client-1", 0));
        for _ in 0..100 {
            a.next_u64();
        }
        assert_eq!(draws(&b), quiet);
    }
}
