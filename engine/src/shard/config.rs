//! The SQL layout as configuration: instances, the bootstrap shard layout, public data.
//!
//! Two manifest sections. iFun's `Object` section keeps its names: `enable_database` turns
//! SQL on; `db_mysql_server_address` (`tcp://host:port`), `db_mysql_id`, `db_mysql_pw` and
//! `db_mysql_database` describe a single MariaDB/MySQL instance, which then holds every shard
//! as instance `db-0`; with no address the embedded default is one SQLite file,
//! `sqlite://db-0.sqlite` (relative to the server's data directory). `cache_expiration_in_ms`
//! and `copy_cache_expiration_in_ms` belong to the object store and are accepted here.
//!
//! A `Sharding` section describes several instances (seed 004: 32 logical databases that
//! start on one server and are split across servers as users grow):
//!
//! ```json
//! "Sharding": {
//!   "logical_shards": 32,
//!   "instances": { "db-0": "mysql://game:pw@10.0.0.5:3306/game", "db-1": "sqlite://db-1.sqlite" },
//!   "shards": { "db-0": "0-15", "db-1": ["16-30", 31] },
//!   "public": { "user_names": "db-0", "guilds": "db-1" },
//!   "public_default": "db-0"
//! }
//! ```
//!
//! Every logical shard must be on exactly one configured instance; a shard on no instance, on
//! two, or on an unknown one is an error naming the key. `shards` is the **bootstrap** layout:
//! once the cluster has stored a shard map in ZooKeeper (at first start), the stored map is
//! authoritative and moves change it there, not here. `public` names the instance of each
//! area of unsharded data; other areas go to `public_default` (default: the first instance by
//! name).

use std::collections::BTreeMap;

use serde_json::Value;

use super::key::{LOGICAL_SHARDS_DEFAULT, LOGICAL_SHARDS_MAX};
use crate::manifest::reader::{as_object, join, wrong_type, Fields};
use crate::manifest::redis::percent_encode;
use crate::manifest::{Manifest, ManifestError};

/// iFun's section.
pub const OBJECT_SECTION: &str = "Object";
/// The sharding section.
pub const SHARDING_SECTION: &str = "Sharding";
/// Longest instance or public area name.
pub const INSTANCE_NAME_BYTES_MAX: usize = 64;
/// The instance name used when one instance holds everything.
pub const SINGLE_INSTANCE_NAME: &str = "db-0";

pub(crate) const OBJECT_KEYS: &[&str] = &[
    "enable_database",
    "db_mysql_server_address",
    "db_mysql_id",
    "db_mysql_pw",
    "db_mysql_database",
    "cache_expiration_in_ms",
    "copy_cache_expiration_in_ms",
];
const SHARDING_KEYS: &[&str] = &["logical_shards", "instances", "shards", "public", "public_default"];

/// The SQL layout of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    pub logical_shards: u32,
    /// Instance name -> connection URL (`sqlite://PATH`, `mysql://...`).
    pub instances: BTreeMap<String, String>,
    /// Bootstrap layout: the instance of shard `i`.
    pub layout: Vec<String>,
    /// Public area -> instance.
    pub public: BTreeMap<String, String>,
    pub public_default: String,
}

impl ShardConfig {
    /// Every shard on one instance.
    pub fn single(name: &str, url: &str, logical_shards: u32) -> ShardConfig {
        ShardConfig {
            logical_shards,
            instances: BTreeMap::from([(name.to_string(), url.to_string())]),
            layout: vec![name.to_string(); logical_shards as usize],
            public: BTreeMap::new(),
            public_default: name.to_string(),
        }
    }

    /// Shard `i` on instance `names[i % names.len()]` (URLs empty: for simulations, where the
    /// directory is built from names).
    pub fn round_robin(names: &[String], logical_shards: u32) -> ShardConfig {
        assert!(!names.is_empty());
        ShardConfig {
            logical_shards,
            instances: names.iter().map(|n| (n.clone(), String::new())).collect(),
            layout: (0..logical_shards as usize).map(|i| names[i % names.len()].clone()).collect(),
            public: BTreeMap::new(),
            public_default: names[0].clone(),
        }
    }

    /// Instance names, sorted.
    pub fn instance_names(&self) -> Vec<String> {
        self.instances.keys().cloned().collect()
    }

