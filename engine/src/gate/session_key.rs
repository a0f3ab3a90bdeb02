//! Session keys: what a login server hands a client so that a gate lets it in (seed 004's
//! `SessionKey`). Signed, naming the user and an expiry; pure (no clock, no I/O: `now` and the
//! nonce come from the caller).
//!
//! # Format
//!
//! A key is a signed string ([`crate::signed`]): lowercase hex of `payload ‖ mac`, where
//! `mac = HMAC-SHA256(session_key_secret, payload)` and `payload` is
//!
//! ```text
//! kind         u8        = 2 (Kind::SessionKey; a redirect token's is 1)
//! user_len     u16 BE    1..=ACCOUNT_BYTES_MAX (64)
//! user         UTF-8     a valid account id (validate_account: any UTF-8)
//! expires_at   i64 BE    wall-clock ms: the issuer's clock + session_key_ttl
//! nonce        16 bytes  from the Rand port: two keys for one user differ
//! ```
//!
//! and nothing after the nonce. [`SESSION_KEY_CHARS_MIN`]`..=`[`SESSION_KEY_CHARS_MAX`]
//! characters (120 to 246).
//!
//! # Checking
//!
//! [`verify`] refuses, in this order: a wrong length or anything but lowercase hex
//! ([`SessionKeyError::Malformed`], before any MAC work), a MAC mismatch
//! ([`SessionKeyError::BadSignature`], constant-time comparison), a payload that is not a
//! session key's (`Malformed`: e.g. a redirect token signed with the same secret), then an
//! expired key ([`SessionKeyError::Expired`]: only once the verifier's wall clock is
//! [`CLOCK_SKEW_ALLOWANCE`] past `expires_at`). [`verify_for`] also refuses a valid key naming
//! another user than the one the client claims ([`SessionKeyError::WrongUser`]), before the
//! expiry: a key shown for the wrong user is reported as such even if it also expired.
//!
//! Unlike a redirect token, a session key is **not** single use: a client whose gate crashed
//! logs in on another gate with the same key while it is valid. What keeps one user on one
//! gate is the account manager's cluster-unique login, not the key. The key is signed, not
//! encrypted: the user name in it is readable by whoever holds it.

use super::error::{IssueError, SessionKeyError};
use crate::account::validate_account;
use crate::env::{Rand, WallTime};
use crate::signed::{self, Fields, Kind, Payload, SECRET_BYTES};
pub use crate::signed::{ACCOUNT_BYTES_MAX, CLOCK_SKEW_ALLOWANCE, MAC_BYTES};

/// Bytes of a key's nonce.
pub const SESSION_KEY_NONCE_BYTES: usize = 16;
/// Payload bytes besides the user name: kind, user length, expiry, nonce.
const FIXED_BYTES: usize = 1 + 2 + 8 + SESSION_KEY_NONCE_BYTES;
/// Longest key string accepted; longer input is `Malformed` before any decoding work.
pub const SESSION_KEY_CHARS_MAX: usize = 2 * (FIXED_BYTES + ACCOUNT_BYTES_MAX + MAC_BYTES);
/// Shortest key string accepted (a one-byte user name).
pub const SESSION_KEY_CHARS_MIN: usize = 2 * (FIXED_BYTES + 1 + MAC_BYTES);

/// What a session key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeyClaims {
    /// The account the key lets in (iFun's account id; the game's `user_name`).
    pub user: String,
    /// Issuer's wall clock + `session_key_ttl`.
    pub expires_at: WallTime,
    /// Random: makes every key distinct, even two for one user in the same millisecond.
    pub nonce: [u8; SESSION_KEY_NONCE_BYTES],
}

impl SessionKeyClaims {
    /// Claims for `user` valid for `ttl` from the issuer's wall-clock reading `now`, with a
    /// fresh nonce from `rand`.
    pub fn new(user: impl Into<String>, now: WallTime, ttl: std::time::Duration, rand: &dyn Rand) -> Self {
        let mut nonce = [0u8; SESSION_KEY_NONCE_BYTES];
        rand.fill_bytes(&mut nonce);
        SessionKeyClaims { user: user.into(), expires_at: now.saturating_add(ttl), nonce }
    }
}

/// Signs `claims` into a key string. The user must be a valid account id (the same check as
/// logins, [`validate_account`]), so a key never names a user that could not log in.
pub fn issue(secret: &[u8; SECRET_BYTES], claims: &SessionKeyClaims) -> Result<String, IssueError> {
    let invalid = || IssueError::InvalidUser { bytes: claims.user.len() };
    validate_account(&claims.user).map_err(|_| invalid())?;
    let mut payload = Payload::new(Kind::SessionKey, FIXED_BYTES + claims.user.len());
    payload
        .put_str(&claims.user, ACCOUNT_BYTES_MAX)
        .ok_or_else(invalid)?
        .put_i64(claims.expires_at.as_millis())
        .put_bytes(&claims.nonce);
    let key = payload.seal(secret);
    debug_assert!((SESSION_KEY_CHARS_MIN..=SESSION_KEY_CHARS_MAX).contains(&key.len()));
    Ok(key)
}

