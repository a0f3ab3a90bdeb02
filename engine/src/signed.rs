//! Signed strings: the HMAC-SHA256 and lowercase-hex machinery behind every string the engine
//! hands a client to show to another server — redirect tokens ([`crate::account::token`]) and
//! session keys ([`crate::gate::session_key`]). Pure: no clock, no randomness, no I/O.
//!
//! # Format
//!
//! A signed string is lowercase hex of `payload ‖ mac`, where
//! `mac = HMAC-SHA256(secret, payload)` ([`MAC_BYTES`] bytes) and the payload starts with one
//! [`Kind`] byte, followed by the kind's fields, written with [`Payload`] and read back with
//! [`Fields`]:
//!
//! ```text
//! kind     u8         Kind: which format this is (and its version)
//! fields   ...        strings as u16 BE length + UTF-8, fixed-size byte arrays, i64 BE
//! mac      32 bytes   over kind and fields
//! ```
//!
//! The kind byte is signed with everything else and every kind has its own value, so a
//! string of one kind never parses as another, even where both are signed with the same
//! secret (a redirect token is not a session key, and vice versa).
//!
//! Hex (not base64) because the engine needs no codec for it and these strings are a few
//! hundred characters; lowercase only, so that every distinct string is a distinct token
//! (accepting `A` for `a` would let a "tampered" copy verify).
//!
//! # Checking order
//!
//! [`open`] refuses, in this order and before any work the next step needs: a length outside
//! the kind's bounds (in characters, before decoding: a huge input costs nothing), anything
//! but lowercase hex of whole bytes, then a MAC mismatch (compared in constant time by
//! `hmac`'s `verify_slice`). Only a correctly signed payload is ever parsed, so the field
//! readers meet nothing but what an issuer wrote — and still never panic on anything else.
//!
//! Expiry is judged by the verifier's wall clock with [`CLOCK_SKEW_ALLOWANCE`] of slack
//! ([`expired`]): every kind carries an issuer-clock `expires_at`.

use std::ops::RangeInclusive;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::env::WallTime;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a signing secret (64 hex characters in the manifest: `redirection_secret`,
/// `session_key_secret`).
pub const SECRET_BYTES: usize = 32;
/// Bytes of the HMAC-SHA256 tag at the end of every signed string.
pub const MAC_BYTES: usize = 32;
/// Longest account id, in bytes of UTF-8 (any UTF-8 is an account id: see
/// [`crate::account::validate_account`]); longer ids are refused at login, so they never
/// appear in a signed string either. 64 is what keeps every backend key of an account in
/// bounds with any characters: its znode name is at most
/// [`encoded_bytes_max`](crate::keyname::encoded_bytes_max)`(64)` = 87 bytes, and an object
/// keyed by the account, in its shard, has a row key of at most 6 + 87 + 1 + 64 + 1 + 87 =
/// 246 of the 255 bytes a row key may have (checked at compile time in [`crate::orm`]).
pub const ACCOUNT_BYTES_MAX: usize = 64;
/// How far the verifier's wall clock may lag or lead the issuer's: a signed string is refused
/// as expired only once the verifier's clock is this far past its `expires_at`. Wall clocks of
/// servers are NTP-synchronised to well under a second; 5 s covers a step in progress.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5);

const _: () = assert!(ACCOUNT_BYTES_MAX <= u16::MAX as usize, "a string field's length is a u16");

/// The first payload byte: which signed format a string is. One value per kind, never
/// reused; a new version of a format takes a new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A redirect token ([`crate::account::token`]), format version 1.
    RedirectToken = 1,
    /// A session key ([`crate::gate::session_key`]), format version 1.
    SessionKey = 2,
}

impl Kind {
    /// The byte written first in the payload.
    pub const fn byte(self) -> u8 {
        self as u8
    }
}

/// Why [`open`] refused a string. Callers map these to their own typed errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Wrong length, not lowercase hex, or (after the MAC) not a payload of the expected kind.
    #[error("malformed")]
    Malformed,
    /// The MAC does not match: tampered, or signed with another secret.
    #[error("bad signature")]
    BadSignature,
}

/// A signing secret that is not [`SECRET_BYTES`] bytes of hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be {} hex characters ({SECRET_BYTES} bytes), got {chars} characters", SECRET_BYTES * 2)]
pub struct BadSecret {
    /// Characters given (before trimming).
    pub chars: usize,
}

