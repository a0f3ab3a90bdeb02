//! The `Rand` port: all randomness, so that one seed decides a whole simulated run.

use std::ops::Range;

/// A source of random bits. Under the simulator it is seeded (a run replays from its seed);
/// on the real backend it is the OS generator.
pub trait Rand: Send + Sync {
    /// A uniformly random 64-bit value.
    fn next_u64(&self) -> u64;

    /// Fills `buf` with random bytes.
    fn fill_bytes(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Convenience draws built on [`Rand::next_u64`]; available on every `Rand`, including `dyn Rand`.
pub trait RandExt: Rand {
    /// Uniform in `range` (Lemire's multiply-shift; bias below 2^-32 for ranges under 2^32).
    ///
    /// # Panics
    /// If the range is empty (a programming error, not input).
    fn gen_range(&self, range: Range<u64>) -> u64 {
        assert!(range.start < range.end, "empty range {range:?}");
        let span = range.end - range.start;
        let x = self.next_u64();
        range.start + ((u128::from(x) * u128::from(span)) >> 64) as u64
    }

    /// True with probability `p` (clamped to 0..=1).
    fn gen_bool(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // 53 random bits give a uniform double in [0, 1).
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// A random (version 4) UUID built from this port's bits.
    fn uuid(&self) -> uuid::Uuid {
        let mut b = [0u8; 16];
        self.fill_bytes(&mut b);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }

    /// Picks an element of `items` uniformly; `None` if empty.
    fn choose<'a, T>(&self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.gen_range(0..items.len() as u64) as usize])
        }
    }
}

impl<R: Rand + ?Sized> RandExt for R {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Counter(AtomicU64);
    impl Rand for Counter {
        fn next_u64(&self) -> u64 {
            // splitmix64 of a counter: good enough to exercise the helpers.
            let mut z = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn gen_range_stays_in_range_and_covers_it() {
        let r = Counter(AtomicU64::new(1));
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = r.gen_range(3..10);
            assert!((3..10).contains(&v));
            seen[(v - 3) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn uuid_is_v4() {
        let r = Counter(AtomicU64::new(7));
        let u = r.uuid();
        assert_eq!(u.get_version_num(), 4);
        assert_ne!(u, r.uuid());
    }
}
