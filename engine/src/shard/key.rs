//! User id -> logical shard, and the row keys of sharded data.
//!
//! **Which shard.** A user id made only of ASCII digits (at most 19, so it fits a `u64`)
//! goes to `id % logical_shards`, as seed 004 does ("根据用户的ID取模"); any other id goes to
//! `fnv1a64(utf8 bytes) % logical_shards` (64-bit FNV-1a: offset basis 0xcbf29ce484222325,
//! prime 0x100000001b3). Both are stable across versions, platforms and restarts: changing
//! them would strand every row, so they are fixed here and tested against known values.
//!
//! **Row keys.** Every row of sharded data starts with its shard: `s0007/{name}/{rest}`, where
//! `name` is [`keyname::encode`] of the user id (the id itself for plain ids, else `%` and the
//! base64url of its bytes), so a user id may be any UTF-8 of 1 to [`USER_ID_BYTES_MAX`] bytes
//! (`/` and NUL included) and the segment still holds no `/` (the key prefix `s0007/{name}/` of
//! one user is never a prefix of another's keys) and no NUL (row keys refuse it). The shard is
//! chosen from the id itself, not its name. A shard move copies a shard with one prefix scan
//! per table ([`shard_prefix`]), and a server checks before writing that a key belongs to the
//! shard it routes by ([`key_shard`]). Code that reads a user back out of a key decodes the
//! segment ([`keyname::decode`]).
//!
//! **Lengths.** A row key has at most 255 bytes (`DB_KEY_BYTES_MAX`; `VARBINARY(255)` on
//! MariaDB). The user segment has at most [`USER_NAME_BYTES_MAX`] (172) bytes, so the prefix
//! `s0007/{name}/` has at most 179 and every user has at least [`ROW_SUFFIX_BYTES_MIN`] (76)
//! bytes for a row's own suffix; a plain id of `n` bytes leaves `248 - n`, as before.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::env::DB_KEY_BYTES_MAX;
use crate::keyname;

/// Most logical shards a layout may have (4 decimal digits in a key prefix).
pub const LOGICAL_SHARDS_MAX: u32 = 4096;
/// The seed's default: "建议规划为32个数据库".
pub const LOGICAL_SHARDS_DEFAULT: u32 = 32;
/// Longest user id, in bytes of UTF-8, measured on the id itself (the rest of a 255-byte
/// key is the shard prefix and the row's own suffix).
pub const USER_ID_BYTES_MAX: usize = 128;
/// Longest user segment of a row key: the name of a [`USER_ID_BYTES_MAX`]-byte id that
/// needs escaping (`1 + ⌈4 · 128 / 3⌉`).
pub const USER_NAME_BYTES_MAX: usize = keyname::encoded_bytes_max(USER_ID_BYTES_MAX);
/// Bytes of the shard prefix `s0007/`.
pub const SHARD_PREFIX_BYTES: usize = 6;
/// The room every user has for a row's own suffix: a row key's 255 bytes less the longest
/// `s0007/{name}/`.
pub const ROW_SUFFIX_BYTES_MIN: usize = DB_KEY_BYTES_MAX - SHARD_PREFIX_BYTES - USER_NAME_BYTES_MAX - 1;

const _: () = assert!(ROW_SUFFIX_BYTES_MIN >= 64, "every user keeps room for a row's own suffix");

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

/// The row key of `user`'s row `suffix`: `s0007/{name}/{suffix}` (`name`: the user id
/// encoded, [`keyname::encode`]).
pub fn user_key(shard: ShardId, user: &str, suffix: &str) -> String {
    format!("{}{}/{suffix}", shard_prefix(shard), keyname::encode(user))
}

/// The prefix of every row key of `user`: `s0007/{name}/`.
pub fn user_prefix(shard: ShardId, user: &str) -> String {
    format!("{}{}/", shard_prefix(shard), keyname::encode(user))
}

/// The user a row key `s0007/{name}/...` belongs to (`None` if the key has no such form or
/// the segment is not a name [`keyname::encode`] makes).
pub fn key_user(key: &str) -> Option<String> {
    key_shard(key)?;
    let name = key[SHARD_PREFIX_BYTES..].split('/').next()?;
    keyname::decode(name).ok().map(|u| u.into_owned())
}

/// The shard a row key belongs to, if it has the `sNNNN/` form.
pub fn key_shard(key: &str) -> Option<ShardId> {
    let digits = key.strip_prefix('s')?.get(..4)?;
    if key.as_bytes().get(5) != Some(&b'/') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(ShardId)
}

/// Checks a user id: 1 to [`USER_ID_BYTES_MAX`] bytes of UTF-8; any character is allowed
/// (keys hold its encoded name).
pub fn validate_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > USER_ID_BYTES_MAX {
        return Err(format!("user id of {} bytes: must be 1 to {USER_ID_BYTES_MAX}", user.len()));
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
    fn a_user_id_is_any_utf8_of_1_to_128_bytes() {
        for good in ["u1", "a/b", "a\0b", ".", "..", "%", "😀", &"u".repeat(USER_ID_BYTES_MAX)] {
            assert!(validate_user(good).is_ok(), "{good:?}");
        }
        assert!(validate_user("").is_err());
        assert!(validate_user(&"u".repeat(USER_ID_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn plain_user_ids_keep_their_keys_and_others_are_escaped_in_them() {
        assert_eq!(user_key(ShardId(7), "alice", "x"), "s0007/alice/x", "as before this encoding");
        assert_eq!(user_key(ShardId(7), "日本", "x"), "s0007/日本/x");
        assert_eq!(user_key(ShardId(7), "a/b", "x"), "s0007/%YS9i/x");
        assert_eq!(user_prefix(ShardId(7), "a/b"), "s0007/%YS9i/");
        assert_eq!(user_key(ShardId(7), "a\0", "x"), "s0007/%YQA/x");
        // The shard comes from the id, not its name.
        assert_eq!(shard_of("a/b", 32), ShardId((fnv1a64(b"a/b") % 32) as u32));
    }

    #[test]
    fn one_users_prefix_is_never_a_prefix_of_another_users_keys() {
        // Before the encoding, user "a" would have scanned the rows of user "a/b".
        let a = user_prefix(ShardId(1), "a");
        assert!(!user_key(ShardId(1), "a/b", "x").starts_with(&a));
        assert!(user_key(ShardId(1), "a", "b/x").starts_with(&a));
    }

    #[test]
    fn a_keys_user_is_read_back_from_its_name() {
        for user in ["alice", "a/b", "%", "😀"] {
            assert_eq!(key_user(&user_key(ShardId(3), user, "q")).as_deref(), Some(user));
        }
        for bad in ["s0003", "s0003/", "x0003/a/q", "s0003/a%b/q", "s0003/%YWJj/q"] {
            assert_eq!(key_user(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_longest_user_name_leaves_room_for_a_suffix() {
        assert_eq!((USER_NAME_BYTES_MAX, ROW_SUFFIX_BYTES_MIN), (172, 76));
        let longest = "/".repeat(USER_ID_BYTES_MAX);
        let key = user_key(ShardId(4095), &longest, &"x".repeat(ROW_SUFFIX_BYTES_MIN));
        assert_eq!(key.len(), DB_KEY_BYTES_MAX);
        assert!(crate::env::validate_key(&key).is_ok());
    }
}
