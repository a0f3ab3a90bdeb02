//! Redirect tokens: `engine::account::token::verify(SECRET, token)` with a fixed secret, then
//! `check_claims` (fixed server id and clock) and the nonce-node name, as `accept_redirect` does.
//!
//! The first input byte picks how the rest becomes a token:
//! - 0: lossy UTF-8 (any bytes become some string: length, hex and MAC checks);
//! - 1: strict UTF-8 (non-UTF-8 inputs are skipped);
//! - 2: the rest is a *payload* signed with the fixed secret (`signed::Payload::seal`, the
//!   issuer's own sealing), so the field parser behind the MAC is fuzzed too: a fuzzer cannot
//!   forge an HMAC, and without this mode `parse_payload` would only ever see issued tokens;
//! - 3: like 2, sealed as a session key (another kind under the same secret: never a token).
//!
//! Properties: never panics; a sealed payload is never a `BadSignature`; a string of another
//! kind never verifies; verified claims re-issue (`token::issue`) to a token that verifies to
//! the same claims (extra_data holding floats: to the same account, target, expiry and nonce);
//! the nonce node's name gives back the expiry.
#![no_main]

use engine::account::token::{self, nonce_node_expiry};
use engine::account::TokenError;
use engine::signed::Kind;
use libfuzzer_sys::fuzz_target;
use sandtable_fuzz::{has_float, me, signed_input, split_mode, NOW, SECRET};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = split_mode(data, 4) else { return };
    let Some(text) = signed_input(mode, rest, Kind::RedirectToken, Kind::SessionKey) else { return };
    let verified = token::verify(&SECRET, &text);
    if mode >= 2 {
        assert_ne!(verified, Err(TokenError::BadSignature), "a sealed payload has a good MAC");
    }
    if mode == 3 {
        assert!(verified.is_err(), "a session key verified as a redirect token");
    }
    let Ok(claims) = verified else { return };
    for strict in [false, true] {
        let _ = token::check_claims(&claims, me(), strict, NOW);
    }
    assert_eq!(nonce_node_expiry(&claims.nonce_node()), Some(claims.expires_at.as_millis().max(0)));
    // Re-issuing may be refused: compact JSON can be longer than the text it came from
    // (`1e2` is `100.0`), past EXTRA_DATA_BYTES_MAX.
    if let Ok(again) = token::issue(&SECRET, &claims) {
        let back = token::verify(&SECRET, &again).expect("a re-issued token verifies");
        if has_float(&claims.extra_data) {
            assert_eq!(
                (&back.account, back.target, back.expires_at, back.nonce),
                (&claims.account, claims.target, claims.expires_at, claims.nonce)
            );
        } else {
            assert_eq!(back, claims);
        }
    }
});
