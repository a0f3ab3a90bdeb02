//! [`AccountConfig`]: the manifest's `AccountManager` section plus the fencing knobs.

use std::time::Duration;

use super::error::AccountError;
use crate::cluster::validate_app_id;
use crate::env::SessionOptions;

/// Default [`AccountConfig::redirect_token_ttl`].
pub const REDIRECT_TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(30);
/// Default [`AccountConfig::lease_margin`].
pub const LEASE_MARGIN_DEFAULT: Duration = Duration::from_millis(500);
/// Default [`AccountConfig::drift_ppm_max`]: 5 %, far above real quartz (tens of ppm) so that
/// the simulator's drift faults stay inside the assumption.
pub const DRIFT_PPM_MAX_DEFAULT: u64 = 50_000;
/// Largest accepted [`AccountConfig::drift_ppm_max`]: 50 % (the lease would be at most half
/// a session timeout, the renewal period is a sixth).
pub const DRIFT_PPM_LIMIT: u64 = 500_000;
/// Bytes of a `redirection_secret` (64 hex characters in the manifest).
pub use crate::signed::SECRET_BYTES;

/// Deliberately broken behaviours, **for the simulator only**. With all false the buggy
/// code paths never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountBugs {
    /// Ignore the coordination lease: links stay open and keep receiving while this server
    /// is cut off from ZooKeeper, overlapping with another server's login of the account.
    pub no_fencing: bool,
    /// Skip the single-use check of redirect tokens: a token can be used again.
    pub replayable_token: bool,
    /// `broadcast_globally` also calls this server over RPC on top of delivering locally:
    /// its own accounts receive every global broadcast twice.
    pub dup_delivery: bool,
}

/// How one server's account manager behaves (iFun's `AccountManager` section, plus the
/// coordination settings the fencing argument depends on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    /// Servers with the same `app_id` share one login table `/{app_id}/active_accounts`.
    pub app_id: String,
    /// Options of the manager's own ZooKeeper session. Its negotiated timeout `T` is what
    /// the lease is derived from: a larger `T` survives longer coordination blips, and makes
    /// an account of a crashed server unavailable for longer.
    pub session: SessionOptions,
    /// iFun's `redirection_secret`: 64 hex characters (32 bytes), the same on every server.
    /// `None`: redirects are refused with [`AccountError::NoSecret`].
    pub redirection_secret: Option<String>,
    /// iFun's `redirection_strict_check_server_id` (default true): a token is accepted only
    /// by the server it was issued for.
    pub redirection_strict_check_server_id: bool,
    /// How long a redirect token stays valid (default 30 s, judged on the target's wall
    /// clock with [`super::token::CLOCK_SKEW_ALLOWANCE`] of slack).
    pub redirect_token_ttl: Duration,
    /// Safety margin subtracted from every lease (default 500 ms): it absorbs a process pause
    /// between a lease check and the action it guards. See the module docs.
    pub lease_margin: Duration,
    /// Bound on how far this node's monotonic clock may run fast or slow, in parts per
    /// million, that the fencing argument assumes (default 50 000 = 5 %).
    pub drift_ppm_max: u64,
    /// Planted bugs for checker tests; all off by default.
    pub bugs: AccountBugs,
}

impl AccountConfig {
    /// Defaults for `app_id`: no secret, strict server check, 30 s tokens, default session.
    pub fn new(app_id: impl Into<String>) -> Self {
        AccountConfig {
            app_id: app_id.into(),
            session: SessionOptions::default(),
            redirection_secret: None,
            redirection_strict_check_server_id: true,
            redirect_token_ttl: REDIRECT_TOKEN_TTL_DEFAULT,
            lease_margin: LEASE_MARGIN_DEFAULT,
            drift_ppm_max: DRIFT_PPM_MAX_DEFAULT,
            bugs: AccountBugs::default(),
        }
    }

    /// Checks everything that does not need the service; returns the decoded secret.
    pub fn validate(&self) -> Result<Option<[u8; SECRET_BYTES]>, AccountError> {
        validate_app_id(&self.app_id).map_err(|e| AccountError::Config(e.to_string()))?;
        if self.drift_ppm_max > DRIFT_PPM_LIMIT {
            return Err(AccountError::Config(format!(
                "drift_ppm_max {} above the limit {DRIFT_PPM_LIMIT}",
                self.drift_ppm_max
            )));
        }
        if self.redirect_token_ttl.is_zero() {
            return Err(AccountError::Config("redirect_token_ttl must be positive".into()));
        }
        self.redirection_secret.as_deref().map(parse_secret).transpose()
    }
}

