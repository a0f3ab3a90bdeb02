//! The manifest's `Redis` section: which Redis servers exist, by tag.
//!
//! iFun's shape is kept:
//!
//! ```json
//! "Redis": {
//!   "enable_redis": true,
//!   "redis_mode": "redis",
//!   "redis_servers": { "cross_server_storage": { "address": "10.10.10.10:6379", "auth_pass": "" } },
//!   "redis_async_threads_size": 4
//! }
//! ```
//!
//! Features pick their server by tag (`CrossServerStorage.redis_tag_for_cross_server_storage`).
//! `redis_mode` `"sentinel"` is not supported (an error, not a silent fallback), and
//! `redis_async_threads_size` is accepted for compatibility but has no effect: the engine's
//! Redis client is asynchronous on one connection that pipelines requests.

use std::collections::BTreeMap;

use serde_json::Value;

use super::reader::{as_object, check_keys, join, wrong_type, Fields};
use super::{Manifest, ManifestError};

/// The section this module reads.
pub const SECTION: &str = "Redis";

const KEYS: &[&str] = &["enable_redis", "redis_mode", "redis_servers", "redis_async_threads_size"];
const SERVER_KEYS: &[&str] = &["address", "auth_pass"];

/// One Redis server of the section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisServer {
    /// `host:port`.
    pub address: String,
    /// `AUTH` password; empty = none.
    pub auth_pass: String,
}

impl RedisServer {
    /// The `redis://` URL of this server (password percent-encoded where needed).
    pub fn url(&self) -> String {
        if self.auth_pass.is_empty() {
            format!("redis://{}", self.address)
        } else {
            format!("redis://:{}@{}", percent_encode(&self.auth_pass), self.address)
        }
    }
}

/// The `Redis` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisSection {
    pub enable_redis: bool,
    /// Servers by tag, sorted.
    pub servers: BTreeMap<String, RedisServer>,
}

impl RedisSection {
    /// The section of a loaded manifest; `None` without one.
    pub fn from_manifest(m: &Manifest) -> Result<Option<RedisSection>, ManifestError> {
        m.section(SECTION).map(|v| Self::parse(SECTION, v)).transpose()
    }

    /// Parses a section found at `path`.
    pub fn parse(path: &str, v: &Value) -> Result<RedisSection, ManifestError> {
        let f = Fields::new(path, v, KEYS)?;
        let enable_redis = f.bool("enable_redis", false)?;
        let mode = f.string("redis_mode", "redis")?;
        if mode != "redis" {
            return Err(ManifestError::Invalid {
                path: f.path_of("redis_mode"),
                message: format!("{mode:?} is not supported; use \"redis\""),
            });
        }
        f.uint("redis_async_threads_size", 1..=1024, 4)?;
        let mut servers = BTreeMap::new();
        let servers_path = join(path, "redis_servers");
        if let Some(list) = v.get("redis_servers") {
            for (tag, s) in as_object(&servers_path, list)? {
                let spath = join(&servers_path, tag);
                let map = as_object(&spath, s)?;
                check_keys(&spath, map, SERVER_KEYS)?;
                let address = match map.get("address") {
                    None => return Err(ManifestError::Missing { path: join(&spath, "address") }),
                    Some(Value::String(a)) => a.clone(),
                    Some(other) => return Err(wrong_type(&join(&spath, "address"), "a string", other)),
                };
                validate_address(&join(&spath, "address"), &address)?;
                let auth_pass = match map.get("auth_pass") {
                    None => String::new(),
                    Some(Value::String(p)) => p.clone(),
                    Some(other) => return Err(wrong_type(&join(&spath, "auth_pass"), "a string", other)),
                };
                servers.insert(tag.clone(), RedisServer { address, auth_pass });
            }
        }
        if enable_redis && servers.is_empty() {
            return Err(ManifestError::Invalid {
                path: servers_path,
                message: "enable_redis is true but no server is listed".to_owned(),
            });
        }
        Ok(RedisSection { enable_redis, servers })
    }

