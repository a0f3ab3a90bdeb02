//! [`StorageConfig`] and the manifest's `CrossServerStorage` section.
//!
//! The section keeps iFun's parameter names, so an iFun section pastes in unchanged:
//!
//! ```json
//! "CrossServerStorage": {
//!   "enable_cross_server_storage": true,
//!   "redis_tag_for_cross_server_storage": "cross_server_storage"
//! }
//! ```
//!
//! The manifest module keeps this section (and `Redis`) as raw JSON; this module parses it
//! with the manifest's error type, so messages look the same (`CrossServerStorage.
//! enable_cross_server_storage: expected a boolean, found string "yes"`). The manifest's
//! typed reader is private to that module, hence the small reader here.

use serde_json::{Map, Value};

use crate::manifest::{Manifest, ManifestError};

/// Default [`StorageConfig::key_prefix`].
pub const KEY_PREFIX_DEFAULT: &str = "sandtable:css:";

/// Default [`StorageConfig::max_value_bytes`]: 64 KiB of JSON. Auth keys and shared counters
/// are far smaller; a larger value is probably a mistake (and every read moves all of it).
pub const VALUE_BYTES_DEFAULT: usize = 64 * 1024;

/// Largest accepted [`StorageConfig::max_value_bytes`]: Redis's 512 MiB string limit less
/// room for the version envelope. A config above it is [`InvalidConfig`](super::StorageError::InvalidConfig).
pub const VALUE_BYTES_LIMIT: usize = 512 * 1024 * 1024 - 1024;

/// The manifest section this module owns.
pub const SECTION: &str = "CrossServerStorage";

const ENABLE: &str = "enable_cross_server_storage";
const REDIS_TAG: &str = "redis_tag_for_cross_server_storage";
/// The section's keys, in iFun's order.
const KEYS: &[&str] = &[ENABLE, REDIS_TAG];

/// Shortest unknown key suggested a known key merely for being part of it (`enable`).
const SUGGESTION_PART_CHARS_MIN: usize = 4;

/// How cross-server storage behaves on this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// iFun's `enable_cross_server_storage` (default false). While false every call answers
    /// [`Disabled`](super::StorageError::Disabled) without touching Redis, so a server can
    /// build the component unconditionally.
    pub enabled: bool,
    /// iFun's `redis_tag_for_cross_server_storage` (default `""`): which server of the `Redis`
    /// section's `redis_servers` holds the data. The backend picks the `Kv` client by it; the
    /// engine only carries it.
    pub redis_tag: String,
    /// Prefix of every Redis key (default [`KEY_PREFIX_DEFAULT`]), so storage keys never
    /// collide with other users of the same Redis (other modules, other apps). All servers
    /// sharing data must use the same prefix. Not an iFun parameter, so not in the manifest.
    pub key_prefix: String,
    /// Longest value accepted, in bytes of compact JSON text (default
    /// [`VALUE_BYTES_DEFAULT`], at most [`VALUE_BYTES_LIMIT`]). Longer values are refused with
    /// [`TooLarge`](super::StorageError::TooLarge) before anything is sent. The stored envelope
    /// adds at most ~50 bytes. Not an iFun parameter.
    pub max_value_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            enabled: false,
            redis_tag: String::new(),
            key_prefix: KEY_PREFIX_DEFAULT.to_owned(),
            max_value_bytes: VALUE_BYTES_DEFAULT,
        }
    }
}

impl StorageConfig {
    /// An enabled configuration with the defaults (untagged Redis server).
    pub fn enabled() -> Self {
        StorageConfig { enabled: true, ..StorageConfig::default() }
    }

