//! [`SeedRand`]: a seeded `Rand` for tests.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::env::Rand;

/// splitmix64 over a counter: the same seed gives the same draws, in every run.
#[derive(Debug, Default)]
pub struct SeedRand(AtomicU64);

impl SeedRand {
    pub fn new(seed: u64) -> Self {
        SeedRand(AtomicU64::new(seed))
    }
}

impl Rand for SeedRand {
    fn next_u64(&self) -> u64 {
        let mut z =
            self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
