//! Ids as names in backend keys: the one encoding of an id (an account id, a shard user, an
//! object key: any UTF-8 string) into a ZooKeeper node name, which is also a segment of a
//! SQL row key. Pure: no I/O, no allocation for the common (plain) case.
//!
//! # The encoding
//!
//! A character is **plain** if ZooKeeper accepts it in a node name
//! ([`is_znode_char`](crate::env::is_znode_char): not NUL, not U+0001–U+001F, U+007F–U+009F,
//! U+E000–U+F8FF, U+FFF0–U+FFFF, not above U+FFFF) and it is neither `/` nor the escape
//! character [`ESCAPE`] (`%`). An id is **plain** if it is non-empty, is not `.` or `..`, and
//! every character of it is plain: ASCII letters, digits, space and punctuation other than
//! `/` and `%`, and almost every letter or symbol of every script (`alice`, `user-42`,
//! `a.b@c+d`, `日本`, `ünï côdé`).
//!
//! - [`encode`] of a plain id is the id itself.
//! - [`encode`] of any other id is `%` followed by the unpadded base64url (RFC 4648 §5:
//!   `A`–`Z`, `a`–`z`, `0`–`9`, `-`, `_`) of its UTF-8 bytes: `a/b` → `%YS9i`, `.` → `%Lg`,
//!   `100%` → `%MTAwJQ`, `😀` → `%8J-YgA`, and the empty string → `%`.
//!
//! **Injective.** A plain id's name contains no `%`; every other name starts with `%`, and
//! base64 is injective. [`decode`] inverts [`encode`] and refuses every name `encode` never
//! produces (a non-plain name without `%`, bad or non-canonical base64, bytes that are not
//! UTF-8, a base64 form of a plain id), so `decode(encode(id)) == id` for every id and
//! `encode(decode(name)) == name` whenever `decode` succeeds.
//!
//! **Legal everywhere it is used.** Every name is non-empty, never `.` or `..`, and holds
//! only plain characters and `%`, all of which ZooKeeper accepts; it contains no `/` (so it
//! is one path segment and one row-key segment: a key prefix `s0007/{name}/` is never a
//! prefix of another id's keys) and no NUL (which row keys refuse). ZooKeeper reserves the
//! name `zookeeper` only directly under the root; encoded names always go deeper
//! (`/{app_id}/…`), so it needs no escape.
//!
//! **Length.** A plain id of `n` bytes stays `n` bytes; any other becomes
//! `1 + ⌈4n/3⌉` bytes. [`encoded_bytes_max`] is that bound; for the longest account id
//! ([`ACCOUNT_BYTES_MAX`](crate::signed::ACCOUNT_BYTES_MAX), 64 bytes) it is 87 bytes, for
//! the longest shard user and object key (128 bytes) 172.
//!
//! **Why base64 of the whole id, not `%XX` per byte.** Percent-encoding triples an escaped
//! byte; base64 costs a third. The binding limit is the SQL row key (255 bytes,
//! `VARBINARY(255)` on MariaDB): an object keyed by an account id in that account's shard has
//! the id in its key twice (`s0007/{user}/{model}.{key}`), and with base64 every such key
//! fits for every account id and every model name (checked at compile time in
//! [`crate::orm`]); with `%XX` it would fit only for ids of at most 30 bytes.
//!
//! **Compatibility.** Earlier versions put ids into znode names and row keys as they were,
//! refusing only `/`, NUL, `.` and `..`. For every id those versions could store on a real
//! ZooKeeper (whose own check refuses the non-plain characters above) the name is unchanged
//! unless the id contains `%`: existing `/{app_id}/active_accounts/{id}` nodes, owner
//! records and rows of ASCII ids without `%` keep their names, and servers of both versions
//! agree on them during a rolling upgrade. Rows of a shard user (or objects with a key)
//! containing `%`, a control character, a private-use character, U+FFF0–U+FFFF or a
//! character above U+FFFF (emoji), written by an earlier version, are under the raw id and
//! are not found under the new name.
//!
//! Ids are compared as bytes: no Unicode normalisation (`é` and `e` + U+0301 are two ids).
//!
//! # Where ids become names
//!
//! | backend key | id | here |
//! |---|---|---|
//! | `/{app_id}/active_accounts/{name}` (ZooKeeper) | account id | [`encode`] |
//! | `/{app_id}/objects/{model}/{name}` (ZooKeeper, object owner) | object key | [`encode`] |
//! | `s0007/{name}/{suffix}` (SQL row key) | shard user | [`encode`] ([`crate::shard::key::user_key`]) |
//! | `{model}.{name}` (the suffix of an object's row key) | object key | [`encode`] |
//! | `user:{id}` (Redis, the reference game's user record) | account id | as it is: Redis keys are binary-safe and the fixed prefix keeps it injective |

