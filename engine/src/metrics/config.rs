//! [`ApiConfig`]: the manifest's `ApiService` section (the admin HTTP API).
//!
//! ```json
//! "ApiService": { "api_service_port": 8014, "api_service_logging_level": 1 }
//! ```
//!
//! iFun's keys, with iFun's defaults:
//! - `api_service_port` (default 8014): the admin API's TCP port; 0 = any free port (as
//!   `rpc_port`).
//! - `api_service_event_tags_size` (default 1): in iFun, how many event tags (serialised
//!   queues) run API handlers. Accepted for compatibility, `1..=`[`API_EVENT_TAGS_MAX`];
//!   Sandtable's admin handlers never block and run concurrently, so it changes nothing.
//! - `api_service_logging_level` (default 2): 0 logs no request, 1 logs failed requests
//!   (status 400 and up), 2 logs every request.
//!
//! Sandtable's addition: `api_service_bind_address` (default `"0.0.0.0"`), the IP to
//! listen on (`"127.0.0.1"` keeps the API on the host).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::manifest::{Manifest, ManifestError};

/// The manifest section [`ApiConfig::from_manifest`] reads.
pub const SECTION: &str = "ApiService";
/// iFun's default `api_service_port`.
pub const API_SERVICE_PORT_DEFAULT: u16 = 8014;
/// Largest accepted `api_service_event_tags_size`.
pub const API_EVENT_TAGS_MAX: u64 = 1024;
/// Highest `api_service_logging_level`.
pub const API_LOGGING_LEVEL_MAX: u64 = 2;

const KEYS: &[&str] = &[
    "api_service_port",
    "api_service_event_tags_size",
    "api_service_logging_level",
    "api_service_bind_address",
];

/// How the admin HTTP API is served (see the module docs for each key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub api_service_port: u16,
    pub api_service_event_tags_size: u64,
    pub api_service_logging_level: u8,
    pub api_service_bind_address: IpAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_service_port: API_SERVICE_PORT_DEFAULT,
            api_service_event_tags_size: 1,
            api_service_logging_level: 2,
            api_service_bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

impl ApiConfig {
    /// The address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.api_service_bind_address, self.api_service_port)
    }

    /// The `ApiService` section of a loaded manifest (defaults if absent). Errors name the
    /// key, like every manifest error.
    pub fn from_manifest(m: &Manifest) -> Result<ApiConfig, ManifestError> {
        use crate::manifest::reader::Fields;
        let mut cfg = ApiConfig::default();
        let Some(v) = m.section(SECTION) else { return Ok(cfg) };
        let f = Fields::new(SECTION, v, KEYS)?;
        cfg.api_service_port = u16::try_from(f.uint(
            "api_service_port",
            0..=u64::from(u16::MAX),
            u64::from(API_SERVICE_PORT_DEFAULT),
        )?)
        .unwrap_or(API_SERVICE_PORT_DEFAULT);
        cfg.api_service_event_tags_size = f.uint("api_service_event_tags_size", 1..=API_EVENT_TAGS_MAX, 1)?;
        cfg.api_service_logging_level =
            u8::try_from(f.uint("api_service_logging_level", 0..=API_LOGGING_LEVEL_MAX, 2)?).unwrap_or(2);
        if let Some(s) = f.opt_string("api_service_bind_address")? {
            cfg.api_service_bind_address = s.parse().map_err(|_| ManifestError::Invalid {
                path: f.path_of("api_service_bind_address"),
                message: format!("{s:?} is not an IP address"),
            })?;
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(section: &str) -> Result<ApiConfig, ManifestError> {
        let text = format!(r#"{{"AppInfo": {{"app_id": "g"}}, "ApiService": {section}}}"#);
        ApiConfig::from_manifest(&Manifest::load(&text, None).unwrap())
    }

    #[test]
    fn defaults_and_values() {
        let m = Manifest::load(r#"{"AppInfo": {"app_id": "g"}}"#, None).unwrap();
        assert_eq!(ApiConfig::from_manifest(&m).unwrap(), ApiConfig::default());
        assert_eq!(ApiConfig::default().listen_addr().to_string(), "0.0.0.0:8014");
        let c = load(
            r#"{"api_service_port": 0, "api_service_logging_level": 1, "api_service_event_tags_size": 4,
                "api_service_bind_address": "127.0.0.1"}"#,
        )
        .unwrap();
        assert_eq!(c.api_service_port, 0);
        assert_eq!(c.api_service_logging_level, 1);
        assert_eq!(c.api_service_event_tags_size, 4);
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:0");
    }

    #[test]
    fn errors_name_the_key() {
        let msg = |s: &str| load(s).unwrap_err().to_string();
        assert!(msg(r#"{"api_service_port": 70000}"#).contains("ApiService.api_service_port"));
        assert!(msg(r#"{"api_service_logging_level": 3}"#).contains("ApiService.api_service_logging_level"));
        assert!(msg(r#"{"api_service_bind_address": "here"}"#).contains("not an IP address"));
        assert!(msg(r#"{"api_service_prot": 1}"#).contains("api_service_port"));
    }
}
