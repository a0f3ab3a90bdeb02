//! The `Rand` port on the OS generator.

use engine::env::Rand;
use rand::RngCore;

#[derive(Debug, Clone, Copy, Default)]
pub struct OsRand;

impl Rand for OsRand {
    fn next_u64(&self) -> u64 {
        rand::rngs::OsRng.next_u64()
    }
    fn fill_bytes(&self, buf: &mut [u8]) {
        rand::rngs::OsRng.fill_bytes(buf)
    }
}
