//! From a manifest and the command line to everything one reference-game server needs.
//!
//! iFun runs one manifest per flavor (`MANIFEST.game.json`, `MANIFEST.pvp.json`); Sandtable
//! also accepts one manifest with a `"flavors"` overlay and `--flavor`. The server's flavor
//! is `--flavor`, else the manifest's file name (`MANIFEST.<flavor>.json`), else `game`.
//!
//! What each flavor adds to the plan:
//!
//! | flavor | cluster tag | account manager | `Gate.session_key_secret` | SQL (`Object.enable_database`) |
//! |---|---|---|---|---|
//! | `game` | [`GAME_TAG`] (gates bind players to these) | yes | not used | object store, inventory, farm, and hosting gated players (`engine::gate::GateHost`) |
//! | `pvp` | none | no | not used | opened, not used |
//! | `login` | none | no | required: signs session keys | opened, not used |
//! | `gate` | [`GATE_TAG`] (login servers list these) | yes: logs players in cluster-wide | required: checks session keys | opened, not used |
//!
//! A gate's routing settings ([`GatewayConfig`]) are not read from the manifest: the
//! defaults bind players to `game` servers by their `user_count`, which is what the reference
//! game's servers publish.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::account::AccountConfig;
use engine::cluster::ClusterConfig;
use engine::env::SessionOptions;
use engine::gate::{GateConfig, GatewayConfig, GATE_TAG};
use engine::manifest::redis::RedisSection;
use engine::manifest::{Manifest, ManifestError};
use engine::metrics::ApiConfig;
use engine::orm::OrmConfig;
use engine::rpc::RpcConfig;
use engine::session::config::{service_limits, session_configs};
use engine::session::{SessionConfig, Transport};
use engine::shard::ShardConfig;
use engine::storage::StorageConfig;
use game::config::ObjectsConfig;
use game::{Flavor, GameBugs, GameConfig, UnknownFlavor, GAME_TAG};

use crate::adapters::{RealClientListeners, RedisKvOptions};
use crate::env::RealEnvConfig;

/// Why a server cannot be configured. Each names what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// A `login` or `gate` server without `Gate.session_key_secret`: a login server signs
    /// session keys with it, a gate checks them. Set the same 64 hex characters on both.
    #[error("Gate.session_key_secret: {uses} with it; set 64 hex characters")]
    NoSessionKeySecret {
        flavor: Flavor,
        /// What the server would do with the secret.
        uses: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What the command line adds to the manifest.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    pub manifest: PathBuf,
    /// `game`, `pvp`, `login` or `gate`; the flavor overlay of the manifest to apply, if it has one.
    pub flavor: Option<String>,
    /// This server's name in the cluster (default `<flavor>-<host>-<rpc_port>`).
    pub name: Option<String>,
    /// The address other servers and clients reach this server on. Default: the address of
    /// `RpcService.rpc_nic_name` if set, else 127.0.0.1.
    pub advertise_ip: Option<IpAddr>,
    /// The address to listen on (default: the advertised address). `0.0.0.0` listens on
    /// every interface.
    pub bind_ip: Option<IpAddr>,
    /// Where relative SQLite paths of the SQL layout live (the embedded default's
    /// `db-0.sqlite` among them).
    pub data_dir: PathBuf,
}

/// A configured server, ready to start.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    pub name: String,
    pub flavor: Flavor,
    pub env: RealEnvConfig,
    pub game: GameConfig,
    /// The admin API (`ApiService`).
    pub api: ApiConfig,
    /// The SQL layout (`Object.enable_database`, `Sharding`), with SQLite paths resolved
    /// against `--data-dir`; `None` without a database.
    pub sql: Option<ShardConfig>,
    /// The farm (`game::farm`, command packs): hosted by a game server with SQL on, with the
    /// default command-queue settings (8 workers, a 2 s sweep).
    pub farm: Option<game::farm::FarmConfig>,
    pub manifest: Manifest,
}

/// Reads the manifest named by `args` and plans the server.
pub fn plan_from_args(args: &ServerArgs) -> Result<ServerPlan, ConfigError> {
    let flavor = args.flavor.clone().or_else(|| flavor_from_file_name(&args.manifest));
    // Apply the overlay only if the manifest defines it: a per-flavor file has none.
    let text = std::fs::read_to_string(&args.manifest).map_err(|e| {
        ConfigError::Manifest(ManifestError::Io {
            path: args.manifest.display().to_string(),
            kind: e.kind(),
            message: e.to_string(),
        })
    })?;
    let manifest = match Manifest::load(&text, flavor.as_deref()) {
        Err(ManifestError::UnknownFlavor { known, .. }) if known.is_empty() => Manifest::load(&text, None)?,
        other => other?,
    };
    plan(&manifest, flavor.as_deref().unwrap_or(Flavor::Game.as_str()), args)
}