/// Checks `key`'s structure, signature and expiry on a verifier whose wall clock reads `now`;
/// returns what it says. Never panics on any input.
pub fn verify(
    secret: &[u8; SECRET_BYTES],
    key: &str,
    now: WallTime,
) -> Result<SessionKeyClaims, SessionKeyError> {
    let claims = open(secret, key)?;
    check_expiry(&claims, now)?;
    Ok(claims)
}

/// [`verify`], for a client that says it is `user`: a valid key naming anyone else is
/// [`SessionKeyError::WrongUser`] (checked before the expiry).
pub fn verify_for(
    secret: &[u8; SECRET_BYTES],
    key: &str,
    user: &str,
    now: WallTime,
) -> Result<SessionKeyClaims, SessionKeyError> {
    let claims = open(secret, key)?;
    if claims.user != user {
        return Err(SessionKeyError::WrongUser);
    }
    check_expiry(&claims, now)?;
    Ok(claims)
}

/// Structure and signature only.
fn open(secret: &[u8; SECRET_BYTES], key: &str) -> Result<SessionKeyClaims, SessionKeyError> {
    let payload = signed::open(secret, key, SESSION_KEY_CHARS_MIN..=SESSION_KEY_CHARS_MAX)?;
    parse_payload(&payload).ok_or(SessionKeyError::Malformed)
}

fn check_expiry(claims: &SessionKeyClaims, now: WallTime) -> Result<(), SessionKeyError> {
    if signed::expired(claims.expires_at, now) {
        return Err(SessionKeyError::Expired);
    }
    Ok(())
}

