//! [`GateConfig`]: the manifest's `Gate` section (what login servers and gates share), and
//! [`SessionKeys`], the checked form a server issues and verifies keys with.
//!
//! ```json
//! "Gate": {
//!   "session_key_secret": "<64 hex characters, the same on every login server and gate>",
//!   "session_key_ttl_in_second": 300
//! }
//! ```

use std::time::Duration;

use super::error::{GateConfigError, IssueError, SessionKeyError};
use super::session_key::{self, SessionKeyClaims};
use crate::env::{Rand, WallTime};
use crate::manifest::{Manifest, ManifestError};
use crate::signed::{parse_secret, SECRET_BYTES};

/// Default [`GateConfig::session_key_ttl`]: long enough for a client to pick a gate, connect
/// and, after that gate crashes, reconnect to another with the same key; short enough that a
/// leaked key is soon useless.
pub const SESSION_KEY_TTL_DEFAULT: Duration = Duration::from_secs(300);
/// Longest accepted [`GateConfig::session_key_ttl`] (a day): keys are not revocable, so a
/// longer life is refused rather than trusted.
pub const SESSION_KEY_TTL_MAX: Duration = Duration::from_secs(86_400);

/// The manifest section [`GateConfig::from_manifest`] reads.
pub const SECTION: &str = "Gate";

const GATE_KEYS: &[&str] = &["session_key_secret", "session_key_ttl_in_second"];

/// How login servers and gates sign and check session keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// 64 hex characters (32 bytes), the same on every login server and gate; parsed by the
    /// same parser as `AccountManager.redirection_secret` ([`crate::signed::parse_secret`]).
    /// Use a different secret from `redirection_secret`: the two kinds of string could not be
    /// confused anyway (their first byte differs), but one leaked secret then forges only one
    /// kind. `None`: a login server or gate refuses to start ([`GateConfigError::NoSecret`]).
    pub session_key_secret: Option<String>,
    /// How long an issued key stays valid (judged on the verifier's wall clock with
    /// [`session_key::CLOCK_SKEW_ALLOWANCE`] of slack). Default [`SESSION_KEY_TTL_DEFAULT`].
    pub session_key_ttl: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig { session_key_secret: None, session_key_ttl: SESSION_KEY_TTL_DEFAULT }
    }
}

impl GateConfig {
    /// Checks everything; returns what keys are issued and verified with.
    pub fn session_keys(&self) -> Result<SessionKeys, GateConfigError> {
        let secret = self.session_key_secret.as_deref().ok_or(GateConfigError::NoSecret)?;
        let secret = parse_secret(secret).map_err(GateConfigError::BadSecret)?;
        if self.session_key_ttl.is_zero() || self.session_key_ttl > SESSION_KEY_TTL_MAX {
            return Err(GateConfigError::Ttl(self.session_key_ttl));
        }
        Ok(SessionKeys { secret, ttl: self.session_key_ttl })
    }

    /// The `Gate` section of a loaded manifest (absent: the defaults, no secret). A present
    /// but malformed `session_key_secret` is an error naming the key, as a malformed
    /// `redirection_secret` is.
    pub fn from_manifest(m: &Manifest) -> Result<GateConfig, ManifestError> {
        use crate::manifest::reader::Fields;
        let mut cfg = GateConfig::default();
        let Some(v) = m.section(SECTION) else { return Ok(cfg) };
        let f = Fields::new(SECTION, v, GATE_KEYS)?;
        cfg.session_key_secret = f.opt_string("session_key_secret")?;
        if let Some(s) = &cfg.session_key_secret {
            if let Err(e) = parse_secret(s) {
                return Err(ManifestError::Invalid {
                    path: f.path_of("session_key_secret"),
                    message: GateConfigError::BadSecret(e).to_string(),
                });
            }
        }
        cfg.session_key_ttl = Duration::from_secs(f.uint(
            "session_key_ttl_in_second",
            1..=SESSION_KEY_TTL_MAX.as_secs(),
            SESSION_KEY_TTL_DEFAULT.as_secs(),
        )?);
        Ok(cfg)
    }
}