    /// The server a feature configured with `tag` uses: the server with that tag; for the
    /// empty tag, the server tagged `""` or else the only server. `None` when Redis is
    /// disabled or nothing matches.
    pub fn server_for_tag(&self, tag: &str) -> Option<&RedisServer> {
        if !self.enable_redis {
            return None;
        }
        match self.servers.get(tag) {
            Some(s) => Some(s),
            None if tag.is_empty() && self.servers.len() == 1 => self.servers.values().next(),
            None => None,
        }
    }
}

fn validate_address(path: &str, a: &str) -> Result<(), ManifestError> {
    let invalid = |message: String| Err(ManifestError::Invalid { path: path.to_owned(), message });
    let Some((host, port)) = a.rsplit_once(':') else {
        return invalid(format!("{a:?} is not host:port"));
    };
    if host.is_empty() || host.contains('/') || host.contains('@') || host.chars().any(char::is_whitespace) {
        return invalid(format!("{a:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => invalid(format!("{a:?} has no valid port (1..=65535)")),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(section: &str) -> Result<Option<RedisSection>, ManifestError> {
        let text = format!(r#"{{"AppInfo": {{"app_id": "g"}}, "Redis": {section}}}"#);
        RedisSection::from_manifest(&Manifest::load(&text, None).unwrap())
    }

    #[test]
    fn ifun_section_reads() {
        let r = load(
            r#"{"enable_redis": true, "redis_mode": "redis", "redis_async_threads_size": 4,
                "redis_servers": {"cross_server_storage": {"address": "10.10.10.10:6379", "auth_pass": ""},
                                  "other": {"address": "h:7000", "auth_pass": "p@ss word"}}}"#,
        )
        .unwrap()
        .unwrap();
        assert!(r.enable_redis);
        assert_eq!(r.servers.len(), 2);
        assert_eq!(r.server_for_tag("cross_server_storage").unwrap().url(), "redis://10.10.10.10:6379");
        assert_eq!(r.server_for_tag("other").unwrap().url(), "redis://:p%40ss%20word@h:7000");
        assert_eq!(r.server_for_tag("missing"), None);
        // Two servers and no "" tag: the empty tag matches nothing.
        assert_eq!(r.server_for_tag(""), None);
    }

    #[test]
    fn empty_tag_takes_the_only_server_and_disabled_gives_none() {
        let r =
            load(r#"{"enable_redis": true, "redis_servers": {"a": {"address": "h:1"}}}"#).unwrap().unwrap();
        assert_eq!(r.server_for_tag("").unwrap().address, "h:1");
        let r =
            load(r#"{"enable_redis": false, "redis_servers": {"a": {"address": "h:1"}}}"#).unwrap().unwrap();
        assert_eq!(r.server_for_tag("a"), None);
        let text = r#"{"AppInfo": {"app_id": "g"}}"#;
        assert_eq!(RedisSection::from_manifest(&Manifest::load(text, None).unwrap()).unwrap(), None);
    }

    #[test]
    fn bad_sections_name_the_key() {
        let msg = |s: &str| load(s).unwrap_err().to_string();
        assert!(msg(r#"{"redis_mode": "sentinel"}"#).contains("Redis.redis_mode"));
        assert!(msg(r#"{"enable_redis": true}"#).contains("Redis.redis_servers"));
        assert!(msg(r#"{"redis_servers": {"t": {"address": "nohostport"}}}"#)
            .contains("Redis.redis_servers.t.address"));
        assert!(msg(r#"{"redis_servers": {"t": {"address": "h:0"}}}"#).contains("valid port"));
        assert!(msg(r#"{"redis_servers": {"t": {"address": 5}}}"#).contains("expected a string"));
        assert!(msg(r#"{"redis_servers": {"t": {}}}"#).contains("Redis.redis_servers.t.address: missing"));
        assert!(msg(r#"{"redis_servers": {"t": {"address": "h:1", "pass": ""}}}"#).contains("auth_pass"));
        assert!(msg(r#"{"redis_servers": []}"#).contains("Redis.redis_servers"));
        assert!(msg(r#"{"enable_rediss": true}"#).contains("enable_redis"));
    }
}
