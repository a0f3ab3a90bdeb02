//! Redirect tokens: HMAC-SHA256-signed, server-bound, expiring, single-use.
//!
//! # Format
//!
//! A token is a signed string ([`crate::signed`]): lowercase hex of `payload ‖ mac`, where
//! `mac = HMAC-SHA256(secret, payload)` and `payload` is
//!
//! ```text
//! version      u8        = 1 (Kind::RedirectToken)
//! account_len  u16 BE    1..=ACCOUNT_BYTES_MAX
//! account      UTF-8
//! target       16 bytes  the PeerId the token is for
//! expires_at   i64 BE    wall-clock ms (issuer's clock)
//! nonce        16 bytes  from the Rand port; the single-use key
//! extra_data   the rest: compact JSON text, at most EXTRA_DATA_BYTES_MAX
//! ```
//!
//! Hex, lowercase only, and the order of the checks: see [`crate::signed`], shared with the
//! gate's session keys (whose first byte differs, so neither verifies as the other).
//!
//! Checking is split in two: [`verify`] (pure: structure and signature, constant-time MAC
//! comparison via `hmac`'s `verify_slice`) and [`check_claims`] (target server and expiry,
//! given the verifier's id and wall clock). Single use needs the coordination service and is
//! done by the manager: it creates the persistent znode named [`TokenClaims::nonce_node`].
//!
//! `extra_data` travels through the client: it is signed (tamper-evident) but **not
//! encrypted**; do not put secrets in it (iFun gives the same warning).

use super::config::SECRET_BYTES;
use super::error::{AccountError, TokenError};
use crate::cluster::PeerId;
use crate::env::WallTime;
use crate::signed::{self, Fields, Kind, Payload};
pub use crate::signed::{to_hex, ACCOUNT_BYTES_MAX, CLOCK_SKEW_ALLOWANCE, MAC_BYTES};

/// Format version in the first payload byte.
pub const TOKEN_VERSION: u8 = Kind::RedirectToken.byte();
/// Bytes of the single-use nonce.
pub const NONCE_BYTES: usize = 16;
/// Longest `extra_data` (bytes of compact JSON). Larger data is refused when issuing with
/// [`AccountError::Payload`]: send it between servers by RPC instead.
pub const EXTRA_DATA_BYTES_MAX: usize = 16 * 1024;
/// Fixed payload bytes besides the account and extra_data.
const FIXED_BYTES: usize = 1 + 2 + 16 + 8 + NONCE_BYTES;
/// Longest token string accepted; longer input is `Malformed` before any decoding work.
pub const TOKEN_CHARS_MAX: usize = 2 * (FIXED_BYTES + ACCOUNT_BYTES_MAX + EXTRA_DATA_BYTES_MAX + MAC_BYTES);
/// Shortest token string accepted (a one-byte account, no extra_data).
const TOKEN_CHARS_MIN: usize = 2 * (FIXED_BYTES + 1 + MAC_BYTES);

/// What a token says.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenClaims {
    pub account: String,
    /// The server that may accept it (checked if `redirection_strict_check_server_id`).
    pub target: PeerId,
    /// Issuer's wall clock + `redirect_token_ttl`.
    pub expires_at: WallTime,
    pub nonce: [u8; NONCE_BYTES],
    pub extra_data: serde_json::Value,
}

impl TokenClaims {
    /// Name of the znode under `/{app_id}/redirect_nonces` that marks this token used:
    /// `{expires_at ms, 13+ digits}_{nonce hex}`. Both parts are signed, so the name is a
    /// function of the token; the expiry prefix lets cleanup judge a node by its name.
    pub fn nonce_node(&self) -> String {
        format!("{:013}_{}", self.expires_at.as_millis().max(0), to_hex(&self.nonce))
    }
}

/// Expiry (wall ms) encoded in a nonce node name; `None` if the name is not one of ours.
pub fn nonce_node_expiry(name: &str) -> Option<i64> {
    let (ms, nonce) = name.split_once('_')?;
    if nonce.len() != NONCE_BYTES * 2 {
        return None;
    }
    ms.parse().ok()
}