/// `MANIFEST.pvp.json` -> `pvp`.
fn flavor_from_file_name(p: &Path) -> Option<String> {
    let name = p.file_name()?.to_str()?;
    let mid = name.strip_prefix("MANIFEST.")?.strip_suffix(".json")?;
    (!mid.is_empty() && !mid.contains('.')).then(|| mid.to_owned())
}

/// Plans a `flavor` server from a loaded manifest.
pub fn plan(m: &Manifest, flavor: &str, args: &ServerArgs) -> Result<ServerPlan, ConfigError> {
    let flavor: Flavor = flavor.parse().map_err(|UnknownFlavor(name)| {
        ConfigError::Invalid(format!(
            "--flavor {name:?}: the reference game has the flavors game, pvp, login and gate"
        ))
    })?;
    if !m.rpc.rpc_enabled {
        return Err(ConfigError::Invalid(
            "RpcService.rpc_enabled: the reference game needs RPC (cluster, accounts); set it to true".into(),
        ));
    }
    if m.rpc.rpc_port == 0 {
        return Err(ConfigError::Invalid(
            "RpcService.rpc_port: 0 is not allowed; peers must know the port before it is bound".into(),
        ));
    }
    let advertise_ip = match (args.advertise_ip, m.rpc.rpc_nic_name.as_str()) {
        (Some(ip), _) => ip,
        (None, "") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (None, nic) => nic_address(nic)?,
    };
    if advertise_ip.is_unspecified() {
        return Err(ConfigError::Invalid(format!(
            "--advertise-ip {advertise_ip}: peers and clients cannot reach an unspecified address"
        )));
    }
    let bind_ip = args.bind_ip.unwrap_or(advertise_ip);
    let sessions: Vec<SessionConfig> = session_configs(m, bind_ip)?;
    let session_limits = service_limits(m)?;
    if !sessions.iter().any(|s| s.transport == Transport::TcpJson) {
        return Err(ConfigError::Invalid(
            "SessionService.tcp_json_port: the reference game announces its TCP JSON port to clients; it must not be 0"
                .into(),
        ));
    }
    let rpc_port = m.rpc.rpc_port;
    let name = args.name.clone().unwrap_or_else(|| format!("{flavor}-{}-{rpc_port}", host_name()));

    let mut tags: BTreeSet<String> = m.rpc.rpc_tags.iter().cloned().collect();
    if let Some(tag) = flavor_tag(flavor) {
        tags.insert(tag.to_owned());
    }
    let session = SessionOptions {
        session_timeout: m.zookeeper.session_timeout(),
        connect_timeout: std::time::Duration::from_secs(5),
    };
    let mut cluster =
        ClusterConfig::new(m.app_info.app_id.clone(), name.clone(), SocketAddr::new(advertise_ip, rpc_port));
    cluster.flavor = Some(flavor.to_string());
    cluster.tags = tags;
    cluster.external_ip = advertise_ip;
    cluster.session = session;

    let mut rpc = RpcConfig::new(SocketAddr::new(bind_ip, rpc_port));
    rpc.message_logging_level = m.rpc.rpc_message_logging_level;
    rpc.enable_reply_checker = m.rpc.enable_rpc_reply_checker;
    rpc.max_concurrent_handlers = usize::try_from(m.rpc.rpc_threads_size).unwrap_or(4);

    let account = AccountConfig::from_manifest(m)?;
    if flavor == Flavor::Game && account.redirection_secret.is_none() {
        tracing::warn!("AccountManager.redirection_secret is not set: client redirection is off");
    }
    let gate = GateConfig::from_manifest(m)?;
    if let (Some(uses), None) = (secret_use(flavor), &gate.session_key_secret) {
        return Err(ConfigError::NoSessionKeySecret { flavor, uses });
    }
    let storage = StorageConfig::from_manifest(m)?;
    if !storage.enabled {
        return Err(ConfigError::Invalid(
            "CrossServerStorage.enable_cross_server_storage: the reference game keeps pvp auth keys there; set it to true"
                .into(),
        ));
    }
    let redis = RedisSection::from_manifest(m)?.ok_or_else(|| {
        ConfigError::Invalid("Redis: missing section; the reference game needs a Redis server".into())
    })?;
    let server = redis.server_for_tag(&storage.redis_tag).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "Redis.redis_servers: no enabled server for CrossServerStorage.redis_tag_for_cross_server_storage {:?}",
            storage.redis_tag
        ))
    })?;

    let api = ApiConfig::from_manifest(m)?;
    let env = RealEnvConfig {
        node: name.clone(),
        ip: advertise_ip,
        zookeeper: m.zookeeper.connect_string(),
        redis_url: server.url(),
        redis: RedisKvOptions::default(),
    };
    let game = GameConfig {
        flavor,
        sessions,
        session_limits,
        listeners: Some(Arc::new(RealClientListeners::default())),
        cluster,
        rpc,
        account,
        gate,
        // Not from the manifest: see the module doc.
        gateway: GatewayConfig::default(),
        storage,
        bugs: GameBugs::default(),
        tick_period: None,
        observer: None,
        objects: None,
        metrics: None,
    };
    let sql = ShardConfig::from_manifest(m)?.map(|mut cfg| {
        for url in cfg.instances.values_mut() {
            *url = super::sql::resolve_sqlite_url(url, &args.data_dir);
        }
        cfg
    });
    // With SQL on, a game server hosts the object store, the inventory messages and the farm.
    let mut game = game;
    let mut farm = None;
    if let (Some(shard), Flavor::Game) = (&sql, flavor) {
        game.objects =
            Some(ObjectsConfig { shard: shard.clone(), orm: OrmConfig::from_manifest(m)?, observer: None });
        farm = Some(game::farm::FarmConfig::default());
    }
    Ok(ServerPlan { name, flavor, env, game, api, sql, farm, manifest: m.clone() })
}