/// A checked [`GateConfig`]: the decoded secret and the TTL. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct SessionKeys {
    secret: [u8; SECRET_BYTES],
    ttl: Duration,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Keys signed with `secret`, valid for `ttl`.
    pub fn new(secret: [u8; SECRET_BYTES], ttl: Duration) -> SessionKeys {
        SessionKeys { secret, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new key for `user`, valid for the TTL from the issuer's wall-clock reading `now`,
    /// with a nonce from `rand`; also returns its claims.
    pub fn issue(
        &self,
        user: &str,
        now: WallTime,
        rand: &dyn Rand,
    ) -> Result<(String, SessionKeyClaims), IssueError> {
        let claims = SessionKeyClaims::new(user, now, self.ttl, rand);
        Ok((session_key::issue(&self.secret, &claims)?, claims))
    }

    /// [`session_key::verify`] with this secret.
    pub fn verify(&self, key: &str, now: WallTime) -> Result<SessionKeyClaims, SessionKeyError> {
        session_key::verify(&self.secret, key, now)
    }

    /// [`session_key::verify_for`] with this secret.
    pub fn verify_for(
        &self,
        key: &str,
        user: &str,
        now: WallTime,
    ) -> Result<SessionKeyClaims, SessionKeyError> {
        session_key::verify_for(&self.secret, key, user, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SeedRand;

    const SECRET_HEX: &str = "a29fd424579997bf91e3a29fd424579997bf91e3a29fd424579997bf91e3abcd";

    fn load(section: &str) -> Result<GateConfig, ManifestError> {
        let text = format!(r#"{{"AppInfo": {{"app_id": "g"}}, "Gate": {section}}}"#);
        GateConfig::from_manifest(&Manifest::load(&text, None).unwrap())
    }

    #[test]
    fn the_section_maps_to_the_config() {
        let c =
            load(&format!(r#"{{"session_key_secret": "{SECRET_HEX}", "session_key_ttl_in_second": 60}}"#))
                .unwrap();
        assert_eq!(c.session_key_secret.as_deref(), Some(SECRET_HEX));
        assert_eq!(c.session_key_ttl, Duration::from_secs(60));
        assert_eq!(c.session_keys().unwrap().ttl(), Duration::from_secs(60));
    }

    #[test]
    fn an_absent_section_gives_the_defaults_and_no_secret() {
        let m = Manifest::load(r#"{"AppInfo": {"app_id": "g"}}"#, None).unwrap();
        let c = GateConfig::from_manifest(&m).unwrap();
        assert_eq!(c, GateConfig::default());
        assert_eq!(c.session_key_ttl, SESSION_KEY_TTL_DEFAULT);
        assert_eq!(c.session_keys().unwrap_err(), GateConfigError::NoSecret);
    }

    #[test]
    fn bad_values_name_the_key() {
        let msg = |s: &str| load(s).unwrap_err().to_string();
        assert_eq!(
            msg(r#"{"session_key_secret": "abc"}"#),
            "Gate.session_key_secret: session_key_secret must be 64 hex characters (32 bytes), got 3 characters"
        );
        assert!(msg(r#"{"session_key_secret": 5}"#).contains("Gate.session_key_secret: expected a string"));
        assert!(msg(r#"{"session_key_ttl_in_second": 0}"#).contains("Gate.session_key_ttl_in_second"));
        assert!(msg(r#"{"session_key_ttl_in_second": 86401}"#).contains("out of range"));
        assert!(msg(r#"{"session_key_tll_in_second": 5}"#).contains("did you mean session_key_ttl_in_second"));
    }

    #[test]
    fn session_keys_refuse_bad_secrets_and_ttls() {
        let mut c = GateConfig { session_key_secret: Some("short".into()), ..GateConfig::default() };
        assert!(matches!(c.session_keys(), Err(GateConfigError::BadSecret(_))));
        c.session_key_secret = Some(SECRET_HEX.to_uppercase());
        assert!(c.session_keys().is_ok(), "either case, like redirection_secret");
        c.session_key_ttl = Duration::ZERO;
        assert_eq!(c.session_keys().unwrap_err(), GateConfigError::Ttl(Duration::ZERO));
        c.session_key_ttl = SESSION_KEY_TTL_MAX + Duration::from_millis(1);
        assert!(matches!(c.session_keys(), Err(GateConfigError::Ttl(_))));
    }

    #[test]
    fn issued_keys_verify_with_the_same_config_only() {
        let c = GateConfig { session_key_secret: Some(SECRET_HEX.into()), ..GateConfig::default() };
        let keys = c.session_keys().unwrap();
        let now = WallTime(1_700_000_000_000);
        let (key, claims) = keys.issue("alice", now, &SeedRand::new(3)).unwrap();
        assert_eq!(claims.expires_at, now.saturating_add(SESSION_KEY_TTL_DEFAULT));
        assert_eq!(keys.verify_for(&key, "alice", now), Ok(claims));
        let other = SessionKeys::new([0; SECRET_BYTES], SESSION_KEY_TTL_DEFAULT);
        assert_eq!(other.verify(&key, now), Err(SessionKeyError::BadSignature));
        assert!(!format!("{keys:?}").contains("a2"), "Debug shows no secret");
    }
}