    /// The instance holding public `area`.
    pub fn public_instance(&self, area: &str) -> &str {
        self.public.get(area).unwrap_or(&self.public_default)
    }

    /// The layout of a loaded manifest: `None` if `Object.enable_database` is off or absent.
    pub fn from_manifest(m: &Manifest) -> Result<Option<ShardConfig>, ManifestError> {
        let empty = Value::Object(Default::default());
        let object = Fields::new(OBJECT_SECTION, m.section(OBJECT_SECTION).unwrap_or(&empty), OBJECT_KEYS)?;
        let enabled = object.bool("enable_database", false)?;
        object.uint("cache_expiration_in_ms", 0..=86_400_000, 3000)?;
        object.uint("copy_cache_expiration_in_ms", 0..=86_400_000, 700)?;
        let address = object.opt_string("db_mysql_server_address")?;
        let sharding = m.section(SHARDING_SECTION);
        if !enabled {
            if sharding.is_some() {
                return Err(ManifestError::Invalid {
                    path: SHARDING_SECTION.into(),
                    message: "needs Object.enable_database: true".into(),
                });
            }
            return Ok(None);
        }
        match sharding {
            Some(v) => {
                if address.is_some() {
                    return Err(ManifestError::Invalid {
                        path: object.path_of("db_mysql_server_address"),
                        message: "with a Sharding section, list every instance in Sharding.instances".into(),
                    });
                }
                Self::parse_sharding(SHARDING_SECTION, v).map(Some)
            }
            None => {
                let url = match address {
                    None => format!("sqlite://{SINGLE_INSTANCE_NAME}.sqlite"),
                    Some(addr) => {
                        let host = addr.strip_prefix("tcp://").unwrap_or(&addr);
                        if host.is_empty() || !host.contains(':') {
                            return Err(ManifestError::Invalid {
                                path: object.path_of("db_mysql_server_address"),
                                message: format!("expected tcp://host:port, found {addr:?}"),
                            });
                        }
                        let id = object.string("db_mysql_id", "")?;
                        let pw = object.string("db_mysql_pw", "")?;
                        let db = object.string("db_mysql_database", "")?;
                        if db.is_empty() {
                            return Err(ManifestError::Missing { path: object.path_of("db_mysql_database") });
                        }
                        format!(
                            "mysql://{}:{}@{host}/{}",
                            percent_encode(&id),
                            percent_encode(&pw),
                            percent_encode(&db)
                        )
                    }
                };
                Ok(Some(ShardConfig::single(SINGLE_INSTANCE_NAME, &url, LOGICAL_SHARDS_DEFAULT)))
            }
        }
    }