/// Signs `claims` into a token string.
pub fn issue(secret: &[u8; SECRET_BYTES], claims: &TokenClaims) -> Result<String, AccountError> {
    let invalid = || AccountError::InvalidAccount { bytes: claims.account.len() };
    super::validate_account(&claims.account)?;
    let account = claims.account.as_bytes();
    let extra = serde_json::to_vec(&claims.extra_data).map_err(|e| AccountError::Payload(e.to_string()))?;
    if extra.len() > EXTRA_DATA_BYTES_MAX {
        return Err(AccountError::Payload(format!(
            "extra_data is {} bytes of JSON, at most {EXTRA_DATA_BYTES_MAX}",
            extra.len()
        )));
    }
    let mut payload = Payload::new(Kind::RedirectToken, FIXED_BYTES + account.len() + extra.len());
    payload
        .put_str(&claims.account, ACCOUNT_BYTES_MAX)
        .ok_or_else(invalid)?
        .put_bytes(claims.target.as_bytes())
        .put_i64(claims.expires_at.as_millis())
        .put_bytes(&claims.nonce)
        .put_bytes(&extra);
    let token = payload.seal(secret);
    debug_assert!(token.len() <= TOKEN_CHARS_MAX);
    Ok(token)
}

/// Checks the structure and signature of `token`; never panics on any input.
pub fn verify(secret: &[u8; SECRET_BYTES], token: &str) -> Result<TokenClaims, TokenError> {
    let payload = signed::open(secret, token, TOKEN_CHARS_MIN..=TOKEN_CHARS_MAX)?;
    parse_payload(&payload).ok_or(TokenError::Malformed)
}

