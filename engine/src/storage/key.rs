//! [`Key`]: the name of one stored value (iFun's `CrossServerStorage::Key`, a UUID).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::env::{Rand, RandExt};

/// Length of a key's text form: 32 hex digits and 4 hyphens (`8-4-4-4-12`).
pub const KEY_TEXT_BYTES: usize = 36;

/// Byte offsets of the hyphens in a key's text form.
const HYPHEN_AT: [usize; 4] = [8, 13, 18, 23];

/// The name of one value in cross-server storage: a UUID, written hyphenated and lowercase
/// (`0b6c5f1e-8d0a-4c8e-9f1e-2a3b4c5d6e7f`), as iFun prints a `CrossServerStorage::Key`.
///
/// Keys made by [`CrossServerStorage::create`](super::CrossServerStorage::create) are random
/// (version 4, drawn from the `Rand` port), so a key is also an unguessable token: the seed's
/// one-shot authentication key is exactly such a key handed to a client.
///
/// Parsing ([`FromStr`]) accepts only the 36-character hyphenated form, in either case; the
/// braced, URN and hyphen-less forms some UUID parsers take are refused, so one key has one
/// spelling on the wire. Serde uses the same text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(uuid::Uuid);

impl Key {
    /// A key for a UUID chosen by the caller (see
    /// [`CrossServerStorage::create_with_key`](super::CrossServerStorage::create_with_key)).
    pub const fn from_uuid(id: uuid::Uuid) -> Key {
        Key(id)
    }

    /// A fresh random (version 4) key drawn from `rand`.
    pub fn random(rand: &dyn Rand) -> Key {
        Key(rand.uuid())
    }

    /// The UUID.
    pub const fn uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl From<uuid::Uuid> for Key {
    fn from(id: uuid::Uuid) -> Key {
        Key(id)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// Why a string is not a [`Key`]. Positions are byte offsets into the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// Not 36 bytes long. Check the key was not truncated or wrapped (braces, `urn:uuid:`).
    #[error("a key is {KEY_TEXT_BYTES} characters (8-4-4-4-12 hex digits), found {found} bytes")]
    Length { found: usize },
    /// A hyphen is missing from its place (8, 13, 18 or 23).
    #[error("expected '-' at position {index}")]
    Hyphen { index: usize },
    /// A byte that should be a hex digit is something else.
    #[error("expected a hex digit at position {index}")]
    NotHex { index: usize },
}

impl FromStr for Key {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Key, KeyParseError> {
        let b = s.as_bytes();
        if b.len() != KEY_TEXT_BYTES {
            return Err(KeyParseError::Length { found: b.len() });
        }
        let mut id = [0u8; 16];
        let mut nibbles = 0usize;
        for (index, &c) in b.iter().enumerate() {
            if HYPHEN_AT.contains(&index) {
                if c != b'-' {
                    return Err(KeyParseError::Hyphen { index });
                }
                continue;
            }
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(KeyParseError::NotHex { index }),
            };
            id[nibbles / 2] |= if nibbles & 1 == 0 { d << 4 } else { d }; // high nibble first
            nibbles += 1;
        }
        debug_assert_eq!(nibbles, 32);
        Ok(Key(uuid::Uuid::from_bytes(id)))
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TEXT: &str = "0b6c5f1e-8d0a-4c8e-9f1e-2a3b4c5d6e7f";

    #[test]
    fn round_trips_and_is_lowercase() {
        let k: Key = TEXT.parse().unwrap();
        assert_eq!(k.to_string(), TEXT);
        let upper: Key = TEXT.to_uppercase().parse().unwrap();
        assert_eq!(upper, k);
        assert_eq!(upper.to_string(), TEXT);
        assert_eq!(k.uuid(), uuid::Uuid::parse_str(TEXT).unwrap());
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{TEXT}\""));
        assert_eq!(serde_json::from_str::<Key>(&format!("\"{TEXT}\"")).unwrap(), k);
    }

    #[test]
    fn garbage_is_refused_with_a_position() {
        use KeyParseError::*;
        let cases: &[(&str, KeyParseError)] = &[
            ("", Length { found: 0 }),
            ("0b6c5f1e8d0a4c8e9f1e2a3b4c5d6e7f", Length { found: 32 }),
            ("{0b6c5f1e-8d0a-4c8e-9f1e-2a3b4c5d6e7f}", Length { found: 38 }),
            ("0b6c5f1e_8d0a-4c8e-9f1e-2a3b4c5d6e7f", Hyphen { index: 8 }),
            ("0b6c5f1e-8d0a-4c8e-9f1e2-a3b4c5d6e7f", Hyphen { index: 23 }),
            ("0b6c5f1g-8d0a-4c8e-9f1e-2a3b4c5d6e7f", NotHex { index: 7 }),
            ("0b6c5f1e-8d0a-4c8e-9f1e-2a3b4c5d6e7 ", NotHex { index: 35 }),
            // 'é' is two bytes, so this is 36 bytes with a non-ASCII byte at 34.
            ("0b6c5f1e-8d0a-4c8e-9f1e-2a3b4c5d6eé", NotHex { index: 34 }),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<Key>(), Err(*want), "{s:?}");
        }
        assert!(serde_json::from_str::<Key>("\"nope\"").unwrap_err().to_string().contains("36 characters"));
        assert_eq!(
            Length { found: 3 }.to_string(),
            "a key is 36 characters (8-4-4-4-12 hex digits), found 3 bytes"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            if let Ok(k) = s.parse::<Key>() {
                prop_assert_eq!(k.to_string(), s.to_lowercase());
            }
        }

        #[test]
        fn key_shaped_strings_parse_exactly_when_hex(s in "[0-9a-fA-Fg-z]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}") {
            let ok = s.parse::<Key>().is_ok();
            prop_assert_eq!(ok, s[..8].bytes().all(|c| c.is_ascii_hexdigit()));
        }

        #[test]
        fn every_uuid_round_trips(bytes in any::<[u8; 16]>()) {
            let k = Key::from_uuid(uuid::Uuid::from_bytes(bytes));
            prop_assert_eq!(k.to_string().parse::<Key>(), Ok(k));
            prop_assert_eq!(k.to_string(), uuid::Uuid::from_bytes(bytes).hyphenated().to_string());
        }
    }
}
