//! The `Rand` port on madsim's seeded global generator.

use engine::env::Rand;
use rand::RngCore;

/// Draws from the run's seeded generator. Every draw happens at a deterministic point of the
/// deterministic schedule, so a run replays from its seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimRand;

impl Rand for SimRand {
    fn next_u64(&self) -> u64 {
        madsim::rand::thread_rng().next_u64()
    }
}
