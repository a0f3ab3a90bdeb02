//! Session keys: `engine::gate::session_key::verify(SECRET, key, NOW)` and
//! `verify_for(SECRET, key, user, NOW)` with a fixed secret and clock.
//!
//! The first input byte picks how the rest becomes a key (as in `redirect_token`):
//! 0 lossy UTF-8, 1 strict UTF-8, 2 the rest sealed as a session-key payload with the fixed
//! secret (reaches the field parser behind the MAC), 3 sealed as a redirect token.
//!
//! Properties: never panics; a sealed payload is never a `BadSignature`; a redirect token never
//! verifies as a key; `verify_for` agrees with `verify` (the key's own user; `WrongUser` for
//! another); a verified key's claims re-issue to the very same key string (the format has one
//! encoding per claims).
#![no_main]

use engine::env::WallTime;
use engine::gate::session_key;
use engine::gate::SessionKeyError;
use engine::signed::Kind;
use libfuzzer_sys::fuzz_target;
use sandtable_fuzz::{signed_input, split_mode, CLAIMED_USER, NOW, SECRET};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = split_mode(data, 4) else { return };
    let Some(key) = signed_input(mode, rest, Kind::SessionKey, Kind::RedirectToken) else { return };
    let verified = session_key::verify(&SECRET, &key, NOW);
    let for_claimed = session_key::verify_for(&SECRET, &key, CLAIMED_USER, NOW);
    if mode >= 2 {
        assert_ne!(verified, Err(SessionKeyError::BadSignature), "a sealed payload has a good MAC");
    }
    if mode == 3 {
        assert!(verified.is_err() && for_claimed.is_err(), "a redirect token verified as a session key");
    }
    match &verified {
        Ok(claims) => {
            let for_own = session_key::verify_for(&SECRET, &key, &claims.user, NOW);
            assert_eq!(for_own.as_ref(), Ok(claims));
            if claims.user == CLAIMED_USER {
                assert_eq!(for_claimed, verified);
            } else {
                assert_eq!(for_claimed, Err(SessionKeyError::WrongUser));
            }
            assert_eq!(session_key::issue(&SECRET, claims).as_deref(), Ok(key.as_str()), "one encoding");
        }
        // Expired: still a key; its claims (read with a clock at the dawn of time) re-issue to it.
        Err(SessionKeyError::Expired) => {
            assert!(for_claimed.is_err(), "verify_for accepted an expired key");
            let claims = session_key::verify(&SECRET, &key, WallTime(i64::MIN)).expect("valid at i64::MIN");
            assert_eq!(session_key::issue(&SECRET, &claims).as_deref(), Ok(key.as_str()), "one encoding");
        }
        Err(e) => assert_eq!(for_claimed.as_ref().err(), Some(e), "verify_for refuses what verify refuses"),
    }
});