    /// Parses a `Sharding` section found at `path`.
    pub fn parse_sharding(path: &str, v: &Value) -> Result<ShardConfig, ManifestError> {
        let f = Fields::new(path, v, SHARDING_KEYS)?;
        let logical_shards =
            f.uint("logical_shards", 1..=u64::from(LOGICAL_SHARDS_MAX), u64::from(LOGICAL_SHARDS_DEFAULT))?
                as u32;

        let instances_path = f.path_of("instances");
        let Some(list) = v.get("instances") else {
            return Err(ManifestError::Missing { path: instances_path });
        };
        let mut instances = BTreeMap::new();
        for (name, url) in as_object(&instances_path, list)? {
            let p = join(&instances_path, name);
            validate_instance_name(&p, name)?;
            let url = url.as_str().ok_or_else(|| wrong_type(&p, "a URL string", url))?;
            if !(url.starts_with("sqlite://") || url.starts_with("mysql://") || url.starts_with("mariadb://"))
            {
                return Err(ManifestError::Invalid {
                    path: p,
                    message: format!("expected sqlite://PATH or mysql://USER:PW@HOST:PORT/DB, found {url:?}"),
                });
            }
            instances.insert(name.clone(), url.to_string());
        }
        if instances.is_empty() {
            return Err(ManifestError::Invalid {
                path: instances_path,
                message: "at least one instance".into(),
            });
        }

        let shards_path = f.path_of("shards");
        let mut layout: Vec<Option<String>> = vec![None; logical_shards as usize];
        match v.get("shards") {
            None if instances.len() == 1 => {
                let only = instances.keys().next().expect("one instance").clone();
                layout.iter_mut().for_each(|s| *s = Some(only.clone()));
            }
            None => return Err(ManifestError::Missing { path: shards_path }),
            Some(shards) => {
                for (name, spec) in as_object(&shards_path, shards)? {
                    let p = join(&shards_path, name);
                    if !instances.contains_key(name) {
                        return Err(ManifestError::Invalid {
                            path: p,
                            message: format!("unknown instance (configured: {})", names(&instances)),
                        });
                    }
                    for shard in shard_list(&p, spec, logical_shards)? {
                        if let Some(other) = &layout[shard as usize] {
                            return Err(ManifestError::Invalid {
                                path: p,
                                message: format!("shard {shard} is also on {other}"),
                            });
                        }
                        layout[shard as usize] = Some(name.clone());
                    }
                }
            }
        }
        let layout = layout
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.ok_or_else(|| ManifestError::Invalid {
                    path: shards_path.clone(),
                    message: format!("shard {i} is on no instance"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let known = |p: &str, name: &str| {
            if instances.contains_key(name) {
                Ok(name.to_string())
            } else {
                Err(ManifestError::Invalid {
                    path: p.to_string(),
                    message: format!("unknown instance {name:?} (configured: {})", names(&instances)),
                })
            }
        };
        let public_default = match f.opt_string("public_default")? {
            Some(name) => known(&f.path_of("public_default"), &name)?,
            None => instances.keys().next().expect("at least one").clone(),
        };
        let public_path = f.path_of("public");
        let mut public = BTreeMap::new();
        if let Some(areas) = v.get("public") {
            for (area, inst) in as_object(&public_path, areas)? {
                let p = join(&public_path, area);
                validate_instance_name(&p, area)?;
                let inst = inst.as_str().ok_or_else(|| wrong_type(&p, "an instance name", inst))?;
                public.insert(area.clone(), known(&p, inst)?);
            }
        }
        Ok(ShardConfig { logical_shards, instances, layout, public, public_default })
    }
}

fn names(instances: &BTreeMap<String, String>) -> String {
    instances.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn validate_instance_name(path: &str, name: &str) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && name.len() <= INSTANCE_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Invalid {
            path: path.to_string(),
            message: format!("name {name:?}: 1 to {INSTANCE_NAME_BYTES_MAX} of a-z 0-9 - _"),
        })
    }
}

/// `"3"`, `"0-15"`, `7` or an array of those.
fn shard_list(path: &str, spec: &Value, logical_shards: u32) -> Result<Vec<u32>, ManifestError> {
    let expected = format!("shard numbers 0..={} as 7, \"0-15\" or a list of those", logical_shards - 1);
    let one = |p: &str, v: &Value| -> Result<Vec<u32>, ManifestError> {
        let out_of_range = || ManifestError::OutOfRange {
            path: p.to_string(),
            expected: expected.clone(),
            found: v.to_string(),
        };
        let (lo, hi) = match v {
            Value::Number(n) => {
                let x = n.as_u64().ok_or_else(out_of_range)?;
                (x, x)
            }
            Value::String(s) => {
                let parse = |t: &str| t.trim().parse::<u64>().map_err(|_| wrong_type(p, &expected, v));
                match s.split_once('-') {
                    Some((a, b)) => (parse(a)?, parse(b)?),
                    None => {
                        let x = parse(s)?;
                        (x, x)
                    }
                }
            }
            _ => return Err(wrong_type(p, &expected, v)),
        };
        if lo > hi || hi >= u64::from(logical_shards) {
            return Err(out_of_range());
        }
        Ok((lo as u32..=hi as u32).collect())
    };
    match spec {
        Value::Array(items) => {
            let mut all = Vec::new();
            for (i, item) in items.iter().enumerate() {
                all.extend(one(&format!("{path}[{i}]"), item)?);
            }
            Ok(all)
        }
        v => one(path, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Result<Manifest, ManifestError> {
        Manifest::load(&format!(r#"{{ "AppInfo": {{ "app_id": "G" }} {extra} }}"#), None)
    }

    fn config(extra: &str) -> Result<Option<ShardConfig>, ManifestError> {
        ShardConfig::from_manifest(&manifest(extra)?)
    }

    fn err(extra: &str) -> String {
        config(extra).unwrap_err().to_string()
    }

    #[test]
    fn no_database_unless_enabled() {
        assert_eq!(config("").unwrap(), None);
        assert_eq!(config(r#", "Object": { "enable_database": false }"#).unwrap(), None);
    }

    #[test]
    fn enabling_the_database_alone_gives_one_embedded_sqlite_instance_with_32_shards() {
        let c = config(r#", "Object": { "enable_database": true }"#).unwrap().unwrap();
        assert_eq!(c.logical_shards, 32);
        assert_eq!(c.instances, BTreeMap::from([("db-0".to_string(), "sqlite://db-0.sqlite".to_string())]));
        assert!(c.layout.iter().all(|i| i == "db-0"));
        assert_eq!(c.public_instance("user_names"), "db-0");
    }

    #[test]
    fn ifun_mysql_keys_give_one_mariadb_instance() {
        let c = config(
            r#", "Object": { "enable_database": true, "db_mysql_server_address": "tcp://10.10.10.10:3306",
                "db_mysql_id": "funapi", "db_mysql_pw": "p@ss", "db_mysql_database": "funapi",
                "cache_expiration_in_ms": 3000, "copy_cache_expiration_in_ms": 700 }"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.instances["db-0"], "mysql://funapi:p%40ss@10.10.10.10:3306/funapi");
        assert!(err(r#", "Object": { "enable_database": true, "db_mysql_server_address": "tcp://x" , "db_mysql_database": "d"}"#)
            .contains("Object.db_mysql_server_address"));
        assert!(err(r#", "Object": { "enable_database": true, "db_mysql_adress": "x" }"#)
            .contains("Object.db_mysql_adress"));
    }

    #[test]
    fn a_sharding_section_spreads_shards_over_instances() {
        let c = config(
            r#", "Object": { "enable_database": true },
               "Sharding": { "instances": { "db-0": "sqlite://a.sqlite", "db-1": "mysql://u:p@h:3306/d" },
                             "shards": { "db-0": "0-15", "db-1": ["16-30", 31] },
                             "public": { "user_names": "db-1" } }"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.layout[15], "db-0");
        assert_eq!(c.layout[16], "db-1");
        assert_eq!(c.layout[31], "db-1");
        assert_eq!(c.public_instance("user_names"), "db-1");
        assert_eq!(c.public_instance("guilds"), "db-0");
    }

    #[test]
    fn a_bad_map_is_an_error_naming_the_key() {
        let base = r#", "Object": { "enable_database": true }, "Sharding": { "instances": { "db-0": "sqlite://a", "db-1": "sqlite://b" }, "#;
        let e = err(&format!(r#"{base} "shards": {{ "db-0": "0-15" }} }}"#));
        assert!(e.contains("Sharding.shards") && e.contains("shard 16 is on no instance"), "{e}");
        let e = err(&format!(r#"{base} "shards": {{ "db-0": "0-16", "db-1": "16-31" }} }}"#));
        assert!(e.contains("Sharding.shards.db-1") && e.contains("shard 16 is also on db-0"), "{e}");
        let e = err(&format!(r#"{base} "shards": {{ "db-0": "0-15", "db-9": "16-31" }} }}"#));
        assert!(e.contains("Sharding.shards.db-9") && e.contains("unknown instance"), "{e}");
        let e = err(&format!(r#"{base} "shards": {{ "db-0": "0-15", "db-1": "16-32" }} }}"#));
        assert!(e.contains("Sharding.shards.db-1") && e.contains("out of range"), "{e}");
        let e = err(&format!(
            r#"{base} "shards": {{ "db-0": "0-15", "db-1": "16-31" }}, "public": {{ "guilds": "db-7" }} }}"#
        ));
        assert!(e.contains("Sharding.public.guilds"), "{e}");
        let e = err(r#", "Sharding": { "instances": { "db-0": "sqlite://a" } }"#);
        assert!(e.contains("enable_database"), "{e}");
        let e = err(
            r#", "Object": { "enable_database": true }, "Sharding": { "instances": { "db-0": "postgres://x" } }"#,
        );
        assert!(e.contains("Sharding.instances.db-0"), "{e}");
    }
}