/// Decodes a secret from the manifest: exactly 64 hex digits (either case), surrounding
/// whitespace ignored.
pub fn parse_secret(s: &str) -> Result<[u8; SECRET_BYTES], BadSecret> {
    let bad = BadSecret { chars: s.chars().count() };
    let t = s.trim();
    if t.len() != SECRET_BYTES * 2 {
        return Err(bad);
    }
    let mut out = [0u8; SECRET_BYTES];
    for (i, pair) in t.as_bytes().chunks(2).enumerate() {
        let hi = hex_val_any_case(pair[0]).ok_or(bad)?;
        let lo = hex_val_any_case(pair[1]).ok_or(bad)?;
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

/// True if a string expiring at `expires_at` (issuer's clock) is expired on a verifier whose
/// wall clock reads `now`: only once `now` is past `expires_at` + [`CLOCK_SKEW_ALLOWANCE`]
/// (valid up to that instant, inclusive).
pub fn expired(expires_at: WallTime, now: WallTime) -> bool {
    now > expires_at.saturating_add(CLOCK_SKEW_ALLOWANCE)
}

/// A payload being written: the kind byte, then fields in the kind's order.
#[derive(Debug)]
pub struct Payload {
    bytes: Vec<u8>,
}

impl Payload {
    /// A payload of `kind`, with room for `capacity` bytes of fields.
    pub fn new(kind: Kind, capacity: usize) -> Payload {
        let mut bytes = Vec::with_capacity(1 + capacity + MAC_BYTES);
        bytes.push(kind.byte());
        Payload { bytes }
    }

    /// A string as u16 BE length + UTF-8; `None` (nothing written) if it is empty or longer
    /// than `bytes_max` bytes (at most `u16::MAX`).
    pub fn put_str(&mut self, s: &str, bytes_max: usize) -> Option<&mut Payload> {
        let len = u16::try_from(s.len()).ok().filter(|&n| n > 0 && usize::from(n) <= bytes_max)?;
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(s.as_bytes());
        Some(self)
    }

    /// Raw bytes (fixed-size fields, or a last field that runs to the end).
    pub fn put_bytes(&mut self, b: &[u8]) -> &mut Payload {
        self.bytes.extend_from_slice(b);
        self
    }

    /// An i64, big-endian.
    pub fn put_i64(&mut self, v: i64) -> &mut Payload {
        self.put_bytes(&v.to_be_bytes())
    }

    /// Signs the payload with `secret`: lowercase hex of `payload ‖ mac`.
    pub fn seal(mut self, secret: &[u8; SECRET_BYTES]) -> String {
        let mac = mac(secret).chain_update(&self.bytes).finalize().into_bytes();
        self.bytes.extend_from_slice(&mac);
        to_hex(&self.bytes)
    }
}

/// Checks `text`'s length (`chars`, before decoding), hex and MAC; returns the signed payload
/// (kind byte included). Never panics on any input.
pub fn open(
    secret: &[u8; SECRET_BYTES],
    text: &str,
    chars: RangeInclusive<usize>,
) -> Result<Vec<u8>, OpenError> {
    if !chars.contains(&text.len()) {
        return Err(OpenError::Malformed);
    }
    let bytes = from_hex(text).ok_or(OpenError::Malformed)?;
    if bytes.len() <= MAC_BYTES {
        return Err(OpenError::Malformed);
    }
    let (payload, tag) = bytes.split_at(bytes.len() - MAC_BYTES);
    mac(secret).chain_update(payload).verify_slice(tag).map_err(|_| OpenError::BadSignature)?;
    Ok(payload.to_vec())
}

/// Reads the fields of a payload [`open`] returned, in the order they were written. Every
/// reader returns `None` when the bytes left do not hold the field.
#[derive(Debug)]
pub struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// The fields after the kind byte; `None` if the payload is not of `kind`.
    pub fn new(payload: &'a [u8], kind: Kind) -> Option<Fields<'a>> {
        let (&first, rest) = payload.split_first()?;
        (first == kind.byte()).then_some(Fields(rest))
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// The next i64, big-endian.
    pub fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// A string written by [`Payload::put_str`]: 1..=`bytes_max` bytes of UTF-8.
    pub fn str(&mut self, bytes_max: usize) -> Option<&'a str> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        if len == 0 || len > bytes_max {
            return None;
        }
        std::str::from_utf8(self.take(len)?).ok()
    }

    /// Everything left (a last field that runs to the end).
    pub fn rest(self) -> &'a [u8] {
        self.0
    }

    /// `Some` if nothing is left: a format without a trailing field refuses extra bytes.
    pub fn end(self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

fn mac(secret: &[u8; SECRET_BYTES]) -> HmacSha256 {
    // HMAC takes keys of any length; 32 bytes cannot fail.
    HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex.
pub fn to_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(HEX[usize::from(x >> 4)] as char);
        s.push(HEX[usize::from(x & 15)] as char);
    }
    s
}

/// Strict lowercase hex decoding; `None` on odd length or any other character.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() & 1 == 1 {
        return None;
    }
    s.chunks(2).map(|p| Some(val(p[0])? << 4 | val(p[1])?)).collect()
}

