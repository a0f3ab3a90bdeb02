//! Fixtures shared by the fuzz targets (`fuzz_targets/`) and the seed generator
//! (`examples/seeds.rs`): the fixed secret, clock reading and peer ids the targets verify
//! with, so that the seeds the generator signs are the ones the targets accept.

use engine::cluster::PeerId;
use engine::env::WallTime;
use engine::signed::{Kind, Payload, SECRET_BYTES};
use serde_json::Value;

/// The secret every signed-string target verifies with (redirect tokens and session keys).
pub const SECRET: [u8; SECRET_BYTES] = *b"fuzz-secret-fuzz-secret-fuzz-sec";

/// The verifier's wall clock for expiry checks (2023-11-14T22:13:20Z).
pub const NOW: WallTime = WallTime(1_700_000_000_000);

/// The user the session-key target claims to be in `verify_for` (besides the key's own user).
pub const CLAIMED_USER: &str = "alice";

/// The server that verifies redirect tokens (`check_claims`' `me`).
pub fn me() -> PeerId {
    PeerId::from_slice(&[2; 16]).expect("16 bytes")
}

/// The shard-map configuration `ShardMap::decode` checks stored maps against.
pub const LOGICAL_SHARDS: u32 = 4;

/// The SQL instances of that configuration.
pub fn instances() -> Vec<String> {
    vec!["db-0".to_string(), "db-1".to_string()]
}

/// The peer whose membership znode `parse_member` reads.
pub fn member() -> PeerId {
    PeerId::from_slice(&[3; 16]).expect("16 bytes")
}

/// The flavors every manifest is loaded with (`None`: the base alone).
pub const FLAVORS: [Option<&str>; 4] = [None, Some("game"), Some("pvp"), Some("lobby")];

/// True if `v` holds a non-integer number anywhere. serde_json (without its `float_roundtrip`
/// feature, which the workspace does not enable) may parse a float's shortest decimal form
/// back to a neighbouring `f64` (`5.5555555555555554e49` comes back as `...555e49`), so
/// round-trip properties do not compare values holding floats (only that they decode again).
pub fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

/// The first input byte picks a mode (`byte % modes`), the rest is the input proper.
pub fn split_mode(data: &[u8], modes: u8) -> Option<(u8, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((first % modes, rest))
}

/// The signed-string targets' input: by `mode` (from [`split_mode`] with 4 modes) the bytes as
/// text (0: lossy UTF-8; 1: strict, `None` if not UTF-8), or sealed with [`SECRET`] as a payload
/// of the target's own kind (2: the field parser behind the MAC sees fuzzed bytes, which a
/// forged MAC never reaches) or of the `other` kind (3: must never verify as the target's).
pub fn signed_input(mode: u8, rest: &[u8], own: Kind, other: Kind) -> Option<String> {
    let sealed = |kind: Kind| {
        let mut p = Payload::new(kind, rest.len());
        p.put_bytes(rest);
        p.seal(&SECRET)
    };
    Some(match mode {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => std::str::from_utf8(rest).ok()?.to_owned(),
        2 => sealed(own),
        _ => sealed(other),
    })
}

pub mod store;
