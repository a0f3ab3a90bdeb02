//! User id -> logical shard, and the row keys of sharded data.
//!
//! **Which shard.** A user id made only of ASCII digits (at most 19, so it fits a `u64`)
//! goes to `id % logical_shards`, as seed 004 does ("根据用户的ID取模"); any other id goes to
//! `fnv1a64(utf8 bytes) % logical_shards` (64-bit FNV-1a: offset basis 0xcbf29ce484222325,
//! prime 0x100000001b3). Both are stable across versions, platforms and restarts: changing
//! them would strand every row, so they are fixed here and tested against known values.
//!
//! **Row keys.** Every row of sharded data starts with its shard: `s0007/{user}/{rest}`. A
//! shard move copies a shard with one prefix scan per table ([`shard_prefix`]), and a server
//! checks before writing that a key belongs to the shard it routes by ([`key_shard`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most logical shards a layout may have (4 decimal digits in a key prefix).
pub const LOGICAL_SHARDS_MAX: u32 = 4096;
/// The seed's default: "建议规划为32个数据库".
pub const LOGICAL_SHARDS_DEFAULT: u32 = 32;
/// Longest user id, in bytes (the rest of a 255-byte key is the shard prefix and the row's own
/// suffix).
pub const USER_ID_BYTES_MAX: usize = 128;

/// One logical shard, `0..logical_shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The shard of `user` among `logical_shards` (see the module doc).
pub fn shard_of(user: &str, logical_shards: u32) -> ShardId {
    assert!((1..=LOGICAL_SHARDS_MAX).contains(&logical_shards), "logical_shards out of range");
    let n = u64::from(logical_shards);
    let numeric = !user.is_empty() && user.len() <= 19 && user.bytes().all(|b| b.is_ascii_digit());
    let h = match user.parse::<u64>() {
        Ok(id) if numeric => id,
        _ => fnv1a64(user.as_bytes()),
    };
    ShardId(u32::try_from(h % n).expect("below logical_shards"))
}

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The prefix of every row key of `shard`: `s0007/`.
pub fn shard_prefix(shard: ShardId) -> String {
    format!("s{:04}/", shard.0)
}

/// The row key of `user`'s row `suffix`: `s0007/{user}/{suffix}`.
pub fn user_key(shard: ShardId, user: &str, suffix: &str) -> String {
    format!("{}{user}/{suffix}", shard_prefix(shard))
}

/// The prefix of every row key of `user`: `s0007/{user}/`.
pub fn user_prefix(shard: ShardId, user: &str) -> String {
    format!("{}{user}/", shard_prefix(shard))
}

/// The shard a row key belongs to, if it has the `sNNNN/` form.
pub fn key_shard(key: &str) -> Option<ShardId> {
    let digits = key.strip_prefix('s')?.get(..4)?;
    if key.as_bytes().get(5) != Some(&b'/') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(ShardId)
}

/// Checks a user id: 1 to [`USER_ID_BYTES_MAX`] bytes, no `/` (it delimits keys) and no NUL.
pub fn validate_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > USER_ID_BYTES_MAX {
        return Err(format!("user id of {} bytes: must be 1 to {USER_ID_BYTES_MAX}", user.len()));
    }
    if user.contains(['/', '\0']) {
        return Err(format!("user id {user:?} contains '/' or NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_user_ids_go_to_id_mod_shards_as_the_seed_does() {
        assert_eq!(shard_of("0", 32), ShardId(0));
        assert_eq!(shard_of("7", 32), ShardId(7));
        assert_eq!(shard_of("39", 32), ShardId(7));
        assert_eq!(shard_of("18446744073709551615", 32), shard_of("18446744073709551615", 32));
        assert_eq!(shard_of("1000000000000000007", 32), ShardId((1_000_000_000_000_000_007u64 % 32) as u32));
    }

    #[test]
    fn other_user_ids_use_a_fixed_fnv1a_hash() {
        // Known FNV-1a 64 values: changing the hash would strand every stored row.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(shard_of("foobar", 32), ShardId((0x8594_4171_f739_67e8u64 % 32) as u32));
        // Not numeric: a sign, a space, too many digits.
        assert_eq!(shard_of("-7", 32), ShardId((fnv1a64(b"-7") % 32) as u32));
        let twenty = "12345678901234567890";
        assert_eq!(shard_of(twenty, 32), ShardId((fnv1a64(twenty.as_bytes()) % 32) as u32));
    }

    #[test]
    fn keys_carry_their_shard_and_parse_back() {
        let k = user_key(ShardId(7), "u1", "inventory/3");
        assert_eq!(k, "s0007/u1/inventory/3");
        assert!(k.starts_with(&user_prefix(ShardId(7), "u1")));
        assert_eq!(key_shard(&k), Some(ShardId(7)));
        for bad in ["", "s", "s007/x", "x0007/", "s00a7/x", "s0007x"] {
            assert_eq!(key_shard(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn user_ids_may_not_contain_the_key_delimiter() {
        assert!(validate_user("u1").is_ok());
        assert!(validate_user("").is_err());
        assert!(validate_user("a/b").is_err());
        assert!(validate_user(&"u".repeat(USER_ID_BYTES_MAX + 1)).is_err());
    }
}
