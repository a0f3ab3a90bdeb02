//! A small seeded generator for things decided *before* a run starts (fault plans, topology
//! choices), where no simulator is running yet.
//!
//! SplitMix64 (Steele, Lea & Flood 2014): 64 bits of state, passes BigCrush, and — unlike
//! `rand::StdRng` — its output is fixed forever, so a plan printed today replays next year.
//! Ten lines do not justify a dependency.

use engine::env::Rand;
use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64. Interior mutability so it can serve as a `&dyn Rand`.
#[derive(Debug)]
pub struct SeedRng {
    state: AtomicU64,
}

impl SeedRng {
    pub fn new(seed: u64) -> Self {
        SeedRng { state: AtomicU64::new(seed) }
    }

    /// An independent child stream, e.g. one per purpose, so adding draws to one purpose
    /// does not shift every other decision of the same seed.
    pub fn fork(&self, label: &str) -> SeedRng {
        let mut h = self.next_u64();
        for b in label.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        SeedRng::new(h)
    }
}

impl Rand for SeedRng {
    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_output() {
        // Reference values of SplitMix64 seeded with 0 (from the published algorithm).
        let r = SeedRng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