    /// Parses a `CrossServerStorage` section found at `path` (`CrossServerStorage`, or
    /// `flavors.pvp.CrossServerStorage`). Absent keys take iFun's defaults; unknown keys and
    /// wrongly typed values are errors naming their path.
    pub fn from_section(path: &str, v: &Value) -> Result<StorageConfig, ManifestError> {
        let map = v.as_object().ok_or_else(|| wrong_type(path, "an object", v))?;
        check_keys(path, map)?;
        let enabled = match map.get(ENABLE) {
            None => false,
            Some(x) => x.as_bool().ok_or_else(|| wrong_type(&join(path, ENABLE), "a boolean", x))?,
        };
        let redis_tag = match map.get(REDIS_TAG) {
            None => String::new(),
            Some(x) => {
                x.as_str().ok_or_else(|| wrong_type(&join(path, REDIS_TAG), "a string", x))?.to_owned()
            }
        };
        Ok(StorageConfig { enabled, redis_tag, ..StorageConfig::default() })
    }

    /// The configuration of a loaded manifest (its flavor already applied): the
    /// `CrossServerStorage` section, or the defaults (disabled) without one.
    ///
    /// When storage is enabled and the manifest has a `Redis` section, that section must not
    /// say `"enable_redis": false` (iFun requires Redis for this feature), and a non-empty tag
    /// must name one of its `redis_servers`; otherwise the server would start and fail on
    /// the first call.
    pub fn from_manifest(m: &Manifest) -> Result<StorageConfig, ManifestError> {
        let Some(section) = m.section(SECTION) else { return Ok(StorageConfig::default()) };
        let cfg = StorageConfig::from_section(SECTION, section)?;
        if !cfg.enabled {
            return Ok(cfg);
        }
        let Some(redis) = m.section("Redis").and_then(Value::as_object) else { return Ok(cfg) };
        if redis.get("enable_redis") == Some(&Value::Bool(false)) {
            return Err(ManifestError::Invalid {
                path: join(SECTION, ENABLE),
                message: "needs Redis, but Redis.enable_redis is false".to_owned(),
            });
        }
        if let (false, Some(servers)) =
            (cfg.redis_tag.is_empty(), redis.get("redis_servers").and_then(Value::as_object))
        {
            if !servers.contains_key(&cfg.redis_tag) {
                let known: Vec<&str> = servers.keys().map(String::as_str).collect();
                return Err(ManifestError::Invalid {
                    path: join(SECTION, REDIS_TAG),
                    message: format!(
                        "no server tagged {:?} in Redis.redis_servers (tags: {})",
                        cfg.redis_tag,
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                });
            }
        }
        Ok(cfg)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn wrong_type(path: &str, expected: &str, found: &Value) -> ManifestError {
    ManifestError::WrongType { path: path.to_owned(), expected: expected.to_owned(), found: describe(found) }
}

/// The manifest's wording for a found value: its type and, for short scalars, the value.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if n.is_f64() => format!("number {n}"),
        Value::Number(n) => format!("integer {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("string {:?}...", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("string {s:?}"),
        Value::Array(a) => format!("an array of {} element{}", a.len(), if a.len() == 1 { "" } else { "s" }),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Rejects the first unknown key in sorted order, suggesting a known key when the two
/// differ only in case or one contains the other (`enable` -> `enable_cross_server_storage`).
fn check_keys(path: &str, map: &Map<String, Value>) -> Result<(), ManifestError> {
    let mut unknown: Vec<&String> = map.keys().filter(|k| !KEYS.contains(&k.as_str())).collect();
    unknown.sort();
    let Some(k) = unknown.first() else { return Ok(()) };
    let u = k.to_lowercase();
    let suggestion = KEYS
        .iter()
        .find(|known| {
            *known == &u
                || (u.chars().count() >= SUGGESTION_PART_CHARS_MIN
                    && (known.contains(&u) || u.contains(*known)))
        })
        .map(|s| (*s).to_owned());
    Err(ManifestError::UnknownKey { path: join(path, k), suggestion })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<StorageConfig, ManifestError> {
        StorageConfig::from_section(SECTION, &v)
    }

    fn manifest(extra: Value) -> Manifest {
        let mut doc = json!({ "AppInfo": { "app_id": "PvpTutorial" } });
        doc.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        Manifest::load(&doc.to_string(), None).expect("manifest loads")
    }

    #[test]
    fn defaults_and_the_seed_section() {
        assert_eq!(parse(json!({})).unwrap(), StorageConfig::default());
        let cfg = parse(json!({
            "enable_cross_server_storage": true,
            "redis_tag_for_cross_server_storage": "cross_server_storage"
        }))
        .unwrap();
        assert!(cfg.enabled);
        assert_eq!(cfg.redis_tag, "cross_server_storage");
        assert_eq!(cfg.key_prefix, KEY_PREFIX_DEFAULT);
        assert_eq!(cfg.max_value_bytes, VALUE_BYTES_DEFAULT);
    }

    #[test]
    fn errors_name_the_path() {
        let msg = |v: Value| parse(v).unwrap_err().to_string();
        assert_eq!(
            msg(json!({"enable_cross_server_storage": "yes"})),
            "CrossServerStorage.enable_cross_server_storage: expected a boolean, found string \"yes\""
        );
        assert_eq!(
            msg(json!({"redis_tag_for_cross_server_storage": 3})),
            "CrossServerStorage.redis_tag_for_cross_server_storage: expected a string, found integer 3"
        );
        assert_eq!(
            msg(json!({"enable": true})),
            "CrossServerStorage.enable: unknown key (did you mean enable_cross_server_storage?)"
        );
        assert_eq!(
            msg(json!({"Enable_Cross_Server_Storage": true, "zzz": 1})),
            "CrossServerStorage.Enable_Cross_Server_Storage: unknown key (did you mean enable_cross_server_storage?)"
        );
        assert_eq!(msg(json!({"ttl": 1})), "CrossServerStorage.ttl: unknown key");
        assert_eq!(msg(json!([])), "CrossServerStorage: expected an object, found an array of 0 elements");
        let e =
            StorageConfig::from_section("flavors.pvp.CrossServerStorage", &json!({"x": null})).unwrap_err();
        assert_eq!(
            e,
            ManifestError::UnknownKey { path: "flavors.pvp.CrossServerStorage.x".into(), suggestion: None }
        );
    }

    #[test]
    fn from_manifest_checks_the_redis_section() {
        let css = json!({"enable_cross_server_storage": true, "redis_tag_for_cross_server_storage": "css"});
        assert_eq!(StorageConfig::from_manifest(&manifest(json!({}))).unwrap(), StorageConfig::default());
        // No Redis section: the backend's Kv is used as is.
        assert!(
            StorageConfig::from_manifest(&manifest(json!({ "CrossServerStorage": css.clone() })))
                .unwrap()
                .enabled
        );
        let ok = manifest(json!({
            "CrossServerStorage": css.clone(),
            "Redis": { "enable_redis": true, "redis_servers": { "css": { "address": "10.0.0.2:6379" } } }
        }));
        assert_eq!(StorageConfig::from_manifest(&ok).unwrap().redis_tag, "css");
        let wrong_tag = manifest(json!({
            "CrossServerStorage": css.clone(),
            "Redis": { "enable_redis": true, "redis_servers": { "cache": {}, "ranking": {} } }
        }));
        assert_eq!(
            StorageConfig::from_manifest(&wrong_tag).unwrap_err().to_string(),
            "CrossServerStorage.redis_tag_for_cross_server_storage: no server tagged \"css\" in \
             Redis.redis_servers (tags: cache, ranking)"
        );
        let redis_off = manifest(json!({ "CrossServerStorage": css, "Redis": { "enable_redis": false } }));
        assert_eq!(
            StorageConfig::from_manifest(&redis_off).unwrap_err().to_string(),
            "CrossServerStorage.enable_cross_server_storage: needs Redis, but Redis.enable_redis is false"
        );
        // Disabled storage does not care about Redis.
        let off = manifest(json!({ "CrossServerStorage": {}, "Redis": { "enable_redis": false } }));
        assert!(!StorageConfig::from_manifest(&off).unwrap().enabled);
        let bad = manifest(json!({ "CrossServerStorage": { "enable_cross_server_storage": 1 } }));
        assert!(matches!(StorageConfig::from_manifest(&bad), Err(ManifestError::WrongType { .. })));
    }
}
