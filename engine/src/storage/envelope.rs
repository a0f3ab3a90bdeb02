//! The stored form of a value: a small JSON envelope carrying its version.
//!
//! ```json
//! {"v":3,"d":{"user_name":"alice","level":7}}
//! {"v":3,"r":2,"d":{"user_name":"alice","level":7}}
//! ```
//!
//! - `v`: the version, 1 on `create`, +1 on every `write` / `compare_and_write` (never 0).
//! - `r`: how often the key was refreshed (absent = 0). A refresh changes only the TTL, but it
//!   rewrites the bytes with `r + 1` so that every change of a key, TTL included, changes its
//!   bytes: an update's compare-and-set then fails if a refresh slipped in after the update
//!   read the TTL it is about to re-apply (see [`super`]'s "Expiry" notes).
//! - `d`: the caller's JSON value.
//!
//! Because `(v, r)` only grows, a key never holds the same bytes twice, so a compare-and-set
//! on the bytes has no ABA problem.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Envelope {
    pub(crate) v: u64,
    #[serde(default)]
    pub(crate) r: u64,
    pub(crate) d: Value,
}

/// The stored bytes for version `v`, refresh count `r` and the value's JSON text `d`.
pub(crate) fn encode(v: u64, r: u64, d: &[u8]) -> Bytes {
    debug_assert!(v >= 1, "versions start at 1");
    let head = if r == 0 { format!("{{\"v\":{v},\"d\":") } else { format!("{{\"v\":{v},\"r\":{r},\"d\":") };
    let mut out = Vec::with_capacity(head.len() + d.len() + 1);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(d);
    out.push(b'}');
    Bytes::from(out)
}

/// Parses stored bytes; any deviation from the format is an error message for `Corrupt`.
pub(crate) fn decode(b: &[u8]) -> Result<Envelope, String> {
    let e: Envelope = serde_json::from_slice(b).map_err(|e| format!("not a version envelope: {e}"))?;
    if e.v == 0 {
        return Err("version 0 (versions start at 1)".to_owned());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn format_is_as_documented() {
        let d = serde_json::to_vec(&json!({"level": 7})).unwrap();
        assert_eq!(&encode(3, 0, &d)[..], br#"{"v":3,"d":{"level":7}}"#);
        assert_eq!(&encode(3, 2, &d)[..], br#"{"v":3,"r":2,"d":{"level":7}}"#);
        assert_eq!(decode(&encode(3, 2, &d)).unwrap(), Envelope { v: 3, r: 2, d: json!({"level": 7}) });
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"null",
            b"{}",
            b"{\"v\":1}",
            b"{\"d\":1}",
            b"{\"v\":0,\"d\":1}",
            b"{\"v\":-1,\"d\":1}",
            b"{\"v\":1.5,\"d\":1}",
            b"{\"v\":1,\"d\":1,\"x\":2}",
            b"{\"v\":1,\"d\":1} trailing",
            b"[1,{}]",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(decode(b"{\"v\":1,\"d\":null}").unwrap().d, Value::Null);
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&b);
        }

        #[test]
        fn round_trips(v in 1u64.., r in any::<u64>(), s in ".*", n in any::<i64>()) {
            let d = json!({"s": s, "n": n, "a": [1, null, true]});
            let e = decode(&encode(v, r, &serde_json::to_vec(&d).unwrap())).unwrap();
            prop_assert_eq!(e, Envelope { v, r, d });
        }
    }
}