fn hex_val_any_case(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: [u8; SECRET_BYTES] = [3; SECRET_BYTES];
    const ANY: RangeInclusive<usize> = 0..=10_000;

    fn sealed(kind: Kind) -> String {
        let mut p = Payload::new(kind, 32);
        p.put_str("bob", ACCOUNT_BYTES_MAX).unwrap().put_i64(-7).put_bytes(&[1, 2, 3]);
        p.seal(&SECRET)
    }

    #[test]
    fn fields_read_back_in_the_order_they_were_written() {
        let payload = open(&SECRET, &sealed(Kind::SessionKey), ANY).unwrap();
        let mut f = Fields::new(&payload, Kind::SessionKey).unwrap();
        assert_eq!(f.str(ACCOUNT_BYTES_MAX), Some("bob"));
        assert_eq!(f.i64(), Some(-7));
        assert_eq!(f.array::<3>(), Some([1, 2, 3]));
        assert_eq!(f.end(), Some(()));
    }

    #[test]
    fn a_payload_of_another_kind_is_not_read() {
        let payload = open(&SECRET, &sealed(Kind::RedirectToken), ANY).unwrap();
        assert!(Fields::new(&payload, Kind::SessionKey).is_none());
        assert!(Fields::new(&payload, Kind::RedirectToken).is_some());
        assert!(Fields::new(&[], Kind::RedirectToken).is_none());
    }

    #[test]
    fn open_refuses_bad_length_hex_and_signature_in_that_order() {
        let s = sealed(Kind::SessionKey);
        assert_eq!(open(&SECRET, &s, 0..=s.len() - 1), Err(OpenError::Malformed));
        assert_eq!(open(&SECRET, &s.to_uppercase(), ANY), Err(OpenError::Malformed));
        assert_eq!(open(&SECRET, &s[1..], ANY), Err(OpenError::Malformed), "odd length");
        assert_eq!(open(&[4; SECRET_BYTES], &s, ANY), Err(OpenError::BadSignature));
        assert_eq!(open(&SECRET, &"ab".repeat(MAC_BYTES), ANY), Err(OpenError::Malformed), "mac only");
        assert_eq!(open(&SECRET, "", ANY), Err(OpenError::Malformed));
    }

    #[test]
    fn put_str_refuses_empty_and_overlong_strings() {
        let mut p = Payload::new(Kind::SessionKey, 0);
        assert!(p.put_str("", 10).is_none());
        assert!(p.put_str("elevenchars", 10).is_none());
        assert!(p.put_str(&"x".repeat(usize::from(u16::MAX) + 1), usize::MAX).is_none());
        assert!(p.put_str("ten chars!", 10).is_some());
    }

    #[test]
    fn fields_refuse_short_and_invalid_input() {
        let mut f = Fields(&[0, 5, b'a']);
        assert_eq!(f.str(10), None, "length says 5, one byte follows");
        assert_eq!(Fields(&[0, 0]).str(10), None, "empty");
        assert_eq!(Fields(&[0, 2, 0xff, 0xfe]).str(10), None, "not UTF-8");
        assert_eq!(Fields(&[0, 3, b'a', b'b', b'c']).str(2), None, "over the cap");
        assert_eq!(Fields(&[1, 2]).i64(), None);
        assert_eq!(Fields(&[1]).end(), None);
    }

    #[test]
    fn secrets_are_64_hex_digits_of_either_case() {
        let good = "a29fd424579997bf91e3a29fd424579997bf91e3a29fd424579997bf91e3ABCD";
        let s = parse_secret(good).unwrap();
        assert_eq!((s[0], s[31]), (0xa2, 0xcd));
        assert_eq!(parse_secret(&format!("  {good}\n")), Ok(s));
        assert_eq!(parse_secret("short"), Err(BadSecret { chars: 5 }));
        assert!(parse_secret(&good.replace('a', "g")).is_err());
        assert_eq!(
            BadSecret { chars: 5 }.to_string(),
            "must be 64 hex characters (32 bytes), got 5 characters"
        );
    }

    #[test]
    fn expiry_allows_the_clock_skew_inclusive() {
        let exp = WallTime(1_000_000);
        assert!(!expired(exp, exp));
        assert!(!expired(exp, exp.saturating_add(CLOCK_SKEW_ALLOWANCE)));
        assert!(expired(exp, WallTime(exp.saturating_add(CLOCK_SKEW_ALLOWANCE).0 + 1)));
        assert!(!expired(WallTime(i64::MAX), WallTime(i64::MAX)), "saturates");
    }

    proptest! {
        #[test]
        fn hex_round_trips(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(from_hex(&to_hex(&b)), Some(b));
        }

        #[test]
        fn open_never_panics(s in ".{0,200}") {
            let _ = open(&SECRET, &s, ANY);
        }
    }
}