use std::borrow::Cow;

use crate::env::is_znode_char;

/// The escape character: every name that is not a plain id starts with it, and no plain id
/// contains it.
pub const ESCAPE: char = '%';

/// Bytes of the longest name [`encode`] makes of an id of `id_bytes` bytes:
/// `1 + ⌈4 · id_bytes / 3⌉`.
pub const fn encoded_bytes_max(id_bytes: usize) -> usize {
    1 + (4 * id_bytes).div_ceil(3)
}

/// Why [`decode`] refused a name: it is not one [`encode`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No escape character, but not a plain id either.
    #[error("not a plain id and not escaped")]
    NotPlain,
    /// After the escape character: not unpadded base64url, or not its canonical form.
    #[error("bad base64url after the escape character")]
    BadBase64,
    /// The escaped bytes are not UTF-8.
    #[error("the escaped bytes are not UTF-8")]
    NotUtf8,
    /// The escaped id is plain: its name is the id itself.
    #[error("an escaped plain id")]
    NotCanonical,
}

/// Whether `c` may appear in a name as it is: ZooKeeper accepts it, and it is neither `/`
/// nor [`ESCAPE`].
pub fn is_plain_char(c: char) -> bool {
    c != '/' && c != ESCAPE && is_znode_char(c)
}

/// Whether `id` is its own name: non-empty, not `.` or `..`, only plain characters.
pub fn is_plain(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && id.chars().all(is_plain_char)
}

/// The name of `id` (module doc): `id` itself if it is plain, else `%` and the base64url of
/// its bytes. Total: every string, the empty one included, has a name.
pub fn encode(id: &str) -> Cow<'_, str> {
    if is_plain(id) {
        return Cow::Borrowed(id);
    }
    let mut name = String::with_capacity(encoded_bytes_max(id.len()));
    name.push(ESCAPE);
    base64url_encode(id.as_bytes(), &mut name);
    Cow::Owned(name)
}

/// The id whose name is `name`; an error for anything [`encode`] never produces.
pub fn decode(name: &str) -> Result<Cow<'_, str>, DecodeError> {
    let Some(b64) = name.strip_prefix(ESCAPE) else {
        return if is_plain(name) { Ok(Cow::Borrowed(name)) } else { Err(DecodeError::NotPlain) };
    };
    let bytes = base64url_decode(b64).ok_or(DecodeError::BadBase64)?;
    let id = String::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
    if is_plain(&id) {
        return Err(DecodeError::NotCanonical);
    }
    Ok(Cow::Owned(id))
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Appends the unpadded base64url of `bytes` to `out`.
fn base64url_encode(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let v = (b(0) << 16) | (b(1) << 8) | b(2);
        // n bytes carry 8n bits: n + 1 sextets.
        for i in 0..=chunk.len() {
            let sextet = (v >> (18 - 6 * i)) & 63;
            out.push(char::from(BASE64URL[sextet as usize]));
        }
    }
}

