//! The server manifest (iFun Engine's `MANIFEST.json`): one JSON file per server.
//!
//! Top-level keys are iFun section names and keys inside them are iFun parameter names, so
//! an iFun user's sections paste in unchanged:
//!
//! ```json
//! {
//!   "AppInfo": { "app_id": "MyGame" },
//!   "RpcService": { "rpc_enabled": true, "rpc_port": 8015 },
//!   "ZookeeperClient": { "zookeeper_nodes": "10.0.0.1:2181,10.0.0.2:2181" },
//!   "SessionService": { "tcp_json_port": 8012 },
//!   "flavors": {
//!     "game": { "RpcService": { "rpc_tags": ["game"] } },
//!     "pvp":  { "RpcService": { "rpc_port": 9015, "rpc_tags": ["pvp"] },
//!               "SessionService": { "tcp_json_port": 9012 } }
//!   }
//! }
//! ```
//!
//! # Sections
//! - Typed and fully validated now: [`AppInfo`] (required), [`RpcService`],
//!   [`ZookeeperClient`]. Absent sections and keys take iFun's documented defaults.
//! - Accepted as raw JSON objects for the modules that will own them ([`RAW_SECTIONS`]:
//!   `SessionService`, `Redis`, `CrossServerStorage`, `AccountManager`, `Object`, `Sharding`,
//!   `Gate`, `ApiService`, `Timer`, `Logging`), kept in [`Manifest::extra`]. Their contents are not
//!   checked here; each owning module parses its own section with the same error type:
//!   [`crate::session::config::session_configs`], [`crate::account::AccountConfig::from_manifest`],
//!   [`crate::storage::StorageConfig::from_manifest`], [`crate::gate::GateConfig::from_manifest`].
//! - Any other top-level key, and any unknown key inside a typed section, is an error
//!   naming its full path with a "did you mean" suggestion for near misses: a typo never
//!   silently falls back to a default.
//!
//! # Flavors
//! iFun builds one `MANIFEST.<flavor>.json` per flavor. Sandtable accepts that (a file without
//! `"flavors"` is simply the base) and also a single file with a top-level `"flavors"` object
//! of named overlays. [`Manifest::load`] deep-merges the chosen flavor over the base (objects
//! merged key by key, recursively; scalars and arrays replaced), then validates the result.
//! One file keeps the settings that every server shares in one place, so a `game` and a `pvp`
//! server cannot disagree on, say, the ZooKeeper ensemble (which iFun requires to be identical
//! on all servers) because someone edited one file and not the other.
//!
//! Every flavor is validated on every load, not only the chosen one, and errors inside a
//! flavor name it (`flavors.pvp.RpcService.rpc_prot`): a typo in the `pvp` flavor is caught
//! by the first `game` server that starts, not on the day `pvp` is deployed.
//!
//! # Errors
//! [`ManifestError`] names the key path, the expected type or range and what was found, e.g.
//! `RpcService.rpc_port: expected an integer 0..=65535, found string "80"`. When several
//! problems exist, the first is reported in a fixed order (top-level keys, the base's
//! sections, each flavor by name, then the merged result; within a section unknown keys first, then keys in iFun's order),
//! so the same file always gets the same message. Loading never panics on any input.

mod error;
mod flavor;
pub(crate) mod reader;
pub mod redis;
mod sections;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

pub use self::error::ManifestError;
pub use self::sections::{
    AppInfo, RpcService, ZookeeperClient, ZookeeperNode, APP_ID_CHARS_MAX, RPC_HANDLERS_CONCURRENT_MAX,
    RPC_MESSAGE_LOGGING_LEVEL_MAX, ZOOKEEPER_CLIENTS_MAX, ZOOKEEPER_LOG_LEVEL_MAX,
    ZOOKEEPER_SESSION_TIMEOUT_SECONDS_MAX,
};

use self::reader::{as_object, check_keys, join};

/// Sections accepted as raw JSON objects and kept in [`Manifest::extra`] for the engine
/// modules that own them.
pub const RAW_SECTIONS: &[&str] = &[
    "SessionService",
    "Redis",
    "CrossServerStorage",
    "AccountManager",
    "Object",
    "Sharding",
    "Gate",
    "ApiService",
    "Timer",
    "Logging",
];

/// Sections parsed into typed structs.
pub const TYPED_SECTIONS: &[&str] = &["AppInfo", "RpcService", "ZookeeperClient"];

/// The top-level key holding named flavor overlays.
pub const FLAVORS_KEY: &str = "flavors";

/// Path used in errors about the document as a whole.
const ROOT_PATH: &str = "(top level)";