/// Checks what needs the verifier's identity and clock: target and expiry.
pub fn check_claims(claims: &TokenClaims, me: PeerId, strict: bool, now: WallTime) -> Result<(), TokenError> {
    if strict && claims.target != me {
        return Err(TokenError::WrongServer);
    }
    if signed::expired(claims.expires_at, now) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

fn parse_payload(p: &[u8]) -> Option<TokenClaims> {
    let mut f = Fields::new(p, Kind::RedirectToken)?;
    let account = f.str(ACCOUNT_BYTES_MAX)?.to_string();
    let target = PeerId::from_slice(f.take(16)?)?;
    let expires_at = WallTime(f.i64()?);
    let nonce: [u8; NONCE_BYTES] = f.array()?;
    let extra = f.rest();
    if extra.len() > EXTRA_DATA_BYTES_MAX {
        return None;
    }
    let extra_data = serde_json::from_slice(extra).ok()?;
    Some(TokenClaims { account, target, expires_at, nonce, extra_data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SECRET: [u8; 32] = [7; 32];

    fn peer(n: u8) -> PeerId {
        PeerId(uuid::Uuid::from_bytes([n; 16]))
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            account: "alice".into(),
            target: peer(2),
            expires_at: WallTime(1_700_000_030_000),
            nonce: [9; 16],
            extra_data: json!({"room": 7, "why": "match found"}),
        }
    }

    #[test]
    fn round_trip() {
        let t = issue(&SECRET, &claims()).unwrap();
        assert!(t.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        let c = verify(&SECRET, &t).unwrap();
        assert_eq!(c, claims());
        assert_eq!(check_claims(&c, peer(2), true, WallTime(1_700_000_000_000)), Ok(()));
        assert_eq!(c.nonce_node(), format!("1700000030000_{}", "09".repeat(16)));
        assert_eq!(nonce_node_expiry(&c.nonce_node()), Some(1_700_000_030_000));
        assert_eq!(nonce_node_expiry("junk"), None);
    }

    #[test]
    fn wrong_secret_wrong_server_expiry() {
        let t = issue(&SECRET, &claims()).unwrap();
        assert_eq!(verify(&[8; 32], &t), Err(TokenError::BadSignature));
        let c = verify(&SECRET, &t).unwrap();
        let now = WallTime(1_700_000_000_000);
        assert_eq!(check_claims(&c, peer(3), true, now), Err(TokenError::WrongServer));
        assert_eq!(check_claims(&c, peer(3), false, now), Ok(()));
        // Expiry: valid up to expires_at + allowance, inclusive.
        let limit = c.expires_at.saturating_add(CLOCK_SKEW_ALLOWANCE);
        assert_eq!(check_claims(&c, peer(2), true, limit), Ok(()));
        assert_eq!(check_claims(&c, peer(2), true, WallTime(limit.0 + 1)), Err(TokenError::Expired));
    }

    #[test]
    fn malformed_inputs() {
        let t = issue(&SECRET, &claims()).unwrap();
        for bad in [
            String::new(),
            "zz".into(),
            t[..t.len() - 1].to_string(),
            t.to_uppercase(),
            "0".repeat(TOKEN_CHARS_MAX + 2),
        ] {
            assert!(verify(&SECRET, &bad).is_err(), "{bad:.40}");
        }
        assert_eq!(verify(&SECRET, &t.to_uppercase()), Err(TokenError::Malformed));
    }

    #[test]
    fn issue_limits() {
        let mut c = claims();
        c.extra_data = json!("x".repeat(EXTRA_DATA_BYTES_MAX));
        assert!(matches!(issue(&SECRET, &c), Err(AccountError::Payload(_))));
        c.extra_data = json!(null);
        c.account = "a".repeat(ACCOUNT_BYTES_MAX + 1);
        assert!(matches!(issue(&SECRET, &c), Err(AccountError::InvalidAccount { .. })));
        c.account = "a".repeat(ACCOUNT_BYTES_MAX);
        assert_eq!(verify(&SECRET, &issue(&SECRET, &c).unwrap()).unwrap().account.len(), ACCOUNT_BYTES_MAX);
    }

    /// The format is frozen: tokens issued by any version of the engine verify on any other
    /// (a rolling upgrade redirects between old and new servers). This string was computed
    /// from the format above outside this code (HMAC-SHA256 of the hand-built payload), when
    /// the signing machinery moved to `crate::signed`.
    #[test]
    fn a_token_is_byte_for_byte_what_earlier_versions_issued() {
        const ISSUED: &str = concat!(
            "010005616c696365020202020202020202020202020202020000018bcfe5dd300909090909090909",
            "09090909090909097b22726f6f6d223a372c22776879223a226d6174636820666f756e64227d61",
            "d6ec436096ea14b0acbc5dd85edecc01bbdbb4cda16598dfe6fdb00d43ee18",
        );
        assert_eq!(issue(&SECRET, &claims()).unwrap(), ISSUED);
        assert_eq!(verify(&SECRET, ISSUED).unwrap(), claims());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_nor_verify(s in ".{0,400}") {
            prop_assert!(verify(&SECRET, &s).is_err());
        }

        #[test]
        fn arbitrary_hex_never_verifies(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(verify(&SECRET, &to_hex(&b)).is_err());
        }

        #[test]
        fn any_single_byte_tamper_fails(
            account in "[a-z0-9_]{1,20}",
            extra in proptest::option::of("[ -~]{0,30}"),
            pos in any::<prop::sample::Index>(),
            replacement in any::<u8>(),
        ) {
            let c = TokenClaims { account, extra_data: json!(extra), ..claims() };
            let t = issue(&SECRET, &c).unwrap();
            prop_assert_eq!(verify(&SECRET, &t).unwrap(), c);
            let mut bytes = t.clone().into_bytes();
            let i = pos.index(bytes.len());
            prop_assume!(bytes[i] != replacement);
            bytes[i] = replacement;
            let tampered = String::from_utf8_lossy(&bytes).into_owned();
            prop_assert!(verify(&SECRET, &tampered).is_err());
        }
    }
}