fn base64url_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// The bytes of canonical unpadded base64url `text`: `None` for any other character,
/// padding, a length of 4k + 1, or unused trailing bits that are not zero.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.chunks(4) {
        let mut v = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            v |= base64url_value(c)? << (18 - 6 * i);
        }
        let n = chunk.len() - 1;
        // Canonical: the bits past the n bytes the chunk carries are zero.
        if v & ((1u32 << (24 - 8 * n)) - 1) != 0 {
            return None;
        }
        out.extend_from_slice(&v.to_be_bytes()[1..=n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::validate_path;
    use crate::signed::ACCOUNT_BYTES_MAX;
    use proptest::prelude::*;

    fn b64(bytes: &[u8]) -> String {
        let mut s = String::new();
        base64url_encode(bytes, &mut s);
        s
    }

    #[test]
    fn base64url_matches_the_rfc_4648_test_vectors_without_padding() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(plain.as_bytes()), coded);
            assert_eq!(base64url_decode(coded).as_deref(), Some(plain.as_bytes()));
        }
        // The URL-safe alphabet: 62 is '-', 63 is '_' (never '+', '/').
        assert_eq!(b64(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn plain_ids_are_their_own_names() {
        for id in ["alice", "user-42", "a.b@c+d_e", "A Z~!", "...", ".a", "日本", "ünï côdé", "zookeeper"]
        {
            assert!(is_plain(id), "{id:?}");
            assert!(matches!(encode(id), Cow::Borrowed(n) if n == id), "{id:?}");
            assert_eq!(decode(id).as_deref(), Ok(id));
        }
    }

    #[test]
    fn every_other_id_is_the_escape_character_and_the_base64url_of_its_bytes() {
        for (id, name) in [
            ("a/b", "%YS9i"),
            (".", "%Lg"),
            ("..", "%Li4"),
            ("100%", "%MTAwJQ"),
            ("%", "%JQ"),
            ("a\0b", "%YQBi"),
            ("tab\there", "%dGFiCWhlcmU"),
            ("😀", "%8J-YgA"),
            ("\u{e000}", "%7oCA"),
            ("", "%"),
        ] {
            assert!(!is_plain(id), "{id:?}");
            assert_eq!(encode(id), name, "{id:?}");
            assert_eq!(decode(name).as_deref(), Ok(id), "{name:?}");
        }
    }

    #[test]
    fn decoding_refuses_every_name_encode_never_makes() {
        for (name, why) in [
            ("", DecodeError::NotPlain),
            (".", DecodeError::NotPlain),
            ("..", DecodeError::NotPlain),
            ("a/b", DecodeError::NotPlain),
            ("a%b", DecodeError::NotPlain),
            ("a\0", DecodeError::NotPlain),
            ("%Y", DecodeError::BadBase64),
            ("%YR", DecodeError::BadBase64),
            ("%YQ==", DecodeError::BadBase64),
            ("%YS9i%", DecodeError::BadBase64),
            ("%YS+i", DecodeError::BadBase64),
            ("%_w", DecodeError::NotUtf8),
            ("%YWJj", DecodeError::NotCanonical),
        ] {
            assert_eq!(decode(name), Err(why), "{name:?}");
        }
    }

    #[test]
    fn the_longest_name_of_an_id_is_a_third_longer_plus_the_escape_character() {
        assert_eq!(encoded_bytes_max(0), 1);
        assert_eq!(encoded_bytes_max(1), 3);
        assert_eq!(encoded_bytes_max(3), 5);
        assert_eq!(encoded_bytes_max(ACCOUNT_BYTES_MAX), 87);
        assert_eq!(encoded_bytes_max(128), 172);
        for n in 0..=ACCOUNT_BYTES_MAX {
            let escaped = "/".repeat(n);
            assert_eq!(encode(&escaped).len(), encoded_bytes_max(n), "{n} bytes");
        }
    }

    /// Ids biased towards what needs escaping: any string, or one made of the characters on
    /// the edges of the rules.
    fn id() -> impl Strategy<Value = String> {
        let edge = prop_oneof![
            Just('/'),
            Just('%'),
            Just('.'),
            Just('\0'),
            Just('\u{1f}'),
            Just('\u{7f}'),
            Just('\u{a0}'),
            Just('\u{f8ff}'),
            Just('\u{fff0}'),
            Just('😀'),
            Just('日'),
            prop::char::range('a', 'c'),
            any::<char>(),
        ];
        prop_oneof![any::<String>(), prop::collection::vec(edge, 0..40).prop_map(String::from_iter)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn decoding_an_encoded_id_gives_the_id_back(id in id()) {
            let name = encode(&id);
            let back = decode(&name);
            prop_assert_eq!(back.as_deref(), Ok(id.as_str()));
        }

        #[test]
        fn distinct_ids_have_distinct_names(a in id(), b in id()) {
            prop_assume!(a != b);
            prop_assert_ne!(encode(&a), encode(&b));
        }

        #[test]
        fn every_name_is_a_legal_znode_name_and_key_segment(id in id()) {
            let name = encode(&id);
            prop_assert!(!name.is_empty() && name != "." && name != "..");
            prop_assert!(name.chars().all(|c| c != '/' && c != '\0' && is_znode_char(c)), "{:?}", name);
            prop_assert!(validate_path(&format!("/app/active_accounts/{name}")).is_ok(), "{:?}", name);
        }

        #[test]
        fn plain_ascii_ids_are_their_own_names(id in "[ -$&-.0-~]{1,64}") {
            // Printable ASCII but '%' (0x25) and '/' (0x2f).
            prop_assume!(id != "." && id != "..");
            prop_assert_eq!(encode(&id), id.as_str());
        }

        #[test]
        fn no_name_is_longer_than_the_bound(id in id()) {
            prop_assert!(encode(&id).len() <= encoded_bytes_max(id.len()));
        }

        #[test]
        fn a_name_that_decodes_is_the_name_of_what_it_decodes_to(name in "%?[A-Za-z0-9_./%-]{0,12}") {
            if let Ok(id) = decode(&name) {
                prop_assert_eq!(encode(&id), name.as_str());
            }
        }
    }
}