/// A validated manifest, with the chosen flavor applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub app_info: AppInfo,
    pub rpc: RpcService,
    pub zookeeper: ZookeeperClient,
    /// The flavor applied, if any (iFun's `app_flavor`).
    pub flavor: Option<String>,
    /// The [`RAW_SECTIONS`] present in the file (after the flavor merge), by name, each a
    /// JSON object. A module that takes over a section parses it from here.
    pub extra: BTreeMap<String, Value>,
}

impl Manifest {
    /// Parses and validates `text`, applying `flavor` if given.
    ///
    /// Without a flavor the base (everything but `"flavors"`) must be complete on its own;
    /// asking for a flavor the file does not define is [`ManifestError::UnknownFlavor`].
    pub fn load(text: &str, flavor: Option<&str>) -> Result<Manifest, ManifestError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let root: Value = serde_json::from_str(text).map_err(json_error)?;
        let root = as_object(ROOT_PATH, &root)?;

        // Every layer is checked on its own, so errors name the layer they come from.
        let sections: Vec<&str> = TYPED_SECTIONS.iter().chain(RAW_SECTIONS).copied().collect();
        let top_level: Vec<&str> = sections.iter().copied().chain([FLAVORS_KEY]).collect();
        check_keys("", root, &top_level)?;
        let mut base: Map<String, Value> = root.clone();
        let flavors = base.remove(FLAVORS_KEY);
        check_layer("", &base)?;

        let flavors: BTreeMap<&str, &Value> = match &flavors {
            None => BTreeMap::new(),
            Some(v) => as_object(FLAVORS_KEY, v)?.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        };
        for (name, overlay) in &flavors {
            let path = join(FLAVORS_KEY, name);
            let overlay = as_object(&path, overlay)?;
            check_keys(&path, overlay, &sections)?;
            check_layer(&path, overlay)?;
        }

        let mut merged = Value::Object(base);
        if let Some(name) = flavor {
            let overlay = flavors.get(name).ok_or_else(|| ManifestError::UnknownFlavor {
                name: name.to_owned(),
                known: flavors.keys().map(|k| (*k).to_owned()).collect(),
            })?;
            flavor::deep_merge(&mut merged, overlay);
        }
        let mut manifest = Self::from_merged(as_object(ROOT_PATH, &merged)?)?;
        manifest.flavor = flavor.map(str::to_owned);
        Ok(manifest)
    }

    /// Reads and loads the file at `path`. For server binaries at startup; simulated
    /// scenarios embed their manifests and call [`Manifest::load`].
    pub fn from_path(path: impl AsRef<Path>, flavor: Option<&str>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Io {
            path: path.display().to_string(),
            kind: e.kind(),
            message: e.to_string(),
        })?;
        Self::load(&text, flavor)
    }

    /// A raw section from [`Manifest::extra`], if present.
    pub fn section(&self, name: &str) -> Option<&Value> {
        self.extra.get(name)
    }

    /// The complete, merged document: required keys enforced, defaults applied.
    fn from_merged(root: &Map<String, Value>) -> Result<Manifest, ManifestError> {
        let app_info = match root.get("AppInfo") {
            None => return Err(ManifestError::Missing { path: "AppInfo".to_owned() }),
            Some(v) => AppInfo::parse("AppInfo", v, false)?,
        };
        let rpc = root.get("RpcService").map(|v| RpcService::parse("RpcService", v)).transpose()?;
        let zookeeper =
            root.get("ZookeeperClient").map(|v| ZookeeperClient::parse("ZookeeperClient", v)).transpose()?;
        let extra =
            RAW_SECTIONS.iter().filter_map(|s| root.get(*s).map(|v| ((*s).to_owned(), v.clone()))).collect();
        Ok(Manifest {
            app_info,
            rpc: rpc.unwrap_or_default(),
            zookeeper: zookeeper.unwrap_or_default(),
            flavor: None,
            extra,
        })
    }
}

/// Validates one layer (the base or one flavor) whose top-level keys are already known to
/// be section names: every section is an object, typed sections are well-formed (required
/// keys may be left to the other layer).
fn check_layer(prefix: &str, layer: &Map<String, Value>) -> Result<(), ManifestError> {
    for name in TYPED_SECTIONS.iter().chain(RAW_SECTIONS) {
        let Some(v) = layer.get(*name) else { continue };
        let path = join(prefix, name);
        as_object(&path, v)?;
        match *name {
            "AppInfo" => {
                AppInfo::parse(&path, v, true)?;
            }
            "RpcService" => {
                RpcService::parse(&path, v)?;
            }
            "ZookeeperClient" => {
                ZookeeperClient::parse(&path, v)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `serde_json`'s message without its trailing " at line L column C" (reported separately).
fn json_error(e: serde_json::Error) -> ManifestError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    ManifestError::Json { line, column, message }
}

#[cfg(test)]
mod tests;