/// The cluster tag a `flavor` server always carries (beside `RpcService.rpc_tags`): what other
/// servers find it by. Login servers list [`GATE_TAG`] members; gates bind players to
/// [`GAME_TAG`] members. Nobody looks up pvp or login servers by tag.
pub fn flavor_tag(flavor: Flavor) -> Option<&'static str> {
    match flavor {
        Flavor::Game => Some(GAME_TAG),
        Flavor::Gate => Some(GATE_TAG),
        Flavor::Pvp | Flavor::Login => None,
    }
}

/// What a `flavor` server does with `Gate.session_key_secret` (`None`: it has no use for it).
fn secret_use(flavor: Flavor) -> Option<&'static str> {
    match flavor {
        Flavor::Login => Some("a login server signs session keys"),
        Flavor::Gate => Some("a gate checks session keys"),
        Flavor::Game | Flavor::Pvp => None,
    }
}

fn nic_address(nic: &str) -> Result<IpAddr, ConfigError> {
    let addrs = if_addrs::get_if_addrs()
        .map_err(|e| ConfigError::Invalid(format!("RpcService.rpc_nic_name: cannot list interfaces: {e}")))?;
    addrs.iter().filter(|a| a.name == nic).map(|a| a.ip()).find(IpAddr::is_ipv4).ok_or_else(|| {
        let mut names: Vec<&str> = addrs.iter().map(|a| a.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        ConfigError::Invalid(format!(
            "RpcService.rpc_nic_name: no IPv4 interface {nic:?} (interfaces: {}); or pass --advertise-ip",
            names.join(", ")
        ))
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;

    const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

    fn args(manifest: PathBuf, flavor: Option<&str>) -> ServerArgs {
        ServerArgs {
            manifest,
            flavor: flavor.map(str::to_owned),
            name: None,
            advertise_ip: None,
            bind_ip: None,
            data_dir: PathBuf::from("/var/lib/sandtable"),
        }
    }

    /// Every `examples/MANIFEST.*.json`, with its plan (flavor from the file name).
    fn example_plans() -> Vec<(String, ServerPlan)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(EXAMPLES).expect("examples/") {
            let path = entry.expect("entry").path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(file.starts_with("MANIFEST.") && file.ends_with(".json")) {
                continue;
            }
            let plan = plan_from_args(&args(path, None)).unwrap_or_else(|e| panic!("{file}: {e}"));
            out.push((file, plan));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn example(file: &str) -> Value {
        let text = std::fs::read_to_string(format!("{EXAMPLES}/{file}")).expect("example manifest");
        serde_json::from_str(&text).expect("JSON")
    }

    fn plan_json(m: &Value, flavor: &str) -> Result<ServerPlan, ConfigError> {
        let m = Manifest::load(&m.to_string(), None).expect("loads");
        plan(&m, flavor, &args(PathBuf::from("MANIFEST.json"), Some(flavor)))
    }

    #[test]
    fn every_example_manifest_plans_as_the_flavor_of_its_file_name() {
        let plans = example_plans();
        let files: Vec<&str> = plans.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            files,
            [
                "MANIFEST.game.json",
                "MANIFEST.game.mariadb.json",
                "MANIFEST.gate.json",
                "MANIFEST.login.json",
                "MANIFEST.pvp.json"
            ]
        );
        for (file, p) in &plans {
            // `MANIFEST.game.mariadb.json` names no flavor: the default, game.
            let mid = &file["MANIFEST.".len()..file.len() - ".json".len()];
            let expected = if mid.contains('.') { Flavor::Game } else { mid.parse().expect("a flavor") };
            assert_eq!(p.flavor, expected, "{file}");
            if let Some(tag) = flavor_tag(p.flavor) {
                assert!(p.game.cluster.tags.contains(tag), "{file}: {:?}", p.game.cluster.tags);
            }
        }
    }

    #[test]
    fn the_example_deployment_is_login_gate_and_game_backends_sharing_one_secret() {
        let plans: BTreeMap<String, ServerPlan> = example_plans().into_iter().collect();
        let (login, gate) = (&plans["MANIFEST.login.json"], &plans["MANIFEST.gate.json"]);
        assert_eq!(login.flavor, Flavor::Login);
        assert_eq!(gate.flavor, Flavor::Gate);
        let secret = login.game.gate.session_key_secret.as_deref().expect("login secret");
        assert_eq!(gate.game.gate.session_key_secret.as_deref(), Some(secret), "one secret");
        assert!(login.game.gate.session_keys().is_ok() && gate.game.gate.session_keys().is_ok());
        assert!(gate.game.cluster.tags.contains(GATE_TAG), "login servers find the gate by its tag");
        let transports: BTreeSet<Transport> = gate.game.sessions.iter().map(|s| s.transport).collect();
        assert!(transports.contains(&Transport::TcpJson) && transports.contains(&Transport::WebSocketJson));
        assert_eq!(gate.game.gateway.backend_tag, GAME_TAG, "gates bind players to game servers");
        for file in ["MANIFEST.game.json", "MANIFEST.game.mariadb.json"] {
            let game = &plans[file];
            assert!(game.game.cluster.tags.contains(GAME_TAG), "{file}");
            assert!(game.game.objects.is_some(), "{file}: SQL on: hosts gated players");
        }
        // Every server of the deployment has its own ports.
        let mut ports = BTreeSet::new();
        for (file, p) in &plans {
            if file == "MANIFEST.game.mariadb.json" {
                continue; // an alternative to MANIFEST.game.json, on the same ports
            }
            for s in &p.game.sessions {
                assert!(ports.insert(s.listen.port()), "{file}: port {} used twice", s.listen.port());
            }
            assert!(ports.insert(p.game.cluster.rpc_addr.port()), "{file}: rpc port used twice");
            assert!(ports.insert(p.api.api_service_port), "{file}: api port used twice");
        }
    }

    #[test]
    fn a_login_server_or_gate_without_a_session_key_secret_is_refused_by_name() {
        for (file, flavor, uses) in [
            ("MANIFEST.login.json", Flavor::Login, "a login server signs session keys"),
            ("MANIFEST.gate.json", Flavor::Gate, "a gate checks session keys"),
        ] {
            let mut m = example(file);
            m.as_object_mut().unwrap().remove("Gate");
            let e = plan_json(&m, flavor.as_str()).unwrap_err();
            assert!(
                matches!(e, ConfigError::NoSessionKeySecret { flavor: f, uses: u } if f == flavor && u == uses),
                "{e:?}"
            );
            assert_eq!(
                e.to_string(),
                format!("Gate.session_key_secret: {uses} with it; set 64 hex characters")
            );
            // A game server has no use for it.
            assert!(plan_json(&m, "game").is_ok());
        }
        let mut m = example("MANIFEST.gate.json");
        m["Gate"]["session_key_secret"] = "abc".into();
        let e = plan_json(&m, "gate").unwrap_err().to_string();
        assert!(e.contains("Gate.session_key_secret"), "{e}");
    }

    #[test]
    fn a_gate_is_tagged_gate_whatever_its_rpc_tags() {
        let mut m = example("MANIFEST.gate.json");
        m["RpcService"]["rpc_tags"] = serde_json::json!([]);
        let p = plan_json(&m, "gate").unwrap();
        assert_eq!(p.game.cluster.tags, BTreeSet::from([GATE_TAG.to_owned()]));
        assert_eq!(p.game.cluster.flavor.as_deref(), Some("gate"));
        let p = plan_json(&m, "login").unwrap();
        assert!(p.game.cluster.tags.is_empty());
        let e = plan_json(&m, "gateway").unwrap_err().to_string();
        assert!(e.contains("game, pvp, login and gate"), "{e}");
    }
}