fn parse_payload(p: &[u8]) -> Option<SessionKeyClaims> {
    let mut f = Fields::new(p, Kind::SessionKey)?;
    let user = f.str(ACCOUNT_BYTES_MAX)?.to_string();
    validate_account(&user).ok()?;
    let expires_at = WallTime(f.i64()?);
    let nonce = f.array()?;
    f.end()?;
    Some(SessionKeyClaims { user, expires_at, nonce })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::token::{self, TokenClaims};
    use crate::cluster::PeerId;
    use crate::testing::SeedRand;
    use proptest::prelude::*;
    use std::time::Duration;

    const SECRET: [u8; SECRET_BYTES] = [7; SECRET_BYTES];
    const ISSUED_AT: WallTime = WallTime(1_700_000_000_000);
    const TTL: Duration = Duration::from_secs(300);

    fn claims() -> SessionKeyClaims {
        SessionKeyClaims { user: "alice".into(), expires_at: ISSUED_AT.saturating_add(TTL), nonce: [9; 16] }
    }

    fn key() -> String {
        issue(&SECRET, &claims()).unwrap()
    }

    #[test]
    fn a_key_verifies_for_its_user_until_it_expires() {
        let k = key();
        assert!(k.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(k.len(), SESSION_KEY_CHARS_MIN + 2 * 4, "a five-byte user");
        assert_eq!(verify(&SECRET, &k, ISSUED_AT), Ok(claims()));
        assert_eq!(verify_for(&SECRET, &k, "alice", ISSUED_AT), Ok(claims()));
    }

    #[test]
    fn two_keys_for_one_user_differ_by_their_nonce() {
        let rand = SeedRand::new(1);
        let a = SessionKeyClaims::new("alice", ISSUED_AT, TTL, &rand);
        let b = SessionKeyClaims::new("alice", ISSUED_AT, TTL, &rand);
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.expires_at, ISSUED_AT.saturating_add(TTL));
        assert_ne!(issue(&SECRET, &a).unwrap(), issue(&SECRET, &b).unwrap());
    }

    #[test]
    fn a_forged_key_is_a_bad_signature() {
        let forged = issue(&[8; SECRET_BYTES], &claims()).unwrap();
        assert_eq!(verify(&SECRET, &forged, ISSUED_AT), Err(SessionKeyError::BadSignature));
    }

    #[test]
    fn a_key_with_one_hex_digit_altered_is_a_bad_signature() {
        let k = key();
        // The user name's first byte ('a' = 0x61 -> 0x62 'b'): a key for "blice".
        let at = 2 * 3 + 1;
        let mut altered = k.clone().into_bytes();
        altered[at] = b'2';
        let altered = String::from_utf8(altered).unwrap();
        assert_ne!(altered, k);
        assert_eq!(verify(&SECRET, &altered, ISSUED_AT), Err(SessionKeyError::BadSignature));
        // And in the MAC.
        let mut last = k.into_bytes();
        let n = last.len() - 1;
        last[n] = if last[n] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            verify(&SECRET, &String::from_utf8(last).unwrap(), ISSUED_AT),
            Err(SessionKeyError::BadSignature)
        );
    }

    #[test]
    fn truncated_uppercase_and_junk_keys_are_malformed() {
        let k = key();
        for bad in [
            String::new(),
            "zz".into(),
            k[..k.len() - 1].to_string(),
            k[..SESSION_KEY_CHARS_MIN - 2].to_string(),
            k.to_uppercase(),
            "0".repeat(SESSION_KEY_CHARS_MAX + 2),
            format!(" {k}"),
        ] {
            assert_eq!(verify(&SECRET, &bad, ISSUED_AT), Err(SessionKeyError::Malformed), "{bad:.40}");
        }
    }

    #[test]
    fn a_key_cut_or_extended_by_whole_bytes_is_a_bad_signature() {
        // Still hex of a plausible length: the MAC is then taken over other bytes.
        let k = key();
        for bad in [k[..k.len() - 2].to_string(), format!("{k}00"), format!("00{k}")] {
            assert_eq!(verify(&SECRET, &bad, ISSUED_AT), Err(SessionKeyError::BadSignature), "{bad:.40}");
        }
    }

    #[test]
    fn trailing_signed_bytes_are_malformed() {
        let mut p = Payload::new(Kind::SessionKey, 64);
        p.put_str("alice", ACCOUNT_BYTES_MAX)
            .unwrap()
            .put_i64(ISSUED_AT.0)
            .put_bytes(&[9; 16])
            .put_bytes(&[0]);
        assert_eq!(verify(&SECRET, &p.seal(&SECRET), ISSUED_AT), Err(SessionKeyError::Malformed));
    }

    #[test]
    fn an_expired_key_is_refused_only_past_the_skew_allowance() {
        let k = key();
        let exp = claims().expires_at;
        let limit = exp.saturating_add(CLOCK_SKEW_ALLOWANCE);
        assert_eq!(verify(&SECRET, &k, exp), Ok(claims()));
        assert_eq!(verify(&SECRET, &k, WallTime(exp.0 + 1)), Ok(claims()), "expired, within the skew");
        assert_eq!(verify(&SECRET, &k, limit), Ok(claims()), "the allowance is inclusive");
        assert_eq!(verify(&SECRET, &k, WallTime(limit.0 + 1)), Err(SessionKeyError::Expired));
        assert_eq!(verify_for(&SECRET, &k, "alice", WallTime(limit.0 + 1)), Err(SessionKeyError::Expired));
    }

    #[test]
    fn a_key_shown_for_another_user_is_the_wrong_user_even_when_expired() {
        let k = key();
        assert_eq!(verify_for(&SECRET, &k, "bob", ISSUED_AT), Err(SessionKeyError::WrongUser));
        assert_eq!(verify_for(&SECRET, &k, "Alice", ISSUED_AT), Err(SessionKeyError::WrongUser));
        assert_eq!(verify_for(&SECRET, &k, "bob", WallTime(i64::MAX)), Err(SessionKeyError::WrongUser));
    }

    #[test]
    fn a_redirect_token_is_not_a_session_key_and_a_session_key_is_not_a_redirect_token() {
        // Signed with the same secret, so only the kind byte tells them apart.
        let t = token::issue(
            &SECRET,
            &TokenClaims {
                account: "alice".into(),
                target: PeerId(uuid::Uuid::from_bytes([2; 16])),
                expires_at: claims().expires_at,
                nonce: [9; 16],
                extra_data: serde_json::Value::Null,
            },
        )
        .unwrap();
        assert!(t.len() <= SESSION_KEY_CHARS_MAX);
        assert_eq!(verify(&SECRET, &t, ISSUED_AT), Err(SessionKeyError::Malformed));
        assert_eq!(verify_for(&SECRET, &t, "alice", ISSUED_AT), Err(SessionKeyError::Malformed));
        assert_eq!(token::verify(&SECRET, &key()), Err(crate::account::TokenError::Malformed));
    }

    #[test]
    fn users_that_cannot_log_in_get_no_key() {
        for bad in ["", &"a".repeat(ACCOUNT_BYTES_MAX + 1)] {
            let c = SessionKeyClaims { user: bad.to_string(), ..claims() };
            assert_eq!(issue(&SECRET, &c), Err(IssueError::InvalidUser { bytes: bad.len() }), "{bad:?}");
        }
        assert_eq!(
            IssueError::InvalidUser { bytes: 0 }.to_string(),
            crate::account::validate_account("").unwrap_err().to_string(),
            "the refusal a login gives"
        );
        for odd in ["a/b", "..", "a\0b", "😀"] {
            let c = SessionKeyClaims { user: odd.to_string(), ..claims() };
            let k = issue(&SECRET, &c).expect("any UTF-8 account id gets a key");
            assert_eq!(verify(&SECRET, &k, ISSUED_AT), Ok(c), "{odd:?}");
        }
        let longest = SessionKeyClaims { user: "a".repeat(ACCOUNT_BYTES_MAX), ..claims() };
        let k = issue(&SECRET, &longest).unwrap();
        assert_eq!(k.len(), SESSION_KEY_CHARS_MAX);
        assert_eq!((SESSION_KEY_CHARS_MIN, SESSION_KEY_CHARS_MAX), (120, 246), "as the module doc says");
        assert_eq!(verify(&SECRET, &k, ISSUED_AT), Ok(longest));
    }

    #[test]
    fn a_signed_key_naming_an_invalid_user_is_malformed() {
        // Only a holder of the secret could make one; it is still refused. Any UTF-8 is an
        // account id, so the invalid users are the empty one and those over 64 bytes, which
        // `put_str` refuses to write: the fields are written by hand.
        for user in [String::new(), "a".repeat(ACCOUNT_BYTES_MAX + 1)] {
            let mut p = Payload::new(Kind::SessionKey, 128);
            let len = u16::try_from(user.len()).unwrap().to_be_bytes();
            p.put_bytes(&len).put_bytes(user.as_bytes()).put_i64(ISSUED_AT.0).put_bytes(&[9; 16]);
            assert_eq!(verify(&SECRET, &p.seal(&SECRET), ISSUED_AT), Err(SessionKeyError::Malformed));
        }
    }

    /// One way of changing a valid key.
    #[derive(Debug, Clone)]
    enum Mutation {
        Replace { at: prop::sample::Index, with: char },
        Insert { at: prop::sample::Index, c: char },
        Remove { at: prop::sample::Index },
        Truncate { at: prop::sample::Index },
        Append(String),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let c = prop_oneof![4 => prop::sample::select("0123456789abcdefABCDEF".chars().collect::<Vec<_>>()), 1 => any::<char>()];
        prop_oneof![
            (any::<prop::sample::Index>(), c.clone()).prop_map(|(at, with)| Mutation::Replace { at, with }),
            (any::<prop::sample::Index>(), c).prop_map(|(at, c)| Mutation::Insert { at, c }),
            any::<prop::sample::Index>().prop_map(|at| Mutation::Remove { at }),
            any::<prop::sample::Index>().prop_map(|at| Mutation::Truncate { at }),
            "[0-9a-f]{1,8}".prop_map(Mutation::Append),
        ]
    }

    fn apply(key: &str, m: &Mutation) -> String {
        let mut chars: Vec<char> = key.chars().collect();
        match m {
            Mutation::Replace { at, with } => {
                let i = at.index(chars.len());
                chars[i] = *with;
            }
            Mutation::Insert { at, c } => chars.insert(at.index(chars.len() + 1), *c),
            Mutation::Remove { at } => {
                chars.remove(at.index(chars.len()));
            }
            Mutation::Truncate { at } => chars.truncate(at.index(chars.len())),
            Mutation::Append(s) => chars.extend(s.chars()),
        }
        chars.into_iter().collect()
    }

    proptest! {
        #[test]
        fn verify_never_panics_on_arbitrary_strings(s in ".{0,400}", now in any::<i64>()) {
            let _ = verify(&SECRET, &s, WallTime(now));
            let _ = verify_for(&SECRET, &s, "alice", WallTime(now));
        }

        #[test]
        fn arbitrary_hex_never_verifies(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(verify(&SECRET, &signed::to_hex(&b), ISSUED_AT).is_err());
        }

        #[test]
        fn every_mutation_of_a_valid_key_is_refused(
            user in "[a-z0-9_]{1,24}",
            nonce in any::<[u8; 16]>(),
            m in mutation(),
        ) {
            let c = SessionKeyClaims { user, nonce, ..claims() };
            let k = issue(&SECRET, &c).unwrap();
            prop_assert_eq!(verify(&SECRET, &k, ISSUED_AT), Ok(c.clone()));
            let mutated = apply(&k, &m);
            prop_assume!(mutated != k);
            prop_assert!(verify(&SECRET, &mutated, ISSUED_AT).is_err(), "{:?} verified", m);
            prop_assert!(verify_for(&SECRET, &mutated, &c.user, ISSUED_AT).is_err());
        }
    }
}