/// Decodes a `redirection_secret`: exactly 64 hex digits (either case); the shared parser
/// of every signing secret ([`crate::signed::parse_secret`]).
pub fn parse_secret(s: &str) -> Result<[u8; SECRET_BYTES], AccountError> {
    crate::signed::parse_secret(s).map_err(|e| AccountError::Config(format!("redirection_secret {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets() {
        let good = "a29fd424579997bf91e3a29fd424579997bf91e3a29fd424579997bf91e3ABCD";
        let s = parse_secret(good).unwrap();
        assert_eq!(s[0], 0xa2);
        assert_eq!(s[31], 0xcd);
        for bad in ["", "change me", &good[..63], &format!("{good}0"), &good.replace('a', "g")] {
            assert!(matches!(parse_secret(bad), Err(AccountError::Config(_))), "{bad:?}");
        }
        let mut cfg = AccountConfig::new("app");
        cfg.redirection_secret = Some("short".into());
        assert!(cfg.validate().is_err());
        cfg.redirection_secret = Some(good.into());
        assert_eq!(cfg.validate().unwrap(), Some(s));
        cfg.app_id = "a/b".into();
        assert!(cfg.validate().is_err());
    }
}

/// The manifest section [`AccountConfig::from_manifest`] reads.
pub const SECTION: &str = "AccountManager";

const ACCOUNT_KEYS: &[&str] = &[
    "redirection_strict_check_server_id",
    "redirection_prefer_hostname",
    "redirection_secret",
    "redirect_token_ttl_in_second",
    "lease_margin_in_ms",
    "drift_ppm_max",
];

impl AccountConfig {
    /// The configuration of a loaded manifest: `app_id` from `AppInfo`, the session timeout
    /// from `ZookeeperClient`, the rest from the `AccountManager` section (iFun's keys plus
    /// Sandtable's `redirect_token_ttl_in_second`, `lease_margin_in_ms`, `drift_ppm_max`).
    ///
    /// iFun's `redirection_prefer_hostname` is accepted but has no effect: redirects always
    /// carry the target's published `external_ip`, since servers publish no host names.
    /// A present but malformed `redirection_secret` is an error naming the key.
    pub fn from_manifest(
        m: &crate::manifest::Manifest,
    ) -> Result<AccountConfig, crate::manifest::ManifestError> {
        use crate::manifest::reader::Fields;
        use crate::manifest::ManifestError;
        let mut cfg = AccountConfig::new(m.app_info.app_id.clone());
        cfg.session.session_timeout = m.zookeeper.session_timeout();
        let Some(v) = m.section(SECTION) else { return Ok(cfg) };
        let f = Fields::new(SECTION, v, ACCOUNT_KEYS)?;
        cfg.redirection_strict_check_server_id =
            f.bool("redirection_strict_check_server_id", cfg.redirection_strict_check_server_id)?;
        f.bool("redirection_prefer_hostname", true)?;
        cfg.redirection_secret = f.opt_string("redirection_secret")?;
        if let Some(s) = &cfg.redirection_secret {
            if let Err(AccountError::Config(message)) = parse_secret(s) {
                return Err(ManifestError::Invalid { path: f.path_of("redirection_secret"), message });
            }
        }
        cfg.redirect_token_ttl = Duration::from_secs(f.uint(
            "redirect_token_ttl_in_second",
            1..=86_400,
            REDIRECT_TOKEN_TTL_DEFAULT.as_secs(),
        )?);
        cfg.lease_margin = Duration::from_millis(f.uint(
            "lease_margin_in_ms",
            0..=60_000,
            u64::try_from(LEASE_MARGIN_DEFAULT.as_millis()).unwrap_or(500),
        )?);
        cfg.drift_ppm_max = f.uint("drift_ppm_max", 0..=DRIFT_PPM_LIMIT, DRIFT_PPM_MAX_DEFAULT)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod manifest_tests {
    use super::*;
    use crate::manifest::Manifest;

    fn load(section: &str) -> Result<AccountConfig, crate::manifest::ManifestError> {
        let text = format!(
            r#"{{"AppInfo": {{"app_id": "g"}}, "ZookeeperClient": {{"zookeeper_session_timeout_in_second": 12}}, "AccountManager": {section}}}"#
        );
        AccountConfig::from_manifest(&Manifest::load(&text, None).unwrap())
    }

    #[test]
    fn section_maps_to_config() {
        let secret = "ab".repeat(32);
        let c = load(&format!(
            r#"{{"redirection_secret": "{secret}", "redirection_strict_check_server_id": false, "redirect_token_ttl_in_second": 5}}"#
        ))
        .unwrap();
        assert_eq!(c.app_id, "g");
        assert_eq!(c.session.session_timeout, Duration::from_secs(12));
        assert_eq!(c.redirection_secret.as_deref(), Some(secret.as_str()));
        assert!(!c.redirection_strict_check_server_id);
        assert_eq!(c.redirect_token_ttl, Duration::from_secs(5));
        assert!(c.validate().unwrap().is_some());
    }

    #[test]
    fn bad_values_name_the_key() {
        let msg = |s: &str| load(s).unwrap_err().to_string();
        assert!(msg(r#"{"redirection_secret": "abc"}"#).contains("AccountManager.redirection_secret"));
        assert!(msg(r#"{"redirection_secret": 5}"#).contains("AccountManager.redirection_secret"));
        assert!(msg(r#"{"redirection_strict_check_server_id": "yes"}"#).contains("a boolean"));
        assert!(msg(r#"{"redirection_secrt": "x"}"#).contains("redirection_secret"));
        assert!(msg(r#"{"drift_ppm_max": 900000}"#).contains("drift_ppm_max"));
    }
}
